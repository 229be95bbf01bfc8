//! One job shared by several `weir run --cluster` processes
//! (`docs/cluster-protocol.md`) on a real broker (Tansu, as
//! `kafka_broker.rs`), writing exactly-once Parquet. Three processes share
//! the job; one is killed with SIGKILL mid-run; a fourth joins later. The
//! committed output must equal, row for row, the same query over the
//! Nexmark generator in one process: a window aggregate, and a window join
//! of two topics.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::broker::{run, start_broker_on, weir, Storage};
use common::seaweed::seaweed_in_tempdir;

const EVENTS: &str = "CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '50000',
    'base-time' = '1700000000000', 'first-event.rate' = '1000');";

/// Half of the events (by event time) go to the topics before the job
/// runs, the rest after a process was killed.
const CUT: &str = "TIMESTAMP '2023-11-14 22:13:45'";

/// A topic the job reads: its name, partitions, key column, and the
/// Nexmark events it holds (`key, value, ts`).
struct Topic {
    name: &'static str,
    partitions: u32,
    key: &'static str,
    value: &'static str,
    /// The event kind and the columns that make `key, value, ts`.
    select: &'static str,
}

const BIDS: Topic = Topic {
    name: "bids",
    partitions: 4,
    key: "auction",
    value: "price",
    select: "bid.auction, bid.price, dateTime FROM events WHERE event_type = 2",
};

const AUCTIONS: Topic = Topic {
    name: "auctions",
    partitions: 2,
    key: "id",
    value: "seller",
    select: "auction.id, auction.seller, dateTime FROM events WHERE event_type = 1",
};

impl Topic {
    fn with(&self, broker: &str) -> String {
        format!(
            "WITH ('connector' = 'kafka', 'topic' = '{}', 'properties.bootstrap.servers' = '{broker}',
                   'format' = 'json', 'key.format' = 'json', 'key.fields' = '{}'",
            self.name, self.key
        )
    }

    fn columns(&self) -> String {
        format!(
            "{} BIGINT, {} BIGINT, ts TIMESTAMP(3)",
            self.key, self.value
        )
    }

    /// The view over the generator the reference answer reads.
    fn generated_view(&self) -> String {
        format!(
            "CREATE VIEW {} AS SELECT {};",
            self.name,
            self.select.replacen(" FROM", " AS ts FROM", 1)
        )
    }

    /// Writes the events `filter` keeps, keyed by the key column.
    fn write(&self, broker: &str, filter: &str) {
        let written = run(&format!(
            "SET 'parallelism.default' = '1';
             {EVENTS}
             CREATE TABLE out ({}) {});
             INSERT INTO out SELECT {} AND {filter};",
            self.columns(),
            self.with(broker),
            self.select
        ));
        assert!(written.is_empty(), "{written:?}");
    }

    /// Fails unless the topic holds exactly the generator's rows that
    /// `filter` keeps, each once: a writer that sent a record twice would
    /// otherwise show up as a wrong count in the job's output.
    fn assert_holds(&self, broker: &str, filter: &str) {
        // Tansu 0.6 reports a partition's end short of its last record
        // batch (see kafka_broker.rs): a last batch of rows the job leaves
        // out (negative keys, older than every window) in every partition
        // lets the bounded read below reach every row written before.
        self.write_markers(broker, "TIMESTAMP '2000-01-01 00:00:00'");
        let expected = run(&format!("{EVENTS} SELECT {} AND {filter};", self.select));
        let held = run(&format!(
            "CREATE STREAM t ({}) {}, 'scan.startup.mode' = 'earliest-offset',
                 'scan.bounded.mode' = 'latest-offset');
             SELECT * FROM t WHERE {} >= 0;",
            self.columns(),
            self.with(broker),
            self.key
        ));
        common::assert_same_rows(&held, &expected);
    }

    /// Rows far in the future on many keys (so on every partition): they
    /// move every partition's watermark past the last window. The job
    /// leaves them out.
    fn write_flush(&self, broker: &str) {
        self.write_markers(broker, "TIMESTAMP '2030-01-01 00:00:00'");
    }

    /// Rows at `ts` on 40 negative keys (so on every partition), which the
    /// job leaves out.
    fn write_markers(&self, broker: &str, ts: &str) {
        let rows: Vec<String> = (1..=40).map(|k| format!("(-{k}, 0, {ts})")).collect();
        let written = run(&format!(
            "SET 'parallelism.default' = '1';
             CREATE TABLE out ({}) {});
             INSERT INTO out VALUES {};",
            self.columns(),
            self.with(broker),
            rows.join(", ")
        ));
        assert!(written.is_empty(), "{written:?}");
    }

    /// The job's stream over the topic, and the view without flush rows.
    fn job_stream(&self, broker: &str) -> String {
        format!(
            "CREATE STREAM {name}_topic ({columns}, WATERMARK FOR ts AS ts - INTERVAL '4' SECOND)
               {with}, 'scan.startup.mode' = 'earliest-offset', 'properties.session.timeout.ms' = '6000');
             CREATE VIEW {name} AS SELECT * FROM {name}_topic WHERE {key} >= 0;",
            name = self.name,
            columns = self.columns(),
            with = self.with(broker),
            key = self.key
        )
    }
}

