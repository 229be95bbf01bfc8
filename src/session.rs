//! The session: runs each statement against the catalog and settings,
//! and starts the jobs and queries it plans. Jobs are kept in
//! [`jobs`](crate::jobs), rendered as tables in [`report`](crate::report)
//! and served to Prometheus by [`metrics_server`](crate::metrics_server).

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use weir_connectors::Registry;
use weir_engine::RuntimeConfig;
use weir_planner::{Planned, Planner};
use weir_sql::{ParsedStatement, Statement};

use crate::error::{Result, WeirError};
use crate::job::Job;
use crate::jobs::JobRegistry;
use crate::metrics_server::MetricsServer;
use crate::results::{result_channel, ResultStream};
use crate::system_tables::{SystemTable, SystemTablesConnector};

/// What running one statement gave.
pub enum Output {
    /// The statement took effect (DDL, SET); a message for the user.
    Done(String),
    /// A table (SHOW, DESCRIBE of a view, SHOW JOBS).
    Rows(RecordBatch),
    /// The plan of an EXPLAIN.
    Explain(String),
    /// Text to show as it is (`SHOW CREATE TABLE`).
    Text(String),
    /// A running transient query.
    Query(ResultStream),
    /// A submitted INSERT job.
    Job(Job),
    /// Several tables, each with a title: DESCRIBE of a stream (columns,
    /// then connector and formats), DESCRIBE JOB (operators, partitions,
    /// hot keys, alerts, checkpoints).
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
    jobs: JobRegistry,
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
        let jobs = JobRegistry::default();
        registry.register(Arc::new(SystemTablesConnector::new(jobs.shared())));
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
            runtime: RuntimeConfig::default(),
            metrics_server: None,
        }
    }

    /// The catalog and settings, for completion and inspection.
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// Registers a scalar function for this session's SQL: a DataFusion
    /// `ScalarUDF`, Weir's way to a user-defined function (Flink's
    /// `CREATE FUNCTION ... AS 'java.Class'` loads JVM code, which Weir
    /// does not run).
    ///
    /// ```
    /// use weir::datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
    /// use weir::arrow::datatypes::DataType;
    /// let mut session = weir::Session::new();
    /// let twice = create_udf("twice", vec![DataType::Int64], DataType::Int64, Volatility::Immutable,
    ///     std::sync::Arc::new(|args: &[ColumnarValue]| {
    ///         let rows = match &args[0] { ColumnarValue::Array(a) => a.len(), _ => 1 };
    ///         let a = args[0].to_array(rows)?;
    ///         let a = a.as_any().downcast_ref::<weir::arrow::array::Int64Array>().unwrap();
    ///         let out: weir::arrow::array::Int64Array = a.iter().map(|v| v.map(|v| v * 2)).collect();
    ///         Ok(ColumnarValue::Array(std::sync::Arc::new(out)))
    ///     }));
    /// session.register_udf(twice);
    /// ```
    pub fn register_udf(&mut self, function: datafusion::logical_expr::ScalarUDF) {
        self.planner.register_udf(function);
    }

    /// Registers an aggregate function (a DataFusion `AggregateUDF`); it
    /// works in windows, updating aggregates and OVER.
    pub fn register_udaf(&mut self, function: datafusion::logical_expr::AggregateUDF) {
        self.planner.register_udaf(function);
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
        let with_subject = crate::subject::with_subject_columns(statement)
            .await
            .map_err(|e| WeirError::sql(e, source))?;
        let statement = with_subject.as_ref().unwrap_or(statement);
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
            Planned::Tables(tables) => Ok(Output::Tables(tables)),
            Planned::Explain(text) => Ok(Output::Explain(text)),
            Planned::Text(text) => Ok(Output::Text(text)),
            Planned::Query(plan) => {
                let (sink, receiver) = result_channel(16);
                let limit = limit_of(&statement.statement);
                let schema = plan.schema.clone();
                let (bounded, updating) = (plan.bounded, plan.updating);
                let graph = plan.with_sink(sink);
                let handle = weir_engine::spawn(graph, self.runtime_config()?)?;
                Ok(Output::Query(ResultStream::new(
                    schema,
                    receiver,
                    Arc::new(handle),
                    limit,
                    bounded,
                    updating,
                )))
            }
            Planned::Job(plan) if self.planner.settings().cluster() => {
                let runtime = self.runtime_config()?;
                let (name, text, sinks) =
                    (plan.name.clone(), plan.text.clone(), plan.sinks.join(", "));
                let handle = crate::cluster::start(plan, self.planner.settings(), runtime).await?;
                let job = Job::new(
                    self.jobs.next_id(),
                    name,
                    weir_sql::mask_secrets(&text),
                    sinks,
                    None,
                    handle,
                );
                self.jobs.add(job.clone());
                Ok(Output::Job(job))
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
                let job = Job::new(
                    self.jobs.next_id(),
                    plan.name,
                    weir_sql::mask_secrets(&plan.text),
                    plan.sinks.join(", "),
                    plan.expected_rows,
                    handle,
                );
                self.jobs.add(job.clone());
                Ok(Output::Job(job))
            }
            Planned::ShowJobs => Ok(Output::Rows(crate::report::jobs_table(&self.jobs()))),
            Planned::DescribeJob(id) => {
                let job = self.jobs.find(&id, source)?;
                Ok(Output::Tables(crate::report::job_report(&job)))
            }
            Planned::StopJob(id) => {
                let job = self.jobs.find(&id, source)?;
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

    /// Submits one `INSERT INTO ... SELECT ...` job, or one job of
    /// several (`EXECUTE STATEMENT SET BEGIN INSERT ...; INSERT ...; END;`).
    pub async fn submit(&mut self, insert: &str) -> Result<Job> {
        let usage = "submit() takes one INSERT INTO or EXECUTE STATEMENT SET";
        match self
            .single(
                insert,
                |s| matches!(s, Statement::Insert(_) | Statement::StatementSet(_)),
                usage,
            )
            .await?
        {
            Output::Job(job) => Ok(job),
            _ => Err(WeirError::Usage(usage.into())),
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
        self.jobs.list()
    }

    pub fn job(&self, id: &str) -> Option<Job> {
        self.jobs.get(id)
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
        MetricsServer::start(address, self.jobs.shared())
    }
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
