CREATE STREAM l WITH ('connector' = 'nexmark');
CREATE STREAM r WITH ('connector' = 'nexmark');
SELECT /*+ STATE_TTL('a' = '1d', 'b' = '12h') */ a.event_type, b.dateTime FROM l a JOIN r b ON a.event_type = b.event_type;
