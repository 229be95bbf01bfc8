//! Kafka throughput: records in librdkafka's mock cluster → JSON decode →
//! 10 s tumble → blackhole, in events per second. Run on purpose:
//!
//! ```sh
//! cargo bench --bench kafka
//! WEIR_BENCH_EVENTS=2000000 cargo bench --bench kafka
//! ```
//!
//! The mock cluster keeps about 5 MB per partition, so the records are
//! spread over enough partitions to keep them all.

/// The allocator the `weir` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn main() {
    let events: u64 = std::env::var("WEIR_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let partitions = (events / 40_000).max(4) as i32;
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("bids", partitions, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let base = 1_700_000_000_000i64;
    for i in 0..events as i64 {
        let ts = chrono::DateTime::from_timestamp_millis(base + i / 10)
            .expect("time")
            .format("%Y-%m-%d %H:%M:%S%.3f");
        let payload = format!(
            r#"{{"auction": {}, "price": {}, "dateTime": "{ts}"}}"#,
            1000 + (i * 7919) % 5000,
            i % 1000
        );
        let partition = (i % partitions as i64) as i32;
        loop {
            match producer.send(
                BaseRecord::<(), _>::to("bids")
                    .partition(partition)
                    .payload(&payload),
            ) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let elapsed = runtime.block_on(async {
        let mut session = weir::Session::new();
        session
            .sql(&format!(
                "CREATE STREAM bids (auction BIGINT, price BIGINT, `dateTime` TIMESTAMP(3),
                   WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND)
                 WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '{bootstrap}',
                       'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'json');
                 CREATE TABLE counts (auction BIGINT, n BIGINT) WITH ('connector' = 'blackhole');"
            ))
            .await
            .expect("ddl");
        let start = Instant::now();
        let job = session
            .submit(
                "INSERT INTO counts SELECT auction, count(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end",
            )
            .await
            .expect("job");
        job.wait().await.expect("run");
        let read: u64 = job.metrics().subtasks.iter().filter(|s| s.operator.starts_with("source:")).map(|s| s.rows_out).sum();
        assert_eq!(read, events, "every record read");
        start.elapsed()
    });
    println!(
        "kafka (mock, {partitions} partitions) → json → 10 s tumble → blackhole: {events} events in {:.2} s, {:.0} events/s",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
}
