CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT bid.price FROM events WHERE event_type = 2 LIMIT 5;
