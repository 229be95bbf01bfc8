//! `PARTITIONED BY` on a filesystem sink, as Flink's: each row goes to the
//! directory of its partition values (`dt=2024-01-01/hm=10:30/`, Hive's
//! layout; a character a path cannot hold is percent-encoded by
//! object_store, where Flink escapes a few more, as `:`), and the
//! partition columns are not written into the files (the path holds
//! them).
//!
//! A partition is *committed* (Flink's partition commit) once it is
//! complete: with `'sink.partition-commit.trigger' = 'partition-time'`
//! when the watermark passes the time its values stand for
//! (`'partition.time-extractor.timestamp-pattern'`, e.g. `'$dt $hm:00'`)
//! plus `'sink.partition-commit.delay'`; with `'process-time'` (the
//! default) when the delay has passed since it was created. Committing
//! writes an empty `_SUCCESS` file into it (policy `success-file`; the
//! `metastore` policy has no metastore here). Partitions are committed
//! when their files are published (at a checkpoint for exactly-once), and
//! every one at the end of a bounded input.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::options::Options;
use crate::registry::ConnectorError;

/// Flink's `'partition.default-name'`: the directory of a NULL value.
const DEFAULT_NAME: &str = "__DEFAULT_PARTITION__";

/// One partition's rows of a batch: its directory (one `name=value` per
/// level), its values, its rows without the partition columns.
pub type PartitionRows = (Vec<String>, Vec<String>, RecordBatch);

/// How rows are spread over partition directories.
#[derive(Debug, Clone)]
pub struct Partitioning {
    /// The partition columns, in `PARTITIONED BY` order: name, index.
    keys: Vec<(String, usize)>,
    /// Every column of the sink, the partition columns included.
    pub full_schema: SchemaRef,
    /// The columns written into files.
    data: Vec<usize>,
    pub data_schema: SchemaRef,
}

impl Partitioning {
    pub fn new(schema: &SchemaRef, partitioned_by: &[String]) -> Result<Self, ConnectorError> {
        let keys = partitioned_by
            .iter()
            .map(|name| {
                schema
                    .index_of(name)
                    .map(|i| (schema.field(i).name().clone(), i))
                    .map_err(|_| {
                        ConnectorError::new(format!(
                            "PARTITIONED BY column '{name}' is not a column of the sink"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let data: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !keys.iter().any(|(_, k)| k == i))
            .collect();
        let data_schema = std::sync::Arc::new(Schema::new(
            data.iter()
                .map(|i| schema.field(*i).clone())
                .collect::<Vec<_>>(),
        ));
        Ok(Partitioning {
            keys,
            full_schema: schema.clone(),
            data,
            data_schema,
        })
    }

    /// The rows of `batch` per partition: its directory (relative, one
    /// `name=value` per level), its values, and its rows without the
    /// partition columns.
    pub fn split(&self, batch: &RecordBatch) -> Result<Vec<PartitionRows>, ConnectorError> {
        let options = FormatOptions::default();
        let formatters = self
            .keys
            .iter()
            .map(|(_, i)| ArrayFormatter::try_new(batch.column(*i).as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConnectorError::new(e.to_string()))?;
        let mut groups: BTreeMap<Vec<String>, Vec<u32>> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            let values = self
                .keys
                .iter()
                .zip(&formatters)
                .map(|((_, i), f)| {
                    if batch.column(*i).is_null(row) {
                        DEFAULT_NAME.to_string()
                    } else {
                        f.value(row).to_string()
                    }
                })
                .collect();
            groups.entry(values).or_default().push(row as u32);
        }
        groups
            .into_iter()
            .map(|(values, rows)| {
                let indices = UInt32Array::from(rows);
                let columns = self
                    .data
                    .iter()
                    .map(|i| take(batch.column(*i).as_ref(), &indices, None))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ConnectorError::new(e.to_string()))?;
                let rows = RecordBatch::try_new(self.data_schema.clone(), columns)
                    .map_err(|e| ConnectorError::new(e.to_string()))?;
                let dir = self
                    .keys
                    .iter()
                    .zip(&values)
                    .map(|((name, _), value)| format!("{name}={value}"))
                    .collect();
                Ok((dir, values, rows))
            })
            .collect()
    }

    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// When a partition is complete.
#[derive(Debug, Clone)]
enum Trigger {
    /// The watermark passed the partition's time plus the delay.
    PartitionTime { pattern: String },
    /// The delay passed since the partition was created.
    ProcessTime,
}

/// Which partitions to commit, and when.
#[derive(Debug)]
pub struct PartitionCommit {
    trigger: Trigger,
    delay: Duration,
    names: Vec<String>,
    /// Partitions written to and not committed: values, created at.
    open: BTreeMap<Vec<String>, (Vec<String>, Instant)>,
}

impl PartitionCommit {
    /// The commit the options ask for; `None` without a commit policy.
    pub fn from_options(
        options: &Options,
        partitioning: &Partitioning,
    ) -> Result<Option<Self>, ConnectorError> {
        let Some(policy) = options.get("sink.partition-commit.policy.kind") else {
            return Ok(None);
        };
        let policies: Vec<String> = policy
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .collect();
        if let Some(other) = policies.iter().find(|p| p.as_str() != "success-file") {
            return Err(ConnectorError::option(
                "sink.partition-commit.policy.kind",
                format!("'{other}' is not supported: only 'success-file' (there is no metastore)"),
            ));
        }
        let trigger = match options
            .get("sink.partition-commit.trigger")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("process-time") => Trigger::ProcessTime,
            Some("partition-time") => Trigger::PartitionTime {
                pattern: options
                    .get("partition.time-extractor.timestamp-pattern")
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        // Flink's default: the first partition column.
                        format!("${}", partitioning.names()[0])
                    }),
            },
            Some(other) => {
                return Err(ConnectorError::option(
                    "sink.partition-commit.trigger",
                    format!("'{other}': expected 'partition-time' or 'process-time'"),
                ))
            }
        };
        Ok(Some(PartitionCommit {
            trigger,
            delay: options
                .duration("sink.partition-commit.delay")?
                .unwrap_or(Duration::ZERO),
            names: partitioning.names().iter().map(|n| n.to_string()).collect(),
            open: BTreeMap::new(),
        }))
    }

    /// Notes that rows went to partition `dir`.
    pub fn written(&mut self, dir: &[String], values: &[String]) {
        if !self.open.contains_key(dir) {
            self.open
                .insert(dir.to_vec(), (values.to_vec(), Instant::now()));
        }
    }

    /// The time partition `values` stand for, in epoch ms.
    fn partition_time(&self, pattern: &str, values: &[String]) -> Option<i64> {
        let mut text = pattern.to_string();
        // Longest names first, so `$dt` does not eat `$dtx`.
        let mut named: Vec<(&String, &String)> = self.names.iter().zip(values).collect();
        named.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        for (name, value) in named {
            text = text.replace(&format!("${name}"), value);
        }
        let text = text.trim();
        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
            .or_else(|_| {
                chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
            })
            .ok()
            .map(|t| t.and_utc().timestamp_millis())
    }

    /// The partitions complete at `watermark` (all at the end of input),
    /// forgotten once returned.
    pub fn due(&mut self, watermark: i64, end: bool) -> Vec<Vec<String>> {
        let delay = i64::try_from(self.delay.as_millis()).unwrap_or(i64::MAX);
        let due: Vec<Vec<String>> = self
            .open
            .iter()
            .filter(|(_, (values, created))| {
                end || match &self.trigger {
                    Trigger::ProcessTime => created.elapsed() >= self.delay,
                    Trigger::PartitionTime { pattern } => self
                        .partition_time(pattern, values)
                        .is_some_and(|t| t.saturating_add(delay) < watermark),
                }
            })
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in &due {
            self.open.remove(dir);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};

    use super::*;

    fn partitioning() -> Partitioning {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("dt", DataType::Utf8, true),
            Field::new("hm", DataType::Utf8, true),
        ]));
        Partitioning::new(&schema, &["dt".into(), "hm".into()]).unwrap()
    }

