//! One process's share of one generation (`docs/cluster-protocol.md`,
//! "Checkpoints without a coordinator"): a local job per stage running the
//! tasks assigned here, restored from the generation's base epoch, and the
//! loops around them: the clock that starts each epoch's barrier at the
//! source tasks, the writer of each task's snapshot, the manifest writer
//! (in the process running the first task), and the watcher that lets
//! sinks publish complete epochs.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use weir_engine::checkpoint::{fingerprint, Restored};
use weir_engine::epochs::{Epochs, Outcome};
use weir_engine::generations::{Base, Generation, Generations};
use weir_engine::message::now_millis;
use weir_engine::runtime::SnapshotAck;
use weir_engine::source::FINAL_CHECKPOINT;
use weir_engine::{
    CheckpointId, EngineError, Graph, JobHandle, JobMetrics, JobStatus, NodeId, Result,
    RuntimeConfig, StateSnapshot,
};

use super::snapshots;
use super::stages::{task_name, Layout, StageInput};

/// How often a process looks at manifests it waits for.
const MANIFEST_POLL: Duration = Duration::from_millis(100);

/// What every generation of one process shares.
pub(crate) struct Shared {
    /// This process's id (`host-pid-random`).
    pub process: String,
    pub graph: Graph,
    pub layout: Layout,
    pub generations: Arc<Generations>,
    pub epochs: Arc<Epochs>,
    /// How often epochs start.
    pub interval: Duration,
    /// An epoch not complete this long after it started rolls the job
    /// back (`execution.checkpointing.timeout`).
    pub timeout: Duration,
    pub runtime: RuntimeConfig,
    /// What this process's `/metrics` and `DESCRIBE JOB` show.
    pub metrics: Arc<JobMetrics>,
    /// Set when an epoch of the running generation is `stuck_after` past
    /// due: the process joins its stage groups again. A broker that
    /// evicts a dead member only when someone joins (Tansu) would
    /// otherwise leave its tasks assigned to it for good.
    pub stuck: AtomicBool,
    /// The generation this process started last (0: none yet), whose
    /// placement records the placement view reads.
    pub started: AtomicU64,
    /// Twice the groups' session timeout (five intervals at least), and
    /// at most the checkpoint timeout.
    pub stuck_after: Duration,
}

/// Closes the newest generation and creates the one after it, based on
/// its last complete epoch (or adopts it, when another process was first).
pub(crate) async fn roll_over(shared: &Shared) -> Result<Generation> {
    let latest = shared.generations.latest().await?;
    let (current, base) = match &latest {
        None => (0, None),
        Some(latest) => {
            let first = latest.base.map_or(1, |b| b.epoch + 1);
            let last = shared.epochs.close(latest.number, first).await?;
            let base = match last {
                Some(epoch) => Some(Base {
                    generation: latest.number,
                    epoch,
                }),
                None => latest.base,
            };
            (latest.number, base)
        }
    };
    let generation = shared
        .generations
        .next(current, base, &shared.process)
        .await?;
    if generation.creator == shared.process {
        // Generation `current` is closed: the claims before it serve no
        // one (the creator cleans up, off the rollover's path).
        let generations = shared.generations.clone();
        tokio::spawn(async move {
            match generations.forget_claims_before(current).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(claims = n, "forgot old task claims"),
                Err(e) => tracing::warn!("cannot delete old task claims yet: {e}"),
            }
        });
    }
    Ok(generation)
}

/// What a process runs in one generation.
pub(crate) struct Running {
    pub generation: Generation,
    jobs: Vec<Arc<JobHandle>>,
    loops: JoinSet<Result<()>>,
    /// The process's metrics, which show this generation's jobs.
    metrics: Arc<JobMetrics>,
}

