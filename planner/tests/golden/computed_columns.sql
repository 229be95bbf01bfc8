CREATE STREAM r (id BIGINT, ms BIGINT, ts AS TO_TIMESTAMP_MILLIS(ms), doubled AS id * 2,
  WATERMARK FOR ts AS ts - INTERVAL '3' SECOND) WITH ('connector' = 'filesystem', 'path' = 'tests/golden/data/events.json', 'format' = 'json');
SELECT doubled, ts FROM r;
