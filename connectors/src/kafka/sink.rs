//! The Kafka sink: rows as records, keyed by `'key.fields'`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use weir_engine::{CheckpointId, EngineError, Result, Sink, StateSnapshot};

use super::{set_default, KafkaSettings};
use crate::format::{encode_lines, Format};
use crate::registry::TableSpec;

/// Records in flight before the sink waits for deliveries.
const MAX_IN_FLIGHT: usize = 50_000;

pub struct KafkaSink {
    settings: Arc<KafkaSettings>,
    topic: String,
    producer: FutureProducer,
    /// Value columns (not metadata, and without key fields for EXCEPT_KEY).
    value_columns: Vec<usize>,
    key_columns: Vec<usize>,
    /// A `timestamp` metadata column sets the record timestamp.
    timestamp_column: Option<usize>,
    in_flight: VecDeque<DeliveryFuture>,
}

fn kafka_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::connector("kafka sink", e)
}

/// Each row of `batch` encoded on its own.
fn encode_rows(format: &Format, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut buffer = Vec::new();
    encode_lines(format, batch, &mut buffer, false)?;
    let mut rows: Vec<Vec<u8>> = buffer.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    rows.truncate(batch.num_rows());
    if rows.len() != batch.num_rows() {
        return Err(kafka_error("a row encoded to more than one line"));
    }
    Ok(rows)
}

impl KafkaSink {
    pub(crate) fn new(settings: Arc<KafkaSettings>, spec: &TableSpec) -> Result<Self> {
        let mut config = settings.client_config();
        set_default(&mut config, "message.timeout.ms", "60000");
        let producer: FutureProducer = config.create().map_err(kafka_error)?;
        let key_columns = settings
            .key_fields
            .iter()
            .filter_map(|k| spec.schema.index_of(k).ok())
            .collect();
        let value_columns = (0..spec.schema.fields().len())
            .filter(|i| !spec.is_metadata(*i))
            .filter(|i| {
                settings.value_includes_key
                    || !settings.key_fields.contains(spec.schema.field(*i).name())
            })
            .collect();
        let timestamp_column = spec
            .metadata
            .iter()
            .find(|m| m.key == "timestamp")
            .map(|m| m.index);
        Ok(KafkaSink {
            topic: settings.topics[0].clone(),
            settings,
            producer,
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

    async fn flush(&mut self) -> Result<()> {
        self.drain(0).await?;
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(60)))
            .await
            .map_err(kafka_error)?
            .map_err(kafka_error)
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        let values = encode_rows(
            &self.settings.value_format,
            &batch.project(&self.value_columns)?,
        )?;
        let keys = match &self.settings.key_format {
            Some(format) => Some(encode_rows(format, &batch.project(&self.key_columns)?)?),
            None => None,
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
        for row in 0..rows {
            let mut record: FutureRecord<'_, Vec<u8>, Vec<u8>> =
                FutureRecord::to(&self.topic).payload(&values[row]);
            if let Some(keys) = &keys {
                record = record.key(&keys[row]);
            }
            if let Some(ts) = timestamps.as_ref().filter(|t| t.is_valid(row)) {
                record = record.timestamp(ts.value(row));
            }
            match self.producer.send_result(record) {
                Ok(delivery) => self.in_flight.push_back(delivery),
                Err((e, _)) => {
                    return Err(kafka_error(format!("cannot send to '{}': {e}", self.topic)))
                }
            }
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                self.drain(MAX_IN_FLIGHT / 2).await?;
            }
        }
        Ok(())
    }

    /// At-least-once: everything before the barrier is acknowledged.
    async fn prepare_commit(&mut self, _checkpoint: CheckpointId) -> Result<StateSnapshot> {
        self.flush().await?;
        Ok(StateSnapshot::default())
    }
}
