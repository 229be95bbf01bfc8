//! Event-time temporal joins (`JOIN rates FOR SYSTEM_TIME AS OF o.ts`)
//! against a DataFusion batch query over the same rows: each order with
//! the version of its key's rate current at the order's time (the latest
//! at or before it), several versions per key changing between two
//! orders of the key, orders before any version, NULL keys, a hot key.

mod common;

use common::*;

fn write_versions(dir: &std::path::Path, versions: &[(i64, i64, i64)]) {
    let text: String = versions
        .iter()
        .map(|(k, rate, t)| {
            let ts = chrono::DateTime::from_timestamp_millis(*t)
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S%.3f");
            format!("{{\"key\": {k}, \"rate\": {rate}, \"rts\": \"{ts}\"}}\n")
        })
        .collect();
    std::fs::write(dir.join("rates.json"), text).unwrap();
}

#[test]
fn orders_join_the_rate_current_at_their_time() {
    let shape = Shape {
        rows: 400,
        keys: 6,
        hot: 0.4,
        nulls: 0.1,
        step: 5,
        jitter: 0,
    };
    let splits = generate(23, 1, shape);
    let events: Vec<Event> = splits.concat();
    let base = events[0].ts + 150;
    let versions = versions(5, 12, base);
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
            assert!(expected.len() > 100, "{}", expected.len());
            for parallelism in [1, 3] {
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
