//! Sources, sinks and bad input, end to end through a session.

mod common;

use common::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn read_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        out.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
    }
    out
}

#[test]
fn bad_records_go_to_the_dead_letter_output_and_good_ones_through() {
    let input = tempfile::tempdir().unwrap();
    let dlq = tempfile::tempdir().unwrap();
    std::fs::write(
        input.path().join("a.json"),
        [
            r#"{"k": 1, "v": 10, "ts": "2024-01-01 00:00:00.000"}"#,
            r#"{"k": "one", "v": 11, "ts": "2024-01-01 00:00:00.100"}"#,
            r#"{"k": 2, "v": 12, "ts": "2024-01-01 00:00:00.200", "unknown": [1, 2]}"#,
            r#"{"k": 3, "ts": "2024-01-01 00:00:00.300"}"#,
            r#"{broken"#,
            r#"{"k": 4, "v": 14, "ts": "not a time"}"#,
            r#"{"k": 5, "v": 15, "ts": "2024-01-01T00:00:00.400Z"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let ddl = stream_ddl(
        input.path(),
        0,
        2,
        &format!(", 'bad-data.path' = '{}'", dlq.path().display()),
    );
    let run = runtime().block_on(run_weir(&[ddl], "SELECT k, v FROM t"));
    // Missing field: NULL; unknown field: ignored.
    assert_eq!(run.rows, vec!["1 | 10", "2 | 12", "3 | NULL", "5 | 15"]);
    let letters = read_lines(dlq.path());
    let mut lines: Vec<String> = letters
        .iter()
        .map(|l| l["location"].as_str().unwrap().to_string())
        .collect();
    lines.sort();
    assert_eq!(lines, vec!["a.json:2", "a.json:5", "a.json:6"]);
    for letter in &letters {
        assert_eq!(letter["stream"], "t");
        assert!(!letter["reason"].as_str().unwrap().is_empty());
        assert!(letter["raw"].is_string());
    }
    let broken = letters
        .iter()
        .find(|l| l["location"] == "a.json:5")
        .unwrap();
    assert_eq!(broken["raw"], "{broken");
}

#[test]
fn bad_data_fail_stops_the_job_with_the_reason() {
    let input = tempfile::tempdir().unwrap();
    std::fs::write(input.path().join("a.json"), "{\"k\": 1}\n{oops\n").unwrap();
    let ddl = stream_ddl(input.path(), 0, 8, ", 'bad-data' = 'fail'");
    let rt = runtime();
    let error = rt.block_on(async {
        let mut session = weir::Session::new();
        session.sql(&ddl).await.unwrap();
        session
            .query("SELECT k FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
    });
    let text = error.to_string();
    assert!(
        text.contains("bad record in t") && text.contains("a.json:2"),
        "{text}"
    );
}

#[test]
fn late_rows_are_written_with_their_reason() {
    let input = tempfile::tempdir().unwrap();
    let late = tempfile::tempdir().unwrap();
    // Delay 0: the row at .050 after one at .250 is late for [0, 100).
    std::fs::write(
        input.path().join("a.json"),
        [
            r#"{"k": 1, "v": 1, "ts": "2024-01-01 00:00:00.010"}"#,
            r#"{"k": 1, "v": 2, "ts": "2024-01-01 00:00:00.250"}"#,
            r#"{"k": 1, "v": 3, "ts": "2024-01-01 00:00:00.050"}"#,
            r#"{"k": 1, "v": 4, "ts": "2024-01-01 00:00:00.260"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let ddl = stream_ddl(
        input.path(),
        0,
        1,
        &format!(", 'late-data.path' = '{}'", late.path().display()),
    );
    let run = runtime().block_on(run_weir(
        &[ddl],
        "SELECT window_start, count(*) AS n, sum(v) AS s FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '100' MILLISECOND)) GROUP BY window_start, window_end",
    ));
    assert_eq!(
        run.rows,
        vec![
            "2024-01-01T00:00:00 | 1 | 1",
            "2024-01-01T00:00:00.200 | 2 | 6"
        ]
    );
    assert_eq!(run.late_rows, 1);
    let letters = read_lines(late.path());
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["row"]["v"], 3);
    assert!(letters[0]["reason"].as_str().unwrap().starts_with("late"));
}

#[test]
fn csv_and_parquet_round_trip_through_the_filesystem_sink() {
    let rt = runtime();
    let csv_in = tempfile::tempdir().unwrap();
    std::fs::write(
        csv_in.path().join("a.csv"),
        "k,v,ts\n1,10,2024-01-01 00:00:00\n2,,2024-01-01 00:00:01\n",
    )
    .unwrap();
    let parquet_out = tempfile::tempdir().unwrap();
    let json_out = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut session = weir::Session::new();
        session
            .sql(&format!(
                "CREATE STREAM c (k BIGINT, v BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv', 'csv.header' = 'true');
                 CREATE TABLE p (k BIGINT, v BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');",
                csv_in.path().display(),
                parquet_out.path().display()
            ))
            .await
            .unwrap();
        session.submit("INSERT INTO p SELECT k, v, ts FROM c").await.unwrap().wait().await.unwrap();
        // Read the Parquet back as a stream and write JSON lines.
        session
            .sql(&format!(
                "CREATE STREAM p2 (k BIGINT, v BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');
                 CREATE TABLE j (k BIGINT, doubled BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');",
                parquet_out.path().display(),
                json_out.path().display()
            ))
            .await
            .unwrap();
        session.submit("INSERT INTO j SELECT k, v * 2 FROM p2").await.unwrap().wait().await.unwrap();
    });
    let mut rows: Vec<String> = read_lines(json_out.path())
        .iter()
        .map(|v| v.to_string())
        .collect();
    rows.sort();
    assert_eq!(rows, vec![r#"{"doubled":20,"k":1}"#, r#"{"k":2}"#]);
}

#[test]
fn processing_time_windows_count_every_row() {
    let input = tempfile::tempdir().unwrap();
    let splits = generate(
        3,
        2,
        Shape {
            rows: 300,
            keys: 5,
            hot: 0.2,
            nulls: 0.0,
            step: 3,
            jitter: 0,
        },
    );
    write_splits(input.path(), &splits);
    let run = runtime().block_on(run_weir(
        &[
            stream_ddl(input.path(), 0, 50, ""),
            "CREATE VIEW tp AS SELECT k, v, PROCTIME() AS pt FROM t".to_string(),
        ],
        "SELECT sum(n) FROM (SELECT k, count(*) AS n FROM TABLE(TUMBLE(TABLE tp, DESCRIPTOR(pt), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end)",
    ));
    // Rows land in wall-clock windows; whatever the windows, each row counts once.
    assert_eq!(run.rows, vec!["600"]);
    assert_eq!(run.late_rows, 0);
}

/// `'path'` as users write it: one file (a plain path or a `file://` URL),
/// a folder, or a path that matches nothing, which is an error rather
/// than an empty stream.
#[test]
fn a_path_names_one_file_or_a_folder_and_must_match_something() {
    let input = tempfile::tempdir().unwrap();
    let line = |k: i64| format!("{{\"k\": {k}, \"v\": 0, \"ts\": \"2024-01-01 00:00:00\"}}\n");
    std::fs::write(input.path().join("a.jsonl"), line(1) + &line(2)).unwrap();
    std::fs::write(input.path().join("b.jsonl"), line(3)).unwrap();
    let rt = runtime();
    let query = |path: String| {
        let ddl = format!(
            "CREATE STREAM t (k BIGINT, v BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')"
        );
        rt.block_on(run_weir(&[ddl], "SELECT k FROM t")).rows
    };
    let file = input.path().join("a.jsonl");
    assert_eq!(query(file.display().to_string()), vec!["1", "2"]);
    assert_eq!(query(format!("file://{}", file.display())), vec!["1", "2"]);
    assert_eq!(
        query(input.path().display().to_string()),
        vec!["1", "2", "3"]
    );
    assert_eq!(
        query(format!("{}/", input.path().display())),
        vec!["1", "2", "3"]
    );

    let missing = input.path().join("nothing.jsonl");
    let error = rt.block_on(async {
        let mut session = weir::Session::new();
        session
            .sql(&format!(
                "CREATE STREAM t (k BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json')",
                missing.display()
            ))
            .await
            .unwrap();
        match session.query("SELECT k FROM t").await {
            Ok(results) => results.collect().await.map(|_| ()).unwrap_err(),
            Err(e) => e,
        }
    });
    let text = error.render();
    assert!(
        text.contains("nothing.jsonl") && text.contains("does not exist"),
        "{text}"
    );
}

/// A file with bad and blank lines, read in chunks of any size and decoded
/// on one core or several: the same rows in the same order, and the same
/// dead letters with their line numbers.
#[test]
fn chunk_size_and_decode_parallelism_change_no_row_and_no_dead_letter() {
    let input = tempfile::tempdir().unwrap();
    let mut text = String::new();
    let mut good = Vec::new();
    let mut bad_lines = Vec::new();
    for line in 1..=300u64 {
        match line % 17 {
            3 => {
                text.push_str(&format!("{{\"k\": \"bad {line}\"}}\n"));
                bad_lines.push(format!("a.json:{line}"));
            }
            9 => text.push_str("   \n"),
            13 => {
                text.push_str("{broken\r\n");
                bad_lines.push(format!("a.json:{line}"));
            }
            _ => {
                text.push_str(&format!(
                    "{{\"k\": {line}, \"v\": 1, \"ts\": \"2024-01-01 00:00:00\"}}\n"
                ));
                good.push(line.to_string());
            }
        }
    }
    // The last line has no newline.
    text.push_str("{\"k\": 301}");
    good.push("301".to_string());
    std::fs::write(input.path().join("a.json"), &text).unwrap();
    let rt = runtime();
    for (batch_size, decode) in [(1, 1), (7, 1), (7, 4), (64, 3), (8192, 1), (8192, 2)] {
        let dlq = tempfile::tempdir().unwrap();
        let ddl = stream_ddl(
            input.path(),
            0,
            batch_size,
            &format!(
                ", 'scan.parallel-decode' = '{decode}', 'bad-data.path' = '{}'",
                dlq.path().display()
            ),
        );
        let rows: Vec<String> = rt.block_on(async {
            let mut session = weir::Session::new();
            session.sql(&ddl).await.unwrap();
            let batches = session
                .query("SELECT k FROM t")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let mut rows = Vec::new();
            for batch in &batches {
                let keys = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .unwrap();
                rows.extend(keys.values().iter().map(|k| k.to_string()));
            }
            rows
        });
        assert_eq!(
            rows, good,
            "rows in order, batch {batch_size}, decode {decode}"
        );
        let mut letters: Vec<String> = read_lines(dlq.path())
            .iter()
            .map(|l| l["location"].as_str().unwrap().to_string())
            .collect();
        let by_line = |l: &String| l.rsplit(':').next().unwrap().parse::<u64>().unwrap();
        letters.sort_by_key(by_line);
        assert_eq!(
            letters, bad_lines,
            "dead letters, batch {batch_size}, decode {decode}"
        );
    }
}

/// A JSON file source decodes only the columns a query uses (and those its
/// watermark needs), as Flink's JSON format does: a value of the wrong type
/// in a column the query does not read does not make the record bad.
#[test]
fn a_json_source_decodes_only_the_columns_the_query_uses() {
    let input = tempfile::tempdir().unwrap();
    std::fs::write(
        input.path().join("a.json"),
        [
            r#"{"k": 1, "v": 10, "s": "x", "ts": "2024-01-01 00:00:00"}"#,
            r#"{"k": 2, "v": 20, "s": {"not": "a string"}, "ts": "2024-01-01 00:00:01"}"#,
            r#"{"k": "three", "v": 30, "s": "z", "ts": "2024-01-01 00:00:02"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let ddl = format!(
        "CREATE STREAM t (k BIGINT, v BIGINT, s VARCHAR, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json', 'bad-data' = 'drop')",
        input.path().display()
    );
    let rt = runtime();
    let plan = rt.block_on(async {
        let mut session = weir::Session::new();
        session.sql(&ddl).await.unwrap();
        match session
            .sql("EXPLAIN SELECT k FROM t")
            .await
            .unwrap()
            .remove(0)
        {
            weir::Output::Explain(plan) => plan,
            other => panic!("{other:?}"),
        }
    });
    assert!(plan.contains("reads only [k, ts]"), "{plan}");
    // Row 2's `s` is not read; row 3's `k` is, and is bad.
    assert_eq!(
        rt.block_on(run_weir(std::slice::from_ref(&ddl), "SELECT k FROM t"))
            .rows,
        vec!["1", "2"]
    );
    // Reading `s` too, row 2 is bad as well.
    assert_eq!(
        rt.block_on(run_weir(&[ddl], "SELECT k, s FROM t")).rows,
        vec!["1 | x"]
    );
}
