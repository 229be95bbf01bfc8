//! The output side of a subtask: routing batches to downstream channels by
//! the edge kind, or handing them to a sink.

use std::sync::Arc;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use tokio::sync::mpsc::Sender;

use crate::error::{EngineError, Result};
use crate::message::{Barrier, CheckpointId, Message, Watermark};
use crate::metrics::SubtaskMetrics;
use crate::row_watermark::strip;
use crate::source::{Sink, Visibility};

/// How a subtask spreads its batches over downstream channels.
#[derive(Debug, Clone)]
pub(crate) enum Partitioning {
    /// One channel.
    Forward,
    /// By hash of these columns; the same for every sender, so a key always
    /// reaches the same subtask.
    Hash(Vec<usize>),
    Broadcast,
    RoundRobin,
}

pub(crate) struct Router {
    pub senders: Vec<Sender<Message>>,
    pub partitioning: Partitioning,
    pub next: usize,
    pub hashes: Vec<u64>,
    /// The sending operator's metrics: time blocked on full channels.
    pub metrics: Arc<SubtaskMetrics>,
}

pub(crate) enum Output {
    /// A router per outgoing edge: each consumer of the rows gets them,
    /// spread over its subtasks as its edge says.
    Channels(Vec<Router>),
    Sink {
        sink: Box<dyn Sink>,
        metrics: Arc<SubtaskMetrics>,
        node: crate::graph::NodeId,
        /// State to restore before the first write.
        restore: Option<crate::state::StateSnapshot>,
        /// Latency markers waiting for the rows before them to be visible.
        held: HeldMarkers,
    },
}

/// Latency markers at a sink whose rows are not readable at once: a
/// marker's end-to-end latency runs until the rows before it can be read,
/// at the sink's next flush or barrier ([`Visibility::AtFlush`]) or the
/// commit of the checkpoint after it ([`Visibility::AtCommit`]). Bounded:
/// past [`HeldMarkers::LIMIT`] (nothing becomes visible for that long) the
/// oldest are timed at once.
#[derive(Default)]
pub(crate) struct HeldMarkers {
    open: Vec<crate::message::LatencyMarker>,
    by_checkpoint: std::collections::BTreeMap<CheckpointId, Vec<crate::message::LatencyMarker>>,
    count: usize,
}

impl HeldMarkers {
    const LIMIT: usize = 1024;

    fn hold(&mut self, marker: crate::message::LatencyMarker, metrics: &SubtaskMetrics) {
        if self.count >= Self::LIMIT {
            if let Some(mut oldest) = self.by_checkpoint.first_entry() {
                for m in oldest.get_mut().drain(..) {
                    metrics.observe_end_to_end(m.source, m.created.elapsed());
                    self.count -= 1;
                }
                oldest.remove();
            }
        }
        self.open.push(marker);
        self.count += 1;
        self.publish(metrics);
    }

    /// Tells the metrics how long the oldest held marker has waited: a
    /// sink whose commits stall misses its latency target before the
    /// markers are released.
    fn publish(&self, metrics: &SubtaskMetrics) {
        let oldest = self
            .by_checkpoint
            .values()
            .flatten()
            .chain(&self.open)
            .next()
            .map(|m| m.created.elapsed());
        metrics.set_oldest_held(oldest);
    }

    /// The rows so far are readable now.
    fn flushed(&mut self, metrics: &SubtaskMetrics) {
        for m in self.open.drain(..) {
            metrics.observe_end_to_end(m.source, m.created.elapsed());
            self.count -= 1;
        }
        self.publish(metrics);
    }

    /// The markers so far wait for `checkpoint`.
    fn barrier(&mut self, checkpoint: CheckpointId) {
        if !self.open.is_empty() {
            let open = std::mem::take(&mut self.open);
            self.by_checkpoint
                .entry(checkpoint)
                .or_default()
                .extend(open);
        }
    }

