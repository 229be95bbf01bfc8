//! From DataFusion's optimized `LogicalPlan` to Weir's streaming plan: scans
//! of streams and window table functions, and aggregates, become the
//! [`crate::nodes`] that say how they stream; every node's parallelism,
//! boundedness and changelog kind is decided here, and what cannot run on
//! a stream is refused with a reason and a hint. Lowering the result to
//! operators is then mechanical ([`crate::lower`]).

use std::sync::Arc;

use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    Aggregate, Expr, Join as JoinPlan, JoinType, Limit, LogicalPlan, TableScan,
};
use weir_connectors::SourceChanges;
use weir_engine::window::{fmt_ms, partial_schema, EmitStrategy, SliceWindows, TimeSource};
use weir_sql::{SqlError, WindowKind};

use crate::aggregate::AggregateParts;
use crate::catalog::{StreamTable, WindowTable};
use crate::error::Result;
use weir_engine::operators::{AggregateOptions, IntervalBounds};
use weir_engine::window::OutputColumn;

use crate::hints::StateTtlHints;
use crate::nodes::{
    extension, slice_windows, streaming, Changelog, ChangelogNormalize, Exchange, Join, JoinKind,
    Needs, Phase, RowsMode, SessionAggregate, StreamProps, StreamScan, Union, UpdatingAggregate,
    WindowAggregate, WindowRows,
};
use crate::rank::RankFilter;
use crate::settings::Settings;

/// A rewritten plan and what its output streams like.
pub(crate) struct Streaming {
    pub plan: LogicalPlan,
    pub props: StreamProps,
}

/// Rewrites plans against one session's settings and one query's hints.
pub(crate) struct Rewriter<'a> {
    pub state: &'a SessionState,
    pub settings: &'a Settings,
    pub hints: &'a StateTtlHints,
}

fn unsupported(what: &str, hint: &str) -> SqlError {
    SqlError::new(format!("{what} is not supported on a stream yet")).with_hint(hint)
}

