SET 'table.exec.state.ttl' = '1 h';
SET 'execution.runtime-mode' = 'streaming';
CREATE STREAM live WITH ('connector' = 'nexmark');
CREATE TABLE latest (bidder BIGINT, auction BIGINT, price BIGINT, PRIMARY KEY (bidder) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 'latest', 'properties.bootstrap.servers' = 'localhost:9092', 'key.format' = 'json', 'value.format' = 'json');
INSERT INTO latest SELECT b, a, p FROM (SELECT bid.bidder AS b, bid.auction AS a, bid.price AS p, ROW_NUMBER() OVER (PARTITION BY bid.bidder ORDER BY dateTime DESC) AS rn FROM live WHERE event_type = 2) WHERE rn = 1;
