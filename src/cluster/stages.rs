//! A cluster job's stages (`docs/cluster-protocol.md`, "Words"): which
//! nodes each runs, its task count and the topic whose partitions are its
//! tasks, and the local graph that runs a stage's tasks in one process in
//! one generation: the stage's nodes between a reader of its input (the
//! source itself, or its repartition topic) and a writer of its output
//! (its sink, or the next stage's repartition topic).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use weir_connectors::kafka::stage_output::repartition_topic;
use weir_connectors::kafka::stage_sink::StageWriter;
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
    /// Another stage's output, through this stage's repartition topic.
    Upstream(usize),
}

/// One stage of the job.
#[derive(Debug, Clone)]
pub(crate) struct StagePlan {
    /// The job graph's nodes, in data-flow order.
    pub nodes: Vec<NodeId>,
    pub tasks: usize,
    /// The topic whose partitions are the tasks.
    pub topic: String,
    pub input: StageInput,
    /// The stage its rows go to, and the shuffle key's columns.
    pub output: Option<(usize, Vec<usize>)>,
}

/// The job cut into stages, and the Kafka client they share.
pub(crate) struct Layout {
    pub stages: Vec<StagePlan>,
    pub client: ClientConfig,
}

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
            let (input, topic, tasks) = match (&head.kind, stage.upstream.as_slice()) {
                (NodeKind::Source(source), []) => {
                    let (config, topic) = source_topic(source)?;
                    let tasks = partitions(&config, &topic).await?;
                    client.get_or_insert(config);
                    (StageInput::Source, topic, tasks)
                }
                (_, [(from, kind)]) => {
                    let tasks = match kind {
                        EdgeKind::Shuffle { keys, .. } if !keys.is_empty() => max_parallelism,
                        EdgeKind::Broadcast => return Err(unsupported("a broadcast")),
                        _ if head.parallelism == 1 => 1,
                        _ => max_parallelism,
                    };
                    (
                        StageInput::Upstream(*from),
                        repartition_topic(pipeline, index),
                        tasks,
                    )
                }
                _ => return Err(unsupported("a join or union of several inputs")),
            };
            stages.push(StagePlan {
                nodes: stage.nodes,
                tasks,
                topic,
                input,
                output: None,
            });
        }
        for index in 0..stages.len() {
            if let StageInput::Upstream(from) = stages[index].input {
                let head = stages[index].nodes[0];
                let keys = graph
                    .inputs(head)
                    .find_map(|e| match &e.kind {
                        EdgeKind::Shuffle { keys, .. } => Some(keys.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                if stages[from].output.is_some() {
                    return Err(unsupported("a stage feeding several others"));
                }
                stages[from].output = Some((index, keys));
            }
        }
        let client = client.ok_or_else(|| unsupported("a job without a Kafka source"))?;
        Ok(Layout { stages, client })
    }

    /// Every task of the job.
    pub fn task_count(&self) -> usize {
        self.stages.iter().map(|s| s.tasks).sum()
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
        let mut previous = None;
        if let StageInput::Upstream(from) = stage.input {
            let reader = StageReader {
                client: self.client.clone(),
                topic: stage.topic.clone(),
                generation: generation.number,
                producers: (0..self.stages[from].tasks)
                    .map(|p| format!("{from}-{p}"))
                    .collect(),
            };
            let node = local.add_node(
                format!("stage input: {}", stage.topic),
                "",
                stage.tasks,
                NodeKind::Source(SourceNode {
                    factory: reader.factory(),
                    computed: Vec::new(),
                    watermark: None,
                    connector: Default::default(),
                }),
            );
            previous = Some(node);
        }
        for id in &stage.nodes {
            let node = &graph.nodes[*id];
            let copy = local.add_node(
                node.name.clone(),
                node.detail.clone(),
                stage.tasks,
                node.kind.clone(),
            );
            if let Some(from) = previous {
                local.connect(from, copy, EdgeKind::Forward);
            }
            previous = Some(copy);
        }
        if let (Some((next, keys)), Some(from)) = (&stage.output, previous) {
            let next_stage = &self.stages[*next];
            let writer = StageWriter {
                client: self.client.clone(),
                topic: next_stage.topic.clone(),
                partitions: next_stage.tasks,
                keys: keys.clone(),
                generation: generation.number,
                stage: index,
                first_epoch,
            };
            let sink = local.add_node(
                format!("stage output: {}", next_stage.topic),
                "",
                stage.tasks,
                NodeKind::Sink(writer.factory()),
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
