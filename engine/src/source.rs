//! The traits at the edges of a graph: sources, sinks and dead-letter outputs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;
use crate::message::CheckpointId;
use crate::operator::SubtaskInfo;
use crate::state::StateSnapshot;

/// Identifies one split (a Kafka partition, a file, a generator lane)
/// within a source subtask. Watermarks are tracked per split.
pub type SplitId = u32;

/// What a source returns from one poll.
#[derive(Debug)]
pub enum SourcePoll {
    /// Rows read from one split, in the split's order.
    Batch { split: SplitId, batch: RecordBatch },
    /// New splits were assigned (files listed, partitions assigned); each
    /// holds the watermark back until it has data, ends or goes idle.
    SplitsAdded(Vec<SplitId>),
    /// Nothing available right now.
    Pending,
    /// The split is exhausted; it no longer holds the watermark back.
    SplitEnded(SplitId),
    /// Every split of this subtask is exhausted (a bounded source).
    End,
    /// The upstream's event time reached this point: a source that reads
    /// another stage's output carries its watermarks instead of deriving
    /// them from rows (see [`Source::carries_row_watermarks`]).
    Watermark(crate::message::Millis),
    /// The upstream aligned checkpoint barrier `id`: snapshot here.
    Barrier(CheckpointId),
}

/// A source subtask.
///
/// `poll` must return within about [`MAX_POLL_WAIT`] even when no data is
/// available (with [`SourcePoll::Pending`]), so that the runtime can handle
/// barriers, idleness and stop requests between polls. When downstream
/// channels are full the runtime simply does not call `poll`: that is how
/// backpressure reaches the source.
#[async_trait]
pub trait Source: Send {
    /// Splits this subtask will read, known up front. A split not yet read
    /// holds the watermark back until it has data, ends, or goes idle.
    fn splits(&self) -> Vec<SplitId>;

    /// A human name of a split, for metrics and logs.
    fn split_name(&self, split: SplitId) -> String {
        split.to_string()
    }

    async fn poll(&mut self) -> Result<SourcePoll>;

    /// How far `split` has been read (an offset, a line number), if known.
    fn position(&self, _split: SplitId) -> Option<i64> {
        None
    }

    /// Records of `split` available but not read yet, if the source knows.
    fn lag(&self, _split: SplitId) -> Option<i64> {
        None
    }

    /// Positions to store in a checkpoint.
    fn snapshot(&mut self) -> Result<StateSnapshot> {
        Ok(StateSnapshot::default())
    }

    /// Seeks to positions from [`Source::snapshot`].
    fn restore(&mut self, _state: StateSnapshot) -> Result<()> {
        Ok(())
    }

    /// Batches already end with the row-watermark column, and watermarks
    /// come as [`SourcePoll::Watermark`]: the source reads rows another
    /// stage of the job produced (`docs/cluster-protocol.md`).
    fn carries_row_watermarks(&self) -> bool {
        false
    }
}

/// How long a source may wait inside `poll` before returning `Pending`.
pub const MAX_POLL_WAIT: Duration = Duration::from_millis(100);

/// A sink subtask. It receives batches without the row-watermark column.
#[async_trait]
pub trait Sink: Send {
    async fn write(&mut self, batch: RecordBatch) -> Result<()>;

    /// Phase one of a two-phase commit, at a checkpoint barrier (and at the
    /// end of input, with [`FINAL_CHECKPOINT`]): make everything written so
    /// far durable but not yet visible, and return what the checkpoint must
    /// record to make it visible later.
    async fn prepare_commit(&mut self, _checkpoint: CheckpointId) -> Result<StateSnapshot> {
        Ok(StateSnapshot::default())
    }

    /// Phase two: the checkpoint is complete; make what was prepared up to
    /// it visible. Must be idempotent.
    async fn commit(&mut self, _checkpoint: CheckpointId) -> Result<()> {
        Ok(())
    }

    /// Restarting from a checkpoint: commit what it recorded as prepared
    /// (it may or may not have been committed before the crash) and drop
    /// leftovers written after it.
    async fn restore(&mut self, _state: StateSnapshot) -> Result<()> {
        Ok(())
    }

    /// The event time reached `watermark` (for sinks that act on it, as
    /// a partitioned file sink committing partitions).
    fn on_watermark(&mut self, _watermark: crate::message::Millis) {}

    /// The stream ended (or the job stops), after the final commit.
    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// How often the runtime should call [`Sink::flush`], if the sink
    /// buffers writes (`'sink.buffer-flush.interval'`).
    fn flush_interval(&self) -> Option<Duration> {
        None
    }

    /// Writes out what the sink buffered, every [`Sink::flush_interval`].
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// When what it writes can be read: its end-to-end latency (latency
    /// markers) runs until then.
    fn visibility(&self) -> Visibility {
        Visibility::AtOnce
    }

    /// Batches keep their row-watermark column: the sink feeds another
    /// stage of the job, whose operators decide lateness with it.
    fn keeps_row_watermarks(&self) -> bool {
        false
    }
}

/// When rows a sink was given can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// As soon as it is given them (a print sink, at-least-once Kafka).
    AtOnce,
    /// At its next barrier or [`Sink::flush`] (at-least-once files: part
    /// files are read once closed).
    AtFlush,
    /// When the checkpoint after them commits (exactly-once).
    AtCommit,
}

/// The checkpoint id a job's end of input is prepared and committed under.
pub const FINAL_CHECKPOINT: CheckpointId = CheckpointId::MAX;

/// Builds one source per subtask.
pub type SourceFactory = Arc<dyn Fn(SubtaskInfo) -> Result<Box<dyn Source>> + Send + Sync>;

/// Builds one sink per subtask.
pub type SinkFactory = Arc<dyn Fn(SubtaskInfo) -> Result<Box<dyn Sink>> + Send + Sync>;

/// Where rows go that a job cannot use: records that fail to decode, and
/// rows that arrive after their window fired.
#[async_trait]
pub trait DeadLetterSink: Send + Sync {
    /// Rows (without the row-watermark column) that were rejected for `reason`.
    async fn write_rows(&self, reason: &str, rows: &RecordBatch) -> Result<()>;

    /// Raw records that could not become rows.
    async fn write_records(&self, records: Vec<BadRecord>) -> Result<()>;
}

/// A raw record that could not be decoded or did not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// The stream (table) name.
    pub stream: String,
    /// Why it was rejected.
    pub reason: String,
    /// Where it came from: a file and line, a topic, partition and offset.
    pub location: String,
    /// The record as read.
    pub raw: Vec<u8>,
    /// The Kafka record it was, for a Kafka source.
    pub kafka: Option<Box<KafkaOrigin>>,
}

/// Where in Kafka a bad record was read, and what came with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOrigin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// The record's headers, in order (a header may have no value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// The event-time declaration of a source: `WATERMARK FOR col AS expr`.
#[derive(Debug, Clone)]
pub struct WatermarkSpec {
    /// Evaluated on each row (after computed columns) to give the row's
    /// watermark candidate, a timestamp.
    pub expr: Arc<dyn PhysicalExpr>,
    /// Shown in EXPLAIN.
    pub display: String,
    /// A split with no data for this long stops holding the watermark back.
    pub idle_timeout: Option<Duration>,
    /// When every split is idle, advance the watermark with wall-clock time
    /// from the last record, so the last windows fire on a quiet stream.
    pub idle_advance: bool,
}
