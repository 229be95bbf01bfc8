//! `Exchange`: where rows move between subtasks. With keys, each row goes
//! to the subtask its keys hash to (every row of a key meets in one
//! subtask); without, all rows gather in one. It is an edge of the
//! operator graph, not an operator.

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::LogicalPlan;
use weir_engine::EdgeKind;

use super::{node_core, StreamProps, StreamingNode};
use crate::error::Result;
use crate::lower::{Lowered, Lowering};

#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    /// The input columns to hash; empty to gather into one subtask.
    pub keys: Vec<usize>,
    /// The keys as EXPLAIN shows them.
    pub names: Vec<String>,
    pub schema: DFSchemaRef,
    /// `parallelism` is that of the operator the rows go to.
    pub props: StreamProps,
    pub inputs: Vec<LogicalPlan>,
}

node_core!(Exchange, "Exchange");

impl Exchange {
    fn explain(&self) -> String {
        if self.keys.is_empty() {
            "gather into one subtask".to_string()
        } else {
            format!("hash by [{}]", self.names.join(", "))
        }
    }
}

impl StreamingNode for Exchange {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, inputs: Vec<Lowered>, _lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let input = Lowered::single(inputs)?;
        let target = self.props.parallelism;
        let edge = if !self.keys.is_empty() && (target > 1 || input.parallelism > 1) {
            EdgeKind::Shuffle {
                keys: self.keys.clone(),
                names: self.names.clone(),
            }
        } else if input.parallelism == target {
            EdgeKind::Forward
        } else {
            EdgeKind::Rebalance
        };
        Ok(Lowered {
            parallelism: target,
            edge: Some(edge),
            ..input
        })
    }
}
