//! The Kafka source: one split per partition.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, Int32Array, Int64Array, StringArray,
    TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use futures::FutureExt;
use parking_lot::Mutex;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use weir_engine::changelog::{attach_kinds, kind_array, RowKind};
use weir_engine::{
    BadRecord, EngineError, KafkaOrigin, Result, Source, SourcePoll, SplitId, StateSnapshot,
    StateTable, SubtaskInfo,
};

use super::offsets::{BoundedMode, StartupMode};
use super::source_client::{PartitionOffsets, Reader, SourceClient};
use super::KafkaSettings;
use crate::deadletter::BadDataPolicy;
use crate::format::LineDecoder;
use crate::registry::{MetadataColumn, TableSpec};
use crate::replay::{DeadLetters, Letter};

/// Per partition: the offset a consumer can read up to (the last stable
/// offset under `read_committed`, librdkafka's default, else the high
/// watermark), from librdkafka's statistics.
pub(crate) type EndOffsets = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// Receives librdkafka's statistics. Its own `consumer_lag` counts from
/// the committed offset, which Weir does not keep current (offsets live in
/// checkpoints), so lag is computed from the end offset and the position.
pub(crate) struct StatsContext {
    pub end_offsets: EndOffsets,
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        let mut ends = self.end_offsets.lock();
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                if partition >= 0 && end >= 0 {
                    ends.insert((topic.clone(), partition), end);
                }
            }
        }
    }
}

impl ConsumerContext for StatsContext {}

fn kafka_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::connector("kafka", e)
}

struct PartitionState {
    split: SplitId,
    topic: String,
    partition: i32,
    /// The next offset to read.
    position: i64,
    /// Bounded: stop before this offset.
    end: Option<i64>,
    done: bool,
}

struct Assigned {
    /// `None` when the subtask has no partition.
    reader: Option<Reader>,
    partitions: Vec<PartitionState>,
    index: HashMap<(String, i32), usize>,
    last_commit: Instant,
}

/// A record as read, owned.
struct Record {
    payload: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    offset: i64,
    timestamp: Option<i64>,
    /// Kept for the dead letters only (most records have none).
    headers: Option<rdkafka::message::OwnedHeaders>,
}

impl Record {
    /// Where this record was read, for its dead letter.
    fn origin(&self, topic: &str, partition: i32) -> Box<KafkaOrigin> {
        use rdkafka::message::Headers;
        let headers = self
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect();
        Box::new(KafkaOrigin {
            topic: topic.to_string(),
            partition,
            offset: self.offset,
            key: self.key.clone(),
            headers,
        })
    }
}

pub struct KafkaSource {
    settings: Arc<KafkaSettings>,
    client: Arc<SourceClient>,
    /// When the subtask was made: the partitions' offsets it starts from
    /// are looked up after it.
    created: Instant,
    stream: String,
    schema: SchemaRef,
    metadata: Vec<MetadataColumn>,
    values: Values,
    key: Option<LineDecoder>,
    bad_data: BadDataPolicy,
    subtask: SubtaskInfo,
    assigned: Option<Assigned>,
    ready: VecDeque<SourcePoll>,
    restored: Option<HashMap<(String, i32), i64>>,
}

/// How a record's value becomes rows.
enum Values {
    /// Decoded by the stream's format.
    Decoded(Box<LineDecoder>),
    /// The topic holds dead letters (`'connector' = 'dead-letter'`): each
    /// record is turned into its letter.
    Letters(Arc<DeadLetters>),
}

impl KafkaSource {
    pub(crate) fn new(
        client: Arc<SourceClient>,
        spec: &TableSpec,
        subtask: SubtaskInfo,
    ) -> Result<Self> {
        let settings = client.settings();
        let value = LineDecoder::new(
            settings.value_format.clone(),
            settings.key.value_schema(spec),
            spec.name.clone(),
        )?;
        KafkaSource::reading(client, spec, subtask, Values::Decoded(Box::new(value)))
    }

    /// A source over a dead-letter topic, read as the letters of
    /// `letters`'s stream.
    pub(crate) fn of_dead_letters(
        client: Arc<SourceClient>,
        spec: &TableSpec,
        subtask: SubtaskInfo,
        letters: Arc<DeadLetters>,
    ) -> Result<Self> {
        KafkaSource::reading(client, spec, subtask, Values::Letters(letters))
    }

