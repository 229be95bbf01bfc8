//! Running a [`Graph`]: tasks, channels, and the handle to a running job.
//!
//! Nodes joined by a forward edge run in one task (operator chaining, as in
//! Flink); every other edge is a set of bounded channels, one per pair of
//! sending and receiving subtasks, so a slow consumer blocks its producers
//! and backpressure reaches the sources.

mod chain;
mod inputs;
mod output;
mod task;
mod watermarks;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::{self, Receiver, Sender};
use tokio::task::JoinSet;

use crate::checkpoint::{fingerprint, CheckpointConfig, CheckpointMetrics, Coordinator, Restored};
use crate::error::{EngineError, Result};
use crate::graph::{topological_order, EdgeKind, Graph, NodeId, NodeKind};
use crate::message::{now_millis, Barrier, CheckpointId, Message};
use crate::metrics::{JobMetrics, MetricsSnapshot, SubtaskMetrics};
use crate::operator::SubtaskInfo;
use crate::state::StateSnapshot;
use chain::{Chain, ChainedOperator};
use inputs::Inputs;
use output::{Output, Partitioning, Router};
use task::{run_channel_subtask, run_source_subtask, SourceSubtask, SubtaskParts};
use watermarks::WatermarkGenerator;

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

/// The nodes run by one task, head first.
fn task_groups(graph: &Graph) -> Vec<Vec<NodeId>> {
    let mut groups: Vec<Vec<NodeId>> = Vec::new();
    let mut group_of: HashMap<NodeId, usize> = HashMap::new();
    for id in topological_order(graph) {
        let upstream = graph
            .is_chained(id)
            .then(|| graph.inputs(id).next().map(|e| e.from))
            .flatten()
            .filter(|from| graph.outputs(*from).count() == 1);
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
pub fn spawn(graph: Graph, mut config: RuntimeConfig) -> Result<JobHandle> {
    graph.validate()?;
    let metrics = Arc::new(JobMetrics::default());
    let checkpoint_metrics = Arc::new(CheckpointMetrics::default());
    let fingerprint = fingerprint(&graph);
    let mut restore = config.restore.take();
    if let Some(r) = &restore {
        if r.fingerprint != fingerprint {
            return Err(EngineError::Graph(format!(
                "checkpoint {} was taken by a different job (operators or parallelism changed); start without it",
                r.location
            )));
        }
        tracing::info!(checkpoint = r.checkpoint_id, location = %r.location, "restoring");
    }
    // With checkpoints, subtasks report to the coordinator and sinks learn
    // from it when to commit.
    let (commits_tx, commits) = tokio::sync::watch::channel(0);
    let mut coordinator_acks = None;
    let acks_tx = match &config.checkpoint {
        Some(_) => {
            let (tx, rx) = mpsc::channel(1024);
            coordinator_acks = Some(rx);
            Some(tx)
        }
        None => config.checkpoint_acks.clone(),
    };
    let checkpointing = config.checkpoint.is_some();
    let groups = task_groups(&graph);
    let tail_of: HashMap<NodeId, usize> = groups
        .iter()
        .enumerate()
        .filter_map(|(g, nodes)| nodes.last().map(|n| (*n, g)))
        .collect();

    // Channels for every edge between task groups.
    let mut senders: HashMap<(usize, usize), Vec<Sender<Message>>> = HashMap::new();
    let mut partitioning: HashMap<usize, Partitioning> = HashMap::new();
    let mut receivers: HashMap<(usize, usize), Vec<Receiver<Message>>> = HashMap::new();
    let mut watched: HashMap<(usize, usize), Vec<mpsc::WeakSender<Message>>> = HashMap::new();
    for (g, nodes) in groups.iter().enumerate() {
        let head = nodes[0];
        for edge in graph.inputs(head) {
            let from_group = *tail_of
                .get(&edge.from)
                .ok_or_else(|| EngineError::Graph("edge from the middle of a chain".into()))?;
            let p_from = graph.nodes[edge.from].parallelism;
            let p_to = graph.nodes[head].parallelism;
            for i in 0..p_from {
                for j in 0..p_to {
                    if edge.kind == EdgeKind::Forward && i != j {
                        continue;
                    }
                    let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
                    watched.entry((g, j)).or_default().push(tx.downgrade());
                    senders.entry((from_group, i)).or_default().push(tx);
                    receivers.entry((g, j)).or_default().push(rx);
                }
            }
            partitioning.insert(
                from_group,
                match &edge.kind {
                    EdgeKind::Forward => Partitioning::Forward,
                    EdgeKind::Shuffle { keys, .. } => Partitioning::Hash(keys.clone()),
                    EdgeKind::Broadcast => Partitioning::Broadcast,
                    EdgeKind::Rebalance => Partitioning::RoundRobin,
                },
            );
        }
    }

    let mut tasks = JoinSet::new();
    let mut controls = Vec::new();
    for (g, nodes) in groups.iter().enumerate() {
        let head = &graph.nodes[nodes[0]];
        let tail = &graph.nodes[nodes[nodes.len() - 1]];
        for subtask in 0..head.parallelism {
            let info = SubtaskInfo {
                index: subtask,
                parallelism: head.parallelism,
            };
            let mut ops = Vec::new();
            let mut sink = None;
            let mut last_metrics: Option<Arc<SubtaskMetrics>> = None;
            let mut take_state =
                |node: NodeId| restore.as_mut().and_then(|r| r.take(node, subtask));
            for id in nodes {
                let node = &graph.nodes[*id];
                let mut node_metrics = SubtaskMetrics::new(node.id, node.name.clone(), subtask);
                if !config.detailed_metrics {
                    node_metrics = node_metrics.without_details();
                }
                let node_metrics = Arc::new(node_metrics);
                metrics.register(node_metrics.clone());
                last_metrics = Some(node_metrics.clone());
                if *id == head.id {
                    for w in watched.remove(&(g, subtask)).unwrap_or_default() {
                        node_metrics.watch_input(w);
                    }
                }
                match &node.kind {
                    NodeKind::Operator {
                        factory,
                        late_output,
                    } => {
                        let mut operator = factory(info)?;
                        if let Some(state) = take_state(node.id) {
                            operator
                                .restore(state)
                                .map_err(|e| e.in_operator(&node.name, subtask))?;
                        }
                        ops.push(ChainedOperator {
                            node: node.id,
                            operator,
                            metrics: node_metrics,
                            late_output: late_output.clone(),
                        })
                    }
                    NodeKind::Sink(factory) => {
                        sink = Some((factory(info)?, node_metrics, node.id, take_state(node.id)))
                    }
                    NodeKind::Source(_) => {}
                }
            }
            let output = match sink {
                Some((sink, metrics, node, state)) => Output::Sink {
                    sink,
                    metrics,
                    node,
                    restore: state,
                },
                None => Output::Channels(Router {
                    senders: senders.remove(&(g, subtask)).unwrap_or_default(),
                    partitioning: partitioning
                        .get(&g)
                        .cloned()
                        .unwrap_or(Partitioning::Forward),
                    next: subtask,
                    metrics: last_metrics.clone().unwrap_or_else(|| {
                        Arc::new(SubtaskMetrics::new(tail.id, tail.name.clone(), subtask))
                    }),
                    hashes: Vec::new(),
                }),
            };
            if let Output::Channels(router) = &output {
                if router.senders.is_empty() {
                    return Err(EngineError::Graph(format!(
                        "'{}' has nowhere to send",
                        tail.name
                    )));
                }
            }
            let parts = SubtaskParts {
                chain: Chain::new(ops, subtask),
                output,
                subtask,
                acks: acks_tx.clone(),
                checkpointing,
                commits: commits.clone(),
                alignment_ms: 0,
            };
            match &head.kind {
                NodeKind::Source(source) => {
                    let (tx, rx) = mpsc::channel(16);
                    controls.push(tx);
                    let mut src = (source.factory)(info)?;
                    let source_metrics = metrics_of(&metrics, head.id, subtask);
                    let mut watermarks =
                        WatermarkGenerator::new(source.watermark.clone(), src.splits());
                    if let Some(mut state) = restore.as_mut().and_then(|r| r.take(head.id, subtask))
                    {
                        watermarks.restore(&mut state)?;
                        src.restore(state)?;
                    }
                    let src = SourceSubtask {
                        markers: config.latency_marker_interval,
                        node: head.id,
                        source: src,
                        computed: source.computed.clone(),
                        watermarks,
                        metrics: source_metrics,
                        job_metrics: metrics.clone(),
                        splits: HashMap::new(),
                        control: rx,
                    };
                    tasks.spawn(run_source_subtask(src, parts));
                }
                _ => {
                    let inputs = Inputs::new(receivers.remove(&(g, subtask)).unwrap_or_default());
                    tasks.spawn(run_channel_subtask(inputs, parts));
                }
            }
        }
    }

    if let (Some(checkpoint), Some(acks)) = (config.checkpoint.clone(), coordinator_acks) {
        let expected = groups.iter().map(|g| graph.nodes[g[0]].parallelism).sum();
        let coordinator = Coordinator {
            config: checkpoint,
            controls: controls.clone(),
            acks,
            expected,
            commits: commits_tx,
            metrics: checkpoint_metrics.clone(),
            next_id: restore.as_ref().map_or(1, |r| r.checkpoint_id + 1),
            fingerprint,
        };
        tasks.spawn(async move {
            coordinator.run().await;
            Ok(())
        });
    } else {
        drop(commits_tx);
    }

    let (alive_tx, alive) = tokio::sync::watch::channel(true);
    tokio::spawn(crate::metrics::monitor(
        metrics.clone(),
        config.monitor.clone(),
        alive,
    ));

    let (status_tx, status) = tokio::sync::watch::channel(JobStatus::Running);
    let error = Arc::new(parking_lot::Mutex::new(None));
    let error_slot = error.clone();
    let supervisor = tokio::spawn(async move {
        // Reports Cancelled if this task is aborted before it finishes.
        struct OnDrop(Option<tokio::sync::watch::Sender<JobStatus>>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    tx.send_if_modified(|s| {
                        let running = s.is_running();
                        if running {
                            *s = JobStatus::Cancelled;
                        }
                        running
                    });
                }
            }
        }
        let mut guard = OnDrop(Some(status_tx));
        let result = supervise(tasks).await;
        let _ = alive_tx.send(false);
        let status = match result {
            Ok(()) => JobStatus::Finished,
            Err(EngineError::Cancelled) => JobStatus::Cancelled,
            Err(e) => {
                let message = e.to_string();
                *error_slot.lock() = Some(e);
                JobStatus::Failed(message)
            }
        };
        if let Some(tx) = guard.0.take() {
            let _ = tx.send(status);
        }
    });
    Ok(JobHandle {
        metrics,
        checkpoints: checkpoint_metrics,
        controls,
        status,
        error,
        abort: supervisor.abort_handle(),
    })
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