impl Rewriter<'_> {
    /// The streaming plan of `plan`, for a consumer that `needs` this of
    /// its updates.
    pub fn rewrite(&self, plan: &LogicalPlan, needs: Needs) -> Result<Streaming> {
        self.rewrite_with(plan, None, needs)
    }

    /// `rowtime`: the window table whose rows feed an aggregate above, and
    /// so carry each row's time instead of one row per window.
    fn rewrite_with(
        &self,
        plan: &LogicalPlan,
        rowtime: Option<&str>,
        needs: Needs,
    ) -> Result<Streaming> {
        match plan {
            LogicalPlan::Projection(p) => {
                if let Some(narrowed) = crate::row_fields::narrowed(p)? {
                    return self.rewrite_with(&narrowed, rowtime, needs);
                }
                match p.input.as_ref() {
                    LogicalPlan::Filter(f) if RankFilter::of(f).is_some() => {
                        self.projection_over_top_n(p, f, needs)
                    }
                    _ => self.projection(p, plan, rowtime, needs),
                }
            }
            LogicalPlan::SubqueryAlias(_) => self.stateless(plan, rowtime, needs),
            LogicalPlan::Filter(f) => match RankFilter::of(f) {
                Some(found) => self.top_n(found, true, needs),
                // A row that stops matching must be taken back: a filter
                // needs its input's retractions (Flink's FLINK-9528).
                None => self.stateless(plan, rowtime, Needs::Retractions),
            },
            LogicalPlan::Limit(limit) => self.limit(limit, rowtime),
            LogicalPlan::TableScan(scan) => self.scan(scan, rowtime, needs),
            LogicalPlan::Aggregate(agg) => self.aggregate(agg, needs),
            LogicalPlan::Join(join) => self.join(join),
            LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Ok(Streaming {
                plan: plan.clone(),
                props: StreamProps::append(1, true),
            }),
            LogicalPlan::Extension(e) if streaming(e.node.as_ref()).is_some() => {
                let props = streaming(e.node.as_ref()).map(|n| n.props().clone());
                Ok(Streaming {
                    plan: plan.clone(),
                    props: props.unwrap_or_else(|| StreamProps::append(1, true)),
                })
            }
            LogicalPlan::Sort(_) => Err(unsupported(
                "ORDER BY",
                "an unbounded stream has no last row to sort by; order the output of a windowed query downstream",
            ).into()),
            LogicalPlan::Union(union) => self.union(union, needs),
            LogicalPlan::Distinct(_) => Err(unsupported(
                "SELECT DISTINCT",
                "deduplicate within a window: GROUP BY window_start, window_end, <columns>",
            ).into()),
            LogicalPlan::Window(window) => self.over(window, needs),
            other => Err(SqlError::new(format!(
                "cannot run {} as a streaming query",
                other.display()
            )).into()),
        }
    }

    /// A projection: its input's kind, keys renamed as it names them. An
    /// upsert input whose key it drops cannot be upserted by that key any
    /// more, so it asks for retractions instead.
    fn projection(
        &self,
        projection: &datafusion::logical_expr::Projection,
        plan: &LogicalPlan,
        rowtime: Option<&str>,
        needs: Needs,
    ) -> Result<Streaming> {
        let mut rewritten = self.stateless(plan, rowtime, needs)?;
        let keys = projected_keys(rewritten.props.changelog.keys(), &projection.expr);
        if matches!(rewritten.props.changelog, Changelog::Upsert { .. }) && keys.is_none() {
            rewritten = self.stateless(plan, rowtime, Needs::Retractions)?;
        }
        let keys = projected_keys(rewritten.props.changelog.keys(), &projection.expr);
        rewritten.props.changelog = rewritten
            .props
            .changelog
            .with_keys(keys.unwrap_or_default());
        Ok(rewritten)
    }

    /// A projection over a rank filter: the rank is computed only when the
    /// projection (or the filter) reads it, as Flink's Top-N without the
    /// row number.
    fn projection_over_top_n(
        &self,
        projection: &datafusion::logical_expr::Projection,
        filter: &datafusion::logical_expr::Filter,
        needs: Needs,
    ) -> Result<Streaming> {
        let mut needs = needs;
        loop {
            let found = RankFilter::of(filter).ok_or_else(|| SqlError::new("not a rank filter"))?;
            let emit_rank = found.rank_used(Some(&projection.expr));
            let inner = self.top_n(found, emit_rank, needs)?;
            let keys = projected_keys(inner.props.changelog.keys(), &projection.expr);
            if keys.is_none() && matches!(inner.props.changelog, Changelog::Upsert { .. }) {
                needs = Needs::Retractions;
                continue;
            }
            let mut props = inner.props;
            props.changelog = props.changelog.with_keys(keys.unwrap_or_default());
            let plan = LogicalPlan::Projection(datafusion::logical_expr::Projection::try_new(
                projection.expr.clone(),
                Arc::new(inner.plan),
            )?);
            return Ok(Streaming { plan, props });
        }
    }

    /// `UNION ALL`: every input's rows; a changelog when one input is.
    fn union(&self, union: &datafusion::logical_expr::Union, needs: Needs) -> Result<Streaming> {
        let inputs = union
            .inputs
            .iter()
            .map(|i| self.rewrite(i, needs))
            .collect::<Result<Vec<_>>>()?;
        let updating = inputs.iter().any(|i| i.props.is_updating());
        let props = StreamProps {
            parallelism: inputs
                .iter()
                .map(|i| i.props.parallelism)
                .max()
                .unwrap_or(1),
            bounded: inputs.iter().all(|i| i.props.bounded),
            changelog: if updating {
                Changelog::Retract { keys: Vec::new() }
            } else {
                Changelog::AppendOnly
            },
        };
        Ok(self.node(
            Union {
                schema: union.schema.clone(),
                props: props.clone(),
                inputs: inputs.into_iter().map(|i| i.plan).collect(),
            },
            props,
        ))
    }

    /// A node that keeps its input's parallelism and kind.
    fn stateless(
        &self,
        plan: &LogicalPlan,
        rowtime: Option<&str>,
        needs: Needs,
    ) -> Result<Streaming> {
        let inputs = plan
            .inputs()
            .into_iter()
            .map(|i| self.rewrite_with(i, rowtime, needs))
            .collect::<Result<Vec<_>>>()?;
        let props = inputs
            .first()
            .map(|i| i.props.clone())
            .unwrap_or_else(|| StreamProps::append(1, true));
        let plan = plan.with_new_exprs(
            plan.expressions(),
            inputs.into_iter().map(|i| i.plan).collect(),
        )?;
        Ok(Streaming { plan, props })
    }

    /// A limit runs in one subtask; it makes the stream bounded.
    fn limit(&self, limit: &Limit, rowtime: Option<&str>) -> Result<Streaming> {
        let input = self.rewrite_with(&limit.input, rowtime, Needs::Retractions)?;
        let fetch = limit.get_fetch_type()?;
        let bounded = input.props.bounded
            || matches!(fetch, datafusion::logical_expr::FetchType::Literal(Some(_)));
        let plan = LogicalPlan::Limit(Limit {
            input: Arc::new(input.plan),
            ..limit.clone()
        });
        Ok(Streaming {
            plan,
            props: StreamProps {
                parallelism: 1,
                bounded,
                changelog: input.props.changelog,
            },
        })
    }

    fn scan(&self, scan: &TableScan, rowtime: Option<&str>, needs: Needs) -> Result<Streaming> {
        if let Some(table) = scan.source.downcast_ref::<StreamTable>() {
            return self.stream_scan(scan, table, needs);
        }
        let Some(window) = scan.source.downcast_ref::<WindowTable>() else {
            return Err(SqlError::new(format!("cannot read {}", scan.table_name)).into());
        };
        let placeholder = scan.table_name.table();
        let pruned = pruned_window(window, scan.projection.as_deref())?;
        let (window, projection) = match &pruned {
            Some((pruned, projection)) => (pruned, Some(projection)),
            None => (window, scan.projection.as_ref()),
        };
        // The table a window function reads is planned on its own; a join
        // in it needs the optimizer to find its keys, and the columns left
        // out need it to stop reading them.
        let has_join = window
            .input
            .exists(|p| Ok(matches!(p, LogicalPlan::Join(_))))
            .unwrap_or(false);
        let input = if has_join || pruned.is_some() {
            let optimized = crate::query::optimize(self.state, window.input.clone())?;
            self.rewrite(&optimized, Needs::Retractions)?
        } else {
            self.rewrite(&window.input, Needs::Retractions)?
        };
        if input.props.is_updating() {
            return Err(unsupported(
                "a window over the result of a GROUP BY without a window",
                "window the stream before aggregating it",
            )
            .into());
        }
        let mode = if rowtime == Some(placeholder) {
            RowsMode::Rowtime
        } else {
            RowsMode::PerWindow
        };
        let node = WindowRows::new(window, placeholder, mode, input.plan, input.props.clone())?;
        let rows = Streaming {
            plan: extension(node),
            props: input.props,
        };
        match projection {
            None => Ok(rows),
            Some(indices) => {
                let exprs = indices
                    .iter()
                    .map(|i| {
                        datafusion::logical_expr::Expr::Column(
                            rows.plan.schema().qualified_field(*i).into(),
                        )
                    })
                    .collect::<Vec<_>>();
                let plan = datafusion::logical_expr::LogicalPlanBuilder::from(rows.plan)
                    .project(exprs)
                    .and_then(|b| b.build())?;
                Ok(Streaming {
                    plan,
                    props: rows.props,
                })
            }
        }
    }

    /// The scan of a declared stream. An upsert source (`upsert-kafka`)
    /// read by a consumer that needs retractions, or by a query that does
    /// not keep its key, is normalized: its whole rows are shuffled by the
    /// key, and the last row of each key kept ([`ChangelogNormalize`]).
    fn stream_scan(
        &self,
        scan: &TableScan,
        table: &StreamTable,
        needs: Needs,
    ) -> Result<Streaming> {
        let def = &table.def;
        if self.settings.batch_mode() && !def.connector.is_bounded(&def.options) {
            return Err(SqlError::new(format!(
                "'{}' is unbounded, and 'execution.runtime-mode' is 'batch'",
                def.name
            ))
            .with_hint("SET 'execution.runtime-mode' = 'automatic' (or 'streaming') to run on unbounded streams")
            .into());
        }
        let key = def.primary_key();
        let projected: Vec<String> = scan
            .projected_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let keeps_key = key.iter().all(|k| projected.contains(k));
        let changes = def.connector.source_changes(&def.options);
        let scan_of = |projection: Option<Vec<usize>>, schema| -> Result<StreamScan> {
            let mut node = StreamScan::new(
                def.clone(),
                projection,
                schema,
                &table.read_fields,
                self.settings,
            )?;
            node.props.changelog = match changes {
                SourceChanges::AppendOnly => Changelog::AppendOnly,
                SourceChanges::Upsert => Changelog::Upsert { keys: key.clone() },
                SourceChanges::All if keeps_key => Changelog::Retract { keys: key.clone() },
                SourceChanges::All => Changelog::Retract { keys: Vec::new() },
            };
            Ok(node)
        };
        if changes != SourceChanges::Upsert || (needs == Needs::Upserts && keeps_key) {
            let node = scan_of(scan.projection.clone(), scan.projected_schema.clone())?;
            let props = node.props.clone();
            return Ok(self.node(node, props));
        }
        let full = Arc::new(DFSchema::try_from_qualified_schema(
            scan.table_name.clone(),
            &def.schema,
        )?);
        let whole = scan_of(None, full.clone())?;
        let props = whole.props.clone();
        let key_columns = key
            .iter()
            .map(|k| {
                def.schema
                    .index_of(k)
                    .map_err(|e| SqlError::new(e.to_string()))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let input = self.exchange(self.node(whole, props), Some(key_columns.clone()), &key);
        let props = StreamProps {
            changelog: Changelog::Retract { keys: key.clone() },
            ..input.props.clone()
        };
        let normalized = self.node(
            ChangelogNormalize {
                key_columns,
                key_names: key,
                ttl: self.settings.state_ttl(),
                schema: full,
                props: props.clone(),
                inputs: vec![input.plan],
            },
            props,
        );
        let Some(indices) = &scan.projection else {
            return Ok(normalized);
        };
        let exprs: Vec<Expr> = indices
            .iter()
            .map(|i| Expr::Column(normalized.plan.schema().qualified_field(*i).into()))
            .collect();
        let plan = datafusion::logical_expr::LogicalPlanBuilder::from(normalized.plan)
            .project(exprs)
            .and_then(|b| b.build())?;
        let mut props = normalized.props;
        props.changelog = props.changelog.with_keys(if keeps_key {
            props.changelog.keys().to_vec()
        } else {
            Vec::new()
        });
        Ok(Streaming { plan, props })
    }

    /// A `GROUP BY`: over a window table function, a window or session
    /// aggregate; without one, an updating aggregate (on unbounded input,
    /// on a changelog, or in streaming mode), or an aggregate of the whole
    /// bounded input that emits its final rows at the end.
    fn aggregate(&self, agg: &Aggregate, needs: Needs) -> Result<Streaming> {
        let found = find_window_scan(&agg.input);
        let parts = AggregateParts::new(agg, found.is_some(), self.state)?;
        let input = self.rewrite_with(
            &agg.input,
            found.as_ref().map(|(_, p)| p.as_str()),
            Needs::Retractions,
        )?;
        if input.props.is_updating() && found.is_some() {
            return Err(unsupported(
                "a window aggregate over rows that are updated or retracted",
                "window the stream before it is aggregated or joined",
            )
            .into());
        }
        let schema = agg.schema.clone();
        let updating =
            !input.props.bounded || input.props.is_updating() || self.settings.streaming_mode();
        match found {
            None if updating => self.updating(parts, input, schema, needs, input_name(&agg.input)),
            Some((window, _)) if matches!(window.tvf.kind, WindowKind::Session { .. }) => {
                self.session(parts, window, input, schema)
            }
            found => self.window(parts, found.map(|(w, _)| w), input, schema),
        }
    }

    /// A regular join: an inner join of append-only streams on equal key
    /// columns, each side shuffled by its keys.
    fn join(&self, join: &JoinPlan) -> Result<Streaming> {
        if let Some(lookup) = self.lookup_join(join)? {
            return Ok(lookup);
        }
        if join.on.is_empty() {
            return Err(unsupported(
                "a join without an equality condition",
                "every row would be kept to meet every later row; join on equal keys: ON a.id = b.id",
            )
            .into());
        }
        let left = self.rewrite(&join.left, Needs::Retractions)?;
        let right = self.rewrite(&join.right, Needs::Retractions)?;
        let updating_input = left.props.is_updating() || right.props.is_updating();
        let bounded = left.props.bounded && right.props.bounded;
        // A side's own STATE_TTL hint, or the session's TTL.
        let side_ttl = |side: &LogicalPlan| {
            self.hints
                .ttl(input_name(side).as_deref())
                .or(self.settings.state_ttl())
        };
        let ttl = [side_ttl(&join.left), side_ttl(&join.right)];
        let window_ends = (
            window_end_column(&left.plan),
            window_end_column(&right.plan),
        );
        let on_window = |l: usize, r: usize| {
            join.on.iter().any(|pair| match pair {
                (Expr::Column(lc), Expr::Column(rc)) => {
                    join.left.schema().index_of_column(lc).ok() == Some(l)
                        && join.right.schema().index_of_column(rc).ok() == Some(r)
                }
                _ => false,
            })
        };
        let window_end = match window_ends {
            (Some(l), Some(r)) if on_window(l, r) => Some([l, r]),
            _ => None,
        };
        let kind = match join.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            JoinType::LeftSemi => JoinKind::LeftSemi,
            JoinType::LeftAnti => JoinKind::LeftAnti,
            JoinType::RightSemi => JoinKind::RightSemi,
            JoinType::RightAnti => JoinKind::RightAnti,
            other => {
                return Err(unsupported(&format!("a {other} join"), "use an INNER JOIN").into())
            }
        };
        let interval = match window_end {
            None => match (rowtime_column(&left.plan), rowtime_column(&right.plan)) {
                (Some(l), Some(r)) => interval_bounds(join, [l, r]),
                _ => None,
            },
            Some(_) => None,
        };
        let regular = window_end.is_none() && interval.is_none();
        if updating_input && !regular {
            return Err(unsupported(
                "a window or interval join of rows that are updated or retracted",
                "join the streams before they are aggregated, or join them with a regular join (equal keys only)",
            )
            .into());
        }
        // Outer, semi and anti joins of bounded append-only inputs decide
        // at the end of input, as a batch join would: their result only
        // appends. Elsewhere an outer join's result is a changelog.
        let decide_at_end = regular
            && kind != JoinKind::Inner
            && bounded
            && !updating_input
            && !self.settings.streaming_mode();
        let changelog = regular && !decide_at_end && (updating_input || kind != JoinKind::Inner);
        if changelog && !kind.emits_pairs() {
            return Err(unsupported(
                &format!("a {} join of unbounded streams or changelogs", join.join_type),
                "whether a row has a match is only final when its window closes: join two windowed streams on window_start and window_end (a window join), or write it as an outer join and filter the NULLs",
            )
            .into());
        }
        if !bounded && ttl.contains(&None) && window_end.is_none() && interval.is_none() {
            return Err(SqlError::new("a join of unbounded streams needs a state TTL").with_hint(
                "each side's rows are kept to meet the other side's later rows, so its state would grow forever: set one (SET 'table.exec.state.ttl' = '1 h', or per input: SELECT /*+ STATE_TTL('orders' = '1d', 'customers' = '20d') */ ...)",
            ).into());
        }
        let mut keys: [Vec<datafusion::common::Column>; 2] = [Vec::new(), Vec::new()];
        let mut indices: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
        for (l, r) in &join.on {
            let (Expr::Column(lc), Expr::Column(rc)) = (l, r) else {
                return Err(unsupported(
                    &format!("a join key that is an expression ({l} = {r})"),
                    "compute the key in a view first and join on its column",
                )
                .into());
            };
            let li = join.left.schema().index_of_column(lc)?;
            let ri = join.right.schema().index_of_column(rc)?;
            let (lt, rt) = (
                join.left.schema().field(li).data_type(),
                join.right.schema().field(ri).data_type(),
            );
            if lt != rt {
                return Err(unsupported(
                    &format!("a join of keys of different types ({lc}: {lt}, {rc}: {rt})"),
                    "CAST one side to the other's type in a view and join on that column",
                )
                .into());
            }
            keys[0].push(lc.clone());
            keys[1].push(rc.clone());
            indices[0].push(li);
            indices[1].push(ri);
        }
        let names = |side: usize| keys[side].iter().map(|c| c.flat_name()).collect::<Vec<_>>();
        let [left_keys, right_keys] = indices;
        let left = self.exchange(left, Some(left_keys), &names(0));
        let right = self.exchange(right, Some(right_keys), &names(1));
        let props = StreamProps {
            parallelism: self.settings.parallelism(),
            bounded,
            changelog: if changelog {
                Changelog::Retract { keys: Vec::new() }
            } else {
                Changelog::AppendOnly
            },
        };
        Ok(self.node(
            Join {
                decide_at_end,
                keys,
                residual: join.filter.clone(),
                // As Flink's, a state TTL applies to bounded inputs too.
                ttl: if window_end.is_some() || interval.is_some() {
                    [None, None]
                } else {
                    ttl
                },
                window_end,
                interval,
                kind,
                schema: join.schema.clone(),
                props: props.clone(),
                inputs: vec![left.plan, right.plan],
            },
            props,
        ))
    }

    fn updating(
        &self,
        parts: AggregateParts,
        input: Streaming,
        schema: DFSchemaRef,
        needs: Needs,
        input_name: Option<String>,
    ) -> Result<Streaming> {
        let ttl = self
            .hints
            .ttl(input_name.as_deref())
            .or(self.settings.state_ttl());
        if ttl.is_none() && !input.props.bounded {
            return Err(SqlError::new("GROUP BY without a window on an unbounded stream needs a state TTL").with_hint(
                "its state would grow forever: set one (SET 'table.exec.state.ttl' = '1 h'), or group by a window: FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end, ...",
            ).into());
        }
        let options = AggregateOptions {
            ttl,
            retracting_input: input.props.is_updating(),
            emit_before: needs == Needs::Retractions,
        };
        let bounded = input.props.bounded;
        let keys = parts.key_columns.clone().filter(|c| !c.is_empty());
        let input = self.exchange(input, keys, &parts.key_names);
        // The group keys, as the aggregate's output names them.
        let key_names: Vec<String> = parts
            .layout
            .columns
            .iter()
            .zip(schema.fields())
            .filter(|(c, _)| matches!(c, OutputColumn::Key(_)))
            .map(|(_, f)| f.name().clone())
            .collect();
        let changelog = match needs {
            Needs::Upserts => Changelog::Upsert { keys: key_names },
            Needs::Retractions => Changelog::Retract { keys: key_names },
        };
        let props = StreamProps {
            parallelism: input.props.parallelism,
            bounded,
            changelog,
        };
        let mut describe = format!(
            "keys [{}], aggregates: {}",
            parts.key_names.join(", "),
            parts.aggregates,
        );
        if let Some(ttl) = ttl {
            describe.push_str(&format!(", state TTL {}", fmt_ms(ttl.as_millis() as i64)));
        }
        if options.retracting_input {
            describe.push_str(", retracts");
        }
        Ok(self.node(
            UpdatingAggregate {
                options,
                spec: parts.spec,
                layout: parts.layout,
                describe,
                schema,
                props: props.clone(),
                inputs: vec![input.plan],
            },
            props,
        ))
    }

    fn session(
        &self,
        parts: AggregateParts,
        window: &WindowTable,
        input: Streaming,
        schema: DFSchemaRef,
    ) -> Result<Streaming> {
        let tvf = &window.tvf;
        let WindowKind::Session { gap } = tvf.kind else {
            return Err(SqlError::new("not a session window").into());
        };
        if self.settings.early_fire().is_some() || self.settings.late_fire().is_some() {
            // As Flink: "Session window doesn't support EMIT strategy".
            return Err(unsupported(
                "early or late firing of a session window",
                "a session window fires once, when it closes: SET 'table.exec.emit.early-fire.enabled' = 'false' and 'table.exec.emit.late-fire.enabled' = 'false'",
            )
            .into());
        }
        let partition: Vec<usize> = if tvf.partition_by_group_keys {
            (0..parts.keys.len()).collect()
        } else {
            tvf.partition_by
                .iter()
                .map(|p| {
                    parts
                        .keys
                        .iter()
                        .position(|e| matches!(e, datafusion::logical_expr::Expr::Column(c) if c.name == p.value))
                        .ok_or_else(|| {
                            SqlError::new(format!(
                                "SESSION partition key {p} must also be in GROUP BY"
                            ))
                            .at(p.span.start)
                            .with_hint(format!("GROUP BY window_start, window_end, {p}"))
                        })
                })
                .collect::<std::result::Result<_, SqlError>>()?
        };
        let names: Vec<String> = partition
            .iter()
            .map(|i| parts.key_names[*i].clone())
            .collect();
        let shuffle = parts
            .key_columns
            .as_ref()
            .map(|cols| partition.iter().map(|i| cols[*i]).collect::<Vec<_>>())
            .filter(|c| !c.is_empty());
        let bounded = input.props.bounded;
        let input = self.exchange(input, shuffle, &names);
        let describe = format!(
            "SESSION(gap={}) by [{}], {}, aggregates: {}",
            fmt_ms(gap),
            names.join(", "),
            time_note(Some(window)),
            parts.aggregates
        );
        let props = StreamProps::append(input.props.parallelism, bounded);
        let time = time_source(&parts, Some(window));
        Ok(self.node(
            SessionAggregate {
                gap,
                spec: parts.spec,
                partition,
                time,
                layout: parts.layout,
                describe,
                stream: window.stream.clone(),
                schema,
                props: props.clone(),
                inputs: vec![input.plan],
            },
            props,
        ))
    }

    fn window(
        &self,
        parts: AggregateParts,
        window: Option<&WindowTable>,
        input: Streaming,
        schema: DFSchemaRef,
    ) -> Result<Streaming> {
        // Without a window function, one window spans all time and fires
        // at the end of the input.
        let windows = match window {
            Some(w) => slice_windows(&w.tvf.kind)?,
            None => SliceWindows::tumble(1 << 60, 0).map_err(|e| SqlError::new(e.to_string()))?,
        };
        let shape = if window.is_some() {
            windows.describe()
        } else {
            "GROUP BY".to_string()
        };
        let describe = format!(
            "{shape}, {}, keys [{}], aggregates: {}",
            time_note(window),
            parts.key_names.join(", "),
            parts.aggregates
        );
        let time = time_source(&parts, window);
        let emit = match window {
            Some(_) => self.emit_strategy(time)?,
            None => EmitStrategy::default(),
        };
        let describe = if emit.produces_updates() {
            format!("{describe}, fires {}", emit.describe())
        } else {
            describe
        };
        let bounded = input.props.bounded;
        let parallelism = self.settings.parallelism();
        let stream = window.and_then(|w| w.stream.clone());
        let node = |phase, input: Streaming, schema, props: StreamProps| WindowAggregate {
            phase,
            windows,
            time,
            emit,
            spec: parts.spec.clone(),
            layout: parts.layout.clone(),
            describe: describe.clone(),
            stream: stream.clone(),
            schema,
            props,
            inputs: vec![input.plan],
        };
        // Two phases when parallel on event time: pre-aggregate per input
        // subtask, shuffle the partial state by key, merge.
        let single_subtask =
            input.props.parallelism == 1 && (parts.keys.is_empty() || parallelism == 1);
        // A window that fires early sees its rows as they come, so it
        // runs in one phase (as Flink's group window aggregate does).
        let two_phase =
            (window.is_none() || !time.is_processing_time()) && !emit.produces_updates();
        if two_phase && !single_subtask {
            let local_props = StreamProps::append(input.props.parallelism, bounded);
            let partial = partial_schema(&parts.spec).map_err(|e| SqlError::new(e.to_string()))?;
            let partial = weir_engine::row_watermark::without_row_watermark(&partial);
            let partial = Arc::new(DFSchema::try_from(partial.as_ref().clone())?);
            let local = self.node(
                node(Phase::Local, input, partial, local_props.clone()),
                local_props,
            );
            let keys = weir_engine::window::partial_key_columns(&parts.spec);
            let keys = (!keys.is_empty()).then_some(keys);
            let exchanged = self.exchange(local, keys, &parts.key_names);
            let props = StreamProps::append(exchanged.props.parallelism, bounded);
            return Ok(self.node(node(Phase::Global, exchanged, schema, props.clone()), props));
        }
        let keys = parts.key_columns.clone().filter(|c| !c.is_empty());
        let input = self.exchange(input, keys, &parts.key_names);
        let mut props = StreamProps::append(input.props.parallelism, bounded);
        if emit.produces_updates() {
            // A window's row is identified by its keys and its bounds.
            let keys = parts
                .layout
                .columns
                .iter()
                .zip(schema.fields())
                .filter(|(c, _)| !matches!(c, OutputColumn::Aggregate(_)))
                .map(|(_, f)| f.name().clone())
                .collect();
            props.changelog = Changelog::Retract { keys };
        }
        Ok(self.node(node(Phase::Single, input, schema, props.clone()), props))
    }

    /// Early and late firing of a window aggregate, from the session's
    /// `table.exec.emit.*` settings, checked as Flink checks them.
    fn emit_strategy(&self, time: TimeSource) -> Result<EmitStrategy> {
        let millis = |d: std::time::Duration| d.as_millis() as i64;
        let delay = |fire: Option<Option<std::time::Duration>>,
                     which: &str|
         -> Result<Option<i64>> {
            match fire {
                None => Ok(None),
                Some(Some(d)) => Ok(Some(millis(d))),
                Some(None) => Err(SqlError::new(format!("{which} firing is enabled without a delay"))
                    .with_hint(format!(
                        "SET 'table.exec.emit.{which}-fire.delay' = '1 s' ('0' fires after every input batch)"
                    ))
                    .into()),
            }
        };
        let early_fire = delay(self.settings.early_fire(), "early")?;
        let late_fire = delay(self.settings.late_fire(), "late")?;
        if time.is_processing_time() {
            // No row is late on processing time: only early firing applies.
            return Ok(EmitStrategy {
                early_fire,
                ..Default::default()
            });
        }
        let allow_lateness = self.settings.allow_lateness().map_or(0, millis);
        if late_fire.is_some() && allow_lateness == 0 {
            return Err(SqlError::new("late firing is enabled but no lateness is allowed")
                .with_hint("SET 'table.exec.emit.allow-lateness' = '1 min': rows that late still update their window")
                .into());
        }
        Ok(EmitStrategy {
            early_fire,
            late_fire,
            allow_lateness,
        })
    }

    /// `input` shuffled by `keys` into the session's parallelism, or
    /// gathered into one subtask without keys.
    pub(crate) fn exchange(
        &self,
        input: Streaming,
        keys: Option<Vec<usize>>,
        names: &[String],
    ) -> Streaming {
        let parallelism = if keys.is_some() {
            self.settings.parallelism()
        } else {
            1
        };
        let keys = keys.unwrap_or_default();
        if keys.is_empty() && input.props.parallelism == 1 {
            return input;
        }
        let props = StreamProps {
            parallelism,
            ..input.props.clone()
        };
        let schema = input.plan.schema().clone();
        self.node(
            Exchange {
                keys,
                names: names.to_vec(),
                schema,
                props: props.clone(),
                inputs: vec![input.plan],
            },
            props,
        )
    }

    fn node(
        &self,
        node: impl datafusion::logical_expr::UserDefinedLogicalNode + 'static,
        props: StreamProps,
    ) -> Streaming {
        Streaming {
            plan: extension(node),
            props,
        }
    }
}

