//! `WindowAggregate`: a tumbling, hopping or cumulating window aggregate
//! (or, without a window, one that spans a bounded input and fires at its
//! end). In parallel and on event time it runs in two phases, as Flink
//! plans window aggregates: a local phase pre-aggregates each input
//! subtask's rows, an [`super::Exchange`] shuffles the partial state by key,
//! and a global phase merges it, so a hot key does not pin one subtask.

use std::sync::Arc;

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::LogicalPlan;
use weir_engine::aggregate::AggregateSpec;
use weir_engine::window::{AggregateMode, EmitStrategy, OutputLayout, SliceWindows, TimeSource};
use weir_engine::{NodeKind, Operator, OperatorFactory};

use super::{node_core, StreamProps, StreamingNode};
use crate::catalog::StreamDef;
use crate::error::Result;
use crate::lower::{late_output, Lowered, Lowering};

/// Which part of a window aggregate a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum Phase {
    /// All of it, in one operator.
    Single,
    /// Pre-aggregation per input subtask; emits partial state.
    Local,
    /// Merges the partial state of every local subtask.
    Global,
}

impl Phase {
    fn mode(self) -> AggregateMode {
        match self {
            Phase::Single => AggregateMode::Single,
            Phase::Local => AggregateMode::Partial,
            Phase::Global => AggregateMode::Final,
        }
    }

    fn operator_name(self) -> &'static str {
        match self {
            Phase::Single => "window aggregate",
            Phase::Local => "window aggregate (local)",
            Phase::Global => "window aggregate (global)",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct WindowAggregate {
    pub phase: Phase,
    pub windows: SliceWindows,
    pub time: TimeSource,
    /// Early and late firing; a window that fires more than once emits
    /// a changelog.
    pub emit: EmitStrategy,
    pub spec: Arc<AggregateSpec>,
    pub layout: Arc<OutputLayout>,
    /// Windows, time, keys and aggregates, as EXPLAIN shows them.
    pub describe: String,
    /// The stream whose late rows this window routes (the local or single
    /// phase sees them).
    pub stream: Option<Arc<StreamDef>>,
    pub schema: DFSchemaRef,
    pub props: StreamProps,
    pub inputs: Vec<LogicalPlan>,
}

node_core!(WindowAggregate, "WindowAggregate");

impl WindowAggregate {
    fn explain(&self) -> String {
        let phase = match self.phase {
            Phase::Single => "",
            Phase::Local => "local phase, ",
            Phase::Global => "global phase, ",
        };
        format!("{phase}{}", self.describe)
    }
}

impl StreamingNode for WindowAggregate {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let input = Lowered::single(inputs)?;
        let (phase, windows, time, emit) = (self.phase, self.windows, self.time, self.emit);
        let (spec, layout) = (self.spec.clone(), self.layout.clone());
        let factory: OperatorFactory = Arc::new(move |_| {
            Ok(Box::new(
                weir_engine::window::WindowAggregate::new(
                    phase.operator_name(),
                    phase.mode(),
                    windows,
                    spec.clone(),
                    time,
                    layout.clone(),
                )?
                .with_emit(emit),
            ) as Box<dyn Operator>)
        });
        let late = match (&self.stream, self.phase) {
            (Some(stream), Phase::Single | Phase::Local) => late_output(stream)?,
            _ => None,
        };
        Ok(lowering.add_node(
            input,
            self.phase.operator_name(),
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
