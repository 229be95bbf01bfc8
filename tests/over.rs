//! OVER aggregates against a DataFusion batch oracle.
//!
//! On event time, rows out of order wait for the watermark; the late ones
//! are left out by Flink's rule, simulated here independently: for an
//! unbounded frame a row at or before the watermark of its split before it
//! is late; for a bounded frame, a row at or before the last time its
//! partition computed (the latest earlier row of the partition that the
//! watermark had passed). The oracle runs the same OVER clause over the
//! rows that were on time, ties in time broken by arrival.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;

const DELAY: i64 = 20;

/// The rows on time for a frame (`bounded`), with their arrival index,
/// and how many were late.
fn on_time(split: &[Event], bounded: bool) -> (Vec<(usize, Event)>, u64) {
    let mut watermark = i64::MIN;
    let mut accepted: HashMap<Option<i64>, Vec<i64>> = HashMap::new();
    let mut kept = Vec::new();
    let mut late = 0;
    for (i, e) in split.iter().enumerate() {
        let is_late = if bounded {
            accepted
                .get(&e.key)
                .and_then(|times| times.iter().filter(|t| **t <= watermark).max())
                .is_some_and(|last| e.ts <= *last)
        } else {
            e.ts <= watermark
        };
        if is_late {
            late += 1;
        } else {
            accepted.entry(e.key).or_default().push(e.ts);
            kept.push((i, *e));
        }
        watermark = watermark.max(e.ts - DELAY);
    }
    (kept, late)
}

async fn oracle(rows: &[(usize, Event)], sql: &str) -> Vec<String> {
    let events: Vec<Event> = rows.iter().map(|(_, e)| *e).collect();
    let batch = events_batch(&events);
    let mut fields = batch.schema().fields().to_vec();
    fields.push(Arc::new(Field::new("i", DataType::Int64, false)));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Int64Array::from(
        rows.iter().map(|(i, _)| *i as i64).collect::<Vec<_>>(),
    )));
    let batch = RecordBatch::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        columns,
    )
    .unwrap();
    let ctx = SessionContext::new();
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    canonical_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

/// The frames tested: the Weir clause and the oracle's (ties in time by
/// arrival for ROWS), and whether the frame is bounded.
fn frames() -> Vec<(&'static str, &'static str, bool)> {
    vec![
        (
            "ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW",
            "ORDER BY ts, i ROWS BETWEEN 2 PRECEDING AND CURRENT ROW",
            true,
        ),
        (
            "ORDER BY ts RANGE BETWEEN INTERVAL '30' MILLISECOND PRECEDING AND CURRENT ROW",
            "ORDER BY ts RANGE BETWEEN INTERVAL '30' MILLISECOND PRECEDING AND CURRENT ROW",
            true,
        ),
        (
            "ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
            "ORDER BY ts, i ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
            false,
        ),
        // The default frame: RANGE UNBOUNDED PRECEDING (peers share).
        ("ORDER BY ts", "ORDER BY ts", false),
    ]
}

fn check_event_time(split: Vec<Event>, parallelism: usize) {
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), std::slice::from_ref(&split));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for (clause, oracle_clause, bounded) in frames() {
            let select = |over: &str| {
                format!(
                    "SELECT k, v, ts, SUM(v) OVER w AS s, COUNT(v) OVER w AS n, MAX(v) OVER w AS m
                     FROM t WINDOW w AS (PARTITION BY k {over})"
                )
            };
            let (rows, late) = on_time(&split, bounded);
            let expected = oracle(&rows, &select(oracle_clause)).await;
            let setup = [
                format!("SET 'parallelism.default' = '{parallelism}'"),
                stream_ddl(dir.path(), DELAY, 7, ""),
            ];
            let run = run_weir(&setup, &select(clause)).await;
            assert_eq!(run.late_rows, late, "{clause}");
            assert_eq!(run.rows, expected, "{clause}");
        }
    });
}

#[test]
fn event_time_frames_equal_a_batch_query_over_the_rows_on_time() {
    let shape = Shape {
        rows: 400,
        keys: 4,
        hot: 0.5,
        nulls: 0.1,
        step: 5,
        jitter: 40,
    };
    check_event_time(generate(5, 1, shape).remove(0), 2);
}

