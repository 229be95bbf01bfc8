SET 'table.exec.state.ttl' = '1 h';
CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT a.event_type FROM events a JOIN events b ON a.event_type + 1 = b.event_type;
