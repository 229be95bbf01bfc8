//! `weir_metrics.*`: the session's job metrics as streams SQL can read.
//!
//! Every session has six system streams, sampled from its running jobs
//! every second, each row stamped with `sampled_at` (the event time, with a
//! watermark of `sampled_at`), so Weir can filter, window and alert on its
//! own figures:
//!
//! | stream | one row per sample and |
//! |---|---|
//! | `weir_metrics.operators` | operator subtask: rows, bytes, state, watermark lag, busy/backpressured share, latency |
//! | `weir_metrics.partitions` | source partition (Kafka partition, file, generator lane): rows, position, lag, watermark |
//! | `weir_metrics.alerts` | open alert: watermark stall, hot partition, hot key, backpressure |
//! | `weir_metrics.hot_keys` | heavy hitter of a keyed operator |
//! | `weir_metrics.checkpoints` | job with checkpointing |
//! | `weir_metrics.tasks` | task of a cluster job (`execution.target` = `kafka`): stage, process it is assigned to, lag |
//!
//! ```sql
//! SELECT job, `partition`, lag FROM weir_metrics.partitions WHERE lag > 1000;
//! ```
//!
//! They are ordinary sources of the `weir_metrics` connector, which can
//! also be declared by hand to change the interval or read a fixed number
//! of samples: `CREATE STREAM parts WITH ('connector' = 'weir_metrics',
//! 'table' = 'partitions', 'scan.interval' = '200ms', 'scan.samples' = '5')`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use tokio::time::Instant;
use weir_connectors::{Connector, ConnectorError, Options, TableSpec};
use weir_engine::message::{now_millis, Millis};
use weir_engine::source::MAX_POLL_WAIT;
use weir_engine::{EngineError, Source, SourceFactory, SourcePoll, SplitId};

use crate::job::Job;
use crate::jobs::SharedJobs;

/// The connector's name.
pub const CONNECTOR: &str = "weir_metrics";

const OPTIONS: &[&str] = &["table", "scan.interval", "scan.samples"];

const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// The system tables, in the order they are registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemTable {
    Operators,
    Partitions,
    Alerts,
    HotKeys,
    Checkpoints,
    Tasks,
}

