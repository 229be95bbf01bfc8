//! Avro records, on arrow-avro: Flink's `avro` format (each record an Avro
//! binary body, written with the schema of the declared columns) and
//! `avro-confluent` (the schema registry's wire format: a zero byte, the
//! writer schema's id in four big-endian bytes, then the body).
//!
//! Reading resolves each record's writer schema against the declared
//! columns with Avro's schema resolution: a field the writer lacks takes
//! its default (NULL for a nullable column), a field the declared columns
//! lack is skipped, `int` widens to `long`, `float` to `double`. The
//! result is cast to the declared types. A writer schema that cannot be
//! resolved (a type changed incompatibly, a NOT NULL column the writer
//! lacks), an id the registry does not know, or a record that is not in
//! the wire format is a bad record for the dead-letter output, with the
//! schema id and the reason; the others decode.
//!
//! Writer schemas are fetched by id once and kept ([`SchemaRegistry`]); a
//! schema that takes types from other subjects has them written out where
//! it first uses them ([`self_contained`]).
//! Writing registers the schema of the written columns under the subject
//! (`'avro-confluent.subject'`, by default `<topic>-value` or
//! `<topic>-key`, Confluent's topic-name strategy) and frames each row with
//! the id the registry gives.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::FingerprintStrategy;
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use arrow_avro::writer::format::{AvroBinaryFormat, AvroSoeFormat};
use arrow_avro::writer::WriterBuilder;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use serde_json::Value;
use weir_engine::BadRecord;

use crate::format::Decoded;
use crate::schema_registry::{
    frame, RegisteredSchema, RegistryConfig, SchemaCache, SchemaRegistry, MAGIC,
};

/// The columns of Avro schema `schema` (registry id `id`), as Arrow
/// fields: what `CREATE TABLE ... LIKE 'subject'` declares. Avro's
/// instants (`timestamp-millis`) become TIMESTAMP columns, as Flink maps
/// them.
pub(crate) fn avro_fields(id: u32, schema: &RegisteredSchema) -> Result<Vec<Field>, String> {
    let text = self_contained(schema)?;
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store
        .set(Fingerprint::Id(id), AvroSchema::new(text))
        .map_err(|e| e.to_string())?;
    let decoder = ReaderBuilder::new()
        .with_writer_schema_store(store)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    Ok(decoder
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(unit, Some(_)) => f
                .as_ref()
                .clone()
                .with_data_type(DataType::Timestamp(*unit, None)),
            _ => f.as_ref().clone(),
        })
        .collect())
}

