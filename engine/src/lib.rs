//! Weir's streaming runtime.
//!
//! A [`Graph`] of operators connected by edges (`Forward`, `Shuffle`,
//! `Broadcast`) runs as one tokio task per subtask. Every edge carries the
//! same [`Message`] protocol on a bounded channel: Arrow batches, watermarks,
//! checkpoint barriers and the end of the stream. The runtime owns channels,
//! watermark merging (minimum over inputs, idle inputs excluded), barrier
//! alignment and metrics; operators implement one small trait,
//! [`Operator`], and never see a channel.

pub mod aggregate;
pub mod changelog;
pub mod checkpoint;
pub mod epochs;
pub mod error;
pub mod generations;
pub mod graph;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod operators;
pub mod row_watermark;
pub mod runtime;
pub mod source;
pub mod spill;
pub mod state;
pub mod testing;
pub mod values;
pub mod window;

pub use checkpoint::{CheckpointConfig, CheckpointSnapshot, CheckpointStore, Restored};
pub use error::{EngineError, Result};
pub use graph::{EdgeKind, Graph, Node, NodeId, NodeKind, SinkNode};
pub use message::{Barrier, CheckpointId, Message, Millis, Watermark, FINAL_WATERMARK};
pub use metrics::{JobMetrics, LatencyStatus, MetricsSnapshot};
pub use operator::{Operator, OperatorContext, OperatorFactory, SideState, StateSize, SubtaskInfo};
pub use row_watermark::ROW_WATERMARK;
pub use runtime::{spawn, JobHandle, JobStatus, RuntimeConfig};
pub use source::{
    BadRecord, DeadLetterSink, KafkaOrigin, Sink, SinkFactory, Source, SourceFactory, SourcePoll,
    SplitId, Visibility, WatermarkSpec, FINAL_CHECKPOINT,
};
pub use state::{StateRows, StateSnapshot, StateTable};
pub use values::ValuesSource;