    /// `checkpoint` committed: the markers before it are visible now.
    fn committed(&mut self, checkpoint: CheckpointId, metrics: &SubtaskMetrics) {
        while let Some(entry) = self.by_checkpoint.first_entry() {
            if *entry.key() > checkpoint {
                break;
            }
            for m in entry.remove() {
                metrics.observe_end_to_end(m.source, m.created.elapsed());
                self.count -= 1;
            }
        }
        self.publish(metrics);
    }
}

/// Sends, timing how long a full channel makes the sender wait.
async fn send(sender: &Sender<Message>, message: Message, metrics: &SubtaskMetrics) -> Result<()> {
    use tokio::sync::mpsc::error::TrySendError;
    // A closed channel means the downstream task ended with an error; the
    // supervisor reports that one.
    match sender.try_send(message) {
        Ok(()) => Ok(()),
        Err(TrySendError::Closed(_)) => Err(EngineError::Cancelled),
        Err(TrySendError::Full(message)) => {
            let started = std::time::Instant::now();
            let sent = sender
                .send(message)
                .await
                .map_err(|_| EngineError::Cancelled);
            metrics.add_backpressured(started.elapsed());
            sent
        }
    }
}

/// `batch`'s rows split into `n` parts by the hash of the `keys` columns,
/// as a key shuffle routes them: a row goes to part `hash % n`, so a key's
/// part depends only on the key and `n` (also across processes, for the
/// cluster mode's repartition topics). Empty parts are left out; `hashes`
/// is scratch space.
pub fn hash_split(
    batch: &RecordBatch,
    keys: &[usize],
    n: usize,
    hashes: &mut Vec<u64>,
) -> Result<Vec<(usize, RecordBatch)>> {
    let rows = batch.num_rows();
    hashes.clear();
    hashes.resize(rows, 0);
    let columns: Vec<_> = keys.iter().map(|k| batch.column(*k).clone()).collect();
    create_hashes(&columns, &RandomState::with_seed(0), hashes)?;
    let mut parts: Vec<Vec<u32>> = vec![Vec::new(); n.max(1)];
    for (row, hash) in hashes.iter().enumerate() {
        parts[(*hash % n.max(1) as u64) as usize].push(row as u32);
    }
    let mut split = Vec::new();
    for (i, rows_of) in parts.into_iter().enumerate() {
        if rows_of.is_empty() {
            continue;
        }
        let part = if rows_of.len() == rows {
            batch.clone()
        } else {
            take_record_batch(batch, &UInt32Array::from(rows_of))?
        };
        split.push((i, part));
    }
    Ok(split)
}

impl Router {
    async fn send_batch(&mut self, batch: RecordBatch) -> Result<()> {
        match &self.partitioning {
            Partitioning::Forward => {
                send(&self.senders[0], Message::Batch(batch), &self.metrics).await
            }
            Partitioning::Broadcast => {
                for sender in &self.senders {
                    send(sender, Message::Batch(batch.clone()), &self.metrics).await?;
                }
                Ok(())
            }
            Partitioning::RoundRobin => {
                let i = self.next % self.senders.len();
                self.next = self.next.wrapping_add(1);
                send(&self.senders[i], Message::Batch(batch), &self.metrics).await
            }
            Partitioning::Hash(keys) => {
                let n = self.senders.len();
                if n == 1 {
                    return send(&self.senders[0], Message::Batch(batch), &self.metrics).await;
                }
                for (i, part) in hash_split(&batch, keys, n, &mut self.hashes)? {
                    send(&self.senders[i], Message::Batch(part), &self.metrics).await?;
                }
                Ok(())
            }
        }
    }

    async fn broadcast(&self, message: Message) -> Result<()> {
        for sender in &self.senders {
            send(sender, message.clone(), &self.metrics).await?;
        }
        Ok(())
    }
}

