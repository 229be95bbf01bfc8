//! Dead letters on a Kafka topic (`'bad-data.topic'`).
//!
//! A bad record is produced as it was read, as Kafka Connect's dead-letter
//! queue does: its raw bytes as the value, its key and its headers, so any
//! consumer (and Weir's replay) decodes it like the original. Headers added
//! to it say why and where it came from: `dlq.stream`, `dlq.reason`,
//! `dlq.location`, and for a Kafka source `dlq.topic`, `dlq.partition`,
//! `dlq.offset`. A rejected row (a late row) is produced as a JSON object,
//! with the same headers.
//!
//! The producer takes the stream's `properties.*`, overridden by
//! `'bad-data.properties.*'` (a stream that is not Kafka names its broker
//! there).

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use weir_engine::{BadRecord, EngineError, Result};

use super::set_default;
use crate::options::Options;
use crate::registry::ConnectorError;

/// How long a dead letter may wait for its delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Client properties that only a consumer takes (librdkafka warns about
/// each when a producer is given it).
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "auto.offset.reset",
    "enable.auto.commit",
    "session.timeout.ms",
    "isolation.level",
];

/// One record for the dead-letter topic.
pub struct Letter {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Letter {
    /// A bad record as read, with the dead-letter headers.
    pub fn of_record(record: BadRecord) -> Letter {
        let mut headers = vec![
            header("dlq.stream", &record.stream),
            header("dlq.reason", &record.reason),
            header("dlq.location", &record.location),
        ];
        let mut key = None;
        let mut original = Vec::new();
        if let Some(kafka) = record.kafka {
            headers.push(header("dlq.topic", &kafka.topic));
            headers.push(header("dlq.partition", &kafka.partition.to_string()));
            headers.push(header("dlq.offset", &kafka.offset.to_string()));
            key = kafka.key;
            original = kafka.headers;
        }
        original.extend(headers);
        Letter {
            key,
            value: Some(record.raw).filter(|raw| !raw.is_empty()),
            headers: original,
        }
    }

    /// A rejected row, as a JSON object.
    pub fn of_row(stream: &str, reason: &str, row: &serde_json::Value) -> Letter {
        Letter {
            key: None,
            value: Some(row.to_string().into_bytes()),
            headers: vec![header("dlq.stream", stream), header("dlq.reason", reason)],
        }
    }
}

fn header(name: &str, value: &str) -> (String, Option<Vec<u8>>) {
    (name.to_string(), Some(value.as_bytes().to_vec()))
}

/// Produces dead letters to one topic.
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl KafkaDeadLetters {
    /// The writer for a stream's `'bad-data.topic'`.
    pub fn new(topic: &str, options: &Options) -> std::result::Result<Self, ConnectorError> {
        let mut config = ClientConfig::new();
        let properties = |prefix: &'static str| {
            options
                .iter()
                .filter_map(move |(k, v)| k.strip_prefix(prefix).map(|k| (k, v)))
        };
        for (k, v) in properties("properties.").filter(|(k, _)| !CONSUMER_ONLY.contains(k)) {
            config.set(k, v);
        }
        for (k, v) in properties("bad-data.properties.") {
            config.set(k, v);
        }
        if config.get("bootstrap.servers").is_none() {
            return Err(ConnectorError::option(
                "bad-data.topic",
                "needs a broker: 'bad-data.properties.bootstrap.servers' (or the stream's 'properties.bootstrap.servers')",
            ));
        }
        // A retried send must not write a dead letter twice.
        set_default(&mut config, "enable.idempotence", "true");
        let producer = config
            .create()
            .map_err(|e| ConnectorError::option("bad-data.topic", e.to_string()))?;
        Ok(KafkaDeadLetters {
            producer,
            topic: topic.to_string(),
        })
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces `letters` and waits until every one is delivered.
    pub async fn send(&self, letters: &[Letter]) -> Result<()> {
        let sends = letters.iter().map(|letter| {
            let mut headers = OwnedHeaders::new_with_capacity(letter.headers.len());
            for (key, value) in &letter.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(key) = &letter.key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = &letter.value {
                record = record.payload(value.as_slice());
            }
            self.producer.send(record, DELIVERY_TIMEOUT)
        });
        try_join_all(sends)
            .await
            .map_err(|(e, _)| EngineError::connector("dead-letter", e))?;
        Ok(())
    }
}
