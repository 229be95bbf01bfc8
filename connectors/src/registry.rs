//! From `'connector' = '...'` to sources and sinks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use weir_engine::{SinkFactory, SourceFactory};

use crate::deadletter::BadDataPolicy;
use crate::options::Options;

/// A connector configuration error, named after the option at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    pub message: String,
}

impl ConnectorError {
    pub fn new(message: impl Into<String>) -> Self {
        ConnectorError {
            message: message.into(),
        }
    }

    pub fn option(key: &str, problem: impl std::fmt::Display) -> Self {
        ConnectorError::new(format!("option '{key}' {problem}"))
    }
}

impl From<ConnectorError> for weir_engine::EngineError {
    fn from(e: ConnectorError) -> Self {
        weir_engine::EngineError::connector("connector", e.message)
    }
}

/// What a connector needs to know about the table it reads or writes.
#[derive(Clone)]
pub struct TableSpec {
    pub name: String,
    /// The columns the connector produces or receives (no computed columns).
    pub schema: SchemaRef,
    pub options: Options,
    pub partitioned_by: Vec<String>,
    /// What to do with records that cannot be decoded.
    pub bad_data: BadDataPolicy,
    /// Columns of `schema` filled from connector metadata, not decoded.
    pub metadata: Vec<MetadataColumn>,
    /// The job takes checkpoints (sinks can commit with them).
    pub checkpointing: bool,
    /// `PRIMARY KEY (...) NOT ENFORCED`: the columns that identify a row.
    pub primary_key: Vec<String>,
    /// `ROW` columns of which the query reads only some fields, and those
    /// fields: a source that [`Connector::reads_row_fields`] may leave the
    /// others null. Empty: every field is read.
    pub read_fields: BTreeMap<String, BTreeSet<String>>,
}

/// A `METADATA` column: its index in the table's schema and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataColumn {
    pub index: usize,
    pub key: String,
}

impl TableSpec {
    /// Whether column `index` is metadata rather than data.
    pub fn is_metadata(&self, index: usize) -> bool {
        self.metadata.iter().any(|m| m.index == index)
    }
}

/// Which changes a sink takes: what it does with the rows of an updating
/// result (Flink's sink `ChangelogMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkChanges {
    /// Only new rows: files and Kafka in a plain format.
    AppendOnly,
    /// Rows keyed by the table's `PRIMARY KEY`: `+I` and `+U` write a
    /// key's row, `-U` and `-D` delete it (`upsert-kafka`).
    Upsert,
    /// Every change, retractions included (`print`, `debezium-json`).
    All,
}

/// Which changes a source produces (Flink's source `ChangelogMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceChanges {
    /// Every row is new.
    AppendOnly,
    /// Rows keyed by the `PRIMARY KEY`: a row replaces its key's row, a
    /// delete removes it; no `-U` (`upsert-kafka`).
    Upsert,
    /// Every change, retractions included (`debezium-json`).
    All,
}

/// A kind of source and/or sink.
pub trait Connector: Send + Sync {
    fn name(&self) -> &'static str;

    /// The `METADATA` keys the connector fills.
    fn metadata_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// The schema to use when `CREATE STREAM` lists no columns.
    fn default_schema(&self, _options: &Options) -> Option<SchemaRef> {
        None
    }

    /// The watermark to use when `CREATE STREAM` lists no columns: the
    /// time column and its delay in milliseconds.
    fn default_watermark(&self, _options: &Options) -> Option<(String, i64)> {
        None
    }

    /// Builds the source subtasks, or says why it cannot read.
    fn source(&self, _spec: &TableSpec) -> Result<SourceFactory, ConnectorError> {
        Err(ConnectorError::new(format!(
            "the '{}' connector cannot be read from",
            self.name()
        )))
    }

    /// Whether reading ends by itself (a bounded source).
    fn is_bounded(&self, _options: &Options) -> bool {
        false
    }

    /// How many rows a bounded source will read, if known (for progress).
    fn expected_rows(&self, _options: &Options) -> Option<u64> {
        None
    }

    /// Whether the source can read only some of the declared columns: given
    /// a `TableSpec` whose schema holds just those (by name), it produces
    /// just those, and skips decoding the others.
    fn reads_projection(&self, _options: &Options) -> bool {
        false
    }

    /// Whether the source reads only the fields of `ROW` columns the query
    /// uses ([`TableSpec::read_fields`]), leaving the others null.
    fn reads_row_fields(&self, _options: &Options) -> bool {
        false
    }

    /// Which changes the source produces.
    fn source_changes(&self, _options: &Options) -> SourceChanges {
        SourceChanges::AppendOnly
    }

    /// How many parallel source subtasks make sense, if limited.
    fn max_source_parallelism(&self, _spec: &TableSpec) -> Option<usize> {
        None
    }

    /// Which changes the sink takes (Flink's sink changelog mode).
    fn sink_changes(&self, _options: &Options) -> SinkChanges {
        SinkChanges::AppendOnly
    }

    /// Builds the sink subtasks, or says why it cannot write.
    fn sink(&self, _spec: &TableSpec) -> Result<SinkFactory, ConnectorError> {
        Err(ConnectorError::new(format!(
            "the '{}' connector cannot be written to",
            self.name()
        )))
    }

    /// Checks the declared columns at `CREATE` time.
    fn check_schema(&self, _schema: &SchemaRef) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Checks the declared `PRIMARY KEY` at `CREATE` time (an upsert
    /// connector needs one).
    fn check_primary_key(&self, _columns: &[String]) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Checks options at `CREATE` time.
    fn validate(&self, _options: &Options) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// All known connectors, by name.
#[derive(Clone)]
pub struct Registry {
    connectors: BTreeMap<&'static str, Arc<dyn Connector>>,
}

impl Default for Registry {
    /// The built-in connectors.
    fn default() -> Self {
        let mut registry = Registry {
            connectors: BTreeMap::new(),
        };
        registry.register(Arc::new(crate::nexmark::NexmarkConnector));
        registry.register(Arc::new(crate::filesystem::FilesystemConnector));
        registry.register(Arc::new(crate::print::PrintConnector));
        registry.register(Arc::new(crate::blackhole::BlackholeConnector));
        registry.register(Arc::new(crate::kafka::KafkaConnector));
        registry.register(Arc::new(crate::kafka::UpsertKafkaConnector));
        registry.register(Arc::new(crate::replay::DeadLetterConnector));
        registry
    }
}

impl Registry {
    pub fn register(&mut self, connector: Arc<dyn Connector>) {
        self.connectors.insert(connector.name(), connector);
    }

    pub fn get(&self, name: &str) -> Result<Arc<dyn Connector>, ConnectorError> {
        self.connectors
            .get(name.to_ascii_lowercase().as_str())
            .cloned()
            .ok_or_else(|| {
                ConnectorError::new(format!(
                    "unknown connector '{name}'; known: {}",
                    self.connectors
                        .keys()
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.connectors.keys().copied().collect()
    }
}
