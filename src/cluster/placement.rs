//! The whole job as every process can see it (`docs/cluster-protocol.md`,
//! "Observability"): each process commits how far its tasks have read
//! into its stage groups and records which tasks it runs beside the
//! generation's claims; any process reads the committed offsets, the
//! partitions' ends and the records back, so `DESCRIBE JOB` and
//! `/metrics` show every task's process and lag without any process
//! gathering reports from the others. A task whose
//! lag keeps growing while the rest of its stage keeps up is a hot
//! partition, and an alert names it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use weir_connectors::kafka::stage_group::StageMembership;
use weir_engine::generations::Generations;
use weir_engine::message::now_millis;
use weir_engine::metrics::{Alert, AlertKind, TaskSnapshot};

use super::generation::Shared;
use super::stages::task_name;

/// How often positions are committed and the placement read.
pub(crate) const INTERVAL: Duration = Duration::from_secs(2);

/// Looks the lag of a task must have grown over, in a row.
const GROWING: usize = 4;

/// What the watcher needs to know of each stage.
pub(crate) struct StageView {
    pub membership: Arc<StageMembership>,
    pub tasks: usize,
    /// The node id (in the job's metrics) whose splits are the stage's
    /// input positions: its source, or its first input's reader.
    pub input_node: usize,
}

/// Commits this process's positions and publishes every task's placement
/// and lag into `metrics`, every [`INTERVAL`], until aborted.
pub(crate) async fn watch(stages: Vec<StageView>, shared: Arc<Shared>) {
    let (metrics, process) = (&shared.metrics, &shared.process);
    let stages = Arc::new(stages);
    let mut history = LagHistory::default();
    loop {
        tokio::time::sleep(INTERVAL).await;
        let generation = shared.started.load(Ordering::Relaxed);
        let recorded = recorded_placement(&shared.generations, generation).await;
        let shown = metrics.snapshot();
        let looked = {
            let stages = stages.clone();
            tokio::task::spawn_blocking(move || look(&stages, &shown.splits))
        };
        let Ok(placements) = looked.await else {
            continue;
        };
        let mut tasks = Vec::new();
        for ((stage, placement), view) in placements.into_iter().enumerate().zip(stages.iter()) {
            // Who runs a task: what the processes recorded for the
            // generation this one runs; else the broker's group description (Tansu
            // gives none); else, for its own tasks, the process's group.
            let own = view.membership.assignment().partitions;
            for task in placement {
                let index = usize::try_from(task.task).unwrap_or_default();
                let runs = recorded
                    .get(&task_name(stage, index))
                    .cloned()
                    .or(task.process)
                    .or_else(|| own.contains(&task.task).then(|| process.clone()));
                tasks.push(TaskSnapshot {
                    stage,
                    task: index,
                    local: runs.as_deref() == Some(process.as_str()),
                    process: runs,
                    lag: task.lag,
                });
            }
        }
        history.add(&tasks);
        metrics.set_alerts(history.falling_behind(&tasks));
        metrics.set_tasks(tasks);
    }
}

/// The tasks (`stage-task`) of `generation` and the process running each,
/// as the processes recorded them (none before the first generation or
/// while the store does not answer).
async fn recorded_placement(generations: &Generations, generation: u64) -> HashMap<String, String> {
    if generation == 0 {
        return HashMap::new();
    }
    generations.placement(generation).await.unwrap_or_else(|e| {
        tracing::debug!("cannot read the job's placement: {e}");
        HashMap::new()
    })
}

/// Commits the positions of this process's tasks, then reads every
/// stage's placement (a stage that cannot be read shows no tasks).
fn look(
    stages: &[StageView],
    splits: &[weir_engine::metrics::SplitSnapshot],
) -> Vec<Vec<weir_connectors::kafka::stage_group::TaskPlacement>> {
    stages
        .iter()
        .map(|stage| {
            let positions: Vec<(i32, i64)> = splits
                .iter()
                .filter(|s| s.node == stage.input_node)
                .filter_map(|s| Some((i32::try_from(s.subtask).ok()?, s.position?)))
                .collect();
            if let Err(e) = stage.membership.commit_positions(&positions) {
                tracing::debug!("cannot commit task positions: {e}");
            }
            stage
                .membership
                .placement(stage.tasks, INTERVAL)
                .unwrap_or_default()
        })
        .collect()
}