impl Running {
    /// Starts the tasks `assigned` (by stage) in `generation`.
    pub async fn start(
        shared: &Arc<Shared>,
        generation: Generation,
        assigned: &[BTreeSet<usize>],
    ) -> Result<Running> {
        let (graph, layout, epochs) = (&shared.graph, &shared.layout, shared.epochs.clone());
        let (interval, runtime, metrics) = (shared.interval, &shared.runtime, &shared.metrics);
        let first = generation.base.map_or(1, |b| b.epoch + 1);
        let number = generation.number;
        let schedule = Schedule {
            generation: number,
            created: generation.created,
            first,
            interval,
        };
        let (commits_tx, commits) = watch::channel(0);
        // Everything is read before anything starts: a store that fails
        // half-way leaves nothing running.
        let mut prepared = Vec::new();
        for (stage, tasks) in assigned.iter().enumerate() {
            if tasks.is_empty() {
                continue;
            }
            let local = layout.stage_graph(graph, stage, &generation, first);
            let fingerprint = fingerprint(&local);
            let mut restored = Restored {
                fingerprint: fingerprint.clone(),
                location: format!("generation {number}"),
                ..Default::default()
            };
            if let Some(base) = generation.base {
                restored.checkpoint_id = base.epoch;
                for task in tasks {
                    let name = task_name(stage, *task);
                    let object = epochs.snapshot(base.generation, base.epoch, &name).await?;
                    for (node, state) in snapshots::decode(&fingerprint, &object)? {
                        restored.states.insert((node, *task), state);
                    }
                }
            }
            prepared.push((stage, tasks, local, fingerprint, restored));
        }
        let mut jobs = Vec::new();
        let mut sources = Vec::new();
        let mut loops = JoinSet::new();
        for (stage, tasks, local, fingerprint, restored) in prepared {
            let (acks, reports) = mpsc::channel(64);
            // Each task of the local graph reports its own snapshot (a
            // join's readers and the join itself); a task's object holds all.
            let reporting = local
                .nodes
                .iter()
                .filter(|n| !local.is_chained(n.id))
                .count();
            let config = RuntimeConfig {
                subtasks: Some(tasks.clone()),
                external_commits: Some(commits.clone()),
                checkpoint_acks: Some(acks),
                checkpoint: None,
                restore: Some(restored),
                ..runtime.clone()
            };
            let job = Arc::new(weir_engine::spawn(local, config)?);
            metrics.include(job.job_metrics(), layout.node_offset(stage));
            if layout.stages[stage].input == StageInput::Source {
                sources.push(job.clone());
            }
            jobs.push(job);
            loops.spawn(write_snapshots(
                reports,
                reporting,
                epochs.clone(),
                number,
                stage,
                fingerprint,
            ));
        }
        if !sources.is_empty() {
            loops.spawn(start_epochs(sources, schedule));
        }
        if assigned.first().is_some_and(|tasks| tasks.contains(&0)) {
            loops.spawn(complete_epochs(shared.clone(), schedule));
        }
        loops.spawn(publish_epochs(shared.clone(), schedule, commits_tx));
        Ok(Running {
            generation,
            jobs,
            loops,
            metrics: metrics.clone(),
        })
    }

    /// The first failure of a task or loop, if any.
    pub fn failure(&mut self) -> Option<EngineError> {
        for job in &self.jobs {
            if let JobStatus::Failed(message) = job.status() {
                return Some(EngineError::Task(message));
            }
        }
        match self.loops.try_join_next() {
            Some(Ok(Err(e))) => Some(e),
            Some(Err(e)) if e.is_panic() => Some(EngineError::Task(format!("panicked: {e}"))),
            _ => None,
        }
    }

    /// Stops every task at once: a new generation replays what was not
    /// in a complete epoch.
    pub fn stop(mut self) {
        for job in &self.jobs {
            job.abort();
        }
        self.loops.abort_all();
        self.metrics.clear_parts();
    }
}

/// When a generation's epochs start: epoch `n` when the wall clock passes
/// the generation's creation plus `n - first + 1` intervals, so every
/// process keeps the same schedule without a message.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    generation: u64,
    created: i64,
    first: u64,
    interval: Duration,
}

impl Schedule {
    fn due(&self, epoch: u64) -> i64 {
        let interval_ms = self.interval.as_millis().max(1) as i64;
        self.created + epoch.saturating_sub(self.first).saturating_add(1) as i64 * interval_ms
    }
}

/// Starts each epoch's barrier at every source task when it is due.
async fn start_epochs(sources: Vec<Arc<JobHandle>>, schedule: Schedule) -> Result<()> {
    for epoch in schedule.first.. {
        let wait = schedule.due(epoch) - now_millis();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        for job in &sources {
            job.inject_barrier(epoch).await;
        }
    }
    Ok(())
}

/// How many of a task's parts have reported an epoch, and their states.
type PartialSnapshot = (usize, Vec<(NodeId, StateSnapshot)>);

