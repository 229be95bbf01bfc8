//! Records between the stages of a job that several processes run
//! together (`docs/cluster-protocol.md`): rows as one Arrow IPC stream per
//! Kafka record, and control records (watermark, barrier, end), each
//! tagged with its producer's generation, epoch and task in headers. The
//! control messages of a process's producing tasks travel together, as
//! one `controls` record per partition holding each task's entry in order
//! ([`StageMessage::Controls`], [`super::stage_controls`]).

use std::io::Cursor;

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};

use weir_engine::{EngineError, Result};

const KIND: &str = "weir.kind";
const GENERATION: &str = "weir.gen";
const EPOCH: &str = "weir.epoch";
const FROM: &str = "weir.from";
const SEQ: &str = "weir.seq";

/// A task's name, `stage-task`: what [`Tag::from`] holds, and what a
/// cluster process names the task's snapshots and claims.
pub fn task_name(stage: usize, task: usize) -> String {
    format!("{stage}-{task}")
}

/// Who wrote a record, and when in the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub generation: u64,
    /// Rows after barrier `n - 1` belong to epoch `n`; a barrier's epoch
    /// is the checkpoint it starts.
    pub epoch: u64,
    /// The producing task, `stage-partition`.
    pub from: String,
    /// Rows records only: how many rows records the producer sent to the
    /// same partition before this one in the generation. The consuming
    /// task takes each number once and in order, so a record the broker
    /// or a client hands over twice is not counted twice, and a lost one
    /// stops the task instead of going unnoticed. 0 on control messages.
    pub seq: u64,
}

/// What a record between stages carries.
#[derive(Debug, Clone, PartialEq)]
pub enum StageMessage {
    Rows(RecordBatch),
    /// The producer's event-time watermark (ms).
    Watermark(i64),
    /// Checkpoint barrier of the tag's epoch.
    Barrier,
    /// The producer has no more rows.
    End,
    /// Control messages (watermarks, barriers, ends) of several producers,
    /// each with its own tag, in the order they were sent.
    Controls(Vec<StageRecord>),
}

/// One entry of a `controls` record, as its JSON payload holds it.
#[derive(serde::Serialize, serde::Deserialize)]
struct ControlEntry {
    from: String,
    epoch: u64,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<i64>,
}

/// One record between stages.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRecord {
    pub tag: Tag,
    pub message: StageMessage,
}

