//! `SessionAggregate`: a session window aggregate, keyed by the session's
//! `PARTITION BY` columns (rows of one key merge into sessions; rows
//! exactly `gap` apart share one).

use std::sync::Arc;

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::LogicalPlan;
use weir_engine::aggregate::AggregateSpec;
use weir_engine::window::{OutputLayout, SessionWindowAggregate, TimeSource};
use weir_engine::{Millis, NodeKind, Operator, OperatorFactory};

use super::{node_core, StreamProps, StreamingNode};
use crate::catalog::StreamDef;
use crate::error::Result;
use crate::lower::{late_output, Lowered, Lowering};

#[derive(Debug, Clone)]
pub(crate) struct SessionAggregate {
    pub gap: Millis,
    pub spec: Arc<AggregateSpec>,
    /// Which of the group keys form the session key.
    pub partition: Vec<usize>,
    pub time: TimeSource,
    pub layout: Arc<OutputLayout>,
    pub describe: String,
    pub stream: Option<Arc<StreamDef>>,
    pub schema: DFSchemaRef,
    pub props: StreamProps,
    pub inputs: Vec<LogicalPlan>,
}

node_core!(SessionAggregate, "SessionAggregate");

impl SessionAggregate {
    fn explain(&self) -> String {
        self.describe.clone()
    }
}

impl StreamingNode for SessionAggregate {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let input = Lowered::single(inputs)?;
        let (gap, time) = (self.gap, self.time);
        let (spec, layout, partition) = (
            self.spec.clone(),
            self.layout.clone(),
            self.partition.clone(),
        );
        let factory: OperatorFactory = Arc::new(move |_| {
            Ok(Box::new(SessionWindowAggregate::new(
                "session window",
                gap,
                spec.clone(),
                partition.clone(),
                time,
                layout.clone(),
            )?) as Box<dyn Operator>)
        });
        let late = match &self.stream {
            Some(stream) => late_output(stream)?,
            None => None,
        };
        Ok(lowering.add_node(
            input,
            "session window aggregate",
            self.describe.clone(),
            NodeKind::Operator {
                factory,
                late_output: late,
            },
            self.schema.clone(),
            &self.props,
        ))
    }
}
