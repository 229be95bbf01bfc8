//! Nexmark throughput: the built-in generator → query → blackhole, in
//! events per second. Run on purpose, in release mode:
//!
//! ```sh
//! cargo bench --bench nexmark                        # 10 M events per query
//! WEIR_BENCH_EVENTS=50000000 cargo bench --bench nexmark -- tumble
//! ```
//!
//! Environment: `WEIR_BENCH_EVENTS` (events per query), `WEIR_BENCH_PARALLELISM`
//! (default: cores), `WEIR_BENCH_CHECKPOINT_INTERVAL` (e.g. `1s`: checkpoint
//! to a fresh temporary directory), `WEIR_BENCH_METRICS=basic` (counters
//! only: no per-batch timing, histograms, hot keys or latency markers);
//! arguments filter queries by name.

/// The allocator the `weir` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

fn nexmark_file(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/nexmark-flink/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ddl(events: u64) -> String {
    let vars = [
        ("TPS", "10000000".to_string()),
        ("EVENTS_NUM", events.to_string()),
        ("PERSON_PROPORTION", "1".to_string()),
        ("AUCTION_PROPORTION", "3".to_string()),
        ("BID_PROPORTION", "46".to_string()),
        ("NEXMARK_TABLE", "datagen".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let text = format!(
        "{};\n{};",
        nexmark_file("ddl_gen.sql"),
        nexmark_file("ddl_views.sql")
    );
    weir::crates::sql::substitute_vars(&text, &vars).expect("placeholders")
}

fn windowed(name: &str, tvf: &str) -> (String, String) {
    (
        name.to_string(),
        format!(
            "CREATE TABLE out_{name} (auction BIGINT, n BIGINT) WITH ('connector' = 'blackhole');
             INSERT INTO out_{name} SELECT auction, count(*) FROM TABLE({tvf}) GROUP BY auction, window_start, window_end;"
        ),
    )
}

fn queries() -> Vec<(String, String)> {
    let mut queries: Vec<(String, String)> = ["q0", "q1", "q2", "q11"]
        .iter()
        .map(|q| (q.to_string(), nexmark_file(&format!("{q}.sql"))))
        .collect();
    queries.push(windowed(
        "tumble_10s",
        "TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND)",
    ));
    queries.push(windowed(
        "hop_10s_2s",
        "HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND)",
    ));
    queries.push(windowed(
        "hop_10s_100ms",
        "HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '100' MILLISECOND, INTERVAL '10' SECOND)",
    ));
    // Sampled aggregates (10 % of the bidders) against the exact ones.
    let per_window = "FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))";
    queries.push((
        "bidders_exact".to_string(),
        format!(
            "CREATE TABLE out_bidders_exact (w TIMESTAMP(3), bidders BIGINT, total BIGINT) WITH ('connector' = 'blackhole');
             INSERT INTO out_bidders_exact SELECT window_start, count(DISTINCT bidder), sum(price)
             {per_window} GROUP BY window_start, window_end;"
        ),
    ));
    queries.push((
        "bidders_sampled_10".to_string(),
        format!(
            "CREATE TABLE out_bidders_sampled (w TIMESTAMP(3), bidders DOUBLE, total DOUBLE) WITH ('connector' = 'blackhole');
             INSERT INTO out_bidders_sampled SELECT window_start, d['estimate'], s['estimate'] FROM (
               SELECT window_start, SAMPLED_COUNT_DISTINCT(bidder, 0.1) AS d, SAMPLED_SUM(price, bidder, 0.1) AS s
               {per_window} WHERE SAMPLE_KEY(bidder, 0.1) GROUP BY window_start, window_end);"
        ),
    ));
    queries
}

/// Peak resident set size of this process, from /proc (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Session settings from the environment: parallelism, checkpoints, metrics.
fn settings(parallelism: usize, query: &str) -> Vec<(&'static str, String)> {
    let mut settings = vec![("parallelism.default", parallelism.to_string())];
    if let Ok(interval) = std::env::var("WEIR_BENCH_CHECKPOINT_INTERVAL") {
        let dir = std::env::temp_dir().join(format!("weir-bench-{}-{query}", std::process::id()));
        // A leftover checkpoint would be restored instead of starting over.
        let _ = std::fs::remove_dir_all(&dir);
        settings.push(("execution.checkpointing.interval", interval));
        settings.push(("state.checkpoints.dir", dir.display().to_string()));
    }
    if std::env::var("WEIR_BENCH_METRICS").as_deref() == Ok("basic") {
        settings.push(("metrics.detailed", "false".into()));
        settings.push(("metrics.latency.interval", "0".into()));
    }
    settings
}

fn main() {
    let events: u64 = std::env::var("WEIR_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parallelism: usize = std::env::var("WEIR_BENCH_PARALLELISM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cores);
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("Nexmark, {events} events per query, parallelism {parallelism}, {cores} cores");
    for (key, value) in settings(parallelism, "") {
        println!("  {key} = {value}");
    }
    println!(
        "{:<16} {:>10} {:>14} {:>18}",
        "query", "seconds", "events/s", "events/s/core"
    );
    for (name, sql) in queries() {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let elapsed = runtime.block_on(async {
            let mut session = weir::Session::new();
            for (key, value) in settings(parallelism, &name) {
                session.set(key, &value).expect("setting");
            }
            session.sql(&ddl(events)).await.expect("ddl");
            let start = Instant::now();
            for output in session
                .sql(&sql)
                .await
                .unwrap_or_else(|e| panic!("{}", e.render()))
            {
                if let weir::Output::Job(job) = output {
                    job.wait()
                        .await
                        .unwrap_or_else(|e| panic!("{}", e.render()));
                }
            }
            start.elapsed()
        });
        let rate = events as f64 / elapsed.as_secs_f64();
        println!(
            "{:<16} {:>10.2} {:>14.0} {:>18.0}",
            name,
            elapsed.as_secs_f64(),
            rate,
            rate / parallelism.min(cores) as f64
        );
    }
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS: {rss:.0} MiB");
    }
}
