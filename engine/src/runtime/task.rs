//! The loops that run one subtask: a source subtask and a channel-fed one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::mpsc::{Receiver, Sender};
use tokio::sync::watch;

use super::chain::{Chain, Emitted};
use super::inputs::{InputEvent, Inputs};
use super::output::Output;
use super::watermarks::WatermarkGenerator;
use super::{SnapshotAck, SourceControl};
use crate::error::Result;
use crate::graph::NodeId;
use crate::message::{now_millis, Barrier, CheckpointId, Watermark, FINAL_WATERMARK};
use crate::metrics::{SplitMetrics, SubtaskMetrics};
use crate::operators::Projection;
use crate::source::FINAL_CHECKPOINT;
use crate::source::{Source, SourcePoll, SplitId};

/// Everything a subtask needs besides its input.
pub(crate) struct SubtaskParts {
    pub chain: Chain,
    pub output: Output,
    pub subtask: usize,
    pub acks: Option<Sender<SnapshotAck>>,
    /// A coordinator takes checkpoints (and the final one at the end).
    pub checkpointing: bool,
    /// The last completed checkpoint, from the coordinator.
    pub commits: watch::Receiver<CheckpointId>,
    /// The alignment time of the barrier being handled.
    pub alignment_ms: u64,
}

impl SubtaskParts {
    async fn deliver(&mut self, emitted: Emitted) -> Result<()> {
        for (sink, reason, rows) in self.chain.late_targets(emitted.late) {
            sink.write_rows(&reason, &rows).await?;
        }
        self.output.send_batches(emitted.batches).await
    }

    /// Makes a call on the chain and delivers what it emits, again while
    /// an operator has more to emit (see `OperatorContext::call_again`).
    async fn until_done(&mut self, call: impl Fn(&mut Chain) -> Result<Emitted>) -> Result<()> {
        loop {
            let emitted = call(&mut self.chain)?;
            let again = emitted.call_again;
            self.deliver(emitted).await?;
            if !again {
                return Ok(());
            }
        }
    }

    async fn watermark(&mut self, watermark: Watermark) -> Result<()> {
        let watermark = match watermark {
            Watermark::EventTime(t) => {
                self.until_done(|chain| chain.on_watermark(t)).await?;
                Watermark::EventTime(self.chain.output_watermark(t))
            }
            other => other,
        };
        self.output.send_watermark(watermark).await
    }

    async fn barrier(
        &mut self,
        barrier: Barrier,
        mut states: Vec<(NodeId, crate::state::StateSnapshot)>,
    ) -> Result<()> {
        let (emitted, chain_states) = self.chain.snapshot()?;
        self.deliver(emitted).await?;
        states.extend(chain_states);
        // Downstream gets the barrier before this subtask reports, so
        // alignment there does not wait on the report.
        states.extend(self.output.send_barrier(barrier).await?);
        self.acknowledge(barrier.checkpoint_id, states).await;
        Ok(())
    }

    async fn acknowledge(
        &mut self,
        checkpoint_id: CheckpointId,
        states: Vec<(NodeId, crate::state::StateSnapshot)>,
    ) {
        if let Some(acks) = &self.acks {
            let ack = SnapshotAck {
                checkpoint_id,
                subtask: self.subtask,
                alignment_ms: std::mem::take(&mut self.alignment_ms),
                states,
            };
            // The coordinator went away: the job is stopping.
            let _ = acks.send(ack).await;
        }
    }

    /// Commits what the newest completed checkpoint covers, if it changed.
    async fn commit_completed(&mut self) -> Result<()> {
        if self.commits.has_changed().unwrap_or(false) {
            let id = *self.commits.borrow_and_update();
            self.output.commit(id).await?;
        }
        Ok(())
    }

    async fn timer(&mut self) -> Result<()> {
        let now = now_millis();
        self.until_done(|chain| chain.on_timer(now)).await
    }

