//! Operators chained in one task: the output of one is the input of the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::graph::NodeId;
use crate::message::{hold_back, Millis, NO_WATERMARK};
use crate::metrics::SubtaskMetrics;
use crate::operator::{Operator, OperatorContext};
use crate::row_watermark::strip;
use crate::source::DeadLetterSink;
use crate::state::StateSnapshot;

pub(crate) struct ChainedOperator {
    pub node: NodeId,
    pub operator: Box<dyn Operator>,
    pub metrics: Arc<SubtaskMetrics>,
    pub late_output: Option<Arc<dyn DeadLetterSink>>,
}

/// What a call into the chain produced.
#[derive(Default)]
pub(crate) struct Emitted {
    pub batches: Vec<RecordBatch>,
    /// Late rows and the index of the operator that rejected them.
    pub late: Vec<(usize, RecordBatch)>,
    /// An operator has more to emit: deliver this, then repeat the call.
    pub call_again: bool,
}

pub(crate) struct Chain {
    ops: Vec<ChainedOperator>,
    /// Per operator, the sum of the watermark delays of those before it;
    /// one more entry for the chain's output.
    delays: Vec<Millis>,
    subtask: usize,
    watermark: Millis,
}

impl Chain {
    pub(crate) fn new(ops: Vec<ChainedOperator>, subtask: usize) -> Self {
        let delays = std::iter::once(0)
            .chain(ops.iter().scan(0, |sum: &mut Millis, o| {
                *sum = sum.saturating_add(o.operator.watermark_delay());
                Some(*sum)
            }))
            .collect();
        Chain {
            ops,
            delays,
            subtask,
            watermark: NO_WATERMARK,
        }
    }

    /// The watermark the chain forwards when its input is at `watermark`:
    /// held back by the delays of all its operators.
    pub(crate) fn output_watermark(&self, watermark: Millis) -> Millis {
        hold_back(watermark, self.delays[self.ops.len()])
    }

    /// The shortest timer interval any chained operator asks for.
    pub(crate) fn timer_interval(&self) -> Option<Duration> {
        self.ops
            .iter()
            .filter_map(|o| o.operator.timer_interval())
            .min()
    }

    /// Feeds `input` through the chain; at each operator, after its input
    /// batches, `action` runs (a watermark, a timer, a snapshot, the end).
    fn apply(
        &mut self,
        side: usize,
        input: Vec<RecordBatch>,
        mut action: impl FnMut(usize, &mut dyn Operator, &mut OperatorContext<'_>) -> Result<()>,
        refresh_state: bool,
    ) -> Result<Emitted> {
        let mut carry = input;
        let mut emitted = Emitted::default();
        for (index, op) in self.ops.iter_mut().enumerate() {
            // Only the head has several inputs; chained operators have one.
            let side = if index == 0 { side } else { 0 };
            let mut output = Vec::new();
            let mut late = Vec::new();
            let name = op.operator.name().to_string();
            {
                let mut ctx = OperatorContext {
                    output: &mut output,
                    late: &mut late,
                    watermark: hold_back(self.watermark, self.delays[index]),
                    metrics: &op.metrics,
                    call_again: false,
                };
                for batch in carry.drain(..) {
                    op.metrics.add_input(batch.num_rows());
                    op.metrics.add_bytes(batch.get_array_memory_size(), 0);
                    let started = op.metrics.detailed.then(Instant::now);
                    op.operator
                        .on_side_batch(side, batch, &mut ctx)
                        .map_err(|e| e.in_operator(&name, self.subtask))?;
                    if let Some(started) = started {
                        let took = started.elapsed();
                        op.metrics.processing.observe(took);
                        op.metrics.add_busy(took);
                    }
                }
                // Operators after one that has more to emit wait for all of
                // it before they see the watermark (or timer, or end).
                if !emitted.call_again {
                    action(index, op.operator.as_mut(), &mut ctx)
                        .map_err(|e| e.in_operator(&name, self.subtask))?;
                    emitted.call_again = ctx.call_again;
                }
            }
            for batch in &output {
                op.metrics.add_output(batch.num_rows());
                op.metrics.add_bytes(0, batch.get_array_memory_size());
            }
            if refresh_state {
                op.metrics.set_state_size(op.operator.state_size());
            }
            emitted.late.extend(late.into_iter().map(|b| (index, b)));
            carry = output;
        }
        emitted.batches = carry;
        Ok(emitted)
    }

    /// A batch from input `side` of the chain's head.
    pub(crate) fn on_batch(&mut self, side: usize, batch: RecordBatch) -> Result<Emitted> {
        self.apply(side, vec![batch], |_, _, _| Ok(()), false)
    }

    pub(crate) fn on_watermark(&mut self, watermark: Millis) -> Result<Emitted> {
        let at: Vec<Millis> = self
            .delays
            .iter()
            .map(|d| hold_back(watermark, *d))
            .collect();
        let emitted = self.apply(
            0,
            Vec::new(),
            |index, op, ctx| op.on_watermark(at[index], ctx),
            true,
        )?;
        self.watermark = watermark;
        for (op, at) in self.ops.iter().zip(&at) {
            op.metrics.set_watermark(*at);
        }
        Ok(emitted)
    }

    /// The clock ticks for the operators that asked for a timer
    /// ([`Operator::timer_interval`]); the others of the chain only pass on
    /// what those emit. (An event-time window told the wall-clock time would
    /// take it for its watermark.)
    pub(crate) fn on_timer(&mut self, now: Millis) -> Result<Emitted> {
        self.apply(
            0,
            Vec::new(),
            |_, op, ctx| match op.timer_interval() {
                Some(_) => op.on_timer(now, ctx),
                None => Ok(()),
            },
            true,
        )
    }

    pub(crate) fn on_end(&mut self) -> Result<Emitted> {
        self.apply(0, Vec::new(), |_, op, ctx| op.on_end(ctx), true)
    }

    /// Snapshots every operator, in chain order.
    pub(crate) fn snapshot(&mut self) -> Result<(Emitted, Vec<(NodeId, StateSnapshot)>)> {
        let nodes: Vec<NodeId> = self.ops.iter().map(|o| o.node).collect();
        let mut states = Vec::with_capacity(nodes.len());
        let emitted = self.apply(
            0,
            Vec::new(),
            |index, op, ctx| {
                states.push((nodes[index], op.snapshot(ctx)?));
                Ok(())
            },
            true,
        )?;
        Ok((emitted, states))
    }

    /// Where each late batch goes: the late-data output of the operator
    /// that rejected it (rows were counted when emitted).
    pub(crate) fn late_targets(
        &self,
        late: Vec<(usize, RecordBatch)>,
    ) -> Vec<(Arc<dyn DeadLetterSink>, String, RecordBatch)> {
        late.into_iter()
            .filter_map(|(index, batch)| {
                let op = self.ops.get(index)?;
                let sink = op.late_output.clone()?;
                let reason = format!(
                    "late: its window had already fired in {}",
                    op.operator.name()
                );
                Some((sink, reason, strip(&batch)))
            })
            .collect()
    }
}
