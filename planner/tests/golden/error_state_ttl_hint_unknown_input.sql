SET 'table.exec.state.ttl' = '1 h';
CREATE STREAM l WITH ('connector' = 'nexmark');
CREATE STREAM r WITH ('connector' = 'nexmark');
SELECT /*+ STATE_TTL('orders' = '1d') */ a.event_type, b.dateTime FROM l a JOIN r b ON a.event_type = b.event_type;
