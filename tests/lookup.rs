//! Lookup joins (`JOIN dim FOR SYSTEM_TIME AS OF probe.proc_time`)
//! against a DataFusion batch join over the same rows: inner and left,
//! probe keys with NULLs, a hot key and keys the table lacks, the table
//! given as one file in Flink's legacy keys and as a folder.

mod common;

use std::sync::Arc;

use common::*;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

/// The table: keys 0..6 but 3, key 5 twice.
const TABLE: &[(i64, &str)] = &[
    (0, "zero"),
    (1, "one"),
    (2, "two"),
    (4, "four"),
    (5, "five"),
    (5, "cinq"),
];

async fn oracle(events: &[Event], sql: &str) -> Vec<String> {
    let ctx = SessionContext::new();
    let batch = events_batch(events);
    let probe = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
    ctx.register_table("t", Arc::new(probe)).unwrap();
    let dim = RecordBatch::try_from_iter([
        (
            "key",
            Arc::new(Int64Array::from(
                TABLE.iter().map(|r| r.0).collect::<Vec<_>>(),
            )) as _,
        ),
        (
            "value",
            Arc::new(StringArray::from(
                TABLE.iter().map(|r| r.1).collect::<Vec<_>>(),
            )) as _,
        ),
    ])
    .unwrap();
    let dim = MemTable::try_new(dim.schema(), vec![vec![dim]]).unwrap();
    ctx.register_table("side", Arc::new(dim)).unwrap();
    canonical_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

#[test]
fn lookup_joins_equal_a_batch_join() {
    let shape = Shape {
        rows: 300,
        keys: 8,
        hot: 0.4,
        nulls: 0.1,
        step: 3,
        jitter: 20,
    };
    let splits = generate(31, 2, shape);
    let events: Vec<Event> = splits.concat();
    let input = tempfile::tempdir().unwrap();
    write_splits(input.path(), &splits);
    let tables = tempfile::tempdir().unwrap();
    let text: String = TABLE.iter().map(|(k, v)| format!("{k},{v}\n")).collect();
    let file = tables.path().join("side_input.txt");
    std::fs::write(&file, &text).unwrap();
    let folder = tables.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(folder.join("a.csv"), lines[..3].join("\n") + "\n").unwrap();
    std::fs::write(folder.join("b.csv"), lines[3..].join("\n") + "\n").unwrap();
    let declarations = [
        // Flink's legacy keys (Nexmark q13), a path to one file.
        format!(
            "CREATE TABLE side (key BIGINT, `value` VARCHAR) WITH ('connector.type' = 'filesystem', 'connector.path' = 'file://{}', 'format.type' = 'csv')",
            file.display()
        ),
        format!(
            "CREATE TABLE side (key BIGINT, `value` VARCHAR) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv', 'lookup.join.cache.ttl' = '10 min')",
            folder.display()
        ),
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for (join, oracle_join) in [("JOIN", "JOIN"), ("LEFT JOIN", "LEFT JOIN")] {
            let expected = oracle(
                &events,
                &format!(
                    "SELECT t.k, t.v, s.value FROM t {oracle_join} side s ON t.k % 10 = s.key"
                ),
            )
            .await;
            assert!(expected.len() > 100, "{}", expected.len());
            for table in &declarations {
                for parallelism in [1, 2] {
                    let setup = [
                        format!("SET 'parallelism.default' = '{parallelism}'"),
                        stream_ddl(input.path(), 0, 16, ""),
                        table.clone(),
                    ];
                    let run = run_weir(
                        &setup,
                        &format!(
                            "SELECT B.k, B.v, S.`value` FROM (SELECT *, PROCTIME() AS p FROM t) B
                             {join} side FOR SYSTEM_TIME AS OF B.p AS S ON B.k % 10 = S.key"
                        ),
                    )
                    .await;
                    assert_eq!(
                        run.rows, expected,
                        "{join}, {table}, parallelism {parallelism}"
                    );
                }
            }
        }
    });
}

#[test]
fn a_temporal_join_of_a_table_that_is_not_versioned_is_refused_with_a_hint() {
    let input = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut session = weir::Session::new();
        session
            .sql(&stream_ddl(input.path(), 0, 16, ""))
            .await
            .unwrap();
        session
            .sql(&format!(
                "CREATE TABLE side (key BIGINT, `value` VARCHAR) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv')",
                input.path().display()
            ))
            .await
            .unwrap();
        let error = match session
            .query("SELECT * FROM t JOIN side FOR SYSTEM_TIME AS OF t.ts AS s ON t.k = s.key")
            .await
        {
            Ok(_) => panic!("planned"),
            Err(e) => e.render(),
        };
        assert!(
            error.contains("must be a versioned table") && error.contains("PRIMARY KEY"),
            "{error}"
        );
        let error = match session
            .query("SELECT * FROM t JOIN side FOR SYSTEM_TIME AS OF t.v AS s ON t.k = s.key")
            .await
        {
            Ok(_) => panic!("planned"),
            Err(e) => e.render(),
        };
        assert!(
            error.contains("neither a processing-time attribute") && error.contains("PROCTIME()"),
            "{error}"
        );
    });
}
