//! The `dead-letter` connector: a stream's dead-letter output, read back.
//!
//! ```sql
//! -- What went wrong: one row per dead letter of `bids`.
//! CREATE STREAM bad WITH ('connector' = 'dead-letter', 'stream' = 'bids',
//!   'path' = '/data/dlq');
//! -- The records again, through the stream's fixed decoder.
//! CREATE STREAM bids_again (auction BIGINT, price DOUBLE) WITH (
//!   'connector' = 'dead-letter', 'stream' = 'bids', 'path' = '/data/dlq',
//!   'format' = 'json', 'bad-data.path' = '/data/dlq-again');
//! INSERT INTO out SELECT auction, price FROM bids_again;
//! ```
//!
//! With `'topic'` (and `'properties.*'`) instead of `'path'` it reads a
//! `'bad-data.topic'`: from its start to its end when the job starts
//! (`'scan.startup.mode'` and `'scan.bounded.mode'` as for Kafka), each
//! record's `dlq.*` headers giving its stream, reason and location.
//!
//! Without `'format'` the rows are the dead letters themselves: `stream`,
//! `reason`, `location` and `raw` (the record as read; a row an operator
//! rejected, as JSON). With `'format'` each record that failed to decode is
//! decoded again with the declared columns: the replay. It is a file source
//! over the dead-letter files, so its read positions are checkpointed like
//! any file's and an exactly-once sink gets each record once, across
//! restarts. Records that still fail go to the replay's own dead letters
//! with the new reason (never to the path it reads).

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, StringArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use serde_json::Value;

use crate::filesystem::{FileSource, FileSourceOptions};
use crate::format::{Decoded, Format, LineDecoder};
use crate::options::Options;
use weir_engine::SourceFactory;

use crate::registry::{Connector, ConnectorError, TableSpec};
use crate::store::resolve;

/// With `'topic'`, also a Kafka source's start and end positions.
const OPTIONS: &[&str] = &["path", "topic", "stream", "scan.batch-size"];

/// Reads a stream's dead letters (`'connector' = 'dead-letter'`).
pub struct DeadLetterConnector;

/// The columns of a dead letter.
fn letter_schema() -> SchemaRef {
    Arc::new(Schema::new(
        ["stream", "reason", "location", "raw"]
            .map(|name| Field::new(name, DataType::Utf8, true))
            .to_vec(),
    ))
}

impl Connector for DeadLetterConnector {
    fn name(&self) -> &'static str {
        "dead-letter"
    }

    fn validate(&self, options: &Options) -> Result<(), ConnectorError> {
        options.require("stream")?;
        if options.get("format").is_some() {
            let format = Format::from_options(options)?;
            let registry = matches!(
                format,
                Format::AvroConfluent(_) | Format::ProtobufConfluent(_)
            );
            if registry && options.get("topic").is_none() {
                return Err(ConnectorError::option(
                    "format",
                    format!(
                        "a replay of dead-letter files decodes without a schema registry: '{}' records replay from a 'bad-data.topic'",
                        format.name()
                    ),
                ));
            }
        }
        let read = match (options.get("path"), options.get("topic")) {
            (Some(path), None) => path,
            (None, Some(topic)) => topic,
            _ => {
                return Err(ConnectorError::new(
                    "set one of 'path' (a 'bad-data.path') and 'topic' (a 'bad-data.topic')",
                ))
            }
        };
        if [options.get("bad-data.path"), options.get("bad-data.topic")].contains(&Some(read)) {
            return Err(ConnectorError::option(
                "bad-data",
                "a replay's own dead letters must go elsewhere than where it reads",
            ));
        }
        if options.get("topic").is_some() {
            options.require("properties.bootstrap.servers")?;
        }
        let known = [
            OPTIONS,
            crate::kafka::POSITION_OPTIONS,
            &["value.format", "value.fields-include"],
        ]
        .concat();
        options.check_known(
            "dead-letter",
            &known,
            &[
                "key.",
                "value.json.",
                "value.csv.",
                "s3.",
                "csv.",
                "json.",
                "properties.",
                "protobuf.",
                "avro-confluent.",
                "protobuf-confluent.",
            ],
        )
    }

    fn default_schema(&self, options: &Options) -> Option<SchemaRef> {
        options.get("format").is_none().then(letter_schema)
    }

    /// Files are read as listed; a topic to its end unless
    /// `'scan.bounded.mode'` is `unbounded`.
    fn is_bounded(&self, options: &Options) -> bool {
        options.get("scan.bounded.mode") != Some("unbounded")
    }

    fn source(&self, spec: &TableSpec) -> Result<SourceFactory, ConnectorError> {
        self.validate(&spec.options)?;
        let stream = spec.options.require("stream")?.to_string();
        let mode = match spec.options.get("format") {
            None => Mode::Letters,
            Some(_) => Mode::Replay(Box::new(Replay::new(spec)?)),
        };
        let letters = Arc::new(DeadLetters { stream, mode });
        if spec.options.get("topic").is_some() {
            return crate::kafka::dead_letter_source(spec, letters);
        }
        let location = resolve(spec.options.require("path")?, &spec.options, false)?;
        // Dead letters are few: decoded in the source's own task.
        let read = FileSourceOptions {
            parallel_decode: 1,
            ..FileSourceOptions::from_options(&spec.options)?
        };
        let spec = spec.clone();
        Ok(Arc::new(move |info| {
            // The files are JSON lines whatever the records inside are.
            let source = FileSource::new(
                location.clone(),
                Format::Json,
                letter_schema(),
                spec.name.clone(),
                spec.bad_data.clone(),
                read.clone(),
                info,
            )?
            .reading_dead_letters(letters.clone(), spec.schema.clone());
            Ok(Box::new(source) as Box<dyn weir_engine::Source>)
        }))
    }
}

