//! What the subtasks of one Kafka source in a process share: one lookup
//! of the topics' partitions and offsets, made for all of them at once,
//! and one consumer that every subtask reading a single partition splits
//! its queue off.
//!
//! A cluster job's source stage has a task per partition, and a process
//! may run hundreds. With a client, a metadata request and two offset
//! requests per task, the broker timed the requests out when two
//! processes started 512 tasks each (the 1024-task benchmark,
//! `docs/cluster-protocol.md`). Now a process makes one metadata request
//! and one offsets request per kind of offset, and one client reads every
//! single-partition subtask's partition. A subtask that reads several
//! partitions (a local job with fewer subtasks than partitions) keeps a
//! consumer of its own and reads its queue as one, as Flink's readers do.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use weir_engine::{EngineError, Result};

use super::offsets::{BoundedMode, StartupMode};
use super::source::{EndOffsets, StatsContext};
use super::{set_default, KafkaSettings, METADATA_TIMEOUT};

fn kafka_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::connector("kafka", e)
}

/// A partition of the source's topics, with the offsets a subtask's start
/// and end positions are chosen from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    /// The first offset in the log.
    pub low: i64,
    /// The offset after the last readable record.
    pub high: i64,
    /// The group's committed offset (looked up in the group-offsets modes
    /// only).
    pub committed: Option<i64>,
    /// The first offset at or after the startup timestamp.
    pub start_at_time: Option<i64>,
    /// The first offset at or after the bounded timestamp.
    pub end_at_time: Option<i64>,
}

/// Every partition of the source's topics, sorted, as looked up at
/// `started`.
pub(crate) struct Lookup {
    started: Instant,
    pub partitions: Vec<PartitionOffsets>,
}

/// Shared by every subtask a [`super::source_factory`] makes.
pub(crate) struct SourceClient {
    settings: Arc<KafkaSettings>,
    stream: String,
    /// What every consumer's statistics say the partitions' ends are.
    pub end_offsets: EndOffsets,
    /// The newest lookup: one at a time, the others wait for it.
    lookup: tokio::sync::Mutex<Option<Arc<Lookup>>>,
    /// The consumer single-partition subtasks split their queue off, alive
    /// while any of them reads.
    shared: Mutex<Weak<SharedConsumer>>,
}

impl SourceClient {
    pub fn new(settings: Arc<KafkaSettings>, stream: &str) -> SourceClient {
        SourceClient {
            settings,
            stream: stream.to_string(),
            end_offsets: Arc::new(Mutex::new(HashMap::new())),
            lookup: tokio::sync::Mutex::new(None),
            shared: Mutex::new(Weak::new()),
        }
    }

    pub fn settings(&self) -> Arc<KafkaSettings> {
        self.settings.clone()
    }

    /// The configuration of every consumer of this source, whose fetch
    /// queue holds `fetch_queue_kbytes` unless the table says otherwise.
    fn config(&self, fetch_queue_kbytes: &str) -> ClientConfig {
        let mut config = self.settings.client_config();
        config
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        // Statistics give per-partition lag; a bounded fetch queue keeps
        // memory bounded when the job is backpressured and stops polling.
        set_default(&mut config, "statistics.interval.ms", "1000");
        set_default(
            &mut config,
            "queued.max.messages.kbytes",
            fetch_queue_kbytes,
        );
        if self.settings.group_id.is_none() {
            config.set("group.id", format!("weir-{}", self.stream));
        }
        config
    }

    fn stats(&self) -> StatsContext {
        StatsContext {
            end_offsets: self.end_offsets.clone(),
        }
    }

