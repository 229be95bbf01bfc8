SET 'table.exec.state.ttl' = '10 min';
CREATE STREAM datagen WITH ('connector' = 'nexmark');
CREATE VIEW bid AS SELECT bid.auction, bid.price FROM datagen WHERE event_type = 2;
CREATE VIEW auction AS SELECT auction.id, auction.reserve FROM datagen WHERE event_type = 1;
SELECT B.auction, B.price FROM bid AS B JOIN auction AS A ON B.auction = A.id AND B.price > A.reserve;