/// The Avro primitive type names: a name that is none of these names a
/// record, enum or fixed type.
const PRIMITIVES: &[&str] = &[
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// `schema`'s text with each type it takes by name from another subject
/// (a schema reference) written out where it is first used: one schema
/// that an Avro parser reads on its own.
pub(crate) fn self_contained(schema: &RegisteredSchema) -> Result<String, String> {
    if schema.schema_type != "AVRO" {
        return Err(format!("a {} schema, not Avro", schema.schema_type));
    }
    if schema.references.is_empty() {
        return Ok(schema.text.clone());
    }
    let parse = |what: &str, text: &str| -> Result<Value, String> {
        serde_json::from_str(text).map_err(|e| format!("{what} is not JSON: {e}"))
    };
    let mut referred = HashMap::new();
    for (name, text) in &schema.references {
        referred.insert(name.clone(), parse(&format!("reference '{name}'"), text)?);
    }
    let mut root = parse("the schema", &schema.text)?;
    inline_references(&mut root, "", &referred, &mut HashSet::new());
    Ok(root.to_string())
}

/// Replaces the first use of each referred type's name in the type at
/// `value` (within `namespace`) by its definition; `defined` holds the
/// full names defined so far, which later uses name.
fn inline_references(
    value: &mut Value,
    namespace: &str,
    referred: &HashMap<String, Value>,
    defined: &mut HashSet<String>,
) {
    match value {
        Value::String(name) if !PRIMITIVES.contains(&name.as_str()) => {
            let found = [referred_name(name, namespace), name.clone()]
                .into_iter()
                .find(|n| !defined.contains(n) && referred.contains_key(n));
            if let Some(full) = found {
                let mut definition = referred[&full].clone();
                // A definition named without its namespace keeps the one
                // its reference names, wherever it is written out.
                if let (Some(object), Some((ns, _))) =
                    (definition.as_object_mut(), full.rsplit_once('.'))
                {
                    let bare = object
                        .get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| !n.contains('.'));
                    if bare && !object.contains_key("namespace") {
                        object.insert("namespace".into(), Value::String(ns.to_string()));
                    }
                }
                *value = definition;
                inline_references(value, namespace, referred, defined);
            }
        }
        Value::Array(branches) => {
            for branch in branches {
                inline_references(branch, namespace, referred, defined);
            }
        }
        Value::Object(object) => {
            let kind = object
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_string);
            match kind.as_deref() {
                Some("record" | "error" | "enum" | "fixed") => {
                    let (full, inner) = full_name(object, namespace);
                    defined.insert(full);
                    if let Some(Value::Array(fields)) = object.get_mut("fields") {
                        for field in fields.iter_mut().filter_map(|f| f.get_mut("type")) {
                            inline_references(field, &inner, referred, defined);
                        }
                    }
                }
                Some("array") => {
                    if let Some(items) = object.get_mut("items") {
                        inline_references(items, namespace, referred, defined);
                    }
                }
                Some("map") => {
                    if let Some(values) = object.get_mut("values") {
                        inline_references(values, namespace, referred, defined);
                    }
                }
                _ => {
                    if let Some(inner) = object.get_mut("type") {
                        inline_references(inner, namespace, referred, defined);
                    }
                }
            }
        }
        _ => {}
    }
}

/// The Avro schema of `schema`'s columns: a record of nullable fields with
/// NULL defaults (so a writer may lack them), TIMESTAMP columns as
/// `timestamp-millis` (as Flink writes them). Named `name`, in `namespace`.
pub fn avro_schema_of(
    schema: &Schema,
    name: &str,
    namespace: Option<&str>,
) -> Result<String, ArrowError> {
    let utc = utc_timestamps(schema);
    let json = AvroSchema::try_from(&utc)?.json_string;
    let mut value: Value = serde_json::from_str(&json)
        .map_err(|e| ArrowError::AvroError(format!("arrow-avro wrote a bad schema: {e}")))?;
    if let Some(record) = value.as_object_mut() {
        record.insert("name".into(), Value::String(name.to_string()));
        match namespace {
            Some(ns) => record.insert("namespace".into(), Value::String(ns.to_string())),
            None => record.remove("namespace"),
        };
        if let Some(Value::Array(fields)) = record.get_mut("fields") {
            for field in fields.iter_mut() {
                let nullable = matches!(field.get("type"), Some(Value::Array(branches))
                    if branches.first() == Some(&Value::String("null".into())));
                if let (true, Some(field)) = (nullable, field.as_object_mut()) {
                    field.entry("default").or_insert(Value::Null);
                }
            }
        }
    }
    Ok(value.to_string())
}

/// `schema` with every time-zone-less TIMESTAMP as UTC: Avro's
/// `timestamp-*` types are instants, the ones Flink and most producers use.
pub(crate) fn utc_timestamps(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(unit, None) => f
                .as_ref()
                .clone()
                .with_data_type(DataType::Timestamp(*unit, Some("+00:00".into()))),
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new(fields)
}

/// Decodes Avro records into batches of the declared columns.
pub struct AvroDecoder {
    declared: SchemaRef,
    stream: String,
    registry: Option<SchemaRegistry>,
    /// Writer schemas by id, each with the reader schema that resolves it
    /// (the plain format's one schema is id 0).
    writers: SchemaCache<(AvroSchema, AvroSchema)>,
}

