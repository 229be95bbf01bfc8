//! Changelog streams against an independent oracle: updating aggregates
//! (nested ones, MIN/MAX and COUNT(DISTINCT) under retraction, filters
//! after them) and outer regular joins, in streaming mode over random
//! out-of-order rows with NULLs and a hot key, at several parallelisms and
//! batch sizes. The changes Weir emits, applied in order, must give the
//! table a DataFusion batch query computes over the same rows; and they
//! must be changes, not one final row per key.

mod common;

use std::sync::Arc;

use common::*;
use datafusion::datasource::MemTable;
use proptest::prelude::*;
use weir::changelog::{kinds_of, RowKind};
use weir::ChangelogTable;

/// Updating queries over `t(k, v, ts)`, with the same text for the oracle.
const AGGREGATES: &[&str] = &[
    "SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi, count(DISTINCT v) AS d FROM t GROUP BY k",
    // An aggregate over an updating aggregate: the inner counts retract.
    "SELECT n, count(*) AS keys, min(k) AS first_key, max(k) AS last_key FROM (SELECT k, count(*) AS n FROM t GROUP BY k) GROUP BY n",
    // MIN and MAX of retracted values; a global aggregate.
    "SELECT min(m) AS lo, max(m) AS hi, sum(m) AS s, count(DISTINCT m) AS d FROM (SELECT k, max(v) AS m FROM t GROUP BY k)",
    // Filters after updating aggregates: rows that stop matching retract.
    "SELECT k, count(*) AS n FROM t GROUP BY k HAVING count(*) > 20",
    "SELECT k, m FROM (SELECT k, max(v) AS m FROM t GROUP BY k) WHERE m < 900",
];

/// Outer and inner regular joins of `l` and `r`; one of an updating
/// aggregate with a stream.
const JOINS: &[&str] = &[
    "SELECT l.k, l.v, r.v AS rv FROM l LEFT JOIN r ON l.k = r.k",
    "SELECT l.k, l.v, r.k AS rk, r.v AS rv FROM l RIGHT JOIN r ON l.k = r.k AND l.v < r.v",
    "SELECT l.k, l.v, r.k AS rk, r.v AS rv FROM l FULL JOIN r ON l.k = r.k AND l.v + r.v > 900",
    "SELECT a.k, a.n, r.v FROM (SELECT k, count(*) AS n FROM l GROUP BY k) a JOIN r ON a.k = r.k",
    "SELECT a.k, a.n, r.v FROM (SELECT k, count(*) AS n FROM l GROUP BY k) a LEFT JOIN r ON a.k = r.k AND r.v > 500",
];

/// The DDL of stream `name` over `dir`.
fn ddl(name: &str, dir: &std::path::Path, batch_size: usize) -> String {
    stream_ddl(dir, 10, batch_size, "").replacen(
        "CREATE STREAM t ",
        &format!("CREATE STREAM {name} "),
        1,
    )
}