    fn reading(
        client: Arc<SourceClient>,
        spec: &TableSpec,
        subtask: SubtaskInfo,
        values: Values,
    ) -> Result<Self> {
        let settings = client.settings();
        let key = match &settings.key.format {
            Some(format) => Some(LineDecoder::new(
                format.clone(),
                settings.key.key_schema(spec),
                spec.name.clone(),
            )?),
            None => None,
        };
        Ok(KafkaSource {
            settings,
            client,
            created: Instant::now(),
            stream: spec.name.clone(),
            schema: spec.schema.clone(),
            metadata: spec.metadata.clone(),
            values,
            key,
            bad_data: spec.bad_data.clone(),
            subtask,
            assigned: None,
            ready: VecDeque::new(),
            restored: None,
        })
    }

    /// Takes this subtask's share of the partitions (looked up once for
    /// every subtask of the source in this process) and starts reading
    /// each at its start.
    async fn assign(&mut self) -> Result<Vec<SplitId>> {
        let lookup = self.client.lookup(self.created).await?;
        let partitions = plan_partitions(
            &lookup.partitions,
            &self.settings,
            self.subtask,
            self.restored.as_ref(),
        );
        let starts: Vec<(String, i32, i64)> = partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.position))
            .collect();
        let reader = self.client.reader(&starts)?;
        let splits = partitions.iter().map(|p| p.split).collect();
        for p in partitions.iter().filter(|p| p.done) {
            self.ready.push_back(SourcePoll::SplitEnded(p.split));
        }
        let index = partitions
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.topic.clone(), p.partition), i))
            .collect();
        tracing::info!(stream = %self.stream, subtask = self.subtask.index, partitions = partitions.len(), "kafka partitions assigned");
        self.assigned = Some(Assigned {
            reader,
            partitions,
            index,
            last_commit: Instant::now(),
        });
        Ok(splits)
    }

    /// Commits read positions to the consumer group (at-least-once).
    fn commit(&mut self) {
        let (Some(assigned), Some(_)) = (&mut self.assigned, &self.settings.group_id) else {
            return;
        };
        assigned.last_commit = Instant::now();
        let Some(reader) = &assigned.reader else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for p in &assigned.partitions {
            let _ = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.position));
        }
        if let Err(e) = reader.consumer().commit(&tpl, CommitMode::Async) {
            tracing::warn!(stream = %self.stream, "kafka offset commit failed: {e}");
        }
    }

    /// Reads what arrives within a short linger, grouped per partition.
    async fn read(&mut self) -> Result<Vec<(usize, Vec<Record>)>> {
        let Some(Assigned {
            reader: Some(reader),
            partitions,
            index,
            ..
        }) = &mut self.assigned
        else {
            return Ok(Vec::new());
        };
        let mut groups: Vec<(usize, Vec<Record>)> = Vec::new();
        let mut count = 0;
        // Wait for the first record (up to the poll limit), then take what
        // is already there; linger once, briefly, if the batch is not full,
        // so latency stays low at low rates without a timer per record.
        let mut wait = Some(weir_engine::source::MAX_POLL_WAIT);
        let mut lingered = false;
        while count < self.settings.batch_size {
            let received = match wait.take() {
                Some(limit) => tokio::time::timeout(limit, reader.recv()).await.ok(),
                None => reader.recv().now_or_never(),
            };
            let message = match received {
                None if count > 0 && !std::mem::replace(&mut lingered, true) => {
                    wait = Some(LINGER);
                    continue;
                }
                None => break,
                Some(Err(e)) => {
                    // librdkafka retries broker errors itself; keep going.
                    tracing::warn!(stream = %self.stream, "kafka: {e}");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            let Some(&i) = index.get(&(message.topic().to_string(), message.partition())) else {
                continue;
            };
            let state = &mut partitions[i];
            if state.done || state.end.is_some_and(|end| message.offset() >= end) {
                continue;
            }
            if message.offset() < state.position {
                // Offsets only grow within a partition: a record below the
                // position was read before, and reading it again would
                // count its row twice.
                tracing::warn!(stream = %self.stream, partition = state.partition, offset = message.offset(), position = state.position, "kafka handed a record again; skipped");
                continue;
            }
            state.position = message.offset() + 1;
            let record = Record {
                payload: message.payload().map(<[u8]>::to_vec),
                key: message.key().map(<[u8]>::to_vec),
                offset: message.offset(),
                timestamp: message.timestamp().to_millis(),
                headers: message.headers().map(|h| h.detach()),
            };
            match groups.iter_mut().find(|(g, _)| *g == i) {
                Some((_, records)) => records.push(record),
                None => groups.push((i, vec![record])),
            }
            count += 1;
        }
        Ok(groups)
    }

    /// Marks partitions that reached their end; pauses them.
    fn finish_partitions(&mut self) {
        let Some(assigned) = &mut self.assigned else {
            return;
        };
        let mut paused = TopicPartitionList::new();
        for p in assigned.partitions.iter_mut() {
            if !p.done && p.end.is_some_and(|end| p.position >= end) {
                p.done = true;
                let _ = paused.add_partition(&p.topic, p.partition);
                self.ready.push_back(SourcePoll::SplitEnded(p.split));
            }
        }
        if let (Some(reader), true) = (&assigned.reader, paused.count() > 0) {
            let _ = reader.consumer().pause(&paused);
        }
    }

    /// The rows a dead-letter topic's records make: this stream's letters,
    /// or their records decoded again (what still fails goes to this
    /// stream's own dead letters).
    async fn decode_letters(
        &self,
        letters: &DeadLetters,
        topic: &str,
        partition: i32,
        records: &[Record],
    ) -> Result<Option<RecordBatch>> {
        use rdkafka::message::Headers;
        let found: Vec<Letter> = records
            .iter()
            .filter_map(|r| {
                let headers: Vec<(&str, &[u8])> = r
                    .headers
                    .iter()
                    .flat_map(|h| h.iter())
                    .map(|h| (h.key, h.value.unwrap_or_default()))
                    .collect();
                let at = record_location(topic, partition, r.offset);
                letters.letter_of_record(&headers, r.key.as_deref(), r.payload.as_deref(), at)
            })
            .collect();
        if found.is_empty() {
            return Ok(None);
        }
        letters.prepare(&found).await.map_err(kafka_error)?;
        let mut decoded = letters.decode(&found, &self.schema)?;
        self.bad_data.handle(decoded.bad_records()).await?;
        Ok(decoded.batch.filter(|b| b.num_rows() > 0))
    }

    /// Decodes one partition's records into a batch; bad records go to the
    /// dead-letter output. A tombstone (a record without a value) is a
    /// delete of its key for an upsert stream, and bad otherwise; a
    /// changelog format's records are changes.
    async fn decode(
        &self,
        topic: &str,
        partition: i32,
        records: &[Record],
    ) -> Result<Option<RecordBatch>> {
        let location = |r: &Record| record_location(topic, partition, r.offset);
        let value = match &self.values {
            Values::Decoded(decoder) => decoder,
            Values::Letters(letters) => {
                return self
                    .decode_letters(letters, topic, partition, records)
                    .await
            }
        };
        let mut bad: Vec<BadRecord> = Vec::new();
        let empty: &[u8] = &[];
        let upsert = self.settings.upsert;
        let mut candidates: Vec<usize> = Vec::with_capacity(records.len());
        let mut tombstones: Vec<usize> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match (&r.payload, upsert) {
                (Some(_), _) => candidates.push(i),
                (None, true) => tombstones.push(i),
                (None, false) => bad.push(BadRecord {
                    stream: self.stream.clone(),
                    reason: "the record has no value (a tombstone)".into(),
                    location: location(r),
                    raw: Vec::new(),
                    kafka: Some(r.origin(topic, partition)),
                }),
            }
        }
        // One decoder call for the whole poll; a record's location is made
        // only if it is bad.
        let payloads: Vec<&[u8]> = candidates
            .iter()
            .map(|i| records[*i].payload.as_deref().unwrap_or(empty))
            .collect();
        value.prepare(&payloads).await.map_err(kafka_error)?;
        let mut decoded =
            value.decode_records(&payloads, &|i| location(&records[candidates[i]]))?;
        let origin = |i: usize| Some(records[i].origin(topic, partition));
        for (i, b) in decoded.bad.iter_mut() {
            b.kafka = origin(candidates[*i]);
        }
        if self.settings.value_format.is_changelog() {
            // Change events hold their rows whole: no key or metadata
            // columns to add, and one record may be two rows.
            bad.extend(decoded.bad_records());
            self.bad_data.handle(bad).await?;
            return Ok(decoded.batch.filter(|b| b.num_rows() > 0));
        }
        let rejected: HashSet<usize> = decoded.bad.iter().map(|(i, _)| *i).collect();
        bad.extend(decoded.bad_records());
        // The good records in their order, each with its row of `values`
        // (`None`: a tombstone). `values` has a row for each record that
        // decoded, in order: the rejected ones take none.
        let mut value_rows = (0u32..).zip(
            candidates
                .iter()
                .enumerate()
                .filter(|(i, _)| !rejected.contains(i))
                .map(|(_, record)| *record),
        );
        let mut good: Vec<(usize, Option<u32>)> = Vec::with_capacity(records.len());
        let mut tombstones = tombstones.into_iter().peekable();
        let mut next_value = value_rows.next();
        loop {
            let take_tombstone = match (next_value, tombstones.peek()) {
                (None, None) => break,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some((_, v)), Some(t)) => *t < v,
            };
            if take_tombstone {
                if let Some(t) = tombstones.next() {
                    good.push((t, None));
                }
            } else if let Some((row, record)) = next_value {
                good.push((record, Some(row)));
                next_value = value_rows.next();
            }
        }
        let values = decoded.batch;
        let mut keys = None;
        if let Some(key_decoder) = &self.key {
            let key_bytes: Vec<&[u8]> = good
                .iter()
                .map(|(i, _)| records[*i].key.as_deref().unwrap_or(empty))
                .collect();
            key_decoder.prepare(&key_bytes).await.map_err(kafka_error)?;
            let mut key_decoded =
                key_decoder.decode_records(&key_bytes, &|i| location(&records[good[i].0]))?;
            if !key_decoded.bad.is_empty() {
                for (i, b) in key_decoded.bad.iter_mut() {
                    b.kafka = origin(good[*i].0);
                }
                let rejected: HashSet<usize> = key_decoded.bad.iter().map(|(i, _)| *i).collect();
                good = good
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !rejected.contains(i))
                    .map(|(_, g)| g)
                    .collect();
                bad.extend(key_decoded.bad_records().into_iter().map(|mut b| {
                    b.reason = format!("key: {}", b.reason);
                    b
                }));
            }
            keys = key_decoded.batch;
        }
        self.bad_data.handle(bad).await?;
        if good.is_empty() {
            return Ok(None);
        }
        let rows = good.len();
        let value_indices = UInt32Array::from(good.iter().map(|(_, v)| *v).collect::<Vec<_>>());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len() + 1);
        for (i, field) in self.schema.fields().iter().enumerate() {
            let column: ArrayRef = if let Some(m) = self.metadata.iter().find(|m| m.index == i) {
                let array: ArrayRef = match m.key.as_str() {
                    "topic" => Arc::new(StringArray::from(vec![topic; rows])),
                    "partition" => Arc::new(Int32Array::from(vec![partition; rows])),
                    "offset" => Arc::new(Int64Array::from_iter_values(
                        good.iter().map(|(g, _)| records[*g].offset),
                    )),
                    _ => Arc::new(TimestampMillisecondArray::from(
                        good.iter()
                            .map(|(g, _)| records[*g].timestamp)
                            .collect::<Vec<_>>(),
                    )),
                };
                if array.data_type() == field.data_type() {
                    array
                } else {
                    cast(&array, field.data_type())?
                }
            } else if let (Some(keys), true) =
                (&keys, self.settings.key.fields.contains(field.name()))
            {
                keys.column_by_name(field.name())
                    .cloned()
                    .ok_or_else(|| kafka_error(format!("key column {} missing", field.name())))?
            } else {
                let column = values
                    .as_ref()
                    .and_then(|v| v.column_by_name(field.name()))
                    .cloned()
                    .unwrap_or_else(|| new_null_array(field.data_type(), 0));
                // A tombstone's value columns are NULL.
                take(column.as_ref(), &value_indices, None)?
            };
            columns.push(column);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        if !upsert {
            return Ok(Some(batch));
        }
        let kinds: Vec<RowKind> = good
            .iter()
            .map(|(_, v)| match v {
                Some(_) => RowKind::Insert,
                None => RowKind::Delete,
            })
            .collect();
        Ok(Some(attach_kinds(&batch, kind_array(&kinds))?))
    }
}

