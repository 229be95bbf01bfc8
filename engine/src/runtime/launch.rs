//! Starting a job: checks a checkpoint to restore against the graph, wires
//! a bounded channel for every pair of subtasks an edge connects, builds
//! each subtask's chain of operators (restoring their state), spawns one
//! task per subtask, the checkpoint coordinator and the monitor, and a
//! supervisor that reports how the job ended.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc::{self, Receiver, Sender};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::chain::{Chain, ChainedOperator};
use super::inputs::Inputs;
use super::output::{HeldMarkers, Output, Partitioning, Router};
use super::task::{run_channel_subtask, run_source_subtask, SourceSubtask, SubtaskParts};
use super::watermarks::WatermarkGenerator;
use super::{
    metrics_of, supervise, task_groups, JobHandle, JobStatus, RuntimeConfig, SnapshotAck,
    SourceControl,
};
use crate::checkpoint::{fingerprint, CheckpointMetrics, Coordinator, Restored};
use crate::error::{EngineError, Result};
use crate::graph::{EdgeKind, Graph, NodeId, NodeKind};
use crate::message::{CheckpointId, Message};
use crate::metrics::{JobMetrics, SubtaskMetrics};
use crate::operator::SubtaskInfo;

/// A task's senders on each of its outgoing edges (by edge position).
type EdgeSenders = BTreeMap<usize, Vec<Sender<Message>>>;

/// The channels between task groups, by (group, subtask).
#[derive(Default)]
struct Wiring {
    /// A group's senders per outgoing edge (by edge position): a node
    /// whose rows feed several consumers has a router for each.
    senders: HashMap<(usize, usize), EdgeSenders>,
    receivers: HashMap<(usize, usize), Vec<Receiver<Message>>>,
    /// The input side (edge position at the head) of each receiver.
    sides: HashMap<(usize, usize), Vec<usize>>,
    /// The receiving end of each channel, watched for its fill.
    watched: HashMap<(usize, usize), Vec<mpsc::WeakSender<Message>>>,
    /// How each group's output is spread over each edge's channels.
    partitioning: HashMap<(usize, usize), Partitioning>,
}

impl Wiring {
    fn new(graph: &Graph, groups: &[Vec<NodeId>], capacity: usize) -> Result<Self> {
        let tail_of: HashMap<NodeId, usize> = groups
            .iter()
            .enumerate()
            .filter_map(|(g, nodes)| nodes.last().map(|n| (*n, g)))
            .collect();
        let mut wiring = Wiring::default();
        for (g, nodes) in groups.iter().enumerate() {
            let head = nodes[0];
            for (side, edge) in graph.inputs(head).enumerate() {
                let edge_id = graph
                    .edges
                    .iter()
                    .position(|e| std::ptr::eq(e, edge))
                    .ok_or_else(|| EngineError::Graph("an edge went missing".into()))?;
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
                        let (tx, rx) = mpsc::channel(capacity.max(1));
                        wiring
                            .watched
                            .entry((g, j))
                            .or_default()
                            .push(tx.downgrade());
                        wiring
                            .senders
                            .entry((from_group, i))
                            .or_default()
                            .entry(edge_id)
                            .or_default()
                            .push(tx);
                        wiring.receivers.entry((g, j)).or_default().push(rx);
                        wiring.sides.entry((g, j)).or_default().push(side);
                    }
                }
                wiring.partitioning.insert(
                    (from_group, edge_id),
                    match &edge.kind {
                        EdgeKind::Forward => Partitioning::Forward,
                        EdgeKind::Shuffle { keys, .. } => Partitioning::Hash(keys.clone()),
                        EdgeKind::Broadcast => Partitioning::Broadcast,
                        EdgeKind::Rebalance => Partitioning::RoundRobin,
                    },
                );
            }
        }
        Ok(wiring)
    }
}

/// A job being started.
pub(super) struct Launch {
    graph: Graph,
    config: RuntimeConfig,
    groups: Vec<Vec<NodeId>>,
    wiring: Wiring,
    restore: Option<Restored>,
    fingerprint: String,
    metrics: Arc<JobMetrics>,
    checkpoint_metrics: Arc<CheckpointMetrics>,
    /// Where subtasks report their snapshots, and the coordinator reads.
    acks: Option<Sender<SnapshotAck>>,
    coordinator_acks: Option<Receiver<SnapshotAck>>,
    commits_tx: watch::Sender<CheckpointId>,
    commits: watch::Receiver<CheckpointId>,
    tasks: JoinSet<Result<()>>,
    controls: Vec<Sender<SourceControl>>,
}