/// What the source makes of the dead letters it reads.
enum Mode {
    /// The letters as rows.
    Letters,
    /// The records decoded again.
    Replay(Box<Replay>),
}

/// Decodes dead records again, as the stream declares them now: the value,
/// and the key columns from the record's key (`'key.format'`,
/// `'key.fields'`, `'value.fields-include'`, as the Kafka connector reads
/// them).
struct Replay {
    values: LineDecoder,
    keys: Option<LineDecoder>,
    /// The stream's columns.
    schema: SchemaRef,
}

impl Replay {
    fn new(spec: &TableSpec) -> Result<Self, ConnectorError> {
        let format = Format::from_options(&spec.options)?;
        let layout = crate::kafka::KeyLayout::parse(&spec.options)?;
        let (Some(key_format), false) = (layout.format.clone(), layout.fields.is_empty()) else {
            return Ok(Replay {
                values: LineDecoder::new(format, spec.schema.clone(), spec.name.clone())?,
                keys: None,
                schema: spec.schema.clone(),
            });
        };
        // The same columns from the value and the key as the Kafka source.
        Ok(Replay {
            values: LineDecoder::new(format, layout.value_schema(spec), spec.name.clone())?,
            keys: Some(LineDecoder::new(
                key_format,
                layout.key_schema(spec),
                spec.name.clone(),
            )?),
            schema: spec.schema.clone(),
        })
    }

    /// `records` decoded; a bad one's index is its position in `records`.
    fn decode(
        &self,
        records: &[&Letter],
        locate: &dyn Fn(usize) -> String,
    ) -> Result<Decoded, ArrowError> {
        let raws: Vec<&[u8]> = records.iter().filter_map(|l| l.raw.as_deref()).collect();
        let mut decoded = self.values.decode_records(&raws, locate)?;
        let Some(keys) = &self.keys else {
            return Ok(decoded);
        };
        // The records whose value decoded, in order: a row each in the batch.
        let rejected: HashSet<usize> = decoded.bad.iter().map(|(i, _)| *i).collect();
        let good: Vec<usize> = (0..records.len())
            .filter(|i| !rejected.contains(i))
            .collect();
        let Some(values) = decoded.batch.take().filter(|_| !good.is_empty()) else {
            return Ok(decoded);
        };
        let key_bytes: Vec<&[u8]> = good
            .iter()
            .map(|i| records[*i].key.as_deref().unwrap_or_default())
            .collect();
        let mut key_decoded = keys.decode_records(&key_bytes, &|j| locate(good[j]))?;
        let key_rejected: HashSet<usize> = key_decoded.bad.iter().map(|(j, _)| *j).collect();
        for (j, mut letter) in std::mem::take(&mut key_decoded.bad) {
            letter.reason = format!("key: {}", letter.reason);
            letter.raw = raws[good[j]].to_vec();
            decoded.bad.push((good[j], letter));
        }
        decoded.bad.sort_by_key(|(i, _)| *i);
        let (Some(key_batch), false) = (key_decoded.batch, key_rejected.len() == good.len()) else {
            return Ok(decoded);
        };
        let keep: BooleanArray = (0..good.len())
            .map(|j| Some(!key_rejected.contains(&j)))
            .collect();
        let values = filter_record_batch(&values, &keep)?;
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|field| {
                let from_key = key_batch.column_by_name(field.name());
                let column = from_key.or_else(|| values.column_by_name(field.name()));
                column.cloned().ok_or_else(|| {
                    ArrowError::SchemaError(format!("no column {} in the replay", field.name()))
                })
            })
            .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
        decoded.batch = Some(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(decoded)
    }
}

