//! Weir's connectors: where streams come from and where results go.
//!
//! A stream or sink is declared with `WITH ('connector' = '...', ...)`; the
//! [`Registry`] maps the connector name to a [`Connector`] that validates the
//! options and builds per-subtask sources and sinks for the engine.
//!
//! | connector | source | sink |
//! | --- | --- | --- |
//! | `nexmark` | the Nexmark generator | |
//! | `filesystem` | files (json lines, csv, parquet) on a local path or object storage | files |
//! | `print` | | rows to stdout |
//! | `blackhole` | | discards rows (benchmarks) |
//! | `kafka` | topics, per-partition watermarks | a topic |
//! | `upsert-kafka` | a compacted topic as a changelog keyed by the primary key | upserts and tombstones by key |
//!
//! Formats: `json`, `csv`, `parquet` (files), `raw`, and `debezium-json`
//! (change events: a changelog, read and written).

pub mod avro;
pub mod blackhole;
pub mod deadletter;
pub mod debezium;
pub mod filesystem;
pub mod format;
pub mod kafka;
pub mod nexmark;
pub mod options;
pub mod print;
pub mod protobuf;
pub mod registry;
pub mod replay;
pub mod schema_registry;
pub mod spill;
pub mod store;

pub use deadletter::{BadDataPolicy, DeadLetterWriter};
pub use options::Options;
pub use registry::{
    Connector, ConnectorError, MetadataColumn, Registry, SinkChanges, SourceChanges, TableSpec,
};
