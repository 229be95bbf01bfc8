//! Exactly-once writes to Kafka: one transaction per checkpoint.
//!
//! A sink subtask writes the records between two barriers in one Kafka
//! transaction, under the transactional id `{prefix}-{subtask}-{generation}`,
//! with a fresh generation (and producer) per checkpoint. At a barrier the
//! transaction is flushed but left open (phase one); when the checkpoint is
//! complete it is committed (phase two), and read-committed consumers see it.
//!
//! librdkafka cannot resume a transaction after a restart, so a crash between
//! a checkpoint's completion and its commit needs two more things, both kept
//! in the checkpoint:
//!
//! - the **journal**: the records of every transaction prepared and not yet
//!   known to be committed, so a restart can write them again;
//! - the **marker**: inside each transaction the sink also commits, for the
//!   consumer group `{prefix}-{subtask}`, the offset `generation + 1` on
//!   partition 0 of the topic (Kafka's transactional offset commit). It
//!   becomes visible exactly when the transaction commits, so on restart the
//!   group's offset says whether the prepared transaction made it.
//!
//! Restoring a checkpoint thus fences the prepared transactions' ids (which
//! aborts those still open), reads the marker, and replays in a new
//! transaction the journal of every generation the marker has not passed.
//! Transactions commit in generation order, so the marker is a high-water
//! mark. Later generations, open at the crash, are fenced too, so their
//! records are aborted rather than left holding back read-committed
//! consumers.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use datafusion::arrow::array::{Array, BinaryArray, Int64Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use weir_engine::{EngineError, Result, StateRows, StateSnapshot, StateTable};

/// How long transactional calls to the broker may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The most a subtask's journal may hold: a checkpoint interval's records.
const JOURNAL_MAX_BYTES: usize = 256 << 20;

/// Records of prepared transactions not yet committed, to write again if a
/// restore finds them aborted.
static JOURNAL: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "kafka_journal",
        [
            ("generation", DataType::UInt64),
            ("key", DataType::Binary),
            ("value", DataType::Binary),
            ("timestamp", DataType::Int64),
        ],
    )
});

/// The next transaction generation, which names its transactional id.
static GENERATION: LazyLock<StateTable> =
    LazyLock::new(|| StateTable::new("kafka_generation", [("generation", DataType::UInt64)]));

fn txn_error(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::connector("kafka sink", format!("{what}: {e}"))
}

/// One record as sent: kept until its transaction is committed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JournalRecord {
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone (an upsert sink's delete).
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
}

/// A transaction flushed at a barrier, waiting for its checkpoint.
struct Prepared {
    checkpoint: weir_engine::CheckpointId,
    generation: u64,
    producer: FutureProducer,
    journal: Vec<JournalRecord>,
}

impl JournalRecord {
    /// The bytes of its key and value.
    fn bytes(&self) -> usize {
        self.value.as_ref().map_or(0, Vec::len) + self.key.as_ref().map_or(0, Vec::len)
    }
}

/// The transactional side of one sink subtask.
pub(crate) struct Transactions {
    /// Producer settings.
    config: ClientConfig,
    /// Settings for the consumer that reads the marker.
    client: ClientConfig,
    topic: String,
    /// `{prefix}-{subtask}`: the marker's consumer group and the ids' stem.
    stem: String,
    /// The generation of the open transaction (or the next one).
    generation: u64,
    /// Whether the generation was settled from a checkpoint or the marker.
    started: bool,
    journal: Vec<JournalRecord>,
    /// Bytes of keys and values in the journals not yet committed.
    journal_bytes: usize,
    /// In generation order.
    prepared: Vec<Prepared>,
    /// The marker group's metadata, once made.
    marker_group: Option<ConsumerGroupMetadata>,
}

impl Transactions {
    pub fn new(
        config: ClientConfig,
        client: ClientConfig,
        topic: String,
        prefix: &str,
        subtask: usize,
    ) -> Self {
        Transactions {
            config,
            client,
            topic,
            stem: format!("{prefix}-{subtask}"),
            generation: 0,
            started: false,
            journal: Vec::new(),
            journal_bytes: 0,
            prepared: Vec::new(),
            marker_group: None,
        }
    }

    fn transactional_id(&self, generation: u64) -> String {
        format!("{}-{generation}", self.stem)
    }

