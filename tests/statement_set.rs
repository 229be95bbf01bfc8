//! A statement set (`EXECUTE STATEMENT SET BEGIN ... END;`): several
//! `INSERT INTO`s run as one job, reading their shared stream once, and
//! each sink gets exactly what its INSERT alone would write (a DataFusion
//! batch query over the same rows).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

fn sink_ddl(name: &str, columns: &str, dir: &Path) -> String {
    format!(
        "CREATE TABLE {name} ({columns}) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
        dir.display()
    )
}

/// Sorted rows of the Parquet files `dir` holds.
async fn written_rows(dir: &Path) -> Vec<String> {
    let ctx = SessionContext::new();
    let mut batches = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let file = path.display().to_string();
            let frame = ctx
                .read_parquet(file, ParquetReadOptions::default())
                .await
                .unwrap();
            batches.extend(frame.collect().await.unwrap());
        }
    }
    canonical_rows(&batches)
}

async fn oracle(events: &[Event], sql: &str) -> Vec<String> {
    let ctx = SessionContext::new();
    let batch = events_batch(events);
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    canonical_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

const WINDOWS: &str = "SELECT window_start, k, count(*) AS n FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '100' MILLISECOND)) GROUP BY window_start, window_end, k";
const FILTERED: &str = "SELECT k, v, ts FROM t WHERE v > 500";

#[test]
fn a_statement_set_reads_its_stream_once_and_fills_every_sink() {
    let shape = Shape {
        rows: 400,
        keys: 5,
        hot: 0.4,
        nulls: 0.1,
        step: 3,
        jitter: 0,
    };
    let splits = generate(91, 2, shape);
    let input = tempfile::tempdir().unwrap();
    write_splits(input.path(), &splits);
    let events: Vec<Event> = splits.concat();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let windows = oracle(
            &events,
            "SELECT date_bin(INTERVAL '100' MILLISECOND, ts, TIMESTAMP '1970-01-01 00:00:00') AS window_start, k, count(*) AS n FROM t GROUP BY 1, 2",
        )
        .await;
        let filtered = oracle(&events, FILTERED).await;
        assert!(!windows.is_empty() && !filtered.is_empty());
        for syntax in ["EXECUTE STATEMENT SET BEGIN", "BEGIN STATEMENT SET;"] {
            let (counts, rows) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let mut session = weir::Session::new();
            session.set("parallelism.default", "2").unwrap();
            for ddl in [
                stream_ddl(input.path(), 0, 16, ""),
                sink_ddl(
                    "counts",
                    "window_start TIMESTAMP(3), k BIGINT, n BIGINT",
                    counts.path(),
                ),
                sink_ddl("rows", "k BIGINT, v BIGINT, ts TIMESTAMP(3)", rows.path()),
            ] {
                session.sql(&ddl).await.unwrap();
            }
            let set = format!(
                "{syntax}\n  INSERT INTO counts {WINDOWS};\n  INSERT INTO rows {FILTERED};\nEND;"
            );
            let explain = match session.sql(&format!("EXPLAIN {set}")).await.unwrap().pop() {
                Some(weir::Output::Explain(text)) => text,
                _ => panic!("EXPLAIN gave no plan"),
            };
            assert_eq!(explain.matches("source: t").count(), 1, "{explain}");
            assert_eq!(explain.matches("sink: ").count(), 2, "{explain}");
            let job = session.submit(&set).await.unwrap();
            assert_eq!(job.sink(), "counts, rows");
            job.wait().await.unwrap();
            assert_eq!(written_rows(counts.path()).await, windows, "{syntax}");
            assert_eq!(written_rows(rows.path()).await, filtered, "{syntax}");
        }
    });
}

#[test]
fn a_statement_set_of_other_statements_is_refused_where_they_are() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut session = weir::Session::new();
        let set = "EXECUTE STATEMENT SET BEGIN\nSELECT 1;\nEND;";
        let error = session.sql(set).await.unwrap_err().render();
        assert!(
            error.contains("only INSERT INTO") && error.contains("line 2, column 1"),
            "{error}"
        );
        let error = session
            .sql("EXECUTE STATEMENT SET BEGIN END;")
            .await
            .unwrap_err()
            .render();
        assert!(error.contains("empty statement set"), "{error}");
        assert!(!weir::crates::sql::is_complete(
            "EXECUTE STATEMENT SET BEGIN\nINSERT INTO a SELECT 1;"
        ));
    });
}
