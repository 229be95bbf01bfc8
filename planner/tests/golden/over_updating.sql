SET 'execution.runtime-mode' = 'streaming';
CREATE STREAM t (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH ('connector' = 'filesystem', 'path' = 'tests/golden/data/events.json', 'format' = 'json');
SELECT k, c, AVG(c) OVER (ORDER BY k ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS a
FROM (SELECT k, COUNT(*) AS c FROM t GROUP BY k);
