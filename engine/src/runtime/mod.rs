//! Running a [`Graph`]: tasks, channels, and the handle to a running job.
//!
//! Nodes joined by a forward edge run in one task (operator chaining, as in
//! Flink); every other edge is a set of bounded channels, one per pair of
//! sending and receiving subtasks, so a slow consumer blocks its producers
//! and backpressure reaches the sources.

mod best_effort;
mod breaker;
mod chain;
mod inputs;
mod launch;
mod output;
mod task;
mod watermarks;

pub use output::hash_split;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::Sender;
use tokio::task::JoinSet;

use crate::checkpoint::{CheckpointConfig, CheckpointMetrics, Restored};
use crate::error::{EngineError, Result};
use crate::graph::{topological_order, Graph, NodeId};
use crate::message::{now_millis, Barrier, CheckpointId};
use crate::metrics::{JobMetrics, MetricsSnapshot, SubtaskMetrics};
use crate::state::StateSnapshot;

/// Settings of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Messages each channel holds before its sender waits.
    pub channel_capacity: usize,
    /// Where subtasks report snapshots taken at barriers, when no
    /// checkpoint coordinator runs (tests inject barriers themselves).
    pub checkpoint_acks: Option<Sender<SnapshotAck>>,
    /// Periodic checkpoints.
    pub checkpoint: Option<CheckpointConfig>,
    /// State to start from.
    pub restore: Option<Restored>,
    /// How often sources inject latency markers (`None`: never).
    pub latency_marker_interval: Option<std::time::Duration>,
    /// Record timing, latency histograms and hot keys (counters always).
    pub detailed_metrics: bool,
    /// Detectors: stalled watermarks, hot partitions and keys, backpressure.
    pub monitor: crate::metrics::MonitorConfig,
    /// Only these subtask indexes run (`None`: all): a process of a
    /// cluster job runs the tasks assigned to it.
    pub subtasks: Option<std::collections::BTreeSet<usize>>,
    /// Checkpoints completed elsewhere (a cluster job's epochs): subtasks
    /// report snapshots to `checkpoint_acks`, and sinks commit the
    /// checkpoints this announces.
    pub external_commits: Option<tokio::sync::watch::Receiver<CheckpointId>>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            channel_capacity: 16,
            checkpoint_acks: None,
            checkpoint: None,
            restore: None,
            latency_marker_interval: Some(std::time::Duration::from_secs(1)),
            detailed_metrics: true,
            monitor: crate::metrics::MonitorConfig::default(),
            subtasks: None,
            external_commits: None,
        }
    }
}

impl std::fmt::Debug for CheckpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointConfig")
            .field("interval", &self.interval)
            .finish()
    }
}

/// Commands to a source subtask.
#[derive(Debug, Clone)]
pub enum SourceControl {
    /// Stop reading. With `drain`, send the final watermark first so every
    /// open window fires.
    Stop { drain: bool },
    /// Inject a checkpoint barrier.
    Barrier(Barrier),
}

/// The state a subtask reported for a checkpoint.
#[derive(Debug, Clone)]
pub struct SnapshotAck {
    pub checkpoint_id: CheckpointId,
    pub subtask: usize,
    /// How long the subtask waited for the barrier on all its inputs.
    pub alignment_ms: u64,
    /// One snapshot per node in the subtask's chain (a source's positions first).
    pub states: Vec<(NodeId, StateSnapshot)>,
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    /// Every source ended (or was stopped) and every sink flushed.
    Finished,
    /// The first error of any task.
    Failed(String),
    /// Aborted.
    Cancelled,
}

impl JobStatus {
    pub fn is_running(&self) -> bool {
        *self == JobStatus::Running
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobStatus::Running => write!(f, "RUNNING"),
            JobStatus::Finished => write!(f, "FINISHED"),
            JobStatus::Failed(e) => write!(f, "FAILED: {e}"),
            JobStatus::Cancelled => write!(f, "CANCELLED"),
        }
    }
}

/// A running job. Cheap to share: every method takes `&self`.
pub struct JobHandle {
    metrics: Arc<JobMetrics>,
    checkpoints: Arc<CheckpointMetrics>,
    controls: Vec<Sender<SourceControl>>,
    status: tokio::sync::watch::Receiver<JobStatus>,
    error: Arc<parking_lot::Mutex<Option<EngineError>>>,
    abort: tokio::task::AbortHandle,
}

impl JobHandle {
    /// A copy of the job's metrics now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// The live metrics registry.
    pub fn job_metrics(&self) -> Arc<JobMetrics> {
        self.metrics.clone()
    }

