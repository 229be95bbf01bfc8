SET 'table.exec.state.ttl' = '10 min';
CREATE STREAM events WITH ('connector' = 'nexmark');
CREATE VIEW bid AS SELECT bid.bidder AS bidder, bid.price AS price FROM events WHERE event_type = 2;
SELECT bidder, max(price) AS top FROM bid GROUP BY bidder;
