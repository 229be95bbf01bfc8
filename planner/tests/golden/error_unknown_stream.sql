CREATE STREAM events WITH ('connector' = 'nexmark');
SELECT * FROM evnets;
