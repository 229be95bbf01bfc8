//! A cluster job's stages (`docs/cluster-protocol.md`, "Words"): which
//! nodes each runs, its task count and the topic whose partitions are its
//! tasks, and the local graph that runs a stage's tasks in one process in
//! one generation: the stage's nodes between a reader of its input (the
//! source itself, or its repartition topic) and a writer of its output
//! (its sink, or the next stage's repartition topic).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use weir_connectors::kafka::stage_output::repartition_topic;
use weir_connectors::kafka::stage_sink::{stage_producer, StageWriter};
use weir_connectors::kafka::stage_source::StageReader;
use weir_connectors::Options;
use weir_engine::generations::Generation;
use weir_engine::graph::SourceNode;
use weir_engine::{EdgeKind, Graph, NodeId, NodeKind};

use crate::error::{Result, WeirError};

/// Where a stage's rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StageInput {
    /// Its first node is a Kafka source; its tasks are the topic's partitions.
    Source,
    /// Other stages' output, one per input side of its first node (two
    /// for a join), each through a repartition topic of its own.
    Upstream(Vec<usize>),
}

/// Where a stage's rows go: input `side` of stage `stage`, split by the
/// hash of `keys` (no keys: spread round-robin).
#[derive(Debug, Clone)]
pub(crate) struct StageOutput {
    pub stage: usize,
    pub side: usize,
    pub keys: Vec<usize>,
}

/// One stage of the job.
#[derive(Debug, Clone)]
pub(crate) struct StagePlan {
    /// The job graph's nodes, in data-flow order.
    pub nodes: Vec<NodeId>,
    pub tasks: usize,
    /// The topics whose partitions are the tasks, one per input side: the
    /// source's, or the repartition topics. The first names the stage's
    /// consumer group's topic.
    pub topics: Vec<String>,
    pub input: StageInput,
    pub output: Option<StageOutput>,
}

/// The job cut into stages, and the Kafka client they share.
pub(crate) struct Layout {
    pub stages: Vec<StagePlan>,
    pub client: ClientConfig,
    /// Every producing task of this process writes through it, in every
    /// generation: creating a client per task and generation is what made
    /// hundreds of tasks slow to start.
    pub producer: FutureProducer,
}

/// A task's name, `stage-task`: its snapshots, claims and placement
/// record are named as its records to the next stage say who sent them.
pub(crate) use weir_connectors::kafka::stage_records::task_name;

fn unsupported(what: &str) -> WeirError {
    WeirError::Usage(format!(
        "execution.target 'kafka' does not run {what} yet (docs/cluster-protocol.md); run the job with execution.target 'local'"
    ))
}

impl Layout {
    /// Cuts `graph` into stages: a source stage per Kafka source, then one
    /// per key shuffle with `max_parallelism` tasks.
    pub async fn new(graph: &Graph, pipeline: &str, max_parallelism: usize) -> Result<Layout> {
        let mut client = None;
        let mut stages = Vec::new();
        for (index, stage) in graph.stages().into_iter().enumerate() {
            for pair in stage.nodes.windows(2) {
                let inputs: Vec<_> = graph.inputs(pair[1]).map(|e| e.from).collect();
                if inputs != [pair[0]] || graph.outputs(pair[0]).count() != 1 {
                    return Err(unsupported("a stream read by several queries"));
                }
            }
            let head = &graph.nodes[stage.nodes[0]];
            let (input, topics, tasks) = match (&head.kind, stage.upstream.as_slice()) {
                (NodeKind::Source(source), []) => {
                    let (config, topic) = source_topic(source)?;
                    let tasks = partitions(&config, &topic).await?;
                    client.get_or_insert(config);
                    (StageInput::Source, vec![topic], tasks)
                }
                (NodeKind::Source(_), _) | (_, []) => {
                    return Err(unsupported("a stage without input"))
                }
                (_, upstream) => {
                    let keyed = upstream.iter().any(|(_, kind)| {
                        matches!(kind, EdgeKind::Shuffle { keys, .. } if !keys.is_empty())
                    });
                    if upstream
                        .iter()
                        .any(|(_, kind)| *kind == EdgeKind::Broadcast)
                    {
                        return Err(unsupported("a broadcast"));
                    }
                    let tasks = if !keyed && head.parallelism == 1 {
                        1
                    } else {
                        max_parallelism
                    };
                    let topics = (0..upstream.len())
                        .map(|side| match side {
                            0 => repartition_topic(pipeline, index),
                            side => format!("{}.{side}", repartition_topic(pipeline, index)),
                        })
                        .collect();
                    let from = upstream.iter().map(|(from, _)| *from).collect();
                    (StageInput::Upstream(from), topics, tasks)
                }
            };
            let output_keys: Vec<Vec<usize>> = graph
                .inputs(head.id)
                .map(|e| match &e.kind {
                    EdgeKind::Shuffle { keys, .. } => keys.clone(),
                    _ => Vec::new(),
                })
                .collect();
            if let StageInput::Upstream(from) = &input {
                for (side, (upstream, keys)) in from.iter().zip(output_keys).enumerate() {
                    let feeding: &mut StagePlan = &mut stages[*upstream];
                    if feeding.output.is_some() {
                        return Err(unsupported("a stage feeding several others"));
                    }
                    feeding.output = Some(StageOutput {
                        stage: index,
                        side,
                        keys,
                    });
                }
            }
            stages.push(StagePlan {
                nodes: stage.nodes,
                tasks,
                topics,
                input,
                output: None,
            });
        }
        let client = client.ok_or_else(|| unsupported("a job without a Kafka source"))?;
        let producer = stage_producer(&client)?;
        Ok(Layout {
            stages,
            client,
            producer,
        })
    }

