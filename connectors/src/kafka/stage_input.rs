//! What a consuming task makes of the records its upstream stage's
//! producers write (`docs/cluster-protocol.md`, "Records between
//! stages"): the minimum watermark over the producers, checkpoint
//! barriers aligned over them (rows of a producer past its barrier are
//! held until every producer's barrier has come), and the end once every
//! producer has ended. Records of another generation are skipped. The
//! same rules the local runtime applies over its input channels.
//!
//! Each message counts once. A producer numbers its rows records to each
//! partition ([`super::stage_records::Tag::seq`]); this takes each number
//! once, in order, a barrier once per epoch and the end once. A broker or
//! client that hands a record over twice would otherwise count its rows
//! twice or start an alignment that never ends; a number skipped means
//! rows were lost, and the task fails rather than commit a wrong answer.

use std::collections::{BTreeMap, VecDeque};

use datafusion::arrow::record_batch::RecordBatch;
use weir_engine::{EngineError, Result};

use super::stage_records::{StageMessage, StageRecord};

/// What the task does next, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum InputEvent {
    Rows(RecordBatch),
    /// The input's watermark moved to this.
    Watermark(i64),
    /// Every producer's barrier of this epoch has come: snapshot now.
    Aligned(u64),
    /// Every producer has ended.
    End,
}

#[derive(Debug, Default)]
struct Producer {
    watermark: Option<i64>,
    ended: bool,
    /// The epoch whose barrier came from this producer and is not aligned
    /// yet; everything it sent after that barrier (rows, watermarks, even
    /// its next barrier) waits in `held`.
    barrier: Option<u64>,
    held: VecDeque<StageRecord>,
    /// What came from it so far (held or not), to know a message that
    /// comes again: the number its next rows record carries, its last
    /// barrier's epoch, and whether its end came.
    next_seq: u64,
    last_barrier: Option<u64>,
    end_came: bool,
}

/// The producers of one consuming task's input, in one generation.
pub struct StageInput {
    generation: u64,
    producers: BTreeMap<String, Producer>,
    watermark: Option<i64>,
    ended: bool,
}

impl StageInput {
    /// The input from `producers` (the upstream stage's tasks).
    pub fn new(generation: u64, producers: impl IntoIterator<Item = String>) -> Self {
        StageInput {
            generation,
            producers: producers
                .into_iter()
                .map(|p| (p, Producer::default()))
                .collect(),
            watermark: None,
            ended: false,
        }
    }

    /// Rows held back by a barrier alignment (to pause reading past a bound).
    pub fn held_rows(&self) -> usize {
        self.producers
            .values()
            .flat_map(|p| &p.held)
            .map(|r| match &r.message {
                StageMessage::Rows(batch) => batch.num_rows(),
                _ => 0,
            })
            .sum()
    }

    /// Takes one record; returns what the task does with it. A `controls`
    /// record is taken as its entries, one after another, each as if its
    /// producer had sent it alone.
    pub fn on_record(&mut self, record: StageRecord) -> Result<Vec<InputEvent>> {
        if !record.is_for(self.generation) {
            return Ok(Vec::new());
        }
        if let StageMessage::Controls(entries) = record.message {
            let mut events = Vec::new();
            for entry in entries {
                events.extend(self.arrive(entry)?);
            }
            return Ok(events);
        }
        self.arrive(record)
    }

