CREATE STREAM c (k BIGINT, v BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = 'tests/golden/data/events.json', 'format' = 'csv');
SELECT k FROM c;