/// The column of `plan`'s output that holds each row's `window_end`, when
/// its rows are windowed: a window aggregate's result, or a window table
/// function's rows, through projections that keep the column.
pub(crate) fn window_end_column(plan: &LogicalPlan) -> Option<usize> {
    use weir_engine::window::OutputColumn;
    trace_column(plan, &|node| {
        let any = node.as_any();
        if let Some(agg) = any.downcast_ref::<WindowAggregate>() {
            return (agg.phase != Phase::Local)
                .then(|| {
                    agg.layout
                        .columns
                        .iter()
                        .position(|c| *c == OutputColumn::WindowEnd)
                })
                .flatten();
        }
        if let Some(rows) = any.downcast_ref::<WindowRows>() {
            return (rows.mode == RowsMode::PerWindow)
                .then(|| rows.window_schema.fields().len().checked_sub(2))
                .flatten();
        }
        None
    })
}

/// The column of `plan`'s output that is its stream's time attribute (the
/// `WATERMARK FOR` column), through projections that keep it.
pub(crate) fn rowtime_column(plan: &LogicalPlan) -> Option<usize> {
    trace_column(plan, &|node| {
        let scan = node.as_any().downcast_ref::<StreamScan>()?;
        let column = &scan.stream.watermark.as_ref()?.column;
        scan.schema.fields().iter().position(|f| f.name() == column)
    })
}