    /// Where stage `index`'s nodes start among all stages' local graphs
    /// (its first node: its source, or its first input's reader), so that
    /// one process's metrics keep every stage's nodes apart.
    pub fn node_offset(&self, index: usize) -> usize {
        self.stages[..index]
            .iter()
            .map(|stage| {
                let readers = match &stage.input {
                    StageInput::Source => 0,
                    StageInput::Upstream(from) => from.len(),
                };
                readers + stage.nodes.len() + usize::from(stage.output.is_some())
            })
            .sum()
    }

    /// The repartition topics Weir writes, each with its partition count
    /// (the consuming stage's tasks).
    pub fn repartition_topics(&self) -> impl Iterator<Item = (&str, usize)> {
        self.stages
            .iter()
            .filter(|stage| matches!(stage.input, StageInput::Upstream(_)))
            .flat_map(|stage| {
                stage
                    .topics
                    .iter()
                    .map(|topic| (topic.as_str(), stage.tasks))
            })
    }

    /// Every task of the job, by [`task_name`].
    pub fn task_names(&self) -> Vec<String> {
        self.stages
            .iter()
            .enumerate()
            .flat_map(|(index, stage)| (0..stage.tasks).map(move |task| task_name(index, task)))
            .collect()
    }

    /// The local graph that runs stage `index` in `generation`, whose
    /// first epoch is `first_epoch`.
    pub fn stage_graph(
        &self,
        graph: &Graph,
        index: usize,
        generation: &Generation,
        first_epoch: u64,
    ) -> Graph {
        let stage = &self.stages[index];
        let mut local = Graph::new();
        // One reader per input side, each feeding its side of the first node.
        let mut readers = Vec::new();
        if let StageInput::Upstream(from) = &stage.input {
            for (upstream, topic) in from.iter().zip(&stage.topics) {
                let reader = StageReader {
                    client: self.client.clone(),
                    topic: topic.clone(),
                    generation: generation.number,
                    producers: (0..self.stages[*upstream].tasks)
                        .map(|p| task_name(*upstream, p))
                        .collect(),
                };
                readers.push(local.add_node(
                    format!("stage input: {topic}"),
                    "",
                    stage.tasks,
                    NodeKind::Source(SourceNode {
                        factory: reader.factory(),
                        computed: Vec::new(),
                        watermark: None,
                        connector: Default::default(),
                    }),
                ));
            }
        }
        let mut previous: Option<NodeId> = None;
        for id in &stage.nodes {
            let node = &graph.nodes[*id];
            let copy = local.add_node(
                node.name.clone(),
                node.detail.clone(),
                stage.tasks,
                node.kind.clone(),
            );
            match previous {
                Some(from) => local.connect(from, copy, EdgeKind::Forward),
                None => {
                    for reader in &readers {
                        local.connect(*reader, copy, EdgeKind::Forward);
                    }
                }
            }
            previous = Some(copy);
        }
        if let (Some(output), Some(from)) = (&stage.output, previous) {
            let next_stage = &self.stages[output.stage];
            let writer = StageWriter {
                producer: self.producer.clone(),
                topic: next_stage.topics[output.side].clone(),
                partitions: next_stage.tasks,
                keys: output.keys.clone(),
                generation: generation.number,
                stage: index,
                first_epoch,
            };
            let sink = local.add_node(
                format!("stage output: {}", next_stage.topics[output.side]),
                "",
                stage.tasks,
                NodeKind::Sink(weir_engine::SinkNode::new(writer.factory())),
            );
            local.connect(from, sink, EdgeKind::Forward);
        }
        local
    }
}

/// The client configuration and the one topic of a Kafka source.
fn source_topic(source: &SourceNode) -> Result<(ClientConfig, String)> {
    if source.connector.name != "kafka" {
        return Err(unsupported(&format!(
            "a '{}' source (only Kafka sources, whose partitions are shared)",
            source.connector.name
        )));
    }
    let options = Options::new(source.connector.options.iter());
    let (client, topics) = weir_connectors::kafka::stream_topics(&options)
        .map_err(|e| WeirError::Usage(e.to_string()))?;
    match topics.as_slice() {
        [topic] => Ok((client, topic.clone())),
        _ => Err(unsupported("a source over several topics")),
    }
}

/// How many partitions `topic` has.
async fn partitions(client: &ClientConfig, topic: &str) -> Result<usize> {
    let client = client.clone();
    let topic = topic.to_string();
    let found = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client.create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        Ok::<_, rdkafka::error::KafkaError>(
            metadata
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0),
        )
    })
    .await
    .map_err(|e| WeirError::Usage(e.to_string()))?
    .map_err(|e| WeirError::Usage(format!("kafka: {e}")))?;
    if found == 0 {
        return Err(WeirError::Usage(
            "a cluster job's Kafka source topic has no partitions (does it exist?)".into(),
        ));
    }
    Ok(found)
}
