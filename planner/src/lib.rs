//! Weir's planner: from statements to runnable streaming graphs.
//!
//! The [`Planner`] keeps the catalog (streams, views) and the session
//! settings. A query is planned by DataFusion's SQL planner against the
//! catalog, optimized by a curated set of DataFusion rules that are safe on
//! streams, checked for what an unbounded stream can run, and lowered to the
//! engine's [`Graph`]. `EXPLAIN` renders that graph.

mod catalog;
mod context;
mod error;
mod functions;
mod lower;
mod names;
pub mod settings;
mod show_create;
mod types;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{FunctionRegistry, SessionState};
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::simplify_expressions::SimplifyExpressions;
use datafusion::optimizer::{Optimizer, OptimizerContext};
use datafusion::prelude::SessionConfig;
use weir_connectors::{BadDataPolicy, MetadataColumn, Options, Registry, TableSpec};
use weir_engine::{Graph, SinkFactory};
use weir_sql::sqlparser::ast;
use weir_sql::{
    catalog_name, ColumnKind, CreateStream, CreateView, Insert, ParsedStatement, Query,
    ShowCreateKind, ShowObject, SqlError, Statement,
};

pub use catalog::{Catalog, StreamDef, ViewDef, WatermarkDef};
pub use error::df_error;
pub use functions::flink_functions;
pub use settings::Settings;
pub use types::{arrow_type, flink_type_name};

use context::Context;
use lower::{connector_error, Lowered, Lowering};

type Result<T> = std::result::Result<T, SqlError>;

/// The result of planning one statement.
pub enum Planned {
    /// The catalog or settings changed; a message for the user.
    Done(String),
    /// A table to show (SHOW, DESCRIBE, SET).
    Rows(RecordBatch),
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
    /// The result columns.
    pub schema: SchemaRef,
    /// Whether the query ends by itself.
    pub bounded: bool,
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
            weir_engine::NodeKind::Sink(sink),
        );
        graph.connect(self.output.node, node, weir_engine::EdgeKind::Forward);
        graph
    }
}

