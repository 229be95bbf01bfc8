//! The session: a catalog, settings, and the jobs started from it.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use weir_connectors::Registry;
use weir_engine::{message::now_millis, RuntimeConfig};
use weir_planner::{Planned, Planner};
use weir_sql::{ParsedStatement, Statement};

use crate::error::{Result, WeirError};
use crate::job::Job;
use crate::metrics_server::{MetricsServer, SharedJobs};
use crate::results::{result_channel, ResultStream};
use crate::system_tables::{SystemTable, SystemTablesConnector};

/// What running one statement gave.
pub enum Output {
    /// The statement took effect (DDL, SET); a message for the user.
    Done(String),
    /// A table (SHOW, DESCRIBE, SHOW JOBS, DESCRIBE JOB).
    Rows(RecordBatch),
    /// The plan of an EXPLAIN.
    Explain(String),
    /// Text to show as it is (`SHOW CREATE TABLE`).
    Text(String),
    /// A running transient query.
    Query(ResultStream),
    /// A submitted INSERT job.
    Job(Job),
    /// Several tables (DESCRIBE JOB: operators, partitions, hot keys,
    /// alerts, checkpoints), each with a title.
    Tables(Vec<(String, RecordBatch)>),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Done(m) => write!(f, "Done({m})"),
            Output::Rows(b) => write!(f, "Rows({} rows)", b.num_rows()),
            Output::Explain(e) => write!(f, "Explain({e})"),
            Output::Text(t) => write!(f, "Text({t})"),
            Output::Query(_) => write!(f, "Query"),
            Output::Job(j) => write!(f, "Job({})", j.id()),
            Output::Tables(t) => write!(f, "Tables({})", t.len()),
        }
    }
}

/// A Weir session: the same engine the `weir` command runs, embedded.
///
/// ```no_run
/// # async fn example() -> Result<(), weir::WeirError> {
/// let mut session = weir::Session::new();
/// session.sql("CREATE STREAM bids WITH ('connector' = 'nexmark', 'events.num' = '100000')").await?;
/// let rows = session
///     .query("SELECT bid.auction, count(*) AS n FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '10' SECOND)) WHERE event_type = 2 GROUP BY bid.auction, window_start, window_end")
///     .await?
///     .collect()
///     .await?;
/// # Ok(()) }
/// ```
pub struct Session {
    planner: Planner,
    jobs: SharedJobs,
    next_job: u64,
    runtime: RuntimeConfig,
    metrics_server: Option<MetricsServer>,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A session with the built-in connectors.
    pub fn new() -> Self {
        Self::with_registry(Registry::default())
    }

    /// A session with these connectors (and `weir_metrics`, which reads
    /// the session's own jobs).
    pub fn with_registry(mut registry: Registry) -> Self {
        let jobs = SharedJobs::default();
        registry.register(Arc::new(SystemTablesConnector::new(jobs.clone())));
        let mut planner = Planner::new(registry);
        for table in SystemTable::ALL {
            let ddl = format!(
                "CREATE STREAM {} WITH ('connector' = '{}', 'table' = '{}')",
                weir_sql::system_name(table.name()),
                crate::system_tables::CONNECTOR,
                table.name()
            );
            let planned = weir_sql::parse(&ddl)
                .map_err(weir_planner::PlanError::from)
                .and_then(|statements| {
                    statements
                        .iter()
                        .try_for_each(|s| planner.plan(s).map(|_| ()))
                });
            if let Err(e) = planned {
                // The DDL is ours: failing here is a bug, not a user error.
                tracing::error!("system stream weir_metrics.{}: {e}", table.name());
            }
        }
        Session {
            planner,
            jobs,
            next_job: 1,
            runtime: RuntimeConfig::default(),
            metrics_server: None,
        }
    }

