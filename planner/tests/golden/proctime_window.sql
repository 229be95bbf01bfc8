CREATE STREAM p (k BIGINT, pt AS PROCTIME()) WITH ('connector' = 'filesystem', 'path' = 'tests/golden/data/events.json', 'format' = 'json');
SELECT window_start, k, count(*) AS n FROM TABLE(TUMBLE(TABLE p, DESCRIPTOR(pt), INTERVAL '1' SECOND)) GROUP BY window_start, window_end, k;
