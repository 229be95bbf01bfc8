//! Which tasks of a stage this process runs (`docs/cluster-protocol.md`,
//! "Who runs what"): one Kafka consumer group per stage, whose partitions
//! are the stage's tasks, assigned round-robin. Kafka decides
//! membership, failure detection and assignment; this keeps the current
//! assignment and counts the changes (each change starts a generation).
//!
//! Each membership has a thread that polls its consumer without pause:
//! librdkafka hands rebalances, commit results and its own log lines to
//! the application one per poll, and a rebalance left waiting behind them
//! stalls the whole group (every member's SyncGroup fails while one lags).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use weir_engine::{EngineError, Result};

/// The consumer group of one stage.
pub fn stage_group(pipeline: &str, stage: usize) -> String {
    format!("weir.{pipeline}.stage-{stage}")
}

/// The partitions (tasks) assigned to this process, and how often they
/// changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub partitions: BTreeSet<i32>,
    pub changes: u64,
}

/// The consumer's context: keeps the assignment where the membership
/// reads it.
#[derive(Clone, Default)]
struct Tracker(Arc<Mutex<Tracked>>);

#[derive(Default)]
struct Tracked {
    /// What the last rebalance assigned, and how often that changed.
    assignment: Assignment,
    /// The partitions held now: empty between a rebalance's revocation
    /// and its assignment.
    held: BTreeSet<i32>,
}

impl ClientContext for Tracker {}

impl ConsumerContext for Tracker {
    /// The assignor is eager (`roundrobin`): a rebalance revokes every
    /// partition, then assigns the new set. Only a set that differs from
    /// the last one is a change: a rebalance that gives the process back
    /// what it had (another member joined a group and got nothing, or the
    /// broker rebalanced for its own reasons) leaves its tasks running.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut tracked = self.0.lock();
        let partitions = |list: &TopicPartitionList| -> Vec<i32> {
            list.elements().iter().map(|e| e.partition()).collect()
        };
        match rebalance {
            Rebalance::Assign(list) => {
                // Tasks read their partitions with their own consumers;
                // this one only keeps the membership.
                let _ = consumer.pause(list);
                tracked.held.extend(partitions(list));
                if tracked.held != tracked.assignment.partitions {
                    tracked.assignment.partitions = tracked.held.clone();
                    tracked.assignment.changes += 1;
                }
            }
            Rebalance::Revoke(list) => {
                for p in partitions(list) {
                    tracked.held.remove(&p);
                }
            }
            Rebalance::Error(e) => tracing::warn!("stage group rebalance: {e}"),
        }
    }
}

/// This process's membership in one stage's group.
pub struct StageMembership {
    consumer: Arc<BaseConsumer<Tracker>>,
    tracker: Tracker,
    group: String,
    topic: String,
    /// Tells the polling thread to end.
    left: Arc<AtomicBool>,
}

/// How long the polling thread waits for an event at a time.
const POLL_WAIT: Duration = Duration::from_millis(100);

impl Drop for StageMembership {
    fn drop(&mut self) {
        self.left.store(true, Ordering::Relaxed);
    }
}

/// One task of a stage as Kafka sees it: who runs it and how far behind
/// its input is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlacement {
    pub task: i32,
    /// The `client.id` of the member it is assigned to (a process id).
    pub process: Option<String>,
    /// Records of its partition not yet read, by the positions its
    /// process committed last.
    pub lag: Option<i64>,
}

