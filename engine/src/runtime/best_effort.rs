//! `'sink.delivery' = 'best-effort'`: a sink that never holds the
//! pipeline up.
//!
//! The connector's sink runs in a task of its own behind a short bounded
//! queue. A batch that finds the queue full is dropped and counted
//! (`dropped_rows` in the sink's metrics), so a slow or stuck sink costs
//! this stream rows, never the other streams of the job their speed.
//! Nothing waits for checkpoints: the sink publishes what it took every
//! [`PUBLISH_EVERY`] (its at-least-once commit), and a restart neither
//! replays nor removes anything.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{EngineError, Result};
use crate::message::{CheckpointId, Millis};
use crate::metrics::SubtaskMetrics;
use crate::source::{Sink, FINAL_CHECKPOINT};
use crate::state::StateSnapshot;

/// Batches waiting for the sink before new ones are dropped.
const QUEUE: usize = 16;

/// How often the sink makes what it took visible.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

enum Work {
    Batch(RecordBatch),
    Watermark(Millis),
    /// The end: publish, finish, and say how it went.
    Finish(oneshot::Sender<Result<()>>),
}

/// The runtime's side of a best-effort sink.
pub(crate) struct BestEffortSink {
    queue: mpsc::Sender<Work>,
    worker: Option<JoinHandle<Result<()>>>,
    metrics: Arc<SubtaskMetrics>,
}

impl BestEffortSink {
    /// Moves `sink` into its own task.
    pub(crate) fn spawn(sink: Box<dyn Sink>, metrics: Arc<SubtaskMetrics>) -> Self {
        let (queue, work) = mpsc::channel(QUEUE);
        BestEffortSink {
            queue,
            worker: Some(tokio::spawn(drain(sink, work))),
            metrics,
        }
    }

    /// The worker ended early: its error.
    async fn failure(&mut self) -> EngineError {
        match self.worker.take() {
            Some(worker) => match worker.await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => EngineError::Cancelled,
                Err(e) => EngineError::Task(format!("best-effort sink: {e}")),
            },
            None => EngineError::Cancelled,
        }
    }
}

/// Writes what comes, publishing every [`PUBLISH_EVERY`] when something
/// was written since.
async fn drain(mut sink: Box<dyn Sink>, mut work: mpsc::Receiver<Work>) -> Result<()> {
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unpublished = false;
    let mut round: CheckpointId = 0;
    loop {
        tokio::select! {
            next = work.recv() => match next {
                Some(Work::Batch(batch)) => {
                    sink.write(batch).await?;
                    unpublished = true;
                }
                Some(Work::Watermark(w)) => sink.on_watermark(w),
                Some(Work::Finish(done)) => {
                    let finished = finish(&mut sink).await;
                    let _ = done.send(finished);
                    return Ok(());
                }
                // The job was cancelled: what was published stays.
                None => return Ok(()),
            },
            _ = publish.tick(), if unpublished => {
                round += 1;
                sink.prepare_commit(round).await?;
                sink.commit(round).await?;
                unpublished = false;
            }
        }
    }
}

async fn finish(sink: &mut Box<dyn Sink>) -> Result<()> {
    sink.prepare_commit(FINAL_CHECKPOINT).await?;
    sink.commit(FINAL_CHECKPOINT).await?;
    sink.finish().await
}

#[async_trait]
impl Sink for BestEffortSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let rows = batch.num_rows() as u64;
        match self.queue.try_send(Work::Batch(batch)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.add_dropped_rows(rows);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.failure().await),
        }
    }

    fn on_watermark(&mut self, watermark: Millis) {
        // A watermark that finds the queue full waits for the next one.
        let _ = self.queue.try_send(Work::Watermark(watermark));
    }

    /// Nothing to commit with a checkpoint: the worker publishes by itself.
    async fn prepare_commit(&mut self, _checkpoint: CheckpointId) -> Result<StateSnapshot> {
        Ok(StateSnapshot::default())
    }

    async fn finish(&mut self) -> Result<()> {
        let (done, finished) = oneshot::channel();
        // The end waits for room: the last rows are not dropped for speed.
        if self.queue.send(Work::Finish(done)).await.is_err() {
            return Err(self.failure().await);
        }
        match finished.await {
            Ok(result) => result,
            Err(_) => Err(self.failure().await),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// A sink that takes `delay` per batch (a slow service) and counts rows.
    struct Slow {
        delay: Duration,
        rows: Arc<AtomicU64>,
        published: Arc<AtomicU64>,
    }

    #[async_trait]
    impl Sink for Slow {
        async fn write(&mut self, batch: RecordBatch) -> Result<()> {
            tokio::time::sleep(self.delay).await;
            self.rows
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            Ok(())
        }

        async fn commit(&mut self, _checkpoint: CheckpointId) -> Result<()> {
            self.published
                .store(self.rows.load(Ordering::Relaxed), Ordering::Relaxed);
            Ok(())
        }
    }

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap()
    }

    /// A sink far slower than its input drops rows instead of blocking,
    /// counts every dropped row, and keeps every row it took. (One thread:
    /// the sink's task runs only once the writer waits, so the queue takes
    /// exactly its 16 batches.)
    #[tokio::test]
    async fn a_slow_sink_drops_and_counts_instead_of_blocking() {
        let rows = Arc::new(AtomicU64::new(0));
        let published = Arc::new(AtomicU64::new(0));
        let slow = Slow {
            delay: Duration::from_millis(20),
            rows: rows.clone(),
            published: published.clone(),
        };
        let metrics = Arc::new(SubtaskMetrics::new(0, "sink: slow", 0));
        let mut sink = BestEffortSink::spawn(Box::new(slow), metrics.clone());
        for _ in 0..100 {
            sink.write(batch(10)).await.unwrap();
        }
        assert_eq!(metrics.snapshot().dropped_rows, 840);
        sink.finish().await.unwrap();
        assert_eq!(rows.load(Ordering::Relaxed), 160);
        assert_eq!(
            published.load(Ordering::Relaxed),
            160,
            "the end publishes all"
        );
    }

    /// A sink that keeps up loses nothing.
    #[tokio::test]
    async fn a_sink_that_keeps_up_drops_nothing() {
        let rows = Arc::new(AtomicU64::new(0));
        let slow = Slow {
            delay: Duration::from_millis(1),
            rows: rows.clone(),
            published: Arc::new(AtomicU64::new(0)),
        };
        let metrics = Arc::new(SubtaskMetrics::new(0, "sink: quick", 0));
        let mut sink = BestEffortSink::spawn(Box::new(slow), metrics.clone());
        for _ in 0..100 {
            sink.write(batch(10)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sink.finish().await.unwrap();
        assert_eq!(rows.load(Ordering::Relaxed), 1000);
        assert_eq!(metrics.snapshot().dropped_rows, 0);
    }
}
