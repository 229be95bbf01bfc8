//! The message protocol every edge of a graph carries.
//!
//! One protocol for all operators: data as Arrow batches, event-time progress
//! as watermarks, checkpoint barriers, and the end of the stream. Messages on
//! one channel are delivered in order, so a watermark or barrier always
//! follows the batches sent before it.

use datafusion::arrow::record_batch::RecordBatch;

/// Milliseconds since the Unix epoch, the unit of event time in Weir.
pub type Millis = i64;

/// Identifies one checkpoint across the whole job.
pub type CheckpointId = u64;

/// What flows on an edge.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows. The last column is always the row watermark (see [`crate::ROW_WATERMARK`]).
    Batch(RecordBatch),
    /// Event time has reached this point on this channel.
    Watermark(Watermark),
    /// Everything before this message belongs to checkpoint `id`.
    Barrier(Barrier),
    /// A latency marker: injected at a source, timed at the sinks.
    Marker(LatencyMarker),
    /// No more messages will follow on this channel.
    End,
}

/// Flink's latency marker: it travels with the data (queues behind it in
/// every channel) but skips operators, so its age at a sink is the time
/// rows spend waiting between the source and that sink.
#[derive(Debug, Clone, Copy)]
pub struct LatencyMarker {
    /// The source node that injected it.
    pub source: usize,
    pub created: std::time::Instant,
}

/// Event-time progress of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// No row with an event time `<= t` is expected any more.
    EventTime(Millis),
    /// The sender has no data for now; do not let it hold the watermark back.
    /// The next `EventTime` from the sender makes it active again.
    Idle,
}

/// A checkpoint barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub checkpoint_id: CheckpointId,
    /// Wall-clock time the coordinator injected the barrier (ms).
    pub injected_at: Millis,
}

/// The watermark that lets every remaining window fire: a bounded source
/// sends it before [`Message::End`].
pub const FINAL_WATERMARK: Millis = i64::MAX;

/// The watermark before any was seen.
pub const NO_WATERMARK: Millis = i64::MIN;

/// `watermark` held back by `delay` ms; "none yet" and "final" stay as
/// they are.
pub fn hold_back(watermark: Millis, delay: Millis) -> Millis {
    if watermark == NO_WATERMARK || watermark == FINAL_WATERMARK {
        watermark
    } else {
        watermark.saturating_sub(delay)
    }
}

/// Wall-clock time now, in ms since the epoch.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
