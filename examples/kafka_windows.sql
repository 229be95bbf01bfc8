-- Bids from a Kafka topic, counted per auction in 10-second windows, written
-- back to Kafka. Run against a local broker (see the README):
--   weir run examples/kafka_windows.sql --var BROKERS=localhost:9092

CREATE STREAM bids (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  `dateTime` TIMESTAMP(3) NOT NULL,
  `partition` INT METADATA FROM 'partition' VIRTUAL,
  WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'bids',
  'properties.bootstrap.servers' = '${BROKERS}',
  'properties.group.id' = 'weir-example',
  'scan.startup.mode' = 'earliest-offset',
  'scan.watermark.idle-timeout' = '5s',
  'format' = 'json',
  'bad-data.path' = 'dead-letters/bids'
);

CREATE TABLE auction_counts (
  window_start TIMESTAMP(3),
  auction BIGINT,
  bids BIGINT
) WITH (
  'connector' = 'kafka',
  'topic' = 'auction-counts',
  'properties.bootstrap.servers' = '${BROKERS}',
  'format' = 'json',
  'key.format' = 'json',
  'key.fields' = 'auction'
);

INSERT INTO auction_counts
SELECT window_start, auction, count(*)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
GROUP BY window_start, window_end, auction;