    #[test]
    fn rows_split_by_their_partition_values_without_them() {
        let p = partitioning();
        let batch = RecordBatch::try_new(
            p.full_schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![
                    Some("2024-01-01"),
                    None,
                    Some("2024-01-01"),
                ])),
                Arc::new(StringArray::from(vec!["10:30", "10:30", "10:30"])),
            ],
        )
        .unwrap();
        let parts = p.split(&batch).unwrap();
        let dirs: Vec<(Vec<String>, usize)> = parts
            .iter()
            .map(|(dir, _, rows)| (dir.clone(), rows.num_rows()))
            .collect();
        assert_eq!(
            dirs,
            [
                (vec!["dt=2024-01-01".into(), "hm=10:30".into()], 2),
                (vec![format!("dt={DEFAULT_NAME}"), "hm=10:30".into()], 1),
            ]
        );
        assert_eq!(parts[0].2.num_columns(), 1);
    }

    /// Flink's partition-time trigger: committed once the watermark passes
    /// the partition's time plus the delay; everything at the end.
    #[test]
    fn partitions_commit_when_the_watermark_passes_their_time_and_delay() {
        let options = Options::new([
            ("sink.partition-commit.policy.kind", "success-file"),
            ("sink.partition-commit.trigger", "partition-time"),
            ("sink.partition-commit.delay", "1 min"),
            ("partition.time-extractor.timestamp-pattern", "$dt $hm:00"),
        ]);
        let mut commit = PartitionCommit::from_options(&options, &partitioning())
            .unwrap()
            .unwrap();
        let dir = |hm: &str| vec!["dt=2024-01-01".to_string(), format!("hm={hm}")];
        commit.written(&dir("10:30"), &["2024-01-01".into(), "10:30".into()]);
        commit.written(&dir("10:31"), &["2024-01-01".into(), "10:31".into()]);
        let at = |t: &str| {
            chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.3f")
                .unwrap()
                .and_utc()
                .timestamp_millis()
        };
        assert!(commit.due(at("2024-01-01 10:31:00.000"), false).is_empty());
        assert_eq!(
            commit.due(at("2024-01-01 10:31:00.001"), false),
            [dir("10:30")]
        );
        assert_eq!(
            commit.due(at("2024-01-01 10:31:30.000"), true),
            [dir("10:31")]
        );
        assert!(commit.due(i64::MAX, true).is_empty());
    }
}
