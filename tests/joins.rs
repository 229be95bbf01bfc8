//! Regular joins against an independent oracle: two streams of random,
//! out-of-order rows (duplicate keys, one hot key, NULL keys and values)
//! joined by Weir at several parallelisms and batch sizes, and by a
//! DataFusion batch join over the same rows.

mod common;

use std::sync::Arc;

use common::*;
use datafusion::datasource::MemTable;
use proptest::prelude::*;

/// `SELECT`s joining `l` and `r`: plain keys, a residual condition, and a
/// filter on each side below the join.
const QUERIES: &[&str] = &[
    "SELECT l.k, l.v, r.v AS rv, l.ts, r.ts AS rts FROM l JOIN r ON l.k = r.k",
    "SELECT l.k, l.v, r.v AS rv FROM l JOIN r ON l.k = r.k AND l.v <= r.v",
    "SELECT l.k, r.v FROM l JOIN r ON l.k = r.k WHERE l.v > 10 AND r.v < 90",
    "SELECT l.k, l.v FROM l JOIN r ON l.k = r.k AND l.v = r.v",
];

/// The DDL of stream `name` over `dir`.
fn ddl(name: &str, dir: &std::path::Path, batch_size: usize) -> String {
    stream_ddl(dir, 10, batch_size, "").replacen(
        "CREATE STREAM t ",
        &format!("CREATE STREAM {name} "),
        1,
    )
}

async fn oracle(left: &[Event], right: &[Event], sql: &str) -> Vec<String> {
    let ctx = datafusion::prelude::SessionContext::new();
    for (name, events) in [("l", left), ("r", right)] {
        let batch = events_batch(events);
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table(name, Arc::new(table)).unwrap();
    }
    canonical_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

/// Two streams' files, from seeds `seeds` in `splits` files each, and
/// their rows.
fn two_streams(
    seeds: [u64; 2],
    splits: [usize; 2],
    shape: Shape,
) -> (
    (tempfile::TempDir, tempfile::TempDir),
    Vec<Event>,
    Vec<Event>,
) {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let left = generate(seeds[0], splits[0], shape);
    let right = generate(seeds[1], splits[1], shape);
    write_splits(dirs.0.path(), &left);
    write_splits(dirs.1.path(), &right);
    let flat = |s: Vec<Vec<Event>>| s.into_iter().flatten().collect();
    (dirs, flat(left), flat(right))
}

/// `query` over streams `l` and `r` from `dirs`, at `batch_size` and
/// `parallelism`.
async fn run_join(
    dirs: &(tempfile::TempDir, tempfile::TempDir),
    batch_size: usize,
    parallelism: usize,
    query: &str,
) -> Run {
    let setup = [
        format!("SET 'parallelism.default' = '{parallelism}'"),
        ddl("l", dirs.0.path(), batch_size),
        ddl("r", dirs.1.path(), batch_size),
    ];
    run_weir(&setup, query).await
}

/// Every query at each (batch size, parallelism) equals the oracle.
fn check(seed: u64, shape: Shape, runs: &[(usize, usize)]) {
    let (dirs, left, right) = two_streams([seed, seed + 1], [2, 3], shape);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for query in QUERIES {
            let expected = oracle(&left, &right, query).await;
            for (batch_size, parallelism) in runs {
                let run = run_join(&dirs, *batch_size, *parallelism, query).await;
                assert_eq!(
                    run.rows, expected,
                    "{query} at batch size {batch_size}, parallelism {parallelism}"
                );
            }
        }
    });
}

#[test]
fn joins_equal_a_batch_join_with_a_hot_key_and_nulls() {
    let shape = Shape {
        rows: 300,
        keys: 12,
        hot: 0.4,
        nulls: 0.1,
        step: 5,
        jitter: 200,
    };
    check(7, shape, &[(1, 1), (13, 4), (8192, 2)]);
}

