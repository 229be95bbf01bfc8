//! Crashes: a job writing windows to Parquet with exactly-once delivery is
//! killed with SIGKILL at random moments and restarted from its
//! checkpoints; the committed output must equal the oracle's, with no row
//! lost and none doubled. Once with the generator's clock pinned
//! (`'base-time'`) and once on its default, the wall clock at the first
//! start, which a restored run must keep.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use rand::{Rng, SeedableRng};

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

const EVENTS: u64 = 150_000;

/// The generator's DDL; without `base_time` it runs on the wall clock.
fn events_ddl(base_time: Option<u64>) -> String {
    let clock = base_time.map_or(String::new(), |t| format!("'base-time' = '{t}', "));
    format!(
        "CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '{EVENTS}', 'scan.rate-limit' = '40000',
           {clock}'first-event.rate' = '10000');
         CREATE VIEW bid AS SELECT bid.auction, dateTime FROM events WHERE event_type = 2;"
    )
}

fn job_sql(checkpoints: &Path, out: &Path, base_time: Option<u64>) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '700ms';
         SET 'state.checkpoints.dir' = '{}';
         SET 'pipeline.name' = 'crash-test';
         SET 'parallelism.default' = '2';
         {}
         CREATE TABLE counts (window_start TIMESTAMP(3), auction BIGINT, n BIGINT)
           WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet', 'sink.delivery' = 'exactly-once',
                   'sink.rolling-policy.file-size' = '1kb');
         INSERT INTO counts
         SELECT window_start, auction, count(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '100' MILLISECOND))
         GROUP BY window_start, window_end, auction;",
        checkpoints.display(),
        events_ddl(base_time),
        out.display()
    )
}

fn start(sql: &Path, log: &Path) -> Child {
    weir()
        .args(["--log", "weir_engine=info,weir_connectors=info", "run"])
        .arg(sql)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Sorted rows of the Parquet files directly in `dir` (not in `_staging`).
async fn committed_rows(ctx: &SessionContext, dir: &Path, sql: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no committed files in {}", dir.display());
    let mut batches = Vec::new();
    for file in files {
        batches.extend(
            ctx.read_parquet(file, ParquetReadOptions::default())
                .await
                .unwrap()
                .collect()
                .await
                .unwrap(),
        );
    }
    let table =
        datafusion::datasource::MemTable::try_new(batches[0].schema(), vec![batches]).unwrap();
    ctx.register_table("committed", std::sync::Arc::new(table))
        .unwrap();
    let rows = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&rows)
        .unwrap()
        .to_string();
    text.lines().map(str::to_string).collect()
}

/// The generator clocks a run's log reports, in order: each subtask's at
/// its start, then the restored one where it restores a checkpoint.
fn base_times(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split("base time ").nth(1))
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Runs the job in `sql`, killing it with SIGKILL at random moments and
/// restarting it, until a run finishes; asserts it was killed mid-way at
/// least twice and restored from a checkpoint. Returns the runs' logs.
fn kill_until_done(root: &Path, sql: &Path) -> Vec<String> {
    // Kill the job at random moments, restarting it each time.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let mut kills = 0;
    let mut finished = false;
    for round in 0..6 {
        let log = root.join(format!("run-{round}.log"));
        let mut child = start(sql, &log);
        let wait = Duration::from_millis(rng.random_range(400..1500));
        let started = Instant::now();
        while started.elapsed() < wait {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(
                    status.success(),
                    "run {round} failed: {}",
                    std::fs::read_to_string(&log).unwrap()
                );
                finished = true;
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    if !finished {
        let log = root.join("final.log");
        let status = start(sql, &log).wait().unwrap();
        assert!(
            status.success(),
            "final run failed: {}",
            std::fs::read_to_string(&log).unwrap()
        );
    }
    eprintln!("kills: {kills}");
    assert!(
        kills >= 2,
        "the job must have been killed mid-way ({kills} kills)"
    );
    let logs: Vec<String> = (0..6)
        .filter_map(|r| std::fs::read_to_string(root.join(format!("run-{r}.log"))).ok())
        .chain(std::fs::read_to_string(root.join("final.log")).ok())
        .collect();
    let restored = logs.iter().filter(|log| log.contains("restoring")).count();
    eprintln!("restored runs: {restored}");
    assert!(restored >= 1, "later runs must restore from a checkpoint");
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_lose_and_double_nothing() {
    crash_and_compare(Some(1_700_000_000_000)).await;
}

/// Without `'base-time'`, a restored generator continues on the clock of
/// the run it restores, not on its own start time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_keep_the_generator_clock() {
    crash_and_compare(None).await;
}

/// A temporary root with the job's checkpoint, output and oracle folders.
fn job_dirs() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let root = tempfile::tempdir().unwrap();
    let (checkpoints, out, raw) = (
        root.path().join("checkpoints"),
        root.path().join("out"),
        root.path().join("raw"),
    );
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&raw).unwrap();
    (root, checkpoints, out, raw)
}