    /// Checkpoint figures (all zero when the job does not checkpoint).
    pub fn checkpoints(&self) -> crate::checkpoint::CheckpointSnapshot {
        self.checkpoints.snapshot()
    }

    /// Asks every source to stop; with `drain` open windows fire first.
    pub async fn stop(&self, drain: bool) {
        for control in &self.controls {
            let _ = control.send(SourceControl::Stop { drain }).await;
        }
    }

    /// Injects a checkpoint barrier at every source.
    pub async fn inject_barrier(&self, checkpoint_id: CheckpointId) {
        let barrier = Barrier {
            checkpoint_id,
            injected_at: now_millis(),
        };
        for control in &self.controls {
            let _ = control.send(SourceControl::Barrier(barrier)).await;
        }
    }

    pub fn status(&self) -> JobStatus {
        self.status.borrow().clone()
    }

    pub fn is_finished(&self) -> bool {
        !self.status().is_running()
    }

    /// Cancels every task at once (no flushing).
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// Waits for the job to end; its first error, if any.
    pub async fn wait(&self) -> Result<()> {
        let mut status = self.status.clone();
        let _ = status.wait_for(|s| !s.is_running()).await;
        let last = status.borrow().clone();
        match last {
            JobStatus::Finished => Ok(()),
            JobStatus::Cancelled => Err(EngineError::Cancelled),
            JobStatus::Failed(message) => Err(self
                .error
                .lock()
                .take()
                .unwrap_or(EngineError::Task(message))),
            JobStatus::Running => Err(EngineError::Task("job status channel closed".into())),
        }
    }
}

impl JobHandle {
    /// A job run by `run` instead of [`spawn`] (a process's share of a
    /// cluster job, which starts and stops local jobs itself): its status
    /// is how `run` ends, and stop requests go to `control`.
    pub fn external(
        run: impl std::future::Future<Output = Result<()>> + Send + 'static,
        control: Sender<SourceControl>,
        metrics: Arc<JobMetrics>,
    ) -> JobHandle {
        let mut tasks = JoinSet::new();
        tasks.spawn(run);
        let (alive_tx, _alive) = tokio::sync::watch::channel(true);
        let (status_tx, status) = tokio::sync::watch::channel(JobStatus::Running);
        let error = Arc::new(parking_lot::Mutex::new(None));
        let supervisor = tokio::spawn(launch::supervise_job(
            tasks,
            status_tx,
            alive_tx,
            error.clone(),
        ));
        JobHandle {
            metrics,
            checkpoints: Arc::new(CheckpointMetrics::default()),
            controls: vec![control],
            status,
            error,
            abort: supervisor.abort_handle(),
        }
    }
}

/// The nodes run by one task, head first.
fn task_groups(graph: &Graph) -> Vec<Vec<NodeId>> {
    let mut groups: Vec<Vec<NodeId>> = Vec::new();
    let mut group_of: HashMap<NodeId, usize> = HashMap::new();
    for id in topological_order(graph) {
        let upstream = graph
            .is_chained(id)
            .then(|| graph.inputs(id).next().map(|e| e.from))
            .flatten();
        match upstream.and_then(|from| group_of.get(&from).copied()) {
            Some(g) => {
                groups[g].push(id);
                group_of.insert(id, g);
            }
            None => {
                group_of.insert(id, groups.len());
                groups.push(vec![id]);
            }
        }
    }
    groups
}

/// Starts every task of `graph` on the current tokio runtime.
pub fn spawn(graph: Graph, config: RuntimeConfig) -> Result<JobHandle> {
    launch::Launch::new(graph, config)?.start()
}

fn metrics_of(metrics: &JobMetrics, node: NodeId, subtask: usize) -> Arc<SubtaskMetrics> {
    metrics
        .find(node, subtask)
        .unwrap_or_else(|| Arc::new(SubtaskMetrics::new(node, "source", subtask)))
}

/// Waits for every task; on the first failure cancels the rest and returns
/// that error.
async fn supervise(mut tasks: JoinSet<Result<()>>) -> Result<()> {
    let mut failure: Option<EngineError> = None;
    while let Some(joined) = tasks.join_next().await {
        let error = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) if e.is_cancelled() => continue,
            Err(e) => EngineError::Task(format!("a task panicked: {e}")),
        };
        let replace = match &failure {
            None => true,
            Some(EngineError::Cancelled) => !matches!(error, EngineError::Cancelled),
            Some(_) => false,
        };
        if replace {
            failure = Some(error);
        }
        tasks.abort_all();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