impl AvroDecoder {
    /// Plain `avro`: every record was written with the declared columns'
    /// schema.
    pub fn plain(declared: SchemaRef, stream: String) -> Result<Self, ArrowError> {
        let schema = AvroSchema::new(avro_schema_of(&declared, "record", None)?);
        let decoder = AvroDecoder {
            declared,
            stream,
            registry: None,
            writers: Mutex::new(HashMap::new()),
        };
        decoder
            .writers
            .lock()
            .insert(0, Arc::new(Ok((schema.clone(), schema))));
        Ok(decoder)
    }

    /// `avro-confluent`: writer schemas by the id each record names.
    pub fn confluent(declared: SchemaRef, stream: String, config: RegistryConfig) -> Self {
        AvroDecoder {
            declared,
            stream,
            registry: Some(SchemaRegistry::new(config)),
            writers: Mutex::new(HashMap::new()),
        }
    }

    /// Fetches the writer schemas of `records` not fetched before
    /// ([`SchemaRegistry::fetch_missing`]).
    pub async fn prepare(&self, records: &[&[u8]]) -> Result<(), String> {
        match &self.registry {
            Some(registry) => {
                registry
                    .fetch_missing(records, &self.writers, |_, schema| {
                        self.resolve(&self_contained(schema)?)
                    })
                    .await
            }
            None => Ok(()),
        }
    }

    /// A writer schema with the reader schema that resolves it against
    /// the declared columns, or why it cannot be read.
    fn resolve(&self, text: &str) -> Result<(AvroSchema, AvroSchema), String> {
        let reader = reader_schema(&self.declared, text)?;
        Ok((AvroSchema::new(text.to_string()), reader))
    }