impl Output {
    pub(crate) async fn send_batches(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        for batch in batches {
            match self {
                Output::Channels(routers) => match routers.as_mut_slice() {
                    [router] => router.send_batch(batch).await?,
                    routers => {
                        for router in routers {
                            router.send_batch(batch.clone()).await?;
                        }
                    }
                },
                Output::Sink { sink, metrics, .. } => {
                    metrics.add_input(batch.num_rows());
                    if sink.keeps_row_watermarks() {
                        sink.write(batch).await?;
                    } else {
                        sink.write(strip(&batch)).await?;
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn send_watermark(&mut self, watermark: Watermark) -> Result<()> {
        match self {
            Output::Channels(routers) => {
                for router in routers {
                    router.broadcast(Message::Watermark(watermark)).await?;
                }
                Ok(())
            }
            Output::Sink { metrics, sink, .. } => {
                if let Watermark::EventTime(t) = watermark {
                    metrics.set_watermark(t);
                    sink.on_watermark(t);
                }
                Ok(())
            }
        }
    }

    /// Sends a barrier on, or prepares the sink's commit for it (then the
    /// sink's state is returned with its node).
    pub(crate) async fn send_barrier(
        &mut self,
        barrier: Barrier,
    ) -> Result<Option<(crate::graph::NodeId, crate::state::StateSnapshot)>> {
        match self {
            Output::Channels(routers) => {
                for router in routers {
                    router.broadcast(Message::Barrier(barrier)).await?;
                }
                Ok(None)
            }
            Output::Sink {
                sink,
                node,
                held,
                metrics,
                ..
            } => {
                let state = sink.prepare_commit(barrier.checkpoint_id).await?;
                match sink.visibility() {
                    Visibility::AtCommit => held.barrier(barrier.checkpoint_id),
                    _ => held.flushed(metrics),
                }
                Ok(Some((*node, state)))
            }
        }
    }

    /// Restores the sink, if there is state for it.
    pub(crate) async fn restore(&mut self) -> Result<()> {
        if let Output::Sink { sink, restore, .. } = self {
            if let Some(state) = restore.take() {
                sink.restore(state).await?;
            }
        }
        Ok(())
    }

    /// A checkpoint completed: the sink makes its data visible.
    pub(crate) async fn commit(&mut self, checkpoint: crate::message::CheckpointId) -> Result<()> {
        match self {
            Output::Sink {
                sink,
                held,
                metrics,
                ..
            } => {
                sink.commit(checkpoint).await?;
                held.committed(checkpoint, metrics);
                Ok(())
            }
            Output::Channels(_) => Ok(()),
        }
    }

    /// Forwards a latency marker (to one channel, in turn), or times it
    /// at a sink.
    pub(crate) async fn send_marker(
        &mut self,
        marker: crate::message::LatencyMarker,
    ) -> Result<()> {
        match self {
            Output::Channels(routers) => {
                // Every path to a sink gets the marker, on one channel.
                for router in routers {
                    let i = router.next % router.senders.len();
                    router.next = router.next.wrapping_add(1);
                    send(&router.senders[i], Message::Marker(marker), &router.metrics).await?;
                }
                Ok(())
            }
            Output::Sink {
                metrics,
                sink,
                held,
                ..
            } => {
                match sink.visibility() {
                    Visibility::AtOnce => {
                        metrics.observe_end_to_end(marker.source, marker.created.elapsed())
                    }
                    _ => held.hold(marker, metrics),
                }
                Ok(())
            }
        }
    }

    /// How often a buffering sink wants to be flushed.
    pub(crate) fn flush_interval(&self) -> Option<std::time::Duration> {
        match self {
            Output::Sink { sink, .. } => sink.flush_interval(),
            Output::Channels(_) => None,
        }
    }

    /// Flushes a buffering sink.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        match self {
            Output::Sink {
                sink,
                held,
                metrics,
                ..
            } => {
                sink.flush().await?;
                if sink.visibility() == Visibility::AtFlush {
                    held.flushed(metrics);
                }
                Ok(())
            }
            Output::Channels(_) => Ok(()),
        }
    }

    pub(crate) fn is_sink(&self) -> bool {
        matches!(self, Output::Sink { .. })
    }

    pub(crate) async fn end(&mut self) -> Result<()> {
        match self {
            Output::Channels(routers) => {
                for router in routers {
                    router.broadcast(Message::End).await?;
                }
                Ok(())
            }
            Output::Sink { sink, .. } => sink.finish().await,
        }
    }
}
