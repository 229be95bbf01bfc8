CREATE STREAM datagen WITH ('connector' = 'nexmark');
CREATE VIEW bid AS SELECT bid.auction, bid.price, dateTime FROM datagen WHERE event_type = 2;
CREATE VIEW auction AS SELECT auction.id, auction.reserve, dateTime FROM datagen WHERE event_type = 1;
SELECT B.auction, B.price, A.reserve FROM (SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '5' SECOND))) B
LEFT JOIN (SELECT * FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(dateTime), INTERVAL '5' SECOND))) A
ON B.auction = A.id AND B.window_start = A.window_start AND B.window_end = A.window_end;
