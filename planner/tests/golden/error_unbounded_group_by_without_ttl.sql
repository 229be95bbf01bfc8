CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT bid.bidder, count(*) FROM events GROUP BY bid.bidder;
