//! A submitted `INSERT INTO` job.

use std::sync::Arc;
use std::time::SystemTime;

use weir_engine::{JobHandle, JobStatus, MetricsSnapshot};

use crate::error::{Result, WeirError};

/// A running (or finished) continuous job. Clones share the job.
#[derive(Clone)]
pub struct Job {
    inner: Arc<JobInner>,
}

struct JobInner {
    id: String,
    name: String,
    sql: String,
    sink: String,
    started: SystemTime,
    expected_rows: Option<u64>,
    handle: JobHandle,
}

impl Job {
    pub(crate) fn new(
        id: String,
        name: String,
        sql: String,
        sink: String,
        expected_rows: Option<u64>,
        handle: JobHandle,
    ) -> Self {
        Job {
            inner: Arc::new(JobInner {
                id,
                name,
                sql,
                sink,
                started: SystemTime::now(),
                expected_rows,
                handle,
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The statement that started the job.
    pub fn sql(&self) -> &str {
        &self.inner.sql
    }

    pub fn sink(&self) -> &str {
        &self.inner.sink
    }

    pub fn started(&self) -> SystemTime {
        self.inner.started
    }

    /// Rows the job's sources will read, when bounded and known.
    pub fn expected_rows(&self) -> Option<u64> {
        self.inner.expected_rows
    }

    pub fn status(&self) -> JobStatus {
        self.inner.handle.status()
    }

    /// The job's metrics now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.handle.metrics()
    }

    /// Checkpoint figures: completed, failed, last id, duration, size,
    /// alignment and when the last one completed.
    pub fn checkpoints(&self) -> weir_engine::CheckpointSnapshot {
        self.inner.handle.checkpoints()
    }

    /// Stops the job gracefully: sources stop; with `drain`, the final
    /// watermark fires every open window first; sinks flush.
    pub async fn stop(&self, drain: bool) {
        self.inner.handle.stop(drain).await;
    }

    /// Cancels the job at once, without flushing.
    pub fn cancel(&self) {
        self.inner.handle.abort();
    }

    /// Waits until the job ends.
    pub async fn wait(&self) -> Result<()> {
        self.inner.handle.wait().await.map_err(WeirError::from)
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .finish()
    }
}