/// Window joins of two window table functions' rows, of every kind: the
/// rows of one 50 ms window with equal keys meet, and none of another
/// window; outer rows without a match come padded with NULLs, semi and anti
/// joins give one side's rows. The rows are in order in each file, so none
/// is late at the join.
#[test]
fn window_joins_of_every_kind_equal_a_batch_join() {
    let shape = Shape {
        rows: 400,
        keys: 6,
        hot: 0.3,
        nulls: 0.1,
        step: 4,
        jitter: 0,
    };
    let (dirs, left, right) = two_streams([11, 12], [2, 2], shape);
    let tvf = |t: &str| {
        format!(
            "(SELECT * FROM TABLE(TUMBLE(TABLE {t}, DESCRIPTOR(ts), INTERVAL '50' MILLISECOND)))"
        )
    };
    let binned = |t: &str| {
        format!("(SELECT *, date_bin(INTERVAL '50' MILLISECOND, ts, TIMESTAMP '1970-01-01 00:00:00') AS window_start FROM {t})")
    };
    let on = "l.k = r.k AND l.window_start = r.window_start";
    let pairs = "l.k, l.v, r.k AS rk, r.v AS rv, l.window_start, r.window_start AS rws";
    let cases = [
        (format!("SELECT {pairs} FROM {{l}} l JOIN {{r}} r ON {on} AND l.window_end = r.window_end"), format!("SELECT {pairs} FROM {{l}} l JOIN {{r}} r ON {on}")),
        (format!("SELECT {pairs} FROM {{l}} l LEFT JOIN {{r}} r ON {on} AND l.window_end = r.window_end"), format!("SELECT {pairs} FROM {{l}} l LEFT JOIN {{r}} r ON {on}")),
        (format!("SELECT {pairs} FROM {{l}} l RIGHT JOIN {{r}} r ON {on} AND l.window_end = r.window_end"), format!("SELECT {pairs} FROM {{l}} l RIGHT JOIN {{r}} r ON {on}")),
        (format!("SELECT {pairs} FROM {{l}} l FULL JOIN {{r}} r ON {on} AND l.window_end = r.window_end AND l.v < r.v"), format!("SELECT {pairs} FROM {{l}} l FULL JOIN {{r}} r ON {on} AND l.v < r.v")),
        (
            "SELECT l.k, l.v, l.window_start FROM {l} l WHERE EXISTS (SELECT 1 FROM {r} r WHERE l.k = r.k AND l.window_start = r.window_start AND l.window_end = r.window_end)".to_string(),
            "SELECT l.k, l.v, l.window_start FROM {l} l WHERE EXISTS (SELECT 1 FROM {r} r WHERE l.k = r.k AND l.window_start = r.window_start)".to_string(),
        ),
        (
            "SELECT l.k, l.v, l.window_start FROM {l} l WHERE NOT EXISTS (SELECT 1 FROM {r} r WHERE l.k = r.k AND l.window_start = r.window_start AND l.window_end = r.window_end)".to_string(),
            "SELECT l.k, l.v, l.window_start FROM {l} l WHERE NOT EXISTS (SELECT 1 FROM {r} r WHERE l.k = r.k AND l.window_start = r.window_start)".to_string(),
        ),
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for (weir_sql, oracle_sql) in &cases {
            let query = weir_sql.replace("{l}", &tvf("l")).replace("{r}", &tvf("r"));
            let oracle_sql = oracle_sql
                .replace("{l}", &binned("l"))
                .replace("{r}", &binned("r"));
            let expected = oracle(&left, &right, &oracle_sql).await;
            assert!(!expected.is_empty(), "{oracle_sql}");
            for parallelism in [1, 3] {
                let run = run_join(&dirs, 16, parallelism, &query).await;
                assert_eq!(run.rows, expected, "{query} at parallelism {parallelism}");
                assert_eq!(run.late_rows, 0);
            }
        }
    });
}

