//! The streaming graph: operators (nodes) with a parallelism, and the edges
//! between them.

use std::fmt;
use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::operator::OperatorFactory;
use crate::operators::Projection;
use crate::source::{DeadLetterSink, SinkFactory, SourceFactory, WatermarkSpec};

pub type NodeId = usize;

/// How rows travel from the subtasks of one node to those of the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeKind {
    /// Subtask `i` feeds subtask `i` (same parallelism); chained into one task.
    Forward,
    /// Rows go to the subtask chosen by the hash of these columns.
    Shuffle {
        keys: Vec<usize>,
        names: Vec<String>,
    },
    /// Every row goes to every subtask.
    Broadcast,
    /// Rows are spread round-robin (parallelism changes without a key).
    Rebalance,
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeKind::Forward => write!(f, "forward"),
            EdgeKind::Shuffle { names, .. } => write!(f, "shuffle by hash({})", names.join(", ")),
            EdgeKind::Broadcast => write!(f, "broadcast"),
            EdgeKind::Rebalance => write!(f, "rebalance"),
        }
    }
}

/// A source node: the connector, the computed columns applied to what it
/// reads, and the watermark declared on the stream.
#[derive(Clone)]
pub struct SourceNode {
    pub factory: SourceFactory,
    /// Projections applied in order to what the connector reads; the last
    /// produces the stream's columns (empty: the connector's rows are).
    pub computed: Vec<Arc<Projection>>,
    pub watermark: Option<WatermarkSpec>,
    /// The connector's name and its `WITH` options, for what must know
    /// where rows come from: a cluster job assigns a Kafka source's
    /// partitions to processes. Empty for rows the planner makes itself.
    pub connector: ConnectorOptions,
}

/// A connector's name and options, as declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectorOptions {
    pub name: String,
    pub options: std::collections::BTreeMap<String, String>,
}

/// A sink node: the connector's writer, and what the runtime watches
/// around it.
#[derive(Clone)]
pub struct SinkNode {
    pub factory: SinkFactory,
    /// The end-to-end p99 within which the sink's rows should be visible
    /// (`'latency.target'`): over a sliding minute, compared by the
    /// monitor (an alert and `weir_latency_target_ratio` when missed).
    pub latency_target: Option<std::time::Duration>,
    /// `'sink.delivery' = 'best-effort'`: the sink runs behind a short
    /// queue and drops (and counts) what it cannot take at once, so it
    /// never slows the job.
    pub best_effort: bool,
    /// `'sink.spill.path'`: a circuit breaker sends the rows to a spill
    /// store while the sink is slow or failing, and back once it recovers.
    pub spill: Option<crate::spill::SpillSpec>,
}

impl SinkNode {
    pub fn new(factory: SinkFactory) -> Self {
        SinkNode {
            factory,
            latency_target: None,
            best_effort: false,
            spill: None,
        }
    }
}

/// What a node runs.
#[derive(Clone)]
pub enum NodeKind {
    Source(SourceNode),
    Operator {
        factory: OperatorFactory,
        /// Where rows that arrive too late go (window operators).
        late_output: Option<Arc<dyn DeadLetterSink>>,
    },
    Sink(SinkNode),
}

/// One operator of the graph, run as `parallelism` subtasks.
#[derive(Clone)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    /// One line of detail for EXPLAIN.
    pub detail: String,
    pub parallelism: usize,
    pub kind: NodeKind,
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub from: NodeId,
    pub to: NodeId,
    pub kind: EdgeKind,
}

