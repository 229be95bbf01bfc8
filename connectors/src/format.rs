//! Record formats: JSON lines, CSV, raw lines, Avro records (decoding and
//! encoding), with bad records isolated instead of failing the batch.
//!
//! Decoding uses arrow-json and arrow-csv. A chunk of lines is decoded in
//! one pass; only when that fails are its lines decoded one by one, so the
//! records at fault can go to the dead-letter output with the decoder's
//! reason while every good record is kept. Timestamps parse as arrow does:
//! `yyyy-MM-dd HH:mm:ss[.SSS]` (Flink's default) and ISO-8601.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryArray, StringArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::csv;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json;
use datafusion::arrow::record_batch::RecordBatch;
use weir_engine::BadRecord;

use crate::avro::{AvroDecoder, AvroEncoder};
use crate::debezium::{self, Envelope};
use crate::options::Options;
use crate::protobuf::{ProtobufConfig, ProtobufDecoder, ProtobufEncoder};
use crate::registry::ConnectorError;
use crate::schema_registry::RegistryConfig;

/// A record format, from `'format'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv {
        delimiter: u8,
        header: bool,
    },
    Parquet,
    Raw,
    /// Debezium's change events in JSON ([`crate::debezium`]): a changelog.
    DebeziumJson(Envelope),
    /// An Avro binary body per record, written with the declared columns'
    /// schema ([`crate::avro`]).
    Avro,
    /// The schema registry's wire format: the writer schema's id, then the
    /// Avro body.
    AvroConfluent(RegistryConfig),
    /// One protobuf message per record ([`crate::protobuf`]).
    Protobuf(ProtobufConfig),
    /// The schema registry's Protobuf wire format.
    ProtobufConfluent(RegistryConfig),
}

impl Format {
    pub fn from_options(options: &Options) -> Result<Format, ConnectorError> {
        Format::from_options_for(options, "")
    }

    /// The format named by `'format'`, its own options read with `prefix`
    /// first (`value.` or `key.`, as Flink's Kafka connector names them
    /// for `value.format` and `key.format`).
    pub fn from_options_for(options: &Options, prefix: &str) -> Result<Format, ConnectorError> {
        let name = options.require("format")?.to_ascii_lowercase();
        match name.as_str() {
            "json" => Ok(Format::Json),
            "csv" => {
                let delimiter = match options.get("csv.field-delimiter") {
                    None => b',',
                    Some(d) if d.len() == 1 => d.as_bytes()[0],
                    Some("\\t") => b'\t',
                    Some(d) => {
                        return Err(ConnectorError::option(
                            "csv.field-delimiter",
                            format!("'{d}' must be one character"),
                        ))
                    }
                };
                let header = options.bool("csv.header")?.unwrap_or(false);
                Ok(Format::Csv { delimiter, header })
            }
            "parquet" => Ok(Format::Parquet),
            "raw" => Ok(Format::Raw),
            "avro" => Ok(Format::Avro),
            "protobuf" => Ok(Format::Protobuf(ProtobufConfig::from_options(options)?)),
            "protobuf-confluent" => Ok(Format::ProtobufConfluent(RegistryConfig::of_format(
                options,
                prefix,
                "protobuf-confluent",
            )?)),
            "avro-confluent" => Ok(Format::AvroConfluent(RegistryConfig::from_options(
                options, prefix,
            )?)),
            "debezium-json" => Ok(Format::DebeziumJson(
                match options.bool("debezium-json.schema-include")? {
                    Some(true) => Envelope::WithSchema,
                    _ => Envelope::Plain,
                },
            )),
            other => Err(ConnectorError::option(
                "format",
                format!(
                    "'{other}' is not json, csv, parquet, raw, debezium-json, avro, avro-confluent, protobuf or protobuf-confluent"
                ),
            )),
        }
    }

    /// Whether its records are changes (`+I`, `-U`, `+U`, `-D`) rather
    /// than rows.
    pub fn is_changelog(&self) -> bool {
        matches!(self, Format::DebeziumJson(_))
    }

    pub fn extension(&self) -> &'static str {
        match self {
            Format::Json | Format::DebeziumJson(_) => "json",
            Format::Csv { .. } => "csv",
            Format::Parquet => "parquet",
            Format::Raw => "txt",
            Format::Avro | Format::AvroConfluent(_) => "avro",
            Format::Protobuf(_) | Format::ProtobufConfluent(_) => "pb",
        }
    }

    /// The format's name, as `'format'` gives it.
    pub fn name(&self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv { .. } => "csv",
            Format::Parquet => "parquet",
            Format::Raw => "raw",
            Format::DebeziumJson(_) => "debezium-json",
            Format::Avro => "avro",
            Format::AvroConfluent(_) => "avro-confluent",
            Format::Protobuf(_) => "protobuf",
            Format::ProtobufConfluent(_) => "protobuf-confluent",
        }
    }
}

