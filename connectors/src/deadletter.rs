//! The dead-letter output: records a job could not use, with the reason.
//!
//! Under `'bad-data.path'` (any object_store location) each write becomes
//! one JSON-lines object, so what was written survives a crash without
//! relying on appends, which object stores do not have. With
//! `'bad-data.topic'` each record goes to a Kafka topic
//! ([`crate::kafka::dead_letters`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::json::writer::{JsonArray, WriterBuilder};
use datafusion::arrow::record_batch::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{json, Value};
use weir_engine::{BadRecord, DeadLetterSink, EngineError, Result};

use crate::kafka::dead_letters::{KafkaDeadLetters, Letter};
use crate::options::Options;
use crate::registry::ConnectorError;
use crate::store::{resolve, Location};

/// What a source does with a record that does not decode or fit the schema
/// (`'bad-data'`).
#[derive(Clone)]
pub enum BadDataPolicy {
    /// Write it to the dead-letter output and carry on.
    DeadLetter(Arc<DeadLetterWriter>),
    /// Count it, log it once, and carry on.
    Drop,
    /// Fail the job.
    Fail,
}

impl std::fmt::Debug for BadDataPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadDataPolicy::DeadLetter(w) => write!(f, "dlq({})", w.target()),
            BadDataPolicy::Drop => write!(f, "drop"),
            BadDataPolicy::Fail => write!(f, "fail"),
        }
    }
}

impl BadDataPolicy {
    /// The policy from a stream's options: `'bad-data'` = `dlq` (default)
    /// with `'bad-data.path'` or `'bad-data.topic'`, `drop` or `fail`.
    /// `dlq` with neither drops with a warning.
    pub fn from_options(
        stream: &str,
        options: &Options,
    ) -> std::result::Result<Self, ConnectorError> {
        match options
            .get("bad-data")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("dlq") => {
                match (options.get("bad-data.path"), options.get("bad-data.topic")) {
                    (Some(_), Some(_)) => Err(ConnectorError::option(
                        "bad-data.topic",
                        "set one of 'bad-data.path' and 'bad-data.topic'",
                    )),
                    (Some(path), None) => Ok(BadDataPolicy::DeadLetter(Arc::new(
                        DeadLetterWriter::to_files(stream, path, options)?,
                    ))),
                    (None, Some(topic)) => Ok(BadDataPolicy::DeadLetter(Arc::new(
                        DeadLetterWriter::to_topic(stream, topic, options)?,
                    ))),
                    (None, None) => Ok(BadDataPolicy::Drop),
                }
            }
            Some("drop") => Ok(BadDataPolicy::Drop),
            Some("fail") => Ok(BadDataPolicy::Fail),
            Some(other) => Err(ConnectorError::option(
                "bad-data",
                format!("'{other}' must be dlq, drop or fail"),
            )),
        }
    }

    /// Handles bad records according to the policy.
    pub async fn handle(&self, records: Vec<BadRecord>) -> Result<()> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        match self {
            BadDataPolicy::DeadLetter(writer) => writer.write_records(records).await,
            BadDataPolicy::Drop => {
                tracing::warn!(
                    stream = %first.stream,
                    count = records.len(),
                    "dropping bad records (set 'bad-data.path' or 'bad-data.topic' to keep them): {} at {}",
                    first.reason,
                    first.location
                );
                Ok(())
            }
            BadDataPolicy::Fail => Err(EngineError::BadRecord {
                stream: first.stream.clone(),
                reason: format!("{} at {}", first.reason, first.location),
            }),
        }
    }
}

/// Writes dead letters as JSON lines under a location, or to a topic.
pub struct DeadLetterWriter {
    stream: String,
    target: Target,
    written: AtomicU64,
}

enum Target {
    Files {
        location: Location,
        sequence: AtomicU64,
        run: String,
    },
    Kafka(KafkaDeadLetters),
}

impl DeadLetterWriter {
    /// Dead letters as JSON-lines objects under `path`.
    pub fn to_files(
        stream: &str,
        path: &str,
        options: &Options,
    ) -> std::result::Result<Self, ConnectorError> {
        let location = resolve(path, options, true)?;
        Ok(Self::with_target(
            stream,
            Target::Files {
                location,
                sequence: AtomicU64::new(0),
                run: unique_run_id(),
            },
        ))
    }