/// A column of `plan`'s output that `found` picks at a streaming node,
/// followed up through exchanges, filters, aliases and projections that
/// pass it on unchanged.
pub(crate) fn trace_column(
    plan: &LogicalPlan,
    found: &dyn Fn(&dyn datafusion::logical_expr::UserDefinedLogicalNode) -> Option<usize>,
) -> Option<usize> {
    use datafusion::logical_expr::Projection;
    match plan {
        LogicalPlan::Extension(e) => {
            if let Some(exchange) = e.node.as_any().downcast_ref::<Exchange>() {
                return exchange.inputs.first().and_then(|i| trace_column(i, found));
            }
            // An OVER aggregate passes its input's columns on, first; the
            // last row per key of an upsert stream keeps its columns.
            if let Some(over) = e
                .node
                .as_any()
                .downcast_ref::<crate::nodes::OverAggregate>()
            {
                return over.inputs.first().and_then(|i| trace_column(i, found));
            }
            if let Some(normalize) = e.node.as_any().downcast_ref::<ChangelogNormalize>() {
                return normalize
                    .inputs
                    .first()
                    .and_then(|i| trace_column(i, found));
            }
            found(e.node.as_ref())
        }
        LogicalPlan::Projection(Projection { expr, input, .. }) => {
            let column = trace_column(input, found)?;
            expr.iter().position(|e| {
                let e = match e {
                    Expr::Alias(alias) => alias.expr.as_ref(),
                    e => e,
                };
                matches!(e, Expr::Column(c) if input.schema().index_of_column(c).ok() == Some(column))
            })
        }
        LogicalPlan::Filter(f) => trace_column(&f.input, found),
        LogicalPlan::SubqueryAlias(s) => trace_column(&s.input, found),
        _ => None,
    }
}

