SET 'table.exec.state.ttl' = '1 h';
CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT bid.bidder AS bidder, count(*) AS bids FROM events WHERE event_type = 2 GROUP BY bid.bidder;
