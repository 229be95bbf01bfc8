//! A consuming task's reader: one partition of a stage's repartition
//! topic, read as a [`Source`] whose batches, watermarks and barriers are
//! what the upstream stage's producers wrote (`docs/cluster-protocol.md`,
//! "Records between stages"). [`StageInput`] decides the order; this
//! reads the records and keeps the position a checkpoint restarts from:
//! the offset of the first barrier of the epoch in the partition.
//!
//! The consuming tasks of one stage in a process share one consumer
//! ([`SharedConsumer`]): each task adds its partition to the consumer's
//! assignment and reads it from a queue of its own, split off the
//! consumer. One librdkafka client (its threads, connections and fetch
//! requests) per stage and process, not per task: with hundreds of tasks
//! a process, clients per task were what the 1024-task benchmark ran out
//! of.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use parking_lot::Mutex;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{Consumer, DefaultConsumerContext, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use weir_engine::source::{SourceFactory, SourcePoll, SplitId, MAX_POLL_WAIT};
use weir_engine::{EngineError, Result, Source, StateSnapshot, StateTable, SubtaskInfo};

use super::source_client::{serve_events, split_queue_limits};
use super::stage_input::{InputEvent, StageInput};
use super::stage_records::StageRecord;

/// What every consuming task of one stage reads.
#[derive(Clone)]
pub struct StageReader {
    pub client: ClientConfig,
    /// The stage's repartition topic; a task reads the partition of its
    /// index.
    pub topic: String,
    /// The generation whose records count.
    pub generation: u64,
    /// The upstream stage's tasks (`stage-partition`), whose control
    /// records the task waits for.
    pub producers: Vec<String>,
}

impl StageReader {
    /// One source per task, all sharing one consumer.
    pub fn factory(self) -> SourceFactory {
        let shared = Arc::new(SharedConsumer {
            client: self.client.clone(),
            group: format!("{}.reader", self.topic),
            consumer: Mutex::new(None),
        });
        let reader = Arc::new(self);
        Arc::new(move |info: SubtaskInfo| {
            Ok(Box::new(StageSource {
                reader: reader.clone(),
                shared: shared.clone(),
                partition: i32::try_from(info.index)
                    .map_err(|e| EngineError::connector("stage input", e))?,
                input: StageInput::new(reader.generation, reader.producers.clone()),
                queue: None,
                start: Offset::Beginning,
                next_offset: None,
                first_barriers: BTreeMap::new(),
                aligned: None,
                ready: VecDeque::new(),
            }) as Box<dyn Source>)
        })
    }
}

static POSITION: LazyLock<StateTable> =
    LazyLock::new(|| StateTable::new("stage_input", [("offset", DataType::Int64)]));

/// The consumer a stage's tasks in this process share, made by the first
/// task that opens its partition.
struct SharedConsumer {
    client: ClientConfig,
    group: String,
    consumer: Mutex<Option<Arc<StreamConsumer>>>,
}

impl SharedConsumer {
    fn get(&self) -> std::result::Result<Arc<StreamConsumer>, rdkafka::error::KafkaError> {
        let mut consumer = self.consumer.lock();
        if let Some(consumer) = consumer.as_ref() {
            return Ok(consumer.clone());
        }
        let mut config = self.client.clone();
        config
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        split_queue_limits(&mut config);
        let created: Arc<StreamConsumer> = Arc::new(config.create()?);
        serve_events(&created, "stage input");
        *consumer = Some(created.clone());
        Ok(created)
    }
}

struct StageSource {
    reader: Arc<StageReader>,
    shared: Arc<SharedConsumer>,
    partition: i32,
    input: StageInput,
    /// This task's partition, split off the shared consumer.
    queue: Option<StreamPartitionQueue<DefaultConsumerContext>>,
    start: Offset,
    next_offset: Option<i64>,
    /// Where the first barrier of each epoch not yet snapshot was read.
    first_barriers: BTreeMap<u64, i64>,
    /// The epoch aligned last: the one the runtime is snapshotting.
    aligned: Option<u64>,
    ready: VecDeque<InputEvent>,
}

impl StageSource {
    fn error(&self, e: impl std::fmt::Display) -> EngineError {
        EngineError::connector(
            "stage input",
            format!("{}[{}]: {e}", self.reader.topic, self.partition),
        )
    }

