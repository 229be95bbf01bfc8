CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT window_time, count(*) AS n FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(dateTime), INTERVAL '1' SECOND)) GROUP BY window_start, window_end, window_time;
