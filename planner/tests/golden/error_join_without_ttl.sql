CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT * FROM events a JOIN events b ON a.event_type = b.event_type;
