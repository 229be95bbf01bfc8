SET 'table.exec.state.ttl' = '1 h';
CREATE STREAM events WITH ('connector' = 'nexmark');
CREATE TABLE files (bidder BIGINT, n BIGINT) WITH ('connector' = 'filesystem', 'path' = 'tests/golden/data/never-written', 'format' = 'json');
INSERT INTO files SELECT bid.bidder, count(*) FROM events GROUP BY bid.bidder;