    /// The end of input: fire what is left, take the final snapshot, and
    /// (for a sink) commit once the final checkpoint is durable.
    async fn end(
        &mut self,
        drain: bool,
        mut states: Vec<(NodeId, crate::state::StateSnapshot)>,
    ) -> Result<()> {
        if drain {
            self.watermark(Watermark::EventTime(FINAL_WATERMARK))
                .await?;
        }
        self.until_done(Chain::on_end).await?;
        if self.output.is_sink() {
            let final_barrier = Barrier {
                checkpoint_id: FINAL_CHECKPOINT,
                injected_at: now_millis(),
            };
            states.extend(self.output.send_barrier(final_barrier).await?);
        }
        if self.checkpointing {
            let (_, chain_states) = self.chain.snapshot()?;
            states.extend(chain_states);
            self.acknowledge(FINAL_CHECKPOINT, states).await;
            if self.output.is_sink() {
                // Visible only once the final checkpoint is written; if the
                // coordinator is gone, the job failed: nothing is committed.
                let mut commits = self.commits.clone();
                if commits
                    .wait_for(|id| *id == FINAL_CHECKPOINT)
                    .await
                    .is_err()
                {
                    return Err(crate::error::EngineError::Cancelled);
                }
            }
        }
        self.output.commit(FINAL_CHECKPOINT).await?;
        self.output.end().await
    }
}

/// Runs a subtask fed by channels until every input has ended.
pub(crate) async fn run_channel_subtask(mut inputs: Inputs, mut parts: SubtaskParts) -> Result<()> {
    parts.output.restore().await?;
    let mut ticker = parts.chain.timer_interval().map(tokio::time::interval);
    let mut flusher = parts.output.flush_interval().map(tokio::time::interval);
    let watch_commits = parts.output.is_sink() && parts.checkpointing;
    let mut commits = parts.commits.clone();
    loop {
        let event = tokio::select! {
            event = inputs.next() => event,
            _ = tick(&mut ticker) => {
                parts.timer().await?;
                continue;
            }
            _ = tick(&mut flusher) => {
                parts.output.flush().await?;
                continue;
            }
            changed = commits.changed(), if watch_commits => {
                if changed.is_ok() {
                    parts.commit_completed().await?;
                }
                continue;
            }
        };
        match event {
            None => return Ok(()),
            Some(InputEvent::Batch(side, batch)) => {
                let emitted = parts.chain.on_batch(side, batch)?;
                parts.deliver(emitted).await?;
            }
            Some(InputEvent::Watermark(w)) => parts.watermark(w).await?,
            Some(InputEvent::Marker(m)) => parts.output.send_marker(m).await?,
            Some(InputEvent::Barrier(b)) => {
                parts.alignment_ms = inputs.last_alignment_ms;
                parts.barrier(b, Vec::new()).await?
            }
            Some(InputEvent::End) => return parts.end(false, Vec::new()).await,
        }
    }
}

/// The next tick, or never without a ticker.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A source subtask: the connector, its computed columns and watermarks.
pub(crate) struct SourceSubtask {
    /// How often to inject a latency marker.
    pub markers: Option<Duration>,
    pub node: NodeId,
    pub source: Box<dyn Source>,
    pub computed: Vec<Arc<Projection>>,
    pub watermarks: WatermarkGenerator,
    pub metrics: Arc<SubtaskMetrics>,
    pub job_metrics: Arc<crate::metrics::JobMetrics>,
    pub splits: std::collections::HashMap<SplitId, Arc<SplitMetrics>>,
    pub control: Receiver<SourceControl>,
}

impl SourceSubtask {
    /// A batch as read, with its computed columns and row watermarks, and
    /// counted in the split's metrics.
    fn prepare(&mut self, split: SplitId, batch: RecordBatch) -> Result<RecordBatch> {
        let mut batch = batch;
        for projection in &self.computed {
            batch = projection.project(&batch)?;
        }
        let batch = if self.source.carries_row_watermarks() {
            batch
        } else {
            self.watermarks.assign(split, &batch)?
        };
        self.metrics.add_output(batch.num_rows());
        let split_metrics = self.split_metrics(split);
        split_metrics.add_rows(
            batch.num_rows(),
            batch.get_array_memory_size(),
            now_millis(),
        );
        if let Some(w) = self.watermarks.split_watermark(split) {
            split_metrics.set_watermark(w);
        }
        Ok(batch)
    }

    /// Sends the source's watermark downstream if it moved.
    async fn advance_watermark(&mut self, parts: &mut SubtaskParts) -> Result<()> {
        if let Some(w) = self.watermarks.update(Instant::now()) {
            if let Watermark::EventTime(t) = w {
                self.metrics.set_watermark(t);
            }
            parts.watermark(w).await?;
        }
        Ok(())
    }