    /// Decodes separate records; a bad record's index is its position in
    /// `records`. Runs of records with one writer schema decode in one
    /// call; a run that fails is decoded record by record.
    pub fn decode_records(
        &self,
        records: &[&[u8]],
        locate: &dyn Fn(usize) -> String,
    ) -> Result<Decoded, ArrowError> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let reject = |index: usize, reason: String, bad: &mut Vec<(usize, BadRecord)>| {
            bad.push((
                index,
                BadRecord {
                    stream: self.stream.clone(),
                    reason,
                    location: locate(index),
                    raw: records[index].to_vec(),
                    kafka: None,
                },
            ));
        };
        let mut i = 0;
        while i < records.len() {
            let framed = match &self.registry {
                None => Ok((0, records[i])),
                Some(_) => frame(records[i]),
            };
            let id = match framed {
                Ok((id, _)) => id,
                Err(reason) => {
                    reject(i, reason, &mut bad);
                    i += 1;
                    continue;
                }
            };
            let mut end = i + 1;
            while end < records.len()
                && match &self.registry {
                    None => true,
                    Some(_) => frame(records[end]).is_ok_and(|(next, _)| next == id),
                }
            {
                end += 1;
            }
            let resolved = self.writers.lock().get(&id).cloned();
            let schemas = match resolved.as_deref() {
                Some(Ok(schemas)) => schemas,
                Some(Err(reason)) => {
                    for index in i..end {
                        reject(index, format!("schema id {id}: {reason}"), &mut bad);
                    }
                    i = end;
                    continue;
                }
                None => {
                    for index in i..end {
                        reject(index, format!("schema id {id} was not fetched"), &mut bad);
                    }
                    i = end;
                    continue;
                }
            };
            let run = &records[i..end];
            match self.decode_run(id, schemas, run) {
                Ok(batch) if batch.num_rows() == run.len() => good.push(batch),
                _ => {
                    for (offset, record) in run.iter().enumerate() {
                        match self.decode_run(id, schemas, std::slice::from_ref(record)) {
                            Ok(batch) if batch.num_rows() == 1 => good.push(batch),
                            Ok(_) => reject(i + offset, "the record holds no row".into(), &mut bad),
                            Err(e) => {
                                let reason = match &self.registry {
                                    Some(_) => format!("schema id {id}: {e}"),
                                    None => e,
                                };
                                reject(i + offset, reason, &mut bad);
                            }
                        }
                    }
                }
            }
            i = end;
        }
        let batch = match good.first() {
            None => None,
            Some(_) => Some(concat_batches(&self.declared, &good)?),
        };
        Ok(Decoded { batch, bad })
    }

    /// Records written with schema `id`, decoded and cast to the declared
    /// columns.
    fn decode_run(
        &self,
        id: u32,
        (writer, reader): &(AvroSchema, AvroSchema),
        records: &[&[u8]],
    ) -> Result<RecordBatch, String> {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store
            .set(Fingerprint::Id(id), writer.clone())
            .map_err(|e| e.to_string())?;
        let mut decoder = ReaderBuilder::new()
            .with_reader_schema(reader.clone())
            .with_writer_schema_store(store)
            .with_batch_size(records.len().max(1))
            .build_decoder()
            .map_err(|e| format!("cannot be read as the declared columns: {e}"))?;
        let mut batches = Vec::new();
        for record in records {
            // The plain format has no frame: give the body one.
            let framed;
            let bytes = match &self.registry {
                Some(_) => *record,
                None => {
                    framed = [&[MAGIC, 0, 0, 0, 0][..], record].concat();
                    &framed[..]
                }
            };
            let read = decoder.decode(bytes).map_err(|e| e.to_string())?;
            if read != bytes.len() {
                return Err(format!(
                    "the record has {} bytes past its Avro body",
                    bytes.len() - read
                ));
            }
            if decoder.batch_is_full() {
                batches.extend(decoder.flush().map_err(|e| e.to_string())?);
            }
        }
        batches.extend(decoder.flush().map_err(|e| e.to_string())?);
        let columns = batches
            .iter()
            .map(|b| as_declared(&self.declared, b))
            .collect::<Result<Vec<_>, _>>()?;
        concat_batches(&self.declared, &columns).map_err(|e| e.to_string())
    }
}

/// The reader schema that resolves writer schema `writer` (JSON) into
/// `declared`'s columns: those columns, named as the writer's record
/// (Avro resolves records by name).
pub(crate) fn reader_schema(declared: &Schema, writer: &str) -> Result<AvroSchema, String> {
    let value: Value =
        serde_json::from_str(writer).map_err(|e| format!("the writer schema is not JSON: {e}"))?;
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .ok_or("the writer schema is not a record")?;
    let namespace = value.get("namespace").and_then(Value::as_str);
    let reader = avro_schema_of(declared, name, namespace).map_err(|e| e.to_string())?;
    let mut reader: Value =
        serde_json::from_str(&reader).map_err(|e| format!("arrow-avro wrote a bad schema: {e}"))?;
    let mut named = HashMap::new();
    collect_named(&value, "", &mut named);
    let writer_ns = namespace.unwrap_or_default();
    align_fields(&mut reader, &value, writer_ns, &named, &mut HashMap::new())?;
    Ok(AvroSchema::new(reader.to_string()))
}

/// The full name of a named type `definition` within `namespace`, and
/// the namespace its own fields are in.
fn full_name(definition: &serde_json::Map<String, Value>, namespace: &str) -> (String, String) {
    let name = definition.get("name").and_then(Value::as_str).unwrap_or("");
    if let Some((ns, _)) = name.rsplit_once('.') {
        return (name.to_string(), ns.to_string());
    }
    let ns = definition
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or(namespace);
    match ns.is_empty() {
        true => (name.to_string(), String::new()),
        false => (format!("{ns}.{name}"), ns.to_string()),
    }
}

