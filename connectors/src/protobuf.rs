//! Protobuf records (`'format' = 'protobuf'`): each Kafka record is one
//! message of `'protobuf.message-class-name'` (the message's full name;
//! Flink's option names the Java class generated for it), described by
//! the `.proto` file `'protobuf.schema-file'`, compiled when the table is
//! opened (protox, a protobuf compiler in Rust).
//!
//! Messages decode with prost-reflect and become rows through protobuf's
//! JSON mapping (field names as in the `.proto` file, 64-bit integers as
//! numbers, enums by name, `google.protobuf.Timestamp` as RFC 3339),
//! read by the JSON decoder against the declared columns. So a field the
//! message does not set is NULL (Flink's `'protobuf.read-default-values'`
//! = `false`; `true` reads proto3 defaults instead), a field the table
//! does not declare is skipped, and a value that does not fit its column
//! is a dead letter with the JSON decoder's reason; bytes that are not a
//! message are a dead letter too. Writing goes the other way: a row's JSON
//! parsed into the message and encoded.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions};
use weir_engine::BadRecord;

use crate::format::{Decoded, Format, LineDecoder, RowEncoder};
use crate::options::Options;
use crate::registry::ConnectorError;

/// What `'protobuf.*'` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtobufConfig {
    /// The `.proto` file that defines the message.
    pub schema_file: String,
    /// The message's full name (`package.Message`).
    pub message: String,
    /// Read a field the message does not set as its default, not NULL.
    pub read_default_values: bool,
}

/// The `protobuf` options a table may set.
pub const PROTOBUF_OPTIONS: &[&str] = &[
    "protobuf.schema-file",
    "protobuf.message-class-name",
    "protobuf.read-default-values",
];

impl ProtobufConfig {
    pub fn from_options(options: &Options) -> Result<Self, ConnectorError> {
        let schema_file = options.get("protobuf.schema-file").ok_or_else(|| {
            ConnectorError::option(
                "protobuf.schema-file",
                "is required with 'protobuf': the .proto file that defines the message",
            )
        })?;
        let message = options.get("protobuf.message-class-name").ok_or_else(|| {
            ConnectorError::option(
                "protobuf.message-class-name",
                "is required with 'protobuf': the message's full name, e.g. 'shop.Bid'",
            )
        })?;
        Ok(ProtobufConfig {
            schema_file: schema_file.to_string(),
            message: message.to_string(),
            read_default_values: options
                .bool("protobuf.read-default-values")?
                .unwrap_or(false),
        })
    }

    /// Compiles the `.proto` file (imports resolve next to it) and finds
    /// the message.
    pub fn descriptor(&self) -> Result<MessageDescriptor, ConnectorError> {
        let path = Path::new(&self.schema_file);
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        let failed = |e: &dyn std::fmt::Display| {
            ConnectorError::option("protobuf.schema-file", format!("{}: {e}", self.schema_file))
        };
        let mut compiler = protox::Compiler::new([dir]).map_err(|e| failed(&e))?;
        compiler.open_file(path).map_err(|e| failed(&e))?;
        compiler
            .descriptor_pool()
            .get_message_by_name(&self.message)
            .ok_or_else(|| {
                ConnectorError::option(
                    "protobuf.message-class-name",
                    format!(
                        "'{}' is not a message of {}",
                        self.message, self.schema_file
                    ),
                )
            })
    }
}

/// Decodes protobuf messages into rows of the declared columns.
pub struct ProtobufDecoder {
    stream: String,
    message: MessageDescriptor,
    json: LineDecoder,
    options: SerializeOptions,
}

impl ProtobufDecoder {
    pub fn new(
        config: &ProtobufConfig,
        schema: SchemaRef,
        stream: String,
    ) -> Result<Self, ConnectorError> {
        Ok(ProtobufDecoder {
            message: config.descriptor()?,
            json: LineDecoder::new(Format::Json, schema, stream.clone())?,
            stream,
            options: SerializeOptions::new()
                .use_proto_field_name(true)
                .stringify_64_bit_integers(false)
                .skip_default_fields(!config.read_default_values),
        })
    }

    /// Decodes separate records; a bad record's index is its position in
    /// `records`.
    pub fn decode_records(
        &self,
        records: &[&[u8]],
        locate: &dyn Fn(usize) -> String,
    ) -> Result<Decoded, ArrowError> {
        let mut texts = Vec::with_capacity(records.len());
        let mut from = Vec::with_capacity(records.len());
        let mut bad = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let text = DynamicMessage::decode(self.message.clone(), *record)
                .map_err(|e| format!("not a {} message: {e}", self.message.full_name()))
                .and_then(|m| {
                    let mut out = serde_json::Serializer::new(Vec::new());
                    m.serialize_with_options(&mut out, &self.options)
                        .map_err(|e| e.to_string())?;
                    Ok(out.into_inner())
                });
            match text {
                Ok(text) => {
                    texts.push(text);
                    from.push(i);
                }
                Err(reason) => bad.push((i, self.bad(reason, locate(i), record))),
            }
        }
        let refs: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
        let mut decoded = self.json.decode_records(&refs, &|j| locate(from[j]))?;
        for (j, letter) in decoded.bad.iter_mut() {
            // The dead letter keeps the record as it was read.
            letter.raw = records[from[*j]].to_vec();
            *j = from[*j];
        }
        decoded.bad.extend(bad);
        decoded.bad.sort_by_key(|(i, _)| *i);
        Ok(decoded)
    }

    fn bad(&self, reason: String, location: String, raw: &[u8]) -> BadRecord {
        BadRecord {
            stream: self.stream.clone(),
            reason,
            location,
            raw: raw.to_vec(),
            kafka: None,
        }
    }
}

/// Encodes rows as protobuf messages.
pub struct ProtobufEncoder {
    message: MessageDescriptor,
    json: Arc<RowEncoder>,
}

impl ProtobufEncoder {
    pub fn new(config: &ProtobufConfig) -> Result<Self, ConnectorError> {
        Ok(ProtobufEncoder {
            message: config.descriptor()?,
            json: Arc::new(RowEncoder::new(&Format::Json)?),
        })
    }

    /// Each row of `batch` as one message.
    pub fn encode_rows(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
        // TIMESTAMPs as instants with an offset, as RFC 3339 (and so
        // `google.protobuf.Timestamp`) wants them.
        let schema = Arc::new(crate::avro::utc_timestamps(batch.schema_ref()));
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| cast(c, f.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(schema, columns)?;
        self.json
            .encode_rows(&batch)?
            .into_iter()
            .map(|json| {
                let mut reader = serde_json::Deserializer::from_slice(&json);
                let message = DynamicMessage::deserialize(self.message.clone(), &mut reader)
                    .map_err(|e| {
                        ArrowError::InvalidArgumentError(format!(
                            "a row does not fit {}: {e}",
                            self.message.full_name()
                        ))
                    })?;
                Ok(message.encode_to_vec())
            })
            .collect()
    }
}
