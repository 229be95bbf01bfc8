CREATE STREAM events WITH ('connector' = 'nexmark');
INSERT INTO nowhere SELECT bid.price FROM events;
