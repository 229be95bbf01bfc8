//! `weir run` and `weir explain` as a user runs them: the real binary.

use assert_cmd::Command;
use predicates::prelude::*;

fn nexmark(file: &str) -> String {
    format!(
        "{}/../tests/nexmark-flink/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn weir() -> Command {
    Command::cargo_bin("weir").unwrap()
}

const VARS: &[&str] = &[
    "--var",
    "TPS=10000000",
    "--var",
    "EVENTS_NUM=100000",
    "--var",
    "PERSON_PROPORTION=1",
    "--var",
    "AUCTION_PROPORTION=3",
    "--var",
    "BID_PROPORTION=46",
    "--var",
    "NEXMARK_TABLE=datagen",
];

#[test]
fn flink_nexmark_files_run_unchanged() {
    for query in ["q0.sql", "q1.sql", "q2.sql", "q11.sql", "q12.sql"] {
        weir()
            .arg("run")
            .args([
                nexmark("ddl_gen.sql"),
                nexmark("ddl_views.sql"),
                nexmark(query),
            ])
            .args(VARS)
            .timeout(std::time::Duration::from_secs(120))
            .assert()
            .success();
    }
}

#[test]
fn a_query_prints_its_rows() {
    weir()
        .args(["run", "--format", "csv"])
        .args([nexmark("ddl_gen.sql"), nexmark("ddl_views.sql")])
        .args([
            "-e",
            "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0 LIMIT 3",
        ])
        .args(VARS)
        .assert()
        .success()
        .stdout(predicate::str::starts_with("auction,price\n"))
        .stdout(predicate::function(|s: &str| s.lines().count() == 4));
}

#[test]
fn a_missing_placeholder_is_named() {
    weir()
        .arg("run")
        .arg(nexmark("ddl_gen.sql"))
        .args(["--var", "TPS=1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("${EVENTS_NUM}"))
        .stderr(predicate::str::contains("--var EVENTS_NUM="));
}

#[test]
fn a_typo_points_at_line_and_column() {
    weir()
        .args([
            "run",
            "-e",
            "CREATE STREAM s WITH ('connector' = 'nexmark');\nSELECT a FROM sx",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown stream or view 'sx'"))
        .stderr(predicate::str::contains("did you mean 's'?"))
        .stderr(predicate::str::contains("2 | SELECT a FROM sx"))
        .stderr(predicate::str::contains("  |               ^"));
}

#[test]
fn explain_shows_the_two_phase_graph() {
    weir()
        .arg("explain")
        .args([nexmark("ddl_gen.sql"), nexmark("ddl_views.sql")])
        .args(VARS)
        .assert()
        .success();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.sql");
    std::fs::write(
        &file,
        "SET 'parallelism.default' = '4';
         CREATE STREAM e WITH ('connector' = 'nexmark');
         SELECT window_start, bid.auction, count(*) FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
         GROUP BY window_start, window_end, bid.auction;",
    )
    .unwrap();
    weir()
        .arg("explain")
        .arg(&file)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "window aggregate (local)  parallelism=4",
        ))
        .stdout(predicate::str::contains("shuffle by hash("))
        .stdout(predicate::str::contains(
            "window aggregate (global)  parallelism=4",
        ))
        .stdout(predicate::str::contains("unbounded job"));
}

#[test]
fn sigterm_stops_jobs_gracefully_and_flushes() {
    let out = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE STREAM e WITH ('connector' = 'nexmark', 'scan.rate-limit' = '5000');
         CREATE TABLE hourly (window_start TIMESTAMP(3), n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
         INSERT INTO hourly SELECT window_start, count(*) FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(dateTime), INTERVAL '1' HOUR)) GROUP BY window_start, window_end;",
        out.path().display()
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-e", &sql])
        .spawn()
        .unwrap();
    // Let the job read for a while; the hour-long window stays open.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // Stopping drained the open window and flushed the sink.
    let mut text = String::new();
    for entry in std::fs::read_dir(out.path()).unwrap() {
        text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!rows.is_empty(), "no rows written");
    let total: i64 = rows.iter().map(|r| r["n"].as_i64().unwrap()).sum();
    assert!(total > 0);
}
