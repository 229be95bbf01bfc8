//! A consuming task's reader: one partition of a stage's repartition
//! topic, read as a [`Source`] whose batches, watermarks and barriers are
//! what the upstream stage's producers wrote (`docs/cluster-protocol.md`,
//! "Records between stages"). [`StageInput`] decides the order; this
//! reads the records and keeps the position a checkpoint restarts from:
//! the offset of the first barrier of the epoch in the partition.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use weir_engine::source::{SourceFactory, SourcePoll, SplitId, MAX_POLL_WAIT};
use weir_engine::{EngineError, Result, Source, StateSnapshot, StateTable, SubtaskInfo};

use super::stage_input::{InputEvent, StageInput};
use super::stage_records::{StageMessage, StageRecord};

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
    /// One source per task.
    pub fn factory(self) -> SourceFactory {
        let reader = Arc::new(self);
        Arc::new(move |info: SubtaskInfo| {
            Ok(Box::new(StageSource {
                reader: reader.clone(),
                partition: i32::try_from(info.index)
                    .map_err(|e| EngineError::connector("stage input", e))?,
                input: StageInput::new(reader.generation, reader.producers.clone()),
                consumer: None,
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

struct StageSource {
    reader: Arc<StageReader>,
    partition: i32,
    input: StageInput,
    consumer: Option<StreamConsumer>,
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

    /// Creates the reader at the start position, the first time.
    fn open(&mut self) -> Result<()> {
        if self.consumer.is_none() {
            let consumer: StreamConsumer = self
                .reader
                .client
                .clone()
                .set("group.id", format!("{}.reader", self.reader.topic))
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .create()
                .map_err(|e| self.error(e))?;
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(&self.reader.topic, self.partition, self.start)
                .map_err(|e| self.error(e))?;
            consumer.assign(&assignment).map_err(|e| self.error(e))?;
            self.consumer = Some(consumer);
        }
        Ok(())
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
        let Some(consumer) = &self.consumer else {
            return Ok(SourcePoll::Pending);
        };
        let (offset, record) = match tokio::time::timeout(MAX_POLL_WAIT, consumer.recv()).await {
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
        self.next_offset = Some(offset + 1);
        if record.message == StageMessage::Barrier && record.is_for(self.reader.generation) {
            self.first_barriers
                .entry(record.tag.epoch)
                .or_insert(offset);
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
