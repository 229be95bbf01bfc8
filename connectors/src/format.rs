//! Record formats: JSON lines, CSV, raw lines (decoding and encoding), with
//! bad records isolated instead of failing the batch.
//!
//! Decoding uses arrow-json and arrow-csv. A chunk of lines is decoded in
//! one pass; only when that fails are its lines decoded one by one, so the
//! records at fault can go to the dead-letter output with the decoder's
//! reason while every good record is kept. Timestamps parse as arrow does:
//! `yyyy-MM-dd HH:mm:ss[.SSS]` (Flink's default) and ISO-8601.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryArray, StringArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::csv;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json;
use datafusion::arrow::record_batch::RecordBatch;
use weir_engine::BadRecord;

use crate::options::Options;
use crate::registry::ConnectorError;

/// A record format, from `'format'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv { delimiter: u8, header: bool },
    Parquet,
    Raw,
}

impl Format {
    pub fn from_options(options: &Options) -> Result<Format, ConnectorError> {
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
            other => Err(ConnectorError::option(
                "format",
                format!("'{other}' is not json, csv, parquet or raw"),
            )),
        }
    }

    pub fn extension(&self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv { .. } => "csv",
            Format::Parquet => "parquet",
            Format::Raw => "txt",
        }
    }
}

/// One line of input and where it came from.
pub struct Line<'a> {
    pub bytes: &'a [u8],
    pub location: String,
}

/// Decodes lines of a line-oriented format into batches of `schema`.
pub struct LineDecoder {
    format: Format,
    schema: SchemaRef,
    stream: String,
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
        Ok(LineDecoder {
            format,
            schema,
            stream: stream.into(),
        })
    }

    /// Decodes `lines`: the good rows, and a [`BadRecord`] per bad line.
    pub fn decode(
        &self,
        lines: &[Line<'_>],
    ) -> Result<(Option<RecordBatch>, Vec<BadRecord>), ArrowError> {
        if lines.is_empty() {
            return Ok((None, Vec::new()));
        }
        if let Format::Raw = self.format {
            return Ok((Some(self.raw(lines)?), Vec::new()));
        }
        let mut joined = Vec::with_capacity(lines.iter().map(|l| l.bytes.len() + 1).sum());
        for line in lines {
            joined.extend_from_slice(line.bytes);
            joined.push(b'\n');
        }
        match self.decode_bytes(&joined, lines.len()) {
            Ok(batch) if batch.num_rows() == lines.len() => return Ok((Some(batch), Vec::new())),
            _ => {}
        }
        // Something in the chunk is bad: find it line by line.
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for line in lines {
            let mut bytes = line.bytes.to_vec();
            bytes.push(b'\n');
            match self.decode_bytes(&bytes, 1) {
                Ok(batch) if batch.num_rows() == 1 => good.push(batch),
                Ok(_) => bad.push(self.bad(line, "the line holds no record or more than one")),
                Err(e) => bad.push(self.bad(line, &e.to_string())),
            }
        }
        let batch = if good.is_empty() {
            None
        } else {
            Some(concat_batches(&self.schema, &good)?)
        };
        Ok((batch, bad))
    }

    fn bad(&self, line: &Line<'_>, reason: &str) -> BadRecord {
        BadRecord {
            stream: self.stream.clone(),
            reason: reason.to_string(),
            location: line.location.clone(),
            raw: line.bytes.to_vec(),
        }
    }

    fn decode_bytes(&self, bytes: &[u8], rows: usize) -> Result<RecordBatch, ArrowError> {
        let batches: Vec<RecordBatch> = match &self.format {
            Format::Json => json::ReaderBuilder::new(self.schema.clone())
                .with_batch_size(rows.max(1))
                .with_strict_mode(false)
                .build(Cursor::new(bytes))?
                .collect::<Result<_, _>>()?,
            Format::Csv { delimiter, .. } => csv::ReaderBuilder::new(self.schema.clone())
                .with_delimiter(*delimiter)
                .with_header(false)
                .with_batch_size(rows.max(1))
                .build(Cursor::new(bytes))?
                .collect::<Result<_, _>>()?,
            Format::Parquet | Format::Raw => {
                return Err(ArrowError::InvalidArgumentError("not a line format".into()))
            }
        };
        concat_batches(&self.schema, &batches)
    }

    fn raw(&self, lines: &[Line<'_>]) -> Result<RecordBatch, ArrowError> {
        let column: ArrayRef = match self.schema.field(0).data_type() {
            DataType::Utf8 => Arc::new(StringArray::from_iter(
                lines
                    .iter()
                    .map(|l| Some(String::from_utf8_lossy(l.bytes).into_owned())),
            )),
            _ => Arc::new(BinaryArray::from_iter(lines.iter().map(|l| Some(l.bytes)))),
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
        Format::Parquet => Err(ArrowError::InvalidArgumentError(
            "parquet is not a line format".into(),
        )),
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

    fn lines(texts: &[&'static str]) -> Vec<Line<'static>> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| Line {
                bytes: t.as_bytes(),
                location: format!("line {}", i + 1),
            })
            .collect()
    }

    #[test]
    fn json_bad_lines_are_isolated_with_reasons() {
        let d = LineDecoder::new(Format::Json, schema(), "s").unwrap();
        let (batch, bad) = d
            .decode(&lines(&[
                r#"{"id": 1, "ts": "2024-01-01 00:00:01.500"}"#,
                r#"{"id": "x", "ts": "2024-01-01 00:00:02"}"#,
                r#"{"id": 3, "unknown": true}"#,
                r#"not json"#,
                r#"{"id": 5, "ts": "2024-01-01T00:00:05Z"}"#,
            ]))
            .unwrap();
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
        let (batch, bad) = d
            .decode(&lines(&[
                r#"{"ts": "2024-01-01 00:00:00"}"#,
                r#"{"id": 2}"#,
            ]))
            .unwrap();
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
        let (batch, bad) = d
            .decode(&lines(&["1,2024-01-01 00:00:00", "oops,2024-01-01", "2,"]))
            .unwrap();
        assert_eq!(batch.unwrap().num_rows(), 2);
        assert_eq!(bad.len(), 1);
    }
}