/// Turns chunks of dead-letter files into rows.
pub struct DeadLetters {
    /// Only this stream's letters are read.
    stream: String,
    mode: Mode,
}

/// One dead letter of the stream, as read.
pub struct Letter {
    reason: String,
    location: String,
    /// The record as read, when it was a record that failed to decode.
    raw: Option<Vec<u8>>,
    /// Its Kafka key, when it was a keyed Kafka record.
    key: Option<Vec<u8>>,
    /// A row an operator rejected, as JSON.
    row: Option<String>,
    /// Where the letter itself was read: a file's line, a topic's offset.
    at: String,
}

impl DeadLetters {
    /// Decodes a chunk of a dead-letter file at `path` whose first line is
    /// `first_line`; `schema` is the stream's (possibly projected) columns.
    pub fn decode_lines(
        &self,
        text: &[u8],
        path: &str,
        first_line: u64,
        schema: &SchemaRef,
    ) -> Result<Decoded, ArrowError> {
        let letters = self.letters(text, path, first_line)?;
        self.decode(&letters, schema)
    }

    /// The letter a dead-letter topic's record holds (`kafka/dead_letters.rs`):
    /// `None` when it is another stream's. `at` is where the record is.
    pub fn letter_of_record(
        &self,
        headers: &[(&str, &[u8])],
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        at: String,
    ) -> Option<Letter> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        };
        if header("dlq.stream").as_deref() != Some(self.stream.as_str()) {
            return None;
        }
        // A rejected row is written without a location: it was no record.
        let location = header("dlq.location");
        let value = value.unwrap_or_default();
        Some(Letter {
            reason: header("dlq.reason").unwrap_or_default(),
            raw: location.is_some().then(|| value.to_vec()),
            key: key.map(<[u8]>::to_vec),
            row: location
                .is_none()
                .then(|| String::from_utf8_lossy(value).into_owned()),
            location: location.unwrap_or_default(),
            at,
        })
    }

    /// Gets ready to decode the records of `letters` again: fetches the
    /// registry schemas they name (registry formats; nothing for others).
    pub async fn prepare(&self, letters: &[Letter]) -> Result<(), String> {
        match &self.mode {
            Mode::Replay(replay) => {
                let raws: Vec<&[u8]> = letters.iter().filter_map(|l| l.raw.as_deref()).collect();
                replay.values.prepare(&raws).await?;
                if let Some(keys) = &replay.keys {
                    let key_bytes: Vec<&[u8]> =
                        letters.iter().filter_map(|l| l.key.as_deref()).collect();
                    keys.prepare(&key_bytes).await?;
                }
                Ok(())
            }
            Mode::Letters => Ok(()),
        }
    }

    /// The rows `letters` make: the letters themselves, or their records
    /// decoded again.
    pub fn decode(&self, letters: &[Letter], schema: &SchemaRef) -> Result<Decoded, ArrowError> {
        match &self.mode {
            Mode::Letters => {
                let column = |name: &str| -> ArrayRef {
                    Arc::new(
                        letters
                            .iter()
                            .map(|l| match name {
                                "stream" => Some(self.stream.clone()),
                                "reason" => Some(l.reason.clone()),
                                "location" => Some(l.location.clone()),
                                _ => l.row.clone().or_else(|| {
                                    l.raw
                                        .as_ref()
                                        .map(|r| String::from_utf8_lossy(r).into_owned())
                                }),
                            })
                            .collect::<StringArray>(),
                    )
                };
                let columns = schema.fields().iter().map(|f| column(f.name())).collect();
                Ok(Decoded::rows(RecordBatch::try_new_with_options(
                    schema.clone(),
                    columns,
                    &RecordBatchOptions::new().with_row_count(Some(letters.len())),
                )?))
            }
            Mode::Replay(replay) => {
                // Only records that failed to decode go through the decoder
                // again; a row an operator rejected is not a record.
                let records: Vec<&Letter> = letters.iter().filter(|l| l.raw.is_some()).collect();
                replay.decode(&records, &|i| {
                    let letter = records[i];
                    format!(
                        "{} (dead letter from {}: {})",
                        letter.at, letter.location, letter.reason
                    )
                })
            }
        }
    }

    /// This stream's letters among the lines of `text`.
    fn letters(&self, text: &[u8], path: &str, first_line: u64) -> Result<Vec<Letter>, ArrowError> {
        let mut letters = Vec::new();
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line_number = first_line + i as u64;
            let value: Value = serde_json::from_slice(line).map_err(|e| {
                ArrowError::ParseError(format!(
                    "line {line_number} is not a dead letter (JSON): {e}"
                ))
            })?;
            if value.get("stream").and_then(Value::as_str) != Some(self.stream.as_str()) {
                continue;
            }
            let text_of = |key: &str| {
                value
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            letters.push(Letter {
                reason: text_of("reason"),
                location: text_of("location"),
                raw: value.get("raw").map(raw_bytes).transpose()?,
                key: value
                    .get("key")
                    .filter(|k| !k.is_null())
                    .map(raw_bytes)
                    .transpose()?,
                row: value.get("row").map(Value::to_string),
                at: format!("{path}:{line_number}"),
            });
        }
        Ok(letters)
    }
}