/// What decoding a set of records gave: the good rows, and each bad
/// record with its index among the records given.
#[derive(Debug, Default)]
pub struct Decoded {
    pub batch: Option<RecordBatch>,
    pub bad: Vec<(usize, BadRecord)>,
}

impl Decoded {
    /// Good rows, with no bad records.
    pub fn rows(batch: RecordBatch) -> Self {
        Decoded {
            batch: Some(batch),
            bad: Vec::new(),
        }
    }

    /// How many good rows it holds.
    pub fn num_rows(&self) -> u64 {
        self.batch.as_ref().map_or(0, |b| b.num_rows() as u64)
    }

    /// The bad records, without their indices.
    pub fn bad_records(&mut self) -> Vec<BadRecord> {
        std::mem::take(&mut self.bad)
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    }
}

/// A record inside a text: its index among the records given, and its bytes.
struct Span {
    index: usize,
    range: Range<usize>,
}

/// Decodes records of a line-oriented format into batches of `schema`.
///
/// A set of records is decoded in one call of arrow's decoder, straight
/// from the bytes as read; only when that fails, or finds another number of
/// rows than records, are the records decoded one by one, so that the bad
/// ones go to the dead-letter output with the decoder's reason and where
/// they came from, while every good record is kept. Where a record came
/// from is worked out only for a bad one.
pub struct LineDecoder {
    format: Format,
    schema: SchemaRef,
    /// What arrow's decoder reads: `schema`, or a change event's envelope.
    records: SchemaRef,
    stream: String,
    /// Set for the formats whose records are not lines.
    codec: Option<RecordDecoder>,
}

/// A decoder of separate records that are not lines.
enum RecordDecoder {
    Avro(AvroDecoder),
    Protobuf(Box<ProtobufDecoder>),
}

impl LineDecoder {
    pub fn new(
        format: Format,
        schema: SchemaRef,
        stream: impl Into<String>,
    ) -> Result<Self, ConnectorError> {
        if format == Format::Raw
            && (schema.fields().len() != 1
                || !matches!(
                    schema.field(0).data_type(),
                    DataType::Utf8 | DataType::Binary
                ))
        {
            return Err(ConnectorError::option(
                "format",
                "'raw' needs exactly one VARCHAR or BYTES column",
            ));
        }
        let records = match &format {
            Format::DebeziumJson(envelope) => debezium::envelope_schema(&schema, *envelope),
            _ => schema.clone(),
        };
        let stream = stream.into();
        let codec =
            match &format {
                Format::Avro => Some(RecordDecoder::Avro(
                    AvroDecoder::plain(schema.clone(), stream.clone())
                        .map_err(|e| ConnectorError::option("format", e))?,
                )),
                Format::AvroConfluent(registry) => Some(RecordDecoder::Avro(
                    AvroDecoder::confluent(schema.clone(), stream.clone(), registry.clone()),
                )),
                Format::Protobuf(config) => Some(RecordDecoder::Protobuf(Box::new(
                    ProtobufDecoder::new(config, schema.clone(), stream.clone())?,
                ))),
                Format::ProtobufConfluent(registry) => Some(RecordDecoder::Protobuf(Box::new(
                    ProtobufDecoder::confluent(registry, schema.clone(), stream.clone())?,
                ))),
                _ => None,
            };
        Ok(LineDecoder {
            format,
            schema,
            records,
            stream,
            codec,
        })
    }

    /// Gets ready to decode `records`: fetches the writer schemas of
    /// `avro-confluent` records not seen before (nothing for the others).
    pub async fn prepare(&self, records: &[&[u8]]) -> Result<(), String> {
        match &self.codec {
            Some(RecordDecoder::Avro(avro)) => avro.prepare(records).await,
            Some(RecordDecoder::Protobuf(protobuf)) => protobuf.prepare(records).await,
            None => Ok(()),
        }
    }

