//! UNION ALL and UNION against a DataFusion batch oracle: a window after a
//! union of two streams whose event times (and so watermarks) differ
//! waits for the slower one, so no row is late; UNION (distinct) is an
//! updating result whose final table is the batch answer.

mod common;

use std::sync::Arc;

use common::*;
use datafusion::datasource::MemTable;

/// Two in-order streams of `seed`, the second `lag` ms of event time
/// behind the first.
fn streams(
    seed: u64,
    lag: i64,
) -> (
    (tempfile::TempDir, tempfile::TempDir),
    Vec<Event>,
    Vec<Event>,
) {
    let shape = Shape {
        rows: 300,
        keys: 6,
        hot: 0.3,
        nulls: 0.1,
        step: 4,
        jitter: 0,
    };
    let ahead = generate(seed, 1, shape).remove(0);
    let behind: Vec<Event> = generate(seed + 1, 1, shape)
        .remove(0)
        .into_iter()
        .map(|e| Event {
            ts: e.ts - lag,
            ..e
        })
        .collect();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_splits(dirs.0.path(), std::slice::from_ref(&ahead));
    write_splits(dirs.1.path(), std::slice::from_ref(&behind));
    (dirs, ahead, behind)
}

fn ddl(name: &str, dir: &std::path::Path) -> String {
    stream_ddl(dir, 0, 8, "").replacen("CREATE STREAM t ", &format!("CREATE STREAM {name} "), 1)
}

async fn oracle(tables: &[(&str, &[Event])], sql: &str) -> Vec<String> {
    let ctx = datafusion::prelude::SessionContext::new();
    for (name, events) in tables {
        let batch = events_batch(events);
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table(*name, Arc::new(table)).unwrap();
    }
    canonical_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

/// A tumbling count after UNION ALL of `streams(seed, lag)`.
fn window_after_union(seed: u64, lag: i64, parallelisms: &[usize]) {
    let (dirs, ahead, behind) = streams(seed, lag);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let expected = oracle(
            &[("a", &ahead), ("b", &behind)],
            "SELECT date_bin(INTERVAL '100' MILLISECOND, ts, TIMESTAMP '1970-01-01 00:00:00') AS window_start, k, count(*) AS n
             FROM (SELECT k, ts FROM a UNION ALL SELECT k, ts FROM b) GROUP BY 1, 2",
        )
        .await;
        for &parallelism in parallelisms {
            let setup = [
                format!("SET 'parallelism.default' = '{parallelism}'"),
                ddl("a", dirs.0.path()),
                ddl("b", dirs.1.path()),
                "CREATE VIEW u AS SELECT k, ts FROM a UNION ALL SELECT k, ts FROM b".to_string(),
            ];
            let run = run_weir(
                &setup,
                "SELECT window_start, k, count(*) AS n FROM TABLE(TUMBLE(TABLE u, DESCRIPTOR(ts), INTERVAL '100' MILLISECOND)) GROUP BY window_start, window_end, k",
            )
            .await;
            assert_eq!(run.late_rows, 0, "parallelism {parallelism}");
            assert_eq!(run.rows, expected, "parallelism {parallelism}");
        }
    });
}

#[test]
fn a_window_after_a_union_waits_for_the_slower_input() {
    window_after_union(71, 500, &[1, 3]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(6))]
    #[test]
    fn unions_of_streams_with_different_watermarks_lose_no_row(
        seed in 0u64..1000,
        lag in -800i64..800,
        parallelism in 1usize..4,
    ) {
        window_after_union(seed, lag, &[parallelism]);
    }
}

#[test]
fn union_and_distinct_equal_a_batch_query() {
    let (dirs, ahead, behind) = streams(71, 500);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for (mode, query) in [
            ("automatic", "SELECT k, v FROM a UNION SELECT k, v FROM b"),
            ("streaming", "SELECT k, v FROM a UNION SELECT k, v FROM b"),
            ("streaming", "SELECT DISTINCT k FROM a"),
        ] {
            let oracle_query = query;
            let expected = oracle(&[("a", &ahead), ("b", &behind)], oracle_query).await;
            let mut session = weir::Session::new();
            session.set("execution.runtime-mode", mode).unwrap();
            session.sql(&ddl("a", dirs.0.path())).await.unwrap();
            session.sql(&ddl("b", dirs.1.path())).await.unwrap();
            let table = session
                .query(query)
                .await
                .unwrap()
                .collect_table()
                .await
                .unwrap();
            assert_eq!(canonical_rows(&[table]), expected, "{query} in {mode} mode");
        }
    });
}
