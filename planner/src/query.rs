//! Queries and `INSERT INTO` jobs: SQL → DataFusion's logical plan →
//! the streaming plan ([`crate::rewrite`]) → the operator graph
//! ([`crate::lower`]).

use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery;
use datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate;
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::push_down_filter::PushDownFilter;
use datafusion::optimizer::replace_distinct_aggregate::ReplaceDistinctWithAggregate;
use datafusion::optimizer::simplify_expressions::SimplifyExpressions;
use datafusion::optimizer::{Optimizer, OptimizerContext};
use weir_connectors::{BadDataPolicy, SinkChanges, TableSpec};
use weir_sql::sqlparser::ast;
use weir_sql::{catalog_name, Insert, Query, SqlError};

use crate::catalog::{self, StreamDef, UnknownName};
use crate::context::Context;
use crate::error::{df_error, Result};
use crate::hints::StateTtlHints;
use crate::lower::{Lowered, Lowering};

use crate::nodes::{Changelog, Needs};
use crate::rewrite::{Rewriter, Streaming};
use crate::{CheckpointPlan, JobPlan, Planner, QueryPlan};

/// DataFusion's analyzer, then the optimizer rules that are safe on
/// streams. Rules that rewrite DISTINCT aggregates into nested ones, or
/// reorder joins, would change what a window or a join sees; a filter moved
/// below an aggregate only tests group keys (or window columns) row by row,
/// which keeps the same groups.
pub(crate) fn optimize(state: &SessionState, plan: LogicalPlan) -> Result<LogicalPlan> {
    let config = state.config_options();
    crate::lookup::check_temporal_joins(&plan)?;
    let plan = crate::flink_avg::flink_avg(plan)?;
    let analyzed = state
        .analyzer()
        .execute_and_check(plan, config, |_, _| {})?;
    // `IN`/`EXISTS` subqueries become semi and anti joins, equalities
    // of a join's condition its keys, and filters move below joins so
    // each side keeps only the rows that can match.
    let mut rules: Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> = vec![
        Arc::new(SimplifyExpressions::new()),
        // SELECT DISTINCT and UNION are a GROUP BY of every column.
        Arc::new(ReplaceDistinctWithAggregate::new()),
        Arc::new(DecorrelatePredicateSubquery::new()),
        Arc::new(ExtractEquijoinPredicate::new()),
        Arc::new(PushDownFilter::new()),
    ];
    // An event-time temporal join reads both sides' time columns, which
    // the query need not name: they must not be pruned.
    if !crate::lookup::has_event_time_join(&analyzed) {
        rules.push(Arc::new(OptimizeProjections::new()));
    }
    let optimizer = Optimizer::with_rules(rules);
    let context = OptimizerContext::new().with_max_passes(2);
    Ok(optimizer.optimize(analyzed, &context, |_, _| {})?)
}

impl Planner {
    fn optimize(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        optimize(&self.state, plan)
    }

    /// The streaming plan of an optimized plan of `query`, for a consumer
    /// that needs this of its updates.
    pub(crate) fn streaming(
        &self,
        plan: &LogicalPlan,
        query: &ast::Query,
        needs: Needs,
    ) -> Result<Streaming> {
        let hints = StateTtlHints::of(query)?;
        let streaming = Rewriter {
            state: &self.state,
            settings: &self.settings,
            hints: &hints,
        }
        .rewrite(plan, needs)?;
        hints.check_used()?;
        Ok(streaming)
    }

    /// The streaming plan of a query.
    pub(crate) fn query_plan(&self, query: &Query) -> Result<Streaming> {
        let context = Context::new(&self.catalog, &self.state, &query.windows);
        let plan = context
            .plan_query(&query.query)
            .map_err(|e| self.locate(e, &query.query))?;
        self.streaming(&self.optimize(plan)?, &query.query, Needs::Retractions)
    }