    /// Decodes the lines of `text` (a chunk of a file). Blank lines are
    /// skipped; a bad line's index is its position in the chunk, and
    /// `locate` says where line `i` of the chunk is.
    pub fn decode_lines(
        &self,
        text: &[u8],
        locate: &dyn Fn(usize) -> String,
    ) -> Result<Decoded, ArrowError> {
        let mut spans = Vec::new();
        let mut blank = false;
        let mut start = 0;
        let mut index = 0;
        let mut record = |start: usize, end: usize, index: usize, spans: &mut Vec<Span>| {
            let line = &text[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                blank = true;
            } else {
                spans.push(Span {
                    index,
                    range: start..start + line.len(),
                });
            }
        };
        for newline in memchr::memchr_iter(b'\n', text) {
            record(start, newline, index, &mut spans);
            start = newline + 1;
            index += 1;
        }
        if start < text.len() {
            record(start, text.len(), index, &mut spans);
        }
        // Blank lines are whitespace to JSON, but rows to CSV.
        let as_is = !blank || self.format == Format::Json;
        self.decode_spans(text, &spans, as_is, locate)
    }

    /// Decodes separate records (Kafka messages); a bad record's index is
    /// its position in `records`.
    pub fn decode_records(
        &self,
        records: &[&[u8]],
        locate: &dyn Fn(usize) -> String,
    ) -> Result<Decoded, ArrowError> {
        match &self.codec {
            Some(RecordDecoder::Avro(avro)) => return avro.decode_records(records, locate),
            Some(RecordDecoder::Protobuf(protobuf)) => {
                return protobuf.decode_records(records, locate)
            }
            None => {}
        }
        let mut text = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum());
        let mut spans = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let start = text.len();
            text.extend_from_slice(record);
            spans.push(Span {
                index,
                range: start..text.len(),
            });
            text.push(b'\n');
        }
        self.decode_spans(&text, &spans, true, locate)
    }

    /// Decodes the records at `spans` of `text`. With `as_is`, the text
    /// between them is only line breaks (and whitespace where the format
    /// allows), so the whole text is decoded in one call; otherwise the
    /// records are joined first.
    fn decode_spans(
        &self,
        text: &[u8],
        spans: &[Span],
        as_is: bool,
        locate: &dyn Fn(usize) -> String,
    ) -> Result<Decoded, ArrowError> {
        let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
            return Ok(Decoded::default());
        };
        if let Format::Raw = self.format {
            return Ok(Decoded {
                batch: Some(self.raw(text, spans)?),
                bad: Vec::new(),
            });
        }
        let fast = if as_is {
            self.decode_bytes(&text[first.range.start..last.range.end], spans.len())
        } else {
            let mut joined = Vec::with_capacity(spans.iter().map(|s| s.range.len() + 1).sum());
            for span in spans {
                joined.extend_from_slice(&text[span.range.clone()]);
                joined.push(b'\n');
            }
            self.decode_bytes(&joined, spans.len())
        };
        if let Ok(batch) = fast {
            if batch.num_rows() == spans.len() {
                if let Ok(batch) = self.rows(batch) {
                    return Ok(Decoded {
                        batch: Some(batch),
                        bad: Vec::new(),
                    });
                }
            }
        }
        // Something is bad: find it record by record.
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for span in spans {
            let bytes = &text[span.range.clone()];
            let reason = match self.decode_bytes(bytes, 1) {
                Ok(batch) if batch.num_rows() == 1 => match self.rows(batch) {
                    Ok(batch) => {
                        good.push(batch);
                        continue;
                    }
                    Err(reason) => reason,
                },
                Ok(_) => "the line holds no record or more than one".to_string(),
                Err(e) => e.to_string(),
            };
            bad.push((
                span.index,
                BadRecord {
                    stream: self.stream.clone(),
                    reason,
                    location: locate(span.index),
                    raw: bytes.to_vec(),
                    kafka: None,
                },
            ));
        }
        let batch = match good.first() {
            None => None,
            Some(first) => Some(concat_batches(&first.schema(), &good)?),
        };
        Ok(Decoded { batch, bad })
    }

    /// Decoded records as rows: themselves, or a change event's changes.
    fn rows(&self, records: RecordBatch) -> Result<RecordBatch, String> {
        match self.format {
            Format::DebeziumJson(_) => debezium::changes(&records, &self.schema),
            _ => Ok(records),
        }
    }

    /// `bytes`, holding `rows` records, decoded by arrow's decoder.
    fn decode_bytes(&self, bytes: &[u8], rows: usize) -> Result<RecordBatch, ArrowError> {
        let rows = rows.max(1);
        let stuck = || ArrowError::ParseError("the decoder made no progress".into());
        let mut batches = Vec::new();
        match &self.format {
            Format::Json | Format::DebeziumJson(_) => {
                let mut decoder = json::ReaderBuilder::new(self.records.clone())
                    .with_batch_size(rows)
                    .with_strict_mode(false)
                    .build_decoder()?;
                let mut rest = bytes;
                while !rest.is_empty() {
                    let read = decoder.decode(rest)?;
                    rest = &rest[read..];
                    if read == 0 {
                        // The batch is full.
                        batches.push(decoder.flush()?.ok_or_else(stuck)?);
                    }
                }
                batches.extend(decoder.flush()?);
            }
            Format::Csv { delimiter, .. } => {
                let mut decoder = csv::ReaderBuilder::new(self.schema.clone())
                    .with_delimiter(*delimiter)
                    .with_header(false)
                    .with_batch_size(rows)
                    .build_decoder();
                let mut rest = bytes;
                loop {
                    // Once the bytes are used up, an empty call ends the
                    // last record.
                    let read = decoder.decode(rest)?;
                    rest = &rest[read..];
                    if read == 0 {
                        match decoder.flush()? {
                            Some(batch) => batches.push(batch),
                            None if rest.is_empty() => break,
                            None => return Err(stuck()),
                        }
                    }
                }
            }
            Format::Parquet
            | Format::Raw
            | Format::Avro
            | Format::AvroConfluent(_)
            | Format::Protobuf(_)
            | Format::ProtobufConfluent(_) => {
                return Err(ArrowError::InvalidArgumentError("not a line format".into()))
            }
        }
        match batches.len() {
            1 => Ok(batches.remove(0)),
            _ => concat_batches(&self.records, &batches),
        }
    }

    fn raw(&self, text: &[u8], spans: &[Span]) -> Result<RecordBatch, ArrowError> {
        let lines = spans.iter().map(|s| &text[s.range.clone()]);
        let column: ArrayRef = match self.schema.field(0).data_type() {
            DataType::Utf8 => Arc::new(StringArray::from_iter(
                lines.map(|l| Some(String::from_utf8_lossy(l).into_owned())),
            )),
            _ => Arc::new(BinaryArray::from_iter(lines.map(Some))),
        };
        RecordBatch::try_new(self.schema.clone(), vec![column])
    }
}

