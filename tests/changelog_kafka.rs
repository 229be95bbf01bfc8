//! Changelogs through Kafka, on librdkafka's mock cluster: `upsert-kafka`
//! (a `-U` or `-D` written as a tombstone, a tombstone read as a delete,
//! buffered flushes) and `debezium-json` topics, against a DataFusion
//! batch oracle.

mod common;

use std::sync::Arc;

use common::kafka::*;
use common::*;
use datafusion::datasource::MemTable;

/// DataFusion's answer over `events` as table `t(k, v, ts)`.
async fn oracle(events: &[Event], sql: &str) -> Vec<String> {
    let batch = events_batch(events);
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap()),
    )
    .unwrap();
    canonical_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

/// Random events in `partitions` partitions of `topic`, produced; and all
/// of them.
async fn produce_events(bootstrap: &str, topic: &str, partitions: usize, seed: u64) -> Vec<Event> {
    let splits = generate(
        seed,
        partitions,
        Shape {
            rows: 200,
            keys: 20,
            hot: 0.3,
            nulls: 0.0,
            step: 5,
            jitter: 50,
        },
    );
    let records: Vec<_> = splits
        .iter()
        .enumerate()
        .flat_map(|(p, events)| events.iter().map(move |e| (p as i32, None, event_json(e))))
        .collect();
    produce(&producer(bootstrap), topic, &records).await;
    splits.into_iter().flatten().collect()
}

/// `k`, `v`, `ts` read from `topic` to its current end.
fn events_ddl(bootstrap: &str, topic: &str) -> String {
    format!(
        "CREATE STREAM t (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
         WITH ('connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'json')"
    )
}

/// An upsert-kafka table of `(k, n)` keyed by `k` on `topic`.
fn upsert_ddl(name: &str, bootstrap: &str, topic: &str, extra: &str) -> String {
    format!(
        "CREATE TABLE {name} (k BIGINT, n BIGINT, PRIMARY KEY (k) NOT ENFORCED)
         WITH ('connector' = 'upsert-kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
               'key.format' = 'json', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset'{extra})"
    )
}

/// A HAVING after a count makes keys leave the result: each leaves a
/// tombstone in the topic, and the topic read back as an upsert stream is
/// the batch answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upserts_and_tombstones_round_trip_through_a_topic() {
    let (_cluster, bootstrap) = mock_cluster(&[("in", 2), ("out", 3)]);
    let events = produce_events(&bootstrap, "in", 2, 5).await;
    let query = "SELECT k, count(*) AS n FROM t GROUP BY k HAVING count(*) < 15";
    let expected = oracle(&events, query).await;
    let mut session = weir::Session::new();
    session.set("execution.runtime-mode", "streaming").unwrap();
    session.sql(&events_ddl(&bootstrap, "in")).await.unwrap();
    session
        .sql(&upsert_ddl("counts", &bootstrap, "out", ""))
        .await
        .unwrap();
    let job = session
        .submit(&format!("INSERT INTO counts {query}"))
        .await
        .unwrap();
    job.wait().await.unwrap();

    let records = topic_records(&bootstrap, "out", 3);
    let tombstones = records.iter().filter(|(_, v)| v.is_none()).count();
    assert!(tombstones > 0, "no tombstone in {} records", records.len());
    assert!(records
        .iter()
        .all(|(k, _)| k.as_deref().is_some_and(|k| k.starts_with("{\"k\":"))));

    let mut reader = weir::Session::new();
    reader
        .sql(&upsert_ddl("back", &bootstrap, "out", ""))
        .await
        .unwrap();
    let table = reader
        .query("SELECT k, n FROM back")
        .await
        .unwrap()
        .collect_table()
        .await
        .unwrap();
    assert_eq!(canonical_rows(&[table]), expected);
}

/// With 'sink.buffer-flush.*', each key's last row is written once per
/// flush: far fewer records than changes, the same table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_buffered_upsert_sink_writes_each_keys_last_row() {
    let (_cluster, bootstrap) = mock_cluster(&[("in", 1), ("out", 1)]);
    let events = produce_events(&bootstrap, "in", 1, 9).await;
    let query = "SELECT k, count(*) AS n FROM t GROUP BY k";
    let expected = oracle(&events, query).await;
    let mut session = weir::Session::new();
    session.set("execution.runtime-mode", "streaming").unwrap();
    session.set("parallelism.default", "1").unwrap();
    session.sql(&events_ddl(&bootstrap, "in")).await.unwrap();
    let buffered = ", 'sink.buffer-flush.max-rows' = '1000', 'sink.buffer-flush.interval' = '10 s'";
    session
        .sql(&upsert_ddl("counts", &bootstrap, "out", buffered))
        .await
        .unwrap();
    let job = session
        .submit(&format!("INSERT INTO counts {query}"))
        .await
        .unwrap();
    job.wait().await.unwrap();
    let records = topic_records(&bootstrap, "out", 1);
    // One flush at the end: one record per key.
    assert_eq!(records.len(), expected.len(), "{records:?}");
    let mut reader = weir::Session::new();
    reader
        .sql(&upsert_ddl("back", &bootstrap, "out", ""))
        .await
        .unwrap();
    let table = reader
        .query("SELECT k, n FROM back")
        .await
        .unwrap()
        .collect_table()
        .await
        .unwrap();
    assert_eq!(canonical_rows(&[table]), expected);
}

