//! The loops that run one subtask: a source subtask and a channel-fed one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{Receiver, Sender};

use super::chain::{Chain, Emitted};
use super::inputs::{InputEvent, Inputs};
use super::output::Output;
use super::watermarks::WatermarkGenerator;
use super::{SnapshotAck, SourceControl};
use crate::error::Result;
use crate::graph::NodeId;
use crate::message::{now_millis, Barrier, Watermark, FINAL_WATERMARK};
use crate::metrics::{SplitMetrics, SubtaskMetrics};
use crate::operators::Projection;
use crate::source::{Source, SourcePoll, SplitId};

/// Everything a subtask needs besides its input.
pub(crate) struct SubtaskParts {
    pub chain: Chain,
    pub output: Output,
    pub subtask: usize,
    pub acks: Option<Sender<SnapshotAck>>,
}

impl SubtaskParts {
    async fn deliver(&mut self, emitted: Emitted) -> Result<()> {
        for (sink, reason, rows) in self.chain.late_targets(emitted.late) {
            sink.write_rows(&reason, &rows).await?;
        }
        self.output.send_batches(emitted.batches).await
    }

    async fn watermark(&mut self, watermark: Watermark) -> Result<()> {
        if let Watermark::EventTime(t) = watermark {
            loop {
                let emitted = self.chain.on_watermark(t)?;
                let again = emitted.call_again;
                self.deliver(emitted).await?;
                if !again {
                    break;
                }
            }
        }
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
        if let Some(acks) = &self.acks {
            let ack = SnapshotAck {
                checkpoint_id: barrier.checkpoint_id,
                subtask: self.subtask,
                states,
            };
            // The coordinator went away: the job is stopping.
            let _ = acks.send(ack).await;
        }
        self.output.send_barrier(barrier).await
    }

    async fn timer(&mut self) -> Result<()> {
        let now = now_millis();
        loop {
            let emitted = self.chain.on_timer(now)?;
            let again = emitted.call_again;
            self.deliver(emitted).await?;
            if !again {
                return Ok(());
            }
        }
    }

    async fn end(&mut self, drain: bool) -> Result<()> {
        if drain {
            self.watermark(Watermark::EventTime(FINAL_WATERMARK))
                .await?;
        }
        loop {
            let emitted = self.chain.on_end()?;
            let again = emitted.call_again;
            self.deliver(emitted).await?;
            if !again {
                break;
            }
        }
        self.output.end().await
    }
}

/// Runs a subtask fed by channels until every input has ended.
pub(crate) async fn run_channel_subtask(mut inputs: Inputs, mut parts: SubtaskParts) -> Result<()> {
    let mut ticker = parts.chain.timer_interval().map(tokio::time::interval);
    loop {
        let event = match ticker.as_mut() {
            Some(ticker) => tokio::select! {
                event = inputs.next() => event,
                _ = ticker.tick() => {
                    parts.timer().await?;
                    continue;
                }
            },
            None => inputs.next().await,
        };
        match event {
            None => return Ok(()),
            Some(InputEvent::Batch(batch)) => {
                let emitted = parts.chain.on_batch(batch)?;
                parts.deliver(emitted).await?;
            }
            Some(InputEvent::Watermark(w)) => parts.watermark(w).await?,
            Some(InputEvent::Barrier(b)) => parts.barrier(b, Vec::new()).await?,
            Some(InputEvent::End) => return parts.end(false).await,
        }
    }
}

/// A source subtask: the connector, its computed columns and watermarks.
pub(crate) struct SourceSubtask {
    pub node: NodeId,
    pub source: Box<dyn Source>,
    pub computed: Option<Arc<Projection>>,
    pub watermarks: WatermarkGenerator,
    pub metrics: Arc<SubtaskMetrics>,
    pub job_metrics: Arc<crate::metrics::JobMetrics>,
    pub splits: std::collections::HashMap<SplitId, Arc<SplitMetrics>>,
    pub control: Receiver<SourceControl>,
}

impl SourceSubtask {
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

    /// Refreshes every split's lag from the source.
    fn refresh_lags(&self) {
        for (split, m) in &self.splits {
            if let Some(lag) = self.source.lag(*split) {
                m.set_lag(lag);
            }
        }
    }
}

/// Runs a source subtask until its source ends or it is told to stop.
pub(crate) async fn run_source_subtask(
    mut src: SourceSubtask,
    mut parts: SubtaskParts,
) -> Result<()> {
    let timer = parts.chain.timer_interval();
    let mut last_timer = Instant::now();
    let idle_check = src
        .watermarks
        .idle_check()
        .map(|d| d.min(Duration::from_millis(200)));
    let mut last_idle_check = Instant::now();
    let mut last_lag = Instant::now();
    for split in src.source.splits() {
        src.split_metrics(split);
    }
    loop {
        if last_lag.elapsed() >= Duration::from_secs(1) {
            last_lag = Instant::now();
            src.refresh_lags();
        }
        while let Ok(control) = src.control.try_recv() {
            match control {
                SourceControl::Stop { drain } => return parts.end(drain).await,
                SourceControl::Barrier(barrier) => {
                    let state = src.source.snapshot()?;
                    parts.barrier(barrier, vec![(src.node, state)]).await?;
                }
            }
        }
        match src.source.poll().await? {
            SourcePoll::Batch { split, batch } => {
                let batch = match &src.computed {
                    Some(projection) => projection.project(&batch)?,
                    None => batch,
                };
                let batch = src.watermarks.assign(split, &batch)?;
                src.metrics.add_output(batch.num_rows());
                let split_metrics = src.split_metrics(split);
                split_metrics.add_rows(
                    batch.num_rows(),
                    batch.get_array_memory_size(),
                    now_millis(),
                );
                if let Some(w) = src.watermarks.split_watermark(split) {
                    split_metrics.set_watermark(w);
                }
                let emitted = parts.chain.on_batch(batch)?;
                parts.deliver(emitted).await?;
                if let Some(w) = src.watermarks.update(Instant::now()) {
                    if let Watermark::EventTime(t) = w {
                        src.metrics.set_watermark(t);
                    }
                    parts.watermark(w).await?;
                }
            }
            SourcePoll::Pending => {
                if idle_check.is_some_and(|d| last_idle_check.elapsed() >= d) {
                    last_idle_check = Instant::now();
                    if let Some(w) = src.watermarks.update(Instant::now()) {
                        if let Watermark::EventTime(t) = w {
                            src.metrics.set_watermark(t);
                        }
                        parts.watermark(w).await?;
                    }
                }
            }
            SourcePoll::SplitsAdded(splits) => {
                src.watermarks.add_splits(&splits);
                for split in splits {
                    src.split_metrics(split);
                }
            }
            SourcePoll::SplitEnded(split) => {
                src.watermarks.end_split(split);
                if let Some(w) = src.watermarks.update(Instant::now()) {
                    parts.watermark(w).await?;
                }
            }
            SourcePoll::End => {
                src.metrics.set_watermark(FINAL_WATERMARK);
                return parts.end(true).await;
            }
        }
        if timer.is_some_and(|t| last_timer.elapsed() >= t) {
            last_timer = Instant::now();
            parts.timer().await?;
        }
    }
}