    /// The catalog and settings, for completion and inspection.
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// Sets a session setting, like `SET 'key' = 'value'`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        self.planner
            .settings_mut()
            .set(key, value)
            .map_err(|e| WeirError::plan(e.into(), ""))?;
        self.apply_settings()
    }

    /// Runs every statement of `text` in order: DDL and SET take effect,
    /// INSERT jobs are submitted, queries start.
    pub async fn sql(&mut self, text: &str) -> Result<Vec<Output>> {
        let statements = weir_sql::parse(text).map_err(|e| WeirError::sql(e, text))?;
        let mut outputs = Vec::with_capacity(statements.len());
        for statement in &statements {
            outputs.push(self.execute(statement, text).await?);
        }
        Ok(outputs)
    }

    /// Runs one parsed statement. `source` is the text positions refer to.
    pub async fn execute(&mut self, statement: &ParsedStatement, source: &str) -> Result<Output> {
        let planned = self
            .planner
            .plan(statement)
            .map_err(|e| WeirError::plan(e, source))?;
        match planned {
            Planned::Done(message) => {
                self.apply_settings()?;
                Ok(Output::Done(message))
            }
            Planned::Rows(rows) => Ok(Output::Rows(rows)),
            Planned::Explain(text) => Ok(Output::Explain(text)),
            Planned::Text(text) => Ok(Output::Text(text)),
            Planned::Query(plan) => {
                let (sink, receiver) = result_channel(16);
                let limit = limit_of(&statement.statement);
                let schema = plan.schema.clone();
                let bounded = plan.bounded;
                let graph = plan.with_sink(sink);
                let handle = weir_engine::spawn(graph, self.runtime_config()?)?;
                Ok(Output::Query(ResultStream::new(
                    schema,
                    receiver,
                    Arc::new(handle),
                    limit,
                    bounded,
                )))
            }
            Planned::Job(plan) => {
                let mut runtime = self.runtime_config()?;
                if let Some(checkpoint) = &plan.checkpoint {
                    let (config, restore) =
                        crate::checkpoints::prepare(checkpoint, &plan.name).await?;
                    runtime.checkpoint = Some(config);
                    runtime.restore = restore;
                }
                let handle = weir_engine::spawn(plan.graph, runtime)?;
                let id = self.next_job.to_string();
                self.next_job += 1;
                let job = Job::new(
                    id,
                    plan.name,
                    weir_sql::mask_secrets(&plan.text),
                    plan.sink,
                    plan.expected_rows,
                    handle,
                );
                self.jobs.write().push(job.clone());
                Ok(Output::Job(job))
            }
            Planned::ShowJobs => Ok(Output::Rows(self.jobs_table())),
            Planned::DescribeJob(id) => {
                let job = self.find_job(&id, source)?;
                Ok(Output::Tables(crate::report::job_report(&job)))
            }
            Planned::StopJob(id) => {
                let job = self.find_job(&id, source)?;
                job.stop(true).await;
                Ok(Output::Done(format!("stopping job {id}")))
            }
        }
    }

    /// Starts one SELECT and returns its results.
    pub async fn query(&mut self, select: &str) -> Result<ResultStream> {
        match self
            .single(
                select,
                |s| matches!(s, Statement::Query(_)),
                "query() takes one SELECT",
            )
            .await?
        {
            Output::Query(stream) => Ok(stream),
            _ => Err(WeirError::Usage("query() takes one SELECT".into())),
        }
    }

    /// Submits one `INSERT INTO ... SELECT ...` job.
    pub async fn submit(&mut self, insert: &str) -> Result<Job> {
        match self
            .single(
                insert,
                |s| matches!(s, Statement::Insert(_)),
                "submit() takes one INSERT INTO",
            )
            .await?
        {
            Output::Job(job) => Ok(job),
            _ => Err(WeirError::Usage("submit() takes one INSERT INTO".into())),
        }
    }

    async fn single(
        &mut self,
        text: &str,
        check: impl Fn(&Statement) -> bool,
        usage: &str,
    ) -> Result<Output> {
        let statement = weir_sql::parse(text).map_err(|e| WeirError::sql(e, text))?;
        let [statement] = statement.as_slice() else {
            return Err(WeirError::Usage(usage.to_string()));
        };
        if !check(&statement.statement) {
            return Err(WeirError::Usage(usage.to_string()));
        }
        let statement = statement.clone();
        self.execute(&statement, text).await
    }

    /// Every job submitted in this session.
    pub fn jobs(&self) -> Vec<Job> {
        self.jobs.read().clone()
    }

    pub fn job(&self, id: &str) -> Option<Job> {
        self.jobs.read().iter().find(|j| j.id() == id).cloned()
    }

    /// The runtime settings from the session settings.
    fn runtime_config(&self) -> Result<RuntimeConfig> {
        let settings = self.planner.settings();
        let mut runtime = self.runtime.clone();
        runtime.monitor.stall_timeout = settings.stall_timeout();
        runtime.latency_marker_interval = settings.latency_interval();
        runtime.detailed_metrics = settings.detailed_metrics();
        Ok(runtime)
    }

    /// Settings that act at once: `metrics.address` starts the metrics server.
    fn apply_settings(&mut self) -> Result<()> {
        let wanted = self
            .planner
            .settings()
            .metrics_address()
            .map(str::to_string);
        let serving = self
            .metrics_server
            .as_ref()
            .and_then(|s| s.local_addr())
            .map(|a| a.to_string());
        match wanted {
            Some(address) if serving.as_deref() != Some(address.as_str()) => {
                self.metrics_server = None;
                self.metrics_server = Some(self.serve_metrics(&address)?);
            }
            None => self.metrics_server = None,
            _ => {}
        }
        Ok(())
    }

    /// Serves `/metrics` (Prometheus text) and `/healthz` for this
    /// session's jobs at `address` until the server is dropped.
    pub fn serve_metrics(&self, address: &str) -> Result<MetricsServer> {
        MetricsServer::start(address, self.jobs.clone())
    }

    fn find_job(&self, id: &str, source: &str) -> Result<Job> {
        self.job(id).ok_or_else(|| {
            WeirError::sql(
                weir_sql::SqlError::new(format!("no job '{id}'")).with_hint("SHOW JOBS lists them"),
                source,
            )
        })
    }

    fn jobs_table(&self) -> RecordBatch {
        let jobs = self.jobs();
        let columns = |f: &dyn Fn(&Job) -> String| -> ArrayRef {
            Arc::new(StringArray::from(jobs.iter().map(f).collect::<Vec<_>>()))
        };
        let rows_out: Vec<u64> = jobs
            .iter()
            .map(|j| {
                j.metrics()
                    .subtasks
                    .iter()
                    .filter(|s| s.operator.starts_with("sink:"))
                    .map(|s| s.rows_in)
                    .sum()
            })
            .collect();
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("sink", DataType::Utf8, false),
            Field::new("rows written", DataType::UInt64, false),
            Field::new("last checkpoint", DataType::Utf8, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                columns(&|j| j.id().to_string()),
                columns(&|j| j.name().to_string()),
                columns(&|j| j.status().to_string()),
                columns(&|j| j.sink().to_string()),
                Arc::new(UInt64Array::from(rows_out)),
                columns(&|j| checkpoint_summary(&j.checkpoints())),
            ],
        )
        .unwrap_or_else(|_| RecordBatch::new_empty(Arc::new(Schema::empty())))
    }
}