/// The bounds an interval join's condition puts on `left time - right
/// time` (ms), when it bounds it from both sides: `l.t BETWEEN r.t -
/// INTERVAL .. AND r.t + INTERVAL ..`, or comparisons with `<`, `<=`, `>`,
/// `>=`. The condition stays the join's residual, so matching is exact;
/// the bounds decide when state ends.
fn interval_bounds(join: &JoinPlan, time: [usize; 2]) -> Option<IntervalBounds> {
    use datafusion::logical_expr::{utils::split_conjunction, BinaryExpr, Operator};
    let filter = join.filter.as_ref()?;
    // A side's time plus a constant: (side, ms).
    let term = |e: &Expr| -> Option<(usize, i64)> {
        let strip = |e: &Expr| match e {
            Expr::Cast(c) => c.expr.as_ref().clone(),
            Expr::TryCast(c) => c.expr.as_ref().clone(),
            e => e.clone(),
        };
        let side_of = |e: &Expr| match strip(e) {
            Expr::Column(c) => {
                if join.left.schema().index_of_column(&c).ok() == Some(time[0])
                    && join.right.schema().index_of_column(&c).is_err()
                {
                    Some(0)
                } else if join.right.schema().index_of_column(&c).ok() == Some(time[1]) {
                    Some(1)
                } else {
                    None
                }
            }
            _ => None,
        };
        match strip(e) {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let side = side_of(&left)?;
                let ms = interval_ms(&right)?;
                match op {
                    Operator::Plus => Some((side, ms)),
                    Operator::Minus => Some((side, -ms)),
                    _ => None,
                }
            }
            other => side_of(&other).map(|s| (s, 0)),
        }
    };
    let (mut lower, mut upper) = (None::<i64>, None::<i64>);
    let mut bound = |x: &Expr, op: Operator, y: &Expr| -> Option<()> {
        let ((sx, ox), (sy, oy)) = (term(x)?, term(y)?);
        if sx == sy {
            return None;
        }
        // left - right against a constant, the comparison flipped when x is
        // the right side.
        let (c, op) = if sx == 0 {
            (oy - ox, op)
        } else {
            (ox - oy, op.swap()?)
        };
        match op {
            Operator::Lt => upper = Some(upper.map_or(c - 1, |u| u.min(c - 1))),
            Operator::LtEq => upper = Some(upper.map_or(c, |u| u.min(c))),
            Operator::Gt => lower = Some(lower.map_or(c + 1, |l| l.max(c + 1))),
            Operator::GtEq => lower = Some(lower.map_or(c, |l| l.max(c))),
            _ => return None,
        }
        Some(())
    };
    for conjunct in split_conjunction(filter) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let _ = bound(left, *op, right);
            }
            Expr::Between(b) if !b.negated => {
                let _ = bound(&b.expr, Operator::GtEq, &b.low);
                let _ = bound(&b.expr, Operator::LtEq, &b.high);
            }
            _ => {}
        }
    }
    match (lower, upper) {
        (Some(lower), Some(upper)) if lower <= upper => Some(IntervalBounds { time, lower, upper }),
        _ => None,
    }
}

