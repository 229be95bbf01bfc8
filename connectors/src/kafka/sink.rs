//! The Kafka sink: rows as records, keyed by `'key.fields'`; at-least-once
//! (deliveries awaited at every barrier) or exactly-once (a transaction per
//! checkpoint, see [`super::transactions`]). An upsert sink writes a
//! tombstone for each `-U` and `-D`, and may keep the last record of each
//! key to write them out together ([`Buffer`]); a changelog format
//! (`debezium-json`) encodes each row with its kind.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use weir_engine::changelog::{attach_kinds, kinds_of, row_kinds};
use weir_engine::operator::SubtaskInfo;
use weir_engine::{CheckpointId, EngineError, Result, Sink, StateSnapshot};

use super::transactions::{JournalRecord, Transactions};
use super::{set_default, KafkaSettings};
use crate::format::RowEncoder;
use crate::registry::TableSpec;

/// Records in flight before the sink waits for deliveries.
const MAX_IN_FLIGHT: usize = 50_000;

pub struct KafkaSink {
    settings: Arc<KafkaSettings>,
    topic: String,
    /// At-least-once: one producer for the job; exactly-once: the producer
    /// of the open transaction, if one is open.
    producer: Option<FutureProducer>,
    exactly_once: Option<Transactions>,
    /// Value columns (not metadata, and without key fields for EXCEPT_KEY).
    value_columns: Vec<usize>,
    key_columns: Vec<usize>,
    /// A `timestamp` metadata column sets the record timestamp.
    timestamp_column: Option<usize>,
    in_flight: VecDeque<DeliveryFuture>,
    buffer: Option<Buffer>,
    values: RowEncoder,
    keys: Option<RowEncoder>,
}

/// An upsert sink's last record of each key, not yet written
/// (`'sink.buffer-flush.max-rows'` / `.interval`).
struct Buffer {
    max_rows: usize,
    interval: Duration,
    records: Vec<JournalRecord>,
    by_key: HashMap<Vec<u8>, usize>,
}

impl Buffer {
    /// Keeps `record` in place of its key's earlier one.
    fn keep(&mut self, record: JournalRecord) {
        let key = record.key.clone().unwrap_or_default();
        match self.by_key.get(&key) {
            Some(&at) => self.records[at] = record,
            None => {
                self.by_key.insert(key, self.records.len());
                self.records.push(record);
            }
        }
    }

    fn take(&mut self) -> Vec<JournalRecord> {
        self.by_key.clear();
        std::mem::take(&mut self.records)
    }
}

fn kafka_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::connector("kafka sink", e)
}

impl KafkaSink {
    /// `transactional_id_prefix` makes it exactly-once.
    pub(crate) fn new(
        settings: Arc<KafkaSettings>,
        spec: &TableSpec,
        info: SubtaskInfo,
        transactional_id_prefix: Option<&str>,
    ) -> Result<Self> {
        let client = settings.client_config();
        let mut config = client.clone();
        set_default(&mut config, "message.timeout.ms", "60000");
        // librdkafka retries a failed produce request itself; a broker that
        // is down is waited for up to 'message.timeout.ms'.
        let retries = spec
            .options
            .parse::<usize>("sink.max-retries")
            .map_err(kafka_error)?;
        if let Some(retries) = retries {
            set_default(&mut config, "retries", &retries.to_string());
        }
        // A retried produce request whose first try did land writes its
        // records twice; the idempotent producer (the Java client's default
        // since Kafka 3.0) lets the broker drop the copy. The likeliest
        // cause of a cluster test failure on CI, where one second of bids
        // was in the topic twice, in every partition. It needs retries and
        // acks from all replicas, so a user's other choice wins.
        let acks = config
            .get("acks")
            .or_else(|| config.get("request.required.acks"))
            .unwrap_or("all");
        if retries != Some(0) && matches!(acks, "all" | "-1") {
            set_default(&mut config, "enable.idempotence", "true");
        }
        let topic = settings.topics[0].clone();
        let (producer, exactly_once) = match transactional_id_prefix {
            Some(prefix) => (
                None,
                Some(Transactions::new(
                    config,
                    client,
                    topic.clone(),
                    prefix,
                    info.index,
                )),
            ),
            None => (Some(config.create().map_err(kafka_error)?), None),
        };
        let (key_columns, value_columns) = written_columns(&settings, spec);
        let timestamp_column = spec
            .metadata
            .iter()
            .find(|m| m.key == "timestamp")
            .map(|m| m.index);
        let buffer = settings.buffer_flush.map(|(max_rows, interval)| Buffer {
            max_rows,
            interval,
            records: Vec::new(),
            by_key: HashMap::new(),
        });
        Ok(KafkaSink {
            buffer,
            values: RowEncoder::new(&settings.value_format).map_err(kafka_error)?,
            keys: settings
                .key
                .format
                .as_ref()
                .map(RowEncoder::new)
                .transpose()
                .map_err(kafka_error)?,
            topic,
            settings,
            producer,
            exactly_once,
            value_columns,
            key_columns,
            timestamp_column,
            in_flight: VecDeque::new(),
        })
    }