impl Launch {
    pub fn new(graph: Graph, mut config: RuntimeConfig) -> Result<Self> {
        graph.validate()?;
        let fingerprint = fingerprint(&graph);
        let restore = config.restore.take();
        if let Some(r) = &restore {
            if r.fingerprint != fingerprint {
                return Err(EngineError::Graph(format!(
                    "checkpoint {} was taken by a different job (operators or parallelism changed); start without it",
                    r.location
                )));
            }
            tracing::info!(checkpoint = r.checkpoint_id, location = %r.location, "restoring");
        }
        // With checkpoints, subtasks report to the coordinator and sinks
        // learn from it when to commit.
        let (commits_tx, mut commits) = watch::channel(0);
        if let Some(external) = config.external_commits.clone() {
            commits = external;
        }
        let (acks, coordinator_acks) = match &config.checkpoint {
            Some(_) => {
                let (tx, rx) = mpsc::channel(1024);
                (Some(tx), Some(rx))
            }
            None => (config.checkpoint_acks.clone(), None),
        };
        let groups = task_groups(&graph);
        let wiring = Wiring::new(&graph, &groups, config.channel_capacity)?;
        Ok(Launch {
            graph,
            config,
            groups,
            wiring,
            restore,
            fingerprint,
            metrics: Arc::new(JobMetrics::default()),
            checkpoint_metrics: Arc::new(CheckpointMetrics::default()),
            acks,
            coordinator_acks,
            commits_tx,
            commits,
            tasks: JoinSet::new(),
            controls: Vec::new(),
        })
    }

    /// Spawns every task and returns the job's handle.
    pub fn start(mut self) -> Result<JobHandle> {
        for g in 0..self.groups.len() {
            let parallelism = self.graph.nodes[self.groups[g][0]].parallelism;
            for subtask in 0..parallelism {
                let assigned = self.config.subtasks.as_ref();
                if assigned.is_some_and(|s| !s.contains(&subtask)) {
                    continue;
                }
                self.spawn_subtask(g, subtask)?;
            }
        }
        self.spawn_coordinator();
        let (alive_tx, alive) = watch::channel(true);
        tokio::spawn(crate::metrics::monitor(
            self.metrics.clone(),
            self.config.monitor.clone(),
            alive,
        ));
        let (status_tx, status) = watch::channel(JobStatus::Running);
        let error = Arc::new(parking_lot::Mutex::new(None));
        let supervisor = tokio::spawn(supervise_job(
            self.tasks,
            status_tx,
            alive_tx,
            error.clone(),
        ));
        Ok(JobHandle {
            metrics: self.metrics,
            checkpoints: self.checkpoint_metrics,
            controls: self.controls,
            status,
            error,
            abort: supervisor.abort_handle(),
        })
    }

    /// One subtask of task group `g`: its chain and output, as a task.
    fn spawn_subtask(&mut self, g: usize, subtask: usize) -> Result<()> {
        let nodes = self.groups[g].clone();
        let head = self.graph.nodes[nodes[0]].clone();
        let info = SubtaskInfo {
            index: subtask,
            parallelism: head.parallelism,
        };
        let (ops, sink, last_metrics) = self.chain(g, &nodes, info)?;
        let output = self.output(g, &nodes, subtask, sink, last_metrics)?;
        let parts = SubtaskParts {
            chain: Chain::new(ops, subtask),
            output,
            subtask,
            acks: self.acks.clone(),
            checkpointing: self.config.checkpoint.is_some()
                || self.config.external_commits.is_some(),
            commits: self.commits.clone(),
            alignment_ms: 0,
        };
        match &head.kind {
            NodeKind::Source(source) => {
                let (tx, rx) = mpsc::channel(16);
                self.controls.push(tx);
                let mut src = (source.factory)(info)?;
                let mut watermarks =
                    WatermarkGenerator::new(source.watermark.clone(), src.splits());
                if let Some(mut state) =
                    self.restore.as_mut().and_then(|r| r.take(head.id, subtask))
                {
                    watermarks.restore(&mut state)?;
                    src.restore(state)?;
                }
                let src = SourceSubtask {
                    markers: self.config.latency_marker_interval,
                    node: head.id,
                    source: src,
                    computed: source.computed.clone(),
                    watermarks,
                    metrics: metrics_of(&self.metrics, head.id, subtask),
                    job_metrics: self.metrics.clone(),
                    splits: HashMap::new(),
                    control: rx,
                };
                self.tasks.spawn(run_source_subtask(src, parts));
            }
            _ => {
                let receivers = self
                    .wiring
                    .receivers
                    .remove(&(g, subtask))
                    .unwrap_or_default();
                let sides = self.wiring.sides.remove(&(g, subtask)).unwrap_or_default();
                self.tasks.spawn(run_channel_subtask(
                    Inputs::with_sides(receivers, sides),
                    parts,
                ));
            }
        }
        Ok(())
    }

