CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT window_start, window_end, max(bid.price) AS top
FROM TABLE(CUMULATE(TABLE events, DESCRIPTOR(dateTime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