/// Where a record was read, as its dead letter names it.
fn record_location(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}-{partition}@{offset}")
}

/// The partitions of this subtask, every `parallelism`-th of the sorted
/// list, with their start and end offsets: a restored position, else
/// what `'scan.startup.mode'` says, within the log; the end that
/// `'scan.bounded.mode'` says.
fn plan_partitions(
    all: &[PartitionOffsets],
    settings: &KafkaSettings,
    subtask: SubtaskInfo,
    restored: Option<&HashMap<(String, i32), i64>>,
) -> Vec<PartitionState> {
    let mine = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % subtask.parallelism == subtask.index);
    mine.map(|(split, p)| {
        let key = (p.topic.clone(), p.partition);
        let start = match restored.and_then(|r| r.get(&key)) {
            Some(o) => {
                if !(p.low..=p.high).contains(o) {
                    // Moving a restored position reads rows again (or
                    // skips them): say so.
                    tracing::warn!(topic = %p.topic, partition = p.partition, restored = *o, low = p.low, high = p.high, "a restored position is outside the partition; reading from within it");
                }
                *o
            }
            None => match &settings.startup {
                StartupMode::Earliest => p.low,
                StartupMode::Latest => p.high,
                StartupMode::GroupOffsets => p.committed.unwrap_or(p.low),
                StartupMode::Timestamp(_) => p.start_at_time.unwrap_or(p.high),
                StartupMode::Specific(m) => m.get(&p.partition).copied().unwrap_or(p.low),
            },
        }
        .clamp(p.low, p.high);
        let end = match &settings.bounded {
            BoundedMode::Unbounded => None,
            BoundedMode::Latest => Some(p.high),
            BoundedMode::GroupOffsets => Some(p.committed.unwrap_or(p.high)),
            BoundedMode::Timestamp(_) => Some(p.end_at_time.unwrap_or(p.high)),
            BoundedMode::Specific(m) => Some(m.get(&p.partition).copied().unwrap_or(p.high)),
        };
        PartitionState {
            split: split as SplitId,
            topic: p.topic.clone(),
            partition: p.partition,
            position: start,
            end,
            done: end.is_some_and(|e| start >= e),
        }
    })
    .collect()
}

