//! `LookupJoin`: each probe row joined with a table read whole
//! ([`crate::lookup`]). Stateless between rows, so it runs at the probe
//! side's parallelism with no shuffle.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, LogicalPlan};
use weir_engine::operators::{LookupJoin as LookupOperator, LookupSpec};
use weir_engine::window::fmt_ms;
use weir_engine::{NodeKind, Operator, OperatorFactory};

use super::{node_core, StreamProps, StreamingNode};
use crate::catalog::StreamDef;
use crate::error::Result;
use crate::lookup::PlanLookupTable;
use crate::lower::{join_condition_text, Lowered, Lowering};

#[derive(Debug, Clone)]
pub(crate) struct LookupJoin {
    pub probe_keys: Vec<Expr>,
    pub table_keys: Vec<Expr>,
    /// `LEFT`: a probe row without a match is padded with NULLs.
    pub left: bool,
    /// Conditions besides the keys, on the joined row.
    pub residual: Option<Vec<Expr>>,
    /// The table's side of the join, as DataFusion planned it.
    pub table_plan: LogicalPlan,
    pub table: Arc<StreamDef>,
    pub ttl: Duration,
    pub schema: DFSchemaRef,
    pub props: StreamProps,
    pub inputs: Vec<LogicalPlan>,
}

node_core!(LookupJoin, "LookupJoin");

impl LookupJoin {
    fn explain(&self) -> String {
        format!(
            "{} lookup of '{}' on {}, read again after {}",
            if self.left { "left" } else { "inner" },
            self.table.name,
            join_condition_text(
                self.probe_keys.iter().zip(&self.table_keys),
                self.residual.as_deref()
            ),
            fmt_ms(self.ttl.as_millis() as i64)
        )
    }
}

impl StreamingNode for LookupJoin {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let input = Lowered::single(inputs)?;
        let table_schema = self.table_plan.schema();
        let probe_keys = lowering.physical_all(&self.probe_keys, &input.schema)?;
        let table_keys = lowering.physical_all(&self.table_keys, table_schema)?;
        let residual = self
            .residual
            .clone()
            .and_then(conjunction)
            .map(|e| lowering.physical(&e, &self.schema))
            .transpose()?;
        let spec = Arc::new(LookupSpec {
            probe_keys,
            table_keys,
            table_schema: Arc::new(table_schema.as_arrow().clone()),
            left: self.left,
            residual,
            output: Arc::new(self.schema.as_arrow().clone()),
            ttl: self.ttl,
            table: Arc::new(PlanLookupTable {
                table: self.table.clone(),
                plan: self.table_plan.clone(),
                state: lowering.state.clone(),
            }),
        });
        let factory: OperatorFactory = Arc::new(move |_| {
            Ok(Box::new(LookupOperator::new("lookup join", spec.clone())?) as Box<dyn Operator>)
        });
        Ok(lowering.add_node(
            input,
            "lookup join",
            self.explain(),
            NodeKind::Operator {
                factory,
                late_output: None,
            },
            self.schema.clone(),
            &self.props,
        ))
    }
}