    /// The partitions and their offsets, looked up no earlier than
    /// `not_before`. A subtask passes the instant it was made: positions
    /// restored from a checkpoint are then never past the ends it sees
    /// (a lookup older than the checkpoint could clamp them back).
    pub async fn lookup(&self, not_before: Instant) -> Result<Arc<Lookup>> {
        let mut newest = self.lookup.lock().await;
        if let Some(lookup) = newest.as_ref().filter(|l| l.started >= not_before) {
            return Ok(lookup.clone());
        }
        let started = Instant::now();
        let config = self.config(QUEUE_KBYTES);
        let settings = self.settings.clone();
        let partitions = tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create().map_err(kafka_error)?;
            look_up(&consumer, &settings)
        })
        .await
        .map_err(|e| kafka_error(format!("metadata task: {e}")))??;
        let lookup = Arc::new(Lookup {
            started,
            partitions,
        });
        *newest = Some(lookup.clone());
        Ok(lookup)
    }

    /// A reader of `partitions`, each from its offset; `None` for none.
    pub fn reader(&self, partitions: &[(String, i32, i64)]) -> Result<Option<Reader>> {
        match partitions {
            [] => Ok(None),
            [(topic, partition, offset)] => {
                let shared = self.shared_for(topic, *partition)?;
                let key = (topic.clone(), *partition);
                // Split off before it is assigned, so that none of its
                // records goes to the consumer's own queue; dropped, the
                // split partition is unassigned.
                let Some(queue) = shared.consumer.split_partition_queue(topic, *partition) else {
                    shared.opened.lock().remove(&key);
                    return Err(kafka_error(format!(
                        "cannot read {topic}-{partition} on its own"
                    )));
                };
                let split = SplitPartition {
                    shared,
                    queue,
                    topic: key.0,
                    partition: key.1,
                };
                let mut assignment = TopicPartitionList::new();
                assignment
                    .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                    .map_err(kafka_error)?;
                split
                    .shared
                    .consumer
                    .incremental_assign(&assignment)
                    .map_err(kafka_error)?;
                Ok(Some(Reader::Split(split)))
            }
            several => {
                let consumer: StreamConsumer<StatsContext> = self
                    .config(QUEUE_KBYTES)
                    .create_with_context(self.stats())
                    .map_err(kafka_error)?;
                let mut assignment = TopicPartitionList::new();
                for (topic, partition, offset) in several {
                    assignment
                        .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                        .map_err(kafka_error)?;
                }
                consumer.assign(&assignment).map_err(kafka_error)?;
                Ok(Some(Reader::Own(consumer)))
            }
        }
    }

    /// The shared consumer, to read `topic-partition` from. A partition
    /// is opened once on a consumer: a subtask of a job that is stopping
    /// may still read it (a cluster process starts its next generation
    /// while the last one's tasks are dropped), and even once it is gone,
    /// records fetched for it could still wait in the partition's queue.
    /// Then the new reader gets a consumer of its own making, which the
    /// ones after it share: one new client per generation and process.
    fn shared_for(&self, topic: &str, partition: i32) -> Result<Arc<SharedConsumer>> {
        let mut current = self.shared.lock();
        let key = (topic.to_string(), partition);
        if let Some(shared) = current.upgrade() {
            if shared.opened.lock().insert(key.clone()) {
                return Ok(shared);
            }
        }
        let mut config = self.config(SPLIT_QUEUE_KBYTES);
        split_queue_limits(&mut config);
        let consumer: StreamConsumer<StatsContext> = config
            .create_with_context(self.stats())
            .map_err(kafka_error)?;
        let consumer = Arc::new(consumer);
        serve_events(&consumer, "kafka source");
        let shared = Arc::new(SharedConsumer {
            consumer,
            opened: Mutex::new(HashSet::from([key])),
        });
        *current = Arc::downgrade(&shared);
        Ok(shared)
    }
}

/// The fetch queue of a consumer that reads its partitions as one.
const QUEUE_KBYTES: &str = "16384";

/// The fetch queue of each partition split off a shared consumer.
const SPLIT_QUEUE_KBYTES: &str = "1024";

/// The configuration of a consumer whose partitions are split off: each
/// partition's fetch queue holds 1 MiB (librdkafka's limit then holds
/// per partition, not per consumer), and a fetch may still bring 50 MiB
/// over all partitions (left alone, librdkafka would cut it down to the
/// queue's limit).
pub(crate) fn split_queue_limits(config: &mut ClientConfig) {
    set_default(config, "queued.max.messages.kbytes", SPLIT_QUEUE_KBYTES);
    set_default(config, "fetch.max.bytes", "52428800");
}

/// How long the task that serves a shared consumer's events holds it at a
/// time: once its last reader is gone, the consumer closes within this.
const SERVE_WAIT: Duration = Duration::from_millis(500);

/// Serves the events (errors, statistics) of a consumer whose partitions
/// are all split off: its own queue gets no records, and nothing else
/// polls it. Runs while anyone else holds the consumer.
pub(crate) fn serve_events<C: ConsumerContext + 'static>(
    consumer: &Arc<StreamConsumer<C>>,
    what: &'static str,
) {
    let weak = Arc::downgrade(consumer);
    tokio::spawn(async move {
        while let Some(consumer) = weak.upgrade() {
            if let Ok(Err(e)) = tokio::time::timeout(SERVE_WAIT, consumer.recv()).await {
                tracing::warn!("{what}: kafka: {e}");
            }
        }
    });
}