    /// Takes a message the first time it comes: rows by their number, a
    /// barrier by its epoch, the end once (a watermark again changes
    /// nothing).
    fn arrive(&mut self, record: StageRecord) -> Result<Vec<InputEvent>> {
        let generation = self.generation;
        let tag = &record.tag;
        let producer = self.producer(&tag.from)?;
        let again = match &record.message {
            StageMessage::Rows(_) => match tag.seq.cmp(&producer.next_seq) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => {
                    return Err(EngineError::connector(
                        "stage input",
                        format!(
                            "rows from task {} are missing: records {} to {} of generation {generation} never came",
                            tag.from,
                            producer.next_seq,
                            tag.seq - 1,
                        ),
                    ))
                }
                std::cmp::Ordering::Equal => {
                    producer.next_seq += 1;
                    false
                }
            },
            StageMessage::Barrier => {
                let again = producer.last_barrier.is_some_and(|e| tag.epoch <= e);
                if !again {
                    producer.last_barrier = Some(tag.epoch);
                }
                again
            }
            StageMessage::End => std::mem::replace(&mut producer.end_came, true),
            StageMessage::Watermark(_) | StageMessage::Controls(_) => false,
        };
        if again {
            tracing::warn!(from = %tag.from, epoch = tag.epoch, seq = tag.seq, "stage input: a message came again; skipped");
            return Ok(Vec::new());
        }
        self.take(record)
    }

    fn producer(&mut self, from: &str) -> Result<&mut Producer> {
        self.producers.get_mut(from).ok_or_else(|| {
            EngineError::connector("stage input", format!("a record from unknown task {from}"))
        })
    }

    /// Takes a record of this generation that is not a `controls` record
    /// (one held back by an alignment, again when the alignment ends).
    fn take(&mut self, record: StageRecord) -> Result<Vec<InputEvent>> {
        let from = record.tag.from;
        let producer = self.producer(&from)?;
        if producer.barrier.is_some() {
            producer.held.push_back(StageRecord {
                tag: super::stage_records::Tag { from, ..record.tag },
                message: record.message,
            });
            return Ok(Vec::new());
        }
        let mut events = Vec::new();
        match record.message {
            StageMessage::Rows(batch) => events.push(InputEvent::Rows(batch)),
            StageMessage::Watermark(at) => {
                producer.watermark = Some(producer.watermark.map_or(at, |w| w.max(at)));
                self.push_watermark(&mut events);
            }
            StageMessage::Barrier => {
                producer.barrier = Some(record.tag.epoch);
                self.try_align(&mut events)?;
            }
            StageMessage::End => {
                producer.ended = true;
                self.push_watermark(&mut events);
                self.try_align(&mut events)?;
                if !self.ended && self.producers.values().all(|p| p.ended) {
                    self.ended = true;
                    events.push(InputEvent::End);
                }
            }
            StageMessage::Controls(_) => {
                return Err(EngineError::connector(
                    "stage input",
                    "a controls record inside another",
                ))
            }
        }
        Ok(events)
    }

    /// The minimum over producers that have not ended (an ended one counts
    /// as no limit), once every live producer has sent one.
    fn push_watermark(&mut self, events: &mut Vec<InputEvent>) {
        let live: Vec<Option<i64>> = self
            .producers
            .values()
            .filter(|p| !p.ended)
            .map(|p| p.watermark)
            .collect();
        let min = match live.iter().copied().collect::<Option<Vec<i64>>>() {
            Some(marks) => marks.into_iter().min(),
            None => return,
        };
        let Some(min) = min else {
            return; // every producer ended
        };
        if self.watermark.is_none_or(|w| min > w) {
            self.watermark = Some(min);
            events.push(InputEvent::Watermark(min));
        }
    }

    /// Aligned when every producer that has not ended has sent its barrier
    /// (of one epoch): then what each held goes on, in its order (a held
    /// next barrier starts the next alignment).
    fn try_align(&mut self, events: &mut Vec<InputEvent>) -> Result<()> {
        let Some(epoch) = self.producers.values().find_map(|p| p.barrier) else {
            return Ok(());
        };
        let aligned = self
            .producers
            .values()
            .all(|p| p.ended || p.barrier == Some(epoch));
        if !aligned {
            return Ok(());
        }
        events.push(InputEvent::Aligned(epoch));
        let mut held = Vec::new();
        for producer in self.producers.values_mut() {
            producer.barrier = None;
            held.extend(producer.held.drain(..));
        }
        for record in held {
            events.extend(self.take(record)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::super::stage_records::Tag;
    use super::*;

    fn rows(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    fn from(task: &str, generation: u64, epoch: u64, message: StageMessage) -> StageRecord {
        StageRecord {
            tag: Tag {
                generation,
                epoch,
                from: task.into(),
                seq: 0,
            },
            message,
        }
    }

    /// The producer's rows record number `seq` (of generation 3).
    fn numbered(task: &str, epoch: u64, seq: u64, values: &[i64]) -> StageRecord {
        let mut record = from(task, 3, epoch, StageMessage::Rows(rows(values)));
        record.tag.seq = seq;
        record
    }

    fn input() -> StageInput {
        StageInput::new(3, ["0-0".to_string(), "0-1".to_string()])
    }

    /// The watermark is the minimum over producers, sent when it moves.
    #[test]
    fn the_watermark_is_the_slowest_producers() {
        let mut input = input();
        let w = |task, at| from(task, 3, 1, StageMessage::Watermark(at));
        assert!(input.on_record(w("0-0", 100)).unwrap().is_empty());
        assert_eq!(
            input.on_record(w("0-1", 40)).unwrap(),
            [InputEvent::Watermark(40)]
        );
        // A producer's watermark never goes back.
        assert!(input.on_record(w("0-0", 90)).unwrap().is_empty());
        assert_eq!(
            input.on_record(w("0-1", 95)).unwrap(),
            [InputEvent::Watermark(95)]
        );
        assert_eq!(
            input.on_record(w("0-1", 120)).unwrap(),
            [InputEvent::Watermark(100)]
        );
        // An ended producer no longer holds the watermark back.
        assert_eq!(
            input
                .on_record(from("0-0", 3, 1, StageMessage::End))
                .unwrap(),
            [InputEvent::Watermark(120)]
        );
        assert_eq!(
            input
                .on_record(from("0-1", 3, 1, StageMessage::End))
                .unwrap(),
            [InputEvent::End]
        );
    }

    /// Rows of a producer past its barrier wait until every producer's
    /// barrier has come; then the snapshot, then the held rows in order.
    #[test]
    fn barriers_align_over_producers() {
        let mut input = input();
        let barrier = |task| from(task, 3, 1, StageMessage::Barrier);
        assert_eq!(
            input.on_record(numbered("0-0", 1, 0, &[1])).unwrap(),
            [InputEvent::Rows(rows(&[1]))]
        );
        assert!(input.on_record(barrier("0-0")).unwrap().is_empty());
        assert!(input
            .on_record(numbered("0-0", 2, 1, &[2, 3]))
            .unwrap()
            .is_empty());
        assert!(input
            .on_record(numbered("0-0", 2, 2, &[4]))
            .unwrap()
            .is_empty());
        assert_eq!(input.held_rows(), 3);
        assert_eq!(
            input.on_record(numbered("0-1", 1, 0, &[10])).unwrap(),
            [InputEvent::Rows(rows(&[10]))],
            "the producer still before its barrier flows"
        );
        assert_eq!(
            input.on_record(barrier("0-1")).unwrap(),
            [
                InputEvent::Aligned(1),
                InputEvent::Rows(rows(&[2, 3])),
                InputEvent::Rows(rows(&[4])),
            ]
        );
        assert_eq!(input.held_rows(), 0);
    }

    /// A producer that runs a whole checkpoint ahead: its next barrier
    /// waits with its rows, and aligns in turn.
    #[test]
    fn a_producer_two_barriers_ahead() {
        let mut input = input();
        let barrier = |task, epoch| from(task, 3, epoch, StageMessage::Barrier);
        for record in [
            barrier("0-0", 1),
            numbered("0-0", 2, 0, &[1]),
            barrier("0-0", 2),
            numbered("0-0", 3, 1, &[2]),
        ] {
            assert!(input.on_record(record).unwrap().is_empty());
        }
        assert_eq!(
            input.on_record(barrier("0-1", 1)).unwrap(),
            [InputEvent::Aligned(1), InputEvent::Rows(rows(&[1]))]
        );
        assert_eq!(input.held_rows(), 1, "row 2 waits for epoch 2's alignment");
        assert_eq!(
            input.on_record(barrier("0-1", 2)).unwrap(),
            [InputEvent::Aligned(2), InputEvent::Rows(rows(&[2]))]
        );
    }

    /// A `controls` record counts as its entries, in order: one producer's
    /// barrier in it waits for the other's, whose rows still flow; a later
    /// `controls` record with the other's barrier and both watermarks
    /// aligns, then moves the watermark.
    #[test]
    fn a_controls_record_counts_as_its_entries() {
        let mut input = input();
        let controls = |entries| from("controls", 3, 0, StageMessage::Controls(entries));
        let first = controls(vec![
            from("0-0", 3, 1, StageMessage::Watermark(50)),
            from("0-0", 3, 1, StageMessage::Barrier),
        ]);
        assert!(input.on_record(first).unwrap().is_empty());
        assert_eq!(
            input.on_record(numbered("0-1", 1, 0, &[7])).unwrap(),
            [InputEvent::Rows(rows(&[7]))]
        );
        let second = controls(vec![
            from("0-1", 3, 1, StageMessage::Watermark(60)),
            from("0-1", 3, 1, StageMessage::Barrier),
            from("0-1", 3, 2, StageMessage::Watermark(70)),
        ]);
        assert_eq!(
            input.on_record(second).unwrap(),
            [InputEvent::Watermark(50), InputEvent::Aligned(1)]
        );
        // Another generation's controls are skipped whole.
        let old = from(
            "controls",
            2,
            0,
            StageMessage::Controls(vec![from("0-0", 2, 1, StageMessage::Watermark(99))]),
        );
        assert!(input.on_record(old).unwrap().is_empty());
        assert_eq!(
            input
                .on_record(from("0-0", 3, 2, StageMessage::Watermark(80)))
                .unwrap(),
            [InputEvent::Watermark(70)]
        );
    }

    /// Two producing tasks write through a real Kafka protocol server into
    /// a two-partition repartition topic, their control messages together
    /// ([`StageControls`]); each consuming task sees its keys' rows, the
    /// slower producer's watermark, and the rows a producer sent after its
    /// barrier only once both barriers came; rows records the topic holds
    /// twice (as a produce retried without deduplication leaves them)
    /// count once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_producers_through_a_broker() {
        use std::time::Duration;

        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{FutureProducer, FutureRecord};
        use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

        use super::super::stage_controls::StageControls;
        use super::super::stage_output::StageOutput;

        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("weir.job.1", 2, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let task = |name: &str| {
            StageOutput::new(
                vec![0],
                2,
                Tag {
                    generation: 1,
                    epoch: 1,
                    from: name.into(),
                    seq: 0,
                },
            )
        };
        let (mut first, mut second) = (task("0-0"), task("0-1"));
        // The two tasks' control messages go out together, as in a process.
        let controls = StageControls::new(producer.clone(), "weir.job.1".into(), 2, 1);
        controls.register();
        controls.register();
        let send_rows = |records: Vec<(usize, StageRecord)>| {
            let producer = producer.clone();
            async move {
                for (partition, record) in records {
                    let (payload, headers) = record.encode().unwrap();
                    producer
                        .send(
                            FutureRecord::<(), _>::to("weir.job.1")
                                .partition(partition as i32)
                                .payload(&payload)
                                .headers(headers),
                            Duration::from_secs(5),
                        )
                        .await
                        .unwrap();
                }
            }
        };
        let keys = |range: std::ops::Range<i64>| range.collect::<Vec<_>>();
        let first_rows = first.rows(&rows(&keys(0..10))).unwrap();
        send_rows(first_rows.clone()).await;
        send_rows(first_rows).await;
        send_rows(second.rows(&rows(&keys(10..20))).unwrap()).await;
        let watermark = |output: &StageOutput, at| output.record(StageMessage::Watermark(at));
        controls.send(watermark(&first, 100), false).await.unwrap();
        controls.send(watermark(&second, 50), false).await.unwrap();
        controls.send(first.barrier_for(1), true).await.unwrap();
        send_rows(first.rows(&rows(&keys(20..25))).unwrap()).await;
        controls.send(second.barrier_for(1), true).await.unwrap();
        send_rows(second.rows(&rows(&keys(25..30))).unwrap()).await;
        controls
            .send(first.record(StageMessage::End), true)
            .await
            .unwrap();
        controls
            .send(second.record(StageMessage::End), true)
            .await
            .unwrap();
        let mut seen_keys = Vec::new();
        for partition in 0..2 {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", format!("reader-{partition}"))
                .create()
                .unwrap();
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset("weir.job.1", partition, Offset::Beginning)
                .unwrap();
            consumer.assign(&assignment).unwrap();
            let mut input = StageInput::new(1, ["0-0".to_string(), "0-1".to_string()]);
            let mut events = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while events.last() != Some(&InputEvent::End) && std::time::Instant::now() < deadline {
                if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                    let message = message.unwrap();
                    let record = StageRecord::decode(message.payload(), message.headers()).unwrap();
                    events.extend(input.on_record(record).unwrap());
                }
            }
            let aligned = events
                .iter()
                .position(|e| *e == InputEvent::Aligned(1))
                .unwrap_or_else(|| panic!("partition {partition}: {events:?}"));
            assert!(events.contains(&InputEvent::Watermark(50)), "{events:?}");
            assert!(!events.contains(&InputEvent::Watermark(100)), "{events:?}");
            assert_eq!(events.last(), Some(&InputEvent::End));
            let keys_of = |events: &[InputEvent]| -> Vec<i64> {
                events
                    .iter()
                    .filter_map(|e| match e {
                        InputEvent::Rows(batch) => Some(batch),
                        _ => None,
                    })
                    .flat_map(|b| {
                        let keys = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                        keys.values().to_vec()
                    })
                    .collect()
            };
            let before = keys_of(&events[..aligned]);
            let after = keys_of(&events[aligned..]);
            assert!(before.iter().all(|k| *k < 20), "{before:?}");
            assert!(after.iter().all(|k| *k >= 20), "{after:?}");
            seen_keys.extend(before);
            seen_keys.extend(after);
        }
        seen_keys.sort();
        assert_eq!(seen_keys, (0..30).collect::<Vec<i64>>());
    }

    /// An ended producer counts as having sent every later barrier.
    #[test]
    fn an_ended_producer_does_not_block_alignment() {
        let mut input = input();
        assert!(input
            .on_record(from("0-1", 3, 1, StageMessage::End))
            .unwrap()
            .is_empty());
        assert_eq!(
            input
                .on_record(from("0-0", 3, 2, StageMessage::Barrier))
                .unwrap(),
            [InputEvent::Aligned(2)]
        );
    }

    /// A rows record or a barrier handed over again is skipped, also
    /// while its producer's records are held by an alignment; rows that
    /// never came stop the task with the numbers that are missing.
    #[test]
    fn each_rows_record_counts_once_and_none_goes_missing() {
        let mut input = input();
        let first = numbered("0-0", 1, 0, &[1, 2]);
        assert_eq!(
            input.on_record(first.clone()).unwrap(),
            [InputEvent::Rows(rows(&[1, 2]))]
        );
        assert!(input.on_record(first).unwrap().is_empty(), "again: skipped");
        assert!(input
            .on_record(from("0-0", 3, 1, StageMessage::Barrier))
            .unwrap()
            .is_empty());
        let held = numbered("0-0", 2, 1, &[3]);
        assert!(input.on_record(held.clone()).unwrap().is_empty());
        assert!(input.on_record(held).unwrap().is_empty());
        assert!(input
            .on_record(from("0-0", 3, 1, StageMessage::Barrier))
            .unwrap()
            .is_empty());
        assert_eq!(input.held_rows(), 1, "the second copies are not held");
        let other_barrier = from("0-1", 3, 1, StageMessage::Barrier);
        assert_eq!(
            input.on_record(other_barrier.clone()).unwrap(),
            [InputEvent::Aligned(1), InputEvent::Rows(rows(&[3]))]
        );
        // A barrier again after its alignment starts no other.
        assert!(input.on_record(other_barrier).unwrap().is_empty());
        let next = |task| from(task, 3, 2, StageMessage::Barrier);
        assert!(input.on_record(next("0-1")).unwrap().is_empty());
        assert_eq!(
            input.on_record(next("0-0")).unwrap(),
            [InputEvent::Aligned(2)]
        );
        // The other producer's numbers are its own.
        assert_eq!(
            input.on_record(numbered("0-1", 2, 0, &[9])).unwrap(),
            [InputEvent::Rows(rows(&[9]))]
        );
        let gap = input.on_record(numbered("0-0", 2, 4, &[5])).unwrap_err();
        assert!(
            gap.to_string().contains("0-0 are missing: records 2 to 3"),
            "{gap}"
        );
    }

    /// Records of another generation (a zombie's, or written before the
    /// rollback) change nothing; a record from a task that is not an
    /// upstream task is an error.
    #[test]
    fn other_generations_are_skipped() {
        let mut input = input();
        for stale in [
            from("0-0", 2, 1, StageMessage::Rows(rows(&[7]))),
            from("0-0", 2, 1, StageMessage::Watermark(5)),
            from("0-0", 2, 1, StageMessage::Barrier),
            from("0-1", 2, 1, StageMessage::Barrier),
            from("0-1", 4, 1, StageMessage::End),
        ] {
            assert!(input.on_record(stale).unwrap().is_empty());
        }
        assert_eq!(input.held_rows(), 0);
        let stranger = from("9-9", 3, 1, StageMessage::Watermark(1));
        assert!(input.on_record(stranger).is_err());
    }
}
