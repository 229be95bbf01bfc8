//! `OverAggregate`: aggregates `OVER (PARTITION BY ... ORDER BY ...
//! ROWS|RANGE ... PRECEDING)`, each input row with its frame's values.
//! Its input is shuffled by the partition keys.

use std::sync::Arc;

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan, SortExpr};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use weir_engine::operators::{OverAggregate as OverOperator, OverMode, OverSpec, Preceding};
use weir_engine::window::fmt_ms;
use weir_engine::{NodeKind, Operator, OperatorFactory};
use weir_sql::SqlError;

use super::{node_core, StreamProps, StreamingNode};
use crate::error::Result;
use crate::lower::{display_expr, late_output, Lowered, Lowering};

#[derive(Debug, Clone)]
pub(crate) struct OverAggregate {
    pub partition: Vec<Expr>,
    pub order: Vec<SortExpr>,
    /// `ROWS` rather than `RANGE`.
    pub rows: bool,
    pub preceding: Preceding,
    /// Each aggregate as an aggregate function call (the window's
    /// `OVER` taken off), with its output name.
    pub aggregates: Vec<(Expr, String)>,
    pub mode: OverMode,
    pub ttl: Option<std::time::Duration>,
    /// The stream whose late-data output takes late rows (event time).
    pub stream: Option<Arc<crate::catalog::StreamDef>>,
    pub schema: DFSchemaRef,
    pub props: StreamProps,
    pub inputs: Vec<LogicalPlan>,
}

node_core!(OverAggregate, "OverAggregate");

impl OverAggregate {
    fn explain(&self) -> String {
        let aggregates: Vec<String> = self
            .aggregates
            .iter()
            .map(|(e, _)| display_expr(e))
            .collect();
        let partition: Vec<String> = self.partition.iter().map(display_expr).collect();
        let order: Vec<String> = self
            .order
            .iter()
            .map(|s| {
                let direction = if s.asc { "ASC" } else { "DESC" };
                format!("{} {direction}", display_expr(&s.expr))
            })
            .collect();
        let units = if self.rows { "ROWS" } else { "RANGE" };
        let start = match self.preceding {
            Preceding::Unbounded => "UNBOUNDED".to_string(),
            Preceding::Rows(n) => n.to_string(),
            Preceding::Range(ms) => fmt_ms(ms),
        };
        let mode = match self.mode {
            OverMode::EventTime { .. } => "in event time, at the watermark",
            OverMode::ProcTime => "in processing time",
            OverMode::Updating { .. } => "updating",
        };
        let mut text = format!(
            "[{}] by [{}] order [{}] {units} {start} PRECEDING, {mode}",
            aggregates.join(", "),
            partition.join(", "),
            order.join(", ")
        );
        if let Some(ttl) = self.ttl {
            text.push_str(&format!(", state TTL {}", fmt_ms(ttl.as_millis() as i64)));
        }
        text
    }
}

impl StreamingNode for OverAggregate {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let input = Lowered::single(inputs)?;
        let partition = lowering.physical_all(&self.partition, &input.schema)?;
        let order = lowering.sort_keys(&self.order, &input.schema)?;
        let physical_input = input.schema.as_arrow().clone();
        let planning = PhysicalPlanningContext::default();
        let aggregates = self
            .aggregates
            .iter()
            .map(|(expr, name)| {
                let lowered = LoweredAggregateBuilder::new(
                    expr,
                    &input.schema,
                    &physical_input,
                    lowering.state.execution_props(),
                    &planning,
                )
                .with_name(name.clone())
                .build()?;
                if lowered.filter.is_some() {
                    return Err(SqlError::new(
                        "FILTER (WHERE ...) in an OVER aggregate is not supported",
                    )
                    .with_hint("use CASE WHEN ... THEN x END inside the aggregate")
                    .into());
                }
                Ok(lowered.aggregate)
            })
            .collect::<Result<Vec<_>>>()?;
        let spec = Arc::new(OverSpec {
            partition,
            order,
            rows: self.rows,
            preceding: self.preceding,
            aggregates,
            input: Arc::new(physical_input),
            output: Arc::new(self.schema.as_arrow().clone()),
            mode: self.mode.clone(),
            ttl: self.ttl,
        });
        let late = match (&self.stream, &self.mode) {
            (Some(stream), OverMode::EventTime { .. }) => late_output(stream)?,
            _ => None,
        };
        let factory: OperatorFactory = Arc::new(move |_| {
            Ok(Box::new(OverOperator::new("over aggregate", spec.clone())?) as Box<dyn Operator>)
        });
        Ok(lowering.add_node(
            input,
            "over aggregate",
            self.explain(),
            NodeKind::Operator {
                factory,
                late_output: late,
            },
            self.schema.clone(),
            &self.props,
        ))
    }
}

/// The aggregate function call of a window function over an aggregate.
pub(crate) fn as_aggregate_call(
    window: &datafusion::logical_expr::expr::WindowFunction,
) -> Option<Expr> {
    let datafusion::logical_expr::WindowFunctionDefinition::AggregateUDF(udaf) = &window.fun else {
        return None;
    };
    let params = &window.params;
    Some(Expr::AggregateFunction(AggregateFunction::new_udf(
        udaf.clone(),
        params.args.clone(),
        params.distinct,
        params.filter.clone(),
        Vec::new(),
        params.null_treatment,
    )))
}
