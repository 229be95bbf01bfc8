//! Recognising Flink's Top-N in DataFusion's plan: a filter on the rank
//! of `ROW_NUMBER()`/`RANK()`/`DENSE_RANK() OVER (PARTITION BY ... ORDER
//! BY ...)` (`WHERE rn <= N`, `rn < N`, `rn = 1`), and choosing how it
//! runs: per window when the partition holds a window's `window_end`,
//! deduplication when it keeps the first or last row by the event time,
//! else an updating top N. The rank filter goes away (the node emits only
//! ranks up to N); other conditions stay, as a filter on its output.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Filter, LogicalPlan, Operator, Projection, Window, WindowFunctionDefinition,
};
use weir_engine::operators::{RankFunction, RankMode};
use weir_sql::SqlError;

use crate::error::Result;
use crate::nodes::{extension, stream_of, Changelog, Needs, StreamProps, TopN};
use crate::rewrite::{rowtime_column, window_end_column, Rewriter, Streaming};

/// A filter on a rank, found in a plan.
pub(crate) struct RankFilter<'a> {
    /// The projection between the filter and the window, if any.
    projection: Option<&'a Projection>,
    window: &'a Window,
    function: RankFunction,
    rank: WindowFunction,
    /// The rank column as the window names it.
    window_column: String,
    /// The rank column as the filter sees it.
    rank_column: String,
    limit: usize,
    /// The filter's other conditions.
    rest: Vec<Expr>,
}

impl<'a> RankFilter<'a> {
    /// The rank filter `filter` is, if it is one.
    pub fn of(filter: &'a Filter) -> Option<Self> {
        let (projection, window) = match filter.input.as_ref() {
            LogicalPlan::Window(w) => (None, w),
            LogicalPlan::Projection(p) => match p.input.as_ref() {
                LogicalPlan::Window(w) => (Some(p), w),
                _ => return None,
            },
            _ => return None,
        };
        let [window_expr] = window.window_expr.as_slice() else {
            return None;
        };
        let window_column = window
            .schema
            .field(window.schema.fields().len() - 1)
            .name()
            .clone();
        let inner = match window_expr {
            Expr::Alias(a) => a.expr.as_ref(),
            e => e,
        };
        let Expr::WindowFunction(rank) = inner else {
            return None;
        };
        let WindowFunctionDefinition::WindowUDF(udf) = &rank.fun else {
            return None;
        };
        let function = match udf.name().to_ascii_lowercase().as_str() {
            "row_number" => RankFunction::RowNumber,
            "rank" => RankFunction::Rank,
            "dense_rank" => RankFunction::DenseRank,
            _ => return None,
        };
        // The name the filter sees: the window's, or a projection's alias.
        let rank_column = match projection {
            None => window_column.clone(),
            Some(p) => p.expr.iter().find_map(|e| match e {
                Expr::Alias(a) if is_column(&a.expr, &window_column) => Some(a.name.clone()),
                e if is_column(e, &window_column) => Some(window_column.clone()),
                _ => None,
            })?,
        };
        let mut limit = None;
        let mut rest = Vec::new();
        for conjunct in split_conjunction(&filter.predicate) {
            match limit_of(conjunct, &rank_column) {
                Some(n) if limit.is_none() => limit = Some(n),
                _ => rest.push(conjunct.clone()),
            }
        }
        Some(RankFilter {
            projection,
            window,
            function,
            rank: rank.as_ref().clone(),
            window_column,
            rank_column,
            limit: limit?,
            rest,
        })
    }

    /// Whether the rank column is read above the node: by the filter's
    /// other conditions, or by `parent` (the projection above the filter).
    pub fn rank_used(&self, parent: Option<&[Expr]>) -> bool {
        let reads = |e: &Expr| e.column_refs().iter().any(|c| c.name == self.rank_column);
        self.rest.iter().any(reads) || parent.is_none_or(|exprs| exprs.iter().any(reads))
    }
}

fn is_column(e: &Expr, name: &str) -> bool {
    let e = match e {
        Expr::Cast(c) => c.expr.as_ref(),
        e => e,
    };
    matches!(e, Expr::Column(c) if c.name == name)
}

/// `N` of `rank <= N`, `rank < N + 1`, `rank = 1` (either way around).
fn limit_of(e: &Expr, rank: &str) -> Option<usize> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    let (op, value) = if is_column(left, rank) {
        (*op, literal(right)?)
    } else if is_column(right, rank) {
        (op.swap()?, literal(left)?)
    } else {
        return None;
    };
    let n = match op {
        Operator::LtEq => value,
        Operator::Lt => value - 1,
        Operator::Eq if value == 1 => 1,
        _ => return None,
    };
    usize::try_from(n).ok().filter(|n| *n > 0)
}

fn literal(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v.cast_to(&datafusion::arrow::datatypes::DataType::Int64) {
            Ok(ScalarValue::Int64(Some(n))) => Some(n),
            _ => None,
        },
        Expr::Cast(c) => literal(&c.expr),
        Expr::TryCast(c) => literal(&c.expr),
        _ => None,
    }
}