    /// A producer for `generation` with its transactions initialised, which
    /// fences (and aborts) whatever an earlier producer left open under it.
    async fn producer(&self, generation: u64) -> Result<FutureProducer> {
        let mut config = self.config.clone();
        config.set("transactional.id", self.transactional_id(generation));
        if config.get("transaction.timeout.ms").is_none() {
            config.set("transaction.timeout.ms", "600000");
        }
        let producer: FutureProducer = config
            .create()
            .map_err(|e| txn_error("cannot create a transactional producer", e))?;
        let init = producer.clone();
        tokio::task::spawn_blocking(move || init.init_transactions(TIMEOUT))
            .await
            .map_err(|e| txn_error("init_transactions", e))?
            .map_err(|e| txn_error("init_transactions", e))?;
        Ok(producer)
    }

    /// The marker's committed offset: the generation after the last
    /// committed transaction, or 0.
    async fn committed_marker(&self) -> Result<u64> {
        let mut config = self.client.clone();
        config.set("group.id", &self.stem);
        config.set("enable.auto.commit", "false");
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || -> Result<u64> {
            let consumer: BaseConsumer = config
                .create()
                .map_err(|e| txn_error("cannot read the commit marker", e))?;
            let mut partitions = TopicPartitionList::new();
            partitions.add_partition(&topic, 0);
            let committed = consumer
                .committed_offsets(partitions, TIMEOUT)
                .map_err(|e| txn_error("cannot read the commit marker", e))?;
            Ok(committed
                .elements()
                .first()
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => u64::try_from(o).ok(),
                    _ => None,
                })
                .unwrap_or(0))
        })
        .await
        .map_err(|e| txn_error("cannot read the commit marker", e))?
    }

    /// Aborts whatever a crashed run left open under `generation`'s id.
    async fn fence(&self, generation: u64) -> Result<()> {
        let fenced = self.producer(generation).await?;
        drop(fenced);
        Ok(())
    }

    /// Fences the ids a crashed run may have left open from `generation` on:
    /// the one open at the crash, and the one after it.
    async fn fence_from(&self, generation: u64) -> Result<()> {
        for g in generation..generation + 2 {
            self.fence(g).await?;
        }
        Ok(())
    }

    /// The producer of a new transaction, begun; settles the generation
    /// from the marker on a fresh start.
    pub async fn begin(&mut self) -> Result<FutureProducer> {
        if !self.started {
            self.generation = self.committed_marker().await?;
            self.fence_from(self.generation + 1).await?;
            self.started = true;
        }
        let producer = self.producer(self.generation).await?;
        producer
            .begin_transaction()
            .map_err(|e| txn_error("begin_transaction", e))?;
        Ok(producer)
    }

    /// Journals a record sent in the open transaction; fails, rather than
    /// growing without bound, past [`JOURNAL_MAX_BYTES`].
    pub fn record(&mut self, record: JournalRecord) -> Result<()> {
        self.journal_bytes += record.bytes();
        if self.journal_bytes > JOURNAL_MAX_BYTES {
            return Err(txn_error(
                "exactly-once",
                format!(
                    "more than {} MiB written since the last committed checkpoint; checkpoint more often (execution.checkpointing.interval)",
                    JOURNAL_MAX_BYTES >> 20
                ),
            ));
        }
        self.journal.push(record);
        Ok(())
    }

    /// Phase one: `producer`'s records are all delivered; add the marker,
    /// keep the transaction open for `checkpoint`, and return the state a
    /// restart needs: the next generation and the journal of every
    /// transaction not yet committed.
    pub async fn prepare(
        &mut self,
        checkpoint: weir_engine::CheckpointId,
        producer: Option<FutureProducer>,
    ) -> Result<StateSnapshot> {
        if let Some(producer) = producer {
            self.send_marker(&producer).await?;
            self.prepared.push(Prepared {
                checkpoint,
                generation: self.generation,
                producer,
                journal: std::mem::take(&mut self.journal),
            });
            self.generation += 1;
        }
        let pending: Vec<(u64, &JournalRecord)> = self
            .prepared
            .iter()
            .flat_map(|p| p.journal.iter().map(move |r| (p.generation, r)))
            .collect();
        Ok(StateSnapshot {
            tables: vec![generation_table(self.generation)?, journal_table(&pending)?],
        })
    }

    /// The marker group's metadata, from a consumer made once.
    fn marker_group(&mut self) -> Result<ConsumerGroupMetadata> {
        if let Some(metadata) = self.marker_group.take() {
            return Ok(metadata);
        }
        let mut config = self.client.clone();
        config.set("group.id", &self.stem);
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| txn_error("cannot create the marker's group", e))?;
        consumer
            .group_metadata()
            .ok_or_else(|| txn_error("the marker's group", "no group metadata"))
    }

    async fn send_marker(&mut self, producer: &FutureProducer) -> Result<()> {
        let metadata = self.marker_group()?;
        let mut offsets = TopicPartitionList::new();
        let marker = i64::try_from(self.generation + 1).unwrap_or(i64::MAX);
        offsets
            .add_partition_offset(&self.topic, 0, Offset::Offset(marker))
            .map_err(|e| txn_error("the marker", e))?;
        let producer = producer.clone();
        // The metadata is not Sync: it goes to the blocking call and back.
        let (sent, metadata) = tokio::task::spawn_blocking(move || {
            let sent = producer.send_offsets_to_transaction(&offsets, &metadata, TIMEOUT);
            (sent, metadata)
        })
        .await
        .map_err(|e| txn_error("send_offsets_to_transaction", e))?;
        self.marker_group = Some(metadata);
        sent.map_err(|e| txn_error("send_offsets_to_transaction", e))
    }

    /// Phase two: commits, in order, every transaction prepared up to
    /// `checkpoint`.
    pub async fn commit(&mut self, checkpoint: weir_engine::CheckpointId) -> Result<()> {
        while self
            .prepared
            .first()
            .is_some_and(|p| p.checkpoint <= checkpoint)
        {
            let prepared = self.prepared.remove(0);
            self.journal_bytes = self
                .journal_bytes
                .saturating_sub(prepared.journal.iter().map(JournalRecord::bytes).sum());
            let producer = prepared.producer;
            tokio::task::spawn_blocking(move || producer.commit_transaction(TIMEOUT))
                .await
                .map_err(|e| txn_error("commit_transaction", e))?
                .map_err(|e| txn_error("commit_transaction", e))?;
        }
        Ok(())
    }

    /// Restarting from a checkpoint: settles its prepared transactions and
    /// returns the records of those never committed, to write again.
    pub async fn restore(&mut self, state: &StateSnapshot) -> Result<Vec<JournalRecord>> {
        let next = match GENERATION.read(state)? {
            Some(table) => table.first::<UInt64Type>("generation")?,
            None => None,
        };
        let Some(next) = next else {
            return Ok(Vec::new());
        };
        let pending = match JOURNAL.read(state)? {
            Some(table) => journal_records(&table)?,
            None => Vec::new(),
        };
        // Fencing a prepared id aborts its transaction if still open; after
        // that the marker tells which were committed.
        let mut generations: Vec<u64> = pending.iter().map(|(g, _)| *g).collect();
        generations.dedup();
        for g in &generations {
            self.fence(*g).await?;
        }
        let marker = if generations.is_empty() {
            0
        } else {
            self.committed_marker().await?
        };
        self.generation = next;
        self.fence_from(next).await?;
        self.started = true;
        let replay: Vec<JournalRecord> = pending
            .into_iter()
            .filter(|(g, _)| *g >= marker)
            .map(|(_, r)| r)
            .collect();
        if !replay.is_empty() {
            tracing::info!(
                stem = %self.stem,
                records = replay.len(),
                "replaying prepared Kafka transactions that were not committed"
            );
        }
        Ok(replay)
    }
}