async fn crash_and_compare(base_time: Option<u64>) {
    let (root, checkpoints, out, raw) = job_dirs();
    let sql = root.path().join("job.sql");
    std::fs::write(&sql, job_sql(&checkpoints, &out, base_time)).unwrap();

    let logs = kill_until_done(root.path(), &sql);
    // The clock the committed output was generated on: the one the last
    // run ended with (its own, or the one it restored).
    let last = logs.last().unwrap();
    let clocks = base_times(last);
    assert!(
        !clocks.is_empty(),
        "the run logs its generator clock: {last}"
    );
    let clock = *clocks.last().unwrap();
    if let Some(pinned) = base_time {
        assert_eq!(clock, pinned);
    } else if last.contains("restoring") {
        assert_ne!(
            clocks.first(),
            clocks.last(),
            "a restored run starts on its own clock and goes back to the checkpoint's"
        );
    }

    // The oracle: the same bids, dumped in one uninterrupted run, counted
    // per 1 s window by a DataFusion batch query.
    let dump = root.path().join("dump.sql");
    std::fs::write(
        &dump,
        format!(
            "{}
             CREATE TABLE raw (auction BIGINT, dateTime TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');
             INSERT INTO raw SELECT auction, dateTime FROM bid;",
            events_ddl(Some(clock)).replace("'scan.rate-limit' = '40000',", ""),
            raw.display()
        ),
    )
    .unwrap();
    assert!(weir().arg("run").arg(&dump).status().unwrap().success());
    let mut config = SessionConfig::new();
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let ctx = SessionContext::new_with_config(config);
    ctx.register_parquet("raw", raw.to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap();
    assert_committed_equal(
        &ctx,
        &out,
        "SELECT date_bin(INTERVAL '100' MILLISECOND, dateTime, TIMESTAMP '1970-01-01 00:00:00') AS window_start, auction, count(*) AS n
         FROM raw GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT window_start, auction, n FROM committed ORDER BY 1, 2",
        100,
    )
    .await;
}

/// The committed rows of `out` (as `committed_sql` orders them) equal the
/// oracle's (`oracle_sql`), and there are more than `at_least`.
async fn assert_committed_equal(
    ctx: &SessionContext,
    out: &Path,
    oracle_sql: &str,
    committed_sql: &str,
    at_least: usize,
) {
    let expected = ctx.sql(oracle_sql).await.unwrap().collect().await.unwrap();
    let expected = datafusion::arrow::util::pretty::pretty_format_batches(&expected)
        .unwrap()
        .to_string();
    let expected: Vec<String> = expected.lines().map(str::to_string).collect();
    let actual = committed_rows(ctx, out, committed_sql).await;
    assert!(expected.len() > at_least, "{} rows", expected.len());
    assert_eq!(actual.len(), expected.len(), "row count");
    assert_eq!(actual, expected);
}

/// A regular join (every bid with its auction) writing exactly-once files:
/// both sides' stored rows are in the checkpoints, so a restored run
/// neither loses a match nor makes one twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_a_join_job_and_restart_lose_and_double_nothing() {
    let (root, checkpoints, out, raw) = job_dirs();
    let clock = 1_700_000_000_000;
    let views = "CREATE VIEW bids AS SELECT bid.auction, bid.price FROM events WHERE event_type = 2;
                 CREATE VIEW auctions AS SELECT auction.id, auction.category FROM events WHERE event_type = 1;";
    let sql = root.path().join("job.sql");
    std::fs::write(
        &sql,
        format!(
            "SET 'execution.checkpointing.interval' = '700ms';
             SET 'state.checkpoints.dir' = '{}';
             SET 'pipeline.name' = 'join-crash-test';
             SET 'parallelism.default' = '2';
             {}
             {views}
             CREATE TABLE joined (auction BIGINT, price BIGINT, category BIGINT)
               WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet', 'sink.delivery' = 'exactly-once',
                       'sink.rolling-policy.file-size' = '1kb');
             INSERT INTO joined SELECT B.auction, B.price, A.category FROM bids B JOIN auctions A ON B.auction = A.id;",
            checkpoints.display(),
            events_ddl(Some(clock)),
            out.display()
        ),
    )
    .unwrap();
    kill_until_done(root.path(), &sql);

    // The oracle: the same events dumped in one uninterrupted run, joined
    // by a DataFusion batch query.
    let dump = root.path().join("dump.sql");
    std::fs::write(
        &dump,
        format!(
            "{}
             {views}
             CREATE TABLE raw_bids (auction BIGINT, price BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}/bids', 'format' = 'parquet');
             CREATE TABLE raw_auctions (id BIGINT, category BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}/auctions', 'format' = 'parquet');
             INSERT INTO raw_bids SELECT * FROM bids;
             INSERT INTO raw_auctions SELECT * FROM auctions;",
            events_ddl(Some(clock)).replace("'scan.rate-limit' = '40000',", ""),
            raw.display(),
            raw.display()
        ),
    )
    .unwrap();
    assert!(weir().arg("run").arg(&dump).status().unwrap().success());
    let ctx = SessionContext::new();
    for table in ["bids", "auctions"] {
        let path = raw.join(table);
        ctx.register_parquet(table, path.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
    }
    assert_committed_equal(
        &ctx,
        &out,
        "SELECT B.auction, B.price, A.category FROM bids B JOIN auctions A ON B.auction = A.id
         ORDER BY 1, 2, 3",
        "SELECT auction, price, category FROM committed ORDER BY 1, 2, 3",
        1000,
    )
    .await;
}