/// An `INTERVAL` literal of days, hours, minutes, seconds or ms, in ms.
fn interval_ms(e: &Expr) -> Option<i64> {
    use datafusion::common::ScalarValue;
    match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            Some(v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(v.days as i64 * 86_400_000 + v.milliseconds as i64)
        }
        _ => None,
    }
}

/// Where a window aggregate's rows take their time from.
fn time_source(parts: &AggregateParts, window: Option<&WindowTable>) -> TimeSource {
    match (parts.window_start, window) {
        (Some(column), Some(w)) if !w.processing_time => TimeSource::EventTime { column },
        _ => TimeSource::ProcessingTime,
    }
}

fn time_note(window: Option<&WindowTable>) -> &'static str {
    match window {
        None => "whole bounded input",
        Some(w) if w.processing_time => "processing time",
        Some(_) => "event time",
    }
}

/// The window table under an aggregate's input (through stateless nodes).
fn find_window_scan(plan: &LogicalPlan) -> Option<(&WindowTable, String)> {
    match plan {
        LogicalPlan::TableScan(scan) => scan
            .source
            .downcast_ref::<WindowTable>()
            .map(|w| (w, scan.table_name.table().to_string())),
        LogicalPlan::Projection(p) => find_window_scan(&p.input),
        LogicalPlan::Filter(f) => find_window_scan(&f.input),
        LogicalPlan::SubqueryAlias(s) => find_window_scan(&s.input),
        _ => None,
    }
}

