//! Weir's planner: from statements to runnable streaming graphs.
//!
//! The [`Planner`] keeps the catalog (streams, views) and the session
//! settings. A query goes through four steps, one module each:
//!
//! 1. [`context`]: DataFusion's SQL planner plans it against the catalog
//!    (streams, views, window table functions);
//! 2. [`query`]: a curated set of DataFusion's optimizer rules that are
//!    safe on streams;
//! 3. [`rewrite`]: the plan becomes a streaming plan of Weir's
//!    [`nodes`] (scans with watermarks, window, session and updating
//!    aggregates, exchanges), each knowing its keys, changelog kind and
//!    parallelism; what cannot run on a stream is refused there;
//! 4. [`lower`]: the streaming plan becomes the engine's [`Graph`].
//!
//! DDL ([`ddl`]), `SHOW`/`DESCRIBE` ([`show`]), `EXPLAIN` ([`explain`]) and
//! `SET` ([`settings`]) are their own modules.

mod aggregate;
mod catalog;
mod context;
mod ddl;
mod error;
mod explain;
mod fixed_interval;
mod flink_avg;
mod functions;
mod hints;
mod lookup;
mod lower;
mod names;
mod nodes;
mod over;
mod query;
mod rank;
mod rewrite;
mod row_fields;
pub mod settings;
mod show;
mod types;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{FunctionRegistry, SessionState};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionConfig;
use weir_connectors::Registry;
use weir_engine::{Graph, SinkFactory};
use weir_sql::{catalog_name, ParsedStatement, SqlError, Statement};

pub use catalog::{Catalog, StreamDef, ViewDef, WatermarkDef};
pub use error::{df_error, PlanError, Result};
pub use explain::streaming_plan_text;
pub use functions::{flink_functions, sampling};
pub use settings::{SettingError, Settings, SETTINGS};
pub use types::{arrow_type, flink_type_name};

use lower::Lowered;

/// The result of planning one statement.
pub enum Planned {
    /// The catalog or settings changed; a message for the user.
    Done(String),
    /// A table to show (SHOW, DESCRIBE of a view, SET).
    Rows(RecordBatch),
    /// Several tables, each with a title (DESCRIBE of a stream: its
    /// columns, then its connector and formats).
    Tables(Vec<(String, RecordBatch)>),
    /// EXPLAIN output.
    Explain(String),
    /// Text for the user to read as it is (`SHOW CREATE TABLE`).
    Text(String),
    /// A transient query: add a sink for its results and run it.
    Query(QueryPlan),
    /// An `INSERT INTO` job, ready to run.
    Job(JobPlan),
    ShowJobs,
    StopJob(String),
    DescribeJob(String),
}

/// A planned query whose results go to the caller.
pub struct QueryPlan {
    lowering_graph: Graph,
    output: Lowered,
    /// The streaming plan the graph was lowered from.
    pub streaming_plan: LogicalPlan,
    /// The result columns.
    pub schema: SchemaRef,
    /// Whether the query ends by itself.
    pub bounded: bool,
    /// Whether its rows are changes to earlier rows (`+I`, `-U`, `+U`,
    /// `-D`) rather than only new rows.
    pub updating: bool,
    pub text: String,
}

impl QueryPlan {
    /// The graph with `sink` receiving the results.
    pub fn with_sink(self, sink: SinkFactory) -> Graph {
        let mut graph = self.lowering_graph;
        let node = graph.add_node(
            "sink: results",
            "",
            self.output.parallelism,
            weir_engine::NodeKind::Sink(weir_engine::SinkNode::new(sink)),
        );
        graph.connect(self.output.node, node, weir_engine::EdgeKind::Forward);
        graph
    }
}

/// A planned `INSERT INTO` job.
pub struct JobPlan {
    pub graph: Graph,
    /// The streaming plan of each `INSERT INTO`, which the graph was
    /// lowered from.
    pub streaming_plans: Vec<LogicalPlan>,
    /// The streams written, one per `INSERT INTO`.
    pub sinks: Vec<String>,
    pub bounded: bool,
    pub name: String,
    pub text: String,
    /// Rows the sources will read, if bounded and known.
    pub expected_rows: Option<u64>,
    /// How the job checkpoints, if it does.
    pub checkpoint: Option<CheckpointPlan>,
}

/// Checkpoint settings of a job, from the session settings.
#[derive(Debug, Clone)]
pub struct CheckpointPlan {
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    /// `state.checkpoints.dir`; the job's checkpoints go under `{dir}/{job name}`.
    pub dir: String,
    pub retained: usize,
    /// Start from this checkpoint instead of the newest.
    pub restore_from: Option<String>,
}

/// Plans statements against a catalog.
pub struct Planner {
    catalog: Catalog,
    settings: Settings,
    registry: Registry,
    state: SessionState,
}

impl Default for Planner {
    fn default() -> Self {
        Self::new(Registry::default())
    }
}

