//! Where a sink's circuit breaker keeps rows while the sink is unhealthy
//! (`'sink.spill.path'`): an exactly-once writer of spill files committed
//! with the checkpoints, and the committed files read back in order when
//! the sink recovers. The runtime's breaker (`runtime/breaker.rs`) decides
//! when; a connector (Parquet on an object store) implements this.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::message::CheckpointId;
use crate::operator::SubtaskInfo;
use crate::source::Sink;

/// One committed spill file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpillFile {
    /// The checkpoint whose prepare staged it (files sort by it first).
    pub epoch: CheckpointId,
    /// Its name in the store.
    pub name: String,
}

/// A subtask's spill: written like an exactly-once sink, read back by file.
#[async_trait]
pub trait SpillStore: Send + Sync {
    /// An exactly-once writer of `subtask`'s spill files: each checkpoint's
    /// rows are files named with that checkpoint, visible once it commits.
    fn writer(&self, subtask: SubtaskInfo) -> Result<Box<dyn Sink>>;

    /// `subtask`'s committed spill files, oldest first.
    async fn files(&self, subtask: usize) -> Result<Vec<SpillFile>>;

    /// The rows of one file, in the order they were written.
    async fn read(&self, file: &SpillFile) -> Result<Vec<RecordBatch>>;

    /// Removes a file whose rows the sink has committed.
    async fn delete(&self, file: &SpillFile) -> Result<()>;

    /// Where the files are, for logs and alerts.
    fn describe(&self) -> String;
}

/// A sink's breaker settings (`'sink.spill.*'`).
#[derive(Clone)]
pub struct SpillSpec {
    pub store: Arc<dyn SpillStore>,
    /// A write slower than this counts towards tripping.
    pub latency_threshold: Duration,
    /// This many slow writes in a row trip the breaker.
    pub trip_count: u32,
}
