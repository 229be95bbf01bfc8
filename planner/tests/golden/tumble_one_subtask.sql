SET 'parallelism.default' = '1';
CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT window_start, event_type, count(*) AS n
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
GROUP BY window_start, window_end, event_type;
