SET 'table.exec.state.ttl' = '1 h';
CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT count(*) AS events FROM events;