/// `keys` (names of an input's columns) as a projection names them, or
/// `None` when it drops one. A key passes through a column reference,
/// aliased or cast.
pub(crate) fn projected_keys(keys: &[String], exprs: &[Expr]) -> Option<Vec<String>> {
    keys.iter()
        .map(|key| {
            exprs.iter().find_map(|e| {
                let (name, inner) = match e {
                    Expr::Alias(a) => (Some(a.name.clone()), a.expr.as_ref()),
                    e => (None, e),
                };
                let inner = match inner {
                    Expr::Cast(c) => c.expr.as_ref(),
                    Expr::TryCast(c) => c.expr.as_ref(),
                    e => e,
                };
                match inner {
                    Expr::Column(c) if &c.name == key => {
                        Some(name.unwrap_or_else(|| c.name.clone()))
                    }
                    _ => None,
                }
            })
        })
        .collect()
}

/// The name (or alias) of the input `plan` reads, for a `STATE_TTL` hint:
/// the table or view it scans, through projections and filters.
pub(crate) fn input_name(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::SubqueryAlias(a) => Some(a.alias.table().to_string()),
        LogicalPlan::TableScan(scan) => Some(scan.table_name.table().to_string()),
        LogicalPlan::Projection(p) => input_name(&p.input),
        LogicalPlan::Filter(f) => input_name(&f.input),
        _ => None,
    }
}