    /// Adds the partition at the start position to the shared consumer,
    /// the first time: split off first, so that none of its records goes
    /// to the consumer's own queue.
    fn open(&mut self) -> Result<()> {
        if self.queue.is_none() {
            let consumer = self.shared.get().map_err(|e| self.error(e))?;
            let queue = consumer
                .split_partition_queue(&self.reader.topic, self.partition)
                .ok_or_else(|| self.error("cannot read the partition on its own"))?;
            consumer
                .incremental_assign(&self.assignment(self.start)?)
                .map_err(|e| self.error(e))?;
            self.queue = Some(queue);
        }
        Ok(())
    }

    fn assignment(&self, offset: Offset) -> Result<TopicPartitionList> {
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.reader.topic, self.partition, offset)
            .map_err(|e| self.error(e))?;
        Ok(assignment)
    }

    fn event(&mut self, event: InputEvent) -> SourcePoll {
        match event {
            InputEvent::Rows(batch) => SourcePoll::Batch { split: 0, batch },
            InputEvent::Watermark(at) => SourcePoll::Watermark(at),
            InputEvent::Aligned(epoch) => {
                self.aligned = Some(epoch);
                SourcePoll::Barrier(epoch)
            }
            InputEvent::End => SourcePoll::End,
        }
    }
}

#[async_trait]
impl Source for StageSource {
    fn splits(&self) -> Vec<SplitId> {
        vec![0]
    }

    fn split_name(&self, _split: SplitId) -> String {
        format!("{}[{}]", self.reader.topic, self.partition)
    }

    async fn poll(&mut self) -> Result<SourcePoll> {
        if let Some(event) = self.ready.pop_front() {
            return Ok(self.event(event));
        }
        self.open()?;
        let Some(queue) = &self.queue else {
            return Ok(SourcePoll::Pending);
        };
        let (offset, record) = match tokio::time::timeout(MAX_POLL_WAIT, queue.recv()).await {
            Err(_) => return Ok(SourcePoll::Pending),
            Ok(Err(e)) => {
                // librdkafka reconnects and retries broker errors itself
                // (a restarted broker): keep going, as the Kafka source does.
                tracing::warn!(input = %self.split_name(0), "kafka: {e}");
                return Ok(SourcePoll::Pending);
            }
            Ok(Ok(message)) => (
                message.offset(),
                StageRecord::decode(message.payload(), message.headers())?,
            ),
        };
        if self.next_offset.is_some_and(|next| offset < next) {
            // Seen on Tansu: the last record, at the same offset, right
            // again. StageInput takes each message once whatever its offset.
            tracing::debug!(input = %self.split_name(0), offset, "kafka handed a record again");
        }
        self.next_offset = Some(offset + 1);
        if record.is_for(self.reader.generation) {
            for epoch in record.barrier_epochs() {
                self.first_barriers.entry(epoch).or_insert(offset);
            }
        }
        let events = self.input.on_record(record)?;
        self.ready.extend(events);
        match self.ready.pop_front() {
            Some(event) => Ok(self.event(event)),
            None => Ok(SourcePoll::Pending),
        }
    }

    fn position(&self, _split: SplitId) -> Option<i64> {
        self.next_offset
    }

    fn snapshot(&mut self) -> Result<StateSnapshot> {
        let Some(epoch) = self.aligned else {
            return Ok(StateSnapshot::default());
        };
        // Restarting here reads every record that arrived after this
        // epoch's first barrier again: those of this generation that the
        // state already holds are skipped by generation after a restart,
        // as are those that will be produced again.
        let offset = self.first_barriers.get(&epoch).copied();
        self.first_barriers.retain(|e, _| *e > epoch);
        let Some(offset) = offset else {
            return Ok(StateSnapshot::default());
        };
        let table = POSITION.write(vec![Arc::new(Int64Array::from(vec![offset]))])?;
        Ok(StateSnapshot {
            tables: vec![table],
        })
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        if let Some(rows) = POSITION.read(&state)? {
            if let Some(offset) = rows.first::<Int64Type>("offset")? {
                self.start = Offset::Offset(offset);
            }
        }
        Ok(())
    }

    fn carries_row_watermarks(&self) -> bool {
        true
    }
}

impl Drop for StageSource {
    /// Takes the partition out of the shared consumer's assignment: the
    /// consumer stops fetching what no task reads.
    fn drop(&mut self) {
        if self.queue.take().is_none() {
            return;
        }
        let consumer = self.shared.consumer.lock().clone();
        if let (Some(consumer), Ok(assignment)) = (consumer, self.assignment(Offset::Invalid)) {
            if let Err(e) = consumer.incremental_unassign(&assignment) {
                tracing::debug!(input = %self.split_name(0), "kafka: {e}");
            }
        }
    }
}