/// A consumer shared by single-partition subtasks, and the partitions
/// they opened on it (read, or still reading).
pub(crate) struct SharedConsumer {
    consumer: Arc<StreamConsumer<StatsContext>>,
    opened: Mutex<HashSet<(String, i32)>>,
}

/// One partition read from its own queue, split off a shared consumer.
pub(crate) struct SplitPartition {
    shared: Arc<SharedConsumer>,
    queue: StreamPartitionQueue<StatsContext>,
    topic: String,
    partition: i32,
}

impl Drop for SplitPartition {
    /// Takes the partition out of the consumer's assignment: it stops
    /// fetching what no subtask reads.
    fn drop(&mut self) {
        let mut assignment = TopicPartitionList::new();
        if assignment
            .add_partition_offset(&self.topic, self.partition, Offset::Invalid)
            .is_ok()
        {
            if let Err(e) = self.shared.consumer.incremental_unassign(&assignment) {
                tracing::debug!(topic = %self.topic, partition = self.partition, "kafka: {e}");
            }
        }
    }
}

/// Where a subtask reads its records from.
pub(crate) enum Reader {
    /// A consumer of its own, all its partitions in the consumer's queue.
    Own(StreamConsumer<StatsContext>),
    /// Its one partition's queue on the shared consumer.
    Split(SplitPartition),
}

impl Reader {
    pub async fn recv(&self) -> KafkaResult<BorrowedMessage<'_>> {
        match self {
            Reader::Own(consumer) => consumer.recv().await,
            Reader::Split(split) => split.queue.recv().await,
        }
    }

    /// The consumer that pauses and commits the subtask's partitions.
    pub fn consumer(&self) -> &StreamConsumer<StatsContext> {
        match self {
            Reader::Own(consumer) => consumer,
            Reader::Split(split) => &split.shared.consumer,
        }
    }
}

/// Lists the partitions of the source's topics (by name: a cluster may
/// hold thousands of topics; a pattern needs them all) and looks up each
/// kind of offset for all of them in one request.
fn look_up(consumer: &BaseConsumer, settings: &KafkaSettings) -> Result<Vec<PartitionOffsets>> {
    let asked: Vec<Option<&str>> = match &settings.pattern {
        Some(_) => vec![None],
        None => settings.topics.iter().map(|t| Some(t.as_str())).collect(),
    };
    let mut all: Vec<(String, i32)> = Vec::new();
    for which in asked {
        let metadata = consumer
            .fetch_metadata(which, METADATA_TIMEOUT)
            .map_err(kafka_error)?;
        for topic in metadata.topics() {
            let wanted = settings.topics.iter().any(|t| t == topic.name())
                || settings
                    .pattern
                    .as_ref()
                    .is_some_and(|p| p.is_match(topic.name()));
            if wanted {
                all.extend(
                    topic
                        .partitions()
                        .iter()
                        .map(|p| (topic.name().to_string(), p.id())),
                );
            }
        }
    }
    for t in &settings.topics {
        if !all.iter().any(|(name, _)| name == t) {
            return Err(kafka_error(format!("topic '{t}' does not exist")));
        }
    }
    all.sort();
    all.dedup();
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let low = offsets_at(consumer, &all, Offset::Beginning)?;
    let high = offsets_at(consumer, &all, Offset::End)?;
    let committed = match (&settings.startup, &settings.bounded) {
        (StartupMode::GroupOffsets, _) | (_, BoundedMode::GroupOffsets) => {
            let c = consumer
                .committed_offsets(partition_list(&all, Offset::Invalid)?, METADATA_TIMEOUT)
                .map_err(kafka_error)?;
            numeric_offsets(&c)
        }
        _ => HashMap::new(),
    };
    let start_at_time = match settings.startup {
        StartupMode::Timestamp(ts) => offsets_at(consumer, &all, Offset::Offset(ts))?,
        _ => HashMap::new(),
    };
    let end_at_time = match settings.bounded {
        BoundedMode::Timestamp(ts) => offsets_at(consumer, &all, Offset::Offset(ts))?,
        _ => HashMap::new(),
    };
    let mut out = Vec::with_capacity(all.len());
    for key in all {
        let (low, high) = match (low.get(&key), high.get(&key)) {
            (Some(low), Some(high)) => (*low, *high),
            // A broker that answers a partition without an offset: asked
            // on its own, as before.
            _ => consumer
                .fetch_watermarks(&key.0, key.1, METADATA_TIMEOUT)
                .map_err(kafka_error)?,
        };
        out.push(PartitionOffsets {
            low,
            high: high.max(low),
            committed: committed.get(&key).copied(),
            start_at_time: start_at_time.get(&key).copied(),
            end_at_time: end_at_time.get(&key).copied(),
            topic: key.0,
            partition: key.1,
        });
    }
    Ok(out)
}

