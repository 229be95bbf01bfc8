//! `UpdatingAggregate`: Flink's non-windowed `GROUP BY` on an unbounded
//! stream or a changelog. Its result is a changelog keyed by the group
//! keys (retractions included when a consumer needs them); a key idle for
//! the state TTL is dropped.

use std::sync::Arc;

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::LogicalPlan;
use weir_engine::aggregate::AggregateSpec;
use weir_engine::operators::AggregateOptions;
use weir_engine::window::OutputLayout;
use weir_engine::{NodeKind, Operator, OperatorFactory};

use super::{node_core, StreamProps, StreamingNode};
use crate::error::Result;
use crate::lower::{Lowered, Lowering};

#[derive(Debug, Clone)]
pub(crate) struct UpdatingAggregate {
    pub options: AggregateOptions,
    pub spec: Arc<AggregateSpec>,
    pub layout: Arc<OutputLayout>,
    pub describe: String,
    pub schema: DFSchemaRef,
    pub props: StreamProps,
    pub inputs: Vec<LogicalPlan>,
}

node_core!(UpdatingAggregate, "UpdatingAggregate");

impl UpdatingAggregate {
    fn explain(&self) -> String {
        self.describe.clone()
    }
}

impl StreamingNode for UpdatingAggregate {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let input = Lowered::single(inputs)?;
        let (spec, layout, options) = (self.spec.clone(), self.layout.clone(), self.options);
        let factory: OperatorFactory = Arc::new(move |_| {
            Ok(Box::new(weir_engine::operators::UpdatingAggregate::new(
                "updating aggregate",
                spec.clone(),
                layout.clone(),
                options,
            )?) as Box<dyn Operator>)
        });
        Ok(lowering.add_node(
            input,
            "updating aggregate",
            self.describe.clone(),
            NodeKind::Operator {
                factory,
                late_output: None,
            },
            self.schema.clone(),
            &self.props,
        ))
    }
}