/// A directed acyclic graph of nodes, built by the planner.
#[derive(Clone, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        detail: impl Into<String>,
        parallelism: usize,
        kind: NodeKind,
    ) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(Node {
            id,
            name: name.into(),
            detail: detail.into(),
            parallelism: parallelism.max(1),
            kind,
        });
        id
    }

    pub fn connect(&mut self, from: NodeId, to: NodeId, kind: EdgeKind) {
        self.edges.push(Edge { from, to, kind });
    }

    pub fn inputs(&self, node: NodeId) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.to == node)
    }

    /// Every node with a path to `node`.
    pub fn upstream(&self, node: NodeId) -> Vec<NodeId> {
        let mut found = Vec::new();
        let mut todo = vec![node];
        while let Some(n) = todo.pop() {
            for edge in self.inputs(n) {
                if !found.contains(&edge.from) {
                    found.push(edge.from);
                    todo.push(edge.from);
                }
            }
        }
        found.sort_unstable();
        found
    }

    pub fn outputs(&self, node: NodeId) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.from == node)
    }

    /// Checks the shape the runtime supports: sources have no inputs, sinks
    /// no outputs, forward edges join equal parallelism, every node but a
    /// sink has an output edge (several when its rows feed several
    /// consumers).
    pub fn validate(&self) -> Result<()> {
        for node in &self.nodes {
            let ins = self.inputs(node.id).count();
            let outs: Vec<_> = self.outputs(node.id).collect();
            match node.kind {
                NodeKind::Source(_) if ins > 0 => {
                    return Err(EngineError::Graph(format!(
                        "source '{}' has inputs",
                        node.name
                    )))
                }
                NodeKind::Sink(_) if !outs.is_empty() => {
                    return Err(EngineError::Graph(format!(
                        "sink '{}' has outputs",
                        node.name
                    )))
                }
                NodeKind::Operator { .. } | NodeKind::Sink(_) if ins == 0 => {
                    return Err(EngineError::Graph(format!("'{}' has no input", node.name)))
                }
                NodeKind::Source(_) | NodeKind::Operator { .. } if outs.is_empty() => {
                    return Err(EngineError::Graph(format!("'{}' has no output", node.name)))
                }
                _ => {}
            }
            for edge in outs {
                let to = self.nodes.get(edge.to).ok_or_else(|| {
                    EngineError::Graph(format!("edge to unknown node {}", edge.to))
                })?;
                if edge.kind == EdgeKind::Forward && to.parallelism != node.parallelism {
                    return Err(EngineError::Graph(format!(
                        "forward edge '{}' -> '{}' changes parallelism",
                        node.name, to.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether `node` runs in the same task as its single upstream node.
    pub fn is_chained(&self, node: NodeId) -> bool {
        let ins: Vec<_> = self.inputs(node).collect();
        // A node whose rows also go elsewhere ends its task: each consumer
        // gets them through a channel.
        ins.len() == 1 && ins[0].kind == EdgeKind::Forward && self.outputs(ins[0].from).count() == 1
    }
}

impl fmt::Display for Graph {
    /// The EXPLAIN rendering: one line per node, in data-flow order, with
    /// parallelism and the edge to the next node.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = topological_order(self);
        for (i, id) in order.iter().enumerate() {
            let node = &self.nodes[*id];
            let chained = if self.is_chained(node.id) {
                " (chained)"
            } else {
                ""
            };
            writeln!(
                f,
                "[{}] {}  parallelism={}{}",
                node.id, node.name, node.parallelism, chained
            )?;
            if !node.detail.is_empty() {
                for line in node.detail.lines() {
                    writeln!(f, "      {line}")?;
                }
            }
            for edge in self.outputs(node.id) {
                writeln!(f, "      └─ {} ─▶ [{}]", edge.kind, edge.to)?;
            }
            if i + 1 < order.len() {
                writeln!(f, "   │")?;
            }
        }
        Ok(())
    }
}

/// One stage of a job that several processes run together
/// (`docs/cluster-protocol.md`): nodes joined by forward edges. A stage
/// starts at a source or at a node that takes rows from another stage: a
/// key shuffle, a broadcast, a rebalance, or more than one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// In data-flow order; the first is where the stage starts.
    pub nodes: Vec<NodeId>,
    /// The stages feeding this one, and how rows cross to it.
    pub upstream: Vec<(usize, EdgeKind)>,
}

impl Graph {
    /// The graph cut into stages, in data-flow order.
    pub fn stages(&self) -> Vec<Stage> {
        let mut stages: Vec<Stage> = Vec::new();
        let mut stage_of = vec![0; self.nodes.len()];
        for id in topological_order(self) {
            let inputs: Vec<&Edge> = self.inputs(id).collect();
            match inputs.as_slice() {
                [only] if only.kind == EdgeKind::Forward => {
                    let stage = stage_of[only.from];
                    stage_of[id] = stage;
                    stages[stage].nodes.push(id);
                }
                _ => {
                    stage_of[id] = stages.len();
                    stages.push(Stage {
                        nodes: vec![id],
                        upstream: inputs
                            .iter()
                            .map(|e| (stage_of[e.from], e.kind.clone()))
                            .collect(),
                    });
                }
            }
        }
        stages
    }
}

/// Nodes ordered so that every node comes after its inputs.
pub fn topological_order(graph: &Graph) -> Vec<NodeId> {
    let mut order = Vec::with_capacity(graph.nodes.len());
    let mut placed = vec![false; graph.nodes.len()];
    while order.len() < graph.nodes.len() {
        let before = order.len();
        for node in &graph.nodes {
            if !placed[node.id] && graph.inputs(node.id).all(|e| placed[e.from]) {
                placed[node.id] = true;
                order.push(node.id);
            }
        }
        if order.len() == before {
            break; // a cycle; validate() reports it elsewhere
        }
    }
    order
}