/// `#12, 1.5 s ago, 120 ms, 3.2 KB (1 failed)`, or empty without checkpoints.
fn checkpoint_summary(c: &weir_engine::CheckpointSnapshot) -> String {
    let Some(id) = c.last_id else {
        return if c.failed > 0 {
            format!("{} failed", c.failed)
        } else {
            String::new()
        };
    };
    let age = c
        .last_completed_at
        .map_or(0.0, |t| (now_millis() - t) as f64 / 1000.0);
    let mut text = format!(
        "#{id}, {age:.1} s ago, {} ms, {:.1} KB, alignment {} ms",
        c.last_duration_ms,
        c.last_size_bytes as f64 / 1024.0,
        c.last_alignment_ms
    );
    if c.failed > 0 {
        text.push_str(&format!(" ({} failed)", c.failed));
    }
    text
}

/// `LIMIT n` of a top-level query, so its result stream ends after n rows.
fn limit_of(statement: &Statement) -> Option<usize> {
    let Statement::Query(q) = statement else {
        return None;
    };
    let limit = match &q.query.limit_clause {
        Some(weir_sql::sqlparser::ast::LimitClause::LimitOffset {
            limit: Some(l),
            offset: None,
            ..
        }) => l,
        _ => return None,
    };
    limit.to_string().parse().ok()
}

/// Per-operator metrics of a job as a table.
pub fn job_metrics_table(job: &Job) -> RecordBatch {
    let now = now_millis();
    let totals = job.metrics().by_operator();
    let text = |f: &dyn Fn(&weir_engine::metrics::OperatorTotals) -> String| -> ArrayRef {
        Arc::new(StringArray::from(totals.iter().map(f).collect::<Vec<_>>()))
    };
    let number = |f: &dyn Fn(&weir_engine::metrics::OperatorTotals) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from(totals.iter().map(f).collect::<Vec<_>>()))
    };
    let schema = Schema::new(vec![
        Field::new("operator", DataType::Utf8, false),
        Field::new("subtasks", DataType::UInt64, false),
        Field::new("rows in", DataType::UInt64, false),
        Field::new("rows out", DataType::UInt64, false),
        Field::new("late rows", DataType::UInt64, false),
        Field::new("watermark", DataType::Utf8, false),
        Field::new("watermark lag", DataType::Utf8, false),
        Field::new("channel fill", DataType::Float64, false),
        Field::new("state rows", DataType::UInt64, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            text(&|o| format!("[{}] {}", o.node, o.operator)),
            number(&|o| o.subtasks as u64),
            number(&|o| o.rows_in),
            number(&|o| o.rows_out),
            number(&|o| o.late_rows),
            text(&|o| o.watermark.map(format_watermark).unwrap_or_default()),
            text(&|o| match o.watermark {
                Some(w) if w != weir_engine::FINAL_WATERMARK => {
                    format!("{:.1}s", (now - w) as f64 / 1000.0)
                }
                _ => String::new(),
            }),
            Arc::new(Float64Array::from(
                totals
                    .iter()
                    .map(|o| o.max_channel_fill)
                    .collect::<Vec<_>>(),
            )),
            number(&|o| o.state_rows),
        ],
    )
    .unwrap_or_else(|_| RecordBatch::new_empty(Arc::new(Schema::empty())))
}

fn format_watermark(ms: i64) -> String {
    if ms == weir_engine::FINAL_WATERMARK {
        return "end".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| ms.to_string())
}
