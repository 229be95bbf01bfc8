SET 'table.exec.state.ttl' = '1 h';
CREATE STREAM events WITH ('connector' = 'nexmark');
CREATE TABLE out (bidder BIGINT, n BIGINT) WITH ('connector' = 'print');
INSERT INTO out SELECT bid.bidder, count(*) FROM events WHERE event_type = 2 GROUP BY bid.bidder;
