CREATE STREAM datagen WITH ('connector' = 'nexmark');
CREATE VIEW bid AS SELECT bid.auction, bid.price, dateTime FROM datagen WHERE event_type = 2;
CREATE VIEW auction AS SELECT auction.id, dateTime FROM datagen WHERE event_type = 1;
SELECT B.auction, B.price FROM (SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '5' SECOND))) B
WHERE NOT EXISTS (SELECT 1 FROM (SELECT * FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(dateTime), INTERVAL '5' SECOND))) A
                  WHERE A.id = B.auction AND A.window_start = B.window_start AND A.window_end = B.window_end);
