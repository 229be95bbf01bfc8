//! A producing task's writer: the rows its stage sends to the next stage,
//! with their row watermarks, as records of the next stage's repartition
//! topic, and its watermarks, barriers and end as control records to
//! every partition (`docs/cluster-protocol.md`). [`StageOutput`] decides
//! what to send; this sends it, in order per partition (an idempotent
//! producer), and makes everything before a barrier durable before the
//! task reports its snapshot.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use weir_engine::source::SinkFactory;
use weir_engine::{CheckpointId, EngineError, Result, Sink, StateSnapshot, SubtaskInfo};

use super::stage_controls::StageControls;
use super::stage_output::StageOutput;
use super::stage_records::{task_name, StageMessage, StageRecord, Tag};

/// What every producing task of one stage writes to.
#[derive(Clone)]
pub struct StageWriter {
    /// Shared by every producing task of the process ([`stage_producer`]):
    /// one client, not one per task, whatever the task count.
    pub producer: FutureProducer,
    /// The next stage's repartition topic.
    pub topic: String,
    /// Its partition count (the next stage's tasks).
    pub partitions: usize,
    /// The shuffle key's columns (empty: spread round-robin).
    pub keys: Vec<usize>,
    pub generation: u64,
    /// This stage's number; a task is `stage-partition`.
    pub stage: usize,
    /// The generation's first epoch.
    pub first_epoch: u64,
}

/// The producer a process's producing tasks share: idempotent (in order
/// per partition, no duplicates on retry), batching for 5 ms. A task waits
/// for its own records' deliveries, not for the others'.
pub fn stage_producer(client: &ClientConfig) -> Result<FutureProducer> {
    client
        .clone()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.max.bytes", "4000000")
        .create()
        .map_err(|e| EngineError::connector("stage output", e))
}

/// Rows per record at most: a record stays well under a broker's limit.
const RECORD_BYTES: usize = 512 * 1024;

impl StageWriter {
    /// One sink per task; the tasks' control messages go out together.
    pub fn factory(self) -> SinkFactory {
        let controls = Arc::new(StageControls::new(
            self.producer.clone(),
            self.topic.clone(),
            self.partitions,
            self.generation,
        ));
        let writer = Arc::new(self);
        Arc::new(move |info: SubtaskInfo| {
            controls.register();
            let tag = Tag {
                generation: writer.generation,
                epoch: writer.first_epoch,
                from: task_name(writer.stage, info.index),
                seq: 0,
            };
            Ok(Box::new(StageSink {
                writer: writer.clone(),
                output: StageOutput::new(writer.keys.clone(), writer.partitions, tag),
                producer: writer.producer.clone(),
                controls: controls.clone(),
                in_flight: Vec::new(),
                watermark: None,
                sent_watermark: None,
            }) as Box<dyn Sink>)
        })
    }
}

struct StageSink {
    writer: Arc<StageWriter>,
    output: StageOutput,
    producer: FutureProducer,
    controls: Arc<StageControls>,
    in_flight: Vec<DeliveryFuture>,
    watermark: Option<i64>,
    sent_watermark: Option<i64>,
}

impl StageSink {
    fn error(&self, e: impl std::fmt::Display) -> EngineError {
        EngineError::connector("stage output", format!("{}: {e}", self.writer.topic))
    }

    /// Queues records; waits for deliveries when the producer's queue is full.
    async fn send(&mut self, records: Vec<(usize, StageRecord)>) -> Result<()> {
        for (partition, record) in records {
            let (payload, headers) = record.encode()?;
            let partition = i32::try_from(partition).map_err(|e| self.error(e))?;
            loop {
                let queued = FutureRecord::<(), Vec<u8>>::to(&self.writer.topic)
                    .partition(partition)
                    .payload(&payload)
                    .headers(headers.clone());
                match self.producer.send_result(queued) {
                    Ok(delivery) => {
                        self.in_flight.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        self.delivered().await?;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(self.error(e)),
                }
            }
        }
        Ok(())
    }

    /// Waits until everything queued is in the topic.
    async fn delivered(&mut self) -> Result<()> {
        for delivery in std::mem::take(&mut self.in_flight) {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.error(e)),
                Err(_) => return Err(self.error("the producer went away")),
            }
        }
        Ok(())
    }

    /// Sends the watermark if it moved since it was last sent.
    async fn send_watermark(&mut self) -> Result<()> {
        if let Some(at) = self.watermark {
            if self.sent_watermark != Some(at) {
                self.sent_watermark = Some(at);
                let watermark = self.output.record(StageMessage::Watermark(at));
                self.controls.send(watermark, false).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for StageSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let rows_per_record = rows_per_record(&batch);
        let mut start = 0;
        while start < batch.num_rows() {
            let length = rows_per_record.min(batch.num_rows() - start);
            let records = self.output.rows(&batch.slice(start, length))?;
            self.send(records).await?;
            start += length;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64) {
        self.watermark = Some(watermark);
    }

    fn flush_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(100))
    }

    /// Watermarks go out at most every flush interval: control traffic
    /// does not grow with the data.
    async fn flush(&mut self) -> Result<()> {
        self.send_watermark().await
    }

    async fn prepare_commit(&mut self, checkpoint: CheckpointId) -> Result<StateSnapshot> {
        self.send_watermark().await?;
        if checkpoint != weir_engine::source::FINAL_CHECKPOINT {
            // After this task's rows of the epoch, before any of the next.
            let barrier = self.output.barrier_for(checkpoint);
            self.controls.send(barrier, true).await?;
        }
        self.delivered().await?;
        Ok(StateSnapshot::default())
    }

    async fn finish(&mut self) -> Result<()> {
        self.send_watermark().await?;
        let end = self.output.record(StageMessage::End);
        self.controls.send(end, true).await?;
        self.delivered().await
    }

    fn keeps_row_watermarks(&self) -> bool {
        true
    }
}

/// How many of `batch`'s rows fit one record.
fn rows_per_record(batch: &RecordBatch) -> usize {
    let bytes = batch.get_array_memory_size().max(1);
    let rows = batch.num_rows().max(1);
    (rows * RECORD_BYTES / bytes).clamp(1, rows)
}