/// A planned `INSERT INTO` job.
pub struct JobPlan {
    pub graph: Graph,
    pub sink: String,
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
        self.plan_statement(&statement.statement, &statement.text)
    }

    fn plan_statement(&mut self, statement: &Statement, text: &str) -> Result<Planned> {
        match statement {
            Statement::CreateStream(c) => self.create_stream(c),
            Statement::CreateView(v) => self.create_view(v),
            Statement::Query(q) => Ok(Planned::Query(self.plan_query(q)?)),
            Statement::Insert(i) => Ok(Planned::Job(self.plan_insert(i, text)?)),
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
                self.settings.reset(key.as_deref());
                Ok(Planned::Done("reset".into()))
            }
            Statement::Explain(inner) => Ok(Planned::Explain(self.explain(inner, text)?)),
            Statement::Show(ShowObject::Jobs) => Ok(Planned::ShowJobs),
            Statement::Show(what) => Ok(Planned::Rows(self.show(*what))),
            Statement::ShowCreate { kind, name } => {
                Ok(Planned::Text(self.show_create(*kind, &catalog_name(name))?))
            }
            Statement::Describe(name) => Ok(Planned::Rows(self.describe(&catalog_name(name))?)),
            Statement::DescribeJob(id) => Ok(Planned::DescribeJob(id.clone())),
            Statement::StopJob(id) => Ok(Planned::StopJob(id.clone())),
            Statement::Drop {
                name, if_exists, ..
            } => {
                let n = catalog_name(name);
                let removed = self.catalog.streams.remove(&n).is_some()
                    || self.catalog.views.remove(&n).is_some();
                if !removed && !if_exists {
                    return Err(SqlError::new(format!("unknown stream or view '{n}'")));
                }
                Ok(Planned::Done(format!("dropped {n}")))
            }
        }
    }

    fn check_new_name(&self, name: &str, or_replace: bool, if_not_exists: bool) -> Result<bool> {
        if self.catalog.contains(name) {
            if if_not_exists {
                return Ok(false);
            }
            if !or_replace {
                return Err(SqlError::new(format!("'{name}' already exists"))
                    .with_hint("use CREATE OR REPLACE, or DROP it first"));
            }
        }
        Ok(true)
    }

    fn create_stream(&mut self, c: &CreateStream) -> Result<Planned> {
        let name = catalog_name(&c.name);
        if !self.check_new_name(&name, c.or_replace, c.if_not_exists)? {
            return Ok(Planned::Done(format!("'{name}' already exists")));
        }
        let at = |e: SqlError| {
            if e.position.is_none() {
                SqlError {
                    position: Some(c.position),
                    ..e
                }
            } else {
                e
            }
        };
        let options = Options::new(c.options.iter().map(|(k, v)| (k.as_str(), v.clone())));
        let connector_name = options.get("connector").ok_or_else(|| {
            at(
                SqlError::new(format!("'{name}' has no 'connector' option")).with_hint(format!(
                    "WITH ('connector' = '...'); connectors: {}",
                    self.registry.names().join(", ")
                )),
            )
        })?;
        let connector = self
            .registry
            .get(connector_name)
            .map_err(|e| at(connector_error(e)))?;
        connector
            .validate(&options)
            .map_err(|e| at(connector_error(e)))?;

        // Physical columns, then every column with computed ones in place.
        let mut physical = Vec::new();
        let mut metadata = Vec::new();
        for column in &c.columns {
            match &column.kind {
                ColumnKind::Physical {
                    data_type,
                    not_null,
                } => physical.push(Field::new(
                    column.name.value.clone(),
                    arrow_type(data_type).map_err(|e| e.at(column.name.span.start))?,
                    !not_null,
                )),
                ColumnKind::Metadata { data_type, key, .. } => {
                    let key = key.clone().unwrap_or_else(|| column.name.value.clone());
                    let known = connector.metadata_keys();
                    if !known.contains(&key.as_str()) {
                        let hint = if known.is_empty() {
                            format!("the '{}' connector has no metadata", connector.name())
                        } else {
                            format!("metadata of '{}': {}", connector.name(), known.join(", "))
                        };
                        return Err(SqlError::new(format!(
                            "METADATA column '{}': no metadata key '{key}'",
                            column.name
                        ))
                        .at(column.name.span.start)
                        .with_hint(hint));
                    }
                    metadata.push(MetadataColumn {
                        index: physical.len(),
                        key,
                    });
                    physical.push(Field::new(
                        column.name.value.clone(),
                        arrow_type(data_type).map_err(|e| e.at(column.name.span.start))?,
                        true,
                    ));
                }
                ColumnKind::Computed(_) => {}
            }
        }
        let physical_schema: SchemaRef = if c.columns.is_empty() {
            connector.default_schema(&options).ok_or_else(|| {
                at(SqlError::new(format!("'{name}' declares no columns"))
                    .with_hint("list its columns: CREATE STREAM s (a BIGINT, ...)"))
            })?
        } else {
            Arc::new(Schema::new(physical))
        };
        connector
            .check_schema(&physical_schema)
            .map_err(|e| at(connector_error(e)))?;
        let physical_df = DFSchema::try_from_qualified_schema(name.as_str(), &physical_schema)
            .map_err(df_error)?;
        let context = Context::new(&self.catalog, &self.state, &[]);
        let mut fields = Vec::new();
        let mut computed = Vec::new();
        let mut proctime = Vec::new();
        if c.columns.is_empty() {
            fields.extend(physical_schema.fields().iter().map(|f| f.as_ref().clone()));
            computed.extend(physical_schema.fields().iter().map(|_| None));
        }
        for column in &c.columns {
            match &column.kind {
                ColumnKind::Computed(expr) => {
                    let planned = context.plan_expr(expr, &physical_df).map_err(df_error)?;
                    let planned = self.coerce(planned, &physical_df)?;
                    let data_type = planned
                        .to_field(&physical_df)
                        .map_err(df_error)?
                        .1
                        .data_type()
                        .clone();
                    if matches!(&planned, Expr::ScalarFunction(f) if f.name() == functions::PROCTIME)
                    {
                        proctime.push(column.name.value.clone());
                    }
                    fields.push(Field::new(column.name.value.clone(), data_type, true));
                    computed.push(Some(planned));
                }
                ColumnKind::Physical { .. } => {
                    let field = physical_schema
                        .field_with_name(&column.name.value)
                        .map_err(|e| SqlError::new(e.to_string()))?;
                    fields.push(field.clone());
                    computed.push(None);
                }
                ColumnKind::Metadata { .. } => {
                    let field = physical_schema
                        .field_with_name(&column.name.value)
                        .map_err(|e| SqlError::new(e.to_string()))?;
                    fields.push(field.clone());
                    computed.push(None);
                }
            }
        }
        let schema = Arc::new(Schema::new(fields));
        let full_df =
            DFSchema::try_from_qualified_schema(name.as_str(), &schema).map_err(df_error)?;
        let default_watermark = match (&c.watermark, c.columns.is_empty()) {
            (None, true) => connector
                .default_watermark(&options)
                .map(|(column, delay)| {
                    let expr = format!("`{column}` - INTERVAL '{delay}' MILLISECOND");
                    let parsed = weir_sql::sqlparser::parser::Parser::new(
                        &weir_sql::FlinkDialect::default(),
                    )
                    .try_with_sql(&expr)
                    .and_then(|mut p| p.parse_expr());
                    (column, parsed)
                }),
            _ => None,
        };
        let default_watermark = match default_watermark {
            Some((column, Ok(expr))) => Some(weir_sql::WatermarkDef {
                column: ast::Ident::with_quote('`', column),
                expr,
            }),
            Some((_, Err(e))) => return Err(SqlError::from(e)),
            None => None,
        };
        let watermark = match c.watermark.as_ref().or(default_watermark.as_ref()) {
            None => None,
            Some(w) => {
                let field = schema.field_with_name(&w.column.value).map_err(|_| {
                    SqlError::new(format!("WATERMARK FOR {}: no such column", w.column))
                        .at(w.column.span.start)
                })?;
                if !matches!(
                    field.data_type(),
                    datafusion::arrow::datatypes::DataType::Timestamp(..)
                ) {
                    return Err(SqlError::new(format!(
                        "WATERMARK FOR {}: the column is {}, but must be a TIMESTAMP",
                        w.column,
                        flink_type_name(field.data_type())
                    ))
                    .at(w.column.span.start));
                }
                let expr = context.plan_expr(&w.expr, &full_df).map_err(df_error)?;
                let expr = self.coerce(expr, &full_df)?;
                let data_type = expr
                    .to_field(&full_df)
                    .map_err(df_error)?
                    .1
                    .data_type()
                    .clone();
                if !matches!(
                    data_type,
                    datafusion::arrow::datatypes::DataType::Timestamp(..)
                ) {
                    return Err(SqlError::new(format!(
                        "the WATERMARK expression must be a TIMESTAMP, it is {data_type}"
                    )));
                }
                Some(WatermarkDef {
                    column: w.column.value.clone(),
                    expr,
                    text: w.expr.to_string(),
                })
            }
        };
        let def = StreamDef {
            name: name.clone(),
            create: c.clone(),
            physical_schema,
            schema,
            computed,
            watermark,
            options,
            connector,
            proctime_columns: proctime,
            metadata,
        };
        self.catalog.views.remove(&name);
        self.catalog.streams.insert(name.clone(), Arc::new(def));
        Ok(Planned::Done(format!("created stream {name}")))
    }

    fn coerce(&self, expr: Expr, schema: &DFSchema) -> Result<Expr> {
        use datafusion::optimizer::simplify_expressions::ExprSimplifier;
        let context = datafusion::logical_expr::simplify::SimplifyContext::builder()
            .with_schema(Arc::new(schema.clone()))
            .with_config_options(self.state.config_options().clone())
            .build();
        ExprSimplifier::new(context)
            .coerce(expr, schema)
            .map_err(df_error)
    }

    fn create_view(&mut self, v: &CreateView) -> Result<Planned> {
        let name = catalog_name(&v.name);
        if !self.check_new_name(&name, v.or_replace, v.if_not_exists)? {
            return Ok(Planned::Done(format!("'{name}' already exists")));
        }
        let context = Context::new(&self.catalog, &self.state, &v.query.windows);
        let plan = context.plan_query(&v.query.query).map_err(df_error)?;
        let schema = Arc::new(plan.schema().as_arrow().clone());
        self.catalog.streams.remove(&name);
        self.catalog.views.insert(
            name.clone(),
            Arc::new(ViewDef {
                name: name.clone(),
                query: v.query.clone(),
                schema,
            }),
        );
        Ok(Planned::Done(format!("created view {name}")))
    }

    /// DataFusion's analyzer, then the optimizer rules that are safe on
    /// streams: expression simplification and projection pruning. Rules
    /// that move filters across aggregates or rewrite DISTINCT aggregates
    /// into nested ones would change what a window sees.
    fn optimize(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        let config = self.state.config_options();
        let analyzed = self
            .state
            .analyzer()
            .execute_and_check(plan, config, |_, _| {})
            .map_err(df_error)?;
        let optimizer = Optimizer::with_rules(vec![
            Arc::new(SimplifyExpressions::new()),
            Arc::new(OptimizeProjections::new()),
        ]);
        let context = OptimizerContext::new().with_max_passes(2);
        optimizer
            .optimize(analyzed, &context, |_, _| {})
            .map_err(df_error)
    }

    fn logical_plan(&self, query: &Query) -> Result<LogicalPlan> {
        let context = Context::new(&self.catalog, &self.state, &query.windows);
        let plan = context
            .plan_query(&query.query)
            .map_err(|e| self.locate(df_error(e), &query.query))?;
        self.optimize(plan)
    }

    /// Gives an unknown-table error the position of the name in the query.
    fn locate(&self, mut error: SqlError, query: &ast::Query) -> SqlError {
        if error.hint.is_none() {
            error.hint = self.column_hint(&error.message, query);
        }
        if error.position.is_some() {
            return error;
        }
        if let Some(name) = error.message.split('\'').nth(1).map(str::to_string) {
            let _ = ast::visit_relations(query, |relation| {
                if catalog_name(relation) == name {
                    if let Some(ident) = relation.0.last().and_then(|p| p.as_ident()) {
                        error.position = Some(ident.span.start.into());
                    }
                    return std::ops::ControlFlow::Break(());
                }
                std::ops::ControlFlow::Continue(())
            });
        }
        error
    }

    /// "No field named x": the nearest column of the relations the query reads.
    fn column_hint(&self, message: &str, query: &ast::Query) -> Option<String> {
        let name = message.strip_prefix("No field named ")?;
        let name = name
            .split(['.', ' '])
            .next()?
            .trim_matches(|c| c == '"' || c == '`' || c == '\'');
        let mut columns: Vec<String> = Vec::new();
        let _ = ast::visit_relations(query, |relation| {
            let table = catalog_name(relation);
            let schema = match (self.catalog.stream(&table), self.catalog.view(&table)) {
                (Some(s), _) => Some(s.schema.clone()),
                (_, Some(v)) => Some(v.schema.clone()),
                _ => None,
            };
            if let Some(schema) = schema {
                columns.extend(schema.fields().iter().map(|f| f.name().clone()));
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        catalog::nearest(name, columns.iter().map(String::as_str))
            .map(|c| format!("did you mean `{c}`?"))
    }

    /// Plans a transient query.
    pub fn plan_query(&self, query: &Query) -> Result<QueryPlan> {
        let plan = self.logical_plan(query)?;
        let mut lowering = Lowering::new(&self.state, &self.settings);
        let output = lowering.lower(&plan)?;
        Ok(QueryPlan {
            schema: Arc::new(plan.schema().as_arrow().clone()),
            bounded: output.bounded,
            lowering_graph: lowering.graph,
            output,
            text: query.text.clone(),
        })
    }

    /// Plans `INSERT INTO sink SELECT ...`.
    pub fn plan_insert(&self, insert: &Insert, text: &str) -> Result<JobPlan> {
        let sink_name = catalog_name(&insert.sink);
        let Some(sink) = self.catalog.stream(&sink_name) else {
            let hint =
                catalog::nearest(&sink_name, self.catalog.streams().map(|s| s.name.as_str()))
                    .map(|n| format!("did you mean '{n}'?"))
                    .unwrap_or_else(|| {
                        "create it first: CREATE TABLE sink (...) WITH ('connector' = ...)".into()
                    });
            let position = insert
                .sink
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.span.start);
            let e = SqlError::new(format!("unknown sink '{sink_name}'")).with_hint(hint);
            return Err(match position {
                Some(p) => e.at(p),
                None => e,
            });
        };
        if sink.computed.iter().any(Option::is_some) {
            return Err(SqlError::new(format!(
                "cannot INSERT INTO '{sink_name}': it has computed columns"
            )));
        }
        // Let DataFusion plan the INSERT: it checks the columns and casts
        // the query's types to the sink's.
        let statement = ast::Statement::Insert(ast::Insert {
            insert_token: ast::helpers::attached_token::AttachedToken::empty(),
            optimizer_hints: vec![],
            or: None,
            ignore: false,
            into: true,
            table: ast::TableObject::TableName(insert.sink.clone()),
            table_alias: None,
            columns: insert
                .columns
                .iter()
                .map(|c| ast::ObjectName::from(vec![c.clone()]))
                .collect(),
            overwrite: false,
            source: Some(insert.query.query.clone()),
            assignments: vec![],
            partitioned: None,
            after_columns: vec![],
            has_table_keyword: false,
            on: None,
            returning: None,
            output: None,
            replace_into: false,
            priority: None,
            insert_alias: None,
            settings: None,
            format_clause: None,
            multi_table_insert_type: None,
            multi_table_into_clauses: vec![],
            multi_table_when_clauses: vec![],
            multi_table_else_clause: None,
        });
        let context = Context::new(&self.catalog, &self.state, &insert.query.windows);
        let plan = context
            .plan_statement(statement)
            .map_err(|e| self.locate(df_error(e), &insert.query.query))?;
        let LogicalPlan::Dml(dml) = plan else {
            return Err(SqlError::new("INSERT did not plan to a write"));
        };
        let input = self.optimize(dml.input.as_ref().clone())?;
        let mut lowering = Lowering::new(&self.state, &self.settings);
        let output = lowering.lower(&input)?;
        if output.updating && !sink.connector.accepts_updates() {
            return Err(SqlError::new(format!(
                "'{}' ({}) only appends rows, but a GROUP BY without a window updates its results",
                sink.name,
                sink.connector.name()
            ))
            .with_hint(
                "write the upserts to Kafka keyed by the group keys, or print them; or group by a window to append final results",
            ));
        }
        let spec = TableSpec {
            name: sink.name.clone(),
            schema: sink.physical_schema.clone(),
            options: sink.options.clone(),
            partitioned_by: sink
                .create
                .partitioned_by
                .iter()
                .map(|i| i.value.clone())
                .collect(),
            bad_data: BadDataPolicy::Drop,
            metadata: sink.metadata.clone(),
            checkpointing: self.settings.checkpoint_interval()?.is_some(),
        };
        let factory = sink.connector.sink(&spec).map_err(connector_error)?;
        let parallelism = sink
            .options
            .parse::<usize>("sink.parallelism")
            .map_err(connector_error)?;
        lowering.add_sink(
            &output,
            &format!("sink: {}", sink.name),
            format!("connector={}", sink.connector.name()),
            factory,
            parallelism,
        );
        let expected_rows = lowering.expected_rows();
        let checkpoint = self
            .settings
            .checkpoint_interval()?
            .map(|interval| CheckpointPlan {
                interval,
                timeout: self.settings.checkpoint_timeout(),
                dir: self.settings.checkpoint_dir().to_string(),
                retained: self.settings.checkpoints_retained(),
                restore_from: self.settings.restore_path().map(str::to_string),
            });
        Ok(JobPlan {
            expected_rows,
            checkpoint,
            graph: lowering.graph,
            sink: sink.name.clone(),
            bounded: output.bounded,
            name: self
                .settings
                .job_name()
                .map(str::to_string)
                .unwrap_or_else(|| format!("insert-into-{}", sink.name)),
            text: text.to_string(),
        })
    }

    fn explain(&mut self, statement: &Statement, text: &str) -> Result<String> {
        let (graph, bounded) = match statement {
            Statement::Query(q) => {
                let plan = self.plan_query(q)?;
                let bounded = plan.bounded;
                let sink: SinkFactory =
                    Arc::new(|_| Err(weir_engine::EngineError::Graph("explain only".into())));
                (plan.with_sink(sink), bounded)
            }
            Statement::Insert(i) => {
                let plan = self.plan_insert(i, text)?;
                (plan.graph, plan.bounded)
            }
            _ => return Err(SqlError::new("EXPLAIN works on SELECT and INSERT INTO")),
        };
        Ok(format!(
            "{} job, {} operators:\n{}",
            if bounded { "bounded" } else { "unbounded" },
            graph.nodes.len(),
            graph
        ))
    }

    fn settings_table(&self) -> RecordBatch {
        let (keys, values): (Vec<String>, Vec<String>) = self
            .settings
            .iter()
            .map(|(k, v)| {
                let v = if weir_sql::is_secret_key(k) {
                    weir_sql::MASK
                } else {
                    v
                };
                (k.to_string(), v.to_string())
            })
            .unzip();
        string_table(&["key", "value"], vec![keys, values])
    }

    fn show(&self, what: ShowObject) -> RecordBatch {
        match what {
            ShowObject::Streams | ShowObject::Tables => {
                // The system streams are documented, not listed with the user's.
                let streams: Vec<&Arc<StreamDef>> = self
                    .catalog
                    .streams()
                    .filter(|s| !s.name.starts_with(weir_sql::SYSTEM_SCHEMA))
                    .collect();
                string_table(
                    &["name", "connector", "watermark"],
                    vec![
                        streams.iter().map(|s| s.name.clone()).collect(),
                        streams
                            .iter()
                            .map(|s| s.connector.name().to_string())
                            .collect(),
                        streams
                            .iter()
                            .map(|s| {
                                s.watermark
                                    .as_ref()
                                    .map(|w| format!("{} AS {}", w.column, w.text))
                                    .unwrap_or_default()
                            })
                            .collect(),
                    ],
                )
            }
            ShowObject::Views => {
                let views: Vec<&Arc<ViewDef>> = self.catalog.views().collect();
                string_table(
                    &["name", "query"],
                    vec![
                        views.iter().map(|v| v.name.clone()).collect(),
                        views
                            .iter()
                            .map(|v| weir_sql::mask_secrets(&v.query.text))
                            .collect(),
                    ],
                )
            }
            ShowObject::Functions => string_table(&["function"], vec![self.function_names()]),
            ShowObject::Jobs => string_table(&["id"], vec![vec![]]),
        }
    }

    /// `SHOW CREATE TABLE|VIEW name`: the statement that declares it.
    fn show_create(&self, kind: ShowCreateKind, name: &str) -> Result<String> {
        match (kind, self.catalog.stream(name), self.catalog.view(name)) {
            (ShowCreateKind::Stream, Some(s), _) => Ok(show_create::create_stream(s)),
            (ShowCreateKind::View, _, Some(v)) => Ok(show_create::create_view(v)),
            (ShowCreateKind::Stream, None, Some(_)) => {
                Err(SqlError::new(format!("'{name}' is a view"))
                    .with_hint(format!("SHOW CREATE VIEW {name}")))
            }
            (ShowCreateKind::View, Some(_), None) => {
                Err(SqlError::new(format!("'{name}' is a stream"))
                    .with_hint(format!("SHOW CREATE TABLE {name}")))
            }
            _ => Err(self.unknown_name(name)),
        }
    }

    fn unknown_name(&self, name: &str) -> SqlError {
        let hint = catalog::nearest(name, self.catalog.names().iter().map(String::as_str))
            .map(|n| format!("did you mean '{n}'?"))
            .unwrap_or_else(|| "SHOW STREAMS lists them".into());
        SqlError::new(format!("unknown stream or view '{name}'")).with_hint(hint)
    }

    /// `DESCRIBE name`: columns, types, and how each is made.
    pub fn describe(&self, name: &str) -> Result<RecordBatch> {
        if let Some(s) = self.catalog.stream(name) {
            let mut names = Vec::new();
            let mut types = Vec::new();
            let mut extras = Vec::new();
            for (i, field) in s.schema.fields().iter().enumerate() {
                names.push(field.name().clone());
                types.push(flink_type_name(field.data_type()));
                let mut extra = match &s.computed[i] {
                    Some(_) => {
                        let text = s
                            .create
                            .columns
                            .iter()
                            .find(|c| c.name.value == *field.name())
                            .and_then(|c| match &c.kind {
                                ColumnKind::Computed(e) => Some(e.to_string()),
                                _ => None,
                            })
                            .unwrap_or_default();
                        format!("AS {text}")
                    }
                    None => String::new(),
                };
                if let Some(w) = s.watermark.as_ref().filter(|w| w.column == *field.name()) {
                    if !extra.is_empty() {
                        extra.push_str("; ");
                    }
                    extra.push_str(&format!("WATERMARK AS {}", w.text));
                }
                extras.push(extra);
            }
            return Ok(string_table(
                &["column", "type", "extras"],
                vec![names, types, extras],
            ));
        }
        if let Some(v) = self.catalog.view(name) {
            let names = v.schema.fields().iter().map(|f| f.name().clone()).collect();
            let types = v
                .schema
                .fields()
                .iter()
                .map(|f| flink_type_name(f.data_type()))
                .collect();
            return Ok(string_table(&["column", "type"], vec![names, types]));
        }
        Err(self.unknown_name(name))
    }
}

/// A table of text columns.
pub fn string_table(names: &[&str], columns: Vec<Vec<String>>) -> RecordBatch {
    let fields: Vec<Field> = names
        .iter()
        .map(|n| Field::new(*n, datafusion::arrow::datatypes::DataType::Utf8, false))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .unwrap_or_else(|_| RecordBatch::new_empty(Arc::new(Schema::empty())))
}