    fn split_metrics(&mut self, split: SplitId) -> Arc<SplitMetrics> {
        if let Some(m) = self.splits.get(&split) {
            return m.clone();
        }
        let m = Arc::new(SplitMetrics::new(
            self.node,
            self.metrics.subtask,
            self.source.split_name(split),
        ));
        self.job_metrics.register_split(m.clone());
        self.splits.insert(split, m.clone());
        m
    }

    /// The source's positions plus its splits' watermarks.
    fn snapshot(&mut self) -> Result<crate::state::StateSnapshot> {
        let mut state = self.source.snapshot()?;
        state.tables.push(self.watermarks.snapshot()?);
        Ok(state)
    }

    /// Refreshes every split's lag from the source.
    fn refresh_lags(&self) {
        for (split, m) in &self.splits {
            if let Some(lag) = self.source.lag(*split) {
                m.set_lag(lag);
            }
            if let Some(position) = self.source.position(*split) {
                m.set_position(position);
            }
        }
    }
}

/// Runs a source subtask until its source ends or it is told to stop.
pub(crate) async fn run_source_subtask(
    mut src: SourceSubtask,
    mut parts: SubtaskParts,
) -> Result<()> {
    parts.output.restore().await?;
    let timer = parts.chain.timer_interval();
    let mut last_timer = Instant::now();
    let idle_check = src
        .watermarks
        .idle_check()
        .map(|d| d.min(Duration::from_millis(200)));
    let mut last_idle_check = Instant::now();
    let mut last_lag = Instant::now();
    let mut last_marker = Instant::now();
    let flush = parts.output.flush_interval();
    let mut last_flush = Instant::now();
    for split in src.source.splits() {
        src.split_metrics(split);
    }
    // The restored watermark goes out before any row: the channels
    // downstream start without one, and a split restored at its end may
    // never bring another row to move it.
    src.advance_watermark(&mut parts).await?;
    loop {
        if flush.is_some_and(|f| last_flush.elapsed() >= f) {
            last_flush = Instant::now();
            parts.output.flush().await?;
        }
        if src.markers.is_some_and(|m| last_marker.elapsed() >= m) {
            last_marker = Instant::now();
            let marker = crate::message::LatencyMarker {
                source: src.node,
                created: last_marker,
            };
            parts.output.send_marker(marker).await?;
        }
        if last_lag.elapsed() >= Duration::from_secs(1) {
            last_lag = Instant::now();
            src.refresh_lags();
        }
        parts.commit_completed().await?;
        while let Ok(control) = src.control.try_recv() {
            match control {
                SourceControl::Stop { drain } => {
                    let state = src.snapshot()?;
                    return parts.end(drain, vec![(src.node, state)]).await;
                }
                SourceControl::Barrier(barrier) => {
                    let state = src.snapshot()?;
                    parts.barrier(barrier, vec![(src.node, state)]).await?;
                }
            }
        }
        match src.source.poll().await? {
            SourcePoll::Batch { split, batch } => {
                let emitted = parts.chain.on_batch(0, src.prepare(split, batch)?)?;
                parts.deliver(emitted).await?;
                src.advance_watermark(&mut parts).await?;
            }
            SourcePoll::Pending => {
                if idle_check.is_some_and(|d| last_idle_check.elapsed() >= d) {
                    last_idle_check = Instant::now();
                    src.advance_watermark(&mut parts).await?;
                }
            }
            SourcePoll::SplitsAdded(splits) => {
                src.watermarks.add_splits(&splits);
                for split in splits {
                    src.split_metrics(split);
                }
            }
            SourcePoll::SplitEnded(split) => {
                // Its final position and lag, even between refreshes.
                src.refresh_lags();
                src.watermarks.end_split(split);
                src.advance_watermark(&mut parts).await?;
            }
            SourcePoll::Watermark(t) => {
                src.metrics.set_watermark(t);
                parts.watermark(Watermark::EventTime(t)).await?;
            }
            SourcePoll::Barrier(checkpoint_id) => {
                let state = src.snapshot()?;
                let barrier = Barrier {
                    checkpoint_id,
                    injected_at: now_millis(),
                };
                parts.barrier(barrier, vec![(src.node, state)]).await?;
            }
            SourcePoll::End => {
                src.refresh_lags();
                src.metrics.set_watermark(FINAL_WATERMARK);
                let state = src.snapshot()?;
                return parts.end(true, vec![(src.node, state)]).await;
            }
        }
        if timer.is_some_and(|t| last_timer.elapsed() >= t) {
            last_timer = Instant::now();
            parts.timer().await?;
        }
    }
}
