CREATE STREAM events WITH ('connector' = 'nexmark');
CREATE VIEW person AS SELECT person.name AS name, person.city AS city, dateTime FROM events WHERE event_type = 0;
SELECT name FROM person WHERE city = 'Bend';