/// DataFusion's answer over tables `name` → rows.
async fn oracle(tables: &[(&str, &[Event])], sql: &str) -> Vec<String> {
    let ctx = datafusion::prelude::SessionContext::new();
    for (name, events) in tables {
        let batch = events_batch(events);
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table(*name, Arc::new(table)).unwrap();
    }
    canonical_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

/// What an updating query gave: its final table, and how many of each
/// kind of change it emitted.
struct Changes {
    table: Vec<String>,
    retractions: usize,
    changes: usize,
}

/// `query` in streaming mode after `setup`: its changes applied in order.
async fn run_changes(setup: &[String], query: &str) -> Changes {
    let mut session = weir::Session::new();
    session.set("execution.runtime-mode", "streaming").unwrap();
    for sql in setup {
        if let Err(e) = session.sql(sql).await {
            panic!("{}", e.render());
        }
    }
    let mut results = match session.query(query).await {
        Ok(r) => r,
        Err(e) => panic!("{query}: {}", e.render()),
    };
    assert!(results.is_updating(), "{query}");
    let mut table = ChangelogTable::new(results.data_schema()).unwrap();
    let (mut retractions, mut changes) = (0, 0);
    loop {
        match results.next_changes().await {
            Ok(Some(batch)) => {
                let kinds = kinds_of(&batch).unwrap();
                changes += kinds.len();
                retractions += kinds
                    .iter()
                    .filter(|k| matches!(k, RowKind::UpdateBefore | RowKind::Delete))
                    .count();
                table.apply(&batch).unwrap();
            }
            Ok(None) => break,
            Err(e) => panic!("{query}: {}", e.render()),
        }
    }
    Changes {
        table: canonical_rows(&[table.to_batch().unwrap()]),
        retractions,
        changes,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Every aggregate at each (batch size, parallelism) equals the oracle
/// (and, with `retracts`, got there by retracting rows).
fn check_aggregates(seed: u64, shape: Shape, runs: &[(usize, usize)], retracts: bool) {
    let dir = tempfile::tempdir().unwrap();
    let splits = generate(seed, 3, shape);
    write_splits(dir.path(), &splits);
    let events: Vec<Event> = splits.into_iter().flatten().collect();
    runtime().block_on(async {
        for query in AGGREGATES {
            let expected = oracle(&[("t", &events)], query).await;
            for (batch_size, parallelism) in runs {
                let setup = [
                    format!("SET 'parallelism.default' = '{parallelism}'"),
                    ddl("t", dir.path(), *batch_size),
                ];
                let run = run_changes(&setup, query).await;
                let at = format!("{query} at batch size {batch_size}, parallelism {parallelism}");
                assert_eq!(run.table, expected, "{at}");
                assert!(
                    !retracts || run.retractions > 0,
                    "{at}: no retraction in {} changes",
                    run.changes
                );
            }
        }
    });
}

#[test]
fn updating_aggregates_equal_a_batch_query() {
    let shape = Shape {
        rows: 400,
        keys: 15,
        hot: 0.4,
        nulls: 0.1,
        step: 5,
        jitter: 200,
    };
    check_aggregates(3, shape, &[(1, 1), (7, 3), (8192, 2)], true);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    /// Random seeds and shapes: many keys or few, hot or not.
    #[test]
    fn updating_aggregates_equal_a_batch_query_for_any_input(
        seed in 0u64..10_000,
        keys in 1i64..200,
        hot in 0.0f64..0.9,
        batch_size in 1usize..300,
        parallelism in 1usize..4,
    ) {
        let shape = Shape { rows: 200, keys, hot, nulls: 0.15, step: 3, jitter: 100 };
        check_aggregates(seed, shape, &[(batch_size, parallelism)], false);
    }
}

/// The two streams `l` and `r`, and their rows.
fn two_streams(
    seed: u64,
    shape: Shape,
) -> (tempfile::TempDir, tempfile::TempDir, Vec<Event>, Vec<Event>) {
    let (ldir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let left = generate(seed, 2, shape);
    let right = generate(seed + 1, 3, shape);
    write_splits(ldir.path(), &left);
    write_splits(rdir.path(), &right);
    (
        ldir,
        rdir,
        left.into_iter().flatten().collect(),
        right.into_iter().flatten().collect(),
    )
}

/// Outer joins emit Flink's changelog (a padded row retracted when its
/// first match comes); applied, it is the batch join. In the default mode
/// over bounded input the same joins decide at the end and only append.
#[test]
fn outer_and_changelog_joins_equal_a_batch_join() {
    let shape = Shape {
        rows: 150,
        keys: 12,
        hot: 0.3,
        nulls: 0.1,
        step: 5,
        jitter: 100,
    };
    let (ldir, rdir, left, right) = two_streams(31, shape);
    runtime().block_on(async {
        for query in JOINS {
            let expected = oracle(&[("l", &left), ("r", &right)], query).await;
            assert!(!expected.is_empty(), "{query}");
            for (batch_size, parallelism) in [(1, 1), (9, 3), (8192, 2)] {
                let setup = [
                    format!("SET 'parallelism.default' = '{parallelism}'"),
                    ddl("l", ldir.path(), batch_size),
                    ddl("r", rdir.path(), batch_size),
                ];
                // Whether a padded row is retracted depends on which side's
                // rows come first: the engine's unit tests pin the order.
                let run = run_changes(&setup, query).await;
                let at = format!("{query} at batch size {batch_size}, parallelism {parallelism}");
                assert_eq!(run.table, expected, "{at}");
            }
        }
        // Automatic mode: outer joins of bounded inputs only append.
        for query in &JOINS[..3] {
            let expected = oracle(&[("l", &left), ("r", &right)], query).await;
            let setup = [ddl("l", ldir.path(), 16), ddl("r", rdir.path(), 16)];
            let run = run_weir(&setup, query).await;
            assert_eq!(run.rows, expected, "{query} decided at the end");
        }
    });
}

/// An updating result's rows through the embedded API: an `op` column,
/// Flink's row kinds in order, and the final table.
#[tokio::test]
async fn an_updating_query_shows_its_changes_with_an_op_column() {
    let mut session = weir::Session::new();
    session.set("execution.runtime-mode", "streaming").unwrap();
    session.set("parallelism.default", "1").unwrap();
    let results = session
        .query("SELECT k, count(*) AS n FROM (VALUES (1), (2), (1)) AS t(k) GROUP BY k")
        .await
        .unwrap();
    assert_eq!(results.schema().field(0).name(), "op");
    let changes = results.collect().await.unwrap();
    datafusion::assert_batches_eq!(
        [
            "+----+---+---+",
            "| op | k | n |",
            "+----+---+---+",
            "| +I | 1 | 2 |",
            "| +I | 2 | 1 |",
            "+----+---+---+",
        ],
        &changes
    );
    let table = session
        .query("SELECT n, count(*) AS keys FROM (SELECT k, count(*) AS n FROM (VALUES (1), (2), (1), (2), (3)) AS t(k) GROUP BY k) GROUP BY n")
        .await
        .unwrap()
        .collect_table()
        .await
        .unwrap();
    datafusion::assert_batches_sorted_eq!(
        [
            "+---+------+",
            "| n | keys |",
            "+---+------+",
            "| 1 | 1    |",
            "| 2 | 2    |",
            "+---+------+",
        ],
        &[table]
    );
}

/// Sinks that only append refuse a changelog and name the fix; an upsert
/// sink needs a primary key.
#[tokio::test]
async fn sinks_say_which_changes_they_take() {
    let mut session = weir::Session::new();
    session
        .sql(
            "SET 'table.exec.state.ttl' = '1 h';
             CREATE STREAM e WITH ('connector' = 'nexmark');
             CREATE TABLE files (auction BIGINT, n BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/weir-never', 'format' = 'json');",
        )
        .await
        .unwrap();
    let error = match session
        .submit("INSERT INTO files SELECT bid.auction, count(*) FROM e GROUP BY bid.auction")
        .await
    {
        Ok(_) => panic!("planned"),
        Err(e) => e.render(),
    };
    assert!(error.contains("only appends"), "{error}");
    assert!(error.contains("upsert-kafka"), "{error}");
    let no_key = session
        .sql("CREATE TABLE u (k BIGINT, n BIGINT) WITH ('connector' = 'upsert-kafka', 'topic' = 'x', 'properties.bootstrap.servers' = 'localhost:1', 'key.format' = 'json', 'value.format' = 'json')")
        .await
        .map(|_| ())
        .unwrap_err()
        .render();
    assert!(no_key.contains("PRIMARY KEY"), "{no_key}");
}

/// A CDC file in Debezium's JSON: its changes aggregate (retracting), and
/// an updating result written as Debezium JSON files reads back as the
/// same table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debezium_json_files_read_and_write_a_changelog() {
    let input = tempfile::tempdir().unwrap();
    let output = tempfile::tempdir().unwrap();
    // Accounts opened, moved between regions, closed; one bad record.
    let changes = [
        r#"{"before": null, "after": {"id": 1, "region": "eu", "balance": 10}, "op": "c"}"#,
        r#"{"before": null, "after": {"id": 2, "region": "eu", "balance": 20}, "op": "r"}"#,
        r#"{"before": null, "after": {"id": 3, "region": "us", "balance": 5}, "op": "c"}"#,
        r#"{"before": {"id": 1, "region": "eu", "balance": 10}, "after": {"id": 1, "region": "us", "balance": 12}, "op": "u"}"#,
        r#"{"before": {"id": 2, "region": "eu", "balance": 20}, "after": null, "op": "d"}"#,
        r#"{"before": null, "after": null, "op": "u"}"#,
        r#"{"before": null, "after": {"id": 4, "region": "eu", "balance": 7}, "op": "c"}"#,
    ];
    std::fs::write(input.path().join("accounts.json"), changes.join("\n")).unwrap();
    let dead = tempfile::tempdir().unwrap();
    let mut session = weir::Session::new();
    session
        .sql(&format!(
            "CREATE STREAM accounts (id BIGINT, region VARCHAR, balance BIGINT)
               WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'debezium-json',
                     'bad-data.path' = '{}');
             CREATE TABLE totals (region VARCHAR, accounts BIGINT, balance BIGINT)
               WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'debezium-json')",
            input.path().join("accounts.json").display(),
            dead.path().display(),
            output.path().display()
        ))
        .await
        .unwrap();
    let query = "SELECT region, count(*) AS accounts, sum(balance) AS balance FROM accounts GROUP BY region";
    let table = session
        .query(query)
        .await
        .unwrap()
        .collect_table()
        .await
        .unwrap();
    let expected = ["eu | 1 | 7", "us | 2 | 17"];
    assert_eq!(canonical_rows(&[table]), expected);
    // The update without images went to the dead letters.
    let dead_letters: String = std::fs::read_dir(dead.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(dead_letters.contains("without 'before'"), "{dead_letters}");

    let job = session
        .submit(&format!("INSERT INTO totals {query}"))
        .await
        .unwrap();
    job.wait().await.unwrap();
    let mut reader = weir::Session::new();
    reader
        .sql(&format!(
            "CREATE STREAM back (region VARCHAR, accounts BIGINT, balance BIGINT)
               WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'debezium-json')",
            output.path().display()
        ))
        .await
        .unwrap();
    let back = reader
        .query("SELECT region, accounts, balance FROM back")
        .await
        .unwrap()
        .collect_table()
        .await
        .unwrap();
    assert_eq!(canonical_rows(&[back]), expected);
}