impl StageMembership {
    /// Joins `group`, whose tasks are the partitions of `topic`, as
    /// `process` (its `client.id`, which other processes see).
    pub fn join(client: &ClientConfig, group: &str, topic: &str, process: &str) -> Result<Self> {
        let error = |e: &dyn std::fmt::Display| {
            EngineError::connector("kafka", format!("stage group {group}: {e}"))
        };
        let tracker = Tracker::default();
        let mut client = client.clone();
        // The rebalance timeout: how long a rebalance waits for a member
        // that does not rejoin (one that died mid-rebalance) before going
        // on without it; some brokers (Tansu) also evict a silent member
        // only after it. librdkafka's default, five minutes, would stall a
        // failover that long; this consumer is polled without pause, so the
        // session timeout is enough for a live member.
        let session = client
            .get("session.timeout.ms")
            .unwrap_or("45000")
            .to_string();
        super::set_default(&mut client, "max.poll.interval.ms", &session);
        let consumer: BaseConsumer<Tracker> = client
            .set("group.id", group)
            .set("client.id", process)
            .set("partition.assignment.strategy", "roundrobin")
            .set("enable.auto.commit", "false")
            .create_with_context(tracker.clone())
            .map_err(|e| error(&e))?;
        consumer.subscribe(&[topic]).map_err(|e| error(&e))?;
        let consumer = Arc::new(consumer);
        let left = Arc::new(AtomicBool::new(false));
        let polled = consumer.clone();
        let stop = left.clone();
        std::thread::Builder::new()
            .name(format!("{group} membership"))
            .spawn(move || {
                // Records are not read through this consumer (its
                // partitions are paused): a poll serves the group protocol.
                while !stop.load(Ordering::Relaxed) {
                    let _ = polled.poll(POLL_WAIT);
                }
            })
            .map_err(|e| error(&e))?;
        Ok(StageMembership {
            consumer,
            tracker,
            group: group.to_string(),
            topic: topic.to_string(),
            left,
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> EngineError {
        EngineError::connector("kafka", format!("stage group {}: {e}", self.group))
    }

    /// Records how far this process's tasks have read (task, next
    /// offset), so that any process can tell every task's lag.
    pub fn commit_positions(&self, positions: &[(i32, i64)]) -> Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (task, offset) in positions {
            list.add_partition_offset(&self.topic, *task, Offset::Offset(*offset))
                .map_err(|e| self.error(e))?;
        }
        self.consumer
            .commit(&list, CommitMode::Async)
            .map_err(|e| self.error(e))
    }

    /// Every task of the stage (the topic's `tasks` partitions): the
    /// process it is assigned to (by the group's members, where the
    /// broker describes them) and its lag, from its committed offset and
    /// the partition's end. Blocks for a few round trips to the broker.
    pub fn placement(&self, tasks: usize, timeout: Duration) -> Result<Vec<TaskPlacement>> {
        let groups = self
            .consumer
            .fetch_group_list(Some(&self.group), timeout)
            .map_err(|e| self.error(e))?;
        let mut owner = BTreeMap::new();
        for group in groups.groups() {
            for member in group.members() {
                let Some(assignment) = member.assignment() else {
                    continue;
                };
                for task in assigned_partitions(assignment, &self.topic) {
                    owner.insert(task, member.client_id().to_string());
                }
            }
        }
        let mut list = TopicPartitionList::new();
        for task in 0..tasks {
            list.add_partition(&self.topic, i32::try_from(task).map_err(|e| self.error(e))?);
        }
        let committed = self
            .consumer
            .committed_offsets(list.clone(), timeout)
            .map_err(|e| self.error(e))?;
        // Every partition's end in one request (ListOffsets at the end),
        // not one per task: every process looks every few seconds.
        let mut ends = list;
        ends.set_all_offsets(Offset::End)
            .map_err(|e| self.error(e))?;
        let ends: BTreeMap<i32, i64> = self
            .consumer
            .offsets_for_times(ends, timeout)
            .map_err(|e| self.error(e))?
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(end) => Some((e.partition(), end)),
                _ => None,
            })
            .collect();
        let placement = committed
            .elements()
            .iter()
            .map(|element| {
                let task = element.partition();
                let lag = match (element.offset(), ends.get(&task)) {
                    (Offset::Offset(read), Some(end)) => Some((end - read).max(0)),
                    _ => None,
                };
                TaskPlacement {
                    task,
                    process: owner.get(&task).cloned(),
                    lag,
                }
            })
            .collect();
        Ok(placement)
    }

    pub fn assignment(&self) -> Assignment {
        self.tracker.0.lock().assignment.clone()
    }
}

/// The partitions of `topic` in a member's assignment (Kafka's consumer
/// protocol: version, then per topic its name and partitions, then user
/// data). A malformed assignment gives none.
fn assigned_partitions(bytes: &[u8], topic: &str) -> Vec<i32> {
    let mut reader = Reader(bytes);
    let mut found = Vec::new();
    let mut read = || -> Option<()> {
        reader.i16()?;
        for _ in 0..reader.i32()? {
            let name = reader.string()?;
            for _ in 0..reader.i32()? {
                let partition = reader.i32()?;
                if name == topic {
                    found.push(partition);
                }
            }
        }
        Some(())
    };
    match read() {
        Some(()) => found,
        None => Vec::new(),
    }
}

/// Big-endian fields of Kafka's protocol.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take(2)?.try_into().ok().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)?.try_into().ok().map(i32::from_be_bytes)
    }

    fn string(&mut self) -> Option<&'a str> {
        let length = usize::try_from(self.i16()?).ok()?;
        std::str::from_utf8(self.take(length)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rdkafka::mocking::MockCluster;

    use super::*;

    /// Polls the members until `done` holds of their assignments.
    fn until(
        members: &[&StageMembership],
        done: impl Fn(&[Assignment]) -> bool,
    ) -> Vec<Assignment> {
        let started = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now: Vec<Assignment> = members.iter().map(|m| m.assignment()).collect();
            if done(&now) {
                return now;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "assignments never settled: {now:?}"
            );
        }
    }

    /// Two processes share a stage's six tasks; when one leaves, the other
    /// runs them all; every move is counted.
    #[test]
    fn processes_share_a_stages_tasks() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("weir.job.1", 6, 1).unwrap();
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "100");
        let group = stage_group("job", 1);
        let first = StageMembership::join(&client, &group, "weir.job.1", "a").unwrap();
        until(&[&first], |a| a[0].partitions.len() == 6);
        let second = StageMembership::join(&client, &group, "weir.job.1", "b").unwrap();
        let shared = until(&[&first, &second], |a| {
            a[0].partitions.len() + a[1].partitions.len() == 6
                && !a[0].partitions.is_empty()
                && !a[1].partitions.is_empty()
                && a[0].partitions.is_disjoint(&a[1].partitions)
        });
        assert!(shared[0].changes >= 2, "{shared:?}");
        drop(second);
        let alone = until(&[&first], |a| a[0].partitions.len() == 6);
        assert!(alone[0].changes > shared[0].changes);
    }

    /// A member's assignment as the consumer protocol encodes it.
    #[test]
    fn an_assignment_names_its_partitions_per_topic() {
        let mut bytes = Vec::new();
        bytes.extend(1i16.to_be_bytes());
        bytes.extend(2i32.to_be_bytes());
        for (topic, partitions) in [("weir.job.1", &[4i32, 0][..]), ("other", &[7i32][..])] {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for p in partitions {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend((-1i32).to_be_bytes()); // no user data
        assert_eq!(assigned_partitions(&bytes, "weir.job.1"), vec![4, 0]);
        assert_eq!(assigned_partitions(&bytes, "other"), vec![7]);
        assert!(assigned_partitions(&bytes[..9], "weir.job.1").is_empty());
    }
}
