//! Flink's processing-time temporal join (a *lookup join*): `JOIN dim FOR
//! SYSTEM_TIME AS OF probe.proc_time AS d ON probe.k = d.key`, where
//! `proc_time` is a `PROCTIME()` attribute and `dim` a bounded table
//! (files on a local path or an object store). Each probe row is joined
//! with `dim` as it is when the row comes; `dim` is read whole by each
//! subtask and read again after `'lookup.join.cache.ttl'` (Flink's
//! filesystem key; one hour by default).
//!
//! Joined `AS OF` the probe's event-time attribute, it is Flink's
//! event-time temporal join against a *versioned table*: a stream with a
//! `PRIMARY KEY` and a `WATERMARK` (an `upsert-kafka` stream of rates, or
//! an append-only one), each probe row joined, once the watermark passes
//! it, with the version of its key current at its time
//! ([`weir_engine::operators::TemporalJoin`]).

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::{provider_as_source, MemTable};
use datafusion::execution::SessionState;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Join as JoinPlan, JoinType, LogicalPlan, TableScanBuilder};
use weir_engine::operators::{Loading, LookupTable};
use weir_engine::{EngineError, SourcePoll, SubtaskInfo};
use weir_sql::SqlError;

use crate::catalog::{StreamDef, StreamTable};
use crate::context::is_proctime;
use crate::error::Result;
use crate::nodes::{extension, LookupJoin, StreamProps, TemporalJoin};
use crate::rewrite::{Rewriter, Streaming};

/// Flink's default `'lookup.join.cache.ttl'`.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// The table a side of a join scans `FOR SYSTEM_TIME AS OF`, and the
/// column it is joined as of.
fn versioned(plan: &LogicalPlan) -> Option<(Arc<StreamDef>, String)> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let table = scan.source.downcast_ref::<StreamTable>()?;
            Some((table.def.clone(), table.as_of.clone()?))
        }
        LogicalPlan::SubqueryAlias(_) | LogicalPlan::Projection(_) | LogicalPlan::Filter(_) => {
            versioned(plan.inputs()[0])
        }
        _ => None,
    }
}

/// Whether `column` of `plan` is its stream's event time (the `WATERMARK
/// FOR` column), through projections that pass it on.
fn is_rowtime(plan: &LogicalPlan, column: &str) -> bool {
    match plan {
        LogicalPlan::Projection(p) => {
            let Some(index) = p.schema.fields().iter().position(|f| f.name() == column) else {
                return false;
            };
            match p.expr[index].clone().unalias() {
                datafusion::logical_expr::Expr::Column(c) => is_rowtime(&p.input, &c.name),
                _ => false,
            }
        }
        LogicalPlan::Filter(f) => is_rowtime(&f.input, column),
        LogicalPlan::SubqueryAlias(s) => is_rowtime(&s.input, column),
        LogicalPlan::TableScan(scan) => {
            scan.source.downcast_ref::<StreamTable>().is_some_and(|t| {
                t.as_of.is_none() && t.def.watermark.as_ref().is_some_and(|w| w.column == column)
            })
        }
        _ => false,
    }
}

/// Whether `plan` joins a table as of event time (its optimizer must then
/// keep the time columns the join reads but the query may not name).
pub(crate) fn has_event_time_join(plan: &LogicalPlan) -> bool {
    plan.exists(|node| {
        Ok(match node {
            LogicalPlan::Join(join) => {
                versioned(&join.right).is_some_and(|(_, as_of)| is_rowtime(&join.left, &as_of))
            }
            _ => false,
        })
    })
    .unwrap_or(false)
}