impl Planner {
    pub fn new(registry: Registry) -> Self {
        let mut config = SessionConfig::new().with_target_partitions(1);
        {
            let sql = &mut config.options_mut().sql_parser;
            sql.enable_ident_normalization = false;
            sql.parse_float_as_decimal = true;
            sql.collect_spans = true;
            sql.map_string_types_to_utf8view = false;
        }
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .build();
        for f in flink_functions() {
            // A Flink function replaces DataFusion's of the same name.
            let _ = state.register_udf(f);
        }
        for f in functions::weir_aggregates() {
            let _ = state.register_udaf(f);
        }
        Planner {
            catalog: Catalog::default(),
            settings: Settings::default(),
            registry,
            state,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// Names of the scalar and aggregate functions, for completion.
    pub fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .state
            .udfs()
            .into_iter()
            .chain(self.state.udafs())
            .collect();
        names.sort();
        names
    }

    /// Plans one statement. Catalog and settings statements take effect.
    pub fn plan(&mut self, statement: &ParsedStatement) -> Result<Planned> {
        let text = &statement.text;
        match &statement.statement {
            Statement::CreateStream(c) => self.create_stream(c),
            Statement::CreateView(v) => self.create_view(v),
            Statement::Query(q) => Ok(Planned::Query(self.plan_query(q)?)),
            Statement::Insert(i) => Ok(Planned::Job(self.plan_insert(i, text)?)),
            Statement::StatementSet(inserts) => Ok(Planned::Job(self.plan_job(inserts, text)?)),
            Statement::Set {
                key: Some(k),
                value: Some(v),
            } => {
                self.settings.set(k, v)?;
                let shown = if weir_sql::is_secret_key(k) {
                    weir_sql::MASK
                } else {
                    v
                };
                Ok(Planned::Done(format!("set '{k}' = '{shown}'")))
            }
            Statement::Set { .. } => Ok(Planned::Rows(self.settings_table())),
            Statement::Reset { key } => {
                self.settings.reset(key.as_deref())?;
                Ok(Planned::Done("reset".into()))
            }
            Statement::Explain(inner) => Ok(Planned::Explain(self.explain(inner, text)?)),
            Statement::Show(weir_sql::ShowObject::Jobs) => Ok(Planned::ShowJobs),
            Statement::Show(what) => Ok(Planned::Rows(self.show(*what))),
            Statement::ShowCreate { kind, name } => {
                Ok(Planned::Text(self.show_create(*kind, &catalog_name(name))?))
            }
            Statement::Describe(name) => self.describe(&catalog_name(name)),
            Statement::DescribeJob(id) => Ok(Planned::DescribeJob(id.clone())),
            Statement::StopJob(id) => Ok(Planned::StopJob(id.clone())),
            Statement::Drop {
                name, if_exists, ..
            } => self.drop(name, *if_exists),
            Statement::CreateFunction {
                name,
                class,
                language,
                if_not_exists,
            } => self.create_function(
                &catalog_name(name),
                class,
                language.as_deref(),
                *if_not_exists,
            ),
        }
    }

    /// `CREATE FUNCTION name AS 'class'`: Weir runs no Java, so the class
    /// must be one it has a Rust implementation of (the Nexmark UDFs);
    /// any other function is registered through the embedded API
    /// ([`Planner::register_udf`]).
    fn create_function(
        &mut self,
        name: &str,
        class: &str,
        language: Option<&str>,
        if_not_exists: bool,
    ) -> Result<Planned> {
        if if_not_exists && self.state.scalar_functions().contains_key(name) {
            return Ok(Planned::Done(format!("function {name} exists")));
        }
        let Some(function) = functions::function_of_class(name, class) else {
            let language = language.unwrap_or("JAVA");
            return Err(SqlError::new(format!(
                "cannot load {language} class '{class}': Weir runs no JVM code"
            ))
            .with_hint(format!(
                "register a Rust function with the embedded API instead: session.register_udf(ScalarUDF) or register_udaf(AggregateUDF) (DataFusion's); classes Weir ships: {}",
                functions::KNOWN_CLASSES.join(", ")
            ))
            .into());
        };
        self.register_udf(function);
        Ok(Planned::Done(format!("created function {name}")))
    }

    /// Registers a scalar function (DataFusion's `ScalarUDF`) for SQL.
    pub fn register_udf(&mut self, function: datafusion::logical_expr::ScalarUDF) {
        let _ = self.state.register_udf(Arc::new(function));
    }

    /// Registers an aggregate function (DataFusion's `AggregateUDF`).
    pub fn register_udaf(&mut self, function: datafusion::logical_expr::AggregateUDF) {
        let _ = self.state.register_udaf(Arc::new(function));
    }
}

/// A table of text columns.
pub fn string_table(names: &[&str], columns: Vec<Vec<String>>) -> RecordBatch {
    let fields: Vec<Field> = names
        .iter()
        .map(|n| Field::new(*n, DataType::Utf8, false))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .unwrap_or_else(|_| RecordBatch::new_empty(Arc::new(Schema::empty())))
}
