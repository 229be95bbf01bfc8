CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT DISTINCT event_type FROM events;
