SELECT 40 + 2 AS answer, UPPER('x') AS up;
