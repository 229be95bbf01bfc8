//! The Kafka connector against librdkafka's mock cluster: a real Kafka
//! protocol server on loopback, started by each test.

mod common;

use std::time::Duration;

use common::kafka::*;
use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// Records `0..count` for [`produce`]: key `i`, value 1, event time
/// `1_700_000_000_000 + i`, on partition `partition(i)`.
fn numbered_records(
    count: i64,
    partition: impl Fn(i64) -> i32,
) -> Vec<(i32, Option<String>, String)> {
    (0..count)
        .map(|i| {
            let event = Event {
                key: Some(i),
                value: Some(1),
                ts: 1_700_000_000_000 + i,
            };
            (partition(i), None, event_json(&event))
        })
        .collect()
}

fn kafka_ddl(name: &str, bootstrap: &str, topic: &str, delay: i64, extra: &str) -> String {
    format!(
        "CREATE STREAM {name} (k BIGINT, v BIGINT, ts TIMESTAMP(3) NOT NULL,
           WATERMARK FOR ts AS ts - INTERVAL '{delay}' MILLISECOND)
         WITH ('connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset', 'format' = 'json'{extra})"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_out_of_order_with_bad_records_match_the_oracle() {
    let (_cluster, bootstrap) = mock_cluster(&[("events", 3)]);
    // Partitions 0 and 1 carry most rows, out of order; partition 2 has a
    // few early rows and then stays quiet.
    let mut splits = generate(
        23,
        2,
        Shape {
            rows: 300,
            keys: 7,
            hot: 0.3,
            nulls: 0.05,
            step: 6,
            jitter: 50,
        },
    );
    splits.push(splits[0][..5].to_vec());
    let mut records: Vec<(i32, Option<String>, String)> = Vec::new();
    for (p, split) in splits.iter().enumerate() {
        for e in split {
            records.push((p as i32, None, event_json(e)));
        }
    }
    // Bad records: broken JSON, a wrong type, a missing NOT NULL field.
    let bad = [
        (0, "{broken".to_string()),
        (
            1,
            r#"{"k": "seven", "v": 1, "ts": "2023-11-14 22:13:20.000"}"#.to_string(),
        ),
        (2, r#"{"k": 1, "v": 1}"#.to_string()),
    ];
    records.extend(bad.iter().map(|(p, payload)| (*p, None, payload.clone())));
    produce(&producer(&bootstrap), "events", &records).await;

    let dlq = tempfile::tempdir().unwrap();
    let delay = 20;
    let (pairs, late) = on_time_pairs(&splits, delay, |t| hop_windows(t, 100, 100));
    let expected = oracle(&pairs, "SELECT window_start, k, count(*) AS n, sum(v) AS s FROM w GROUP BY window_start, window_end, k").await;
    for parallelism in [1, 3] {
        let ddl = kafka_ddl(
            "t",
            &bootstrap,
            "events",
            delay,
            &format!(
                ", 'scan.bounded.mode' = 'latest-offset', 'bad-data.path' = '{}'",
                dlq.path().display()
            ),
        );
        let run = run_weir(
            &[format!("SET 'parallelism.default' = '{parallelism}'"), ddl],
            "SELECT window_start, k, count(*) AS n, sum(v) AS s FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '100' MILLISECOND)) GROUP BY window_start, window_end, k",
        )
        .await;
        assert_eq!(run.rows, expected, "parallelism {parallelism}");
        assert_eq!(run.late_rows, late);
    }
    // Every bad record is in the dead-letter output, with where it was.
    let letters = dead_letters(dlq.path());
    // Late rows share the output (no 'late-data.path'); they carry the row.
    let (letters, late_letters): (Vec<_>, Vec<_>) =
        letters.into_iter().partition(|l| l.get("raw").is_some());
    assert_eq!(
        late_letters.len() as u64,
        2 * late,
        "two runs wrote their late rows"
    );
    // Two runs read the topic.
    assert_eq!(letters.len(), 2 * bad.len());
    let mut raws: Vec<String> = letters
        .iter()
        .map(|l| l["raw"].as_str().unwrap().to_string())
        .collect();
    raws.sort();
    raws.dedup();
    let mut expected_raws: Vec<String> = bad.iter().map(|(_, p)| p.clone()).collect();
    expected_raws.sort();
    assert_eq!(raws, expected_raws);
    for letter in &letters {
        assert!(!letter["reason"].as_str().unwrap().is_empty());
        // The Kafka record it was, as a dead-letter topic would carry it.
        let location = format!(
            "{}-{}@{}",
            letter["topic"].as_str().unwrap(),
            letter["partition"],
            letter["offset"]
        );
        assert_eq!(letter["location"], location.as_str());
        assert_eq!(letter["topic"], "events");
        assert!(letter["headers"].as_array().is_some(), "{letter}");
        assert!(letter["key"].is_null(), "the records had no key: {letter}");
    }
    assert!(late > 0);
}

/// `'bad-data.topic'`: each bad record goes to a Kafka topic as it was
/// read (value, key and headers), with headers saying why and where from;
/// late rows go there too, as JSON objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_records_go_to_a_dead_letter_topic_as_they_were_read() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::FutureRecord;
    let (_cluster, bootstrap) = mock_cluster(&[("events", 1), ("dead", 1)]);
    let good = numbered_records(20, |_| 0);
    produce(&producer(&bootstrap), "events", &good).await;
    // After them: a wrong type with a key and a header, a broken record,
    // a late row (a second older than the watermark).
    let producer = producer(&bootstrap);
    let wrong = r#"{"k": "seven", "v": 1, "ts": "2023-11-14 22:13:20.000"}"#;
    let headers = OwnedHeaders::new().insert(Header {
        key: "trace",
        value: Some("abc"),
    });
    let record = FutureRecord::to("events")
        .partition(0)
        .key("key-7")
        .payload(wrong)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap();
    let late = Event {
        key: Some(99),
        value: Some(5),
        ts: 1_699_999_000_000,
    };
    produce(
        &producer,
        "events",
        &[
            (0, None, "{broken".to_string()),
            (0, None, event_json(&late)),
        ],
    )
    .await;

    let ddl = kafka_ddl(
        "t",
        &bootstrap,
        "events",
        0,
        ", 'scan.bounded.mode' = 'latest-offset', 'bad-data.topic' = 'dead'",
    );
    let run = run_weir(
        &[ddl],
        "SELECT window_start, count(*) AS n, sum(v) AS s, max(k) AS m FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end",
    )
    .await;
    assert_eq!(run.rows, vec!["2023-11-14T22:13:20 | 20 | 20 | 19"]);
    assert_eq!(run.late_rows, 1);
    // Each good record keeps its own value after the bad ones in its poll.
    let with_offsets = format!(
        "CREATE STREAM o (k BIGINT, v BIGINT, ts TIMESTAMP(3), off BIGINT METADATA FROM 'offset')
         WITH ('connector' = 'kafka', 'topic' = 'events', 'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
               'format' = 'json', 'bad-data' = 'drop')"
    );
    let offsets = run_weir(&[with_offsets], "SELECT k, off FROM o").await;
    let mut expected: Vec<String> = (0..20).map(|i| format!("{i} | {i}")).collect();
    expected.push("99 | 22".to_string());
    expected.sort();
    assert_eq!(offsets.rows, expected);

    let letters = topic_letters(&bootstrap, "dead");
    assert_eq!(letters.len(), 3, "{letters:?}");
    let find = |value: &str| {
        letters
            .iter()
            .find(|l| l.value.as_deref() == Some(value))
            .unwrap_or_else(|| panic!("no letter {value} in {letters:?}"))
    };
    let wrong_letter = find(wrong);
    assert_eq!(wrong_letter.key.as_deref(), Some("key-7"));
    let header = |l: &Letter, name: &str| {
        l.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no header {name} in {l:?}"))
    };
    assert_eq!(header(wrong_letter, "trace"), "abc");
    assert_eq!(header(wrong_letter, "dlq.stream"), "t");
    assert_eq!(header(wrong_letter, "dlq.topic"), "events");
    assert_eq!(header(wrong_letter, "dlq.partition"), "0");
    assert_eq!(header(wrong_letter, "dlq.offset"), "20");
    assert_eq!(header(wrong_letter, "dlq.location"), "events-0@20");
    assert!(!header(wrong_letter, "dlq.reason").is_empty());
    let broken = find("{broken");
    assert_eq!(header(broken, "dlq.offset"), "21");
    assert!(broken.key.is_none() && !broken.headers.iter().any(|(k, _)| k == "trace"));
    // The late row, as the row it became.
    let late_letter = letters
        .iter()
        .find(|l| header(l, "dlq.stream") == "t-late")
        .unwrap();
    let row: serde_json::Value =
        serde_json::from_str(late_letter.value.as_deref().unwrap()).unwrap();
    assert_eq!(
        (row["k"].as_i64(), row["v"].as_i64()),
        (Some(99), Some(5)),
        "{row}"
    );
}

