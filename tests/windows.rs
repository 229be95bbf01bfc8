//! Window results against an independent oracle: the same rows, with late
//! ones removed by the per-row watermark rule, aggregated by a DataFusion
//! batch query. Out-of-order input from random seeds, several keys, one hot
//! key, nulls; batch sizes 1, 7 and 8192; parallelism 1 and 4; files
//! decoded on one core and on several.

mod common;

use common::*;
use proptest::prelude::*;

const AGGREGATES: &str = "count(*) AS n, count(v) AS nv, sum(v) AS s, min(v) AS lo, max(v) AS hi, avg(v) AS a, avg(CAST(v AS DOUBLE) * CAST(1 AS DOUBLE)) AS af, count(DISTINCT v) AS d";

fn weir_query(tvf: &str) -> String {
    format!("SELECT window_start, window_end, k, {AGGREGATES} FROM TABLE({tvf}) GROUP BY window_start, window_end, k")
}

/// The same aggregates; Flink's AVG of a BIGINT is the truncated quotient.
fn oracle_query() -> String {
    let aggregates = AGGREGATES.replace("avg(v) AS a", "sum(v) / count(v) AS a");
    format!("SELECT window_start, window_end, k, {aggregates} FROM w GROUP BY window_start, window_end, k")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs the TVF query over `splits` at each batch size and parallelism and
/// checks every run against the oracle.
/// Returns the number of rows late for every window.
fn check(
    splits: &[Vec<Event>],
    delay: i64,
    tvf: &str,
    windows: impl Fn(i64) -> Vec<(i64, i64)>,
    runs: &[(usize, usize)],
) -> u64 {
    let (pairs, late) = on_time_pairs(splits, delay, windows);
    let rt = runtime();
    let expected = rt.block_on(oracle(&pairs, &oracle_query()));
    assert!(!expected.is_empty());
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), splits);
    for &(batch_size, parallelism) in runs {
        // One subtask decodes on one core, four decode three chunks at once:
        // the rows, row watermarks and late rows must not change.
        let decode = if parallelism == 1 { 1 } else { 3 };
        let setup = vec![
            format!("SET 'parallelism.default' = '{parallelism}'"),
            stream_ddl(
                dir.path(),
                delay,
                batch_size,
                &format!(", 'scan.parallel-decode' = '{decode}'"),
            ),
        ];
        let run = rt.block_on(run_weir(&setup, &weir_query(tvf)));
        assert_eq!(
            run.rows, expected,
            "batch size {batch_size}, parallelism {parallelism}"
        );
        assert_eq!(
            run.late_rows, late,
            "late rows, batch size {batch_size}, parallelism {parallelism}"
        );
    }
    late
}

const SHAPE: Shape = Shape {
    rows: 400,
    keys: 12,
    hot: 0.3,
    nulls: 0.05,
    step: 7,
    jitter: 60,
};

#[test]
fn tumble_matches_oracle_at_every_batch_size_and_parallelism() {
    let splits = generate(7, 3, SHAPE);
    let late = check(
        &splits,
        25,
        "TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '100' MILLISECOND)",
        |t| hop_windows(t, 100, 100),
        &[(1, 1), (7, 1), (8192, 1), (7, 4), (8192, 4)],
    );
    assert!(
        late > 0,
        "the input must hold late rows for this test to mean something"
    );
}

#[test]
fn hop_matches_oracle_and_late_rows_count_in_later_windows() {
    let splits = generate(11, 2, SHAPE);
    let _ = check(
        &splits,
        20,
        "HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '30' MILLISECOND, INTERVAL '120' MILLISECOND)",
        |t| hop_windows(t, 120, 30),
        &[(1, 1), (7, 4), (8192, 1)],
    );
}

#[test]
fn cumulate_matches_oracle() {
    let splits = generate(13, 2, SHAPE);
    let _ = check(
        &splits,
        20,
        "CUMULATE(TABLE t, DESCRIPTOR(ts), INTERVAL '40' MILLISECOND, INTERVAL '160' MILLISECOND)",
        |t| cumulate_windows(t, 40, 160),
        &[(1, 1), (7, 4), (8192, 1)],
    );
}

#[test]
fn session_matches_simulation() {
    // One split: a session's rows then arrive in one deterministic order.
    let shape = Shape {
        rows: 600,
        keys: 6,
        hot: 0.4,
        nulls: 0.05,
        step: 9,
        jitter: 50,
    };
    let splits = generate(17, 1, shape);
    let (gap, delay) = (40, 15);
    let (pairs, late) = simulate_sessions(&splits[0], delay, gap);
    let rt = runtime();
    let expected = rt.block_on(oracle(&pairs, &oracle_query()));
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), &splits);
    for (batch_size, parallelism) in [(1, 1), (7, 4), (8192, 1), (8192, 4)] {
        let setup = vec![
            format!("SET 'parallelism.default' = '{parallelism}'"),
            stream_ddl(dir.path(), delay, batch_size, ""),
        ];
        let query = weir_query(&format!(
            "SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), INTERVAL '{gap}' MILLISECOND)"
        ));
        let run = rt.block_on(run_weir(&setup, &query));
        assert_eq!(
            run.rows, expected,
            "batch size {batch_size}, parallelism {parallelism}"
        );
        assert_eq!(
            run.late_rows, late,
            "late rows, batch size {batch_size}, parallelism {parallelism}"
        );
    }
}

#[test]
fn legacy_group_window_equals_the_tvf() {
    let splits = generate(19, 2, SHAPE);
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), &splits);
    let rt = runtime();
    let setup = vec![stream_ddl(dir.path(), 25, 64, "")];
    let tvf = rt.block_on(run_weir(
        &setup,
        "SELECT k, count(*) AS n, window_start, window_end FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '100' MILLISECOND)) GROUP BY k, window_start, window_end",
    ));
    let legacy = rt.block_on(run_weir(
        &setup,
        "SELECT k, count(*) AS n, TUMBLE_START(ts, INTERVAL '100' MILLISECOND) AS s, TUMBLE_END(ts, INTERVAL '100' MILLISECOND) AS e FROM t GROUP BY k, TUMBLE(ts, INTERVAL '100' MILLISECOND)",
    ));
    assert_eq!(tvf.rows, legacy.rows);
    assert!(!tvf.rows.is_empty());
}

#[test]
fn empty_input_gives_no_windows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.json"), "").unwrap();
    let rt = runtime();
    let run = rt.block_on(run_weir(
        &[stream_ddl(dir.path(), 10, 8, "")],
        &weir_query("TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '100' MILLISECOND)"),
    ));
    assert!(run.rows.is_empty());
    assert_eq!(run.late_rows, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, .. ProptestConfig::default() })]

    /// Random seeds, delays and window sizes: tumble and hop both agree with
    /// the oracle, in one subtask and in four.
    #[test]
    fn random_inputs_match_oracle(seed in 0u64..1_000_000, delay in 0i64..80, size in 2i64..8, hot in 0.0f64..0.9) {
        let shape = Shape { rows: 200, keys: 8, hot, nulls: 0.1, step: 5, jitter: 50 };
        let splits = generate(seed, 2, shape);
        let size = size * 20;
        let _ = check(&splits, delay, &format!("TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '{size}' MILLISECOND)"), |t| hop_windows(t, size, size), &[(7, 1), (64, 4)]);
        let _ = check(&splits, delay, &format!("HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '20' MILLISECOND, INTERVAL '{size}' MILLISECOND)"), |t| hop_windows(t, size, 20), &[(3, 4)]);
    }
}
