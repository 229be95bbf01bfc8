CREATE STREAM t (k BIGINT, v BIGINT, s VARCHAR, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'filesystem', 'path' = 'tests/golden/data/events.json', 'format' = 'json');
SELECT TUMBLE_START(ts, INTERVAL '1' MINUTE) AS m, k, sum(v) AS total
FROM t GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), k;