/// The full name a type reference `name` means within `namespace`.
fn referred_name(name: &str, namespace: &str) -> String {
    match name.contains('.') || namespace.is_empty() {
        true => name.to_string(),
        false => format!("{namespace}.{name}"),
    }
}

/// Every record, enum and fixed type defined in `schema`, by full name.
fn collect_named(schema: &Value, namespace: &str, named: &mut HashMap<String, Value>) {
    match schema {
        Value::Array(branches) => {
            for branch in branches {
                collect_named(branch, namespace, named);
            }
        }
        Value::Object(object) => match object.get("type") {
            Some(Value::String(kind))
                if matches!(kind.as_str(), "record" | "error" | "enum" | "fixed") =>
            {
                let (full, inner) = full_name(object, namespace);
                named.insert(full, schema.clone());
                for field in object
                    .get("fields")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = field.get("type") {
                        collect_named(t, &inner, named);
                    }
                }
            }
            Some(inner) => {
                for nested in [object.get("items"), object.get("values"), Some(inner)]
                    .into_iter()
                    .flatten()
                {
                    collect_named(nested, namespace, named);
                }
            }
            None => {}
        },
        _ => {}
    }
}

/// Names the records nested in reader record `reader` as the writer's
/// `writer` names them (Avro resolves records by name; arrow-avro names a
/// ROW column's record after the column), and refers by name to a record
/// already written out (`written`, by full name), as Avro requires.
fn align_fields(
    reader: &mut Value,
    writer: &Value,
    writer_ns: &str,
    named: &HashMap<String, Value>,
    written: &mut HashMap<String, Value>,
) -> Result<(), String> {
    let writer_fields = writer.get("fields").and_then(Value::as_array);
    let Some(Value::Array(fields)) = reader.get_mut("fields") else {
        return Ok(());
    };
    for field in fields.iter_mut() {
        let name = field
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let theirs = writer_fields
            .into_iter()
            .flatten()
            .find(|w| w.get("name").and_then(Value::as_str) == Some(&name))
            .and_then(|w| w.get("type"));
        if let (Some(ours), Some(theirs)) = (field.get_mut("type"), theirs) {
            align_type(ours, theirs, writer_ns, named, written)
                .map_err(|e| format!("field {name}: {e}"))?;
        }
    }
    Ok(())
}

