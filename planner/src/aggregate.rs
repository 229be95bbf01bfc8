//! What a DataFusion `Aggregate` asks of the engine: the group keys and
//! window columns of its `GROUP BY`, its aggregate functions (through
//! DataFusion's own lowering, so every DataFusion aggregate works), and
//! the order of its output columns. Shared by the window, session and
//! updating aggregate nodes.

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::execution::SessionState;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Aggregate, Expr};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use weir_engine::aggregate::AggregateSpec;
use weir_engine::window::{OutputColumn, OutputLayout};
use weir_sql::{SqlError, WINDOW_END, WINDOW_START, WINDOW_TIME};

use crate::error::Result;
use crate::lower::display_expr;

/// An aggregate, analysed.
#[derive(Debug, Clone)]
pub(crate) struct AggregateParts {
    pub spec: Arc<AggregateSpec>,
    pub layout: Arc<OutputLayout>,
    /// The group keys (not the window columns), as written.
    pub keys: Vec<Expr>,
    /// How EXPLAIN names each key.
    pub key_names: Vec<String>,
    /// The input column of each key, when every key is a plain column.
    pub key_columns: Option<Vec<usize>>,
    /// The input column of `window_start`, when grouped by a window.
    pub window_start: Option<usize>,
    /// The aggregates as EXPLAIN shows them.
    pub aggregates: String,
}

impl AggregateParts {
    /// Analyses `agg`; `windowed` when its input is a window table function.
    pub fn new(agg: &Aggregate, windowed: bool, state: &SessionState) -> Result<Self> {
        let input_schema = agg.input.schema().clone();
        let mut layout = Vec::new();
        let mut keys = Vec::new();
        let mut physical_keys = Vec::new();
        let mut key_fields = Vec::new();
        let mut window_start = None;
        for (i, expr) in agg.group_expr.iter().enumerate() {
            let window_column = match expr {
                Expr::Column(c)
                    if windowed
                        && [WINDOW_START, WINDOW_END, WINDOW_TIME].contains(&c.name.as_str()) =>
                {
                    Some(c)
                }
                _ => None,
            };
            match window_column {
                Some(c) => {
                    if c.name == WINDOW_START {
                        window_start = Some(input_schema.index_of_column(c)?);
                    }
                    layout.push(match c.name.as_str() {
                        WINDOW_START => OutputColumn::WindowStart,
                        WINDOW_END => OutputColumn::WindowEnd,
                        _ => OutputColumn::WindowTime,
                    });
                }
                None => {
                    layout.push(OutputColumn::Key(keys.len()));
                    physical_keys.push(physical(state, expr, &input_schema)?);
                    key_fields.push(agg.schema.field(i).clone());
                    keys.push(expr.clone());
                }
            }
        }
        if windowed && (window_start.is_none() || !layout.contains(&OutputColumn::WindowEnd)) {
            return Err(SqlError::new(
                "a window aggregate must GROUP BY window_start and window_end",
            )
            .with_hint("GROUP BY window_start, window_end, <keys>")
            .into());
        }
        let physical_input = input_schema.as_arrow().clone();
        let planning = PhysicalPlanningContext::default();
        let mut aggregates = Vec::new();
        let mut filters = Vec::new();
        for (j, expr) in agg.aggr_expr.iter().enumerate() {
            let name = agg.schema.field(agg.group_expr.len() + j).name().clone();
            let lowered = LoweredAggregateBuilder::new(
                expr,
                &input_schema,
                &physical_input,
                state.execution_props(),
                &planning,
            )
            .with_name(name)
            .build()?;
            if !lowered.order_bys.is_empty() {
                return Err(SqlError::new(
                    "an ordered aggregate (WITHIN GROUP / ORDER BY in an aggregate) is not supported on a stream yet",
                )
                .with_hint("drop the ordering").into());
            }
            layout.push(OutputColumn::Aggregate(j));
            aggregates.push(lowered.aggregate);
            filters.push(lowered.filter);
        }
        let spec = Arc::new(AggregateSpec {
            keys: physical_keys,
            key_fields,
            aggregates,
            filters,
        });
        let layout = Arc::new(
            OutputLayout::new(layout, Arc::new(agg.schema.as_arrow().clone()))
                .map_err(|e| SqlError::new(e.to_string()))?,
        );
        let key_columns = keys
            .iter()
            .map(|e| match e {
                Expr::Column(c) => input_schema.index_of_column(c).ok(),
                _ => None,
            })
            .collect();
        Ok(AggregateParts {
            spec,
            layout,
            key_names: keys.iter().map(display_expr).collect(),
            keys,
            key_columns,
            window_start,
            aggregates: agg
                .aggr_expr
                .iter()
                .map(display_expr)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

fn physical(
    state: &SessionState,
    expr: &Expr,
    schema: &DFSchema,
) -> Result<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
    state
        .create_physical_expr(expr.clone(), schema)
        .map_err(Into::into)
}
