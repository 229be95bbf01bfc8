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