fn partition_list(all: &[(String, i32)], at: Offset) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::with_capacity(all.len());
    for (topic, partition) in all {
        tpl.add_partition_offset(topic, *partition, at)
            .map_err(kafka_error)?;
    }
    Ok(tpl)
}

/// The offset of every partition at `at`: a timestamp, or the log's
/// beginning or end (Kafka's ListOffsets, one request per broker).
pub(crate) fn offsets_at(
    consumer: &BaseConsumer,
    all: &[(String, i32)],
    at: Offset,
) -> Result<HashMap<(String, i32), i64>> {
    let found = consumer
        .offsets_for_times(partition_list(all, at)?, METADATA_TIMEOUT)
        .map_err(kafka_error)?;
    Ok(numeric_offsets(&found))
}

fn numeric_offsets(list: &TopicPartitionList) -> HashMap<(String, i32), i64> {
    list.elements()
        .iter()
        .filter(|e| e.error().is_ok())
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::Message;

    use super::*;
    use crate::Options;

    /// The offsets `reader` reads within a few seconds, up to `count`.
    async fn read(reader: &Reader, count: usize) -> Vec<i64> {
        let mut offsets = Vec::new();
        while offsets.len() < count {
            match tokio::time::timeout(Duration::from_secs(10), reader.recv()).await {
                Ok(Ok(message)) => offsets.push(message.offset()),
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => break,
            }
        }
        offsets
    }

    /// One lookup finds every partition's range; subtasks reading one
    /// partition share a consumer, except one that reads a partition
    /// another reader still holds (a task of a generation that is
    /// stopping): it gets its own, and both read all they should.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_still_read_gets_a_consumer_of_its_own() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("bids", 2, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        for (partition, count) in [(0, 3), (1, 2)] {
            for i in 0..count {
                let payload = i.to_string();
                let record = BaseRecord::<(), _>::to("bids")
                    .partition(partition)
                    .payload(&payload);
                producer.send(record).map_err(|(e, _)| e).unwrap();
            }
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let options = Options::new([
            ("connector", "kafka"),
            ("topic", "bids"),
            ("properties.bootstrap.servers", bootstrap.as_str()),
            ("format", "raw"),
        ]);
        let settings = Arc::new(KafkaSettings::parse(&options).unwrap());
        let client = SourceClient::new(settings, "bids");

        let lookup = client.lookup(Instant::now()).await.unwrap();
        let ranges: Vec<(i32, i64, i64)> = lookup
            .partitions
            .iter()
            .map(|p| (p.partition, p.low, p.high))
            .collect();
        assert_eq!(ranges, [(0, 0, 3), (1, 0, 2)]);
        // A lookup started after the instant given is reused.
        let again = client.lookup(lookup.started).await.unwrap();
        assert!(Arc::ptr_eq(&lookup, &again));

        let stopping = client.reader(&[("bids".into(), 0, 1)]).unwrap().unwrap();
        let starting = client.reader(&[("bids".into(), 0, 0)]).unwrap().unwrap();
        let other = client.reader(&[("bids".into(), 1, 0)]).unwrap().unwrap();
        assert!(!std::ptr::eq(stopping.consumer(), starting.consumer()));
        assert!(std::ptr::eq(starting.consumer(), other.consumer()));
        assert_eq!(read(&stopping, 2).await, [1, 2]);
        assert_eq!(read(&starting, 3).await, [0, 1, 2]);
        assert_eq!(read(&other, 2).await, [0, 1]);
        // Partition 1 was read on that consumer: once its reader is gone,
        // the next reader of it still gets another.
        drop(stopping);
        drop(other);
        let later = client.reader(&[("bids".into(), 1, 1)]).unwrap().unwrap();
        assert!(!std::ptr::eq(later.consumer(), starting.consumer()));
        assert_eq!(read(&later, 1).await, [1]);
    }
}
