//! Kafka helpers: librdkafka's mock cluster (a real Kafka protocol server
//! on loopback), producing records, and reading a topic back raw.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::Event;

pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap()
}

/// Sends each payload to its partition, in order.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: &[(i32, Option<String>, String)],
) {
    for (partition, key, payload) in records {
        let mut record = FutureRecord::to(topic)
            .partition(*partition)
            .payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Sends each payload as it is (bytes) to partition 0, in order.
pub async fn produce_bytes(producer: &FutureProducer, topic: &str, records: &[Vec<u8>]) {
    for record in records {
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(record),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

pub fn event_json(e: &Event) -> String {
    let key = e.key.map_or("null".into(), |k| k.to_string());
    let value = e.value.map_or("null".into(), |v| v.to_string());
    let ts = chrono::DateTime::from_timestamp_millis(e.ts)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.3f");
    format!(r#"{{"k": {key}, "v": {value}, "ts": "{ts}"}}"#)
}

/// A one-broker mock cluster with `topics` (name, partitions), and its
/// bootstrap address.
pub fn mock_cluster(
    topics: &[(&str, i32)],
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = MockCluster::new(1).unwrap();
    for (topic, partitions) in topics {
        cluster.create_topic(topic, *partitions, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    (cluster, bootstrap)
}

/// Every record of `topic` (partitions `0..partitions`), as (key, value)
/// texts; a tombstone's value is `None`.
pub fn topic_records(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(Option<String>, Option<String>)> {
    let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
    topic_bytes(bootstrap, topic, partitions)
        .into_iter()
        .map(|(key, value)| (text(key), text(value)))
        .collect()
}

/// A record's key and value bytes (`None`: absent).
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Every record of `topic` (partitions `0..partitions`), as (key, value)
/// bytes.
pub fn topic_bytes(bootstrap: &str, topic: &str, partitions: i32) -> Vec<KeyValue> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "weir-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        ends.push(high);
        assignment
            .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let total: i64 = ends.iter().sum();
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (records.len() as i64) < total && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            records.push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)));
        }
    }
    records
}
