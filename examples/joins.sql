-- Weir joins: Nexmark bids enriched with their auctions, three ways.
-- Run it: cargo run -p weir-cli -- run examples/joins.sql

CREATE STREAM events WITH (
  'connector' = 'nexmark',
  'events.num' = '200000',
  'first-event.rate' = '10000',
  'base-time' = '2026-01-01 00:00:00'
);
CREATE VIEW bid AS SELECT bid.auction, bid.price, dateTime FROM events WHERE event_type = 2;
CREATE VIEW auction AS SELECT auction.id, auction.category, auction.reserve, dateTime FROM events WHERE event_type = 1;

-- A regular join: every bid above its auction's reserve, with the category.
-- (On an unbounded stream it needs SET 'table.exec.state.ttl' = '1 h'.)
SELECT A.category, count(*) AS bids_over_reserve
FROM bid B JOIN auction A ON B.auction = A.id AND B.price > A.reserve
GROUP BY A.category;

-- An interval join: bids placed within 2 seconds of their auction opening.
SELECT count(*) AS early_bids
FROM bid B JOIN auction A
  ON B.auction = A.id AND B.dateTime BETWEEN A.dateTime AND A.dateTime + INTERVAL '2' SECOND;

-- A window join: per 10-second window, the auctions that got no bid in it.
SELECT window_start, count(*) AS auctions_without_bids
FROM (
  SELECT A.window_start FROM (SELECT * FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))) A
  WHERE NOT EXISTS (
    SELECT 1 FROM (SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))) B
    WHERE B.auction = A.id AND B.window_start = A.window_start AND B.window_end = A.window_end)
)
GROUP BY window_start;
