//! `'connector' = 'upsert-kafka'`: a (compacted) topic as a changelog
//! keyed by the table's `PRIMARY KEY`, as Flink's upsert-kafka.
//!
//! The record key holds the primary key (`'key.format'`), the value the
//! row (`'value.format'`; `'value.fields-include'` = `ALL` or
//! `EXCEPT_KEY`). Read, a record is the newest row of its key and a record
//! without a value (a tombstone) deletes the key; the planner keeps the
//! last row per key where a consumer needs retractions (Flink's
//! `ChangelogNormalize`). Written, `+I` and `+U` are records of their key,
//! `-U` and `-D` tombstones. `'sink.buffer-flush.max-rows'` and
//! `'sink.buffer-flush.interval'` (both set) buffer the last row of each
//! key and write them out together, as Flink's reducing writer. The source
//! reads the topic from its earliest offset (`'scan.bounded.mode'` can end
//! it, which Flink's upsert-kafka cannot).

use std::sync::Arc;

use weir_engine::{SinkFactory, SourceFactory};

use super::{sink_factory, source_factory, KafkaSettings};
use crate::options::Options;
use crate::registry::{Connector, ConnectorError, SinkChanges, SourceChanges, TableSpec};

pub struct UpsertKafkaConnector;

/// Options of upsert-kafka that the plain Kafka connector does not take.
const BUFFER_OPTIONS: &[&str] = &["sink.buffer-flush.max-rows", "sink.buffer-flush.interval"];

const OPTIONS: &[&str] = &[
    "topic",
    "key.format",
    "value.format",
    "value.fields-include",
    "scan.bounded.mode",
    "scan.bounded.timestamp-millis",
    "scan.bounded.specific-offsets",
    "scan.batch-size",
    "sink.delivery",
    "sink.delivery-guarantee",
    "sink.max-retries",
    "sink.transactional-id-prefix",
    "sink.parallelism",
    "sink.buffer-flush.max-rows",
    "sink.buffer-flush.interval",
    "csv.field-delimiter",
];

/// Upsert-kafka's options as the Kafka connector's: the key fields are
/// the primary key, reading starts at the earliest offset.
fn settings(options: &Options, primary_key: &[String]) -> Result<KafkaSettings, ConnectorError> {
    options.check_known("upsert-kafka", OPTIONS, &super::FORMAT_OPTION_PREFIXES)?;
    options.require("key.format")?;
    options.require("value.format")?;
    let mut kafka: Vec<(String, String)> = options
        .iter()
        .filter(|(k, _)| !BUFFER_OPTIONS.contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Validation at CREATE has no key yet: a placeholder stands in.
    let key = if primary_key.is_empty() {
        "_".to_string()
    } else {
        primary_key.join(";")
    };
    kafka.push(("key.fields".into(), key));
    kafka.push(("scan.startup.mode".into(), "earliest-offset".into()));
    let mut settings = KafkaSettings::parse(&Options::new(kafka))?;
    if settings.value_format.is_changelog() {
        return Err(ConnectorError::option(
            "value.format",
            "upsert-kafka's values are rows: use json, csv or raw",
        ));
    }
    settings.upsert = true;
    let max_rows = options.parse::<usize>("sink.buffer-flush.max-rows")?;
    let interval = options.duration("sink.buffer-flush.interval")?;
    settings.buffer_flush = match (max_rows, interval) {
        (None, None) => None,
        (Some(rows), Some(interval)) if rows > 0 && !interval.is_zero() => Some((rows, interval)),
        // Zero turns buffering off, as in Flink.
        (Some(_), Some(_)) => None,
        _ => {
            return Err(ConnectorError::new(
                "'sink.buffer-flush.max-rows' and 'sink.buffer-flush.interval' go together",
            ))
        }
    };
    Ok(settings)
}

impl Connector for UpsertKafkaConnector {
    fn name(&self) -> &'static str {
        "upsert-kafka"
    }

    fn validate(&self, options: &Options) -> Result<(), ConnectorError> {
        settings(options, &[]).map(|_| ())
    }

    fn check_primary_key(&self, columns: &[String]) -> Result<(), ConnectorError> {
        if columns.is_empty() {
            return Err(ConnectorError::new(
                "upsert-kafka needs a PRIMARY KEY: the columns of the record key, as in PRIMARY KEY (id) NOT ENFORCED",
            ));
        }
        Ok(())
    }

    fn is_bounded(&self, options: &Options) -> bool {
        settings(options, &[]).is_ok_and(|s| !matches!(s.bounded, super::BoundedMode::Unbounded))
    }

    fn source_changes(&self, _options: &Options) -> SourceChanges {
        SourceChanges::Upsert
    }

    fn sink_changes(&self, _options: &Options) -> SinkChanges {
        SinkChanges::Upsert
    }

    fn source(&self, spec: &TableSpec) -> Result<SourceFactory, ConnectorError> {
        source_factory(Arc::new(settings(&spec.options, &spec.primary_key)?), spec)
    }

    fn sink(&self, spec: &TableSpec) -> Result<SinkFactory, ConnectorError> {
        sink_factory(Arc::new(settings(&spec.options, &spec.primary_key)?), spec)
    }
}