    /// Waits until at most `limit` records are in flight; a failed delivery
    /// fails the job.
    async fn drain(&mut self, limit: usize) -> Result<()> {
        while self.in_flight.len() > limit {
            let Some(delivery) = self.in_flight.pop_front() else {
                break;
            };
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(kafka_error(format!(
                        "delivery to '{}' failed: {e}",
                        self.topic
                    )))
                }
                Err(_) => return Err(kafka_error("the producer went away")),
            }
        }
        Ok(())
    }

    async fn flush_deliveries(&mut self) -> Result<()> {
        self.drain(0).await?;
        let Some(producer) = self.producer.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(60)))
            .await
            .map_err(kafka_error)?
            .map_err(kafka_error)
    }

    /// The producer to send with: exactly-once begins a transaction if
    /// none is open.
    async fn producer(&mut self) -> Result<FutureProducer> {
        if let Some(producer) = &self.producer {
            return Ok(producer.clone());
        }
        let Some(transactions) = &mut self.exactly_once else {
            return Err(kafka_error("the producer went away"));
        };
        let producer = transactions.begin().await?;
        self.producer = Some(producer.clone());
        Ok(producer)
    }

    /// Sends one record (journaled when exactly-once) and bounds what is
    /// in flight.
    async fn send(&mut self, producer: &FutureProducer, record: JournalRecord) -> Result<()> {
        let mut future: FutureRecord<'_, Vec<u8>, Vec<u8>> = FutureRecord::to(&self.topic);
        if let Some(value) = &record.value {
            future = future.payload(value);
        }
        if let Some(key) = &record.key {
            future = future.key(key);
        }
        if let Some(ts) = record.timestamp {
            future = future.timestamp(ts);
        }
        match producer.send_result(future) {
            Ok(delivery) => self.in_flight.push_back(delivery),
            Err((e, _)) => {
                return Err(kafka_error(format!("cannot send to '{}': {e}", self.topic)))
            }
        }
        if let Some(transactions) = &mut self.exactly_once {
            transactions.record(record)?;
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.drain(MAX_IN_FLIGHT / 2).await?;
        }
        Ok(())
    }
}

impl KafkaSink {
    /// The records of `batch`: an upsert sink's `-U` and `-D` rows are
    /// tombstones of their keys.
    fn records(&self, batch: &RecordBatch) -> Result<Vec<JournalRecord>> {
        let rows = batch.num_rows();
        let mut value_batch = batch.project(&self.value_columns)?;
        if self.settings.value_format.is_changelog() {
            if let Some(kinds) = row_kinds(batch) {
                value_batch = attach_kinds(&value_batch, Arc::new(kinds.clone()))?;
            }
        }
        let values = self.values.encode_rows(&value_batch)?;
        let keys = match &self.keys {
            Some(keys) => Some(keys.encode_rows(&batch.project(&self.key_columns)?)?),
            None => None,
        };
        let deletes: Vec<bool> = if self.settings.upsert {
            kinds_of(batch)?
                .iter()
                .map(|k| !k.is_accumulate())
                .collect()
        } else {
            vec![false; rows]
        };
        let timestamps = match self.timestamp_column {
            Some(i) => {
                let column = cast(
                    batch.column(i),
                    &DataType::Timestamp(TimeUnit::Millisecond, None),
                )?;
                column
                    .as_any()
                    .downcast_ref::<TimestampMillisecondArray>()
                    .cloned()
            }
            None => None,
        };
        let mut keys = keys.map(Vec::into_iter);
        Ok(values
            .into_iter()
            .enumerate()
            .take(rows)
            .map(|(row, value)| JournalRecord {
                key: keys.as_mut().and_then(Iterator::next),
                value: (!deletes[row]).then_some(value),
                timestamp: timestamps
                    .as_ref()
                    .filter(|t| t.is_valid(row))
                    .map(|t| t.value(row)),
            })
            .collect())
    }

