//! `'connector' = 'kafka'`: Kafka topics as a source and a sink, with
//! Flink's option names.
//!
//! The source assigns partitions itself (as Flink's Kafka source does):
//! partitions of the topics, sorted, are spread over the subtasks; each
//! partition is one split with its own watermark. Start and end positions
//! follow `'scan.startup.mode'` and `'scan.bounded.mode'`. Records that do not
//! decode go to the dead-letter output with topic, partition and offset.

pub mod dead_letters;
mod offsets;
pub(crate) use offsets::POSITION_OPTIONS;
mod sink;
mod source;
mod source_client;
pub mod stage_controls;
pub mod stage_group;
pub mod stage_input;
pub mod stage_output;
pub mod stage_records;
pub mod stage_sink;
pub mod stage_source;
mod transactions;
mod upsert;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use rdkafka::config::ClientConfig;
use weir_engine::{SinkFactory, SourceFactory};

use crate::format::Format;
use crate::options::Options;
use crate::registry::{Connector, ConnectorError, SinkChanges, SourceChanges, TableSpec};

pub use offsets::{BoundedMode, StartupMode};
pub use sink::KafkaSink;
pub use source::KafkaSource;
pub use upsert::UpsertKafkaConnector;

pub struct KafkaConnector;

/// Besides [`POSITION_OPTIONS`].
const OPTIONS: &[&str] = &[
    "topic",
    "topic-pattern",
    "value.format",
    "value.fields-include",
    "key.format",
    "key.fields",
    "scan.batch-size",
    "sink.delivery",
    "sink.delivery-guarantee",
    "sink.max-retries",
    "sink.transactional-id-prefix",
    "sink.parallelism",
    "csv.field-delimiter",
];

/// Prefixes of the options a Kafka table passes on: to the client, and to
/// the value's and key's formats (the schema registry's address).
pub(crate) const FORMAT_OPTION_PREFIXES: [&str; 8] = [
    "properties.",
    "avro-confluent.",
    "value.avro-confluent.",
    "key.avro-confluent.",
    "protobuf.",
    "protobuf-confluent.",
    "value.protobuf-confluent.",
    "key.protobuf-confluent.",
];

/// Metadata a Kafka record carries, as Flink names it.
const METADATA: &[&str] = &["topic", "partition", "offset", "timestamp"];

/// What the Kafka options say, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct KafkaSettings {
    pub topics: Vec<String>,
    pub pattern: Option<regex::Regex>,
    pub client: Vec<(String, String)>,
    pub group_id: Option<String>,
    pub value_format: Format,
    /// Which columns the key holds, and whether the value holds them too.
    pub key: KeyLayout,
    pub startup: StartupMode,
    pub bounded: BoundedMode,
    pub batch_size: usize,
    /// An upsert stream keyed by `key.fields` (`upsert-kafka`): a record
    /// without a value deletes its key, and a sink writes one for a `-U`
    /// or `-D`.
    pub upsert: bool,
    /// An upsert sink keeps the last row of each key and writes them out
    /// when this many are buffered or the interval passes.
    pub buffer_flush: Option<(usize, Duration)>,
}

fn format_named(options: &Options, key: &str, name: &str) -> Result<Format, ConnectorError> {
    let mut o = options.clone();
    o = Options::new(
        o.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("format".to_string(), name.to_string())]),
    );
    let prefix = key.strip_suffix("format").unwrap_or("");
    Format::from_options_for(&o, prefix).map_err(|e| ConnectorError::option(key, e.message))
}

/// How a record's key holds columns: `'key.format'` and `'key.fields'`,
/// and whether the value holds them too (`'value.fields-include'`).
#[derive(Debug, Clone)]
pub(crate) struct KeyLayout {
    pub format: Option<Format>,
    pub fields: Vec<String>,
    /// The value holds every column (`ALL`) or all but the key fields.
    pub value_includes_key: bool,
}

impl KeyLayout {
    /// Whether column `name` is in a record's value: every column but the
    /// key fields, unless the value holds those too.
    pub fn in_value(&self, name: &str) -> bool {
        self.value_includes_key || !self.fields.iter().any(|k| k == name)
    }

    /// The columns a record's value holds: the physical ones
    /// [`in_value`](Self::in_value).
    pub fn value_schema(&self, spec: &TableSpec) -> SchemaRef {
        let fields = spec.schema.fields().iter().enumerate();
        let kept = fields.filter(|(i, f)| !spec.is_metadata(*i) && self.in_value(f.name()));
        Arc::new(Schema::new(
            kept.map(|(_, f)| f.clone()).collect::<Vec<_>>(),
        ))
    }

    /// The columns a record's key holds, in `'key.fields'` order.
    pub fn key_schema(&self, spec: &TableSpec) -> SchemaRef {
        let fields = self.fields.iter();
        let found = fields.filter_map(|k| spec.schema.field_with_name(k).ok().cloned());
        Arc::new(Schema::new(found.collect::<Vec<_>>()))
    }

