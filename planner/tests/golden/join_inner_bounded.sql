CREATE STREAM datagen WITH ('connector' = 'nexmark', 'events.num' = '1000');
CREATE VIEW auction AS SELECT auction.id, auction.seller, auction.category FROM datagen WHERE event_type = 1;
CREATE VIEW person AS SELECT person.id, person.name, person.state FROM datagen WHERE event_type = 0;
SELECT P.name, P.state, A.id
FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'CA');