    /// Writes out what the upsert buffer holds.
    async fn flush_buffer(&mut self) -> Result<()> {
        let Some(buffer) = &mut self.buffer else {
            return Ok(());
        };
        let records = buffer.take();
        if records.is_empty() {
            return Ok(());
        }
        let producer = self.producer().await?;
        for record in records {
            self.send(&producer, record).await?;
        }
        Ok(())
    }
}

/// The columns a record's key and value are written from: the key fields,
/// and the physical columns (without the key fields unless the value
/// includes them).
pub(super) fn written_columns(
    settings: &KafkaSettings,
    spec: &TableSpec,
) -> (Vec<usize>, Vec<usize>) {
    let key_columns = settings
        .key
        .fields
        .iter()
        .filter_map(|k| spec.schema.index_of(k).ok())
        .collect();
    let value_columns = (0..spec.schema.fields().len())
        .filter(|i| !spec.is_metadata(*i) && settings.key.in_value(spec.schema.field(*i).name()))
        .collect();
    (key_columns, value_columns)
}

#[async_trait]
impl Sink for KafkaSink {
    fn visibility(&self) -> weir_engine::Visibility {
        // Read-committed consumers see a transaction's records at its commit.
        match self.exactly_once {
            Some(_) => weir_engine::Visibility::AtCommit,
            None => weir_engine::Visibility::AtOnce,
        }
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        // A registry format registers its schema before the first record.
        let schema = batch.schema();
        self.values
            .prepare(&schema.project(&self.value_columns)?, &self.topic, false)
            .await
            .map_err(kafka_error)?;
        if let Some(keys) = &mut self.keys {
            keys.prepare(&schema.project(&self.key_columns)?, &self.topic, true)
                .await
                .map_err(kafka_error)?;
        }
        let records = self.records(&batch)?;
        if let Some(buffer) = &mut self.buffer {
            for record in records {
                buffer.keep(record);
            }
            if buffer.records.len() >= buffer.max_rows {
                self.flush_buffer().await?;
            }
            return Ok(());
        }
        let producer = self.producer().await?;
        for record in records {
            self.send(&producer, record).await?;
        }
        Ok(())
    }

    fn flush_interval(&self) -> Option<Duration> {
        self.buffer.as_ref().map(|b| b.interval)
    }

    async fn flush(&mut self) -> Result<()> {
        self.flush_buffer().await
    }

    /// Everything before the barrier is acknowledged; exactly-once keeps
    /// its transaction open for the checkpoint.
    async fn prepare_commit(&mut self, checkpoint: CheckpointId) -> Result<StateSnapshot> {
        self.flush_buffer().await?;
        self.flush_deliveries().await?;
        match &mut self.exactly_once {
            None => Ok(StateSnapshot::default()),
            Some(transactions) => transactions.prepare(checkpoint, self.producer.take()).await,
        }
    }

    async fn commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
        match &mut self.exactly_once {
            None => Ok(()),
            Some(transactions) => transactions.commit(checkpoint).await,
        }
    }

    /// Exactly-once: settles the checkpoint's prepared transactions and
    /// writes again, in a new one, the records of any never committed.
    async fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        let Some(transactions) = &mut self.exactly_once else {
            return Ok(());
        };
        let replay = transactions.restore(&state).await?;
        if replay.is_empty() {
            return Ok(());
        }
        let producer = self.producer().await?;
        for record in replay {
            self.send(&producer, record).await?;
        }
        Ok(())
    }
}