/// Writes each task's snapshot of each epoch to the store, once the
/// `reporting` parts of the task have all reported.
async fn write_snapshots(
    mut reports: mpsc::Receiver<SnapshotAck>,
    reporting: usize,
    epochs: Arc<Epochs>,
    generation: u64,
    stage: usize,
    fingerprint: String,
) -> Result<()> {
    let mut partial: HashMap<(CheckpointId, usize), PartialSnapshot> = HashMap::new();
    while let Some(report) = reports.recv().await {
        if report.checkpoint_id == FINAL_CHECKPOINT {
            continue;
        }
        let key = (report.checkpoint_id, report.subtask);
        let (reported, states) = partial.entry(key).or_default();
        *reported += 1;
        states.extend(report.states);
        if *reported < reporting {
            continue;
        }
        let Some((_, mut states)) = partial.remove(&key) else {
            continue;
        };
        states.sort_by_key(|(node, _)| *node);
        let object = snapshots::encode(&fingerprint, &states)?;
        let task = task_name(stage, report.subtask);
        fail::fail_point!("cluster-before-snapshot", |_| crash("before a snapshot"));
        let epoch = report.checkpoint_id;
        let mut wait = Duration::from_millis(250);
        while let Err(e) = epochs
            .put_snapshot(generation, epoch, &task, object.clone())
            .await
        {
            // The store does not answer: this epoch waits (no manifest
            // without every snapshot), the job does not fail.
            tracing::warn!(generation, epoch, task, "snapshot not written yet: {e}");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        fail::fail_point!("cluster-after-snapshot", |_| crash("after a snapshot"));
    }
    Ok(())
}

/// Creates each epoch's manifest once every task's snapshot is there.
/// An epoch that waits long names the tasks it waits for.
/// One that takes longer than the checkpoint timeout rolls the job back
/// to the last complete epoch under a new generation (a stuck task cannot
/// stop the job's checkpoints for good).
async fn complete_epochs(shared: Arc<Shared>, schedule: Schedule) -> Result<()> {
    let Schedule {
        generation, first, ..
    } = schedule;
    let epochs = &shared.epochs;
    let all = shared.layout.task_names();
    let patience = schedule.interval * 10;
    let tasks = all.len();
    for epoch in first.. {
        let mut next_report = tokio::time::Instant::now() + patience;
        loop {
            let late = now_millis() - schedule.due(epoch);
            if late > shared.timeout.as_millis() as i64 {
                tracing::warn!(
                    generation,
                    epoch,
                    "the epoch did not complete in {:?}: every task rolls back to the last complete epoch",
                    shared.timeout
                );
                match roll_over(&shared).await {
                    Ok(_) => return Ok(()),
                    Err(e) => unanswered(generation, epoch, e).await,
                }
                continue;
            }
            if tokio::time::Instant::now() >= next_report {
                next_report += patience;
                if let Ok(written) = epochs.written(generation, epoch).await {
                    let missing: Vec<&String> =
                        all.iter().filter(|t| !written.contains(t)).collect();
                    tracing::warn!(
                        generation,
                        epoch,
                        "the epoch waits for the snapshots of tasks {missing:?}"
                    );
                }
            }
            match epochs.try_complete(generation, epoch, first, tasks).await {
                Ok(Some(Outcome::Complete)) => {
                    // From the barrier's start to the manifest: what the
                    // coordination benchmark measures.
                    let took_ms = now_millis() - schedule.due(epoch);
                    tracing::info!(generation, epoch, took_ms, "epoch complete");
                    break;
                }
                Ok(Some(Outcome::Aborted)) => return Ok(()),
                Ok(None) => tokio::time::sleep(MANIFEST_POLL).await,
                Err(e) => unanswered(generation, epoch, e).await,
            }
        }
    }
    Ok(())
}

/// Tells this process's sinks each epoch that is complete, in order, and
/// marks the process stuck when one waits too long (every process runs
/// this, also one without tasks).
async fn publish_epochs(
    shared: Arc<Shared>,
    schedule: Schedule,
    commits: watch::Sender<CheckpointId>,
) -> Result<()> {
    let (epochs, generation) = (&shared.epochs, schedule.generation);
    let patience = shared.stuck_after.as_millis() as i64;
    for epoch in schedule.first.. {
        let mut marked = false;
        loop {
            match epochs.outcome(generation, epoch).await {
                Err(e) => unanswered(generation, epoch, e).await,
                Ok(Some(Outcome::Complete)) => {
                    fail::fail_point!("cluster-before-publish", |_| crash(
                        "after a manifest, before publishing"
                    ));
                    let _ = commits.send(epoch);
                    break;
                }
                Ok(Some(Outcome::Aborted)) => return Ok(()),
                Ok(None) => {
                    if !marked && now_millis() - schedule.due(epoch) > patience {
                        marked = true;
                        shared.stuck.store(true, Ordering::Relaxed);
                    }
                    tokio::time::sleep(MANIFEST_POLL).await
                }
            }
        }
    }
    Ok(())
}

/// The store did not answer about an epoch: asks again a little later
/// (the epoch waits; sinks publish nothing it has not decided).
async fn unanswered(generation: u64, epoch: u64, error: EngineError) {
    tracing::warn!(generation, epoch, "checkpoint store: {error}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Dies as SIGKILL would, where a fail point says (`FAILPOINTS`).
fn crash(at: &str) -> Result<()> {
    tracing::error!("fail point: crashing {at}");
    std::process::abort()
}

/// Tasks by stage, from the partitions each stage's group assigned.
pub(crate) fn by_stage(assignments: &[BTreeSet<i32>]) -> Vec<BTreeSet<usize>> {
    assignments
        .iter()
        .map(|partitions| {
            partitions
                .iter()
                .filter_map(|p| usize::try_from(*p).ok())
                .collect()
        })
        .collect()
}

/// The tasks a process runs, for logs.
pub(crate) fn describe(assigned: &[BTreeSet<usize>]) -> String {
    assigned
        .iter()
        .enumerate()
        .map(|(stage, tasks)| format!("stage {stage}: {tasks:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
