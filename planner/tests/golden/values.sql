SELECT column1 + 1 AS x, column2 FROM (VALUES (1, 'a'), (2, 'b')) WHERE column1 > 1;