/// Checks every temporal join of `plan` (before the optimizer prunes the
/// time attribute it is joined as of): the other side's column must be a
/// processing-time attribute, the table bounded and without computed
/// columns.
pub(crate) fn check_temporal_joins(plan: &LogicalPlan) -> Result<()> {
    let mut error = None;
    let _ = plan.apply(|node| {
        if let LogicalPlan::Join(join) = node {
            for (side, other) in [(&join.right, &join.left), (&join.left, &join.right)] {
                let Some((table, as_of)) = versioned(side) else {
                    continue;
                };
                if let Err(e) = check(join, side == &join.left, &table, &as_of, other) {
                    error = Some(e);
                }
            }
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    match error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn check(
    join: &JoinPlan,
    table_on_left: bool,
    table: &StreamDef,
    as_of: &str,
    probe: &LogicalPlan,
) -> std::result::Result<(), SqlError> {
    if table_on_left || !matches!(join.join_type, JoinType::Inner | JoinType::Left) {
        return Err(SqlError::new(format!(
            "a temporal join is INNER or LEFT, with the table on the right; not {}",
            join.join_type
        )));
    }
    if is_rowtime(probe, as_of) {
        if table.watermark.is_none() || table.primary_key().is_empty() {
            return Err(SqlError::new(format!(
                "'{}' is joined as of event time, so it must be a versioned table: a PRIMARY KEY and a WATERMARK",
                table.name
            ))
            .with_hint("CREATE TABLE rates (currency STRING, rate DECIMAL(10, 4), ts TIMESTAMP(3), WATERMARK FOR ts AS ts, PRIMARY KEY (currency) NOT ENFORCED) WITH (...)"));
        }
        return Ok(());
    }
    if !is_proctime(probe, as_of) {
        return Err(SqlError::new(format!(
            "'{}' is joined FOR SYSTEM_TIME AS OF `{as_of}`, which is neither a processing-time attribute nor the other side's event time (its WATERMARK column)",
            table.name
        ))
        .with_hint("join as of a PROCTIME() column (a lookup join: FROM (SELECT *, PROCTIME() AS p FROM s) o JOIN t FOR SYSTEM_TIME AS OF o.p AS d ON ...), or as of the stream's event time"));
    }
    if !table.connector.is_bounded(&table.options) {
        return Err(SqlError::new(format!(
            "'{}' is read whole for a lookup join, but its connector ({}) is unbounded",
            table.name,
            table.connector.name()
        ))
        .with_hint("look up a table of files ('connector' = 'filesystem')"));
    }
    if table.computed.iter().any(Option::is_some) {
        return Err(SqlError::new(format!(
            "'{}' has computed columns, which a lookup join does not compute",
            table.name
        )));
    }
    Ok(())
}

impl Rewriter<'_> {
    /// The lookup join `join` is, if one side is a table joined `FOR
    /// SYSTEM_TIME AS OF`.
    pub(crate) fn lookup_join(&self, join: &JoinPlan) -> Result<Option<Streaming>> {
        if versioned(&join.left).is_some() {
            return Err(SqlError::new(
                "the table joined FOR SYSTEM_TIME AS OF goes on the right of the join",
            )
            .with_hint("FROM orders o JOIN rates FOR SYSTEM_TIME AS OF o.p AS r ON ...")
            .into());
        }
        let (table_side, probe_side) = (&join.right, &join.left);
        let Some((table, as_of)) = versioned(table_side) else {
            return Ok(None);
        };
        // The probe side is rewritten once, for either kind of join.
        let probe = self.rewrite(probe_side, crate::nodes::Needs::Retractions)?;
        let probe_time = probe_side
            .schema()
            .fields()
            .iter()
            .position(|f| *f.name() == as_of);
        if probe_time.is_some() && crate::rewrite::rowtime_column(&probe.plan) == probe_time {
            return self.temporal_join(join, probe, &table).map(Some);
        }
        if join.on.is_empty() {
            return Err(
                SqlError::new("a lookup join needs an equality on the table's columns")
                    .with_hint("ON o.k = d.key")
                    .into(),
            );
        }
        let (probe_keys, table_keys) = join.on.iter().map(|(l, r)| (l.clone(), r.clone())).unzip();
        let left = join.join_type == JoinType::Left;
        if left && join.filter.is_some() {
            return Err(SqlError::new(
                "a LEFT lookup join's ON clause can only hold equalities here",
            )
            .with_hint("filter the table's rows in a view, or move the condition to WHERE")
            .into());
        }
        if probe.props.is_updating() {
            return Err(SqlError::new(
                "a lookup join of rows that are updated or retracted is not supported",
            )
            .into());
        }
        let ttl = table
            .options
            .duration("lookup.join.cache.ttl")
            .map_err(|e| SqlError::new(e.to_string()))?
            .unwrap_or(DEFAULT_TTL);
        let props = StreamProps::append(probe.props.parallelism, probe.props.bounded);
        let node = LookupJoin {
            probe_keys,
            table_keys,
            left,
            residual: join
                .filter
                .as_ref()
                .map(|f| split_conjunction(f).into_iter().cloned().collect()),
            table_plan: table_side.as_ref().clone(),
            table,
            ttl,
            schema: join.schema.clone(),
            props: props.clone(),
            inputs: vec![probe.plan],
        };
        Ok(Some(Streaming {
            plan: extension(node),
            props,
        }))
    }
}

impl Rewriter<'_> {
    /// The event-time temporal join of `join`, whose probe side is `probe`.
    fn temporal_join(
        &self,
        join: &JoinPlan,
        probe: Streaming,
        table: &StreamDef,
    ) -> Result<Streaming> {
        if probe.props.is_updating() {
            return Err(SqlError::new(
                "a temporal join of rows that are updated or retracted is not supported",
            )
            .into());
        }
        let versions = self.rewrite(&join.right, crate::nodes::Needs::Retractions)?;
        let Some(version_time) = crate::rewrite::rowtime_column(&versions.plan) else {
            return Err(SqlError::new(format!(
                "'{}' is joined as of event time, but its time attribute does not reach the join",
                table.name
            ))
            .into());
        };
        let Some(probe_time) = crate::rewrite::rowtime_column(&probe.plan) else {
            return Err(
                SqlError::new("the probe side's event time does not reach the join").into(),
            );
        };
        let left = join.join_type == JoinType::Left;
        if left && join.filter.is_some() {
            return Err(SqlError::new(
                "a LEFT temporal join's ON clause can only hold equalities here",
            )
            .into());
        }
        let columns = |plan: &LogicalPlan,
                       exprs: Vec<&datafusion::logical_expr::Expr>|
         -> Option<Vec<usize>> {
            exprs
                .into_iter()
                .map(|e| match e {
                    datafusion::logical_expr::Expr::Column(c) => {
                        plan.schema().index_of_column(c).ok()
                    }
                    _ => None,
                })
                .collect()
        };
        let (Some(probe_keys), Some(version_keys)) = (
            columns(&join.left, join.on.iter().map(|(l, _)| l).collect()),
            columns(&join.right, join.on.iter().map(|(_, r)| r).collect()),
        ) else {
            return Err(
                SqlError::new("a temporal join's keys must be columns of each side")
                    .with_hint("compute the key in a subquery first")
                    .into(),
            );
        };
        let names = |exprs: Vec<&datafusion::logical_expr::Expr>| -> Vec<String> {
            exprs.iter().map(|e| e.schema_name().to_string()).collect()
        };
        let bounded = probe.props.bounded;
        let probe = self.exchange(
            probe,
            Some(probe_keys),
            &names(join.on.iter().map(|(l, _)| l).collect()),
        );
        let versions = self.exchange(
            versions,
            Some(version_keys),
            &names(join.on.iter().map(|(_, r)| r).collect()),
        );
        let props = StreamProps {
            parallelism: probe.props.parallelism,
            bounded,
            changelog: crate::nodes::Changelog::AppendOnly,
        };
        let node = TemporalJoin {
            on: join.on.clone(),
            times: [probe_time, version_time],
            left,
            residual: join
                .filter
                .as_ref()
                .map(|f| split_conjunction(f).into_iter().cloned().collect()),
            table: table.name.clone(),
            schema: join.schema.clone(),
            props: props.clone(),
            inputs: vec![probe.plan, versions.plan],
        };
        Ok(Streaming {
            plan: extension(node),
            props,
        })
    }
}

/// Reads a lookup table: its source to the end, then the plan of its
/// side of the join (projections, filters) over those rows.
pub(crate) struct PlanLookupTable {
    pub table: Arc<StreamDef>,
    pub plan: LogicalPlan,
    pub state: SessionState,
}

impl PlanLookupTable {
    async fn read(&self) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>> {
        let def = &self.table;
        let columns: Vec<usize> = (0..def.physical_schema.fields().len()).collect();
        let spec = crate::nodes::stream_scan::source_spec(def, &columns)?;
        let factory = def.connector.source(&spec)?;
        let engine = |e: EngineError| SqlError::new(e.to_string());
        let mut source = factory(SubtaskInfo {
            index: 0,
            parallelism: 1,
        })
        .map_err(engine)?;
        let mut rows = Vec::new();
        loop {
            match source.poll().await.map_err(engine)? {
                SourcePoll::Batch { batch, .. } => rows.push(batch),
                SourcePoll::End => break,
                // A file source has nothing pending for long.
                SourcePoll::Pending => std::thread::yield_now(),
                SourcePoll::SplitsAdded(_)
                | SourcePoll::SplitEnded(_)
                | SourcePoll::Watermark(_)
                | SourcePoll::Barrier(_) => {}
            }
        }
        let memory = Arc::new(MemTable::try_new(def.physical_schema.clone(), vec![rows])?);
        let plan = self
            .plan
            .clone()
            .transform_up(|node| match node {
                LogicalPlan::TableScan(scan)
                    if scan.source.downcast_ref::<StreamTable>().is_some() =>
                {
                    let scan = TableScanBuilder::new(
                        scan.table_name.clone(),
                        provider_as_source(memory.clone()),
                    )
                    .with_projection(scan.projection.clone())
                    .with_filters(scan.filters.clone())
                    .with_fetch(scan.fetch)
                    .build()?;
                    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
                }
                other => Ok(Transformed::no(other)),
            })?
            .data;
        let physical = self.state.create_physical_plan(&plan).await?;
        Ok(datafusion::physical_plan::collect(physical, self.state.task_ctx()).await?)
    }
}

impl LookupTable for PlanLookupTable {
    fn load(&self) -> Loading<'_> {
        Box::pin(async move {
            self.read().await.map_err(|e| {
                EngineError::Task(format!("reading lookup table '{}': {e}", self.table.name))
            })
        })
    }
}