/// The last few lags of every task.
#[derive(Default)]
struct LagHistory {
    lags: HashMap<(usize, usize), VecDeque<i64>>,
}

impl LagHistory {
    fn add(&mut self, tasks: &[TaskSnapshot]) {
        for task in tasks {
            let Some(lag) = task.lag else {
                continue;
            };
            let lags = self.lags.entry((task.stage, task.task)).or_default();
            lags.push_back(lag);
            if lags.len() > GROWING {
                lags.pop_front();
            }
        }
    }

    fn growing(&self, key: (usize, usize)) -> bool {
        self.lags.get(&key).is_some_and(|lags| {
            lags.len() == GROWING && lags.iter().zip(lags.iter().skip(1)).all(|(a, b)| b > a)
        })
    }

    fn kept_up(&self, key: (usize, usize)) -> bool {
        self.lags
            .get(&key)
            .is_some_and(|lags| lags.back() <= lags.front())
    }

    /// Tasks whose lag grew at every look while every other task of their
    /// stage kept up.
    fn falling_behind(&self, tasks: &[TaskSnapshot]) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for task in tasks {
            let key = (task.stage, task.task);
            let others: Vec<_> = tasks
                .iter()
                .filter(|t| t.stage == task.stage && t.task != task.task)
                .collect();
            if others.is_empty()
                || !self.growing(key)
                || !others.iter().all(|t| self.kept_up((t.stage, t.task)))
            {
                continue;
            }
            let lags = &self.lags[&key];
            alerts.push(Alert {
                kind: AlertKind::HotPartition,
                subject: format!("task {}-{}", task.stage, task.task),
                message: format!(
                    "task {}-{} (on {}) falls behind: its lag grew from {} to {} records while the other {} tasks of stage {} kept up",
                    task.stage,
                    task.task,
                    task.process.as_deref().unwrap_or("no process"),
                    lags.front().copied().unwrap_or_default(),
                    lags.back().copied().unwrap_or_default(),
                    others.len(),
                    task.stage
                ),
                since: now_millis(),
            });
        }
        alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(lags: &[i64]) -> Vec<TaskSnapshot> {
        lags.iter()
            .enumerate()
            .map(|(task, lag)| TaskSnapshot {
                stage: 0,
                task,
                process: Some(format!("p{task}")),
                lag: Some(*lag),
                local: false,
            })
            .collect()
    }

    /// Task 2's lag grows at every look; the others' stays flat or
    /// shrinks: only task 2 is named, and only after four looks.
    #[test]
    fn a_task_whose_lag_grows_alone_is_named() {
        let mut history = LagHistory::default();
        let looks = [[5, 0, 100], [3, 0, 300], [4, 0, 700], [2, 0, 1500]];
        for (i, lags) in looks.iter().enumerate() {
            let now = tasks(lags);
            history.add(&now);
            let alerts = history.falling_behind(&now);
            if i + 1 < GROWING {
                assert!(alerts.is_empty(), "{alerts:?}");
            } else {
                assert_eq!(alerts.len(), 1, "{alerts:?}");
                assert_eq!(alerts[0].subject, "task 0-2");
                assert!(alerts[0].message.contains("on p2"), "{}", alerts[0].message);
                assert!(alerts[0].message.contains("from 100 to 1500"));
            }
        }
    }

    /// Every task falls behind together: the job is slow, no partition is
    /// hot.
    #[test]
    fn tasks_falling_behind_together_are_not_a_hot_partition() {
        let mut history = LagHistory::default();
        for step in 1..=5 {
            let now = tasks(&[step * 10, step * 20, step * 30]);
            history.add(&now);
            assert!(history.falling_behind(&now).is_empty());
        }
    }
}