fn generation_table(next: u64) -> Result<(String, RecordBatch)> {
    GENERATION.write(vec![Arc::new(UInt64Array::from(vec![next]))])
}

fn journal_table(records: &[(u64, &JournalRecord)]) -> Result<(String, RecordBatch)> {
    JOURNAL.write(vec![
        Arc::new(UInt64Array::from_iter_values(
            records.iter().map(|(g, _)| *g),
        )),
        Arc::new(BinaryArray::from_iter(
            records.iter().map(|(_, r)| r.key.as_deref()),
        )),
        Arc::new(BinaryArray::from_iter(
            records.iter().map(|(_, r)| r.value.as_deref()),
        )),
        Arc::new(Int64Array::from_iter(
            records.iter().map(|(_, r)| r.timestamp),
        )),
    ])
}

fn journal_records(table: &StateRows) -> Result<Vec<(u64, JournalRecord)>> {
    let generations = table.column::<UInt64Array>("generation")?;
    let keys = table.column::<BinaryArray>("key")?;
    let values = table.column::<BinaryArray>("value")?;
    let timestamps = table.column::<Int64Array>("timestamp")?;
    Ok((0..table.num_rows())
        .map(|i| {
            let record = JournalRecord {
                key: keys.is_valid(i).then(|| keys.value(i).to_vec()),
                value: values.is_valid(i).then(|| values.value(i).to_vec()),
                timestamp: timestamps.is_valid(i).then(|| timestamps.value(i)),
            };
            (generations.value(i), record)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::CommitMode;
    use rdkafka::mocking::MockCluster;

    fn record(value: &str) -> JournalRecord {
        JournalRecord {
            key: None,
            value: Some(value.as_bytes().to_vec()),
            timestamp: None,
        }
    }

    /// A checkpoint's state: next generation `next`, and journals of the
    /// prepared generations.
    fn state(next: u64, journal: &[(u64, &str)]) -> StateSnapshot {
        let records: Vec<(u64, JournalRecord)> =
            journal.iter().map(|(g, v)| (*g, record(v))).collect();
        let tagged: Vec<(u64, &JournalRecord)> = records.iter().map(|(g, r)| (*g, r)).collect();
        StateSnapshot {
            tables: vec![
                generation_table(next).unwrap(),
                journal_table(&tagged).unwrap(),
            ],
        }
    }

    fn transactions(bootstrap: &str) -> Transactions {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", bootstrap);
        Transactions::new(client.clone(), client, "out".into(), "pfx", 0)
    }

    /// What a committed transaction of `generation` leaves: the marker
    /// group's offset at `generation + 1` (committed directly here; the
    /// mock cluster keeps plain offset commits but not transactional ones).
    fn commit_marker(bootstrap: &str, generation: i64) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "pfx-0")
            .create()
            .unwrap();
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("out", 0, Offset::Offset(generation + 1))
            .unwrap();
        consumer.commit(&offsets, CommitMode::Sync).unwrap();
    }

    fn values(records: &[JournalRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn the_journal_refuses_more_than_its_bound() {
        let mut t = transactions("127.0.0.1:1");
        t.record(record("small")).unwrap();
        let big = JournalRecord {
            key: None,
            value: Some(vec![0; JOURNAL_MAX_BYTES]),
            timestamp: None,
        };
        let error = t.record(big).unwrap_err().to_string();
        assert!(error.contains("checkpoint more often"), "{error}");
        assert_eq!(t.journal.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_replays_exactly_the_generations_the_marker_has_not_passed() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("out", 1, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let prepared = state(5, &[(3, "a"), (3, "b"), (4, "c")]);

        // Nothing committed: both prepared generations are written again.
        let mut t = transactions(&bootstrap);
        assert_eq!(
            values(&t.restore(&prepared).await.unwrap()),
            ["a", "b", "c"]
        );
        assert_eq!(t.generation, 5);

        // Generation 3 committed before the crash, 4 not.
        commit_marker(&bootstrap, 3);
        let mut t = transactions(&bootstrap);
        assert_eq!(values(&t.restore(&prepared).await.unwrap()), ["c"]);

        // Both committed: nothing to write again.
        commit_marker(&bootstrap, 4);
        let mut t = transactions(&bootstrap);
        assert!(t.restore(&prepared).await.unwrap().is_empty());

        // A fresh start continues after the last committed generation.
        let mut t = transactions(&bootstrap);
        let producer = t.begin().await.unwrap();
        drop(producer);
        assert_eq!(t.generation, 5);
    }

    #[test]
    fn the_journal_survives_a_checkpoint() {
        let records = [
            JournalRecord {
                key: Some(b"k".to_vec()),
                value: Some(b"{\"a\":1}".to_vec()),
                timestamp: Some(1_700_000_000_000),
            },
            JournalRecord {
                key: Some(b"k".to_vec()),
                value: None,
                timestamp: None,
            },
        ];
        let tagged: Vec<(u64, &JournalRecord)> = vec![(3, &records[0]), (4, &records[1])];
        let state = StateSnapshot {
            tables: vec![journal_table(&tagged).unwrap()],
        };
        let table = JOURNAL.read(&state).unwrap().unwrap();
        assert_eq!(
            journal_records(&table).unwrap(),
            vec![(3, records[0].clone()), (4, records[1].clone())]
        );
    }
}