    pub fn parse(options: &Options) -> Result<Self, ConnectorError> {
        let key_format = options
            .get("key.format")
            .map(|f| format_named(options, "key.format", f))
            .transpose()?;
        let key_fields: Vec<String> = options
            .get("key.fields")
            .map(|f| {
                f.split(';')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if key_format.is_some() == key_fields.is_empty() {
            return Err(ConnectorError::new(
                "'key.format' and 'key.fields' go together",
            ));
        }
        let value_includes_key = match options
            .get("value.fields-include")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("ALL") => true,
            Some("EXCEPT_KEY") => false,
            Some(other) => {
                return Err(ConnectorError::option(
                    "value.fields-include",
                    format!("'{other}' must be ALL or EXCEPT_KEY"),
                ))
            }
        };
        Ok(KeyLayout {
            format: key_format,
            fields: key_fields,
            value_includes_key,
        })
    }
}

impl KafkaSettings {
    pub fn parse(options: &Options) -> Result<Self, ConnectorError> {
        let known = [OPTIONS, POSITION_OPTIONS].concat();
        options.check_known("kafka", &known, &FORMAT_OPTION_PREFIXES)?;
        let topics: Vec<String> = options
            .get("topic")
            .map(|t| {
                t.split(';')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let pattern = options
            .get("topic-pattern")
            .map(|p| regex::Regex::new(&format!("^(?:{p})$")))
            .transpose()
            .map_err(|e| ConnectorError::option("topic-pattern", e))?;
        if topics.is_empty() == pattern.is_none() {
            return Err(ConnectorError::new(
                "set exactly one of 'topic' and 'topic-pattern'",
            ));
        }
        options.require("properties.bootstrap.servers")?;
        let client: Vec<(String, String)> = options
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("properties.")
                    .map(|k| (k.to_string(), v.to_string()))
            })
            .collect();
        let group_id = options.get("properties.group.id").map(str::to_string);
        let value_format = match (options.get("value.format"), options.get("format")) {
            (Some(v), _) | (None, Some(v)) => format_named(options, "value.format", v)?,
            (None, None) => {
                return Err(ConnectorError::option(
                    "format",
                    "is required (json, csv or raw)",
                ))
            }
        };
        if value_format == Format::Parquet {
            return Err(ConnectorError::option(
                "format",
                "parquet is not a record format; use json, csv or raw",
            ));
        }
        let key = KeyLayout::parse(options)?;
        let startup = StartupMode::parse(options)?;
        if matches!(startup, StartupMode::GroupOffsets) && group_id.is_none() {
            return Err(ConnectorError::option(
                "scan.startup.mode",
                "'group-offsets' needs 'properties.group.id'",
            ));
        }
        let bounded = BoundedMode::parse(options)?;
        let batch_size = options
            .parse::<usize>("scan.batch-size")?
            .unwrap_or(4096)
            .max(1);
        Ok(KafkaSettings {
            topics,
            pattern,
            client,
            group_id,
            value_format,
            key,
            startup,
            bounded,
            batch_size,
            upsert: false,
            buffer_flush: None,
        })
    }

    /// A librdkafka configuration with every `properties.*` option.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (k, v) in &self.client {
            config.set(k, v);
        }
        config
    }
}

/// The client configuration and topics of a Kafka stream's `WITH`
/// options: a cluster job's processes share the stream's partitions
/// through a consumer group on these topics.
pub fn stream_topics(options: &Options) -> Result<(ClientConfig, Vec<String>), ConnectorError> {
    let settings = KafkaSettings::parse(options)?;
    if settings.pattern.is_some() {
        return Err(ConnectorError::new(
            "a cluster job reads named topics ('topic'), not 'topic-pattern'",
        ));
    }
    Ok((settings.client_config(), settings.topics))
}

/// Sets `key` unless the user set it with a `properties.*` option.
pub(crate) fn set_default(config: &mut ClientConfig, key: &str, value: &str) {
    if config.get(key).is_none() {
        config.set(key, value);
    }
}

/// How long blocking metadata calls may take.
pub(crate) const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

impl Connector for KafkaConnector {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn metadata_keys(&self) -> &'static [&'static str] {
        METADATA
    }

    fn validate(&self, options: &Options) -> Result<(), ConnectorError> {
        KafkaSettings::parse(options).map(|_| ())
    }

    fn is_bounded(&self, options: &Options) -> bool {
        KafkaSettings::parse(options).is_ok_and(|s| !matches!(s.bounded, BoundedMode::Unbounded))
    }

    /// A changelog format (`debezium-json`) makes the topic a changelog.
    fn source_changes(&self, options: &Options) -> SourceChanges {
        match KafkaSettings::parse(options) {
            Ok(s) if s.value_format.is_changelog() => SourceChanges::All,
            _ => SourceChanges::AppendOnly,
        }
    }

    fn sink_changes(&self, options: &Options) -> SinkChanges {
        match KafkaSettings::parse(options) {
            Ok(s) if s.value_format.is_changelog() => SinkChanges::All,
            _ => SinkChanges::AppendOnly,
        }
    }

    fn source(&self, spec: &TableSpec) -> Result<SourceFactory, ConnectorError> {
        let settings = Arc::new(KafkaSettings::parse(&spec.options)?);
        source_factory(settings, spec)
    }

    fn sink(&self, spec: &TableSpec) -> Result<SinkFactory, ConnectorError> {
        let settings = Arc::new(KafkaSettings::parse(&spec.options)?);
        sink_factory(settings, spec)
    }
}