    /// Dead letters as records of a Kafka topic.
    pub fn to_topic(
        stream: &str,
        topic: &str,
        options: &Options,
    ) -> std::result::Result<Self, ConnectorError> {
        let kafka = KafkaDeadLetters::new(topic, options)?;
        Ok(Self::with_target(stream, Target::Kafka(kafka)))
    }

    fn with_target(stream: &str, target: Target) -> Self {
        DeadLetterWriter {
            stream: stream.to_string(),
            target,
            written: AtomicU64::new(0),
        }
    }

    /// Where the letters go, for messages.
    pub fn target(&self) -> String {
        match &self.target {
            Target::Files { location, .. } => location.display.clone(),
            Target::Kafka(kafka) => format!("kafka topic {}", kafka.topic()),
        }
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    async fn put_lines(&self, lines: Vec<Value>) -> Result<()> {
        let Target::Files {
            location,
            sequence,
            run,
        } = &self.target
        else {
            return Ok(());
        };
        if lines.is_empty() {
            return Ok(());
        }
        let mut body = Vec::new();
        for line in &lines {
            body.extend_from_slice(line.to_string().as_bytes());
            body.push(b'\n');
        }
        let n = sequence.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{:06}.jsonl", self.stream, run, n);
        let path = Path::from(format!("{}/{}", location.prefix, name).trim_start_matches('/'));
        location
            .store
            .put(&path, PutPayload::from(body))
            .await
            .map_err(|e| EngineError::connector("dead-letter", e))?;
        self.written
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn send(&self, kafka: &KafkaDeadLetters, letters: Vec<Letter>) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        kafka.send(&letters).await?;
        self.written
            .fetch_add(letters.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// A name part no other writer (in this process or another) uses: time,
/// process and a per-process counter.
pub(crate) fn unique_run_id() -> String {
    static WRITERS: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3f"),
        std::process::id(),
        WRITERS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Raw bytes as text when they are UTF-8, else as hex.
fn raw_value(raw: &[u8]) -> Value {
    match std::str::from_utf8(raw) {
        Ok(s) => json!(s),
        Err(_) => json!({ "hex": raw.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
    }
}

#[async_trait]
impl DeadLetterSink for DeadLetterWriter {
    async fn write_rows(&self, reason: &str, rows: &RecordBatch) -> Result<()> {
        let mut buffer = Vec::new();
        {
            let mut writer = WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, JsonArray>(&mut buffer);
            writer.write(rows)?;
            writer.finish()?;
        }
        let rows: Vec<Value> = serde_json::from_slice(&buffer)
            .map_err(|e| EngineError::connector("dead-letter", e))?;
        if let Target::Kafka(kafka) = &self.target {
            let letters = rows
                .iter()
                .map(|row| Letter::of_row(&self.stream, reason, row))
                .collect();
            return self.send(kafka, letters).await;
        }
        let lines = rows
            .into_iter()
            .map(|row| json!({ "stream": self.stream, "reason": reason, "row": row }))
            .collect();
        self.put_lines(lines).await
    }

    async fn write_records(&self, records: Vec<BadRecord>) -> Result<()> {
        if let Target::Kafka(kafka) = &self.target {
            let letters = records.into_iter().map(Letter::of_record).collect();
            return self.send(kafka, letters).await;
        }
        let lines = records
            .into_iter()
            .map(|r| {
                let mut letter = json!({
                    "stream": r.stream,
                    "reason": r.reason,
                    "location": r.location,
                    "raw": raw_value(&r.raw),
                });
                // A Kafka record's origin, as a dead-letter topic's headers
                // carry it.
                if let (Some(origin), Some(fields)) = (&r.kafka, letter.as_object_mut()) {
                    let headers: Vec<Value> = origin
                        .headers
                        .iter()
                        .map(|(key, value)| json!({ "key": key, "value": value.as_deref().map(raw_value) }))
                        .collect();
                    fields.insert("topic".into(), json!(origin.topic));
                    fields.insert("partition".into(), json!(origin.partition));
                    fields.insert("offset".into(), json!(origin.offset));
                    fields.insert("key".into(), json!(origin.key.as_deref().map(raw_value)));
                    fields.insert("headers".into(), Value::Array(headers));
                }
                letter
            })
            .collect();
        self.put_lines(lines).await
    }
}
