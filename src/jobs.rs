//! The jobs a session started: numbered, listed and found by id, and
//! shared with the metrics server and the `weir_metrics` system streams.

use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Result, WeirError};
use crate::job::Job;

/// The jobs a session has started, as the metrics server and the system
/// streams read them.
pub type SharedJobs = Arc<RwLock<Vec<Job>>>;

/// A session's jobs and the id the next one gets.
#[derive(Default)]
pub(crate) struct JobRegistry {
    jobs: SharedJobs,
    started: u64,
}

impl JobRegistry {
    pub(crate) fn shared(&self) -> SharedJobs {
        self.jobs.clone()
    }

    /// The id for the next job: `1`, `2`, … in submission order.
    pub(crate) fn next_id(&mut self) -> String {
        self.started += 1;
        self.started.to_string()
    }

    pub(crate) fn add(&self, job: Job) {
        self.jobs.write().push(job);
    }

    pub(crate) fn list(&self) -> Vec<Job> {
        self.jobs.read().clone()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Job> {
        self.jobs.read().iter().find(|j| j.id() == id).cloned()
    }

    /// The job with `id`, or the error `DESCRIBE JOB` / `STOP JOB` give
    /// for an unknown one; `source` is the statement's text.
    pub(crate) fn find(&self, id: &str, source: &str) -> Result<Job> {
        self.get(id).ok_or_else(|| {
            WeirError::sql(
                weir_sql::SqlError::new(format!("no job '{id}'")).with_hint("SHOW JOBS lists them"),
                source,
            )
        })
    }
}