/// The source subtasks of a Kafka topic read as `settings` say.
fn source_factory(
    settings: Arc<KafkaSettings>,
    spec: &TableSpec,
) -> Result<SourceFactory, ConnectorError> {
    for field in &settings.key.fields {
        if spec.schema.field_with_name(field).is_err() {
            return Err(ConnectorError::option(
                "key.fields",
                format!("'{field}' is not a column"),
            ));
        }
    }
    if settings.value_format.is_changelog()
        && (!settings.key.fields.is_empty() || !spec.metadata.is_empty())
    {
        return Err(ConnectorError::option(
                "format",
                "a change event holds its rows whole: key fields and METADATA columns are not read from a changelog format",
            ));
    }
    let client = Arc::new(source_client::SourceClient::new(settings, &spec.name));
    let spec = spec.clone();
    Ok(Arc::new(move |info| {
        Ok(Box::new(KafkaSource::new(client.clone(), &spec, info)?)
            as Box<dyn weir_engine::Source>)
    }))
}

/// The source of a `dead-letter` stream over a dead-letter topic
/// (`'bad-data.topic'`): the topic from its start to its end when the job
/// starts, unless `'scan.startup.mode'` / `'scan.bounded.mode'` say
/// otherwise, each record turned into its letter by `letters`.
pub(crate) fn dead_letter_source(
    spec: &TableSpec,
    letters: Arc<crate::replay::DeadLetters>,
) -> Result<SourceFactory, ConnectorError> {
    let kept = spec
        .options
        .iter()
        .filter(|(k, _)| *k == "topic" || k.starts_with("properties.") || k.starts_with("scan."))
        .map(|(k, v)| (k.to_string(), v.to_string()));
    let defaults = [
        ("scan.startup.mode", "earliest-offset"),
        ("scan.bounded.mode", "latest-offset"),
    ]
    .into_iter()
    .filter(|(k, _)| spec.options.get(k).is_none());
    // The values are read whole; the letters decode them.
    let raw = [("format", "raw")];
    let options = kept.chain(
        defaults
            .chain(raw)
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let settings = Arc::new(KafkaSettings::parse(&Options::new(options))?);
    let client = Arc::new(source_client::SourceClient::new(settings, &spec.name));
    let spec = spec.clone();
    Ok(Arc::new(move |info| {
        let source = KafkaSource::of_dead_letters(client.clone(), &spec, info, letters.clone())?;
        Ok(Box::new(source) as Box<dyn weir_engine::Source>)
    }))
}

/// The sink subtasks writing to a Kafka topic as `settings` say.
fn sink_factory(
    settings: Arc<KafkaSettings>,
    spec: &TableSpec,
) -> Result<SinkFactory, ConnectorError> {
    if settings.topics.len() != 1 {
        return Err(ConnectorError::option(
            "topic",
            "a Kafka sink writes to exactly one topic",
        ));
    }
    let delivery = spec
        .options
        .get("sink.delivery")
        .or(spec.options.get("sink.delivery-guarantee"))
        .map(|d| d.to_ascii_lowercase().replace('_', "-"));
    let transactional_id_prefix =
        match delivery.as_deref() {
            None | Some("at-least-once") | Some("best-effort") | Some("none") => None,
            Some("exactly-once") if !spec.checkpointing => return Err(ConnectorError::option(
                "sink.delivery",
                "'exactly-once' commits a Kafka transaction per checkpoint: enable checkpoints \
                     (SET 'execution.checkpointing.interval' = '10s') or use 'at-least-once'",
            )),
            Some("exactly-once") => Some(
                spec.options
                    .get("sink.transactional-id-prefix")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("weir-{}", spec.name)),
            ),
            Some(other) => {
                return Err(ConnectorError::option(
                    "sink.delivery",
                    format!("'{other}' is not exactly-once, at-least-once, best-effort or none"),
                ))
            }
        };
    // A `.proto` made from the columns: a column it cannot hold is an
    // error now, not at the first row.
    let (key_columns, value_columns) = sink::written_columns(&settings, spec);
    let formats = [
        (Some(&settings.value_format), value_columns),
        (settings.key.format.as_ref(), key_columns),
    ];
    for (format, columns) in formats {
        if let Some(Format::ProtobufConfluent(_)) = format {
            let schema = spec
                .schema
                .project(&columns)
                .map_err(|e| ConnectorError::option("format", e.to_string()))?;
            crate::protobuf::proto_schema_of(&schema, "row")
                .map_err(|e| ConnectorError::option("format", e))?;
        }
    }
    let spec = spec.clone();
    Ok(Arc::new(move |info| {
        Ok(Box::new(KafkaSink::new(
            settings.clone(),
            &spec,
            info,
            transactional_id_prefix.as_deref(),
        )?) as Box<dyn weir_engine::Sink>)
    }))
}