/// A record of a dead-letter topic, as text.
#[derive(Debug)]
struct Letter {
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, String)>,
}

/// Every record of the one-partition `topic`.
fn topic_letters(bootstrap: &str, topic: &str) -> Vec<Letter> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "weir-test-letters")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, end) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut letters = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (letters.len() as i64) < end && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(text).unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            letters.push(Letter {
                key: m.key().map(text),
                value: m.payload().map(text),
                headers,
            });
        }
    }
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_partition_stops_holding_the_watermark_back() {
    let (_cluster, bootstrap) = mock_cluster(&[("busy", 2)]);
    let p = producer(&bootstrap);
    // Partition 1 gets one early record, then nothing.
    let base = 1_700_000_000_000i64;
    produce(
        &p,
        "busy",
        &[(
            1,
            None,
            event_json(&Event {
                key: Some(1),
                value: Some(1),
                ts: base,
            }),
        )],
    )
    .await;
    let mut session = weir::Session::new();
    session
        .sql(&kafka_ddl(
            "t",
            &bootstrap,
            "busy",
            0,
            ", 'scan.watermark.idle-timeout' = '300ms'",
        ))
        .await
        .unwrap();
    let mut results = session
        .query("SELECT window_start, count(*) AS n FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end")
        .await
        .unwrap();
    // Partition 0 keeps flowing, seconds ahead of partition 1.
    let feeder = tokio::spawn(async move {
        for i in 0..200i64 {
            let e = Event {
                key: Some(2),
                value: Some(i),
                ts: base + 1000 + i * 50,
            };
            produce(&p, "busy", &[(0, None, event_json(&e))]).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // Windows fire although partition 1 has not moved since its first row.
    let batch = tokio::time::timeout(Duration::from_secs(60), results.next_batch())
        .await
        .expect("a window should fire with the idle partition excluded")
        .unwrap()
        .unwrap();
    assert!(batch.num_rows() > 0);
    results.cancel();
    feeder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_offsets_resume_where_the_last_job_stopped() {
    let (_cluster, bootstrap) = mock_cluster(&[("orders", 2)]);
    let p = producer(&bootstrap);
    let rows = |from: i64, n: i64| -> Vec<(i32, Option<String>, String)> {
        (from..from + n)
            .map(|i| {
                (
                    (i % 2) as i32,
                    None,
                    event_json(&Event {
                        key: Some(i),
                        value: Some(i),
                        ts: 1_700_000_000_000 + i,
                    }),
                )
            })
            .collect()
    };
    produce(&p, "orders", &rows(0, 50)).await;
    let count = |startup: &str| {
        let ddl = kafka_ddl(
            "t",
            &bootstrap,
            "orders",
            0,
            &format!(", 'properties.group.id' = 'g1', 'scan.bounded.mode' = 'latest-offset', 'scan.startup.mode' = '{startup}'"),
        )
        .replace("'scan.startup.mode' = 'earliest-offset', ", "");
        async move {
            run_weir(&[ddl], "SELECT count(*) AS n, sum(k) AS s FROM t")
                .await
                .rows
        }
    };
    assert_eq!(count("earliest-offset").await, vec!["50 | 1225"]);
    produce(&p, "orders", &rows(50, 20)).await;
    // Only the 20 new records: 50..70.
    assert_eq!(count("group-offsets").await, vec!["20 | 1190"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sink_writes_keyed_records_that_read_back_with_metadata() {
    let (_cluster, bootstrap) = mock_cluster(&[("out", 3)]);
    let input = tempfile::tempdir().unwrap();
    let splits = generate(
        29,
        2,
        Shape {
            rows: 200,
            keys: 9,
            hot: 0.2,
            nulls: 0.0,
            step: 5,
            jitter: 0,
        },
    );
    write_splits(input.path(), &splits);
    let mut session = weir::Session::new();
    session
        .sql(&stream_ddl(input.path(), 0, 64, ""))
        .await
        .unwrap();
    session
        .sql(&format!(
            "CREATE TABLE out (k BIGINT, v BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'kafka', 'topic' = 'out',
               'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json', 'key.format' = 'json', 'key.fields' = 'k')"
        ))
        .await
        .unwrap();
    session
        .submit("INSERT INTO out SELECT k, v, ts FROM t")
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();

    // Read it back, with Kafka metadata columns.
    let ddl = format!(
        "CREATE STREAM back (k BIGINT, v BIGINT, ts TIMESTAMP(3), part INT METADATA FROM 'partition', off BIGINT METADATA FROM 'offset')
         WITH ('connector' = 'kafka', 'topic' = 'out', 'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'json')"
    );
    let run = run_weir(
        std::slice::from_ref(&ddl),
        "SELECT count(*) AS n, sum(v) AS s, count(DISTINCT part) AS parts FROM back",
    )
    .await;
    let total: i64 = splits.iter().flatten().map(|e| e.value.unwrap()).sum();
    assert_eq!(run.rows, vec![format!("400 | {total} | 3")]);
    // Keyed: every key lands in exactly one partition.
    let keyed = run_weir(
        &[ddl],
        "SELECT k, count(DISTINCT part) AS parts, min(off) >= 0 AS ok FROM back GROUP BY k",
    )
    .await;
    assert_eq!(keyed.rows.len(), 9);
    assert!(
        keyed.rows.iter().all(|r| r.ends_with("| 1 | true")),
        "{:?}",
        keyed.rows
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_errors_are_retried_without_losing_records() {
    let (cluster, bootstrap) = mock_cluster(&[("flaky", 2)]);
    let records = numbered_records(100, |i| (i % 2) as i32);
    produce(&producer(&bootstrap), "flaky", &records).await;
    // The next fetches fail with retriable errors.
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ],
    );
    let run = run_weir(
        &[kafka_ddl(
            "t",
            &bootstrap,
            "flaky",
            0,
            ", 'scan.bounded.mode' = 'latest-offset'",
        )],
        "SELECT count(*) AS n FROM t",
    )
    .await;
    assert_eq!(run.rows, vec!["100"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_partition_metrics_name_each_partition() {
    let (_cluster, bootstrap) = mock_cluster(&[("m", 2)]);
    let records = numbered_records(30, |i| if i < 20 { 0 } else { 1 });
    produce(&producer(&bootstrap), "m", &records).await;
    let mut session = weir::Session::new();
    session
        .sql(&kafka_ddl(
            "t",
            &bootstrap,
            "m",
            0,
            ", 'scan.bounded.mode' = 'latest-offset'",
        ))
        .await
        .unwrap();
    let mut results = session.query("SELECT k FROM t").await.unwrap();
    while results.next_batch().await.unwrap().is_some() {}
    let metrics = results.metrics();
    let mut splits: Vec<(String, u64)> = metrics
        .splits
        .iter()
        .map(|s| (s.split.clone(), s.rows))
        .collect();
    splits.sort();
    assert_eq!(
        splits,
        vec![("m-0".to_string(), 20), ("m-1".to_string(), 10)]
    );
}

/// A running 1 s tumble over a two-partition topic whose partition 1 gets
/// one early record and then nothing, while partition 0 gets one every
/// 10 ms; the stall timeout is 1 s. Returns the cluster (which must outlive
/// the query), the results and the feeder.
async fn one_silent_partition(
    topic: &str,
    extra: &str,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    weir::ResultStream,
    tokio::task::JoinHandle<()>,
) {
    let (cluster, bootstrap) = mock_cluster(&[(topic, 2)]);
    let p = producer(&bootstrap);
    let base = 1_700_000_000_000i64;
    let early = Event {
        key: Some(1),
        value: Some(1),
        ts: base,
    };
    produce(&p, topic, &[(1, None, event_json(&early))]).await;
    let mut session = weir::Session::new();
    session.set("watermark.stall-timeout", "1s").unwrap();
    session
        .sql(&kafka_ddl("t", &bootstrap, topic, 0, extra))
        .await
        .unwrap();
    let results = session
        .query("SELECT window_start, count(*) AS n FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end")
        .await
        .unwrap();
    let topic = topic.to_string();
    let feeder = tokio::spawn(async move {
        for i in 0..2000i64 {
            let e = Event {
                key: Some(2),
                value: Some(i),
                ts: base + 1000 + i * 50,
            };
            produce(&p, &topic, &[(0, None, event_json(&e))]).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (cluster, results, feeder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_partition_that_holds_the_watermark_raises_a_stall_alert() {
    // No idle timeout: partition 1 holds the watermark where its record put it.
    let (_cluster, mut results, feeder) = one_silent_partition("stuck", "").await;
    let mut stall = None;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let metrics = results.metrics();
        stall = metrics
            .alerts
            .iter()
            .find(|a| a.kind == weir::crates::engine::metrics::AlertKind::WatermarkStall)
            .cloned();
        if stall.is_some() {
            break;
        }
    }
    let stall = stall.expect("a stalled watermark should raise an alert");
    assert_eq!(stall.subject, "stuck-1", "{stall:?}");
    assert!(stall.message.contains("stuck-1"), "{}", stall.message);
    results.cancel();
    feeder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_partition_raises_no_stall_alert() {
    let (_cluster, mut results, feeder) =
        one_silent_partition("calm", ", 'scan.watermark.idle-timeout' = '300ms'").await;
    // Windows fire: the watermark moves, so after several stall timeouts
    // there is still no alert.
    let mut windows = 0;
    while windows < 8 {
        let batch = tokio::time::timeout(Duration::from_secs(60), results.next_batch())
            .await
            .expect("windows should fire with the idle partition excluded")
            .unwrap()
            .unwrap();
        windows += batch.num_rows();
    }
    let alerts = results.metrics().alerts;
    assert!(alerts.is_empty(), "{alerts:?}");
    results.cancel();
    feeder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn system_tables_show_a_running_jobs_partitions_and_operators() {
    let (_cluster, bootstrap) = mock_cluster(&[("sys", 2)]);
    let records = numbered_records(30, |i| if i < 20 { 0 } else { 1 });
    produce(&producer(&bootstrap), "sys", &records).await;
    let mut session = weir::Session::new();
    session
        .sql(&kafka_ddl("t", &bootstrap, "sys", 0, ""))
        .await
        .unwrap();
    session
        .sql("CREATE TABLE out (k BIGINT) WITH ('connector' = 'blackhole')")
        .await
        .unwrap();
    let job = session
        .submit("INSERT INTO out SELECT k FROM t")
        .await
        .unwrap();
    // The job reads everything, then keeps running on an idle topic; lag
    // comes with librdkafka's statistics, every second.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let caught_up = |m: weir::MetricsSnapshot| {
        m.splits.iter().map(|s| s.rows).sum::<u64>() == 30
            && m.splits.iter().all(|s| s.lag == Some(0))
    };
    while !caught_up(job.metrics()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never caught up: {:?}",
            job.metrics().splits
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let partitions = session
        .query(
            "SELECT job_id, `partition`, rows, lag, watermark FROM weir_metrics.partitions LIMIT 2",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        canonical_rows(&partitions),
        vec![
            "1 | sys-0 | 20 | 0 | 2023-11-14T22:13:20.019",
            "1 | sys-1 | 10 | 0 | 2023-11-14T22:13:20.029",
        ]
    );

    // Filtered like any stream: which partitions have read more than 15?
    let busy = session
        .query("SELECT `partition` FROM weir_metrics.partitions WHERE rows > 15 LIMIT 1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(canonical_rows(&busy), vec!["sys-0"]);

    let sink = session
        .query("SELECT rows_in FROM weir_metrics.operators WHERE operator LIKE '%sink%' LIMIT 2")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    // One row per sink subtask, each fed by one partition.
    assert_eq!(canonical_rows(&sink), vec!["10", "20"]);

    // Windowed on sampled_at: one sample of two partitions per 200 ms window.
    session
        .sql("CREATE STREAM parts WITH ('connector' = 'weir_metrics', 'table' = 'partitions', 'scan.interval' = '200ms')")
        .await
        .unwrap();
    let windows = session
        .query("SELECT count(*) AS n, max(rows) AS most FROM TABLE(TUMBLE(TABLE parts, DESCRIPTOR(sampled_at), INTERVAL '200' MILLISECOND)) GROUP BY window_start, window_end LIMIT 3")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    // Each sample holds both partitions; a busy machine can delay a tick
    // past a window's end, so a window holds whole samples, not one.
    let windows = canonical_rows(&windows);
    assert_eq!(windows.len(), 3);
    for window in windows {
        let (n, most) = window.split_once(" | ").unwrap();
        let n: u64 = n.parse().unwrap();
        assert!(n >= 2 && n.is_multiple_of(2) && most == "20", "{window}");
    }
    job.cancel();
}

/// librdkafka's mock cluster answers the transactional calls but keeps no
/// transaction state (no aborts, no transactional offsets), so this checks
/// the exactly-once sink's protocol end to end, not crash recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_delivery_commits_a_transaction_per_checkpoint() {
    let (_cluster, bootstrap) = mock_cluster(&[("eo", 2)]);
    let checkpoints = tempfile::tempdir().unwrap();
    let events = "CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '20000',
        'scan.rate-limit' = '20000', 'base-time' = '1700000000000', 'first-event.rate' = '10000')";
    let counts = "SELECT window_start, bid.auction, count(*) AS n
        FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(dateTime), INTERVAL '100' MILLISECOND))
        WHERE event_type = 2 GROUP BY window_start, window_end, bid.auction";
    let mut session = weir::Session::new();
    session
        .set("execution.checkpointing.interval", "200ms")
        .unwrap();
    session
        .set(
            "state.checkpoints.dir",
            &checkpoints.path().display().to_string(),
        )
        .unwrap();
    session.sql(events).await.unwrap();
    session
        .sql(&format!(
            "CREATE TABLE counts (window_start TIMESTAMP(3), auction BIGINT, n BIGINT)
             WITH ('connector' = 'kafka', 'topic' = 'eo', 'properties.bootstrap.servers' = '{bootstrap}',
                   'format' = 'json', 'sink.delivery' = 'exactly-once')"
        ))
        .await
        .unwrap();
    let job = session
        .submit(&format!("INSERT INTO counts {counts}"))
        .await
        .unwrap();
    job.wait().await.unwrap();
    assert!(job.checkpoints().completed >= 2, "{:?}", job.checkpoints());
    // The sink checkpointed as a transactional one: its journal is there.
    let manifests: Vec<String> = walk(checkpoints.path())
        .into_iter()
        .filter(|p| p.ends_with("_manifest.json"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        manifests.iter().any(|m| m.contains("\"kafka_journal\"")),
        "{manifests:?}"
    );

    let back = format!(
        "CREATE STREAM back (window_start TIMESTAMP(3), auction BIGINT, n BIGINT)
         WITH ('connector' = 'kafka', 'topic' = 'eo', 'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'json')"
    );
    let written = run_weir(&[back], "SELECT window_start, auction, n FROM back").await;
    let reference = run_weir(&[events.to_string()], counts).await;
    assert!(reference.rows.len() > 100);
    assert_eq!(written.rows, reference.rows);
}

#[test]
fn exactly_once_needs_checkpoints() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime
        .block_on(async {
            let mut session = weir::Session::new();
            session
                .sql(
                    "CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '10');
                     CREATE TABLE out (n BIGINT) WITH ('connector' = 'kafka', 'topic' = 't',
                       'properties.bootstrap.servers' = '127.0.0.1:1', 'format' = 'json',
                       'sink.delivery' = 'exactly-once');",
                )
                .await
                .unwrap();
            session
                .submit("INSERT INTO out SELECT 1 FROM events")
                .await
                .map(|_| ())
        })
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("execution.checkpointing.interval"),
        "{error}"
    );
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

// GROUP BY without a window: a changelog with a state TTL. Kafka is the
// unbounded input; its changes applied are the result.

/// The table `changes` (batches with row kinds) describe, canonical like
/// [`canonical_rows`].
fn applied(changes: &[weir::arrow::record_batch::RecordBatch]) -> Vec<String> {
    let Some(first) = changes.first() else {
        return Vec::new();
    };
    let data = weir::changelog::without_kinds(first);
    let mut table = weir::ChangelogTable::new(data.schema()).unwrap();
    for batch in changes {
        table.apply(batch).unwrap();
    }
    canonical_rows(&[table.to_batch().unwrap()])
}

/// `sql` (a GROUP BY without a window) running over topic `topic` as
/// stream `t`, with state TTL `ttl`.
async fn upsert_query(bootstrap: &str, topic: &str, ttl: &str, sql: &str) -> weir::ResultStream {
    let mut session = weir::Session::new();
    session.set("table.exec.state.ttl", ttl).unwrap();
    session
        .sql(&kafka_ddl("t", bootstrap, topic, 0, ""))
        .await
        .unwrap();
    session.query(sql).await.unwrap()
}

/// The next batch of changes of `results`, if one comes within half a
/// second.
async fn next_within(
    results: &mut weir::ResultStream,
) -> Option<weir::arrow::record_batch::RecordBatch> {
    tokio::time::timeout(Duration::from_millis(500), results.next_changes())
        .await
        .ok()
        .and_then(Result::unwrap)
}

/// DataFusion's answer over `events` as table `t(k, v, ts)`.
async fn batch_oracle(events: &[Event], sql: &str) -> Vec<String> {
    use datafusion::datasource::MemTable;
    let batch = events_batch(events);
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table(
        "t",
        std::sync::Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap()),
    )
    .unwrap();
    canonical_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unwindowed_group_by_changes_to_the_batch_answer() {
    let (_cluster, bootstrap) = mock_cluster(&[("upserts", 3)]);
    // Many keys, one hot, nulls in keys and values, out of order.
    let splits = generate(
        41,
        3,
        Shape {
            rows: 400,
            keys: 25,
            hot: 0.5,
            nulls: 0.1,
            step: 7,
            jitter: 300,
        },
    );
    let records: Vec<_> = splits
        .iter()
        .enumerate()
        .flat_map(|(p, events)| events.iter().map(move |e| (p as i32, None, event_json(e))))
        .collect();
    produce(&producer(&bootstrap), "upserts", &records).await;
    let events: Vec<Event> = splits.iter().flatten().copied().collect();
    let expected = batch_oracle(
        &events,
        "SELECT k, count(*) AS n, sum(v) AS s, max(v) AS m FROM t GROUP BY k",
    )
    .await;

    let mut results = upsert_query(
        &bootstrap,
        "upserts",
        "1 h",
        "SELECT k, count(*) AS n, sum(v) AS s, max(v) AS m FROM t GROUP BY k",
    )
    .await;
    let mut batches = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while applied(&batches) != expected && std::time::Instant::now() < deadline {
        batches.extend(next_within(&mut results).await);
    }
    assert_eq!(applied(&batches), expected);
    // Changes, not one row per key at the end: the hot key changed often,
    // each time retracting its old row.
    let retractions = batches
        .iter()
        .flat_map(|b| weir::changelog::kinds_of(b).unwrap())
        .filter(|k| *k == weir::changelog::RowKind::UpdateBefore)
        .count();
    assert!(retractions > 0, "no -U for {} keys", expected.len());
    let state: u64 = results
        .metrics()
        .operator("updating aggregate")
        .map(|s| s.state_rows)
        .sum();
    assert_eq!(state as usize, expected.len());
    results.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_idle_longer_than_the_ttl_starts_over() {
    let (_cluster, bootstrap) = mock_cluster(&[("ttl", 1)]);
    let p = producer(&bootstrap);
    let event = |value: i64| {
        (
            0,
            None,
            event_json(&Event {
                key: Some(7),
                value: Some(value),
                ts: 1_700_000_000_000 + value,
            }),
        )
    };
    let mut results = upsert_query(
        &bootstrap,
        "ttl",
        "1s",
        "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k",
    )
    .await;
    let mut seen = Vec::new();
    let mut wait_for = async |row: &str, results: &mut weir::ResultStream| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !seen.iter().any(|r: &String| r == row) {
            assert!(std::time::Instant::now() < deadline, "no {row} in {seen:?}");
            if let Some(batch) = next_within(results).await {
                // The rows a key has now (+I, +U), without their kind.
                let shown = weir::changelog::with_op_column(&batch).unwrap();
                seen.extend(
                    canonical_rows(&[shown])
                        .into_iter()
                        .filter(|r| r.starts_with('+'))
                        .filter_map(|r| r.split_once(" | ").map(|(_, row)| row.to_string())),
                );
            }
        }
    };
    produce(&p, "ttl", &[event(1), event(2), event(3)]).await;
    wait_for("7 | 3 | 6", &mut results).await;
    // Idle for twice the TTL: the key's state expires (and the state
    // metric says so), so its next rows count from zero.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let state: u64 = results
        .metrics()
        .operator("updating aggregate")
        .map(|s| s.state_rows)
        .sum();
    assert_eq!(state, 0);
    produce(&p, "ttl", &[event(10), event(20)]).await;
    wait_for("7 | 2 | 30", &mut results).await;
    assert!(!seen.iter().any(|r| r == "7 | 5 | 36"), "{seen:?}");
    results.cancel();
}

#[tokio::test]
async fn an_unwindowed_group_by_says_what_it_needs() {
    let mut session = weir::Session::new();
    session
        .sql(
            "CREATE STREAM e WITH ('connector' = 'nexmark');
             CREATE TABLE files (auction BIGINT, n BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/weir-never', 'format' = 'json');",
        )
        .await
        .unwrap();
    let error = |r: weir::Result<weir::ResultStream>| match r {
        Ok(_) => panic!("planned"),
        Err(e) => e.to_string(),
    };
    let query = "SELECT bid.auction, count(*) FROM e WHERE event_type = 2 GROUP BY bid.auction";
    let no_ttl = error(session.query(query).await);
    assert!(no_ttl.contains("table.exec.state.ttl"), "{no_ttl}");

    session.set("table.exec.state.ttl", "10 min").unwrap();
    assert!(session.query(query).await.is_ok());
    // A filter after it takes the retractions it needs.
    let having = session
        .query(&format!("{query} HAVING count(*) > 3"))
        .await
        .unwrap();
    assert!(having.is_updating());
    let into_files = match session.submit(&format!("INSERT INTO files {query}")).await {
        Ok(_) => panic!("planned"),
        Err(e) => e.to_string(),
    };
    assert!(into_files.contains("only appends"), "{into_files}");
}

/// A session that checkpoints every 200 ms under `checkpoints` as
/// `pipeline` (a restarted session with the same two restores).
fn checkpointed_session(checkpoints: &std::path::Path, pipeline: &str) -> weir::Session {
    let mut session = weir::Session::new();
    session
        .set("execution.checkpointing.interval", "200ms")
        .unwrap();
    session
        .set("state.checkpoints.dir", &checkpoints.display().to_string())
        .unwrap();
    session.set("pipeline.name", pipeline).unwrap();
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unwindowed_group_by_keeps_its_state_across_a_restart() {
    let (_cluster, bootstrap) = mock_cluster(&[("in", 2), ("out", 2)]);
    let p = producer(&bootstrap);
    let splits = generate(
        43,
        2,
        Shape {
            rows: 300,
            keys: 12,
            hot: 0.3,
            nulls: 0.0,
            step: 5,
            jitter: 0,
        },
    );
    // The first half of each split before the restart, the rest after.
    let half = |first: bool| -> Vec<(i32, Option<String>, String)> {
        splits
            .iter()
            .enumerate()
            .flat_map(|(i, events)| {
                let (a, b) = events.split_at(events.len() / 2);
                let part = if first { a } else { b };
                part.iter().map(move |e| (i as i32, None, event_json(e)))
            })
            .collect()
    };
    let checkpoints = tempfile::tempdir().unwrap();
    let new_session = || {
        let mut session = checkpointed_session(checkpoints.path(), "upserts");
        session.set("table.exec.state.ttl", "1 h").unwrap();
        session
    };
    let ddl = format!(
        "{};
         CREATE TABLE counts (k BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 'out',
           'properties.bootstrap.servers' = '{bootstrap}', 'value.format' = 'json', 'key.format' = 'json')",
        kafka_ddl("t", &bootstrap, "in", 0, "")
    );
    let insert = "INSERT INTO counts SELECT k, count(*), sum(v) FROM t GROUP BY k";
    // Runs the job until it has taken all `rows` in and checkpointed
    // after them, then kills it.
    let run_until = async |rows: u64, session: &mut weir::Session| {
        let job = session.submit(insert).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let taken = || -> u64 {
            job.metrics()
                .operator("updating aggregate")
                .map(|s| s.rows_in)
                .sum()
        };
        while taken() < rows {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {rows} rows",
                taken()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = job.checkpoints().completed + 1;
        while job.checkpoints().completed <= after {
            assert!(std::time::Instant::now() < deadline, "no checkpoint");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        job.cancel();
        let _ = job.wait().await;
    };

    let first = half(true);
    produce(&p, "in", &first).await;
    let mut session = new_session();
    session.sql(&ddl).await.unwrap();
    run_until(first.len() as u64, &mut session).await;

    let second = half(false);
    produce(&p, "in", &second).await;
    let mut session = new_session();
    session.sql(&ddl).await.unwrap();
    // Restored: only the second half is new input.
    run_until(second.len() as u64, &mut session).await;

    // Read back as the upsert stream it is: the last row of each key.
    let back = format!(
        "CREATE STREAM back (k BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 'out',
           'properties.bootstrap.servers' = '{bootstrap}', 'value.format' = 'json', 'key.format' = 'json',
           'scan.bounded.mode' = 'latest-offset')"
    );
    let mut session = weir::Session::new();
    session.sql(&back).await.unwrap();
    let table = session
        .query("SELECT k, n, s FROM back")
        .await
        .unwrap()
        .collect_table()
        .await
        .unwrap();
    let events: Vec<Event> = splits.iter().flatten().copied().collect();
    let expected = batch_oracle(&events, "SELECT k, count(*), sum(v) FROM t GROUP BY k").await;
    assert_eq!(canonical_rows(&[table]), expected);
}

/// A Kafka sink whose broker becomes more than 100x slower mid-run
/// (librdkafka's mock cluster, round-trip time 0 -> 1 s): the circuit
/// breaker opens and the rows spill to Parquet files while the source keeps
/// its rate; once the broker is fast again the spilled rows go back and
/// every row arrives. The mock cluster keeps no transaction state (see
/// above), so this sink is at-least-once: rows the abandoned producer had
/// already delivered may come twice, none is missing. (Exactly-once through
/// the breaker is `repl/tests/s3.rs`, on SeaweedFS.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_broker_trips_the_breaker_and_every_row_arrives() {
    let (cluster, bootstrap) = mock_cluster(&[("slow", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let events = "CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '20000',
        'scan.rate-limit' = '2000', 'base-time' = '1700000000000')";
    let query = "SELECT bid.auction, bid.bidder, bid.price FROM events WHERE event_type = 2";
    let mut session = weir::Session::new();
    session
        .set("execution.checkpointing.interval", "300ms")
        .unwrap();
    session
        .set(
            "state.checkpoints.dir",
            &dir.path().join("checkpoints").display().to_string(),
        )
        .unwrap();
    session.sql(events).await.unwrap();
    session
        .sql(&format!(
            "CREATE TABLE out (auction BIGINT, bidder BIGINT, price BIGINT)
             WITH ('connector' = 'kafka', 'topic' = 'slow', 'properties.bootstrap.servers' = '{bootstrap}',
                   'format' = 'json', 'sink.delivery' = 'at-least-once',
                   'sink.spill.path' = '{}', 'sink.spill.latency-threshold' = '100ms',
                   'sink.spill.trip-count' = '3')",
            dir.path().join("spill").display()
        ))
        .await
        .unwrap();
    let job = session
        .submit(&format!("INSERT INTO out {query}"))
        .await
        .unwrap();
    let source_rows = |m: &weir_engine::MetricsSnapshot| -> u64 {
        m.subtasks
            .iter()
            .filter(|s| s.operator.starts_with("source:"))
            .map(|s| s.rows_out)
            .sum()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster
        .broker_round_trip_time(1, Duration::from_secs(1))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = job.metrics();
    // The breaker probes the slow broker (half-open) and may close for a
    // moment when a probe's write is fast (it only queues the rows), so it
    // is watched for the whole slow period, not looked at once.
    let mut tripped = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tripped |= job.metrics().subtasks.iter().any(|s| {
            s.operator.starts_with("sink:")
                && s.breaker != Some(weir_engine::metrics::BreakerState::Closed)
        });
    }
    let after = job.metrics();
    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let sinks: Vec<_> = after
        .subtasks
        .iter()
        .filter(|s| s.operator.starts_with("sink:"))
        .collect();
    assert!(
        tripped,
        "the breaker never opened while the broker was slow: {sinks:?}"
    );
    assert!(sinks.iter().map(|s| s.spilled_rows).sum::<u64>() > 0);
    let rate = (source_rows(&after) - source_rows(&before)) as f64 / 3.0;
    assert!(rate > 1500.0, "the source keeps its 2000 rows/s: {rate}");
    job.wait().await.unwrap();

    let back = format!(
        "CREATE STREAM back (auction BIGINT, bidder BIGINT, price BIGINT)
         WITH ('connector' = 'kafka', 'topic' = 'slow', 'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'json')"
    );
    let written = run_weir(&[back], "SELECT auction, bidder, price FROM back").await;
    let reference = run_weir(&[events.to_string()], query).await;
    assert_eq!(reference.rows.len(), 20000 * 46 / 50);
    let mut distinct = written.rows.clone();
    distinct.dedup();
    let mut expected = reference.rows.clone();
    expected.dedup();
    assert_eq!(distinct, expected, "every row arrives");
    assert!(written.rows.len() >= reference.rows.len());
}

/// A partition read to its end before a checkpoint gets no new rows after
/// the restart; its source subtask announces the restored watermark at
/// once, so the other partition's new rows still close windows. (A
/// cluster task restored at the end of its partition stalled every window
/// downstream this way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_partition_without_new_rows_still_lets_windows_close() {
    let (_cluster, bootstrap) = mock_cluster(&[("in", 2)]);
    let p = producer(&bootstrap);
    let base = 1_700_000_000_000i64;
    // One row every 100 ms of event time in `range` (ms after base).
    let rows =
        |partition: i32, range: std::ops::Range<i64>| -> Vec<(i32, Option<String>, String)> {
            range
                .step_by(100)
                .map(|t| {
                    let e = Event {
                        key: Some(partition as i64),
                        value: Some(1),
                        ts: base + t,
                    };
                    (partition, None, event_json(&e))
                })
                .collect()
        };
    let checkpoints = tempfile::tempdir().unwrap();
    let output = tempfile::tempdir().unwrap();
    let start = async || {
        let mut session = checkpointed_session(checkpoints.path(), "restored-watermark");
        session.set("parallelism.default", "2").unwrap();
        session
            .sql(&format!(
                "{};
                 CREATE TABLE out (window_start TIMESTAMP(3), n BIGINT)
                   WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json')",
                kafka_ddl("t", &bootstrap, "in", 0, ""),
                output.path().display()
            ))
            .await
            .unwrap();
        session
            .submit("INSERT INTO out SELECT window_start, count(*) AS n FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end")
            .await
            .unwrap()
    };
    let committed = async || -> Vec<String> {
        let back = format!(
            "CREATE STREAM back (window_start TIMESTAMP(3), n BIGINT)
               WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json')",
            output.path().display()
        );
        run_weir(&[back], "SELECT window_start, n FROM back")
            .await
            .rows
    };
    // The windows of the first `seconds` seconds: 10 rows from each partition.
    let windows = |seconds: i64| -> Vec<String> {
        let mut rows: Vec<String> = (0..seconds)
            .map(|s| {
                let start = chrono::DateTime::from_timestamp_millis(base + s * 1000).unwrap();
                format!("{} | 20", start.naive_utc().format("%Y-%m-%dT%H:%M:%S"))
            })
            .collect();
        rows.sort();
        rows
    };
    let wait_for = async |expected: &[String]| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let rows = committed().await;
            if rows == expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "committed {rows:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };

    // Partition 1 reaches 9 s, partition 0 only 4: the first 4 windows close.
    produce(&p, "in", &rows(1, 0..9100)).await;
    produce(&p, "in", &rows(0, 0..4100)).await;
    let job = start().await;
    wait_for(&windows(4)).await;
    let after = job.checkpoints().completed + 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while job.checkpoints().completed <= after {
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    job.cancel();
    let _ = job.wait().await;

    // Only partition 0 moves on; partition 1's 9 s hold from the restore.
    produce(&p, "in", &rows(0, 4100..12000)).await;
    let job = start().await;
    wait_for(&windows(9)).await;
    job.cancel();
    let _ = job.wait().await;
}

/// Auction `i`'s record: its price a number, or for every tenth auction
/// (from 3) a decimal string, as a producer that changed the field's type
/// writes it; auction 57's price is not a number at all.
fn changed_type_record(i: i64) -> String {
    match i {
        57 => format!("{{\"auction\": {i}, \"price\": \"n/a\"}}"),
        i if i % 10 == 3 => format!("{{\"auction\": {i}, \"price\": \"{i}.50\"}}"),
        i => format!("{{\"auction\": {i}, \"price\": {}}}", i * 10),
    }
}

/// The dead letters of a Kafka stream land on a topic; a `dead-letter`
/// stream over that topic shows them, and after the column is redeclared
/// replays them through the new decoder once, even when run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_on_a_topic_replay_once_through_the_fixed_decoder() {
    let (_cluster, bootstrap) =
        mock_cluster(&[("bids", 2), ("bids-dlq", 1), ("bids-dlq-again", 1)]);
    let p = producer(&bootstrap);
    let records: Vec<(i32, Option<String>, String)> = (0..200)
        .map(|i| ((i % 2) as i32, None, changed_type_record(i)))
        .collect();
    produce(&p, "bids", &records).await;
    let checkpoints = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out_table = format!(
        "CREATE TABLE out (auction BIGINT, price DOUBLE)
           WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json')",
        out.path().display()
    );
    let run = async |session: &mut weir::Session, ddl: &str, insert: &str| {
        if let Err(e) = session.sql(ddl).await {
            panic!("{}", e.render());
        }
        run_job(session, insert).await;
    };
    let rows = async |ddl: String, query: &str| run_weir(&[ddl], query).await.rows;
    let output = async || {
        rows(
            format!(
                "CREATE STREAM back (auction BIGINT, price DOUBLE)
                   WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json')",
                out.path().display()
            ),
            "SELECT auction, price FROM back",
        )
        .await
    };
    let dead_letters = |stream: &str, topic: &str| {
        format!(
            "CREATE STREAM bad WITH ('connector' = 'dead-letter', 'stream' = '{stream}',
               'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset')"
        )
    };

    // The job as it was: prices are BIGINT, the changed records are dead.
    let mut session = checkpointed_session(checkpoints.path(), "bids");
    run(
        &mut session,
        &format!(
            "CREATE STREAM bids (auction BIGINT, price BIGINT) WITH ('connector' = 'kafka',
               'topic' = 'bids', 'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
               'format' = 'json', 'bad-data.topic' = 'bids-dlq');
             {out_table}"
        ),
        "INSERT INTO out SELECT auction, CAST(price AS DOUBLE) FROM bids",
    )
    .await;
    let rows_of = |ids: &mut dyn Iterator<Item = i64>| -> Vec<String> {
        let mut rows: Vec<String> = ids
            .map(|i| match i % 10 {
                3 => format!("{i} | {i}.500000"),
                _ => format!("{i} | {}.000000", i * 10),
            })
            .collect();
        rows.sort();
        rows
    };
    let before = rows_of(&mut (0..200).filter(|i| i % 10 != 3 && *i != 57));
    assert_eq!(output().await, before);

    // The dead letters, read as a stream: the reason and where each was.
    let letters = rows(
        dead_letters("bids", "bids-dlq"),
        "SELECT location, raw FROM bad",
    )
    .await;
    let mut expected_letters: Vec<String> = (0..200)
        .filter(|i| i % 10 == 3 || *i == 57)
        .map(|i| format!("bids-{}@{} | {}", i % 2, i / 2, changed_type_record(i)))
        .collect();
    expected_letters.sort();
    assert_eq!(letters, expected_letters);

    // The column redeclared: the replay decodes the letters again, once
    // even when it runs a second time.
    let replay = format!(
        "CREATE STREAM bids_again (auction BIGINT, price DOUBLE) WITH ('connector' = 'dead-letter',
           'stream' = 'bids', 'topic' = 'bids-dlq', 'properties.bootstrap.servers' = '{bootstrap}',
           'format' = 'json', 'bad-data.topic' = 'bids-dlq-again');
         {out_table}"
    );
    let insert = "INSERT INTO out SELECT auction, price FROM bids_again";
    let all = rows_of(&mut (0..200).filter(|i| *i != 57));
    for _ in 0..2 {
        let mut session = checkpointed_session(checkpoints.path(), "bids-replay");
        run(&mut session, &replay, insert).await;
        assert_eq!(output().await, all);
    }

    // What still fails stays dead, with the new decoder's reason.
    let still = rows(
        dead_letters("bids_again", "bids-dlq-again"),
        "SELECT reason, location, raw FROM bad",
    )
    .await;
    assert_eq!(still.len(), 1, "{still:?}");
    assert!(
        still[0].contains("n/a")
            && still[0].contains("bids-dlq-0@")
            && still[0].contains("dead letter from bids-1@28"),
        "{still:?}"
    );
}

/// A named topic is looked up by name (not among all the cluster's
/// topics): one that does not exist is an error naming it; a pattern
/// reads every topic it matches and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn named_and_pattern_topics_find_exactly_their_partitions() {
    let (_cluster, bootstrap) = mock_cluster(&[("orders-eu", 2), ("orders-us", 1), ("other", 1)]);
    let p = producer(&bootstrap);
    let record = |partition: i32, k: i64| {
        let e = Event {
            key: Some(k),
            value: Some(1),
            ts: 1_700_000_000_000,
        };
        (partition, None, event_json(&e))
    };
    produce(&p, "orders-eu", &[record(0, 1), record(1, 2)]).await;
    produce(&p, "orders-us", &[record(0, 3)]).await;
    produce(&p, "other", &[record(0, 4)]).await;
    let bounded = ", 'scan.bounded.mode' = 'latest-offset'";
    let pattern = kafka_ddl("t", &bootstrap, "x", 0, bounded)
        .replace("'topic' = 'x'", "'topic-pattern' = 'orders-.*'");
    let run = run_weir(&[pattern], "SELECT k FROM t").await;
    assert_eq!(run.rows, ["1", "2", "3"]);

    let mut session = weir::Session::new();
    session
        .sql(&kafka_ddl("m", &bootstrap, "missing", 0, bounded))
        .await
        .unwrap();
    let error = match session.query("SELECT k FROM m").await {
        Ok(mut results) => loop {
            match results.next_batch().await {
                Ok(Some(_)) => continue,
                Ok(None) => break String::new(),
                Err(e) => break e.to_string(),
            }
        },
        Err(e) => e.to_string(),
    };
    assert!(error.contains("topic 'missing' does not exist"), "{error}");
}

const BID_PROTO: &str = r#"syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
message Bid {
  int64 auction = 1;
  string bidder = 2;
  double price = 3;
  google.protobuf.Timestamp at = 4;
  enum Channel { WEB = 0; APP = 1; }
  Channel channel = 5;
  string note = 6;
}
"#;

/// Writes [`BID_PROTO`] into `dir`: its path, and `shop.Bid` messages
/// made from their JSON by prost-reflect.
fn bid_messages(dir: &std::path::Path) -> (std::path::PathBuf, impl Fn(&str) -> Vec<u8>) {
    use prost::Message;
    let proto = dir.join("bid.proto");
    std::fs::write(&proto, BID_PROTO).unwrap();
    let pool = protox::Compiler::new([dir])
        .unwrap()
        .open_file(&proto)
        .unwrap()
        .descriptor_pool();
    let bid = pool.get_message_by_name("shop.Bid").unwrap();
    let message = move |json: &str| {
        let mut reader = serde_json::Deserializer::from_str(json);
        prost_reflect::DynamicMessage::deserialize(bid.clone(), &mut reader)
            .unwrap()
            .encode_to_vec()
    };
    (proto, message)
}

/// Protobuf records: messages written here with prost-reflect read as the
/// declared columns (a field the table does not declare skipped, an unset
/// field NULL, an enum by name, a Timestamp as TIMESTAMP(3)); bytes that
/// are not a message go to the dead letters; rows written by the sink
/// read back as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protobuf_messages_read_and_write_as_declared_columns() {
    let (_cluster, bootstrap) = mock_cluster(&[("bids", 1), ("copy", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let (proto, message) = bid_messages(dir.path());
    let mut records = vec![
        message(
            r#"{"auction": 1, "bidder": "ann", "price": 2.5, "at": "2024-01-01T00:00:01.250Z", "channel": "APP", "note": "x"}"#,
        ),
        message(r#"{"auction": 2, "price": 7.0, "at": "2024-01-01T00:00:02Z"}"#),
    ];
    records.insert(1, b"\xff\xff\xff not protobuf".to_vec());
    produce_bytes(&producer(&bootstrap), "bids", &records).await;
    let dead = tempfile::tempdir().unwrap();
    let table = |name: &str, topic: &str, extra: &str| {
        format!(
            "CREATE TABLE {name} (auction BIGINT NOT NULL, bidder STRING, price DOUBLE, `at` TIMESTAMP(3), channel STRING)
             WITH ('connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
                   'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
                   'format' = 'protobuf', 'protobuf.schema-file' = '{}',
                   'protobuf.message-class-name' = 'shop.Bid'{extra})",
            proto.display()
        )
    };
    let bad_data = format!(", 'bad-data.path' = '{}'", dead.path().display());
    let read = run_weir(&[table("bids", "bids", &bad_data)], "SELECT * FROM bids").await;
    let expected = [
        "1 | ann | 2.500000 | 2024-01-01T00:00:01.250 | APP",
        "2 | NULL | 7.000000 | 2024-01-01T00:00:02 | NULL",
    ];
    assert_eq!(read.rows, expected);
    let letters = dead_letters(dead.path());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["location"], "bids-0@1");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a shop.Bid message"),
        "{letters:?}"
    );

    let mut session = weir::Session::new();
    session.sql(&table("bids", "bids", "")).await.unwrap();
    session.sql(&table("copy", "copy", "")).await.unwrap();
    run_job(&mut session, "INSERT INTO copy SELECT * FROM bids").await;
    let copied = run_weir(&[table("copy", "copy", "")], "SELECT * FROM copy").await;
    assert_eq!(copied.rows, expected);
}

/// `protobuf-confluent`: records framed with a registry id and message
/// indexes (the first message; the second message of another version of
/// the file) decode by the `.proto` text the registry holds; an id it does
/// not know is a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protobuf_confluent_records_name_their_schema_and_message() {
    let registry = common::registry::Registry::start();
    let (_cluster, bootstrap) = mock_cluster(&[("pbids", 1)]);
    let with_other_first = BID_PROTO.replace(
        "message Bid {",
        "message Other { string x = 1; }\nmessage Bid {",
    );
    let protobuf = |text: &str| {
        registry.register_with("pbids-value", text, Some("PROTOBUF"), serde_json::json!([]))
    };
    let first = protobuf(BID_PROTO);
    let second = protobuf(&with_other_first);
    let dir = tempfile::tempdir().unwrap();
    let (_, message) = bid_messages(dir.path());
    let framed = |id: u32, indexes: &[u8], json: &str| -> Vec<u8> {
        let body = message(json);
        let mut record = vec![0];
        record.extend(id.to_be_bytes());
        record.extend(indexes);
        record.extend(body);
        record
    };
    let records = [
        // Index [0] as the lone 0 byte.
        framed(
            first,
            &[0],
            r#"{"auction": 1, "bidder": "ann", "price": 2.5}"#,
        ),
        // Index [1]: count 1 and index 1, zig-zag encoded.
        framed(second, &[2, 2], r#"{"auction": 2, "channel": "APP"}"#),
        framed(99, &[0], r#"{"auction": 3}"#),
    ];
    produce_bytes(&producer(&bootstrap), "pbids", &records).await;
    let dead = tempfile::tempdir().unwrap();
    let ddl = format!(
        "CREATE TABLE pbids (auction BIGINT NOT NULL, bidder STRING, price DOUBLE, channel STRING)
         WITH ('connector' = 'kafka', 'topic' = 'pbids', 'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
               'format' = 'protobuf-confluent', 'protobuf-confluent.url' = '{}',
               'bad-data.path' = '{}')",
        registry.url,
        dead.path().display()
    );
    let read = run_weir(&[ddl], "SELECT * FROM pbids").await;
    assert_eq!(
        read.rows,
        ["1 | ann | 2.500000 | NULL", "2 | NULL | NULL | APP"]
    );
    let letters = dead_letters(dead.path());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("schema id 99: "),
        "{letters:?}"
    );
}

/// A `.proto` in the registry that imports a file of another subject (a
/// schema reference): the decoder fetches the referred text by subject
/// and version and compiles both; a message field of the imported type
/// reads as a ROW.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protobuf_confluent_schemas_import_files_of_other_subjects() {
    let registry = common::registry::Registry::start();
    let (_cluster, bootstrap) = mock_cluster(&[("orders", 1)]);
    const MONEY: &str = "syntax = \"proto3\";\npackage common;\nmessage Money { int64 cents = 1; string currency = 2; }\n";
    const ORDER: &str = r#"syntax = "proto3";
package shop;
import "common/money.proto";
import "google/protobuf/timestamp.proto";
message Order {
  int64 id = 1;
  common.Money price = 2;
  repeated string tags = 3;
  map<string, int32> counts = 4;
  enum State { NEW = 0; PAID = 1; }
  State state = 5;
  google.protobuf.Timestamp at = 6;
}
"#;
    registry.register_with("money", MONEY, Some("PROTOBUF"), serde_json::json!([]));
    let order = registry.register_with(
        "orders-value",
        ORDER,
        Some("PROTOBUF"),
        serde_json::json!([{"name": "common/money.proto", "subject": "money", "version": 1}]),
    );
    // The producer's side: both files compiled together.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("common")).unwrap();
    std::fs::write(dir.path().join("common/money.proto"), MONEY).unwrap();
    std::fs::write(dir.path().join("order.proto"), ORDER).unwrap();
    let pool = protox::Compiler::new([dir.path()])
        .unwrap()
        .open_file("order.proto")
        .unwrap()
        .descriptor_pool();
    let message = pool.get_message_by_name("shop.Order").unwrap();
    let framed = |json: &str| {
        use prost::Message;
        let mut reader = serde_json::Deserializer::from_str(json);
        let body = prost_reflect::DynamicMessage::deserialize(message.clone(), &mut reader)
            .unwrap()
            .encode_to_vec();
        let mut record = vec![0];
        record.extend(order.to_be_bytes());
        record.push(0);
        record.extend(body);
        record
    };
    let records = [
        framed(
            r#"{"id": 1, "price": {"cents": 250, "currency": "EUR"}, "tags": ["a", "b"],
                "counts": {"x": 3}, "state": "PAID", "at": "2024-01-01T00:00:01.500Z"}"#,
        ),
        framed(r#"{"id": 2}"#),
    ];
    produce_bytes(&producer(&bootstrap), "orders", &records).await;
    let ddl = format!(
        "CREATE TABLE orders (id BIGINT, price ROW<cents BIGINT, currency STRING>)
         WITH ('connector' = 'kafka', 'topic' = 'orders', 'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
               'format' = 'protobuf-confluent', 'protobuf-confluent.url' = '{}')",
        registry.url
    );
    let read = run_weir(&[ddl], "SELECT id, price.cents, price.currency FROM orders").await;
    assert_eq!(read.rows, ["1 | 250 | EUR", "2 | NULL | NULL"]);

    // LIKE the subject: the first message's fields as columns.
    let like = format!(
        "CREATE TABLE orders WITH ('connector' = 'kafka', 'topic' = 'orders',
           'properties.bootstrap.servers' = '{bootstrap}',
           'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
           'format' = 'protobuf-confluent', 'protobuf-confluent.url' = '{}') LIKE 'orders-value'",
        registry.url
    );
    let mut session = weir::Session::new();
    if let Err(e) = session.sql(&like).await {
        panic!("{}", e.render());
    }
    let Some(weir::Output::Tables(described)) = session.sql("DESCRIBE orders").await.unwrap().pop()
    else {
        panic!("DESCRIBE gave no tables");
    };
    assert_eq!(
        canonical_rows(&[described[0].1.clone()]),
        [
            "at | TIMESTAMP(3) | ",
            "counts | MAP<STRING, INT> | ",
            "id | BIGINT | ",
            "price | ROW<`cents` BIGINT, `currency` STRING> | ",
            "state | STRING | ",
            "tags | ARRAY<STRING> | ",
        ]
    );
    let read = run_weir(&[like], "SELECT * FROM orders").await;
    assert_eq!(
        read.rows,
        [
            "1 | {cents: 250, currency: EUR} | [a, b] | {x: 3} | PAID | 2024-01-01T00:00:01.500",
            "2 | NULL | NULL | NULL | NULL | NULL",
        ]
    );
}

/// The `.proto` Weir makes from `pout`'s columns and registers.
const POUT_PROTO: &str = r#"syntax = "proto3";
import "google/protobuf/timestamp.proto";

message pout_value {
  optional int64 id = 1;
  optional string name = 2;
  optional string price = 3;
  google.protobuf.Timestamp ts = 4;
  repeated string tags = 5;
  message PlaceRow {
    optional string city = 1;
    optional int32 zip = 2;
  }
  PlaceRow place = 6;
}
"#;

/// Rows written as `protobuf-confluent` register one `.proto` made from
/// the columns (type PROTOBUF) under `<topic>-value`; each record is the
/// registry's frame (id, message index [0]) around a message that decodes
/// here, with protox and prost-reflect, to the row (a NULL unset, a zero
/// or empty text set), and the rows read back through Weir as written,
/// but for an empty ARRAY, which protobuf cannot tell from an unset one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_written_as_protobuf_confluent_register_a_proto_and_read_back() {
    let registry = common::registry::Registry::start();
    let (_cluster, bootstrap) = mock_cluster(&[("pin", 1), ("pout", 1)]);
    let rows = [
        r#"{"id": 1, "name": "a", "price": 2.5, "ts": "2024-01-01 00:00:01.250", "tags": ["x", "y"], "place": {"city": "Oslo", "zip": 150}}"#,
        r#"{"id": 0, "price": 0, "place": {"zip": 0}}"#,
        r#"{"id": 2, "name": "", "price": -1.25, "ts": "2024-01-01 00:00:02", "tags": []}"#,
    ];
    let records: Vec<Vec<u8>> = rows.iter().map(|r| r.as_bytes().to_vec()).collect();
    produce_bytes(&producer(&bootstrap), "pin", &records).await;
    let table = |name: &str, topic: &str, format: &str| {
        format!(
            "CREATE TABLE {name} (id BIGINT NOT NULL, name STRING, price DECIMAL(10, 2), ts TIMESTAMP(3),
                                  tags ARRAY<STRING>, place ROW<city STRING, zip INT>)
             WITH ('connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
                   'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', {format})"
        )
    };
    let confluent = format!(
        "'format' = 'protobuf-confluent', 'protobuf-confluent.url' = '{}'",
        registry.url
    );
    let mut session = weir::Session::new();
    session
        .sql(&table("pin", "pin", "'format' = 'json'"))
        .await
        .unwrap();
    session
        .sql(&table("pout", "pout", &confluent))
        .await
        .unwrap();
    run_job(&mut session, "INSERT INTO pout SELECT * FROM pin").await;
    // A column the `.proto` cannot hold is an error when the job is
    // planned, naming it.
    let unnamed = format!(
        "CREATE TABLE unnamed (`a b` BIGINT) WITH ('connector' = 'kafka', 'topic' = 'pout',
           'properties.bootstrap.servers' = '{bootstrap}', {confluent})"
    );
    session.sql(&unnamed).await.unwrap();
    let error = session
        .sql("INSERT INTO unnamed SELECT id FROM pin")
        .await
        .unwrap_err()
        .render();
    assert!(
        error.contains("column 'a b' is not a protobuf field name"),
        "{error}"
    );

    assert_eq!(registry.types("pout-value"), ["PROTOBUF"]);
    assert_eq!(registry.versions("pout-value"), [POUT_PROTO]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pout.proto"), POUT_PROTO).unwrap();
    let pool = protox::Compiler::new([dir.path()])
        .unwrap()
        .open_file("pout.proto")
        .unwrap()
        .descriptor_pool();
    let message = pool.get_message_by_name("pout_value").unwrap();
    let decoded: Vec<String> = common::kafka::topic_bytes(&bootstrap, "pout", 1)
        .into_iter()
        .map(|(_, value)| {
            let value = value.unwrap();
            assert_eq!(
                value[..6],
                [0, 0, 0, 0, 1, 0],
                "frame: schema id 1, message [0]"
            );
            let row = prost_reflect::DynamicMessage::decode(message.clone(), &value[6..]).unwrap();
            serde_json::to_string(&row).unwrap()
        })
        .collect();
    assert_eq!(
        decoded,
        [
            r#"{"id":"1","name":"a","price":"2.50","ts":"2024-01-01T00:00:01.250Z","tags":["x","y"],"place":{"city":"Oslo","zip":150}}"#,
            r#"{"id":"0","price":"0.00","place":{"zip":0}}"#,
            r#"{"id":"2","name":"","price":"-1.25","ts":"2024-01-01T00:00:02Z"}"#,
        ]
    );
    let back = run_weir(&[table("back", "pout", &confluent)], "SELECT * FROM back").await;
    assert_eq!(
        back.rows,
        [
            "0 | NULL | 0.00 | NULL | NULL | {city: NULL, zip: 0}",
            "1 | a | 2.50 | 2024-01-01T00:00:01.250 | [x, y] | {city: Oslo, zip: 150}",
            "2 |  | -1.25 | 2024-01-01T00:00:02 | NULL | NULL",
        ]
    );
}

/// Files of length-delimited protobuf messages (`'format' = 'protobuf'` on
/// the filesystem connector): read from a folder and from one file, a
/// message that does not decode and a last one cut short are dead letters
/// naming the file and message; rows written by the sink are such files,
/// each message decoding here with prost-reflect, and read back as they
/// were.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protobuf_files_of_delimited_messages_read_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let (proto, message) = bid_messages(dir.path());
    let input = tempfile::tempdir().unwrap();
    let delimited = |messages: &[Vec<u8>]| {
        let mut file = Vec::new();
        for m in messages {
            prost::encode_length_delimiter(m.len(), &mut file).unwrap();
            file.extend(m);
        }
        file
    };
    let mut file = delimited(&[
        message(r#"{"auction": 1, "bidder": "ann", "price": 2.5, "at": "2024-01-01T00:00:01Z"}"#),
        b"\xff\xff\xff not protobuf".to_vec(),
        message(r#"{"auction": 2, "price": 7.0}"#),
    ]);
    // A last message whose length promises more than the file holds: 7
    // bytes (08 03, 12 03 "cut"), cut after its length and 4 of them.
    let cut = message(r#"{"auction": 3, "bidder": "cut"}"#);
    file.extend(delimited(&[cut])[..5].to_vec());
    std::fs::write(input.path().join("bids.pb"), &file).unwrap();
    let dead = tempfile::tempdir().unwrap();
    let table = |name: &str, path: &str, extra: &str| {
        format!(
            "CREATE TABLE {name} (auction BIGINT NOT NULL, bidder STRING, price DOUBLE, `at` TIMESTAMP(3))
             WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'protobuf',
                   'protobuf.schema-file' = '{}', 'protobuf.message-class-name' = 'shop.Bid'{extra})",
            proto.display()
        )
    };
    let expected = [
        "1 | ann | 2.500000 | 2024-01-01T00:00:01",
        "2 | NULL | 7.000000 | NULL",
    ];
    let folder = input.path().display().to_string();
    let bad_data = format!(", 'bad-data.path' = '{}'", dead.path().display());
    let read = run_weir(&[table("bids", &folder, &bad_data)], "SELECT * FROM bids").await;
    assert_eq!(read.rows, expected);
    let mut letters = dead_letters(dead.path());
    letters.sort_by_key(|l| l["location"].as_str().unwrap().to_string());
    let located: Vec<(String, String)> = letters
        .iter()
        .map(|l| {
            let location = l["location"].as_str().unwrap();
            let reason = l["reason"].as_str().unwrap();
            let after = location.rsplit("bids.pb").next().unwrap().to_string();
            (after, reason.split(':').next().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        located,
        [
            (
                "@message 2".to_string(),
                "not a shop.Bid message".to_string()
            ),
            (
                "@message 4".to_string(),
                "a message of 7 bytes runs past the end of the file (4 bytes left)".to_string()
            ),
        ]
    );
    let one_file = input.path().join("bids.pb").display().to_string();
    let read = run_weir(&[table("bids", &one_file, "")], "SELECT * FROM bids").await;
    assert_eq!(read.rows, expected);

    let out = tempfile::tempdir().unwrap();
    let written = out.path().display().to_string();
    let mut session = weir::Session::new();
    session.sql(&table("bids", &folder, "")).await.unwrap();
    session.sql(&table("copy", &written, "")).await.unwrap();
    run_job(&mut session, "INSERT INTO copy SELECT * FROM bids").await;
    let copied = run_weir(&[table("copy", &written, "")], "SELECT * FROM copy").await;
    assert_eq!(copied.rows, expected);
    // The part files hold length-delimited shop.Bid messages.
    let pool = protox::Compiler::new([dir.path()])
        .unwrap()
        .open_file(&proto)
        .unwrap()
        .descriptor_pool();
    let bid = pool.get_message_by_name("shop.Bid").unwrap();
    let mut decoded = Vec::new();
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let length = prost::decode_length_delimiter(&mut rest).unwrap();
            let row = prost_reflect::DynamicMessage::decode(bid.clone(), &rest[..length]).unwrap();
            decoded.push(serde_json::to_string(&row).unwrap());
            rest = &rest[length..];
        }
    }
    decoded.sort();
    assert_eq!(
        decoded,
        [
            r#"{"auction":"1","bidder":"ann","price":2.5,"at":"2024-01-01T00:00:01Z"}"#,
            r#"{"auction":"2","price":7.0}"#,
        ]
    );
}

/// A keyed stream's dead letters keep the record's key: in a dead-letter
/// file (with the record's topic, partition and offset), and a replay with
/// the stream's key options takes the key columns from it, as the Kafka
/// source does (`'value.fields-include' = 'EXCEPT_KEY'`: the value holds
/// the price only). A record whose key does not decode stays dead, saying
/// so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_reads_the_key_columns_from_the_dead_records_key() {
    let (_cluster, bootstrap) = mock_cluster(&[("keyed", 1)]);
    let records: Vec<(i32, Option<String>, String)> = (0..20)
        .map(|i| {
            let key = match i {
                17 => "not a key".to_string(),
                i => format!("{{\"auction\": {i}}}"),
            };
            let price = match i % 5 {
                2 => format!("\"{i}.50\""),
                _ => (i * 10).to_string(),
            };
            (0, Some(key), format!("{{\"price\": {price}}}"))
        })
        .collect();
    produce(&producer(&bootstrap), "keyed", &records).await;
    let dead = tempfile::tempdir().unwrap();
    let dead_again = tempfile::tempdir().unwrap();
    let keyed = "'key.format' = 'json', 'key.fields' = 'auction',
                 'value.format' = 'json', 'value.fields-include' = 'EXCEPT_KEY'";
    let stream = format!(
        "CREATE TABLE keyed (auction BIGINT, price BIGINT) WITH ('connector' = 'kafka',
           'topic' = 'keyed', 'properties.bootstrap.servers' = '{bootstrap}',
           'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
           {keyed}, 'bad-data.path' = '{}')",
        dead.path().display()
    );
    let read = run_weir(&[stream], "SELECT auction, price FROM keyed").await;
    // Every fifth price (from 2) is text: those records are dead, auction
    // 17's among them (its key is not JSON either).
    let mut expected: Vec<String> = (0..20)
        .filter(|i| i % 5 != 2)
        .map(|i| format!("{i} | {}", i * 10))
        .collect();
    expected.sort();
    assert_eq!(read.rows, expected);
    let letters = dead_letters(dead.path());
    let mut offsets: Vec<i64> = letters
        .iter()
        .map(|l| l["offset"].as_i64().unwrap())
        .collect();
    offsets.sort();
    assert_eq!(offsets, [2, 7, 12, 17]);
    for letter in &letters {
        let i = letter["offset"].as_i64().unwrap();
        let key = match i {
            17 => "not a key".to_string(),
            i => format!("{{\"auction\": {i}}}"),
        };
        assert_eq!(letter["key"], key.as_str(), "{letter}");
        assert_eq!(letter["topic"], "keyed");
    }

    // The price redeclared: the replay takes each auction from the key.
    let replay = format!(
        "CREATE TABLE again (auction BIGINT, price DOUBLE) WITH ('connector' = 'dead-letter',
           'stream' = 'keyed', 'path' = '{}', 'format' = 'json', {keyed},
           'bad-data.path' = '{}')",
        dead.path().display(),
        dead_again.path().display()
    );
    let replayed = run_weir(&[replay], "SELECT auction, price FROM again").await;
    assert_eq!(
        replayed.rows,
        ["12 | 12.500000", "2 | 2.500000", "7 | 7.500000"]
    );
    // Auction 17's price now decodes, its key still does not.
    let still = dead_letters(dead_again.path());
    assert_eq!(still.len(), 1, "{still:?}");
    assert!(
        still[0]["reason"].as_str().unwrap().starts_with("key: "),
        "{still:?}"
    );
    assert_eq!(still[0]["raw"], "{\"price\": \"17.50\"}");
}
