CREATE STREAM events WITH ('connector' = 'nexmark');
CREATE TABLE sink (auction BIGINT, price BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO sink SELECT bid.auction, bid.price FROM events WHERE event_type = 2;
