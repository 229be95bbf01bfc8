CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT bid.price FROM events ORDER BY bid.price;
