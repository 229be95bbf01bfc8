//! `'connector' = 'filesystem'`: files on a local path or object storage.
//!
//! As a source it reads the file `'path'` names, or every file under it
//! (bounded), one split per file, in `'format'` json (lines), csv,
//! parquet, raw, debezium-json (change events), avro (object container
//! files) or protobuf (length-delimited messages); the chunks of a file
//! (line chunks, Parquet row groups) are decoded on several cores
//! (`'scan.parallel-decode'`, default: every core) and emitted in their
//! order. As a sink it writes part files in the same formats, rolled by
//! size and time.

mod avro_file;
mod lines;
mod parquet;
mod partitions;
mod protobuf_file;
mod sink;
mod source;

use std::sync::Arc;

use weir_engine::{EngineError, SinkFactory, SourceFactory};

use crate::format::Format;
use crate::options::Options;
use crate::protobuf::ProtobufEncoder;
use crate::registry::{Connector, ConnectorError, SinkChanges, SourceChanges, TableSpec};
use crate::store::resolve;
use partitions::{PartitionCommit, Partitioning};

pub use sink::{Delivery, FileSink};
pub use source::{FileSource, FileSourceOptions};

pub struct FilesystemConnector;

const SOURCE_OPTIONS: &[&str] = &[
    "path",
    "debezium-json.schema-include",
    "scan.batch-size",
    "scan.parallel-decode",
    // Read again after this long when the table is joined FOR SYSTEM_TIME
    // AS OF (Flink's key).
    "lookup.join.cache.ttl",
    "csv.field-delimiter",
    "csv.header",
];

const SINK_OPTIONS: &[&str] = &[
    "path",
    "sink.rolling-policy.file-size",
    "sink.rolling-policy.rollover-interval",
    "sink.delivery",
    "sink.max-retries",
    "sink.parallelism",
    "sink.partition-commit.trigger",
    "sink.partition-commit.delay",
    "sink.partition-commit.policy.kind",
    "partition.time-extractor.timestamp-pattern",
    // Flink's; part files are checked at every write here.
    "sink.rolling-policy.check-interval",
    "csv.field-delimiter",
    "csv.header",
];

impl Connector for FilesystemConnector {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn validate(&self, options: &Options) -> Result<(), ConnectorError> {
        options.require("path")?;
        match Format::from_options(options)? {
            Format::AvroConfluent(_) => {
                return Err(ConnectorError::option(
                    "format",
                    "'avro-confluent' frames Kafka records; Avro files are 'avro' (object container files, the schema in each file)",
                ))
            }
            Format::ProtobufConfluent(_) => {
                return Err(ConnectorError::option(
                    "format",
                    "'protobuf-confluent' frames Kafka records; files of messages are 'protobuf' (each message after its length)",
                ))
            }
            _ => {}
        }
        let mut known: Vec<&str> = SOURCE_OPTIONS.to_vec();
        known.extend(SINK_OPTIONS);
        known.extend(crate::protobuf::PROTOBUF_OPTIONS);
        options.check_known("filesystem", &known, &["s3."])
    }

    fn is_bounded(&self, _options: &Options) -> bool {
        true
    }

    /// JSON and Parquet find columns by name; CSV by position.
    fn reads_projection(&self, options: &Options) -> bool {
        matches!(
            Format::from_options(options),
            Ok(Format::Json | Format::Parquet | Format::DebeziumJson(_))
        )
    }

    /// `debezium-json` files hold changes.
    fn source_changes(&self, options: &Options) -> SourceChanges {
        match Format::from_options(options) {
            Ok(f) if f.is_changelog() => SourceChanges::All,
            _ => SourceChanges::AppendOnly,
        }
    }

    /// `debezium-json` files take every change.
    fn sink_changes(&self, options: &Options) -> SinkChanges {
        match Format::from_options(options) {
            Ok(f) if f.is_changelog() => SinkChanges::All,
            _ => SinkChanges::AppendOnly,
        }
    }

