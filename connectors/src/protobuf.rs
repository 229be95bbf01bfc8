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
//!
//! `'format' = 'protobuf-confluent'` reads the schema registry's Protobuf
//! wire format: a zero byte, the schema id, the message indexes (which
//! message of the `.proto` file), then the message. The `.proto` text is
//! fetched by id once and compiled with the files its references name;
//! the record names its message. A schema that does not compile, an
//! unknown id or index is a dead letter. Writing it registers a `.proto`
//! made from the written columns ([`proto_schema_of`]) and frames each
//! message with its id and message index `[0]`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions};
use weir_engine::BadRecord;

use crate::format::{Decoded, Format, LineDecoder, RowEncoder};
use crate::options::Options;
use crate::registry::ConnectorError;
use crate::schema_registry::{
    frame, RegisteredSchema, RegistryConfig, SchemaCache, SchemaRegistry, MAGIC,
};

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

/// Which message a record holds.
enum Messages {
    /// Always this one (`protobuf`).
    Fixed(MessageDescriptor),
    /// The one the record names, from the `.proto` file the registry
    /// holds under the record's schema id (`protobuf-confluent`).
    Registry {
        registry: SchemaRegistry,
        files: SchemaCache<prost_reflect::FileDescriptor>,
    },
}

/// Decodes protobuf messages into rows of the declared columns.
pub struct ProtobufDecoder {
    stream: String,
    messages: Messages,
    json: LineDecoder,
    options: SerializeOptions,
}

impl ProtobufDecoder {
    pub fn new(
        config: &ProtobufConfig,
        schema: SchemaRef,
        stream: String,
    ) -> Result<Self, ConnectorError> {
        ProtobufDecoder::with(
            Messages::Fixed(config.descriptor()?),
            config.read_default_values,
            schema,
            stream,
        )
    }

    /// `protobuf-confluent`: messages named by the record, schemas from
    /// the registry.
    pub fn confluent(
        registry: &RegistryConfig,
        schema: SchemaRef,
        stream: String,
    ) -> Result<Self, ConnectorError> {
        let messages = Messages::Registry {
            registry: SchemaRegistry::new(registry.clone()),
            files: Mutex::new(HashMap::new()),
        };
        ProtobufDecoder::with(messages, false, schema, stream)
    }

    fn with(
        messages: Messages,
        read_default_values: bool,
        schema: SchemaRef,
        stream: String,
    ) -> Result<Self, ConnectorError> {
        Ok(ProtobufDecoder {
            messages,
            json: LineDecoder::new(Format::Json, schema, stream.clone())?,
            stream,
            options: SerializeOptions::new()
                .use_proto_field_name(true)
                .stringify_64_bit_integers(false)
                .skip_default_fields(!read_default_values),
        })
    }

    /// The stream whose records it decodes.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Fetches and compiles the `.proto` files of `records` not seen
    /// before (`protobuf-confluent`; [`SchemaRegistry::fetch_missing`]).
    pub async fn prepare(&self, records: &[&[u8]]) -> Result<(), String> {
        match &self.messages {
            Messages::Registry { registry, files } => {
                registry
                    .fetch_missing(records, files, |id, schema| {
                        if schema.schema_type != "PROTOBUF" {
                            return Err(format!("a {} schema, not Protobuf", schema.schema_type));
                        }
                        compile(
                            &format!("schema-{id}.proto"),
                            &schema.text,
                            &schema.references,
                        )
                    })
                    .await
            }
            Messages::Fixed(_) => Ok(()),
        }
    }

    /// The message a record holds, and its bytes.
    fn message_of<'a>(&self, record: &'a [u8]) -> Result<(MessageDescriptor, &'a [u8]), String> {
        let files = match &self.messages {
            Messages::Fixed(message) => return Ok((message.clone(), record)),
            Messages::Registry { files, .. } => files,
        };
        let (id, rest) = frame(record)?;
        let file = files
            .lock()
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("schema id {id} was not fetched"))?;
        let file = file
            .as_ref()
            .as_ref()
            .map_err(|e| format!("schema id {id}: {e}"))?;
        let (indexes, body) = message_indexes(rest)
            .ok_or_else(|| format!("schema id {id}: the message indexes are cut short"))?;
        let mut message = indexes
            .first()
            .and_then(|i| file.messages().nth(*i))
            .ok_or_else(|| format!("schema id {id}: no message at {indexes:?}"))?;
        for i in &indexes[1..] {
            let child = message.child_messages().nth(*i);
            message = child.ok_or_else(|| format!("schema id {id}: no message at {indexes:?}"))?;
        }
        Ok((message, body))
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
            let text = self
                .message_of(record)
                .and_then(|(message, body)| {
                    DynamicMessage::decode(message.clone(), body)
                        .map_err(|e| format!("not a {} message: {e}", message.full_name()))
                })
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

