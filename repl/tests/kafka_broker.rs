//! Kafka end to end against a separate broker process: Tansu, an Apache
//! Kafka compatible broker (`cargo install tansu`, which `.ci/run` does),
//! in memory on loopback. One `weir run` writes Nexmark bids to a topic
//! through the Kafka sink; another reads them back through the Kafka source
//! and counts them in windows; the counts must equal the same query over
//! the generator directly.

mod common;

use common::broker::{run, start_broker};

const EVENTS: &str = "CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '50000',
    'base-time' = '1700000000000', 'first-event.rate' = '10000');";

const COUNTS: &str = "SELECT window_start, auction, count(*) AS n
    FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
    GROUP BY window_start, window_end, auction";

#[test]
fn windows_over_a_topic_on_a_real_broker_equal_the_generators() {
    let broker = start_broker(&[("bids", 3)]);
    let kafka = |extra: &str| {
        format!(
            "WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '{}',
                   'format' = 'json', 'key.format' = 'json', 'key.fields' = 'auction'{extra})",
            broker.address
        )
    };

    // Write: the bids, keyed by auction, from one subtask, so each
    // partition holds its bids as out of order as the generator makes them
    // (within the 4 s of Flink's Nexmark watermark).
    let written = run(&format!(
        "SET 'parallelism.default' = '1';
         {EVENTS}
         CREATE TABLE out (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) {};
         INSERT INTO out SELECT bid.auction, bid.price, dateTime FROM events WHERE event_type = 2;",
        kafka("")
    ));
    assert!(written.is_empty(), "{written:?}");

    let reference = run(&format!(
        "{EVENTS}
         CREATE VIEW bids AS SELECT bid.auction, bid.price, dateTime AS ts FROM events WHERE event_type = 2;
         {COUNTS};"
    ));

    // Read back until every window has fired: the stream is unbounded (a
    // bounded read would stop at the end offsets the broker reports, and
    // Tansu 0.6 reports them short of the last batch); once the topic is
    // quiet for a second the watermark moves on with the clock.
    let read = run(&format!(
        "CREATE STREAM bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
           WATERMARK FOR ts AS ts - INTERVAL '4' SECOND) {};
         {COUNTS} LIMIT {};",
        kafka(
            ", 'scan.startup.mode' = 'earliest-offset', 'scan.watermark.idle-timeout' = '1s',
               'scan.watermark.idle-advance' = 'true'"
        ),
        reference.len()
    ));

    let total: i64 = reference
        .iter()
        .map(|r| r.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 50_000 * 46 / 50, "every bid counted once");
    common::assert_same_rows(&read, &reference);
}

/// An updating result through `upsert-kafka` on the broker: keys that
/// leave the result (a HAVING after a count) are tombstones, and the topic
/// read back as an upsert stream is the batch answer.
#[test]
fn upserts_and_tombstones_on_a_real_broker_equal_the_batch_answer() {
    let broker = start_broker(&[("counts", 1)]);
    let table = |name: &str, extra: &str| {
        format!(
            "CREATE TABLE {name} (auction BIGINT, n BIGINT, PRIMARY KEY (auction) NOT ENFORCED)
             WITH ('connector' = 'upsert-kafka', 'topic' = 'counts', 'properties.bootstrap.servers' = '{}',
                   'key.format' = 'json', 'value.format' = 'json'{extra});",
            broker.address
        )
    };
    let counts = "SELECT bid.auction, count(*) AS n FROM events WHERE event_type = 2
        GROUP BY bid.auction HAVING count(*) < 20";
    let written = run(&format!(
        "SET 'execution.runtime-mode' = 'streaming'; SET 'parallelism.default' = '1';
         {EVENTS} {} INSERT INTO counts {counts};",
        table("counts", "")
    ));
    assert!(written.is_empty(), "{written:?}");
    // Tansu 0.6 reports a partition's end short of its last record batch:
    // a last record of another key makes the bounded read below reach
    // every record of the job's.
    run(&format!(
        "{} INSERT INTO counts VALUES (CAST(-1 AS BIGINT), CAST(0 AS BIGINT));",
        table("counts", "")
    ));
    let read = run(&format!(
        "{} SELECT auction, n FROM back WHERE auction >= 0;",
        table("back", ", 'scan.bounded.mode' = 'latest-offset'")
    ));
    let reference = run(&format!("{EVENTS} {counts};"));
    assert!(reference.len() > 100, "{} rows", reference.len());
    common::assert_same_rows(&read, &reference);
}

/// The cluster mode's repartition topic (docs/cluster-protocol.md) on a
/// real broker: created once with the stage's task count; asking for
/// another count later is an error, not a silent re-split of state.
#[test]
fn a_repartition_topic_keeps_its_partitions() {
    use weir::crates::connectors::kafka::stage_output::{
        ensure_repartition_topic, repartition_topic,
    };

    let broker = start_broker(&[("ready", 1)]);
    let mut client = rdkafka::ClientConfig::new();
    client.set("bootstrap.servers", &broker.address);
    let topic = repartition_topic("job", 1);
    let week = 7 * 24 * 3600 * 1000;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        ensure_repartition_topic(&client, &topic, 4, 1, week)
            .await
            .unwrap();
        ensure_repartition_topic(&client, &topic, 4, 1, week)
            .await
            .unwrap();
        let error = ensure_repartition_topic(&client, &topic, 8, 1, week)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("has 4 partitions"), "{error}");
    });
}