impl StageRecord {
    /// The record's payload and headers.
    pub fn encode(&self) -> Result<(Vec<u8>, OwnedHeaders)> {
        let (kind, payload) = match &self.message {
            StageMessage::Rows(batch) => {
                let mut writer =
                    StreamWriter::try_new(Vec::new(), batch.schema_ref()).map_err(|e| error(&e))?;
                writer.write(batch).map_err(|e| error(&e))?;
                ("rows", writer.into_inner().map_err(|e| error(&e))?)
            }
            StageMessage::Watermark(at) => ("watermark", at.to_be_bytes().to_vec()),
            StageMessage::Barrier => ("barrier", Vec::new()),
            StageMessage::End => ("end", Vec::new()),
            StageMessage::Controls(entries) => {
                let entries = entries
                    .iter()
                    .map(|entry| {
                        let (kind, at) = match &entry.message {
                            StageMessage::Watermark(at) => ("watermark", Some(*at)),
                            StageMessage::Barrier => ("barrier", None),
                            StageMessage::End => ("end", None),
                            StageMessage::Rows(_) | StageMessage::Controls(_) => {
                                return Err(error(&"a controls record holds control messages only"))
                            }
                        };
                        Ok(ControlEntry {
                            from: entry.tag.from.clone(),
                            epoch: entry.tag.epoch,
                            kind: kind.to_string(),
                            at,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let json = serde_json::to_vec(&entries).map_err(|e| error(&e))?;
                ("controls", json)
            }
        };
        let (generation, epoch) = (self.tag.generation.to_string(), self.tag.epoch.to_string());
        let mut headers = OwnedHeaders::new()
            .insert(header(KIND, kind))
            .insert(header(GENERATION, &generation))
            .insert(header(EPOCH, &epoch))
            .insert(header(FROM, &self.tag.from));
        if let StageMessage::Rows(_) = self.message {
            headers = headers.insert(header(SEQ, &self.tag.seq.to_string()));
        }
        Ok((payload, headers))
    }

    /// A record read back; a record not written by [`StageRecord::encode`]
    /// is an error naming what is wrong.
    pub fn decode(
        payload: Option<&[u8]>,
        headers: Option<&BorrowedHeaders>,
    ) -> Result<StageRecord> {
        let headers = headers.ok_or_else(|| error(&"a stage record without headers"))?;
        let text = |key: &str| -> Result<&str> {
            let value = headers
                .iter()
                .find(|h| h.key == key)
                .and_then(|h| h.value)
                .ok_or_else(|| error(&format!("a stage record without header {key}")))?;
            std::str::from_utf8(value).map_err(|e| error(&format!("header {key}: {e}")))
        };
        let number = |key: &str| -> Result<u64> {
            text(key)?
                .parse()
                .map_err(|e| error(&format!("header {key}: {e}")))
        };
        let kind = text(KIND)?;
        let tag = Tag {
            generation: number(GENERATION)?,
            epoch: number(EPOCH)?,
            from: text(FROM)?.to_string(),
            seq: if kind == "rows" { number(SEQ)? } else { 0 },
        };
        let payload = payload.unwrap_or_default();
        let message = match kind {
            "rows" => StageMessage::Rows(one_batch(payload)?),
            "watermark" => {
                let bytes: [u8; 8] = payload
                    .try_into()
                    .map_err(|_| error(&"a watermark record is not 8 bytes"))?;
                StageMessage::Watermark(i64::from_be_bytes(bytes))
            }
            "barrier" => StageMessage::Barrier,
            "end" => StageMessage::End,
            "controls" => {
                let entries: Vec<ControlEntry> =
                    serde_json::from_slice(payload).map_err(|e| error(&e))?;
                let entries = entries
                    .into_iter()
                    .map(|entry| {
                        let message = match (entry.kind.as_str(), entry.at) {
                            ("watermark", Some(at)) => StageMessage::Watermark(at),
                            ("barrier", _) => StageMessage::Barrier,
                            ("end", _) => StageMessage::End,
                            (other, _) => {
                                return Err(error(&format!("unknown control entry '{other}'")))
                            }
                        };
                        let tag = Tag {
                            generation: tag.generation,
                            epoch: entry.epoch,
                            from: entry.from,
                            seq: 0,
                        };
                        Ok(StageRecord { tag, message })
                    })
                    .collect::<Result<Vec<_>>>()?;
                StageMessage::Controls(entries)
            }
            other => return Err(error(&format!("unknown stage record kind '{other}'"))),
        };
        Ok(StageRecord { tag, message })
    }

    /// The epochs of the barriers it carries (one for a barrier record,
    /// any number for a `controls` record).
    pub fn barrier_epochs(&self) -> Vec<u64> {
        match &self.message {
            StageMessage::Barrier => vec![self.tag.epoch],
            StageMessage::Controls(entries) => entries
                .iter()
                .flat_map(StageRecord::barrier_epochs)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether a task of `generation` takes this record: only records of
    /// its own generation (older ones are in the restored state or will be
    /// produced again; see the protocol's "Generations and recovery").
    pub fn is_for(&self, generation: u64) -> bool {
        self.tag.generation == generation
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

fn one_batch(payload: &[u8]) -> Result<RecordBatch> {
    let mut reader = StreamReader::try_new(Cursor::new(payload), None).map_err(|e| error(&e))?;
    let batch = reader
        .next()
        .ok_or_else(|| error(&"a rows record without a batch"))?
        .map_err(|e| error(&e))?;
    if reader.next().is_some() {
        return Err(error(&"a rows record with more than one batch"));
    }
    Ok(batch)
}

fn error(e: &dyn std::fmt::Display) -> EngineError {
    EngineError::connector("stage record", e)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{ClientConfig, Message};

    use super::*;

    fn rows() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("auction", DataType::Int64, true),
            Field::new("channel", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])),
            ],
        )
        .unwrap()
    }

    fn tagged(generation: u64, epoch: u64, message: StageMessage) -> StageRecord {
        StageRecord {
            tag: Tag {
                generation,
                epoch,
                from: "1-7".into(),
                seq: 0,
            },
            message,
        }
    }

    /// Rows with their sequence number.
    fn numbered(generation: u64, epoch: u64, seq: u64) -> StageRecord {
        let mut record = tagged(generation, epoch, StageMessage::Rows(rows()));
        record.tag.seq = seq;
        record
    }

    /// Rows and control records cross a real Kafka protocol server and come
    /// back equal, in order; a task keeps only its generation's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_cross_a_broker_unchanged() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("weir.job.1", 1, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let sent = vec![
            numbered(2, 5, 41),
            tagged(2, 5, StageMessage::Watermark(1_700_000_000_123)),
            numbered(1, 6, 0),
            tagged(2, 5, StageMessage::Barrier),
            tagged(2, 6, StageMessage::Watermark(-4)),
            tagged(2, 6, StageMessage::End),
            // A process's tasks' control messages in one record.
            tagged(
                2,
                0,
                StageMessage::Controls(vec![
                    tagged(2, 7, StageMessage::Watermark(9)),
                    tagged(2, 7, StageMessage::Barrier),
                    tagged(2, 8, StageMessage::End),
                ]),
            ),
        ];
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        for record in &sent {
            let (payload, headers) = record.encode().unwrap();
            producer
                .send(
                    FutureRecord::<(), _>::to("weir.job.1")
                        .payload(&payload)
                        .headers(headers),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
        }
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "weir.job.stage-1")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&["weir.job.1"]).unwrap();
        let mut received = Vec::new();
        while received.len() < sent.len() {
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                let message = message.unwrap();
                received.push(StageRecord::decode(message.payload(), message.headers()).unwrap());
            }
        }
        assert_eq!(received, sent);
        let kept = received.iter().filter(|r| r.is_for(2)).count();
        assert_eq!(kept, 6, "the generation-1 record is skipped");
        assert_eq!(received[6].barrier_epochs(), [7]);
    }

    /// A record that is not a stage record is an error, not a panic.
    #[test]
    fn foreign_records_are_errors() {
        let (payload, headers) = tagged(1, 1, StageMessage::Watermark(5)).encode().unwrap();
        let borrowed = headers.as_borrowed();
        let short = StageRecord::decode(Some(&payload[..3]), Some(borrowed)).unwrap_err();
        assert!(short.to_string().contains("8 bytes"), "{short}");
        let none = StageRecord::decode(Some(&payload), None).unwrap_err();
        assert!(none.to_string().contains("without headers"), "{none}");
        let (_, rows_headers) = tagged(1, 1, StageMessage::Rows(rows())).encode().unwrap();
        let garbage = StageRecord::decode(Some(b"not arrow"), Some(rows_headers.as_borrowed()));
        assert!(garbage.is_err());
        let other = OwnedHeaders::new().insert(header(KIND, "rows"));
        let partial = StageRecord::decode(Some(&payload), Some(other.as_borrowed())).unwrap_err();
        assert!(partial.to_string().contains("weir.gen"), "{partial}");
    }
}
