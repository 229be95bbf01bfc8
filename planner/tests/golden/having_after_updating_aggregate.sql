SET 'table.exec.state.ttl' = '1 h';
CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT bid.bidder, count(*) AS n FROM events GROUP BY bid.bidder HAVING count(*) > 10;