/// How long a poll waits for more records after the first.
/// The next offset to read of each assigned partition.
static OFFSETS: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "offsets",
        [
            ("topic", DataType::Utf8),
            ("partition", DataType::Int32),
            ("offset", DataType::Int64),
        ],
    )
});

const LINGER: Duration = Duration::from_millis(20);

/// How often read positions are committed to the group.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

#[async_trait]
impl Source for KafkaSource {
    fn splits(&self) -> Vec<SplitId> {
        Vec::new()
    }

    fn split_name(&self, split: SplitId) -> String {
        self.assigned
            .as_ref()
            .and_then(|a| a.partitions.iter().find(|p| p.split == split))
            .map_or(split.to_string(), |p| {
                format!("{}-{}", p.topic, p.partition)
            })
    }

    fn position(&self, split: SplitId) -> Option<i64> {
        let assigned = self.assigned.as_ref()?;
        assigned
            .partitions
            .iter()
            .find(|p| p.split == split)
            .map(|p| p.position)
    }

    fn lag(&self, split: SplitId) -> Option<i64> {
        let assigned = self.assigned.as_ref()?;
        let p = assigned.partitions.iter().find(|p| p.split == split)?;
        let end = *self
            .client
            .end_offsets
            .lock()
            .get(&(p.topic.clone(), p.partition))?;
        Some((end - p.position).max(0))
    }

