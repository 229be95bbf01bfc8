//! Top-N and deduplication against an independent oracle: DataFusion's
//! batch `ROW_NUMBER()`/`RANK()`/`DENSE_RANK() OVER (...)` over the same
//! rows. Updating Top-N's changes applied, window Top-N's rows at each
//! window's close (late rows excluded by the per-row watermark rule),
//! deduplication with ties on the time column broken by arrival, as
//! Flink's.

mod common;

use std::sync::Arc;

use common::*;
use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use proptest::prelude::*;
use weir::ChangelogTable;

/// Rows `(k, v, ts, seq)`: `seq` is the row's line in its file, so the
/// oracle can break ties by arrival as Weir does.
#[derive(Debug, Clone, Copy)]
struct Row {
    k: Option<i64>,
    v: i64,
    ts: i64,
    seq: i64,
}

/// One file of rows from `seed`: `keys` partitions, one hot, values from
/// `values` (few values: ties), times out of order by up to `jitter` and
/// cut to multiples of `grain` ms (coarse times: ties).
fn rows(seed: u64, count: usize, keys: i64, values: i64, jitter: i64, grain: i64) -> Vec<Row> {
    let events = generate(
        seed,
        1,
        Shape {
            rows: count,
            keys,
            hot: 0.3,
            nulls: 0.1,
            step: 3,
            jitter,
        },
    );
    events[0]
        .iter()
        .enumerate()
        .map(|(i, e)| Row {
            k: e.key,
            v: e.value.unwrap_or(0).rem_euclid(values),
            ts: e.ts - e.ts.rem_euclid(grain),
            seq: i as i64,
        })
        .collect()
}

fn write(dir: &std::path::Path, rows: &[Row]) {
    let text: String = rows
        .iter()
        .map(|r| {
            let k = r.k.map_or("null".to_string(), |k| k.to_string());
            let ts = chrono::DateTime::from_timestamp_millis(r.ts)
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S%.3f");
            format!(
                "{{\"k\": {k}, \"v\": {}, \"ts\": \"{ts}\", \"seq\": {}}}\n",
                r.v, r.seq
            )
        })
        .collect();
    std::fs::write(dir.join("rows.json"), text).unwrap();
}

fn ddl(dir: &std::path::Path, delay: i64, batch_size: usize) -> String {
    format!(
        "CREATE STREAM t (k BIGINT, v BIGINT, ts TIMESTAMP(3), seq BIGINT, WATERMARK FOR ts AS ts - INTERVAL '{delay}' MILLISECOND)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json', 'scan.batch-size' = '{batch_size}')",
        dir.display()
    )
}

/// DataFusion's answer over `rows` as table `t(k, v, ts, seq)`.
async fn oracle(rows: &[Row], sql: &str) -> Vec<String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("seq", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.k).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.v))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.ts),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.seq))),
        ],
    )
    .unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
    )
    .unwrap();
    canonical_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