/// Encodes batches in a line format.
pub fn encode_lines(
    format: &Format,
    batch: &RecordBatch,
    out: &mut Vec<u8>,
    with_header: bool,
) -> Result<(), ArrowError> {
    match format {
        Format::Json => {
            let mut writer = json::LineDelimitedWriter::new(out);
            writer.write(batch)?;
            writer.finish()
        }
        Format::Csv { delimiter, .. } => {
            let mut writer = csv::WriterBuilder::new()
                .with_delimiter(*delimiter)
                .with_header(with_header)
                .build(out);
            writer.write(batch)
        }
        Format::Raw => {
            let column = datafusion::arrow::util::display::ArrayFormatter::try_new(
                batch.column(0).as_ref(),
                &Default::default(),
            )?;
            for row in 0..batch.num_rows() {
                out.extend_from_slice(column.value(row).to_string().as_bytes());
                out.push(b'\n');
            }
            Ok(())
        }
        Format::DebeziumJson(envelope) => debezium::encode(batch, *envelope, out),
        Format::Parquet
        | Format::Avro
        | Format::AvroConfluent(_)
        | Format::Protobuf(_)
        | Format::ProtobufConfluent(_) => Err(ArrowError::InvalidArgumentError(format!(
            "{} is not a line format",
            format.name()
        ))),
    }
}

/// Encodes each row of a batch as one record (a Kafka message).
pub enum RowEncoder {
    /// A line format: each row's line, without its line break.
    Lines(Format),
    Avro(AvroEncoder),
    Protobuf(Box<ProtobufEncoder>),
}

impl RowEncoder {
    pub fn new(format: &Format) -> Result<Self, ConnectorError> {
        Ok(match format {
            Format::ProtobufConfluent(registry) => {
                RowEncoder::Protobuf(Box::new(ProtobufEncoder::confluent(registry)))
            }
            Format::Avro => RowEncoder::Avro(AvroEncoder::plain()),
            Format::AvroConfluent(registry) => {
                RowEncoder::Avro(AvroEncoder::confluent(registry.clone()))
            }
            Format::Protobuf(config) => {
                RowEncoder::Protobuf(Box::new(ProtobufEncoder::new(config)?))
            }
            other => RowEncoder::Lines(other.clone()),
        })
    }

    /// Gets ready to write rows of `schema` to `topic`: registers their
    /// Avro schema or `.proto` text with the schema registry (once).
    pub async fn prepare(
        &mut self,
        schema: &datafusion::arrow::datatypes::Schema,
        topic: &str,
        is_key: bool,
    ) -> Result<(), String> {
        match self {
            RowEncoder::Avro(avro) => avro.prepare(schema, topic, is_key).await,
            RowEncoder::Protobuf(protobuf) => protobuf.prepare(schema, topic, is_key).await,
            RowEncoder::Lines(_) => Ok(()),
        }
    }