    async fn poll(&mut self) -> Result<SourcePoll> {
        if let Some(event) = self.ready.pop_front() {
            return Ok(event);
        }
        if self.assigned.is_none() {
            let splits = self.assign().await?;
            return Ok(SourcePoll::SplitsAdded(splits));
        }
        if self
            .assigned
            .as_ref()
            .is_some_and(|a| a.partitions.iter().all(|p| p.done))
        {
            self.commit();
            return Ok(SourcePoll::End);
        }
        let groups = self.read().await?;
        for (i, records) in groups {
            let (topic, partition, split) = match &self.assigned {
                Some(a) => (
                    a.partitions[i].topic.clone(),
                    a.partitions[i].partition,
                    a.partitions[i].split,
                ),
                None => continue,
            };
            if let Some(batch) = self.decode(&topic, partition, &records).await? {
                self.ready.push_back(SourcePoll::Batch { split, batch });
            }
        }
        self.finish_partitions();
        if self
            .assigned
            .as_ref()
            .is_some_and(|a| a.last_commit.elapsed() >= COMMIT_INTERVAL)
        {
            self.commit();
        }
        Ok(self.ready.pop_front().unwrap_or(SourcePoll::Pending))
    }

    fn snapshot(&mut self) -> Result<StateSnapshot> {
        self.commit();
        let positions: Vec<(&str, i32, i64)> = match (&self.assigned, &self.restored) {
            (Some(assigned), _) => assigned
                .partitions
                .iter()
                .map(|p| (p.topic.as_str(), p.partition, p.position))
                .collect(),
            // A barrier before the first poll: nothing was read since the
            // restore, so the restored offsets are still the position (an
            // empty snapshot would restart from the startup mode and read
            // again what the state already holds).
            (None, Some(restored)) => restored
                .iter()
                .map(|((topic, partition), offset)| (topic.as_str(), *partition, *offset))
                .collect(),
            (None, None) => return Ok(StateSnapshot::default()),
        };
        let table = OFFSETS.write(vec![
            Arc::new(StringArray::from_iter_values(positions.iter().map(|p| p.0))),
            Arc::new(Int32Array::from_iter_values(positions.iter().map(|p| p.1))),
            Arc::new(Int64Array::from_iter_values(positions.iter().map(|p| p.2))),
        ])?;
        Ok(StateSnapshot {
            tables: vec![table],
        })
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        let Some(table) = OFFSETS.read(&state)? else {
            return Ok(());
        };
        let topics = table.column::<StringArray>("topic")?;
        let partitions = table.column::<Int32Array>("partition")?;
        let offsets = table.column::<Int64Array>("offset")?;
        let mut restored = HashMap::new();
        for i in 0..table.num_rows() {
            restored.insert(
                (topics.value(i).to_string(), partitions.value(i)),
                offsets.value(i),
            );
        }
        self.restored = Some(restored);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::Options;

    fn bids_options<'a>(more: &[(&'a str, &'a str)]) -> Options {
        let options = [
            ("connector", "kafka"),
            ("topic", "bids"),
            // Never contacted: nothing here polls.
            ("properties.bootstrap.servers", "127.0.0.1:1"),
            ("format", "json"),
        ];
        Options::new(options.iter().chain(more).copied())
    }

