//! The one trait every operator implements, and the context it runs in.
//!
//! Operators are synchronous and single-threaded per subtask. The runtime
//! owns everything around them: channels, watermark merging, barrier
//! alignment, timers and metrics. An operator only turns input into output
//! through [`OperatorContext`].

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::message::Millis;
use crate::metrics::SubtaskMetrics;
use crate::state::StateSnapshot;

/// Which copy of an operator this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubtaskInfo {
    pub index: usize,
    pub parallelism: usize,
}

/// What an operator may do while handling one input.
pub struct OperatorContext<'a> {
    pub(crate) output: &'a mut Vec<RecordBatch>,
    pub(crate) late: &'a mut Vec<RecordBatch>,
    pub(crate) watermark: Millis,
    pub(crate) metrics: &'a Arc<SubtaskMetrics>,
    pub(crate) call_again: bool,
}

/// Rows an operator should emit from one call before yielding with
/// [`OperatorContext::call_again`], so output is sent (and backpressured)
/// in bounded pieces instead of piling up.
pub const OUTPUT_ROWS_PER_CALL: usize = 64 * 1024;

impl<'a> OperatorContext<'a> {
    /// Sends `batch` downstream (after the operator call returns).
    pub fn emit(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.output.push(batch);
        }
    }

    /// Sends rows that arrived too late for their window to the stream's
    /// late-data output, and counts them.
    pub fn emit_late(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.metrics.add_late_rows(batch.num_rows() as u64);
            self.late.push(batch);
        }
    }

    /// Counts rows that were late but are not available as rows (for
    /// example pre-aggregated partial state).
    pub fn count_late(&mut self, rows: u64) {
        self.metrics.add_late_rows(rows);
    }

    /// The merged input watermark before the current call.
    pub fn watermark(&self) -> Millis {
        self.watermark
    }

    /// Records the keys of input rows for hot-key detection.
    pub fn observe_keys(&mut self, keys: &[datafusion::arrow::array::ArrayRef]) {
        if self.metrics.detailed && !keys.is_empty() {
            self.metrics.hot_keys.lock().offer(keys);
        }
    }

    /// Records how long after its end a window was emitted.
    pub fn observe_window_emit(&mut self, window_end: Millis) {
        if !self.metrics.detailed {
            return;
        }
        let late_by = crate::message::now_millis()
            .saturating_sub(window_end)
            .max(0) as u64;
        self.metrics
            .event_time_latency
            .observe_micros(late_by.saturating_mul(1000));
    }

    /// Whether this call has emitted enough to yield.
    pub fn is_full(&self) -> bool {
        self.output.iter().map(|b| b.num_rows()).sum::<usize>() >= OUTPUT_ROWS_PER_CALL
    }

    /// Asks the runtime to send what was emitted and then make the same
    /// call (watermark, timer or end) again: the operator has more to emit.
    pub fn call_again(&mut self) {
        self.call_again = true;
    }
}

/// How big an operator's state is, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    pub rows: u64,
    pub bytes: u64,
    /// An operator with two inputs (a join): each side's part.
    pub sides: Option<[SideState; 2]>,
}

/// The state one input side of a join keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideState {
    pub rows: u64,
    pub bytes: u64,
}

/// A streaming operator: one subtask's logic.
///
/// The runtime calls the methods from one task, never concurrently.
/// Watermarks are forwarded downstream by the runtime after
/// [`Operator::on_watermark`] returns, so output emitted there is never
/// late for the next operator.
pub trait Operator: Send {
    /// A short name for EXPLAIN, metrics and errors.
    fn name(&self) -> &str;

    /// Handles a batch of rows.
    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()>;

    /// Handles a batch from input `side`, the position of its edge among
    /// the node's inputs. Operators with two inputs (joins) override this;
    /// the rest see every batch through [`Operator::on_batch`].
    fn on_side_batch(
        &mut self,
        side: usize,
        batch: RecordBatch,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        let _ = side;
        self.on_batch(batch, ctx)
    }

    /// How far behind its input watermark this operator's output time may
    /// be: rows it emits later can carry times down to the input watermark
    /// minus this (an interval join's bound). The runtime holds back the
    /// watermark it forwards, and the one operators after it see, by this.
    /// Read once, when the operator is chained: it must not change.
    fn watermark_delay(&self) -> Millis {
        0
    }

    /// The merged input watermark advanced to `watermark`.
    fn on_watermark(&mut self, _watermark: Millis, _ctx: &mut OperatorContext<'_>) -> Result<()> {
        Ok(())
    }

    /// How often the runtime should call [`Operator::on_timer`], if at all
    /// (processing-time operators).
    fn timer_interval(&self) -> Option<Duration> {
        None
    }

    /// Called every [`Operator::timer_interval`] with the wall clock.
    fn on_timer(&mut self, _now: Millis, _ctx: &mut OperatorContext<'_>) -> Result<()> {
        Ok(())
    }

    /// A checkpoint barrier arrived on every input: return the state to keep.
    /// Output emitted here goes downstream *before* the barrier.
    fn snapshot(&mut self, _ctx: &mut OperatorContext<'_>) -> Result<StateSnapshot> {
        Ok(StateSnapshot::default())
    }

    /// Restores state from a snapshot taken by [`Operator::snapshot`].
    fn restore(&mut self, _state: StateSnapshot) -> Result<()> {
        Ok(())
    }

    /// Every input ended: emit what is left.
    fn on_end(&mut self, _ctx: &mut OperatorContext<'_>) -> Result<()> {
        Ok(())
    }

    /// The size of the state this operator keeps.
    fn state_size(&self) -> StateSize {
        StateSize::default()
    }
}

/// Builds one operator per subtask.
pub type OperatorFactory = Arc<dyn Fn(SubtaskInfo) -> Result<Box<dyn Operator>> + Send + Sync>;
