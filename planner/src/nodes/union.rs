//! `Union`: `UNION ALL` of streams, each input connected as is (rows keep
//! their subtask; no shuffle). Its watermark is the minimum of the
//! inputs'; it is bounded when they all are, and a changelog when one is.

use std::sync::Arc;

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::LogicalPlan;
use weir_engine::operators::Union as UnionOperator;
use weir_engine::NodeKind;

use super::{node_core, StreamProps, StreamingNode};
use crate::error::Result;
use crate::lower::{op_factory, Lowered, Lowering};

#[derive(Debug, Clone)]
pub(crate) struct Union {
    pub schema: DFSchemaRef,
    pub props: StreamProps,
    pub inputs: Vec<LogicalPlan>,
}

node_core!(Union, "Union");

impl Union {
    fn explain(&self) -> String {
        format!("all rows of {} inputs", self.inputs.len())
    }
}

impl StreamingNode for Union {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let operator = UnionOperator::new(Arc::new(self.schema.as_arrow().clone()));
        Ok(lowering.add_node_after(
            inputs,
            "union",
            self.explain(),
            NodeKind::Operator {
                factory: op_factory(operator),
                late_output: None,
            },
            self.schema.clone(),
            &self.props,
        ))
    }
}
