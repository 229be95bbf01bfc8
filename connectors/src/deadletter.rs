//! The dead-letter output: records a job could not use, with the reason.
//!
//! Each write becomes one JSON-lines object under `'bad-data.path'` (any
//! object_store location), so what was written survives a crash without
//! relying on appends, which object stores do not have.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::json::writer::{JsonArray, WriterBuilder};
use datafusion::arrow::record_batch::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{json, Value};
use weir_engine::{BadRecord, DeadLetterSink, EngineError, Result};

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
            BadDataPolicy::DeadLetter(w) => write!(f, "dlq({})", w.location.display),
            BadDataPolicy::Drop => write!(f, "drop"),
            BadDataPolicy::Fail => write!(f, "fail"),
        }
    }
}

impl BadDataPolicy {
    /// The policy from a stream's options: `'bad-data'` = `dlq` (default)
    /// with `'bad-data.path'`, `drop` or `fail`. `dlq` without a path
    /// drops with a warning.
    pub fn from_options(
        stream: &str,
        options: &Options,
    ) -> std::result::Result<Self, ConnectorError> {
        match options
            .get("bad-data")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("dlq") => match options.get("bad-data.path") {
                Some(path) => Ok(BadDataPolicy::DeadLetter(Arc::new(DeadLetterWriter::new(
                    stream, path, options,
                )?))),
                None => Ok(BadDataPolicy::Drop),
            },
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
                    "dropping bad records (set 'bad-data.path' to keep them): {} at {}",
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

/// Writes dead letters as JSON lines under a location.
pub struct DeadLetterWriter {
    stream: String,
    location: Location,
    sequence: AtomicU64,
    run: String,
    written: AtomicU64,
}

impl DeadLetterWriter {
    pub fn new(
        stream: &str,
        path: &str,
        options: &Options,
    ) -> std::result::Result<Self, ConnectorError> {
        let location = resolve(path, options, true)?;
        Ok(DeadLetterWriter {
            stream: stream.to_string(),
            location,
            sequence: AtomicU64::new(0),
            run: unique_run_id(),
            written: AtomicU64::new(0),
        })
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    async fn put_lines(&self, lines: Vec<Value>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut body = Vec::new();
        for line in &lines {
            body.extend_from_slice(line.to_string().as_bytes());
            body.push(b'\n');
        }
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{:06}.jsonl", self.stream, self.run, n);
        let path = Path::from(format!("{}/{}", self.location.prefix, name).trim_start_matches('/'));
        self.location
            .store
            .put(&path, PutPayload::from(body))
            .await
            .map_err(|e| EngineError::connector("dead-letter", e))?;
        self.written
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
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
        let lines = rows
            .into_iter()
            .map(|row| json!({ "stream": self.stream, "reason": reason, "row": row }))
            .collect();
        self.put_lines(lines).await
    }

    async fn write_records(&self, records: Vec<BadRecord>) -> Result<()> {
        let lines = records
            .into_iter()
            .map(|r| {
                json!({
                    "stream": r.stream,
                    "reason": r.reason,
                    "location": r.location,
                    "raw": raw_value(&r.raw),
                })
            })
            .collect();
        self.put_lines(lines).await
    }
}
