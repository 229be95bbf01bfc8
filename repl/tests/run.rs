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

/// Every one of Flink's Nexmark files, q6 included, runs as it is and
/// completes (their rows are checked in `tests/nexmark.rs`). q13 reads
/// `${FLINK_HOME}/data/side_input.txt`; q10 writes under `${NEXMARK_DIR}`.
#[test]
fn flink_nexmark_files_run_unchanged() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("data")).unwrap();
    let side: String = (0..10_000).map(|k| format!("{k},v{k}\n")).collect();
    std::fs::write(home.path().join("data/side_input.txt"), side).unwrap();
    let output = tempfile::tempdir().unwrap();
    for n in 0..=23 {
        let query = format!("q{n}.sql");
        weir()
            .arg("run")
            .args([
                nexmark("ddl_gen.sql"),
                nexmark("ddl_views.sql"),
                nexmark(&query),
            ])
            .args(VARS)
            .args(["--var", &format!("FLINK_HOME={}", home.path().display())])
            .args(["--var", &format!("NEXMARK_DIR={}", output.path().display())])
            .args(["--var", "SUBMIT_TIME=test"])
            .timeout(std::time::Duration::from_secs(300))
            .assert()
            .success();
    }
    let partitions = std::fs::read_dir(output.path().join("data/output/test/bid"))
        .unwrap()
        .count();
    assert!(partitions > 0, "q10 wrote no partition");
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

/// What `weir run --format csv -e SQL` printed, and whether it succeeded.
fn run_csv(sql: &str) -> (String, String, bool) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--format", "csv", "-e", sql])
        .output()
        .unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.success(),
    )
}

#[test]
fn a_query_without_a_stream_answers_one_row() {
    let (out, err, ok) = run_csv("SELECT 40 + 2 AS answer, UPPER('x') AS up, 'a' || 'b' AS ab");
    assert!(ok, "{err}");
    assert_eq!(out, "answer,up,ab\n42,X,ab\n");

    // CURRENT_TIMESTAMP is the time the query runs.
    let before = chrono::Utc::now().naive_utc();
    let (out, err, ok) = run_csv("SELECT CURRENT_TIMESTAMP AS now");
    assert!(ok, "{err}");
    let after = chrono::Utc::now().naive_utc();
    let text = out.lines().nth(1).unwrap().trim_end_matches('Z');
    let now = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").unwrap();
    assert!(
        before - chrono::Duration::seconds(1) <= now && now <= after,
        "{out}"
    );

    // The table form, as the shell prints it.
    weir()
        .args(["run", "-e", "SELECT 1 + 1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("2"));
}

#[test]
fn values_is_a_bounded_source_for_queries_and_inserts() {
    let (out, err, ok) = run_csv(
        "SELECT column1 AS id, column2 AS name FROM (VALUES (1, 'a'), (2, 'b'), (3, CAST(NULL AS VARCHAR))) WHERE column1 > 1",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "id,name\n2,b\n3,\n");

    let (out, err, ok) = run_csv("VALUES (1, 'a'), (2, 'b')");
    assert!(ok, "{err}");
    assert_eq!(out, "column1,column2\n1,a\n2,b\n");

    // INSERT ... VALUES writes the rows, as in Flink.
    let dir = tempfile::tempdir().unwrap();
    let (_, err, ok) = run_csv(&format!(
        "CREATE TABLE people (id BIGINT, name VARCHAR) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
         INSERT INTO people VALUES (1, 'ann'), (2, 'bob');",
        dir.path().display()
    ));
    assert!(ok, "{err}");
    let mut lines: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flat_map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    assert_eq!(lines, vec!["1,ann", "2,bob"]);
}

const SECRET_DDL: &str = "CREATE TABLE k (id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (
  'connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = 'localhost:9092',
  'properties.sasl.jaas.config' = 'PlainLoginModule required username=\"u\" password=\"hunter2\";',
  'properties.sasl.password' = 'hunter2', 'format' = 'json')";

const S3_SECRET_DDL: &str =
    "CREATE TABLE f (id BIGINT) WITH ('connector' = 'filesystem', 'path' = 's3://b/f/',
  's3.access_key_id' = 'AKIAHUNTER2', 's3.secret_access_key' = 'hunter2', 'format' = 'json')";

#[test]
fn show_create_table_prints_the_declaration_with_secrets_masked() {
    let (out, err, ok) = run_csv(&format!("{SECRET_DDL}; SHOW CREATE TABLE k;"));
    assert!(ok, "{err}");
    assert!(!out.contains("hunter2"), "{out}");
    assert_eq!(
        out.trim_end(),
        "CREATE TABLE `k` (
  `id` BIGINT,
  `ts` TIMESTAMP(3),
  WATERMARK FOR `ts` AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'bids',
  'properties.bootstrap.servers' = 'localhost:9092',
  'properties.sasl.jaas.config' = '******',
  'properties.sasl.password' = '******',
  'format' = 'json'
)"
    );

    // What SHOW CREATE prints declares the same stream again.
    let (again, err, ok) = run_csv(&format!("{}; SHOW CREATE TABLE k;", out.trim_end()));
    assert!(ok, "{err}");
    assert_eq!(again, out);

    let (s3, err, ok) = run_csv(&format!("{S3_SECRET_DDL}; SHOW CREATE TABLE f;"));
    assert!(ok, "{err}");
    assert!(!s3.contains("hunter2") && !s3.contains("AKIA"), "{s3}");
    assert!(s3.contains("'s3.secret_access_key' = '******'"), "{s3}");

    // A stream declared without columns shows the connector's.
    let (out, err, ok) = run_csv(
        "CREATE STREAM e WITH ('connector' = 'nexmark'); CREATE VIEW v AS SELECT bid.price FROM e; SHOW CREATE STREAM e; SHOW CREATE VIEW v;",
    );
    assert!(ok, "{err}");
    assert!(
        out.starts_with("CREATE STREAM `e` (\n  `event_type` INT,\n"),
        "{out}"
    );
    assert!(out.contains("WATERMARK FOR `dateTime` AS"), "{out}");
    assert!(
        out.contains("CREATE VIEW v AS SELECT bid.price FROM e"),
        "{out}"
    );

    let (_, err, ok) =
        run_csv("CREATE STREAM e WITH ('connector' = 'nexmark'); SHOW CREATE VIEW e;");
    assert!(!ok);
    assert!(
        err.contains("'e' is a stream") && err.contains("SHOW CREATE TABLE e"),
        "{err}"
    );
}

