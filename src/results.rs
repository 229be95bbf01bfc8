//! Results of a transient query, as an async stream of batches.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::Stream;
use tokio::sync::mpsc;
use weir_engine::{JobHandle, MetricsSnapshot, Result as EngineResult, Sink, SinkFactory};

use weir_engine::changelog::with_op_column;

use crate::error::{Result, WeirError};
use crate::table::ChangelogTable;

/// Rows a query has produced, in the order its sink received them.
///
/// Ends when the query's sources end (a bounded query), or when it is
/// dropped or [`ResultStream::cancel`]led. Dropping it stops the job.
///
/// The rows of an updating query (a `GROUP BY` without a window, an outer
/// join, ...) are its changes, as Flink's SQL client shows them in
/// changelog mode: each batch starts with an `op` column (`+I`, `-U`,
/// `+U`, `-D`). [`ResultStream::collect_table`] applies them and returns
/// the final table.
pub struct ResultStream {
    schema: SchemaRef,
    updating: bool,
    receiver: mpsc::Receiver<RecordBatch>,
    job: Arc<JobHandle>,
    limit: Option<usize>,
    bounded: bool,
    seen: usize,
    done: bool,
}

/// The sink a query's results go to: a bounded channel, so a slow reader
/// backpressures the query.
pub(crate) fn result_channel(capacity: usize) -> (SinkFactory, mpsc::Receiver<RecordBatch>) {
    let (tx, rx) = mpsc::channel(capacity);
    let factory: SinkFactory =
        Arc::new(move |_| Ok(Box::new(ChannelSink { tx: tx.clone() }) as Box<dyn Sink>));
    (factory, rx)
}

struct ChannelSink {
    tx: mpsc::Sender<RecordBatch>,
}

#[async_trait]
impl Sink for ChannelSink {
    async fn write(&mut self, batch: RecordBatch) -> EngineResult<()> {
        // The reader went away: the query was cancelled.
        self.tx
            .send(batch)
            .await
            .map_err(|_| weir_engine::EngineError::Cancelled)
    }
}

impl ResultStream {
    pub(crate) fn new(
        schema: SchemaRef,
        receiver: mpsc::Receiver<RecordBatch>,
        job: Arc<JobHandle>,
        limit: Option<usize>,
        bounded: bool,
        updating: bool,
    ) -> Self {
        ResultStream {
            schema,
            updating,
            receiver,
            job,
            limit,
            bounded,
            seen: 0,
            done: false,
        }
    }

    /// The columns of each batch: an updating query's start with `op`.
    pub fn schema(&self) -> SchemaRef {
        if !self.updating {
            return self.schema.clone();
        }
        let mut fields = vec![Arc::new(Field::new("op", DataType::Utf8, false))];
        fields.extend(self.schema.fields().iter().cloned());
        Arc::new(Schema::new(fields))
    }

    /// The result columns, without `op`.
    pub fn data_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Whether the rows are changes to earlier rows (with an `op` column).
    pub fn is_updating(&self) -> bool {
        self.updating
    }

    /// Whether the query ends by itself (its sources are bounded, or it
    /// has a LIMIT).
    pub fn is_bounded(&self) -> bool {
        self.bounded || self.limit.is_some()
    }

    /// The query job's metrics now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.job.metrics()
    }

    /// Stops the query.
    pub fn cancel(&mut self) {
        self.done = true;
        self.receiver.close();
        self.job.abort();
    }

    /// The next batch of changes, as they arrived: an updating query's
    /// with their row-kind column (see [`weir_engine::changelog`]).
    pub async fn next_changes(&mut self) -> Result<Option<RecordBatch>> {
        if self.done {
            return Ok(None);
        }
        match self.receiver.recv().await {
            Some(batch) => Ok(Some(self.count(batch))),
            None => {
                self.done = true;
                self.job.wait().await.map_err(WeirError::from)?;
                Ok(None)
            }
        }
    }

    /// The next batch; `None` at the end. An error if the query failed.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        match self.next_changes().await? {
            Some(batch) => self.shown(batch).map(Some),
            None => Ok(None),
        }
    }

    /// A batch as the caller sees it: an updating query's with `op` first.
    fn shown(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.updating {
            Ok(with_op_column(&batch).map_err(WeirError::from)?)
        } else {
            Ok(batch)
        }
    }

    /// Every remaining change applied: the final table of an updating
    /// query (for an append-only one, its rows).
    pub async fn collect_table(mut self) -> Result<RecordBatch> {
        let mut table = ChangelogTable::new(self.schema.clone())?;
        while let Some(batch) = self.next_changes().await? {
            table.apply(&batch)?;
        }
        table.to_batch()
    }

    fn count(&mut self, batch: RecordBatch) -> RecordBatch {
        self.seen += batch.num_rows();
        if let Some(limit) = self.limit {
            if self.seen >= limit {
                // LIMIT reached: nothing more will come.
                self.done = true;
                self.job.abort();
                let keep = batch.num_rows() - (self.seen - limit);
                return batch.slice(0, keep);
            }
        }
        batch
    }

    /// Every remaining batch (for a bounded query).
    pub async fn collect(mut self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next_batch().await? {
            if batch.num_rows() > 0 {
                batches.push(batch);
            }
        }
        Ok(batches)
    }
}

impl Stream for ResultStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(batch)) => {
                let batch = self.count(batch);
                Poll::Ready(Some(self.shown(batch)))
            }
            Poll::Ready(None) => {
                self.done = true;
                match self.job.status() {
                    weir_engine::JobStatus::Failed(e) => {
                        Poll::Ready(Some(Err(WeirError::Usage(e))))
                    }
                    _ => Poll::Ready(None),
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for ResultStream {
    fn drop(&mut self) {
        if !self.job.is_finished() {
            self.job.abort();
        }
    }
}