    /// Each row of `batch`, encoded on its own (a changelog format's with
    /// the row kinds of the batch, if it has them).
    pub fn encode_rows(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
        let format = match self {
            RowEncoder::Avro(avro) => return avro.encode_rows(batch),
            RowEncoder::Protobuf(protobuf) => return protobuf.encode_rows(batch),
            RowEncoder::Lines(format) => format,
        };
        let mut buffer = Vec::new();
        encode_lines(format, batch, &mut buffer, false)?;
        let mut rows: Vec<Vec<u8>> = buffer.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        rows.truncate(batch.num_rows());
        if rows.len() != batch.num_rows() {
            return Err(ArrowError::InvalidArgumentError(
                "a row encoded to more than one line".into(),
            ));
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    /// Decodes `texts` as separate records, located as `line N`.
    fn decode(d: &LineDecoder, texts: &[&str]) -> (Option<RecordBatch>, Vec<BadRecord>) {
        let records: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        let mut decoded = d
            .decode_records(&records, &|i| format!("line {}", i + 1))
            .unwrap();
        let bad = decoded.bad_records();
        (decoded.batch, bad)
    }

    #[test]
    fn json_bad_lines_are_isolated_with_reasons() {
        let d = LineDecoder::new(Format::Json, schema(), "s").unwrap();
        let (batch, bad) = decode(
            &d,
            &[
                r#"{"id": 1, "ts": "2024-01-01 00:00:01.500"}"#,
                r#"{"id": "x", "ts": "2024-01-01 00:00:02"}"#,
                r#"{"id": 3, "unknown": true}"#,
                r#"not json"#,
                r#"{"id": 5, "ts": "2024-01-01T00:00:05Z"}"#,
            ],
        );
        let batch = batch.unwrap();
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values().to_vec(), vec![1, 3, 5]);
        let ts = batch
            .column(1)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(ts.value(0), 1_704_067_201_500);
        assert!(ts.is_null(1), "a missing field is null");
        assert_eq!(ts.value(2), 1_704_067_205_000);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].location, "line 2");
        assert_eq!(bad[1].location, "line 4");
        assert_eq!(bad[1].raw, b"not json");
    }

    #[test]
    fn a_missing_not_null_field_is_bad_a_missing_nullable_one_is_null() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]));
        let d = LineDecoder::new(Format::Json, schema, "s").unwrap();
        let (batch, bad) = decode(&d, &[r#"{"ts": "2024-01-01 00:00:00"}"#, r#"{"id": 2}"#]);
        assert_eq!(batch.unwrap().num_rows(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].location, "line 2");
    }

    #[test]
    fn csv_decodes_and_isolates() {
        let d = LineDecoder::new(
            Format::Csv {
                delimiter: b',',
                header: false,
            },
            schema(),
            "s",
        )
        .unwrap();
        let (batch, bad) = decode(&d, &["1,2024-01-01 00:00:00", "oops,2024-01-01", "2,"]);
        assert_eq!(batch.unwrap().num_rows(), 2);
        assert_eq!(bad.len(), 1);
    }

    /// A chunk of a file: blank lines skipped (CSV too), `\r\n` endings,
    /// a last line without a newline, and bad lines numbered in the chunk.
    #[test]
    fn lines_of_a_chunk_decode_in_place() {
        let csv = LineDecoder::new(
            Format::Csv {
                delimiter: b',',
                header: false,
            },
            schema(),
            "s",
        )
        .unwrap();
        let text = b"1,2024-01-01 00:00:00\r\n\n  \noops,x\n2,2024-01-01 00:00:01";
        let mut decoded = csv.decode_lines(text, &|i| format!("at {i}")).unwrap();
        let ids = decoded.batch.as_ref().unwrap().column(0).clone();
        let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.values().to_vec(), vec![1, 2]);
        let bad = decoded.bad_records();
        assert_eq!(bad.len(), 1);
        assert_eq!(
            (bad[0].location.as_str(), bad[0].raw.as_slice()),
            ("at 3", &b"oops,x"[..])
        );

        let json = LineDecoder::new(Format::Json, schema(), "s").unwrap();
        let text = b"{\"id\": 1}\r\n\n{\"id\": 2} {\"id\": 3}\n{\"id\": 4}";
        let mut decoded = json.decode_lines(text, &|i| format!("at {i}")).unwrap();
        assert_eq!(decoded.batch.as_ref().unwrap().num_rows(), 2);
        let bad = decoded.bad_records();
        assert_eq!(bad[0].location, "at 2", "two records on one line are bad");
    }
}
