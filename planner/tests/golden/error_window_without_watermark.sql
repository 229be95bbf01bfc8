CREATE STREAM nw (k BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = 'tests/golden/data/events.json', 'format' = 'json');
SELECT window_start, count(*) FROM TABLE(TUMBLE(TABLE nw, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;
