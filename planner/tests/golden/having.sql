CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT window_start, bid.auction AS auction, count(*) AS n
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
WHERE event_type = 2 GROUP BY window_start, window_end, bid.auction HAVING count(*) > 3;