/// Which message rows are written as.
enum Written {
    /// The configured one (`protobuf`).
    Fixed(MessageDescriptor),
    /// One generated from the written columns and registered under the
    /// topic's subject (`protobuf-confluent`), once known: its id and
    /// message.
    Registry {
        registry: SchemaRegistry,
        registered: Option<(u32, MessageDescriptor)>,
    },
}

/// Encodes rows as protobuf messages.
pub struct ProtobufEncoder {
    written: Written,
    json: RowEncoder,
}

impl ProtobufEncoder {
    pub fn new(config: &ProtobufConfig) -> Result<Self, ConnectorError> {
        Ok(ProtobufEncoder {
            written: Written::Fixed(config.descriptor()?),
            json: RowEncoder::Lines(Format::Json),
        })
    }

    /// `protobuf-confluent`: a message made from the columns, framed with
    /// the id the registry gives its `.proto` text.
    pub fn confluent(registry: &RegistryConfig) -> Self {
        ProtobufEncoder {
            written: Written::Registry {
                registry: SchemaRegistry::new(registry.clone()),
                registered: None,
            },
            json: RowEncoder::Lines(Format::Json),
        }
    }

    /// Registers the `.proto` text of `schema`'s columns under the subject
    /// for `topic` (`protobuf-confluent`), once.
    pub async fn prepare(
        &mut self,
        schema: &Schema,
        topic: &str,
        is_key: bool,
    ) -> Result<(), String> {
        let Written::Registry {
            registry,
            registered: registered @ None,
        } = &mut self.written
        else {
            return Ok(());
        };
        let name = crate::avro::record_name(topic, is_key);
        let text = proto_schema_of(schema, &name)?;
        let file = compile("written.proto", &text, &[])
            .map_err(|e| format!("the .proto made from the columns does not compile: {e}"))?;
        let message = file
            .messages()
            .next()
            .ok_or_else(|| format!("the .proto made from the columns has no message: {text}"))?;
        let subject = registry.subject(topic, is_key);
        let id = registry.register(&subject, &text, "PROTOBUF").await?;
        *registered = Some((id, message));
        Ok(())
    }

    /// Each row of `batch` as one message.
    pub fn encode_rows(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
        let (message, frame) = match &self.written {
            Written::Fixed(message) => (message, Vec::new()),
            Written::Registry {
                registered: Some((id, message)),
                ..
            } => {
                // The first message of the file: message index [0], which
                // the registry's wire format writes as a lone 0.
                let mut frame = vec![MAGIC];
                frame.extend(id.to_be_bytes());
                frame.push(0);
                (message, frame)
            }
            Written::Registry {
                registered: None, ..
            } => {
                return Err(ArrowError::InvalidArgumentError(
                    "the schema was not registered".into(),
                ))
            }
        };
        self.json
            .encode_rows(&json_ready(batch)?)?
            .into_iter()
            .map(|json| {
                let mut reader = serde_json::Deserializer::from_slice(&json);
                let row =
                    DynamicMessage::deserialize(message.clone(), &mut reader).map_err(|e| {
                        ArrowError::InvalidArgumentError(format!(
                            "a row does not fit {}: {e}",
                            message.full_name()
                        ))
                    })?;
                let mut record = frame.clone();
                row.encode(&mut record)
                    .map_err(|e| ArrowError::InvalidArgumentError(e.to_string()))?;
                Ok(record)
            })
            .collect()
    }
}

/// `batch` with its columns as protobuf's JSON mapping reads them:
/// TIMESTAMPs as instants with an offset (RFC 3339, as
/// `google.protobuf.Timestamp` wants), DECIMALs as strings (exact; a
/// `double` field reads a string too).
fn json_ready(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let utc = crate::avro::utc_timestamps(batch.schema_ref());
    let fields: Vec<Field> = utc
        .fields()
        .iter()
        .map(|f| match is_decimal(f.data_type()) {
            true => f.as_ref().clone().with_data_type(DataType::Utf8),
            false => f.as_ref().clone(),
        })
        .collect();
    crate::avro::cast_to(batch, Schema::new(fields))
}

fn is_decimal(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
    )
}

