//! Event-time temporal joins (`JOIN rates FOR SYSTEM_TIME AS OF o.ts`)
//! against a DataFusion batch query over the same rows: each order with
//! the version of its key's rate current at the order's time (the latest
//! at or before it), several versions per key changing between two
//! orders of the key, orders before any version, NULL keys, a hot key.

mod common;

use common::*;

fn write_versions(dir: &std::path::Path, versions: &[(i64, i64, i64)]) {
    let text: String = versions.iter().map(|v| version_json(*v) + "\n").collect();
    std::fs::write(dir.join("rates.json"), text).unwrap();
}

/// Orders of `seed` joined with `per_key` versions of 5 keys, the first
/// `lead` ms after the first order, at each parallelism.
fn check(seed: u64, per_key: i64, lead: i64, parallelisms: &[usize]) {
    let shape = Shape {
        rows: 400,
        keys: 6,
        hot: 0.4,
        nulls: 0.1,
        step: 5,
        jitter: 0,
    };
    let splits = generate(seed, 1, shape);
    let events: Vec<Event> = splits.concat();
    let base = events[0].ts + lead;
    let versions = versions(5, per_key, base);
    let (orders_dir, rates_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_splits(orders_dir.path(), &splits);
    write_versions(rates_dir.path(), &versions);
    let rates = format!(
        "CREATE TABLE rates (key BIGINT, rate BIGINT, rts TIMESTAMP(3), WATERMARK FOR rts AS rts,
           PRIMARY KEY (key) NOT ENFORCED)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json', 'scan.batch-size' = '5')",
        rates_dir.path().display()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for (join, oracle_join) in [("JOIN", "JOIN"), ("LEFT JOIN", "LEFT JOIN")] {
            let expected = temporal_oracle(&events, &versions, oracle_join).await;
            assert!(!expected.is_empty());
            for &parallelism in parallelisms {
                let setup = [
                    format!("SET 'parallelism.default' = '{parallelism}'"),
                    stream_ddl(orders_dir.path(), 0, 7, ""),
                    rates.clone(),
                ];
                let run = run_weir(
                    &setup,
                    &format!(
                        "SELECT t.k, t.v, t.ts, r.rate FROM t {join} rates FOR SYSTEM_TIME AS OF t.ts AS r ON t.k = r.key"
                    ),
                )
                .await;
                assert_eq!(run.late_rows, 0);
                assert_eq!(run.rows, expected, "{join}, parallelism {parallelism}");
            }
        }
    });
}

#[test]
fn orders_join_the_rate_current_at_their_time() {
    check(23, 12, 150, &[1, 3]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(6))]
    #[test]
    fn temporal_joins_hold_for_random_orders_and_versions(
        seed in 0u64..1000,
        per_key in 1i64..15,
        lead in -300i64..800,
        parallelism in 1usize..4,
    ) {
        check(seed, per_key, lead, &[parallelism]);
    }
}