/// `query`'s final table after `setup` (its changes applied, for an
/// updating result).
async fn run_table(setup: &[String], query: &str) -> Vec<String> {
    let mut results = start_query(setup, query).await;
    let mut table = ChangelogTable::new(results.data_schema()).unwrap();
    while let Some(batch) = results.next_changes().await.unwrap() {
        table.apply(&batch).unwrap();
    }
    canonical_rows(&[table.to_batch().unwrap()])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Updating Top-N and deduplication, in streaming mode and in the default
/// mode (ranked once at the end of the bounded input), at several batch
/// sizes and parallelisms: the same table as the batch ranking, ties broken
/// by arrival.
fn check_updating(seed: u64, keys: i64, values: i64, runs: &[(usize, usize)]) {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(seed, 300, keys, values, 100, 25);
    write(dir.path(), &data);
    // Weir's query, and the oracle's with arrival as the last sort key
    // (keep-last deduplication: the later of equal times wins).
    let cases = [
        (
            "SELECT k, v, ts, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM t) WHERE rn <= 3",
            "SELECT k, v, ts, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC, seq) AS rn FROM t) WHERE rn <= 3",
        ),
        (
            "SELECT k, v, seq FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v) AS rn FROM t) WHERE rn < 3",
            "SELECT k, v, seq FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v, seq) AS rn FROM t) WHERE rn < 3",
        ),
        (
            "SELECT k, v, ts FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC) AS rn FROM t) WHERE rn = 1",
            "SELECT k, v, ts FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC, seq DESC) AS rn FROM t) WHERE rn = 1",
        ),
        (
            "SELECT k, v, ts FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) AS rn FROM t) WHERE rn = 1",
            "SELECT k, v, ts FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts, seq) AS rn FROM t) WHERE rn = 1",
        ),
    ];
    runtime().block_on(async {
        for (query, oracle_sql) in cases {
            let expected = oracle(&data, oracle_sql).await;
            assert!(!expected.is_empty());
            for (batch_size, parallelism) in runs {
                for mode in ["streaming", "automatic"] {
                    let setup = [
                        format!("SET 'execution.runtime-mode' = '{mode}'"),
                        format!("SET 'parallelism.default' = '{parallelism}'"),
                        ddl(dir.path(), 10_000, *batch_size),
                    ];
                    let table = run_table(&setup, query).await;
                    assert_eq!(
                        table, expected,
                        "{query} in {mode} mode at batch size {batch_size}, parallelism {parallelism}"
                    );
                }
            }
        }
    });
}

#[test]
fn updating_top_n_and_deduplication_equal_a_batch_ranking() {
    check_updating(5, 8, 20, &[(1, 1), (7, 3), (8192, 2)]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn top_n_equals_a_batch_ranking_for_any_input(
        seed in 0u64..10_000,
        keys in 1i64..30,
        values in 1i64..100,
        batch_size in 1usize..200,
    ) {
        check_updating(seed, keys, values, &[(batch_size, 2)]);
    }
}

/// Window Top-N over a window table function's rows, with RANK and
/// DENSE_RANK over tied values, and over a window aggregate: each
/// window's top rows once it closes; late rows (by the per-row watermark)
/// are left out and counted.
#[test]
fn window_top_n_equals_a_batch_ranking_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(9, 400, 5, 15, 60, 1);
    write(dir.path(), &data);
    let size = 50;
    let events: Vec<Event> = data
        .iter()
        .map(|r| Event {
            key: r.k,
            value: Some(r.v),
            ts: r.ts,
        })
        .collect();
    let (pairs, late) = on_time_pairs(&[events], 20, |t| hop_windows(t, size, size));
    assert!(late > 0, "some rows are late");
    let tvf = format!("TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '{size}' MILLISECOND))");
    let cases = [
        (
            format!("SELECT window_start, k, v, r FROM (SELECT *, RANK() OVER (PARTITION BY window_start, window_end, k ORDER BY v DESC) AS r FROM {tvf}) WHERE r <= 2"),
            "SELECT window_start, k, v, r FROM (SELECT *, RANK() OVER (PARTITION BY window_start, window_end, k ORDER BY v DESC) AS r FROM w) WHERE r <= 2",
        ),
        (
            format!("SELECT window_start, v, r FROM (SELECT *, DENSE_RANK() OVER (PARTITION BY window_start, window_end ORDER BY v) AS r FROM {tvf}) WHERE r <= 3"),
            "SELECT window_start, v, r FROM (SELECT *, DENSE_RANK() OVER (PARTITION BY window_start, window_end ORDER BY v) AS r FROM w) WHERE r <= 3",
        ),
        (
            format!("SELECT window_start, k, n FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY n DESC, k) AS rn FROM (SELECT window_start, window_end, k, count(*) AS n FROM {tvf} GROUP BY window_start, window_end, k)) WHERE rn <= 2"),
            "SELECT window_start, k, n FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY n DESC, k) AS rn FROM (SELECT window_start, window_end, k, count(*) AS n FROM w GROUP BY window_start, window_end, k)) WHERE rn <= 2",
        ),
    ];
    runtime().block_on(async {
        for (query, oracle_sql) in &cases {
            let expected = common::oracle(&pairs, oracle_sql).await;
            assert!(!expected.is_empty(), "{oracle_sql}");
            for (batch_size, parallelism) in [(1, 1), (16, 3)] {
                let setup = [
                    format!("SET 'parallelism.default' = '{parallelism}'"),
                    ddl(dir.path(), 20, batch_size),
                ];
                let run = run_weir(&setup, query).await;
                assert_eq!(run.rows, expected, "{query} at {batch_size}, {parallelism}");
                assert!(run.late_rows > 0, "{query}");
            }
        }
    });
}

/// Keep-first deduplication on event time in streaming mode: the
/// earliest row of each key (the earlier arrival among equal times),
/// appended once the watermark passes it; later-arriving earlier rows
/// are late.
#[test]
fn keep_first_on_event_time_appends_at_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(13, 300, 40, 10, 0, 1);
    write(dir.path(), &data);
    let query = "SELECT k, v, ts FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) AS rn FROM t) WHERE rn = 1";
    runtime().block_on(async {
        let expected = oracle(
            &data,
            "SELECT k, v, ts FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts, seq) AS rn FROM t) WHERE rn = 1",
        )
        .await;
        let setup = [
            "SET 'execution.runtime-mode' = 'streaming'".to_string(),
            "SET 'parallelism.default' = '2'".to_string(),
            ddl(dir.path(), 0, 5),
        ];
        let mut session = weir::Session::new();
        for sql in &setup {
            session.sql(sql).await.unwrap();
        }
        let results = session.query(query).await.unwrap();
        assert!(!results.is_updating(), "keep-first only appends");
        let rows = results.collect().await.unwrap();
        assert_eq!(canonical_rows(&rows), expected);
    });
}

