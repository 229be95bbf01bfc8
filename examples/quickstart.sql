-- Weir quickstart: Nexmark bids, counted per auction in 10-second windows.
-- Run it: cargo run -p weir-cli -- run examples/quickstart.sql

CREATE STREAM events WITH (
  'connector' = 'nexmark',
  'events.num' = '500000',
  'first-event.rate' = '10000',
  'base-time' = '2026-01-01 00:00:00'
);

CREATE VIEW bid AS
SELECT bid.auction, bid.bidder, bid.price, dateTime
FROM events
WHERE event_type = 2;

-- The busiest auctions of each 10-second tumbling window.
SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top_price
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
GROUP BY window_start, window_end, auction
HAVING count(*) > 100;
