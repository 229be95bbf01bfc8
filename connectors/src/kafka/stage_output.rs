//! What a producing task writes to the repartition topic of the stage after
//! it (`docs/cluster-protocol.md`, "Records between stages"): its rows
//! split by the shuffle key's hash into the topic's partitions (the same
//! split as the local runtime's key shuffle), and its control messages,
//! all tagged with its generation, epoch and task (the control messages go
//! to every partition together with the process's other tasks', through
//! [`super::stage_controls`]).

use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use rdkafka::Offset;
use weir_engine::runtime::hash_split;
use weir_engine::{EngineError, Result};

use super::source_client::offsets_at;
use super::stage_records::{StageMessage, StageRecord, Tag};

/// The repartition topic a stage writes.
pub fn repartition_topic(pipeline: &str, stage: usize) -> String {
    format!("weir.{pipeline}.{stage}")
}

/// Creates the repartition topic `topic` with `partitions` partitions if
/// it does not exist (tested on Tansu in `repl/tests/kafka_broker.rs`: the
/// mock cluster does not answer CreateTopics) (`replication` copies, keeping records
/// `retention_ms`). A stage's task count never changes while its job lives,
/// so an existing topic with another partition count is an error.
pub async fn ensure_repartition_topic(
    client: &ClientConfig,
    topic: &str,
    partitions: usize,
    replication: i32,
    retention_ms: i64,
) -> Result<()> {
    let error = |e: &dyn std::fmt::Display| {
        EngineError::connector("kafka", format!("repartition topic {topic}: {e}"))
    };
    let admin: AdminClient<DefaultClientContext> = client.create().map_err(|e| error(&e))?;
    let retention = retention_ms.to_string();
    let partitions_i32 = i32::try_from(partitions).map_err(|e| error(&e))?;
    let new = NewTopic::new(topic, partitions_i32, TopicReplication::Fixed(replication))
        .set("retention.ms", &retention);
    let created = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .map_err(|e| error(&e))?;
    for result in created {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(error(&code)),
        }
    }
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| error(&e))?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if found != partitions {
        return Err(error(&format!(
            "has {found} partitions, the stage has {partitions} tasks (a job's task count cannot change: use another pipeline.name)"
        )));
    }
    Ok(())
}

/// Whether any partition of `topic` (with `partitions` partitions) holds
/// a record. A job starting without any generation in its checkpoint
/// store must find its repartition topics empty: records an earlier run
/// left there carry the same generation numbers and would count as the
/// new run's (`docs/cluster-protocol.md`, "Open points").
pub async fn holds_records(client: &ClientConfig, topic: &str, partitions: usize) -> Result<bool> {
    let error = |e: &dyn std::fmt::Display| {
        EngineError::connector("kafka", format!("repartition topic {topic}: {e}"))
    };
    let mut config = client.clone();
    config.set("group.id", format!("{topic}.check"));
    let consumer: BaseConsumer = config.create().map_err(|e| error(&e))?;
    let all = (0..i32::try_from(partitions).map_err(|e| error(&e))?)
        .map(|partition| (topic.to_string(), partition))
        .collect::<Vec<_>>();
    // Both ends of every partition in one request each, not two per
    // partition: a stage may have a thousand.
    let (low, high) = tokio::task::spawn_blocking(move || {
        Ok::<_, EngineError>((
            offsets_at(&consumer, &all, Offset::Beginning)?,
            offsets_at(&consumer, &all, Offset::End)?,
        ))
    })
    .await
    .map_err(|e| error(&format!("offsets task: {e}")))?
    .map_err(|e| error(&e))?;
    if low.len() != partitions || high.len() != partitions {
        return Err(error(&"the broker did not give every partition's offsets"));
    }
    Ok(high
        .iter()
        .any(|(key, high)| low.get(key).is_some_and(|low| high > low)))
}

/// One producing task's output to the next stage.
pub struct StageOutput {
    /// The shuffle key's columns (empty: round-robin over partitions).
    keys: Vec<usize>,
    partitions: usize,
    tag: Tag,
    next: usize,
    hashes: Vec<u64>,
    /// Rows records sent to each partition: the next one's number.
    sent: Vec<u64>,
}

impl StageOutput {
    pub fn new(keys: Vec<usize>, partitions: usize, tag: Tag) -> Self {
        let partitions = partitions.max(1);
        StageOutput {
            keys,
            partitions,
            tag,
            next: 0,
            hashes: Vec::new(),
            sent: vec![0; partitions],
        }
    }

