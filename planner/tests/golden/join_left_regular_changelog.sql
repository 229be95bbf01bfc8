SET 'table.exec.state.ttl' = '1 h';
CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT * FROM events a LEFT JOIN events b ON a.event_type = b.event_type;