/// A dead letter's `raw`: text, or `{"hex": ...}` for bytes that were not
/// UTF-8.
fn raw_bytes(raw: &Value) -> Result<Vec<u8>, ArrowError> {
    if let Some(text) = raw.as_str() {
        return Ok(text.as_bytes().to_vec());
    }
    let hex = raw.get("hex").and_then(Value::as_str).unwrap_or_default();
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| ArrowError::ParseError(format!("bad hex in a dead letter: {hex}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_records_are_text_or_hex() {
        assert_eq!(raw_bytes(&serde_json::json!("ab")).unwrap(), b"ab");
        assert_eq!(
            raw_bytes(&serde_json::json!({"hex": "00ff"})).unwrap(),
            vec![0, 255]
        );
        assert!(raw_bytes(&serde_json::json!({"hex": "0"})).is_err());
    }

    #[test]
    fn only_the_streams_letters_are_read() {
        let letters = DeadLetters {
            stream: "bids".into(),
            mode: Mode::Letters,
        };
        let text = br#"{"stream":"bids","reason":"bad","location":"f:1","raw":"{\"a\":1}"}
{"stream":"people","reason":"bad","location":"g:1","raw":"x"}

{"stream":"bids","reason":"late","row":{"a":2}}
"#;
        let decoded = letters
            .decode_lines(text, "dlq/x.jsonl", 10, &letter_schema())
            .unwrap();
        let batch = decoded.batch.unwrap();
        let column = |name: &str| -> Vec<Option<String>> {
            let array = batch.column_by_name(name).unwrap();
            let strings = array.as_any().downcast_ref::<StringArray>().unwrap();
            strings.iter().map(|v| v.map(str::to_string)).collect()
        };
        let some = |v: &str| Some(v.to_string());
        assert_eq!(column("reason"), vec![some("bad"), some("late")]);
        assert_eq!(column("location"), vec![some("f:1"), some("")]);
        assert_eq!(column("raw"), vec![some("{\"a\":1}"), some("{\"a\":2}")]);
    }
}