#[test]
fn an_empty_stream_has_no_rows() {
    check_event_time(Vec::new(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]
    #[test]
    fn event_time_frames_hold_for_random_input(
        seed in 0u64..1000,
        keys in 1i64..6,
        jitter in 0i64..60,
        parallelism in 1usize..3,
    ) {
        let shape = Shape { rows: 150, keys, hot: 0.3, nulls: 0.15, step: 4, jitter };
        check_event_time(generate(seed, 1, shape).remove(0), parallelism);
    }
}

/// Processing time: one file read by one subtask arrives in file order, so
/// a ROWS frame is the rows before in the file.
#[test]
fn processing_time_rows_frames_follow_arrival() {
    let shape = Shape {
        rows: 300,
        keys: 3,
        hot: 0.5,
        nulls: 0.1,
        step: 5,
        jitter: 40,
    };
    let split = generate(9, 1, shape).remove(0);
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), std::slice::from_ref(&split));
    let rows: Vec<(usize, Event)> = split.iter().copied().enumerate().collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let expected = oracle(
            &rows,
            "SELECT k, v, SUM(v) OVER (PARTITION BY k ORDER BY i ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) FROM t",
        )
        .await;
        let ddl = format!(
            "CREATE STREAM t (k BIGINT, v BIGINT, ts TIMESTAMP(3), pt AS PROCTIME())
             WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json', 'scan.batch-size' = '16')",
            dir.path().display()
        );
        let run = run_weir(
            &[ddl],
            "SELECT k, v, SUM(v) OVER (PARTITION BY k ORDER BY pt ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) FROM t",
        )
        .await;
        assert_eq!(run.rows, expected);
    });
}

/// Over an updating result, ordered by a column that is not a time: the
/// frames are updated as the counts change, and the final table is the
/// batch query's.
#[test]
fn an_over_aggregate_of_an_updating_result_ends_at_the_batch_answer() {
    let shape = Shape {
        rows: 300,
        keys: 12,
        hot: 0.3,
        nulls: 0.1,
        step: 5,
        jitter: 0,
    };
    let split = generate(13, 1, shape).remove(0);
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), std::slice::from_ref(&split));
    let rows: Vec<(usize, Event)> = split.iter().copied().enumerate().collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for (frame, oracle_frame) in [
            (
                "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW",
                "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW",
            ),
            ("", ""),
        ] {
            let query = |frame: &str| {
                format!(
                    "SELECT k, c, SUM(c) OVER (ORDER BY k {frame}) AS s, MIN(c) OVER (ORDER BY k {frame}) AS lo
                     FROM (SELECT k, COUNT(*) AS c FROM t GROUP BY k)"
                )
            };
            let expected = oracle(&rows, &query(oracle_frame)).await;
            let mut session = weir::Session::new();
            session.set("execution.runtime-mode", "streaming").unwrap();
            session.set("parallelism.default", "2").unwrap();
            session
                .sql(&stream_ddl(dir.path(), 0, 10, ""))
                .await
                .unwrap();
            let results = match session.query(&query(frame)).await {
                Ok(r) => r,
                Err(e) => panic!("{}", e.render()),
            };
            assert!(results.is_updating());
            let table = results.collect_table().await.unwrap();
            assert_eq!(canonical_rows(&[table]), expected, "{frame}");
        }
    });
}

#[test]
fn over_windows_a_stream_cannot_run_are_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut session = weir::Session::new();
        session
            .sql(&stream_ddl(dir.path(), 0, 10, ""))
            .await
            .unwrap();
        for (query, message) in [
            (
                "SELECT SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) FROM t",
                "CURRENT ROW",
            ),
            (
                "SELECT LAG(v) OVER (PARTITION BY k ORDER BY ts) FROM t",
                "only aggregates",
            ),
            (
                "SELECT SUM(v) OVER (PARTITION BY k ORDER BY v RANGE BETWEEN 5 PRECEDING AND CURRENT ROW) FROM t",
                "an interval of time",
            ),
        ] {
            let error = match session.query(query).await {
                Ok(_) => panic!("{query} ran"),
                Err(e) => e.render(),
            };
            assert!(error.contains(message), "{query}: {error}");
        }
    });
}