/// Interval joins: rows whose times are within a bound of each other meet;
/// a LEFT interval join pads the left rows that found none once the
/// watermark passes their bound. The rows are in order in each file (no row
/// is later than the watermark), so state ends exactly when it can.
#[test]
fn interval_joins_equal_a_batch_join() {
    let shape = Shape {
        rows: 300,
        keys: 5,
        hot: 0.3,
        nulls: 0.1,
        step: 3,
        jitter: 0,
    };
    let (dirs, left, right) = two_streams([21, 22], [2, 2], shape);
    let select = "SELECT l.k, l.v, r.v AS rv, l.ts, r.ts AS rts FROM l";
    let queries = [
        format!("{select} JOIN r ON l.k = r.k AND l.ts BETWEEN r.ts - INTERVAL '20' MILLISECOND AND r.ts + INTERVAL '10' MILLISECOND"),
        format!("{select} JOIN r ON l.k = r.k AND l.ts > r.ts AND l.ts <= r.ts + INTERVAL '15' MILLISECOND AND l.v <> r.v"),
        format!("{select} LEFT JOIN r ON l.k = r.k AND r.ts >= l.ts - INTERVAL '5' MILLISECOND AND r.ts < l.ts + INTERVAL '5' MILLISECOND"),
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for query in &queries {
            let expected = oracle(&left, &right, query).await;
            assert!(!expected.is_empty(), "{query}");
            for parallelism in [1, 3] {
                let run = run_join(&dirs, 16, parallelism, query).await;
                assert_eq!(run.rows, expected, "{query} at parallelism {parallelism}");
            }
        }
    });
}

/// A window over an interval join's result: the join holds back the
/// watermark by its bound, so the rows it emits late in event time are not
/// late for the window, and every pair is counted in its window.
#[test]
fn a_window_after_an_interval_join_counts_every_pair() {
    let shape = Shape {
        rows: 300,
        keys: 4,
        hot: 0.2,
        nulls: 0.0,
        step: 3,
        jitter: 0,
    };
    let (dirs, left, right) = two_streams([31, 32], [1, 1], shape);
    let pairs = "SELECT l.k, l.ts FROM l JOIN r ON l.k = r.k AND l.ts BETWEEN r.ts - INTERVAL '40' MILLISECOND AND r.ts";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let expected = oracle(
            &left,
            &right,
            &format!(
                "SELECT date_bin(INTERVAL '20' MILLISECOND, ts, TIMESTAMP '1970-01-01 00:00:00') AS window_start, count(*) AS n
                 FROM ({pairs}) GROUP BY 1"
            ),
        )
        .await;
        assert!(expected.len() > 5);
        let setup = [
            ddl("l", dirs.0.path(), 16),
            ddl("r", dirs.1.path(), 16),
            format!("CREATE VIEW j AS {pairs}"),
        ];
        let run = run_weir(
            &setup,
            "SELECT window_start, count(*) AS n FROM TABLE(TUMBLE(TABLE j, DESCRIPTOR(ts), INTERVAL '20' MILLISECOND)) GROUP BY window_start, window_end",
        )
        .await;
        assert_eq!(run.late_rows, 0);
        assert_eq!(run.rows, expected);
    });
}

/// A join of a join: three streams, each pair on its own key.
#[test]
fn a_join_after_a_join_equals_a_batch_join() {
    let shape = Shape {
        rows: 200,
        keys: 6,
        hot: 0.3,
        nulls: 0.1,
        step: 3,
        jitter: 50,
    };
    let (dirs, left, right) = two_streams([41, 42], [2, 1], shape);
    let third = tempfile::tempdir().unwrap();
    let extra = generate(43, 1, shape);
    write_splits(third.path(), &extra);
    let extra: Vec<Event> = extra.into_iter().flatten().collect();
    let query = "SELECT l.k, l.v, r.v AS rv, x.v AS xv FROM l JOIN r ON l.k = r.k JOIN x ON r.k = x.k AND x.v > l.v + r.v";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        for (name, events) in [("l", &left), ("r", &right), ("x", &extra)] {
            let batch = events_batch(events);
            let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
            ctx.register_table(name, Arc::new(table)).unwrap();
        }
        let expected = canonical_rows(&ctx.sql(query).await.unwrap().collect().await.unwrap());
        assert!(!expected.is_empty());
        let setup = [
            "SET 'parallelism.default' = '2'".to_string(),
            ddl("l", dirs.0.path(), 9),
            ddl("r", dirs.1.path(), 9),
            ddl("x", third.path(), 9),
        ];
        let run = run_weir(&setup, query).await;
        assert_eq!(run.rows, expected);
    });
}

