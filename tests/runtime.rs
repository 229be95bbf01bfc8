//! The runtime's behaviour through whole jobs: quiet streams, checkpoint
//! barriers, a hot key, and metrics.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::slow::SlowConnector;
use common::*;
use weir::crates::connectors::Registry;
use weir::crates::engine::runtime::SnapshotAck;
use weir::crates::engine::{spawn, RuntimeConfig};
use weir::crates::planner::Planned;

fn session_with(connector: Scripted) -> weir::Session {
    let mut registry = Registry::default();
    registry.register(Arc::new(connector));
    weir::Session::with_registry(registry)
}

const QUIET_DDL: &str =
    "CREATE STREAM q (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
    WITH ('connector' = 'scripted', 'scan.watermark.idle-timeout' = '200ms'";

const WINDOWS: &str = "SELECT window_start, count(*) AS n FROM TABLE(TUMBLE(TABLE q, DESCRIPTOR(ts), INTERVAL '100' MILLISECOND)) GROUP BY window_start, window_end";

fn quiet_events() -> Vec<Event> {
    (0..50)
        .map(|i| Event {
            key: Some(1),
            value: Some(i),
            ts: i,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_fires_its_last_window_with_idle_advance() {
    let mut session = session_with(Scripted {
        batches: vec![events_batch(&quiet_events())],
        ends: false,
    });
    session
        .sql(&format!(
            "{QUIET_DDL}, 'scan.watermark.idle-advance' = 'true')"
        ))
        .await
        .unwrap();
    let mut results = session.query(WINDOWS).await.unwrap();
    // The source never ends; the window fires because event time follows
    // the wall clock once the stream has been quiet for the idle timeout.
    let batch = tokio::time::timeout(Duration::from_secs(30), results.next_batch())
        .await
        .expect("the window should fire on a quiet stream")
        .unwrap()
        .unwrap();
    assert_eq!(canonical_rows(&[batch]), vec!["1970-01-01T00:00:00 | 50"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idle_advance_a_quiet_stream_holds_its_window() {
    let mut session = session_with(Scripted {
        batches: vec![events_batch(&quiet_events())],
        ends: false,
    });
    session.sql(&format!("{QUIET_DDL})")).await.unwrap();
    let mut results = session.query(WINDOWS).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(1500), results.next_batch()).await;
    assert!(
        waited.is_err(),
        "no watermark passed the window, so it must not fire"
    );
    results.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn barriers_flow_through_a_running_job_and_every_subtask_snapshots() {
    let mut planner = weir::Planner::default();
    let statements = weir::crates::sql::parse(
        "SET 'parallelism.default' = '2';
         CREATE STREAM e WITH ('connector' = 'nexmark', 'events.num' = '40000', 'scan.rate-limit' = '20000', 'base-time' = '0', 'scan.batch-size' = '500');
         SELECT bid.auction, count(*) AS n FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(dateTime), INTERVAL '1' SECOND))
         WHERE event_type = 2 GROUP BY bid.auction, window_start, window_end;",
    )
    .unwrap();
    let mut plan = None;
    for s in &statements {
        if let Planned::Query(q) = planner.plan(s).unwrap() {
            plan = Some(q);
        }
    }
    let plan = plan.unwrap();
    let (sink, mut rows) = tokio::sync::mpsc::channel(64);
    let sink_factory: weir::crates::engine::SinkFactory =
        Arc::new(move |_| Ok(Box::new(Collect(sink.clone())) as _));
    let graph = plan.with_sink(sink_factory);
    let nodes = graph.nodes.len();
    let (acks_tx, mut acks) = tokio::sync::mpsc::channel::<SnapshotAck>(1024);
    let job = spawn(
        graph,
        RuntimeConfig {
            checkpoint_acks: Some(acks_tx),
            ..RuntimeConfig::default()
        },
    )
    .unwrap();
    let counter = tokio::spawn(async move {
        let mut total = 0u64;
        while let Some(n) = rows.recv().await {
            total += n;
        }
        total
    });
    for id in 1..=3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        job.inject_barrier(id).await;
    }
    job.wait().await.unwrap();
    let mut per_checkpoint = std::collections::BTreeMap::<u64, Vec<SnapshotAck>>::new();
    while let Ok(ack) = acks.try_recv() {
        per_checkpoint
            .entry(ack.checkpoint_id)
            .or_default()
            .push(ack);
    }
    assert_eq!(
        per_checkpoint.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for acks in per_checkpoint.values() {
        // Every node of every subtask reported once (sinks their prepared
        // commit).
        let reported: usize = acks.iter().map(|a| a.states.len()).sum();
        assert_eq!(reported, nodes * 2, "every node, both subtasks");
    }
    // Barriers changed nothing: every bid was counted once.
    assert_eq!(counter.await.unwrap(), 40_000 * 46 / 50);
}

struct Collect(tokio::sync::mpsc::Sender<u64>);

#[async_trait::async_trait]
impl weir::crates::engine::Sink for Collect {
    async fn write(
        &mut self,
        batch: datafusion::arrow::record_batch::RecordBatch,
    ) -> weir::crates::engine::Result<()> {
        let counts = batch
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap();
        let _ = self
            .0
            .send(counts.values().iter().map(|v| *v as u64).sum())
            .await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_key_is_pre_aggregated_before_the_shuffle() {
    let shape = Shape {
        rows: 2000,
        keys: 50,
        hot: 0.9,
        nulls: 0.0,
        step: 2,
        jitter: 0,
    };
    let splits = generate(5, 4, shape);
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), &splits);
    let mut session = weir::Session::new();
    session.set("parallelism.default", "4").unwrap();
    session
        .sql(&stream_ddl(dir.path(), 0, 256, ""))
        .await
        .unwrap();
    let mut results = session
        .query("SELECT k, count(*) AS n FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY k, window_start, window_end")
        .await
        .unwrap();
    let mut batches = Vec::new();
    while let Some(b) = results.next_batch().await.unwrap() {
        batches.push(b);
    }
    let metrics = results.metrics();
    let (pairs, _) = on_time_pairs(&splits, 0, |t| hop_windows(t, 1000, 1000));
    let expected = oracle(
        &pairs,
        "SELECT k, count(*) AS n FROM w GROUP BY k, window_start, window_end",
    )
    .await;
    assert_eq!(canonical_rows(&batches), expected);

    let local: Vec<_> = metrics.operator("window aggregate (local)").collect();
    let global: Vec<_> = metrics.operator("window aggregate (global)").collect();
    assert_eq!(local.len(), 4);
    assert_eq!(global.len(), 4);
    let rows: u64 = local.iter().map(|s| s.rows_in).sum();
    assert_eq!(rows, 8000);
    // Every local subtask took a quarter of the rows...
    assert!(local.iter().all(|s| s.rows_in == 2000), "{local:?}");
    // ... and the shuffle carried pre-aggregated groups, not rows: the hot
    // key's 90% arrive as a handful of partial counts.
    let shuffled: u64 = global.iter().map(|s| s.rows_in).sum();
    assert!(
        shuffled * 10 < rows,
        "{shuffled} partial rows for {rows} input rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_sink_backpressures_the_source_and_loses_nothing() {
    let slow = SlowConnector::default();
    let rows = slow.rows.clone();
    let mut registry = Registry::default();
    registry.register(Arc::new(slow));
    let mut session = weir::Session::with_registry(registry);
    session.set("parallelism.default", "2").unwrap();
    let events = 100_000u64;
    let batch = 500u64;
    session
        .sql(&format!(
            "CREATE STREAM e WITH ('connector' = 'nexmark', 'events.num' = '{events}', 'scan.batch-size' = '{batch}');
             CREATE TABLE out (price BIGINT) WITH ('connector' = 'slow', 'sink.parallelism' = '1');"
        ))
        .await
        .unwrap();
    let job = session
        .submit("INSERT INTO out SELECT bid.price FROM e")
        .await
        .unwrap();
    // Two source subtasks feed one sink through two channels of 16
    // batches; the source cannot run further ahead than that.
    let bound = 2 * (16 + 2) * batch;
    let (mut max_ahead, mut max_fill) = (0u64, 0f64);
    while job.status().is_running() {
        let m = job.metrics();
        let read: u64 = m
            .subtasks
            .iter()
            .filter(|s| s.operator.starts_with("source:"))
            .map(|s| s.rows_out)
            .sum();
        let written = rows.load(std::sync::atomic::Ordering::Relaxed);
        max_ahead = max_ahead.max(read.saturating_sub(written));
        max_fill = m
            .subtasks
            .iter()
            .filter(|s| s.operator.starts_with("sink:"))
            .map(|s| s.channel_fill)
            .fold(max_fill, f64::max);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    job.wait().await.unwrap();
    assert_eq!(
        rows.load(std::sync::atomic::Ordering::Relaxed),
        events,
        "every row reached the sink"
    );
    assert!(
        max_ahead <= bound,
        "the source ran {max_ahead} rows ahead of the sink (bound {bound})"
    );
    assert!(
        max_fill > 0.9,
        "the sink's input channels filled up ({max_fill})"
    );
}