#[test]
fn errors_and_job_listings_never_echo_secrets() {
    // A mistake on the line holding the secret: the caret snippet masks it
    // and still points at the mistake.
    let (_, err, ok) = run_csv(
        "CREATE TABLE k (id BIGINT) WITH ('connector' = 'kafka', 'properties.sasl.password' = 'hunter2', 'topic' 'bids', 'format' = 'json')",
    );
    assert!(!ok);
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        err.contains("'properties.sasl.password' = '******'"),
        "{err}"
    );
    let snippet = err.lines().find(|l| l.contains("'******'")).unwrap();
    let caret = err
        .lines()
        .skip_while(|l| !l.contains("'******'"))
        .nth(1)
        .unwrap();
    let at = caret.find('^').unwrap();
    assert_eq!(&snippet[at..at + 6], "'bids'", "{err}");

    // Options the connector rejects: the statement's echo is masked too.
    let (_, err, ok) = run_csv(&format!("{SECRET_DDL}; SELECT nope FROM k"));
    assert!(!ok);
    assert!(!err.contains("hunter2"), "{err}");
    let (_, err, ok) = run_csv(&format!(
        "{}, 'scan.nope' = 'x')",
        S3_SECRET_DDL.trim_end_matches(')')
    ));
    assert!(!ok);
    assert!(
        err.contains("scan.nope") && !err.contains("hunter2"),
        "{err}"
    );

    // SET of a key that names a secret (no session setting does, so it is
    // refused as unknown) echoes the statement masked.
    let (out, err, ok) = run_csv("SET 'properties.sasl.password' = 'hunter2'");
    assert!(!ok);
    assert!(
        err.contains("unknown setting 'properties.sasl.password'"),
        "{err}"
    );
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "{out}{err}"
    );
}

/// An updating result through `weir run`: a print sink shows Flink's row
/// kinds; a bounded query prints its final table in any format; with
/// `--changelog` each change is printed with its `op`.
#[test]
fn updating_results_print_as_flink_prints_them() {
    let values = "CREATE VIEW t AS SELECT * FROM (VALUES (1, 10), (2, 20), (1, 30)) AS v(k, x);";
    let sink = "CREATE TABLE out (k INT, n BIGINT, s BIGINT) WITH ('connector' = 'print');";
    weir()
        .args(["run", "-e"])
        .arg(format!(
            "SET 'execution.runtime-mode' = 'streaming'; SET 'parallelism.default' = '1'; {values} {sink}
             INSERT INTO out SELECT k, count(*), sum(x) FROM t GROUP BY k;"
        ))
        .assert()
        .success()
        .stdout("+I[1, 2, 40]\n+I[2, 1, 20]\n");
    // Changes across batches: a nested aggregate retracts.
    let nested =
        "SELECT n, count(*) AS keys FROM (SELECT k, count(*) AS n FROM t GROUP BY k) GROUP BY n";
    weir()
        .args(["run", "--format", "csv", "-e"])
        .arg(format!(
            "SET 'execution.runtime-mode' = 'streaming'; {values} {nested};"
        ))
        .assert()
        .success()
        .stdout(predicate::function(|s: &str| {
            let mut lines: Vec<&str> = s.lines().collect();
            lines.sort();
            lines == ["1,1", "2,1", "n,keys"]
        }));
    weir()
        .args(["run", "--changelog", "--format", "csv", "-e"])
        .arg(format!(
            "SET 'execution.runtime-mode' = 'streaming'; SET 'parallelism.default' = '1'; {values} SELECT k, count(*) AS n FROM t GROUP BY k;"
        ))
        .assert()
        .success()
        .stdout("op,k,n\n+I,1,2\n+I,2,1\n");
}

/// Rows of a print sink that retract: a filter after an aggregate.
#[test]
fn a_print_sink_shows_retractions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.json");
    // One row per line and a batch size of 1: each row is its own batch,
    // so each one changes the count of its key.
    std::fs::write(&file, "{\"k\": 1}\n{\"k\": 1}\n{\"k\": 2}\n{\"k\": 1}\n").unwrap();
    weir()
        .args(["run", "-e"])
        .arg(format!(
            "SET 'execution.runtime-mode' = 'streaming'; SET 'parallelism.default' = '1';
             CREATE STREAM t (k INT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json', 'scan.batch-size' = '1');
             CREATE TABLE out (k INT, n BIGINT) WITH ('connector' = 'print');
             INSERT INTO out SELECT k, count(*) FROM t GROUP BY k HAVING count(*) < 3;",
            file.display()
        ))
        .assert()
        .success()
        .stdout("+I[1, 1]\n-U[1, 1]\n+U[1, 2]\n+I[2, 1]\n-U[1, 2]\n");
}
