SET 'table.exec.state.ttl' = '1 h';
CREATE STREAM live WITH ('connector' = 'nexmark');
SELECT * FROM (SELECT bid.auction, RANK() OVER (PARTITION BY bid.auction ORDER BY bid.price DESC) AS r FROM live) WHERE r <= 3;
