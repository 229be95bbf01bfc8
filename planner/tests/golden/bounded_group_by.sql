CREATE STREAM t (k BIGINT, v BIGINT, s VARCHAR, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'filesystem', 'path' = 'tests/golden/data/events.json', 'format' = 'json');
SELECT k, sum(v) AS total, count(*) AS n FROM t GROUP BY k;