/// What goes wrong mid-run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Death {
    /// The test sends the second process SIGKILL once the job is running.
    Killed,
    /// The second process aborts itself at this fail point of the
    /// checkpoint protocol, on the seventh time it passes there (a few
    /// epochs into its run).
    At(&'static str),
    /// Nobody dies: the checkpoint store (SeaweedFS, holding the
    /// checkpoints) stops answering for a while (SIGSTOP, then SIGCONT).
    StorePaused,
    /// Nobody dies: the broker (keeping its topics in a SQLite file) is
    /// SIGKILLed and started again a few seconds later.
    BrokerRestarted,
}

/// A job over some topics, and the columns of what it writes.
struct Scenario {
    topics: &'static [Topic],
    query: &'static str,
    output: &'static str,
}

impl Scenario {
    /// The file every process runs; checkpoints on `s3` when given.
    fn job(&self, broker: &str, dir: &Path, s3: Option<u16>) -> String {
        let checkpoints = match s3 {
            Some(_) => "s3://weir/checkpoints".to_string(),
            None => dir.join("checkpoints").display().to_string(),
        };
        let streams: String = self.topics.iter().map(|t| t.job_stream(broker)).collect();
        format!(
            "SET 'pipeline.name' = 'cluster-test';
             SET 'execution.checkpointing.interval' = '1s';
             SET 'execution.checkpointing.timeout' = '20s';
             SET 'state.checkpoints.dir' = '{checkpoints}';
             SET 'pipeline.max-parallelism' = '4';
             {streams}
             CREATE TABLE out ({output})
               WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'parquet');
             INSERT INTO out {query};",
            out = dir.join("out").display(),
            output = self.output,
            query = self.query,
        )
    }

    /// The query over the generator, in one process.
    fn reference(&self) -> Vec<String> {
        let views: String = self.topics.iter().map(Topic::generated_view).collect();
        run(&format!("{EVENTS} {views} {};", self.query))
    }

    /// The committed output, as sorted CSV rows.
    fn committed(&self, dir: &Path) -> Vec<String> {
        if !dir.join("out").exists() {
            return Vec::new();
        }
        run(&format!(
            "CREATE STREAM r ({}) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');
             SELECT * FROM r;",
            self.output,
            dir.join("out").display()
        ))
    }

    /// Waits until `done` holds of the committed rows; fails with the
    /// processes' logs after `limit`.
    fn wait_for(
        &self,
        dir: &Path,
        limit: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let started = Instant::now();
        loop {
            let rows = self.committed(dir);
            if done(&rows) {
                return rows;
            }
            assert!(
                started.elapsed() < limit,
                "waited {limit:?}: {} rows committed\n{}",
                rows.len(),
                logs(dir)
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Three processes, one killed mid-run, a fourth later: the committed
    /// output equals the one-process answer.
    fn survives_a_killed_process(&self) {
        self.survives(Death::Killed)
    }

    fn survives(&self, death: Death) {
        let topics: Vec<(&str, u32)> = self.topics.iter().map(|t| (t.name, t.partitions)).collect();
        let (root, store) = match death {
            Death::StorePaused => {
                let (root, store) = seaweed_in_tempdir();
                (root, Some(store))
            }
            _ => (tempfile::tempdir().unwrap(), None),
        };
        let storage = match death {
            Death::BrokerRestarted => {
                let kept = root.path().join("broker");
                std::fs::create_dir(&kept).unwrap();
                Storage::Sqlite(kept)
            }
            _ => Storage::Memory,
        };
        let mut broker = start_broker_on(&topics, storage);
        let root = KeptOnFailure(Some(root));
        let dir = root.path();
        // The checkpoints go to SeaweedFS when it is the store that stops.
        let s3 = store
            .as_ref()
            .filter(|_| death == Death::StorePaused)
            .map(|s| s.s3);
        std::fs::write(dir.join("job.sql"), self.job(&broker.address, dir, s3)).unwrap();
        let reference = self.reference();
        assert!(!reference.is_empty());

        for topic in self.topics {
            let first_half = format!("dateTime < {CUT}");
            topic.write(&broker.address, &first_half);
            topic.assert_holds(&broker.address, &first_half);
        }
        let mut processes = Processes(Vec::new());
        for name in ["p1", "p2", "p3"] {
            let fail_point = match death {
                Death::At(point) if name == "p2" => Some(point),
                _ => None,
            };
            processes.0.push(start_process(dir, name, fail_point, s3));
            std::thread::sleep(Duration::from_secs(1));
        }
        let started = Instant::now();
        while !["p1", "p2", "p3"].iter().all(|p| ran_tasks(dir, p)) {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the three processes did not share the tasks\n{}",
                logs(dir)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The first half's windows that closed are committed: the job runs.
        let first = self.wait_for(dir, Duration::from_secs(120), |rows| !rows.is_empty());
        assert!(first.len() < reference.len());

        // No goodbye to the group: its tasks move after the session
        // timeout, and every task rolls back to the last complete epoch.
        match death {
            Death::StorePaused => {
                let pid = store.as_ref().unwrap().child.id();
                let signal = |name: &str| common::signal(pid, name);
                signal("-STOP");
                std::thread::sleep(Duration::from_secs(8));
                signal("-CONT");
            }
            Death::BrokerRestarted => broker.restart(Duration::from_secs(5)),
            Death::Killed => processes.0[1].kill().unwrap(),
            Death::At(point) => {
                let what = format!("p2 did not crash at {point}");
                exit_of(&mut processes.0[1], Duration::from_secs(120), &what, dir);
                let log = std::fs::read_to_string(dir.join("p2.log")).unwrap();
                assert!(log.contains("fail point: crashing"), "{log}");
            }
        }
        if matches!(death, Death::Killed | Death::At(_)) {
            processes.0[1].wait().unwrap();
        }
        for topic in self.topics {
            topic.write(&broker.address, &format!("dateTime >= {CUT}"));
            topic.write_flush(&broker.address);
            // Both halves, each once: rows missing from the output are
            // then the job's doing.
            topic.assert_holds(&broker.address, "TRUE");
        }
        std::thread::sleep(Duration::from_secs(2));
        processes.0.push(start_process(dir, "p4", None, s3));

        let all = self.wait_for(dir, Duration::from_secs(180), |rows| {
            rows.len() >= reference.len()
        });
        // A few more epochs add nothing: no late duplicates.
        std::thread::sleep(Duration::from_secs(3));
        let settled = self.committed(dir);
        assert_eq!(all, settled, "the output changed after it was complete");
        // p4 joined after the others; its share comes with the rebalance
        // that follows its first heartbeat.
        let started = Instant::now();
        while !ran_tasks(dir, "p4") {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the process started last took no tasks\n{}",
                logs(dir)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        common::assert_same_rows(&settled, &reference);
    }
}

/// A `weir run --cluster` of the job, its logs in `dir`, armed to crash
/// at `fail_point`, its checkpoints on SeaweedFS's `s3` port when given.
fn start_process(dir: &Path, name: &str, fail_point: Option<&str>, s3: Option<u16>) -> Child {
    start_process_with(dir, name, fail_point, s3, &[])
}

/// [`start_process`] with more arguments to `weir` before `run`.
fn start_process_with(
    dir: &Path,
    name: &str,
    fail_point: Option<&str>,
    s3: Option<u16>,
    args: &[&str],
) -> Child {
    let log = File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut command = weir();
    command.args(args);
    if let Some(port) = s3 {
        command
            .env("AWS_ACCESS_KEY_ID", "weir")
            .env("AWS_SECRET_ACCESS_KEY", "weir")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"));
    }
    if let Some(point) = fail_point {
        command.env("FAILPOINTS", format!("{point}=6*off->return"));
    }
    command
        .args(["--log", "info", "run", "--cluster"])
        .arg(dir.join("job.sql"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit; fails with `what` and the processes' logs
/// after `limit`.
fn exit_of(child: &mut Child, limit: Duration, what: &str, dir: &Path) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < limit, "{what}\n{}", logs(dir));
        std::thread::sleep(Duration::from_millis(200));
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

/// The last lines of every process's log.
fn logs(dir: &Path) -> String {
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
    logs
}

/// A test's temp dir, kept (with every process's whole log) when the
/// test fails.
struct KeptOnFailure(Option<tempfile::TempDir>);

impl KeptOnFailure {
    fn path(&self) -> &Path {
        self.0.as_ref().map(|d| d.path()).unwrap_or(Path::new("."))
    }
}

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take().filter(|_| std::thread::panicking()) {
            eprintln!("the test's files are kept in {}", dir.keep().display());
        }
    }
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
fn a_window_aggregate_survives_a_killed_process_and_equals_one_process() {
    COUNTS.survives_a_killed_process();
}

#[test]
fn a_window_join_survives_a_killed_process_and_equals_one_process() {
    Scenario {
        topics: &[BIDS, AUCTIONS],
        query: "SELECT b.auction, b.price, a.seller, b.window_start
            FROM (SELECT * FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))) b
            JOIN (SELECT * FROM TABLE(TUMBLE(TABLE auctions, DESCRIPTOR(ts), INTERVAL '10' SECOND))) a
            ON b.auction = a.id AND b.window_start = a.window_start AND b.window_end = a.window_end",
        output: "auction BIGINT, price BIGINT, seller BIGINT, window_start TIMESTAMP(3)",
    }
    .survives_a_killed_process();
}

const COUNTS: Scenario = Scenario {
    topics: &[BIDS],
    query: "SELECT window_start, auction, count(*) AS n
        FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
        GROUP BY window_start, window_end, auction",
    output: "window_start TIMESTAMP(3), auction BIGINT, n BIGINT",
};

/// Killed with its snapshot of an epoch not yet written: the epoch never
/// completes; the base is the epoch before.
#[test]
fn a_process_killed_before_its_snapshot_loses_nothing() {
    COUNTS.survives(Death::At("cluster-before-snapshot"));
}

/// Killed after writing its snapshot, with others' still coming: the
/// epoch completes or is aborted when the generation closes.
#[test]
fn a_process_killed_during_a_checkpoint_loses_nothing() {
    COUNTS.survives(Death::At("cluster-after-snapshot"));
}

/// Killed after an epoch's manifest, before its sinks published it: the
/// task's next owner publishes it on restore.
#[test]
fn a_process_killed_after_a_checkpoint_before_publishing_loses_nothing() {
    COUNTS.survives(Death::At("cluster-before-publish"));
}

/// The checkpoint store stops answering for eight seconds mid-run: epochs
/// wait, nothing fails, nothing is lost or doubled.
#[test]
fn a_checkpoint_store_that_stops_answering_delays_but_loses_nothing() {
    COUNTS.survives(Death::StorePaused);
}

/// The broker is killed and restarted mid-run (its topics kept in a
/// SQLite file): clients reconnect, groups form again, and the output is
/// still exactly the one-process answer.
#[test]
fn a_broker_restart_delays_but_loses_nothing() {
    COUNTS.survives(Death::BrokerRestarted);
}

/// The labels of each line of `metric` on a Prometheus page, with the
/// line's value.
fn series(page: &str, metric: &str) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
    let prefix = format!("{metric}{{");
    page.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels = labels
                .split("\",")
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((key.to_string(), value.trim_end_matches('"').to_string()))
                })
                .collect();
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// Two processes share a job, each serving `/metrics`: every task of both
/// stages is assigned to exactly one of them (`weir_task_assigned`, its
/// own tasks), each shows the lag of every task of the job
/// (`weir_task_lag`) naming the process that runs it (as the processes
/// recorded it beside the generation's claims: Tansu describes no group's
/// assignments), and once the topic is read every source task's lag is 0.
#[test]
fn each_process_shows_where_every_task_runs_and_its_lag() {
    let broker = start_broker_on(&[(BIDS.name, BIDS.partitions)], Storage::Memory);
    let root = KeptOnFailure(Some(tempfile::tempdir().unwrap()));
    let dir = root.path();
    std::fs::write(dir.join("job.sql"), COUNTS.job(&broker.address, dir, None)).unwrap();
    BIDS.write(&broker.address, &format!("dateTime < {CUT}"));
    let ports = [common::broker::free_port(), common::broker::free_port()];
    let mut processes = Processes(Vec::new());
    for (name, port) in ["p1", "p2"].iter().zip(ports) {
        let address = format!("127.0.0.1:{port}");
        let args = ["--metrics-addr", address.as_str()];
        processes
            .0
            .push(start_process_with(dir, name, None, None, &args));
    }
    let all: std::collections::BTreeSet<(String, String)> = (0..2)
        .flat_map(|stage| {
            (0..BIDS.partitions).map(move |task| (stage.to_string(), task.to_string()))
        })
        .collect();
    let task = |labels: &std::collections::BTreeMap<String, String>| {
        (labels["stage"].clone(), labels["task"].clone())
    };
    let started = Instant::now();
    let mut last = Vec::new();
    loop {
        let pages: Vec<String> = ports.iter().map(|p| common::scrape(*p)).collect();
        // Who runs each task, by the processes' own word.
        let mut owner = std::collections::BTreeMap::new();
        let mut twice = false;
        for page in &pages {
            for (labels, _) in series(page, "weir_task_assigned") {
                twice |= owner
                    .insert(task(&labels), labels["process"].clone())
                    .is_some();
            }
        }
        let placed = !twice
            && owner
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                == all;
        // Every process's view of every task agrees with its owner, and
        // the source tasks have read everything.
        let agreed = placed
            && pages.iter().all(|page| {
                let lags = series(page, "weir_task_lag");
                lags.len() == all.len()
                    && lags.iter().all(|(labels, lag)| {
                        owner.get(&task(labels)) == Some(&labels["process"])
                            && (labels["stage"] != "0" || *lag == 0.0)
                    })
            });
        if agreed {
            break;
        }
        last = pages;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the processes' pages never agreed on the placement:\n{}\n{}",
            last.join("\n----\n"),
            logs(dir)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(last);
}

/// A job started again after its checkpoints were deleted, while its
/// repartition topic still holds the first run's records (which carry the
/// same generation numbers): the process refuses to start and names the
/// topic, instead of counting those records as the new run's.
#[test]
fn a_job_whose_checkpoints_are_gone_refuses_its_old_repartition_records() {
    let broker = start_broker_on(&[(BIDS.name, BIDS.partitions)], Storage::Memory);
    let root = KeptOnFailure(Some(tempfile::tempdir().unwrap()));
    let dir = root.path();
    std::fs::write(dir.join("job.sql"), COUNTS.job(&broker.address, dir, None)).unwrap();
    BIDS.write(&broker.address, &format!("dateTime < {CUT}"));
    let mut processes = Processes(vec![start_process(dir, "p1", None, None)]);
    COUNTS.wait_for(dir, Duration::from_secs(120), |rows| !rows.is_empty());
    processes.0[0].kill().unwrap();
    processes.0[0].wait().unwrap();
    std::fs::remove_dir_all(dir.join("checkpoints")).unwrap();

    let mut again = start_process(dir, "p2", None, None);
    let status = exit_of(
        &mut again,
        Duration::from_secs(60),
        "the process started",
        dir,
    );
    let log = std::fs::read_to_string(dir.join("p2.log")).unwrap();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("the repartition topics weir.cluster-test.1 hold records of an earlier run"),
        "{log}"
    );
    assert!(log.contains("set another 'pipeline.name'"), "{log}");
}
