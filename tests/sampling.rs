//! Sampled aggregates in event-time windows: `WHERE SAMPLE_KEY(k, f)` and
//! `SAMPLED_SUM` / `SAMPLED_COUNT` / `SAMPLED_COUNT_DISTINCT` over two
//! out-of-order splits with late rows, NULL keys and values, and a hot
//! key. Each window's estimate and interval are computed here by hand
//! from the rows that were on time (the same rule as the window oracle).

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use weir::arrow::array::AsArray;
use weir::arrow::datatypes::{Float64Type, TimestampMillisecondType};
use weir::crates::planner::sampling::key_position;

const FRACTION: f64 = 0.2;
const Z_95: f64 = 1.959_963_984_540_054;

/// (estimate, low, high) from the sampled keys' totals.
fn interval(totals: &[f64]) -> [f64; 3] {
    let f = FRACTION;
    let estimate = totals.iter().sum::<f64>() / f;
    let squares: f64 = totals.iter().map(|y| y * y).sum();
    let margin = Z_95 * ((1.0 - f) / (f * f) * squares).sqrt();
    [estimate, estimate - margin, estimate + margin]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sampled_window_aggregates_scale_the_sampled_keys() {
    let splits = generate(
        31,
        2,
        Shape {
            rows: 4000,
            keys: 500,
            hot: 0.2,
            nulls: 0.05,
            step: 5,
            jitter: 300,
        },
    );
    let delay = 200;
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), &splits);
    let (pairs, late) = on_time_pairs(&splits, delay, |t| hop_windows(t, 1000, 1000));
    assert!(late > 0, "the input should have late rows");

    // By hand: per window, the sampled keys' sums, row counts and presence.
    let sampled = |k: i64| key_position(k.to_string().as_bytes()) < FRACTION;
    let mut windows: BTreeMap<i64, HashMap<i64, (f64, f64)>> = BTreeMap::new();
    for (start, _, e) in &pairs {
        let Some(k) = e.key.filter(|k| sampled(*k)) else {
            continue;
        };
        let (sum, rows) = windows.entry(*start).or_default().entry(k).or_default();
        *sum += e.value.unwrap_or(0) as f64;
        *rows += 1.0;
    }
    // Every whole window samples dozens of keys (the first and last may be
    // partial).
    let sizes: Vec<usize> = windows.values().map(|keys| keys.len()).collect();
    assert!(
        sizes[1..sizes.len() - 1].iter().all(|n| *n > 20),
        "{sizes:?}"
    );
    let expected: BTreeMap<i64, [[f64; 3]; 3]> = windows
        .iter()
        .map(|(start, keys)| {
            let sums: Vec<f64> = keys.values().map(|(s, _)| *s).collect();
            let rows: Vec<f64> = keys.values().map(|(_, r)| *r).collect();
            let ones = vec![1.0; keys.len()];
            (*start, [interval(&sums), interval(&rows), interval(&ones)])
        })
        .collect();

    let mut session = weir::Session::new();
    session
        .sql(&stream_ddl(dir.path(), delay, 64, ""))
        .await
        .unwrap();
    let mut results = session
        .query(&format!(
            "SELECT window_start, SAMPLED_SUM(v, k, {FRACTION}) AS s, SAMPLED_COUNT(k, {FRACTION}) AS c,
               SAMPLED_COUNT_DISTINCT(k, {FRACTION}) AS d
             FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND))
             WHERE SAMPLE_KEY(k, {FRACTION})
             GROUP BY window_start, window_end"
        ))
        .await
        .unwrap();
    let mut got: BTreeMap<i64, [[f64; 3]; 3]> = BTreeMap::new();
    while let Some(batch) = results.next_batch().await.unwrap() {
        let starts = batch.column(0).as_primitive::<TimestampMillisecondType>();
        for row in 0..batch.num_rows() {
            let triple = |column: &str| -> [f64; 3] {
                let s = batch.column_by_name(column).unwrap().as_struct();
                ["estimate", "low", "high"].map(|field| {
                    s.column_by_name(field)
                        .unwrap()
                        .as_primitive::<Float64Type>()
                        .value(row)
                })
            };
            got.insert(starts.value(row), [triple("s"), triple("c"), triple("d")]);
        }
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (start, want) in &expected {
        let have = &got[start];
        for (h, w) in have.iter().flatten().zip(want.iter().flatten()) {
            assert!(
                (h - w).abs() <= 1e-9 * w.abs().max(1.0),
                "window {start}: {have:?} != {want:?}"
            );
        }
    }
}
