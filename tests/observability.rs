//! What an operator sees of a running job: the Prometheus endpoint, hot
//! keys, the monitor's alerts and `DESCRIBE JOB`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::slow::SlowConnector;
use common::*;
use weir::crates::connectors::Registry;
use weir::crates::engine::metrics::AlertKind;
use weir::{Job, Output, Session};

/// `GET path` over plain HTTP/1.0: (status code, body).
fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: weir\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// Samples of the Prometheus text format: (metric name, labels) → value.
fn samples(text: &str) -> BTreeMap<(String, String), f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            (
                (name.to_string(), labels.to_string()),
                value.parse().unwrap(),
            )
        })
        .collect()
}

/// Sum of a metric over the series whose labels contain all of `labels`.
fn total(samples: &BTreeMap<(String, String), f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|((n, l), _)| n == name && labels.iter().all(|x| l.contains(x)))
        .map(|(_, v)| v)
        .sum()
}

async fn wait_for_alert(job: &Job, kind: AlertKind) -> weir::crates::engine::metrics::Alert {
    for _ in 0..300 {
        if let Some(alert) = job.metrics().alerts.iter().find(|a| a.kind == kind) {
            return alert.clone();
        }
        if !job.status().is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {kind:?} alert; metrics: {:?}", job.metrics().alerts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_job_serves_prometheus_metrics() {
    let mut session = Session::new();
    session.set("metrics.latency.interval", "100ms").unwrap();
    let events = 30_000;
    session
        .sql(&format!(
            "CREATE STREAM e WITH ('connector' = 'nexmark', 'events.num' = '{events}', 'scan.rate-limit' = '15000', 'scan.batch-size' = '500');
             CREATE TABLE out (auction BIGINT, n BIGINT) WITH ('connector' = 'blackhole');"
        ))
        .await
        .unwrap();
    let server = session.serve_metrics("127.0.0.1:0").unwrap();
    let address = server.local_addr().unwrap();
    let job = session
        .submit(
            "INSERT INTO out SELECT bid.auction, count(*) FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(dateTime), INTERVAL '1' SECOND))
             WHERE event_type = 2 GROUP BY bid.auction, window_start, window_end",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(job.status().is_running(), "the job should still run");

    let (status, body) = http_get(address, "/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(address, "/metrics");
    assert_eq!(status, 200);
    let live = samples(&body);
    let id = format!("job_id=\"{}\"", job.id());
    let id = id.as_str();
    assert_eq!(total(&live, "weir_job_running", &[id]), 1.0, "{body}");
    let read = total(&live, "weir_operator_rows_out_total", &[id, "source:"]);
    assert!(read > 0.0 && read < events as f64, "read {read}: {body}");
    assert!(total(&live, "weir_operator_processing_seconds_count", &[id]) > 0.0);
    assert!(
        total(&live, "weir_end_to_end_latency_seconds_count", &[id]) > 0.0,
        "latency markers should reach the sink: {body}"
    );
    assert!(
        total(&live, "weir_partition_rows_total", &[id]) > 0.0,
        "{body}"
    );

    job.wait().await.unwrap();
    let (_, body) = http_get(address, "/metrics");
    let done = samples(&body);
    assert_eq!(total(&done, "weir_job_running", &[id]), 0.0);
    assert_eq!(
        total(&done, "weir_operator_rows_out_total", &[id, "source:"]),
        events as f64
    );
    // The endpoint reports what the job's own metrics say, operator by
    // operator.
    let metrics = job.metrics();
    for s in &metrics.subtasks {
        let operator = format!("operator=\"[{}] {}\"", s.node, s.operator);
        let subtask = format!("subtask=\"{}\"", s.subtask);
        let labels = [id, operator.as_str(), subtask.as_str()];
        for (name, value) in [
            ("weir_operator_rows_in_total", s.rows_in),
            ("weir_operator_rows_out_total", s.rows_out),
        ] {
            assert_eq!(
                total(&done, name, &labels),
                value as f64,
                "{name} {labels:?}"
            );
        }
    }
    // Every bid reached the window aggregate's first phase.
    let bids = events as u64 * 46 / 50;
    let aggregated: u64 = metrics
        .operator("window aggregate (local)")
        .map(|s| s.rows_in)
        .sum();
    assert_eq!(aggregated, bids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_keys_are_counted_exactly_when_they_fit() {
    let shape = Shape {
        rows: 3000,
        keys: 20,
        hot: 0.9,
        nulls: 0.0,
        step: 2,
        jitter: 0,
    };
    let splits = generate(11, 2, shape);
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), &splits);
    let mut session = Session::new();
    session.set("parallelism.default", "2").unwrap();
    session
        .sql(&stream_ddl(dir.path(), 0, 256, ""))
        .await
        .unwrap();
    let results = session
        .query("SELECT k, count(*) AS n FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY k, window_start, window_end")
        .await
        .unwrap();
    let mut results = results;
    while results.next_batch().await.unwrap().is_some() {}
    let metrics = results.metrics();

    // Counted by hand: 20 keys fit the 32 counters, so counts are exact.
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    for e in splits.iter().flatten() {
        *counts.entry(e.key.unwrap()).or_default() += 1;
    }
    let rows = (shape.rows * 2) as u64;
    let local = metrics
        .operator("window aggregate (local)")
        .next()
        .unwrap()
        .node;
    let hot = metrics.hot_keys(local);
    assert_eq!(hot.len(), 5, "the top five");
    assert_eq!(hot[0].key, "0");
    assert_eq!(hot[0].count, counts[&0]);
    assert_eq!(hot[0].guaranteed, counts[&0], "no evictions, no error");
    assert_eq!(hot[0].share, counts[&0] as f64 / rows as f64);
    let mut expected: Vec<u64> = counts.values().copied().collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    let found: Vec<u64> = hot.iter().map(|k| k.count).collect();
    assert_eq!(found, expected[..5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_key_raises_an_alert_while_the_job_runs() {
    let mut session = Session::new();
    session
        .sql(
            "CREATE STREAM e WITH ('connector' = 'nexmark', 'events.num' = '60000', 'scan.rate-limit' = '15000', 'scan.batch-size' = '500');
             CREATE TABLE out (k BIGINT, n BIGINT) WITH ('connector' = 'blackhole');",
        )
        .await
        .unwrap();
    // Nine bids in ten have a price not divisible by ten: key 1.
    let job = session
        .submit(
            "INSERT INTO out SELECT CASE WHEN MOD(bid.price, 10) = 0 THEN bid.price ELSE 1 END AS k, count(*)
             FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(dateTime), INTERVAL '1' SECOND))
             WHERE event_type = 2 GROUP BY 1, window_start, window_end",
        )
        .await
        .unwrap();
    let alert = wait_for_alert(&job, AlertKind::HotKey).await;
    assert!(alert.subject.ends_with("key 1"), "{alert:?}");
    assert!(alert.subject.contains("window aggregate"), "{alert:?}");
    job.cancel();
    let _ = job.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_sink_shows_as_backpressure_on_the_source() {
    let slow = SlowConnector::default();
    let opened = slow.opened.clone();
    let mut registry = Registry::default();
    registry.register(Arc::new(slow));
    let mut session = Session::with_registry(registry);
    // Two source subtasks feed one sink subtask through a channel.
    session.set("parallelism.default", "2").unwrap();
    session
        .sql(
            "CREATE STREAM e WITH ('connector' = 'nexmark', 'events.num' = '1000000', 'scan.batch-size' = '500');
             CREATE TABLE out (price BIGINT) WITH ('connector' = 'slow', 'sink.parallelism' = '1');",
        )
        .await
        .unwrap();
    let job = session
        .submit("INSERT INTO out SELECT bid.price FROM e WHERE event_type = 2")
        .await
        .unwrap();
    let alert = wait_for_alert(&job, AlertKind::Backpressure).await;
    // The subtask blocked is the one sending to the sink: the end of the
    // source's chain.
    assert!(
        alert.subject.starts_with("projection subtask "),
        "{alert:?}"
    );
    assert_eq!(opened.load(Ordering::Relaxed), 1);

    // DESCRIBE JOB shows the same: the source is mostly waiting.
    let outputs = session
        .sql(&format!("DESCRIBE JOB '{}'", job.id()))
        .await
        .unwrap();
    let Some(Output::Tables(tables)) = outputs.into_iter().next() else {
        panic!("DESCRIBE JOB returns tables");
    };
    let titles: Vec<&str> = tables.iter().map(|(t, _)| t.as_str()).collect();
    assert!(titles.contains(&"subtasks"), "{titles:?}");
    assert!(titles.contains(&"alerts"), "{titles:?}");

    // And so does the alerts system table, to SQL.
    let alerts = session
        .query(
            "SELECT job_id, subject FROM weir_metrics.alerts WHERE kind = 'backpressure' LIMIT 1",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let rows = canonical_rows(&alerts);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0].starts_with(&format!("{} | projection subtask ", job.id())),
        "{rows:?}"
    );
    job.cancel();
    let _ = job.wait().await;
}
