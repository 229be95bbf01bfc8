//! Which tasks of a stage this process runs (`docs/cluster-protocol.md`,
//! "Who runs what"): one Kafka consumer group per stage, whose partitions
//! are the stage's tasks, assigned cooperative-sticky. Kafka decides
//! membership, failure detection and assignment; this keeps the current
//! assignment and counts the changes (each change starts a generation).
//!
//! Not used by a runtime yet.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
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
struct Tracker(Arc<Mutex<Assignment>>);

impl ClientContext for Tracker {}

impl ConsumerContext for Tracker {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut current = self.0.lock();
        let partitions = |list: &TopicPartitionList| -> Vec<i32> {
            list.elements().iter().map(|e| e.partition()).collect()
        };
        let changed = match rebalance {
            Rebalance::Assign(list) => {
                // Tasks read their partitions with their own consumers;
                // this one only keeps the membership.
                let _ = consumer.pause(list);
                let added = partitions(list);
                let before = current.partitions.len();
                current.partitions.extend(added);
                current.partitions.len() != before
            }
            Rebalance::Revoke(list) => {
                let before = current.partitions.len();
                for p in partitions(list) {
                    current.partitions.remove(&p);
                }
                current.partitions.len() != before
            }
            Rebalance::Error(_) => false,
        };
        if changed {
            current.changes += 1;
        }
    }
}

/// This process's membership in one stage's group.
pub struct StageMembership {
    consumer: BaseConsumer<Tracker>,
    tracker: Tracker,
}

impl StageMembership {
    /// Joins `group`, whose tasks are the partitions of `topic`.
    pub fn join(client: &ClientConfig, group: &str, topic: &str) -> Result<Self> {
        let error = |e: &dyn std::fmt::Display| {
            EngineError::connector("kafka", format!("stage group {group}: {e}"))
        };
        let tracker = Tracker::default();
        let consumer: BaseConsumer<Tracker> = client
            .clone()
            .set("group.id", group)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .create_with_context(tracker.clone())
            .map_err(|e| error(&e))?;
        consumer.subscribe(&[topic]).map_err(|e| error(&e))?;
        Ok(StageMembership { consumer, tracker })
    }

    /// Serves the group protocol (heartbeats, rebalances) for up to
    /// `timeout`; the task's own reading happens elsewhere.
    pub fn poll(&self, timeout: std::time::Duration) {
        // Records are not read through this consumer: a message here would
        // only mean the topic has data, which the task's reader handles.
        let _ = self.consumer.poll(timeout);
    }

    pub fn assignment(&self) -> Assignment {
        self.tracker.0.lock().clone()
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
            for m in members {
                m.poll(Duration::from_millis(50));
            }
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
        let first = StageMembership::join(&client, &group, "weir.job.1").unwrap();
        until(&[&first], |a| a[0].partitions.len() == 6);
        let second = StageMembership::join(&client, &group, "weir.job.1").unwrap();
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
}