impl SystemTable {
    pub const ALL: [SystemTable; 6] = [
        SystemTable::Operators,
        SystemTable::Partitions,
        SystemTable::Alerts,
        SystemTable::HotKeys,
        SystemTable::Checkpoints,
        SystemTable::Tasks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SystemTable::Operators => "operators",
            SystemTable::Partitions => "partitions",
            SystemTable::Alerts => "alerts",
            SystemTable::HotKeys => "hot_keys",
            SystemTable::Checkpoints => "checkpoints",
            SystemTable::Tasks => "tasks",
        }
    }

    fn from_options(options: &Options) -> Result<Self, ConnectorError> {
        let name = options.require("table")?;
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                ConnectorError::option(
                    "table",
                    format!(
                        "names no system table: '{name}'; known: {}",
                        Self::ALL.map(|t| t.name()).join(", ")
                    ),
                )
            })
    }

    /// Every column: `sampled_at`, `job`, `job_id`, then the table's own.
    pub fn schema(self) -> SchemaRef {
        use DataType::{Float64, Int64, Utf8};
        let own: &[(&str, DataType)] = match self {
            SystemTable::Operators => &[
                ("operator", Utf8),
                ("subtask", Int64),
                ("rows_in", Int64),
                ("rows_out", Int64),
                ("bytes_in", Int64),
                ("bytes_out", Int64),
                ("late_rows", Int64),
                ("state_rows", Int64),
                ("state_bytes", Int64),
                ("state_rows_left", Int64),
                ("state_rows_right", Int64),
                ("state_bytes_left", Int64),
                ("state_bytes_right", Int64),
                ("channel_fill", Float64),
                ("busy_ratio", Float64),
                ("backpressured_ratio", Float64),
                ("watermark", time()),
                ("watermark_lag_ms", Int64),
                ("batch_p50_ms", Float64),
                ("batch_p99_ms", Float64),
                ("window_emit_p99_ms", Float64),
                ("end_to_end_p99_ms", Float64),
                ("dropped_rows", Int64),
            ],
            SystemTable::Partitions => &[
                ("partition", Utf8),
                ("subtask", Int64),
                ("rows", Int64),
                ("bytes", Int64),
                ("position", Int64),
                ("lag", Int64),
                ("watermark", time()),
                ("last_record", time()),
            ],
            SystemTable::Alerts => &[
                ("kind", Utf8),
                ("subject", Utf8),
                ("message", Utf8),
                ("since", time()),
            ],
            SystemTable::HotKeys => &[
                ("operator", Utf8),
                ("key", Utf8),
                ("rows", Int64),
                ("share", Float64),
            ],
            SystemTable::Checkpoints => &[
                ("completed", Int64),
                ("failed", Int64),
                ("last_id", Int64),
                ("duration_ms", Int64),
                ("size_bytes", Int64),
                ("alignment_ms", Int64),
                ("last_completed_at", time()),
            ],
            SystemTable::Tasks => &[
                ("task", Utf8),
                ("stage", Int64),
                ("process", Utf8),
                ("local", DataType::Boolean),
                ("lag", Int64),
            ],
        };
        let common = [
            Field::new("sampled_at", time(), false),
            Field::new("job", Utf8, false),
            Field::new("job_id", Utf8, false),
        ];
        let fields = common
            .into_iter()
            .chain(own.iter().map(|(n, t)| Field::new(*n, t.clone(), true)));
        Arc::new(Schema::new(fields.collect::<Vec<_>>()))
    }

    /// The table's rows for `job` at wall time `now`, without the common
    /// columns, in the order of [`SystemTable::schema`].
    fn rows(self, job: &Job, now: Millis) -> Vec<Vec<ScalarValue>> {
        let m = job.metrics();
        match self {
            SystemTable::Operators => m
                .subtasks
                .iter()
                .map(|s| {
                    let share = |part: u64| ratio(part, s.uptime_ms);
                    let watermark = s.watermark.filter(|w| *w != weir_engine::FINAL_WATERMARK);
                    let end_to_end = s.end_to_end.iter().map(|(_, h)| h.p99_us).max();
                    vec![
                        text(format!("[{}] {}", s.node, s.operator)),
                        int(s.subtask as u64),
                        int(s.rows_in),
                        int(s.rows_out),
                        int(s.bytes_in),
                        int(s.bytes_out),
                        int(s.late_rows),
                        int(s.state_rows),
                        int(s.state_bytes),
                        side(s.state_sides, 0, |s| s.rows),
                        side(s.state_sides, 1, |s| s.rows),
                        side(s.state_sides, 0, |s| s.bytes),
                        side(s.state_sides, 1, |s| s.bytes),
                        float(s.channel_fill),
                        share(s.busy_ms),
                        share(s.backpressured_ms),
                        timestamp(watermark),
                        ScalarValue::Int64(watermark.map(|w| now - w)),
                        millis(Some(s.processing.p50_us).filter(|_| s.processing.count > 0)),
                        millis(Some(s.processing.p99_us).filter(|_| s.processing.count > 0)),
                        millis(
                            Some(s.event_time_latency.p99_us)
                                .filter(|_| s.event_time_latency.count > 0),
                        ),
                        millis(end_to_end),
                        int(s.dropped_rows),
                    ]
                })
                .collect(),
            SystemTable::Partitions => m
                .splits
                .iter()
                .map(|p| {
                    vec![
                        text(p.split.clone()),
                        int(p.subtask as u64),
                        int(p.rows),
                        int(p.bytes),
                        ScalarValue::Int64(p.position),
                        ScalarValue::Int64(p.lag),
                        timestamp(p.watermark),
                        timestamp(p.last_record),
                    ]
                })
                .collect(),
            SystemTable::Alerts => m
                .alerts
                .iter()
                .map(|a| {
                    vec![
                        text(a.kind.name().to_string()),
                        text(a.subject.clone()),
                        text(a.message.clone()),
                        timestamp(Some(a.since)),
                    ]
                })
                .collect(),
            SystemTable::HotKeys => m
                .by_operator()
                .iter()
                .flat_map(|o| {
                    let operator = format!("[{}] {}", o.node, o.operator);
                    m.hot_keys(o.node).into_iter().map(move |k| {
                        vec![
                            text(operator.clone()),
                            text(k.key),
                            int(k.count),
                            float(k.share),
                        ]
                    })
                })
                .collect(),
            SystemTable::Checkpoints => {
                let c = job.checkpoints();
                if c.completed + c.failed == 0 {
                    return Vec::new();
                }
                vec![vec![
                    int(c.completed),
                    int(c.failed),
                    ScalarValue::Int64(c.last_id.and_then(|i| i64::try_from(i).ok())),
                    int(c.last_duration_ms),
                    int(c.last_size_bytes),
                    int(c.last_alignment_ms),
                    timestamp(c.last_completed_at),
                ]]
            }
            SystemTable::Tasks => m
                .tasks
                .iter()
                .map(|t| {
                    vec![
                        text(format!("{}-{}", t.stage, t.task)),
                        int(t.stage as u64),
                        ScalarValue::Utf8(t.process.clone()),
                        ScalarValue::Boolean(Some(t.local)),
                        ScalarValue::Int64(t.lag),
                    ]
                })
                .collect(),
        }
    }

    /// One sample over the running jobs of `jobs`, or `None` without rows.
    pub fn sample(self, jobs: &[Job], now: Millis) -> Result<Option<RecordBatch>, EngineError> {
        let schema = self.schema();
        let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::new(); schema.fields().len()];
        for job in jobs.iter().filter(|j| j.status().is_running()) {
            for row in self.rows(job, now) {
                let common = [
                    timestamp(Some(now)),
                    text(job.name().to_string()),
                    text(job.id().to_string()),
                ];
                for (column, value) in columns.iter_mut().zip(common.into_iter().chain(row)) {
                    column.push(value);
                }
            }
        }
        if columns[0].is_empty() {
            return Ok(None);
        }
        let arrays = columns
            .into_iter()
            .zip(schema.fields())
            .map(|(values, field)| {
                ScalarValue::iter_to_array(values)
                    .and_then(|a| Ok(cast(&a, field.data_type())?))
                    .map_err(|e| EngineError::connector(CONNECTOR, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(schema, arrays)
            .map(Some)
            .map_err(|e| EngineError::connector(CONNECTOR, e))
    }
}

fn time() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn text(value: String) -> ScalarValue {
    ScalarValue::Utf8(Some(value))
}

fn int(value: u64) -> ScalarValue {
    ScalarValue::Int64(Some(i64::try_from(value).unwrap_or(i64::MAX)))
}

fn float(value: f64) -> ScalarValue {
    ScalarValue::Float64(Some(value))
}

fn timestamp(ms: Option<Millis>) -> ScalarValue {
    ScalarValue::TimestampMillisecond(ms, None)
}

fn millis(us: Option<u64>) -> ScalarValue {
    ScalarValue::Float64(us.map(|us| us as f64 / 1000.0))
}

/// A join side's state figure; NULL for operators with one input.
fn side(
    sides: Option<[weir_engine::SideState; 2]>,
    i: usize,
    figure: impl Fn(&weir_engine::SideState) -> u64,
) -> ScalarValue {
    ScalarValue::Int64(sides.map(|s| figure(&s[i]) as i64))
}

fn ratio(part: u64, whole: u64) -> ScalarValue {
    float(if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    })
}

/// The `weir_metrics` connector: reads the metrics of a session's jobs.
pub struct SystemTablesConnector {
    jobs: SharedJobs,
}

impl SystemTablesConnector {
    pub fn new(jobs: SharedJobs) -> Self {
        SystemTablesConnector { jobs }
    }
}

impl Connector for SystemTablesConnector {
    fn name(&self) -> &'static str {
        CONNECTOR
    }

    fn default_schema(&self, options: &Options) -> Option<SchemaRef> {
        SystemTable::from_options(options)
            .ok()
            .map(SystemTable::schema)
    }

    fn default_watermark(&self, _options: &Options) -> Option<(String, i64)> {
        Some(("sampled_at".into(), 0))
    }

    fn validate(&self, options: &Options) -> Result<(), ConnectorError> {
        options.check_known(CONNECTOR, OPTIONS, &[])?;
        SystemTable::from_options(options)?;
        options.duration("scan.interval")?;
        options.parse::<u64>("scan.samples")?;
        Ok(())
    }

    fn is_bounded(&self, options: &Options) -> bool {
        matches!(options.parse::<u64>("scan.samples"), Ok(Some(_)))
    }

    fn max_source_parallelism(&self, _spec: &TableSpec) -> Option<usize> {
        Some(1)
    }

    fn source(&self, spec: &TableSpec) -> Result<SourceFactory, ConnectorError> {
        let table = SystemTable::from_options(&spec.options)?;
        let full = table.schema();
        // Declared columns are read by name, cast to their declared types.
        let projection = spec
            .schema
            .fields()
            .iter()
            .map(|f| {
                full.index_of(f.name()).map_err(|_| {
                    ConnectorError::new(format!(
                        "weir_metrics.{} has no column '{}'; columns: {}",
                        table.name(),
                        f.name(),
                        full.fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let interval = spec
            .options
            .duration("scan.interval")?
            .unwrap_or(DEFAULT_INTERVAL)
            .max(Duration::from_millis(10));
        let samples = spec.options.parse::<u64>("scan.samples")?;
        let schema = spec.schema.clone();
        let jobs = self.jobs.clone();
        Ok(Arc::new(move |_info| {
            Ok(Box::new(SystemTableSource {
                table,
                jobs: jobs.clone(),
                schema: schema.clone(),
                projection: projection.clone(),
                interval,
                samples_left: samples,
                next_sample: Instant::now(),
            }) as Box<dyn Source>)
        }))
    }
}

/// Samples one system table every `interval`.
struct SystemTableSource {
    table: SystemTable,
    jobs: SharedJobs,
    schema: SchemaRef,
    projection: Vec<usize>,
    interval: Duration,
    samples_left: Option<u64>,
    next_sample: Instant,
}

impl SystemTableSource {
    fn project(&self, batch: RecordBatch) -> weir_engine::Result<RecordBatch> {
        let columns = self
            .projection
            .iter()
            .zip(self.schema.fields())
            .map(|(&i, field)| cast(batch.column(i), field.data_type()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::connector(CONNECTOR, e))?;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| EngineError::connector(CONNECTOR, e))
    }
}

#[async_trait]
impl Source for SystemTableSource {
    fn splits(&self) -> Vec<SplitId> {
        vec![0]
    }

    fn split_name(&self, _split: SplitId) -> String {
        format!("weir_metrics.{}", self.table.name())
    }

    async fn poll(&mut self) -> weir_engine::Result<SourcePoll> {
        if self.samples_left == Some(0) {
            return Ok(SourcePoll::End);
        }
        let now = Instant::now();
        if now < self.next_sample {
            tokio::time::sleep((self.next_sample - now).min(MAX_POLL_WAIT)).await;
            return Ok(SourcePoll::Pending);
        }
        self.next_sample = now + self.interval;
        if let Some(left) = &mut self.samples_left {
            *left -= 1;
        }
        let jobs = self.jobs.read().clone();
        match self.table.sample(&jobs, now_millis())? {
            Some(batch) => Ok(SourcePoll::Batch {
                split: 0,
                batch: self.project(batch)?,
            }),
            None => Ok(SourcePoll::Pending),
        }
    }
}