/// Deduplication on processing time (Flink's `ProcTimeDeduplicate*`):
/// one file read by one subtask arrives in file order, so keep-first is
/// each key's first row in the file, appended once, and keep-last its last
/// row, updated as rows come.
#[test]
fn deduplication_on_processing_time_keeps_the_first_or_last_arrival() {
    let shape = Shape {
        rows: 300,
        keys: 7,
        hot: 0.4,
        nulls: 0.1,
        step: 5,
        jitter: 30,
    };
    let split = generate(61, 1, shape).remove(0);
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), std::slice::from_ref(&split));
    let ddl = format!(
        "CREATE STREAM t (k BIGINT, v BIGINT, ts TIMESTAMP(3), pt AS PROCTIME())
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json', 'scan.batch-size' = '16')",
        dir.path().display()
    );
    runtime().block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        let batch = events_batch(&split);
        let i = datafusion::arrow::array::Int64Array::from((0..split.len() as i64).collect::<Vec<_>>());
        let mut columns = batch.columns().to_vec();
        columns.push(std::sync::Arc::new(i));
        let mut fields = batch.schema().fields().to_vec();
        fields.push(std::sync::Arc::new(datafusion::arrow::datatypes::Field::new(
            "i",
            datafusion::arrow::datatypes::DataType::Int64,
            false,
        )));
        let batch = datafusion::arrow::record_batch::RecordBatch::try_new(
            std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
            columns,
        )
        .unwrap();
        let table =
            datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table("t", std::sync::Arc::new(table)).unwrap();
        for (direction, oracle_direction, append_only) in
            [("ASC", "ASC", true), ("DESC", "DESC", false)]
        {
            let query = |order: &str, by: &str| {
                format!(
                    "SELECT k, v FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY {by} {order}) AS rn FROM t) WHERE rn = 1"
                )
            };
            let expected = canonical_rows(
                &ctx.sql(&query(oracle_direction, "i"))
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap(),
            );
            let mut session = weir::Session::new();
            session.set("execution.runtime-mode", "streaming").unwrap();
            session.set("parallelism.default", "2").unwrap();
            session.sql(&ddl).await.unwrap();
            let results = session.query(&query(direction, "pt")).await.unwrap();
            assert_eq!(results.is_updating(), !append_only, "{direction}");
            let table = results.collect_table().await.unwrap();
            assert_eq!(canonical_rows(&[table]), expected, "{direction}");
        }
    });
}