#[test]
fn an_empty_side_joins_to_nothing() {
    let shape = Shape {
        rows: 0,
        keys: 4,
        hot: 0.0,
        nulls: 0.0,
        step: 5,
        jitter: 0,
    };
    let left = generate(3, 1, Shape { rows: 50, ..shape });
    let right = generate(4, 1, shape);
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_splits(dirs.0.path(), &left);
    write_splits(dirs.1.path(), &right);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let run = runtime.block_on(run_weir(
        &[ddl("l", dirs.0.path(), 7), ddl("r", dirs.1.path(), 7)],
        QUERIES[0],
    ));
    assert!(run.rows.is_empty(), "{:?}", run.rows);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, .. ProptestConfig::default() })]

    /// Random seeds, key counts and hot-key shares.
    #[test]
    fn random_inputs_join_as_the_oracle(seed in 0u64..1_000_000, keys in 1i64..20, hot in 0.0f64..0.9) {
        let shape = Shape { rows: 150, keys, hot, nulls: 0.15, step: 3, jitter: 100 };
        check(seed, shape, &[(5, 3)]);
    }
}

/// The late rows of a window join over out-of-order input go to their
/// stream's late-data output, counted; the join equals a batch join of
/// every row but those (which rows are late depends on how the two
/// streams interleave, so the late-data output is the record of it).
#[test]
fn late_rows_of_a_window_join_go_to_the_late_data_output() {
    let shape = Shape {
        rows: 300,
        keys: 5,
        hot: 0.3,
        nulls: 0.0,
        step: 3,
        jitter: 150,
    };
    let (dirs, left, right) = two_streams([51, 52], [1, 1], shape);
    let late_dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let stream = |name: &str, dir: &std::path::Path, late: &std::path::Path| {
        stream_ddl(
            dir,
            0,
            16,
            &format!(", 'late-data.path' = '{}'", late.display()),
        )
        .replacen("CREATE STREAM t ", &format!("CREATE STREAM {name} "), 1)
    };
    let tvf = |t: &str| {
        format!(
            "(SELECT * FROM TABLE(TUMBLE(TABLE {t}, DESCRIPTOR(ts), INTERVAL '30' MILLISECOND)))"
        )
    };
    let query = format!(
        "SELECT l.k, l.v, r.v AS rv, l.window_start FROM {} l JOIN {} r
         ON l.k = r.k AND l.window_start = r.window_start AND l.window_end = r.window_end",
        tvf("l"),
        tvf("r")
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let setup = [
            "SET 'parallelism.default' = '1'".to_string(),
            stream("l", dirs.0.path(), late_dirs.0.path()),
            stream("r", dirs.1.path(), late_dirs.1.path()),
        ];
        let run = run_weir(&setup, &query).await;
        // The late rows each side wrote: (k, v, window_start) of the rows
        // dropped (the query reads no more of them).
        let late_of = |dir: &std::path::Path| -> Vec<(i64, i64, String)> {
            let mut rows = Vec::new();
            for file in std::fs::read_dir(dir).unwrap() {
                let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert!(v["reason"].as_str().unwrap().starts_with("late"), "{v}");
                    let row = &v["row"];
                    rows.push((
                        row["k"].as_i64().unwrap(),
                        row["v"].as_i64().unwrap_or(i64::MIN),
                        row["window_start"].as_str().unwrap().to_string(),
                    ));
                }
            }
            rows
        };
        let (late_left, late_right) = (late_of(late_dirs.0.path()), late_of(late_dirs.1.path()));
        assert_eq!(run.late_rows as usize, late_left.len() + late_right.len());
        assert!(run.late_rows > 0, "the jitter makes some rows late");
        // Every event but one late row of each (k, v, window start).
        let keep = |events: &[Event], late: &[(i64, i64, String)]| -> Vec<Event> {
            let mut late = late.to_vec();
            events
                .iter()
                .filter(|e| {
                    let start = chrono::DateTime::from_timestamp_millis(e.ts - e.ts.rem_euclid(30))
                        .unwrap()
                        .naive_utc()
                        .format("%Y-%m-%dT%H:%M:%S%.3f")
                        .to_string();
                    let row = (e.key.unwrap(), e.value.unwrap_or(i64::MIN), start);
                    match late.iter().position(|l| *l == row) {
                        Some(i) => {
                            late.remove(i);
                            false
                        }
                        None => true,
                    }
                })
                .copied()
                .collect()
        };
        let binned = |t: &str| {
            format!("(SELECT *, date_bin(INTERVAL '30' MILLISECOND, ts, TIMESTAMP '1970-01-01 00:00:00') AS window_start FROM {t})")
        };
        let expected = oracle(
            &keep(&left, &late_left),
            &keep(&right, &late_right),
            &format!(
                "SELECT l.k, l.v, r.v AS rv, l.window_start FROM {} l JOIN {} r ON l.k = r.k AND l.window_start = r.window_start",
                binned("l"),
                binned("r")
            ),
        )
        .await;
        assert_eq!(run.rows, expected);
    });
}

