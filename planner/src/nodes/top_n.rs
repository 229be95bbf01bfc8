//! `TopN`: `ROW_NUMBER()` (or `RANK()`, `DENSE_RANK()`) `OVER (PARTITION
//! BY ... ORDER BY ...)` filtered by the rank: Flink's Top-N, window Top-N
//! and deduplication. Its input is shuffled by the partition keys.

use std::sync::Arc;

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::{Expr, LogicalPlan, SortExpr};
use weir_engine::operators::{RankFunction, RankMode, RankSpec, TopN as TopNOperator};
use weir_engine::{NodeKind, Operator, OperatorFactory};

use super::{node_core, StreamProps, StreamingNode};
use crate::error::Result;
use crate::lower::{display_expr, late_output, Lowered, Lowering};

#[derive(Debug, Clone)]
pub(crate) struct TopN {
    pub partition: Vec<Expr>,
    pub order: Vec<SortExpr>,
    pub limit: usize,
    pub function: RankFunction,
    /// Whether the rank is an output column (the last).
    pub emit_rank: bool,
    /// Keep-last deduplication: of equal times the later row wins.
    pub later_wins: bool,
    pub mode: RankMode,
    /// The stream whose late-data output takes late rows (window modes).
    pub stream: Option<Arc<crate::catalog::StreamDef>>,
    pub schema: DFSchemaRef,
    pub props: StreamProps,
    pub inputs: Vec<LogicalPlan>,
}

node_core!(TopN, "TopN");

impl TopN {
    fn explain(&self) -> String {
        let function = match self.function {
            RankFunction::RowNumber => "ROW_NUMBER",
            RankFunction::Rank => "RANK",
            RankFunction::DenseRank => "DENSE_RANK",
        };
        let partition: Vec<String> = self.partition.iter().map(display_expr).collect();
        let order: Vec<String> = self
            .order
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    display_expr(&s.expr),
                    if s.asc { "ASC" } else { "DESC" }
                )
            })
            .collect();
        let mode = match &self.mode {
            RankMode::Updating {
                deduplicate: true, ..
            } => "deduplicate, updating".to_string(),
            RankMode::Updating { .. } => "updating".to_string(),
            RankMode::Window {
                window_end: Some(_),
            } => "per window, at its close".to_string(),
            RankMode::Window { window_end: None } => "at the end of the bounded input".to_string(),
            RankMode::KeepFirst { .. } => {
                "deduplicate keeping the first row, at the watermark".to_string()
            }
        };
        let mut text = format!(
            "{function} <= {} by [{}] order [{}], {mode}",
            self.limit,
            partition.join(", "),
            order.join(", ")
        );
        if !self.emit_rank {
            text.push_str(", rank not shown");
        }
        let ttl = match &self.mode {
            RankMode::Updating { ttl, .. } | RankMode::KeepFirst { ttl, .. } => *ttl,
            RankMode::Window { .. } => None,
        };
        if let Some(ttl) = ttl {
            text.push_str(&format!(
                ", state TTL {}",
                weir_engine::window::fmt_ms(ttl.as_millis() as i64)
            ));
        }
        text
    }
}

impl StreamingNode for TopN {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let input = Lowered::single(inputs)?;
        let partition = lowering.physical_all(&self.partition, &input.schema)?;
        let order = lowering.sort_keys(&self.order, &input.schema)?;
        let spec = Arc::new(RankSpec {
            partition,
            order,
            limit: self.limit,
            function: self.function,
            emit_rank: self.emit_rank,
            later_wins: self.later_wins,
            input: Arc::new(input.schema.as_arrow().clone()),
            output: Arc::new(self.schema.as_arrow().clone()),
            mode: self.mode.clone(),
        });
        let late = match (&self.stream, &self.mode) {
            (Some(stream), RankMode::Window { .. } | RankMode::KeepFirst { .. }) => {
                late_output(stream)?
            }
            _ => None,
        };
        let factory: OperatorFactory = Arc::new(move |_| {
            Ok(Box::new(TopNOperator::new("top n", spec.clone())?) as Box<dyn Operator>)
        });
        Ok(lowering.add_node(
            input,
            "top n",
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