/// [`align_fields`] for one type: through unions, arrays and maps down to
/// records.
fn align_type(
    ours: &mut Value,
    theirs: &Value,
    writer_ns: &str,
    named: &HashMap<String, Value>,
    written: &mut HashMap<String, Value>,
) -> Result<(), String> {
    // The writer's type, its references looked up, and the branch of a
    // union that is not null.
    let mut theirs = theirs;
    loop {
        theirs = match theirs {
            Value::String(name) => {
                let full = referred_name(name, writer_ns);
                match named.get(&full).or_else(|| named.get(name)) {
                    Some(definition) => definition,
                    None => return Ok(()),
                }
            }
            Value::Array(branches) => match branches.iter().find(|b| *b != "null") {
                Some(branch) => branch,
                None => return Ok(()),
            },
            _ => break,
        };
    }
    let ours = match ours {
        Value::Array(branches) => match branches.iter_mut().find(|b| *b != "null") {
            Some(branch) => branch,
            None => return Ok(()),
        },
        other => other,
    };
    let kind = |v: &Value| v.get("type").and_then(Value::as_str).map(str::to_string);
    match (kind(ours).as_deref(), kind(theirs).as_deref()) {
        (Some("record"), Some("record" | "error")) => {
            let Some(definition) = theirs.as_object() else {
                return Ok(());
            };
            let (full, inner) = full_name(definition, writer_ns);
            align_fields(ours, theirs, &inner, named, written)?;
            if let Some(object) = ours.as_object_mut() {
                let short = full.rsplit('.').next().unwrap_or(&full).to_string();
                object.insert("name".into(), Value::String(short));
                object.insert("namespace".into(), Value::String(inner));
            }
            match written.get(&full) {
                Some(first) if first == ours => *ours = Value::String(full),
                Some(_) => {
                    return Err(format!(
                        "record {full} is used twice, and the declared columns differ"
                    ))
                }
                None => {
                    written.insert(full, ours.clone());
                }
            }
        }
        (Some("array"), Some("array")) => {
            if let (Some(o), Some(t)) = (ours.get_mut("items"), theirs.get("items")) {
                align_type(o, t, writer_ns, named, written)?;
            }
        }
        (Some("map"), Some("map")) => {
            if let (Some(o), Some(t)) = (ours.get_mut("values"), theirs.get("values")) {
                align_type(o, t, writer_ns, named, written)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A decoded batch with `declared`'s types, its NOT NULL columns checked.
pub(crate) fn as_declared(
    declared: &SchemaRef,
    batch: &RecordBatch,
) -> Result<RecordBatch, String> {
    let columns: Vec<ArrayRef> = declared
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            if !field.is_nullable() && column.null_count() > 0 {
                return Err(format!("NOT NULL column {} is null", field.name()));
            }
            match column.data_type() == field.data_type() {
                true => Ok(column.clone()),
                false => cast(column, field.data_type()).map_err(|e| e.to_string()),
            }
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(declared.clone(), columns).map_err(|e| e.to_string())
}

/// `batch` as Avro writes it (TIMESTAMPs as UTC instants), with the schema
/// that names its Avro schema (a record called `name`).
pub(crate) fn writable(
    batch: &RecordBatch,
    name: &str,
) -> Result<(Schema, RecordBatch), ArrowError> {
    let batch = with_utc_timestamps(batch)?;
    let schema = batch.schema().as_ref().clone();
    let text = avro_schema_of(&schema, name, None)?;
    let mut metadata = HashMap::new();
    metadata.insert(arrow_avro::schema::SCHEMA_METADATA_KEY.to_string(), text);
    Ok((schema.with_metadata(metadata), batch))
}

/// `batch` with its time-zone-less TIMESTAMP columns as UTC instants (the
/// same values), as Avro's `timestamp-*` and RFC 3339 text want them.
pub(crate) fn with_utc_timestamps(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    cast_to(batch, utc_timestamps(batch.schema_ref()))
}

/// `batch`'s columns cast to the types of `schema` (the same columns).
pub(crate) fn cast_to(batch: &RecordBatch, schema: Schema) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::new(schema), columns)
}

/// Encodes rows as Avro records: plain bodies, or framed with the id the
/// registry gave their schema.
pub struct AvroEncoder {
    registry: Option<SchemaRegistry>,
    /// The registry's id of the written schema and the schema, once
    /// registered.
    registered: Option<(u32, String)>,
}

impl AvroEncoder {
    pub fn plain() -> Self {
        AvroEncoder {
            registry: None,
            registered: None,
        }
    }

    pub fn confluent(config: RegistryConfig) -> Self {
        AvroEncoder {
            registry: Some(SchemaRegistry::new(config)),
            registered: None,
        }
    }

    /// Registers the schema of `schema`'s columns under the subject for
    /// `topic`, once.
    pub async fn prepare(
        &mut self,
        schema: &Schema,
        topic: &str,
        is_key: bool,
    ) -> Result<(), String> {
        let (Some(registry), None) = (&self.registry, &self.registered) else {
            return Ok(());
        };
        let subject = registry.subject(topic, is_key);
        let text =
            avro_schema_of(schema, &record_name(topic, is_key), None).map_err(|e| e.to_string())?;
        let id = registry.register(&subject, &text, "AVRO").await?;
        self.registered = Some((id, text));
        Ok(())
    }

    /// Each row of `batch` as one record.
    pub fn encode_rows(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
        let (mut schema, batch) = writable(batch, "record")?;
        if let Some((_, text)) = &self.registered {
            // Written with exactly the schema the registry holds.
            schema.metadata.insert(
                arrow_avro::schema::SCHEMA_METADATA_KEY.to_string(),
                text.clone(),
            );
        }
        let builder = WriterBuilder::new(schema);
        let rows = match (&self.registry, self.registered.as_ref().map(|(id, _)| *id)) {
            (None, _) => {
                let mut encoder = builder.build_encoder::<AvroBinaryFormat>()?;
                encoder.encode(&batch)?;
                encoder.flush()
            }
            (Some(_), Some(id)) => {
                let mut encoder = builder
                    .with_fingerprint_strategy(FingerprintStrategy::Id(id))
                    .build_encoder::<AvroSoeFormat>()?;
                encoder.encode(&batch)?;
                encoder.flush()
            }
            (Some(_), None) => {
                return Err(ArrowError::InvalidArgumentError(
                    "the schema was not registered".into(),
                ))
            }
        };
        Ok(rows.iter().map(|row| row.to_vec()).collect())
    }
}

/// An Avro record name from a topic: letters, digits and `_` only.
pub(crate) fn record_name(topic: &str, is_key: bool) -> String {
    let base: String = topic
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let base = match base.chars().next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => base,
        _ => format!("_{base}"),
    };
    format!("{base}_{}", if is_key { "key" } else { "value" })
}

#[cfg(test)]
impl AvroDecoder {
    /// Knows writer schema `text` as id `id` without asking a registry.
    fn know(&self, id: u32, text: &str) {
        let resolved = self.resolve(text);
        self.writers.lock().insert(id, Arc::new(resolved));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int32Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    fn declared() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
        ]))
    }

    fn registry() -> RegistryConfig {
        RegistryConfig {
            url: "http://127.0.0.1:1".into(),
            subject: None,
            user_info: None,
            bearer_token: None,
        }
    }

    /// Rows written with writer schema `text` (registry id `id`), framed.
    fn written(id: u32, text: &str, batch: RecordBatch) -> Vec<Vec<u8>> {
        let mut metadata = HashMap::new();
        metadata.insert(
            arrow_avro::schema::SCHEMA_METADATA_KEY.to_string(),
            text.to_string(),
        );
        let schema = batch.schema().as_ref().clone().with_metadata(metadata);
        let mut encoder = WriterBuilder::new(schema)
            .with_fingerprint_strategy(FingerprintStrategy::Id(id))
            .build_encoder::<AvroSoeFormat>()
            .unwrap();
        encoder.encode(&batch).unwrap();
        encoder.flush().iter().map(|r| r.to_vec()).collect()
    }

    fn shown(decoded: &Decoded) -> String {
        pretty_format_batches(decoded.batch.as_slice())
            .unwrap()
            .to_string()
    }

    /// Plain Avro: what the encoder writes, the decoder reads back,
    /// NULLs and timestamps included.
    #[test]
    fn plain_records_round_trip() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(datafusion::arrow::array::TimestampMillisecondArray::from(
                    vec![Some(1_700_000_000_123), None],
                )),
            ],
        )
        .unwrap();
        let rows = AvroEncoder::plain().encode_rows(&batch).unwrap();
        assert_eq!(rows.len(), 2);
        let decoder = AvroDecoder::plain(schema, "s".into()).unwrap();
        let records: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        let decoded = decoder
            .decode_records(&records, &|i| i.to_string())
            .unwrap();
        assert!(decoded.bad.is_empty());
        assert_eq!(decoded.batch.unwrap(), batch);
    }

    /// A producer moves through four schema versions: a field added (NULL
    /// on read), a field removed and a type widened (skipped, widened),
    /// then an incompatible change (dead letters with the id and reason).
    /// A record not in the wire format is a dead letter too.
    #[test]
    fn writer_schemas_resolve_against_the_declared_columns() {
        let decoder = AvroDecoder::confluent(declared(), "s".into(), registry());
        let v1 = r#"{"type":"record","name":"Bid","namespace":"shop","fields":[
            {"name":"k","type":"int"},{"name":"name","type":"string"}]}"#;
        let v2 = r#"{"type":"record","name":"Bid","namespace":"shop","fields":[
            {"name":"k","type":"long"},{"name":"name","type":"string"},
            {"name":"score","type":"float"},{"name":"channel","type":"string"}]}"#;
        let v3 = r#"{"type":"record","name":"Bid","namespace":"shop","fields":[
            {"name":"k","type":"long"},{"name":"score","type":"double"}]}"#;
        let v4 = r#"{"type":"record","name":"Bid","namespace":"shop","fields":[
            {"name":"k","type":"string"},{"name":"name","type":"string"}]}"#;
        for (id, text) in [(1, v1), (2, v2), (3, v3), (4, v4)] {
            decoder.know(id, text);
        }
        let of = |columns: Vec<(&str, ArrayRef)>| RecordBatch::try_from_iter(columns).unwrap();
        let mut records = written(
            1,
            v1,
            of(vec![
                ("k", Arc::new(Int32Array::from(vec![1, 2]))),
                ("name", Arc::new(StringArray::from(vec!["a", "b"]))),
            ]),
        );
        records.extend(written(
            2,
            v2,
            of(vec![
                ("k", Arc::new(Int64Array::from(vec![3]))),
                ("name", Arc::new(StringArray::from(vec!["c"]))),
                (
                    "score",
                    Arc::new(datafusion::arrow::array::Float32Array::from(vec![1.5])),
                ),
                ("channel", Arc::new(StringArray::from(vec!["web"]))),
            ]),
        ));
        records.push(b"{\"k\": 9}".to_vec());
        records.extend(written(
            3,
            v3,
            of(vec![
                ("k", Arc::new(Int64Array::from(vec![4]))),
                ("score", Arc::new(Float64Array::from(vec![2.25]))),
            ]),
        ));
        records.extend(written(
            4,
            v4,
            of(vec![
                ("k", Arc::new(StringArray::from(vec!["five"]))),
                ("name", Arc::new(StringArray::from(vec!["e"]))),
            ]),
        ));
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let decoded = decoder
            .decode_records(&refs, &|i| format!("record {i}"))
            .unwrap();
        assert_eq!(
            shown(&decoded),
            [
                "+---+------+-------+",
                "| k | name | score |",
                "+---+------+-------+",
                "| 1 | a    |       |",
                "| 2 | b    |       |",
                "| 3 | c    | 1.5   |",
                "| 4 |      | 2.25  |",
                "+---+------+-------+",
            ]
            .join("\n")
        );
        let bad: Vec<(usize, &str)> = decoded
            .bad
            .iter()
            .map(|(i, b)| (*i, b.location.as_str()))
            .collect();
        assert_eq!(bad, [(3, "record 3"), (5, "record 5")]);
        assert!(decoded.bad[0].1.reason.contains("wire format"));
        let incompatible = &decoded.bad[1].1.reason;
        assert!(incompatible.starts_with("schema id 4: "), "{incompatible}");
        assert_eq!(decoded.bad[1].1.raw, records[5]);
    }

    /// The schema written for a table: nullable fields default to NULL,
    /// timestamps are instants, the record is named for the topic.
    #[test]
    fn written_schemas_default_nullable_fields_to_null() {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]);
        let text = avro_schema_of(&schema, &record_name("bids-1", false), None).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["name"], "bids_1_value");
        assert_eq!(value["fields"][0]["type"], "long");
        assert_eq!(value["fields"][1]["default"], Value::Null);
        assert_eq!(
            value["fields"][1]["type"][1]["logicalType"],
            "timestamp-millis"
        );
    }
}