/// A join's state is in the metrics per input side: the Prometheus text,
/// `weir_metrics.operators` and `DESCRIBE JOB` show each side's rows.
#[test]
fn join_state_is_measured_per_side() {
    let shape = Shape {
        rows: 100,
        keys: 6,
        hot: 0.3,
        nulls: 0.1,
        step: 3,
        jitter: 0,
    };
    let (dirs, left, right) = two_streams([61, 62], [1, 2], shape);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut session = weir::Session::new();
        session.set("parallelism.default", "2").unwrap();
        for sql in [ddl("l", dirs.0.path(), 8), ddl("r", dirs.1.path(), 8)] {
            session.sql(&sql).await.unwrap();
        }
        session
            .sql("CREATE TABLE out (k BIGINT, v BIGINT) WITH ('connector' = 'blackhole')")
            .await
            .unwrap();
        let job = session
            .submit("INSERT INTO out SELECT l.k, r.v FROM l JOIN r ON l.k = r.k")
            .await
            .unwrap();
        job.wait().await.unwrap();
        // A regular join of bounded inputs keeps every row with a key.
        let keyed = |events: &[Event]| events.iter().filter(|e| e.key.is_some()).count() as u64;
        let metrics = job.metrics();
        let join = metrics
            .by_operator()
            .into_iter()
            .find(|o| o.operator == "join")
            .unwrap();
        let sides = join.state_sides.unwrap();
        assert_eq!(
            (sides[0].rows, sides[1].rows),
            (keyed(&left), keyed(&right))
        );
        assert_eq!(join.state_rows, keyed(&left) + keyed(&right));
        let text = weir::prometheus_text(std::slice::from_ref(&job)).unwrap();
        let left_rows: f64 = text
            .lines()
            .filter(|l| l.starts_with("weir_join_state_rows{") && l.contains("side=\"left\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert_eq!(left_rows as u64, keyed(&left));
        let report = weir::job_metrics_table(&job);
        let shown = datafusion::arrow::util::pretty::pretty_format_batches(&[report])
            .unwrap()
            .to_string();
        assert!(
            shown.contains(&format!("{} / {} rows", keyed(&left), keyed(&right))),
            "{shown}"
        );
    });
}
