SET 'table.exec.state.ttl' = '1 h';
CREATE STREAM bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'filesystem', 'path' = 'tests/golden/data/events.json', 'format' = 'json');
CREATE STREAM live WITH ('connector' = 'nexmark');
SELECT * FROM (SELECT bid.auction, bid.price, ROW_NUMBER() OVER (PARTITION BY bid.auction ORDER BY bid.price DESC) AS rn FROM live WHERE event_type = 2) WHERE rn <= 3;
