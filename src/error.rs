//! The embedded API's error: a SQL error (with where it is) or a job's.

use weir_engine::EngineError;
use weir_planner::PlanError;
use weir_sql::SqlError;

#[derive(Debug, thiserror::Error)]
pub enum WeirError {
    /// The statement is wrong: parse or plan error, with position and hint.
    #[error("{error}")]
    Sql {
        error: SqlError,
        /// The text the position refers to.
        source_text: String,
    },
    /// The job failed while running.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// A statement was used where it does not fit (e.g. `query` with an INSERT).
    #[error("{0}")]
    Usage(String),
}

impl WeirError {
    pub(crate) fn sql(error: SqlError, source_text: &str) -> Self {
        WeirError::Sql {
            error,
            source_text: source_text.to_string(),
        }
    }

    /// A planning error, as the user reads it, against the text it is in.
    pub(crate) fn plan(error: PlanError, source_text: &str) -> Self {
        WeirError::sql(error.to_sql(), source_text)
    }

    /// The error as a user should see it: for SQL errors, the line with a
    /// caret under the column and a hint.
    pub fn render(&self) -> String {
        match self {
            WeirError::Sql { error, source_text } => error.render(source_text),
            other => format!("error: {other}"),
        }
    }
}

pub type Result<T, E = WeirError> = std::result::Result<T, E>;