/// A window table reading only the input columns its query uses (those
/// of `projection`, the time attribute and the session keys), and the
/// query's projection of it; `None` when it uses them all.
fn pruned_window(
    window: &WindowTable,
    projection: Option<&[usize]>,
) -> Result<Option<(WindowTable, Vec<usize>)>> {
    let Some(projection) = projection else {
        return Ok(None);
    };
    let input_schema = window.input.schema();
    let inputs = input_schema.fields().len();
    let mut used = vec![false; inputs];
    used[window.time_index] = true;
    for i in projection.iter().filter(|i| **i < inputs) {
        used[*i] = true;
    }
    for key in &window.tvf.partition_by {
        let Some(i) = input_schema
            .fields()
            .iter()
            .position(|f| *f.name() == key.value)
        else {
            return Ok(None);
        };
        used[i] = true;
    }
    // A legacy session's keys are the query's other grouping columns, so
    // they are in `projection`.
    if used.iter().all(|u| *u) {
        return Ok(None);
    }
    let kept: Vec<usize> = (0..inputs).filter(|i| used[*i]).collect();
    let exprs: Vec<Expr> = kept
        .iter()
        .map(|i| Expr::Column(input_schema.qualified_field(*i).into()))
        .collect();
    let input = datafusion::logical_expr::LogicalPlanBuilder::from(window.input.clone())
        .project(exprs)?
        .build()?;
    // The window columns follow the input's.
    let at = |i: usize| match kept.iter().position(|k| *k == i) {
        Some(p) => p,
        None => kept.len() + (i - inputs),
    };
    let columns: Vec<usize> = kept
        .iter()
        .copied()
        .chain(inputs..window.schema.fields().len())
        .collect();
    let schema = Arc::new(
        window
            .schema
            .project(&columns)
            .map_err(DataFusionError::from)?,
    );
    let pruned = WindowTable {
        tvf: window.tvf.clone(),
        input,
        schema,
        time_index: at(window.time_index),
        processing_time: window.processing_time,
        stream: window.stream.clone(),
    };
    Ok(Some((pruned, projection.iter().map(|i| at(*i)).collect())))
}
