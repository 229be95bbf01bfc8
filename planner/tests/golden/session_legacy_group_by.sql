CREATE STREAM t (k BIGINT, v BIGINT, s VARCHAR, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'filesystem', 'path' = 'tests/golden/data/events.json', 'format' = 'json');
SELECT k, SESSION_START(ts, INTERVAL '5' SECOND) AS s, count(*) AS n
FROM t GROUP BY k, SESSION(ts, INTERVAL '5' SECOND);
