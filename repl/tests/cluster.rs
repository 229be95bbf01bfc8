//! One job shared by several `weir run --cluster` processes
//! (`docs/cluster-protocol.md`) on a real broker (Tansu, as
//! `kafka_broker.rs`): Kafka source → tumbling window count → exactly-once
//! Parquet. Processes join, one is killed with SIGKILL mid-run, another
//! joins later; the committed output must equal, row for row, the same
//! query over the generator in one process.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::broker::{run, start_broker, weir};

const EVENTS: &str = "CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '50000',
    'base-time' = '1700000000000', 'first-event.rate' = '1000');";

/// Half of the bids (by event time) go to the topic before the job runs,
/// the rest after a process was killed.
const CUT: &str = "TIMESTAMP '2023-11-14 22:13:45'";

const COUNTS: &str = "SELECT window_start, auction, count(*) AS n
    FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
    GROUP BY window_start, window_end, auction";

fn topic(broker: &str) -> String {
    format!(
        "WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '{broker}',
               'format' = 'json', 'key.format' = 'json', 'key.fields' = 'auction'"
    )
}

/// Writes the bids `filter` keeps to the topic, keyed by auction.
fn write_bids(broker: &str, filter: &str) {
    let written = run(&format!(
        "SET 'parallelism.default' = '1';
         {EVENTS}
         CREATE TABLE out (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) {});
         INSERT INTO out SELECT bid.auction, bid.price, dateTime FROM events
           WHERE event_type = 2 AND {filter};",
        topic(broker)
    ));
    assert!(written.is_empty(), "{written:?}");
}

/// Rows far in the future on many keys (so on every partition): they move
/// every partition's watermark past the last window. The job leaves them
/// out of its counts.
fn write_flush(broker: &str) {
    let rows: Vec<String> = (1..=40)
        .map(|k| format!("(-{k}, 0, TIMESTAMP '2030-01-01 00:00:00')"))
        .collect();
    let written = run(&format!(
        "SET 'parallelism.default' = '1';
         CREATE TABLE out (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) {});
         INSERT INTO out VALUES {};",
        topic(broker),
        rows.join(", ")
    ));
    assert!(written.is_empty(), "{written:?}");
}

/// The job every process runs: the same file.
fn job(broker: &str, dir: &Path) -> String {
    format!(
        "SET 'pipeline.name' = 'counts';
         SET 'execution.checkpointing.interval' = '1s';
         SET 'state.checkpoints.dir' = '{checkpoints}';
         SET 'pipeline.max-parallelism' = '4';
         CREATE STREAM bids_topic (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
           WATERMARK FOR ts AS ts - INTERVAL '4' SECOND) {topic},
           'scan.startup.mode' = 'earliest-offset', 'properties.session.timeout.ms' = '6000');
         CREATE VIEW bids AS SELECT * FROM bids_topic WHERE auction >= 0;
         CREATE TABLE counts (window_start TIMESTAMP(3), auction BIGINT, n BIGINT)
           WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'parquet');
         INSERT INTO counts {COUNTS};",
        checkpoints = dir.join("checkpoints").display(),
        out = dir.join("out").display(),
        topic = topic(broker),
    )
}

/// A `weir run --cluster` of the job, its logs in `dir`.
fn start_process(dir: &Path, name: &str) -> Child {
    let log = File::create(dir.join(format!("{name}.log"))).unwrap();
    weir()
        .args(["--log", "info", "run", "--cluster"])
        .arg(dir.join("job.sql"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The committed output, as sorted CSV rows.
fn committed(dir: &Path) -> Vec<String> {
    if !dir.join("out").exists() {
        return Vec::new();
    }
    run(&format!(
        "CREATE STREAM r (window_start TIMESTAMP(3), auction BIGINT, n BIGINT)
           WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');
         SELECT * FROM r;",
        dir.join("out").display()
    ))
}

fn count_of(rows: &[String]) -> i64 {
    rows.iter()
        .map(|r| r.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum()
}

/// Waits until `done` holds of the committed rows; fails with the
/// processes' logs after `limit`.
fn wait_for(dir: &Path, limit: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let started = Instant::now();
    loop {
        let rows = committed(dir);
        if done(&rows) {
            return rows;
        }
        if started.elapsed() > limit {
            let mut logs = String::new();
            for name in ["p1", "p2", "p3", "p4"] {
                if let Ok(text) = std::fs::read_to_string(dir.join(format!("{name}.log"))) {
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    logs.push_str(&format!("--- {name}\n"));
                    for line in tail.into_iter().rev() {
                        logs.push_str(line);
                        logs.push('\n');
                    }
                }
            }
            panic!(
                "waited {limit:?}: {} rows committed, {} bids\n{logs}",
                rows.len(),
                count_of(&rows)
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether the process logged running at least one task in some generation.
fn ran_tasks(dir: &Path, name: &str) -> bool {
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    log.lines()
        .filter(|line| line.contains("starting generation"))
        .any(|line| {
            line.match_indices(": {")
                .any(|(at, _)| line[at + 3..].starts_with(|c: char| c.is_ascii_digit()))
        })
}

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_cluster_job_survives_a_killed_process_and_equals_one_process() {
    let broker = start_broker(&[("bids", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("job.sql"), job(&broker.address, dir)).unwrap();

    let reference = run(&format!(
        "{EVENTS}
         CREATE VIEW bids AS SELECT bid.auction, bid.price, dateTime AS ts FROM events WHERE event_type = 2;
         {COUNTS};"
    ));
    let total = count_of(&reference);
    assert_eq!(total, 50_000 * 46 / 50, "every bid counted once");

    write_bids(&broker.address, &format!("dateTime < {CUT}"));
    let mut processes = Processes(Vec::new());
    for name in ["p1", "p2", "p3"] {
        processes.0.push(start_process(dir, name));
        std::thread::sleep(Duration::from_secs(1));
    }
    let started = Instant::now();
    while !["p1", "p2", "p3"].iter().all(|p| ran_tasks(dir, p)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the three processes did not share the tasks"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The first half's windows that closed are committed: the job runs.
    let first = wait_for(dir, Duration::from_secs(120), |rows| !rows.is_empty());
    assert!(count_of(&first) < total);

    // SIGKILL: no goodbye to the group; its tasks move after the session
    // timeout, and every task rolls back to the last complete epoch.
    assert!(ran_tasks(dir, "p2"), "the process to kill runs tasks");
    processes.0[1].kill().unwrap();
    processes.0[1].wait().unwrap();
    write_bids(&broker.address, &format!("dateTime >= {CUT}"));
    write_flush(&broker.address);
    std::thread::sleep(Duration::from_secs(2));
    processes.0.push(start_process(dir, "p4"));

    let all = wait_for(dir, Duration::from_secs(180), |rows| {
        count_of(rows) >= total
    });
    // Nothing more arrives after a few more epochs: no late duplicates.
    std::thread::sleep(Duration::from_secs(3));
    let settled = committed(dir);
    assert!(ran_tasks(dir, "p4"), "the process started last took tasks");
    assert_eq!(all, settled, "the output changed after it was complete");
    common::assert_same_rows(&settled, &reference);
}
