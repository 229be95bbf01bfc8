//! A filesystem sink `PARTITIONED BY` a column: every row lands in its
//! partition's directory, the column in the path and not in the files,
//! with and without checkpoints (exactly-once staging publishes into the
//! partition directories); every partition gets its `_SUCCESS` file.

mod common;

use std::path::Path;

use common::*;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

/// Rows `k | v | ts` read back from the partition directories `k=...`.
async fn read_back(dir: &Path) -> (Vec<String>, usize) {
    let ctx = SessionContext::new();
    let mut rows = Vec::new();
    let mut committed = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let partition = entry.unwrap().path();
        let Some(name) = partition.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(key) = name.strip_prefix("k=") else {
            continue;
        };
        let key = if key == "__DEFAULT_PARTITION__" {
            "NULL"
        } else {
            key
        };
        if partition.join("_SUCCESS").exists() {
            committed += 1;
        }
        for file in std::fs::read_dir(&partition).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_none_or(|e| e != "parquet") {
                continue;
            }
            let batches = ctx
                .read_parquet(file.to_str().unwrap(), ParquetReadOptions::default())
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            assert_eq!(
                batches[0].num_columns(),
                2,
                "the partition column is in the path"
            );
            rows.extend(
                canonical_rows(&batches)
                    .into_iter()
                    .map(|r| format!("{key} | {r}")),
            );
        }
    }
    rows.sort();
    (rows, committed)
}

#[test]
fn every_row_lands_in_its_partition_and_every_partition_commits() {
    let shape = Shape {
        rows: 300,
        keys: 5,
        hot: 0.4,
        nulls: 0.1,
        step: 3,
        jitter: 0,
    };
    let splits = generate(17, 2, shape);
    let input = tempfile::tempdir().unwrap();
    write_splits(input.path(), &splits);
    let events: Vec<Event> = splits.concat();
    let expected = canonical_rows(&[events_batch(&events)]);
    let partitions = {
        let mut keys: Vec<Option<i64>> = events.iter().map(|e| e.key).collect();
        keys.sort();
        keys.dedup();
        keys.len()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for checkpoints in [false, true] {
            let out = tempfile::tempdir().unwrap();
            let state = tempfile::tempdir().unwrap();
            let mut session = weir::Session::new();
            session.set("parallelism.default", "2").unwrap();
            if checkpoints {
                session
                    .set("execution.checkpointing.interval", "50ms")
                    .unwrap();
                session
                    .set("state.checkpoints.dir", state.path().to_str().unwrap())
                    .unwrap();
            }
            session
                .sql(&stream_ddl(input.path(), 0, 16, ""))
                .await
                .unwrap();
            session
                .sql(&format!(
                    "CREATE TABLE out (k BIGINT, v BIGINT, ts TIMESTAMP(3)) PARTITIONED BY (k)
                     WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet',
                           'sink.partition-commit.policy.kind' = 'success-file')",
                    out.path().display()
                ))
                .await
                .unwrap();
            let job = session
                .submit("INSERT INTO out SELECT k, v, ts FROM t")
                .await
                .unwrap();
            job.wait().await.unwrap();
            let (rows, committed) = read_back(out.path()).await;
            assert_eq!(rows, expected, "checkpoints: {checkpoints}");
            assert_eq!(committed, partitions, "checkpoints: {checkpoints}");
        }
    });
}
