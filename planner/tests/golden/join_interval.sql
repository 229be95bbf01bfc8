CREATE STREAM datagen WITH ('connector' = 'nexmark');
CREATE VIEW bid AS SELECT bid.auction, bid.price, dateTime FROM datagen WHERE event_type = 2;
CREATE VIEW auction AS SELECT auction.id, auction.reserve, dateTime FROM datagen WHERE event_type = 1;
SELECT B.auction, B.price, A.reserve, B.dateTime
FROM bid B LEFT JOIN auction A
ON B.auction = A.id AND B.dateTime BETWEEN A.dateTime AND A.dateTime + INTERVAL '10' SECOND;
