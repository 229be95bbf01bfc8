//! The control messages of a process's producing tasks, sent together
//! (`docs/cluster-protocol.md`, "Records between stages").
//!
//! Every producing task sends its watermarks, barriers and end to every
//! partition of the next stage's topic. One record per task and partition
//! makes `p × q` records per checkpoint for `p` producing tasks and `q`
//! partitions: 262,144 at 1024 tasks, which is what kept 1024 tasks from
//! ever completing a checkpoint on one machine. Here the tasks of one
//! stage in a process hand their control messages to one [`StageControls`],
//! which writes whatever has gathered as one `controls` record per
//! partition ([`StageMessage::Controls`]): `q` records per flush, however
//! many tasks the process runs.
//!
//! Order: a task hands over a barrier or its end only after queueing its
//! rows, and waits until the `controls` record holding it is in the topic
//! before it sends anything more; rows and controls go through the
//! process's one idempotent producer, which keeps each partition's records
//! in the order they were queued. So in every partition a task's rows stay
//! on their side of its barrier, as with a record per task. A watermark is
//! not waited for: arriving later than rows queued after it only delays it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use weir_engine::{EngineError, Result};

use super::stage_records::{StageMessage, StageRecord, Tag};

/// How long entries gather when a task waits for one of them: other tasks'
/// barriers of the same checkpoint usually come within it.
const WAITED_LINGER: Duration = Duration::from_millis(10);

/// How long watermarks alone gather: the tasks' own flush interval.
const WATERMARK_LINGER: Duration = Duration::from_millis(100);

/// Entries queued to the writer at most (a task waits to hand over more).
const QUEUED_ENTRIES: usize = 4096;

/// One control message and, when its task waits, where to say it is in
/// the topic.
struct Entry {
    record: StageRecord,
    done: Option<oneshot::Sender<std::result::Result<(), String>>>,
}

/// The control messages of one stage's producing tasks in this process,
/// for one generation.
pub struct StageControls {
    producer: FutureProducer,
    topic: String,
    partitions: usize,
    generation: u64,
    /// The producing tasks that hand messages over.
    tasks: Arc<AtomicUsize>,
    /// Made by the first message (in the runtime).
    entries: OnceLock<mpsc::Sender<Entry>>,
}

impl StageControls {
    pub fn new(
        producer: FutureProducer,
        topic: String,
        partitions: usize,
        generation: u64,
    ) -> Self {
        StageControls {
            producer,
            topic,
            partitions: partitions.max(1),
            generation,
            tasks: Arc::new(AtomicUsize::new(0)),
            entries: OnceLock::new(),
        }
    }

    /// Counts one more producing task: once every task's entry of a flush
    /// is in, it goes without waiting out the linger.
    pub fn register(&self) {
        self.tasks.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands `record` (a watermark, barrier or end) over; with `wait`,
    /// returns once it is in every partition.
    pub async fn send(&self, record: StageRecord, wait: bool) -> Result<()> {
        let (done, delivered) = match wait {
            true => {
                let (done, delivered) = oneshot::channel();
                (Some(done), Some(delivered))
            }
            false => (None, None),
        };
        self.writer()
            .send(Entry { record, done })
            .await
            .map_err(|_| self.error("the control writer stopped"))?;
        if let Some(delivered) = delivered {
            delivered
                .await
                .map_err(|_| self.error("the control writer stopped"))?
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn writer(&self) -> &mpsc::Sender<Entry> {
        self.entries.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUED_ENTRIES);
            let writer = Writer {
                producer: self.producer.clone(),
                topic: self.topic.clone(),
                partitions: self.partitions,
                generation: self.generation,
                tasks: self.tasks.clone(),
            };
            // Ends when every sender is gone: the generation stopped.
            tokio::spawn(writer.run(receiver));
            sender
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> EngineError {
        EngineError::connector("stage output", format!("{}: {e}", self.topic))
    }
}

/// Writes the gathered entries.
struct Writer {
    producer: FutureProducer,
    topic: String,
    partitions: usize,
    generation: u64,
    tasks: Arc<AtomicUsize>,
}

impl Writer {
    async fn run(self, mut receiver: mpsc::Receiver<Entry>) {
        while let Some(first) = receiver.recv().await {
            let started = Instant::now();
            let mut deadline = started + WATERMARK_LINGER;
            let mut records = Vec::new();
            let mut dones = Vec::new();
            // The tasks whose waited-for entry (a barrier, an end) is in.
            let mut waiting = HashSet::new();
            let mut next = Some(first);
            while let Some(Entry { record, done }) = next.take() {
                if let Some(done) = done {
                    waiting.insert(record.tag.from.clone());
                    dones.push(done);
                    deadline = deadline.min(started + WAITED_LINGER);
                }
                records.push(record);
                let all_wait = waiting.len() >= self.tasks.load(Ordering::Relaxed);
                if all_wait || records.len() >= QUEUED_ENTRIES {
                    break;
                }
                if let Ok(Some(entry)) = tokio::time::timeout_at(deadline, receiver.recv()).await {
                    next = Some(entry);
                }
            }
            let written = self.write(records).await;
            for done in dones {
                let _ = done.send(written.clone());
            }
            if let Err(e) = written {
                tracing::warn!(topic = %self.topic, "control records: {e}");
            }
        }
    }

    /// One `controls` record to every partition; done once all are in.
    async fn write(&self, entries: Vec<StageRecord>) -> std::result::Result<(), String> {
        let record = StageRecord {
            tag: Tag {
                generation: self.generation,
                epoch: 0,
                from: "controls".into(),
                seq: 0,
            },
            message: StageMessage::Controls(entries),
        };
        let (payload, headers) = record.encode().map_err(|e| e.to_string())?;
        let mut deliveries = Vec::with_capacity(self.partitions);
        for partition in 0..self.partitions {
            let partition = i32::try_from(partition).map_err(|e| e.to_string())?;
            loop {
                let queued = FutureRecord::<(), Vec<u8>>::to(&self.topic)
                    .partition(partition)
                    .payload(&payload)
                    .headers(headers.clone());
                match self.producer.send_result(queued) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(e.to_string()),
                }
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.to_string()),
                Err(_) => return Err("the producer went away".into()),
            }
        }
        Ok(())
    }
}