/// The `.proto` text (proto3) of one message `name` with a field per
/// column, numbered in column order. Every scalar field is `optional`, so
/// a NULL (unset) reads apart from a zero; TIMESTAMP is
/// `google.protobuf.Timestamp`, DATE and DECIMAL are strings, a ROW is a
/// nested message, an ARRAY is `repeated`, a MAP with STRING keys a `map`.
pub fn proto_schema_of(schema: &Schema, name: &str) -> Result<String, String> {
    let mut body = String::new();
    write_message(&mut body, name, schema.fields(), 0)?;
    let import = match body.contains("google.protobuf.Timestamp") {
        true => "import \"google/protobuf/timestamp.proto\";\n",
        false => "",
    };
    Ok(format!("syntax = \"proto3\";\n{import}\n{body}"))
}

/// Writes `message name { ... }` for `fields` at nesting `depth`.
fn write_message(
    out: &mut String,
    name: &str,
    fields: &Fields,
    depth: usize,
) -> Result<(), String> {
    let indent = "  ".repeat(depth);
    out.push_str(&format!("{indent}message {name} {{\n"));
    for (number, field) in fields.iter().enumerate() {
        let field_name = field.name();
        let valid = field_name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !valid || field_name.is_empty() {
            return Err(format!(
                "column '{field_name}' is not a protobuf field name (letters, digits and _); rename it with AS"
            ));
        }
        let (label, proto_type) = match field.data_type() {
            DataType::List(item) | DataType::LargeList(item) => (
                "repeated ",
                field_type(out, field_name, item.data_type(), depth)?,
            ),
            DataType::Map(entries, _) => {
                let DataType::Struct(kv) = entries.data_type() else {
                    return Err(format!("column '{field_name}': a MAP without entries"));
                };
                if kv.len() != 2
                    || !matches!(
                        kv[0].data_type(),
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                    )
                {
                    return Err(format!(
                        "column '{field_name}': only a MAP with STRING keys has a protobuf mapping"
                    ));
                }
                let value = field_type(out, field_name, kv[1].data_type(), depth)?;
                ("", format!("map<string, {value}>"))
            }
            DataType::Struct(_) => ("", field_type(out, field_name, field.data_type(), depth)?),
            // Scalars get explicit presence; a message field has it anyway.
            other @ DataType::Timestamp(..) => ("", field_type(out, field_name, other, depth)?),
            other => ("optional ", field_type(out, field_name, other, depth)?),
        };
        out.push_str(&format!(
            "{indent}  {label}{proto_type} {field_name} = {};\n",
            number + 1
        ));
    }
    out.push_str(&format!("{indent}}}\n"));
    Ok(())
}

/// The protobuf type of a value of `data_type` in field `field_name`; a
/// ROW writes its nested message into `out` first.
fn field_type(
    out: &mut String,
    field_name: &str,
    data_type: &DataType,
    depth: usize,
) -> Result<String, String> {
    Ok(match data_type {
        DataType::Boolean => "bool".into(),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int32".into(),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => "uint32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float16 | DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Date32 | DataType::Date64 => "string".into(),
        t if is_decimal(t) => "string".into(),
        DataType::Timestamp(..) => "google.protobuf.Timestamp".into(),
        DataType::Struct(fields) => {
            let mut chars = field_name.chars();
            let nested = match chars.next() {
                Some(first) => format!("{}{}Row", first.to_ascii_uppercase(), chars.as_str()),
                None => "Row".into(),
            };
            write_message(out, &nested, fields, depth + 1)?;
            nested
        }
        other => {
            return Err(format!(
                "column '{field_name}': {other} has no protobuf mapping here; CAST it to STRING or a number"
            ))
        }
    })
}

/// The columns of a registered `.proto` file's first message (the one a
/// registry's serializers write by default), as Arrow fields: what
/// `CREATE TABLE ... LIKE 'subject'` declares, typed as Flink's protobuf
/// format maps them.
pub(crate) fn message_fields(schema: &RegisteredSchema) -> Result<Vec<Field>, String> {
    if schema.schema_type != "PROTOBUF" {
        return Err(format!("a {} schema, not Protobuf", schema.schema_type));
    }
    let file = compile("subject.proto", &schema.text, &schema.references)?;
    let message = file
        .messages()
        .next()
        .ok_or("the .proto file defines no message")?;
    message
        .fields()
        .map(|field| Ok(Field::new(field.name(), column_type(&field, 0)?, true)))
        .collect()
}

