CREATE STREAM x WITH ('connector' = 'nexmark', 'events.nmu' = '10');
