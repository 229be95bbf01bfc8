CREATE STREAM x (a BIGINT) WITH ('connector' = 'kafak');