    /// A DataFusion error pointing into `query`: an unknown stream at its
    /// name, a missing column with the nearest column of what it reads.
    fn locate(&self, e: DataFusionError, query: &ast::Query) -> SqlError {
        let mut error = df_error(&e);
        if error.hint.is_none() {
            error.hint = missing_field(&e).and_then(|field| self.column_hint(field, query));
        }
        let unknown = match e.find_root() {
            DataFusionError::External(inner) => inner.downcast_ref::<UnknownName>(),
            _ => None,
        };
        if let (None, Some(unknown)) = (error.position, unknown) {
            let _ = ast::visit_relations(query, |relation| {
                if catalog_name(relation) == unknown.name {
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

    /// The column nearest `name` of the relations `query` reads.
    fn column_hint(&self, name: &str, query: &ast::Query) -> Option<String> {
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
        let streaming = self.query_plan(query)?;
        let mut lowering = Lowering::new(&self.state, &self.settings);
        let output = lowering.lower_one(&streaming.plan)?;
        Ok(QueryPlan {
            schema: Arc::new(streaming.plan.schema().as_arrow().clone()),
            bounded: output.bounded,
            updating: output.updating,
            streaming_plan: streaming.plan,
            lowering_graph: lowering.graph,
            output,
            text: query.text.clone(),
        })
    }

    /// The streaming plan of `INSERT INTO sink SELECT ...`, and the sink.
    pub(crate) fn insert_plan(&self, insert: &Insert) -> Result<(Streaming, Arc<StreamDef>)> {
        let sink = self.sink(insert)?;
        // Let DataFusion plan the INSERT: it checks the columns and casts
        // the query's types to the sink's.
        let context = Context::new(&self.catalog, &self.state, &insert.query.windows);
        let plan = context
            .plan_statement(insert_statement(insert))
            .map_err(|e| self.locate(e, &insert.query.query))?;
        let LogicalPlan::Dml(dml) = plan else {
            return Err(SqlError::new("INSERT did not plan to a write").into());
        };
        let plan = self.optimize(dml.input.as_ref().clone())?;
        let changes = sink.connector.sink_changes(&sink.options);
        let needs = match changes {
            SinkChanges::Upsert => Needs::Upserts,
            SinkChanges::AppendOnly | SinkChanges::All => Needs::Retractions,
        };
        let mut streaming = self.streaming(&plan, &insert.query.query, needs)?;
        let changelog = streaming.props.changelog.clone();
        match changes {
            SinkChanges::AppendOnly if streaming.props.is_updating() => {
                return Err(SqlError::new(format!(
                    "'{}' ({}) only appends rows, but this query's result is updated ({changelog})",
                    sink.name,
                    sink.connector.name()
                ))
                .with_hint(
                    "write the changes to a sink that takes them: 'upsert-kafka' with a PRIMARY KEY, 'print', or the 'debezium-json' format; or aggregate by a window to append final rows",
                )
                .into());
            }
            SinkChanges::Upsert => {
                let key = sink.primary_key();
                let keys = changelog.keys().to_vec();
                if matches!(changelog, Changelog::Upsert { .. }) && !same_columns(&keys, &key) {
                    // Upserts by another key would leave rows behind:
                    // retractions delete the sink's old row by its key.
                    streaming = self.streaming(&plan, &insert.query.query, Needs::Retractions)?;
                }
                let keys = streaming.props.changelog.keys();
                if !keys.iter().all(|k| key.contains(k)) {
                    return Err(SqlError::new(format!(
                        "the rows of this query are identified by [{}], which the PRIMARY KEY of '{}' ({}) does not contain",
                        keys.join(", "),
                        sink.name,
                        key.join(", ")
                    ))
                    .with_hint("declare the sink's PRIMARY KEY as the query's GROUP BY keys")
                    .into());
                }
            }
            _ => {}
        }
        Ok((streaming, sink))
    }

    /// The stream an INSERT writes to.
    fn sink(&self, insert: &Insert) -> Result<Arc<StreamDef>> {
        let sink_name = catalog_name(&insert.sink);
        let Some(sink) = self.catalog.stream(&sink_name) else {
            let hint =
                catalog::nearest(&sink_name, self.catalog.streams().map(|s| s.name.as_str()))
                    .map(|n| format!("did you mean '{n}'?"))
                    .unwrap_or_else(|| {
                        "create it first: CREATE TABLE sink (...) WITH ('connector' = ...)".into()
                    });
            let e = SqlError::new(format!("unknown sink '{sink_name}'")).with_hint(hint);
            return Err(match insert.sink.0.last().and_then(|p| p.as_ident()) {
                Some(ident) => e.at(ident.span.start),
                None => e,
            }
            .into());
        };
        if sink.computed.iter().any(Option::is_some) {
            return Err(SqlError::new(format!(
                "cannot INSERT INTO '{sink_name}': it has computed columns"
            ))
            .into());
        }
        Ok(sink.clone())
    }

    /// Plans `INSERT INTO sink SELECT ...`.
    pub fn plan_insert(&self, insert: &Insert, text: &str) -> Result<JobPlan> {
        self.plan_job(std::slice::from_ref(insert), text)
    }

    /// Plans the `INSERT INTO`s of one job (a statement set): one graph
    /// with a sink each, where a stream several of them read is read once.
    pub fn plan_job(&self, inserts: &[Insert], text: &str) -> Result<JobPlan> {
        let planned = inserts
            .iter()
            .map(|insert| self.insert_plan(insert))
            .collect::<Result<Vec<_>>>()?;
        let mut lowering = Lowering::new(&self.state, &self.settings);
        let plans: Vec<&LogicalPlan> = planned.iter().map(|(s, _)| &s.plan).collect();
        let outputs = lowering.lower_job(&plans)?;
        for (output, (_, sink)) in outputs.iter().zip(&planned) {
            self.add_sink(&mut lowering, output, sink)?;
        }
        let expected_rows = lowering.expected_rows();
        let checkpoint = self
            .settings
            .checkpoint_interval()
            .map(|interval| CheckpointPlan {
                interval,
                timeout: self.settings.checkpoint_timeout(),
                dir: self.settings.checkpoint_dir().to_string(),
                retained: self.settings.checkpoints_retained(),
                restore_from: self.settings.restore_path().map(str::to_string),
            });
        let sinks: Vec<String> = planned.iter().map(|(_, s)| s.name.clone()).collect();
        Ok(JobPlan {
            expected_rows,
            checkpoint,
            graph: lowering.graph,
            bounded: outputs.iter().all(|o| o.bounded),
            name: self
                .settings
                .job_name()
                .map(str::to_string)
                .unwrap_or_else(|| format!("insert-into-{}", sinks.join("-"))),
            streaming_plans: planned.into_iter().map(|(s, _)| s.plan).collect(),
            sinks,
            text: text.to_string(),
        })
    }

    /// The sink operator of `sink` after `output`.
    fn add_sink(
        &self,
        lowering: &mut Lowering<'_>,
        output: &Lowered,
        sink: &StreamDef,
    ) -> Result<()> {
        // Best-effort is the runtime's: the connector writes at least once
        // (never waiting for checkpoints) behind a queue that drops.
        let best_effort = sink
            .options
            .get("sink.delivery")
            .is_some_and(|d| d.eq_ignore_ascii_case("best-effort"));
        let options = match best_effort {
            true => sink.options.without("sink.delivery"),
            false => sink.options.clone(),
        };
        // The circuit breaker ('sink.spill.*') is the runtime's.
        let spill = weir_connectors::spill::spill_spec(
            &sink.name,
            sink.physical_schema.clone(),
            &sink.options,
        )?;
        if spill.is_some() && self.settings.checkpoint_interval().is_none() {
            return Err(weir_connectors::ConnectorError::option(
                "sink.spill.path",
                "spilled rows commit with checkpoints: SET 'execution.checkpointing.interval' = '10s'",
            )
            .into());
        }
        let spec = TableSpec {
            name: sink.name.clone(),
            schema: sink.physical_schema.clone(),
            options,
            partitioned_by: sink
                .create
                .partitioned_by
                .iter()
                .map(|i| i.value.clone())
                .collect(),
            bad_data: BadDataPolicy::Drop,
            metadata: sink.metadata.clone(),
            checkpointing: self.settings.checkpoint_interval().is_some() && !best_effort,
            primary_key: sink.primary_key(),
            read_fields: Default::default(),
        };
        let mut node = weir_engine::SinkNode::new(sink.connector.sink(&spec)?);
        node.best_effort = best_effort;
        node.spill = spill;
        node.latency_target = sink
            .options
            .duration("latency.target")?
            .or(self.settings.latency_target());
        let parallelism = sink.options.parse::<usize>("sink.parallelism")?;
        lowering.add_sink(
            output,
            &format!("sink: {}", sink.name),
            format!("connector={}", sink.connector.name()),
            node,
            parallelism,
        );
        Ok(())
    }
}

/// The field a "No field named ..." error names.
fn missing_field(e: &DataFusionError) -> Option<&str> {
    match e.find_root() {
        DataFusionError::SchemaError(error, _) => match error.as_ref() {
            datafusion::common::SchemaError::FieldNotFound { field, .. } => Some(field.name()),
            _ => None,
        },
        _ => None,
    }
}

/// `INSERT INTO sink SELECT ...` as sqlparser's statement, for DataFusion.
fn insert_statement(insert: &Insert) -> ast::Statement {
    ast::Statement::Insert(ast::Insert {
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
    })
}

/// Whether two lists name the same columns, in any order.
fn same_columns(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|c| b.contains(c))
}