impl Rewriter<'_> {
    /// The streaming plan of a rank filter: the `TopN` node, the
    /// projection that was between the filter and the window (without the
    /// rank when `emit_rank` is off), and the filter's other conditions.
    pub(crate) fn top_n(
        &self,
        found: RankFilter<'_>,
        emit_rank: bool,
        needs: Needs,
    ) -> Result<Streaming> {
        let window = found.window;
        let input = self.rewrite(&window.input, Needs::Retractions)?;
        let params = &found.rank.params;
        let schema = window.input.schema();
        let index = |e: &Expr| match e {
            Expr::Column(c) => schema.index_of_column(c).ok(),
            _ => None,
        };
        let partition_columns: Option<Vec<usize>> = params.partition_by.iter().map(index).collect();
        let window_end = window_end_column(&input.plan)
            .filter(|end| partition_columns.as_ref().is_some_and(|p| p.contains(end)));
        let rowtime = rowtime_column(&input.plan);
        let by_time = match params.order_by.as_slice() {
            [sort] => index(&sort.expr)
                .filter(|i| Some(*i) == rowtime)
                .map(|i| (i, sort.asc)),
            _ => None,
        };
        let dedup = found.limit == 1 && found.function == RankFunction::RowNumber;
        // Ordered by a PROCTIME() column: deduplication by arrival, keeping
        // the first row (ASC) or the last (DESC), as Flink's
        // `ProcTimeDeduplicate*Function`s.
        let by_arrival = match params.order_by.as_slice() {
            [sort] if dedup && !input.props.is_updating() => index(&sort.expr)
                .filter(|i| crate::over::proctime_column(&input.plan, *i))
                .map(|_| sort.asc),
            _ => None,
        };
        let ttl = self
            .hints
            .ttl(crate::rewrite::input_name(&window.input).as_deref())
            .or(self.settings.state_ttl());
        // A bounded input in the default mode ranks once, at its end, as a
        // batch query: its result only appends.
        let at_end =
            input.props.bounded && !input.props.is_updating() && !self.settings.streaming_mode();
        let mode = match (window_end, by_time) {
            (Some(end), _) => RankMode::Window {
                window_end: Some(end),
            },
            (None, _) if at_end => RankMode::Window { window_end: None },
            (None, Some((time, true))) if dedup && !input.props.is_updating() => {
                RankMode::KeepFirst { time, ttl }
            }
            _ => {
                if found.function != RankFunction::RowNumber {
                    return Err(SqlError::new(
                        "RANK and DENSE_RANK rank the rows of a window; over a whole stream only ROW_NUMBER is supported (as in Flink)",
                    )
                    .with_hint("use ROW_NUMBER(), or PARTITION BY window_start, window_end of a window table function")
                    .into());
                }
                RankMode::Updating {
                    retracting_input: input.props.is_updating(),
                    emit_before: needs == Needs::Retractions,
                    deduplicate: dedup && (by_time.is_some() || by_arrival.is_some()),
                    append_only: by_arrival == Some(true) && !emit_rank,
                    ttl,
                }
            }
        };
        if !matches!(mode, RankMode::Window { .. }) && !input.props.bounded && ttl.is_none() {
            return Err(SqlError::new("a Top-N or deduplication of an unbounded stream needs a state TTL")
                .with_hint("it keeps rows of every partition it has seen: set one (SET 'table.exec.state.ttl' = '1 h', or SELECT /*+ STATE_TTL('t' = '1 h') */ ...), or rank within a window (PARTITION BY window_start, window_end)")
                .into());
        }
        if input.props.is_updating() && !matches!(mode, RankMode::Updating { .. }) {
            return Err(SqlError::new(
                "a window Top-N or first-row deduplication of rows that are updated or retracted is not supported",
            )
            .into());
        }
        let partition_names: Vec<String> = params
            .partition_by
            .iter()
            .map(|e| e.schema_name().to_string())
            .collect();
        let bounded = input.props.bounded;
        let input = self.exchange(
            input,
            partition_columns.filter(|p| !p.is_empty()),
            &partition_names,
        );
        let changelog = match &mode {
            RankMode::Window { .. } | RankMode::KeepFirst { .. } => Changelog::AppendOnly,
            // The first row by arrival is never replaced: only inserts.
            RankMode::Updating {
                append_only: true, ..
            } => Changelog::AppendOnly,
            RankMode::Updating { .. } => {
                let mut keys: Vec<String> = params
                    .partition_by
                    .iter()
                    .filter_map(|e| match e {
                        Expr::Column(c) => Some(c.name.clone()),
                        _ => None,
                    })
                    .collect();
                if emit_rank {
                    keys.push(found.window_column.clone());
                } else if !dedup {
                    keys.clear();
                }
                match needs {
                    Needs::Upserts if !keys.is_empty() => Changelog::Upsert { keys },
                    _ => Changelog::Retract { keys },
                }
            }
        };
        let props = StreamProps {
            parallelism: input.props.parallelism,
            bounded,
            changelog,
        };
        let node_schema = if emit_rank {
            window.schema.clone()
        } else {
            window.input.schema().clone()
        };
        let node = TopN {
            partition: params.partition_by.clone(),
            order: params.order_by.clone(),
            limit: found.limit,
            function: found.function,
            emit_rank,
            later_wins: dedup
                && (by_time.is_some_and(|(_, ascending)| !ascending) || by_arrival == Some(false)),
            mode,
            stream: stream_of(&input.plan),
            schema: node_schema,
            props: props.clone(),
            inputs: vec![input.plan],
        };
        let mut plan = extension(node);
        let mut props = props;
        if let Some(projection) = found.projection {
            let exprs: Vec<Expr> = projection
                .expr
                .iter()
                .filter(|e| {
                    emit_rank
                        || !e
                            .column_refs()
                            .iter()
                            .any(|c| c.name == found.window_column)
                })
                .cloned()
                .collect();
            let keys = crate::rewrite::projected_keys(props.changelog.keys(), &exprs);
            props.changelog = props.changelog.with_keys(keys.unwrap_or_default());
            plan = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(plan))?);
        }
        if let Some(rest) = conjunction(found.rest) {
            plan = LogicalPlan::Filter(Filter::try_new(rest, Arc::new(plan))?);
        }
        Ok(Streaming { plan, props })
    }
}