    fn source() -> KafkaSource {
        let options = bids_options(&[]);
        let settings = Arc::new(KafkaSettings::parse(&options).unwrap());
        let spec = TableSpec {
            name: "bids".into(),
            schema: Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)])),
            options,
            partitioned_by: Vec::new(),
            bad_data: BadDataPolicy::Fail,
            metadata: Vec::new(),
            checkpointing: true,
            primary_key: Vec::new(),
            read_fields: Default::default(),
        };
        let subtask = SubtaskInfo {
            index: 0,
            parallelism: 1,
        };
        let client = Arc::new(SourceClient::new(settings, "bids"));
        KafkaSource::new(client, &spec, subtask).unwrap()
    }

    fn offsets(state: &StateSnapshot) -> Vec<(String, i32, i64)> {
        let table = OFFSETS.read(state).unwrap().unwrap();
        let topics = table.column::<StringArray>("topic").unwrap();
        let partitions = table.column::<Int32Array>("partition").unwrap();
        let offsets = table.column::<Int64Array>("offset").unwrap();
        let mut rows: Vec<_> = (0..table.num_rows())
            .map(|i| {
                (
                    topics.value(i).to_string(),
                    partitions.value(i),
                    offsets.value(i),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    /// Partition `p` of `bids` holding offsets `10 * p ..= 10 * p + 9`;
    /// the group committed `10 * p + 5`, timestamp 1000 is at `10 * p + 3`.
    fn looked_up(count: i32) -> Vec<PartitionOffsets> {
        (0..count)
            .map(|p| PartitionOffsets {
                topic: "bids".into(),
                partition: p,
                low: 10 * i64::from(p),
                high: 10 * i64::from(p) + 10,
                committed: Some(10 * i64::from(p) + 5),
                start_at_time: Some(10 * i64::from(p) + 3),
                end_at_time: Some(10 * i64::from(p) + 3),
            })
            .collect()
    }

    /// `(split, partition, start, end, done)` of each partition planned.
    fn planned(
        options: &[(&str, &str)],
        subtask: (usize, usize),
        restored: Option<&HashMap<(String, i32), i64>>,
    ) -> Vec<(SplitId, i32, i64, Option<i64>, bool)> {
        let settings = KafkaSettings::parse(&bids_options(options)).unwrap();
        let subtask = SubtaskInfo {
            index: subtask.0,
            parallelism: subtask.1,
        };
        plan_partitions(&looked_up(5), &settings, subtask, restored)
            .into_iter()
            .map(|p| (p.split, p.partition, p.position, p.end, p.done))
            .collect()
    }

    /// Subtasks take every `parallelism`-th partition of one lookup, and
    /// each mode picks its offset from it (worked out by hand from
    /// [`looked_up`]).
    #[test]
    fn each_subtask_plans_its_share_of_one_lookup() {
        let earliest = [("scan.startup.mode", "earliest-offset")];
        assert_eq!(
            planned(&earliest, (1, 2), None),
            vec![(1, 1, 10, None, false), (3, 3, 30, None, false)]
        );
        // More subtasks than partitions: the last ones read none.
        assert_eq!(planned(&earliest, (5, 6), None), vec![]);
        let latest = [("scan.startup.mode", "latest-offset")];
        assert_eq!(
            planned(&latest, (2, 3), None),
            vec![(2, 2, 30, None, false)]
        );
        let group = [
            ("properties.group.id", "readers"),
            ("scan.startup.mode", "group-offsets"),
            ("scan.bounded.mode", "latest-offset"),
        ];
        assert_eq!(
            planned(&group, (0, 4), None),
            vec![(0, 0, 5, Some(10), false), (4, 4, 45, Some(50), false)]
        );
        let by_time = [
            ("scan.startup.mode", "timestamp"),
            ("scan.startup.timestamp-millis", "1000"),
            ("scan.bounded.mode", "timestamp"),
            ("scan.bounded.timestamp-millis", "1000"),
        ];
        assert_eq!(
            planned(&by_time, (0, 5), None),
            vec![(0, 0, 3, Some(3), true)]
        );
        let specific = [
            ("scan.startup.mode", "specific-offsets"),
            (
                "scan.startup.specific-offsets",
                "partition:1,offset:17;partition:2,offset:99",
            ),
        ];
        // Partition 2's offset is past its end: clamped to the end. No
        // offset for partition 3: its earliest.
        assert_eq!(
            planned(&specific, (1, 2), None),
            vec![(1, 1, 17, None, false), (3, 3, 30, None, false)]
        );
        assert_eq!(
            planned(&specific, (2, 5), None),
            vec![(2, 2, 30, None, false)]
        );
        // A restored position wins over the mode, within the log.
        let restored = HashMap::from([(("bids".to_string(), 1), 12), (("bids".to_string(), 3), 2)]);
        assert_eq!(
            planned(&latest, (1, 2), Some(&restored)),
            vec![(1, 1, 12, None, false), (3, 3, 30, None, false)]
        );
    }

    /// A barrier that comes before the first poll (a task restored under
    /// load) snapshots the restored offsets: an empty snapshot would send
    /// the next restore back to the startup mode, and the rows the state
    /// already counted would be read again (found by the cluster test on
    /// a busy machine).
    #[test]
    fn a_snapshot_before_the_first_poll_keeps_the_restored_offsets() {
        let mut first = source();
        assert!(first.snapshot().unwrap().tables.is_empty());
        let restored = vec![("bids".to_string(), 0, 120), ("bids".to_string(), 2, 7)];
        let table = OFFSETS
            .write(vec![
                Arc::new(StringArray::from_iter_values(
                    restored.iter().map(|r| r.0.clone()),
                )),
                Arc::new(Int32Array::from_iter_values(restored.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(restored.iter().map(|r| r.2))),
            ])
            .unwrap();
        let mut again = source();
        again
            .restore(StateSnapshot {
                tables: vec![table],
            })
            .unwrap();
        assert_eq!(offsets(&again.snapshot().unwrap()), restored);
    }
}