/// An updating result written as Debezium change events and read back:
/// the changes applied are the batch answer; filters and aggregates over
/// the CDC stream see its retractions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debezium_json_topics_carry_a_changelog() {
    let (_cluster, bootstrap) = mock_cluster(&[("in", 2), ("cdc", 1)]);
    let events = produce_events(&bootstrap, "in", 2, 13).await;
    let mut session = weir::Session::new();
    session.set("execution.runtime-mode", "streaming").unwrap();
    session.sql(&events_ddl(&bootstrap, "in")).await.unwrap();
    let cdc = |name: &str| {
        format!(
            "CREATE TABLE {name} (k BIGINT, n BIGINT, s BIGINT)
             WITH ('connector' = 'kafka', 'topic' = 'cdc', 'properties.bootstrap.servers' = '{bootstrap}',
                   'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
                   'format' = 'debezium-json')"
        )
    };
    session.sql(&cdc("changes")).await.unwrap();
    let job = session
        .submit("INSERT INTO changes SELECT k, count(*), sum(v) FROM t GROUP BY k")
        .await
        .unwrap();
    job.wait().await.unwrap();
    let records = topic_records(&bootstrap, "cdc", 1);
    assert!(records
        .iter()
        .any(|(_, v)| v.as_deref().is_some_and(|v| v.contains("\"op\":\"d\""))));

    let mut reader = weir::Session::new();
    reader.sql(&cdc("back")).await.unwrap();
    let table = reader
        .query("SELECT k, n, s FROM back")
        .await
        .unwrap()
        .collect_table()
        .await
        .unwrap();
    let expected = oracle(&events, "SELECT k, count(*), sum(v) FROM t GROUP BY k").await;
    assert_eq!(canonical_rows(&[table]), expected);
    // An aggregate over the CDC stream retracts its old rows.
    let totals = reader
        .query("SELECT sum(n) AS rows, max(s) AS top FROM back WHERE n > 1")
        .await
        .unwrap()
        .collect_table()
        .await
        .unwrap();
    let expected = oracle(
        &events,
        "SELECT sum(n) AS rows, max(s) AS top FROM (SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k) WHERE n > 1",
    )
    .await;
    assert_eq!(canonical_rows(&[totals]), expected);
}

/// An `upsert-kafka` topic of rates is a versioned table: orders joined
/// `FOR SYSTEM_TIME AS OF` their time each see the rate of their key that
/// was current then, as a batch query over the same rows finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_join_the_rates_of_an_upsert_topic_as_of_their_time() {
    let (_cluster, bootstrap) = mock_cluster(&[("orders", 1), ("rates", 1)]);
    let events: Vec<Event> = generate(
        41,
        1,
        Shape {
            rows: 200,
            keys: 6,
            hot: 0.3,
            nulls: 0.1,
            step: 5,
            jitter: 0,
        },
    )
    .remove(0);
    let orders: Vec<_> = events.iter().map(|e| (0, None, event_json(e))).collect();
    produce(&producer(&bootstrap), "orders", &orders).await;
    let versions = versions(5, 8, events[0].ts + 100);
    let rates: Vec<_> = versions
        .iter()
        .map(|v| (0, Some(format!("{{\"key\": {}}}", v.0)), version_json(*v)))
        .collect();
    produce(&producer(&bootstrap), "rates", &rates).await;
    let expected = temporal_oracle(&events, &versions, "JOIN").await;
    assert!(expected.len() > 50, "{}", expected.len());
    let mut session = weir::Session::new();
    session.set("parallelism.default", "2").unwrap();
    session
        .sql(&events_ddl(&bootstrap, "orders"))
        .await
        .unwrap();
    session
        .sql(&format!(
            "CREATE TABLE rates (key BIGINT, rate BIGINT, rts TIMESTAMP(3), WATERMARK FOR rts AS rts,
               PRIMARY KEY (key) NOT ENFORCED)
             WITH ('connector' = 'upsert-kafka', 'topic' = 'rates', 'properties.bootstrap.servers' = '{bootstrap}',
                   'key.format' = 'json', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset')"
        ))
        .await
        .unwrap();
    let rows = session
        .query("SELECT t.k, t.v, t.ts, r.rate FROM t JOIN rates FOR SYSTEM_TIME AS OF t.ts AS r ON t.k = r.key")
        .await
        .unwrap_or_else(|e| panic!("{}", e.render()))
        .collect()
        .await
        .unwrap();
    assert_eq!(canonical_rows(&rows), expected);
}
