CREATE STREAM events WITH ('connector' = 'nexmark');
CREATE VIEW bid AS SELECT bid.auction AS auction, dateTime FROM events WHERE event_type = 2;
SELECT window_start, auction, count(*) AS n
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
GROUP BY window_start, window_end, auction;
