-- Early answers: bids per 10-second window, emitted after every input batch
-- before the window closes, as a changelog (+I, then -U/+U as the counts
-- grow); the last change of each window is its final count.
-- Run it: cargo run -p weir-cli -- run examples/early_firing.sql

SET 'table.exec.emit.early-fire.enabled' = 'true';
SET 'table.exec.emit.early-fire.delay' = '0';
SET 'sql-client.execution.result-mode' = 'changelog';

CREATE STREAM events WITH (
  'connector' = 'nexmark',
  'events.num' = '20000',
  'first-event.rate' = '1000',
  'base-time' = '2026-01-01 00:00:00'
);

SELECT window_start, window_end, count(*) AS bids, max(bid.price) AS top_price
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
WHERE event_type = 2
GROUP BY window_start, window_end;