/// How deep ROWs nest for a message that contains itself.
const MAX_MESSAGE_DEPTH: usize = 16;

/// The column type of protobuf field `field`: repeated fields are ARRAYs,
/// maps MAPs, messages ROWs (a Timestamp a TIMESTAMP(3)); enums are their
/// names and bytes their base64 text (protobuf's JSON mapping, which the
/// decoder reads); unsigned integers are BIGINT, as in Flink.
fn column_type(field: &prost_reflect::FieldDescriptor, depth: usize) -> Result<DataType, String> {
    use prost_reflect::Kind;
    if depth > MAX_MESSAGE_DEPTH {
        return Err(format!(
            "field {} nests messages deeper than {MAX_MESSAGE_DEPTH} (a message that contains itself?)",
            field.full_name()
        ));
    }
    let kind_type = |kind: Kind| -> Result<DataType, String> {
        Ok(match kind {
            Kind::Double => DataType::Float64,
            Kind::Float => DataType::Float32,
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => DataType::Int32,
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => DataType::Int64,
            Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => DataType::Int64,
            Kind::Bool => DataType::Boolean,
            Kind::String | Kind::Bytes | Kind::Enum(_) => DataType::Utf8,
            Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
                DataType::Timestamp(TimeUnit::Millisecond, None)
            }
            Kind::Message(m) => DataType::Struct(
                m.fields()
                    .map(|f| Ok(Field::new(f.name(), column_type(&f, depth + 1)?, true)))
                    .collect::<Result<Fields, String>>()?,
            ),
        })
    };
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Err(format!(
                "map field {} has no entry message",
                field.full_name()
            ));
        };
        let (Some(key), Some(value)) = (entry.get_field(1), entry.get_field(2)) else {
            return Err(format!(
                "map field {} has no key and value",
                field.full_name()
            ));
        };
        let entries = Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", kind_type(key.kind())?, false),
                Field::new("value", column_type(&value, depth + 1)?, true),
            ])),
            false,
        );
        return Ok(DataType::Map(Arc::new(entries), false));
    }
    let item = kind_type(field.kind())?;
    Ok(match field.is_list() {
        true => DataType::List(Arc::new(Field::new("item", item, true))),
        false => item,
    })
}

/// The message indexes of a registry-framed Protobuf record (zig-zag
/// varints: a count, then an index per nesting level; a lone 0 is the
/// first message), and the message's bytes after them.
fn message_indexes(bytes: &[u8]) -> Option<(Vec<usize>, &[u8])> {
    let (count, mut rest) = zigzag(bytes)?;
    if count == 0 {
        return Some((vec![0], rest));
    }
    let mut indexes = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count {
        let (index, after) = zigzag(rest)?;
        indexes.push(usize::try_from(index).ok()?);
        rest = after;
    }
    Some((indexes, rest))
}

/// A zig-zag varint and the bytes after it.
fn zigzag(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let signed = (value >> 1) as i64 ^ -((value & 1) as i64);
            return Some((signed, &bytes[i + 1..]));
        }
    }
    None
}

/// Compiles a `.proto` text named `name`; its imports resolve to the
/// texts of `references` (by import path) and the well-known types.
fn compile(
    name: &str,
    text: &str,
    references: &[(String, String)],
) -> Result<prost_reflect::FileDescriptor, String> {
    /// The texts a compile may open, by name.
    struct Texts(HashMap<String, String>);
    impl FileResolver for Texts {
        fn open_file(&self, name: &str) -> Result<File, protox::Error> {
            match self.0.get(name) {
                Some(text) => File::from_source(name, text),
                None => Err(protox::Error::file_not_found(name)),
            }
        }
    }
    let mut texts: HashMap<String, String> = references.iter().cloned().collect();
    texts.insert(name.to_string(), text.to_string());
    let mut resolver = ChainFileResolver::new();
    resolver.add(Texts(texts));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.open_file(name).map_err(|e| e.to_string())?;
    compiler
        .descriptor_pool()
        .get_file_by_name(name)
        .ok_or_else(|| format!("{name} did not compile to a file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_indexes_follow_the_registry_encoding() {
        // A lone 0: the first message.
        assert_eq!(message_indexes(&[0, 9]), Some((vec![0], &[9][..])));
        // Two levels, [1, 0]: count 2 (zig-zag 4), 1 (2), 0 (0).
        assert_eq!(message_indexes(&[4, 2, 0, 7]), Some((vec![1, 0], &[7][..])));
        assert_eq!(message_indexes(&[4, 2]), None, "cut short");
    }
}