    /// The operators of a group's subtask (state restored), the sink at
    /// its end if any, and the metrics of its last node.
    #[allow(clippy::type_complexity)]
    fn chain(
        &mut self,
        g: usize,
        nodes: &[NodeId],
        info: SubtaskInfo,
    ) -> Result<(
        Vec<ChainedOperator>,
        Option<Output>,
        Option<Arc<SubtaskMetrics>>,
    )> {
        let subtask = info.index;
        let mut ops = Vec::new();
        let mut sink = None;
        let mut last_metrics = None;
        for (position, id) in nodes.iter().enumerate() {
            let node = &self.graph.nodes[*id];
            let mut node_metrics = SubtaskMetrics::new(node.id, node.name.clone(), subtask);
            if !self.config.detailed_metrics {
                node_metrics = node_metrics.without_details();
            }
            let node_metrics = Arc::new(node_metrics);
            self.metrics.register(node_metrics.clone());
            last_metrics = Some(node_metrics.clone());
            if position == 0 {
                for w in self
                    .wiring
                    .watched
                    .remove(&(g, subtask))
                    .unwrap_or_default()
                {
                    node_metrics.watch_input(w);
                }
            }
            // A source's state is taken with the source (and its watermarks).
            let state = match node.kind {
                NodeKind::Source(_) => None,
                _ => self.restore.as_mut().and_then(|r| r.take(node.id, subtask)),
            };
            match &node.kind {
                NodeKind::Operator {
                    factory,
                    late_output,
                } => {
                    let mut operator = factory(info)?;
                    if let Some(state) = state {
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
                NodeKind::Sink(sink_node) => {
                    if let Some(target) = sink_node.latency_target {
                        node_metrics.set_latency_target(crate::metrics::LatencyTarget {
                            target,
                            upstream: self.graph.upstream(node.id),
                        });
                    }
                    let mut writer: Box<dyn crate::source::Sink> = match &sink_node.spill {
                        Some(spill) => Box::new(super::breaker::BreakerSink::new(
                            sink_node.factory.clone(),
                            info,
                            &node.name,
                            spill.clone(),
                            node_metrics.clone(),
                        )?),
                        None => (sink_node.factory)(info)?,
                    };
                    if sink_node.best_effort {
                        writer = Box::new(super::best_effort::BestEffortSink::spawn(
                            writer,
                            node_metrics.clone(),
                        ));
                    }
                    sink = Some(Output::Sink {
                        sink: writer,
                        metrics: node_metrics,
                        node: node.id,
                        restore: state,
                        held: HeldMarkers::default(),
                    })
                }
                NodeKind::Source(_) => {}
            }
        }
        Ok((ops, sink, last_metrics))
    }

    /// Where a subtask's rows go: its sink, or the channels out of its group.
    fn output(
        &mut self,
        g: usize,
        nodes: &[NodeId],
        subtask: usize,
        sink: Option<Output>,
        last_metrics: Option<Arc<SubtaskMetrics>>,
    ) -> Result<Output> {
        if let Some(sink) = sink {
            return Ok(sink);
        }
        let tail = &self.graph.nodes[nodes[nodes.len() - 1]];
        let edges = self
            .wiring
            .senders
            .remove(&(g, subtask))
            .unwrap_or_default();
        if edges.is_empty() {
            return Err(EngineError::Graph(format!(
                "'{}' has nowhere to send",
                tail.name
            )));
        }
        let metrics = last_metrics
            .unwrap_or_else(|| Arc::new(SubtaskMetrics::new(tail.id, tail.name.clone(), subtask)));
        let routers = edges
            .into_iter()
            .map(|(edge, senders)| Router {
                senders,
                partitioning: self
                    .wiring
                    .partitioning
                    .get(&(g, edge))
                    .cloned()
                    .unwrap_or(Partitioning::Forward),
                next: subtask,
                metrics: metrics.clone(),
                hashes: Vec::new(),
            })
            .collect();
        Ok(Output::Channels(routers))
    }

    /// The checkpoint coordinator, when the job takes checkpoints.
    fn spawn_coordinator(&mut self) {
        let (Some(checkpoint), Some(acks)) =
            (self.config.checkpoint.clone(), self.coordinator_acks.take())
        else {
            return;
        };
        let expected = self
            .groups
            .iter()
            .map(|g| self.graph.nodes[g[0]].parallelism)
            .sum();
        let coordinator = Coordinator {
            config: checkpoint,
            controls: self.controls.clone(),
            acks,
            expected,
            commits: self.commits_tx.clone(),
            metrics: self.checkpoint_metrics.clone(),
            next_id: self.restore.as_ref().map_or(1, |r| r.checkpoint_id + 1),
            fingerprint: self.fingerprint.clone(),
        };
        self.tasks.spawn(async move {
            coordinator.run().await;
            Ok(())
        });
    }
}

/// Waits for every task; publishes how the job ended (`Cancelled` if the
/// supervisor itself is aborted first).
pub(super) async fn supervise_job(
    tasks: JoinSet<Result<()>>,
    status_tx: watch::Sender<JobStatus>,
    alive_tx: watch::Sender<bool>,
    error: Arc<parking_lot::Mutex<Option<EngineError>>>,
) {
    struct OnDrop(Option<watch::Sender<JobStatus>>);
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
            *error.lock() = Some(e);
            JobStatus::Failed(message)
        }
    };
    if let Some(tx) = guard.0.take() {
        let _ = tx.send(status);
    }
}