    /// The barrier of checkpoint `epoch` (the rows sent since the last
    /// barrier belong to it), for [`super::stage_controls`]; later rows
    /// belong to the next epoch.
    pub fn barrier_for(&mut self, epoch: u64) -> StageRecord {
        self.tag.epoch = epoch;
        let barrier = self.record(StageMessage::Barrier);
        self.tag.epoch += 1;
        barrier
    }

    /// `batch`'s rows as records, each with the partition it goes to.
    pub fn rows(&mut self, batch: &RecordBatch) -> Result<Vec<(usize, StageRecord)>> {
        let parts = if self.keys.is_empty() {
            let partition = self.next % self.partitions;
            self.next = self.next.wrapping_add(1);
            vec![(partition, batch.clone())]
        } else {
            hash_split(batch, &self.keys, self.partitions, &mut self.hashes)?
        };
        let mut records = Vec::with_capacity(parts.len());
        for (partition, part) in parts {
            let mut record = self.record(StageMessage::Rows(part));
            let sent = self.sent.get_mut(partition).ok_or_else(|| {
                EngineError::connector("stage output", format!("no partition {partition}"))
            })?;
            record.tag.seq = *sent;
            *sent += 1;
            records.push((partition, record));
        }
        Ok(records)
    }

    /// A watermark or the end, tagged (it goes to every partition with the
    /// process's other tasks' control messages).
    pub fn record(&self, message: StageMessage) -> StageRecord {
        StageRecord {
            tag: self.tag.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(keys: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Utf8, false),
        ]));
        let values: Vec<String> = keys.iter().map(|k| format!("v{k}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(keys.to_vec())),
                Arc::new(StringArray::from(values)),
            ],
        )
        .unwrap()
    }

    fn tag() -> Tag {
        Tag {
            generation: 2,
            epoch: 7,
            from: "0-1".into(),
            seq: 0,
        }
    }

    /// Every row lands in exactly one partition, a key always in the same
    /// one (whatever batch it comes in), and the records carry the tag,
    /// numbered 0, 1, 2... per partition.
    #[test]
    fn rows_split_by_key() {
        let mut output = StageOutput::new(vec![0], 8, tag());
        let mut partition_of: BTreeMap<i64, usize> = BTreeMap::new();
        let mut numbers: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        let mut rows = 0;
        for keys in [vec![1, 2, 3, 4, 5, 1, 1], vec![5, 4, 9, 1000, -3]] {
            for (partition, record) in output.rows(&batch(&keys)).unwrap() {
                numbers.entry(partition).or_default().push(record.tag.seq);
                assert_eq!(
                    Tag {
                        seq: 0,
                        ..record.tag
                    },
                    tag()
                );
                let StageMessage::Rows(part) = record.message else {
                    panic!("rows expected");
                };
                rows += part.num_rows();
                let k = part
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                for key in k.values() {
                    let seen = *partition_of.entry(*key).or_insert(partition);
                    assert_eq!(seen, partition, "key {key} moved");
                }
            }
        }
        assert_eq!(rows, 12);
        for (partition, numbers) in numbers {
            let expected: Vec<u64> = (0..numbers.len() as u64).collect();
            assert_eq!(numbers, expected, "partition {partition}");
        }
        assert!(
            partition_of
                .values()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 1
        );
    }

    /// Control messages carry the task's tag; a barrier moves the epoch.
    #[test]
    fn a_barrier_moves_the_epoch() {
        let mut output = StageOutput::new(Vec::new(), 3, tag());
        let watermark = output.record(StageMessage::Watermark(42));
        assert_eq!(watermark.tag, tag());
        let barrier = output.barrier_for(7);
        assert_eq!(
            (barrier.tag.epoch, barrier.message),
            (7, StageMessage::Barrier)
        );
        let after = output.rows(&batch(&[1])).unwrap();
        assert_eq!(after[0].1.tag.epoch, 8, "rows after barrier 7 are epoch 8");
        // Without keys, batches go round-robin.
        let next = output.rows(&batch(&[1])).unwrap();
        assert_ne!(after[0].0, next[0].0);
        assert_eq!(repartition_topic("q5", 2), "weir.q5.2");
        assert_eq!(next[0].1.message, StageMessage::Rows(batch(&[1])));
    }
}