    fn source(&self, spec: &TableSpec) -> Result<SourceFactory, ConnectorError> {
        self.validate(&spec.options)?;
        let location = resolve(spec.options.require("path")?, &spec.options, false)?;
        let format = Format::from_options(&spec.options)?;
        let read = FileSourceOptions::from_options(&spec.options)?;
        let spec = spec.clone();
        Ok(Arc::new(move |info| {
            Ok(Box::new(FileSource::new(
                location.clone(),
                format.clone(),
                spec.schema.clone(),
                spec.name.clone(),
                spec.bad_data.clone(),
                read.clone(),
                info,
            )?) as Box<dyn weir_engine::Source>)
        }))
    }

    fn sink(&self, spec: &TableSpec) -> Result<SinkFactory, ConnectorError> {
        self.validate(&spec.options)?;
        let partitioning = if spec.partitioned_by.is_empty() {
            None
        } else {
            let partitioning = Partitioning::new(&spec.schema, &spec.partitioned_by)?;
            // Checked now, so that a bad option fails the statement.
            PartitionCommit::from_options(&spec.options, &partitioning)?;
            Some(partitioning)
        };
        let location = resolve(spec.options.require("path")?, &spec.options, true)?;
        let format = Format::from_options(&spec.options)?;
        let roll_size = spec
            .options
            .bytes("sink.rolling-policy.file-size")?
            .unwrap_or(128 * 1024 * 1024);
        let roll_interval = spec
            .options
            .duration("sink.rolling-policy.rollover-interval")?;
        let schema = spec.schema.clone();
        let exactly_once = match spec.options.get("sink.delivery").map(str::to_ascii_lowercase).as_deref() {
            None => spec.checkpointing,
            Some("exactly-once") if !spec.checkpointing => {
                return Err(ConnectorError::option(
                    "sink.delivery",
                    "'exactly-once' commits files with checkpoints: SET 'execution.checkpointing.interval' = '10s'",
                ))
            }
            Some("exactly-once") => true,
            Some("at-least-once") => false,
            Some(other) => {
                return Err(ConnectorError::option("sink.delivery", format!("'{other}' is not exactly-once, at-least-once or best-effort")))
            }
        };
        // The `.proto` compiles once, and a bad one fails the statement.
        let messages = match &format {
            Format::Protobuf(config) => Some(Arc::new(ProtobufEncoder::new(config)?)),
            _ => None,
        };
        let run = crate::deadletter::unique_run_id();
        let options = spec.options.clone();
        Ok(Arc::new(move |info| {
            let delivery = if exactly_once {
                Delivery::ExactlyOnce {
                    subtask: info.index,
                }
            } else {
                Delivery::AtLeastOnce {
                    prefix: format!("{run}-{}", info.index),
                }
            };
            let sink = FileSink::new(
                location.clone(),
                format.clone(),
                schema.clone(),
                delivery,
                roll_size,
                roll_interval,
            );
            let sink = match &messages {
                Some(encoder) => sink.writing_messages(encoder.clone()),
                None => sink,
            };
            let sink = match &partitioning {
                Some(p) => {
                    let commit = PartitionCommit::from_options(&options, p)
                        .map_err(|e| EngineError::connector("filesystem sink", e))?;
                    sink.partitioned(p.clone(), commit)
                }
                None => sink,
            };
            Ok(Box::new(sink) as Box<dyn weir_engine::Sink>)
        }))
    }
}

/// The whole of the object at `path` (Avro and protobuf files are read in
/// one request), an error naming it when it cannot be read.
pub(crate) async fn read_whole(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    path: &object_store::path::Path,
) -> weir_engine::Result<bytes::Bytes> {
    use object_store::ObjectStoreExt;
    let failed =
        |e: object_store::Error| EngineError::connector("filesystem", format!("{path}: {e}"));
    store
        .get(path)
        .await
        .map_err(failed)?
        .bytes()
        .await
        .map_err(failed)
}
