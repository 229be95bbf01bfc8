//! The engine's one error type.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// Errors raised while building or running a streaming job.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// An operator failed; `operator` names it as EXPLAIN does.
    #[error("operator '{operator}' (subtask {subtask}): {source}")]
    Operator {
        operator: String,
        subtask: usize,
        #[source]
        source: Box<EngineError>,
    },
    /// A connector (source, sink or dead-letter output) failed.
    #[error("{connector}: {message}")]
    Connector { connector: String, message: String },
    /// A record could not be decoded and the stream's policy is `'bad-data' = 'fail'`.
    #[error("bad record in {stream}: {reason}")]
    BadRecord { stream: String, reason: String },
    /// A checkpointed state table does not have the columns its operator
    /// declares (a checkpoint from another version, or a corrupt file).
    #[error("checkpointed state table '{table}': {message}")]
    State { table: String, message: String },
    /// The graph is not well formed (a planner bug or an unsupported shape).
    #[error("invalid graph: {0}")]
    Graph(String),
    /// The job was cancelled before it finished.
    #[error("job cancelled")]
    Cancelled,
    /// A task ended without reporting (it panicked or was aborted).
    #[error("task failed: {0}")]
    Task(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub fn connector(connector: impl Into<String>, message: impl std::fmt::Display) -> Self {
        EngineError::Connector {
            connector: connector.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn in_operator(self, operator: &str, subtask: usize) -> Self {
        match self {
            e @ EngineError::Operator { .. } => e,
            e @ EngineError::Cancelled => e,
            e => EngineError::Operator {
                operator: operator.to_string(),
                subtask,
                source: Box::new(e),
            },
        }
    }
}
