//! One job shared by many `weir` processes (`execution.target = 'kafka'`,
//! `weir run --cluster`), as `docs/cluster-protocol.md` designs it.
//!
//! Every process runs the same SQL. The job is cut into stages
//! ([`stages`]); each stage's tasks are partitions of a topic, handed out
//! by one consumer group per stage. A process runs what it is assigned
//! ([`generation`]); when any assignment changes, one new generation is
//! created in the checkpoint store and every process restarts its tasks
//! in it from the last complete epoch. Kafka carries rows, watermarks and
//! barriers between stages; the store holds snapshots and manifests. No
//! process coordinates the others.

mod generation;
mod placement;
mod snapshots;
mod stages;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use weir_connectors::kafka::stage_group::{stage_group, StageMembership};
use weir_connectors::kafka::stage_output::{ensure_repartition_topic, holds_records};
use weir_connectors::{store::resolve, Options};
use weir_engine::epochs::Epochs;
use weir_engine::generations::{Generation, Generations};
use weir_engine::runtime::SourceControl;
use weir_engine::RuntimeConfig;
use weir_engine::{EngineError, JobHandle, JobMetrics, Result as EngineResult};
use weir_planner::{JobPlan, Settings};

use crate::error::{Result, WeirError};
use generation::{Running, Shared};
use stages::{task_name, Layout};

/// How long assignments must stay unchanged before a new generation
/// starts: a rebalance revokes and assigns in steps.
const SETTLE: Duration = Duration::from_millis(500);

/// How often a process looks for a newer generation.
const GENERATION_POLL: Duration = Duration::from_secs(1);
/// Task claims a process has in flight to the store at once.
const CONCURRENT_CLAIMS: usize = 16;

/// Starts this process's share of `plan`.
pub(crate) async fn start(
    plan: JobPlan,
    settings: &Settings,
    runtime: RuntimeConfig,
) -> Result<JobHandle> {
    let checkpoint = plan.checkpoint.clone().ok_or_else(|| {
        WeirError::Usage(
            "a cluster job (execution.target 'kafka') needs checkpoints: SET 'execution.checkpointing.interval' (e.g. '10s')".into(),
        )
    })?;
    let layout = Layout::new(&plan.graph, &plan.name, settings.max_parallelism()).await?;
    let (replication, retention) = settings.repartition_topics();
    for (topic, tasks) in layout.repartition_topics() {
        ensure_repartition_topic(
            &layout.client,
            topic,
            tasks,
            i32::try_from(replication).unwrap_or(1),
            retention.as_millis() as i64,
        )
        .await?;
    }
    let dir = format!("{}/{}", checkpoint.dir.trim_end_matches('/'), plan.name);
    let location =
        resolve(&dir, &Options::default(), true).map_err(|e| WeirError::Usage(e.to_string()))?;
    // An epoch this late means a group is stuck (see Shared::stuck).
    let session = layout
        .client
        .get("session.timeout.ms")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(45), Duration::from_millis);
    let stuck_after = (session * 2)
        .max(checkpoint.interval * 5)
        .min(checkpoint.timeout);
    let process = Process {
        pipeline: plan.name.clone(),
        shared: Arc::new(Shared {
            process: process_id(),
            graph: plan.graph,
            layout,
            generations: Arc::new(Generations::new(
                location.store.clone(),
                location.prefix.clone().join("generations"),
            )),
            epochs: Arc::new(Epochs::new(location.store, location.prefix.join("epochs"))),
            interval: checkpoint.interval,
            timeout: checkpoint.timeout,
            runtime,
            metrics: Arc::new(JobMetrics::default()),
            stuck: AtomicBool::new(false),
            started: AtomicU64::new(0),
            stuck_after,
        }),
    };
    refuse_an_earlier_runs_records(&process, &dir).await?;
    let metrics = process.shared.metrics.clone();
    let (control, controls) = mpsc::channel(4);
    Ok(JobHandle::external(process.run(controls), control, metrics))
}

/// Fails when the job's checkpoint store holds no generation but its
/// repartition topics hold records: an earlier run's, whose checkpoints
/// in `dir` were deleted. Their generation numbers are the new run's, so
/// they would count as its own. The topics are looked at only while the
/// store is empty, and before the store is looked at again: records a
/// generation of this run wrote mean that generation exists by then.
async fn refuse_an_earlier_runs_records(process: &Process, dir: &str) -> Result<()> {
    let shared = &process.shared;
    if shared.generations.latest().await?.is_some() {
        return Ok(());
    }
    let mut holding = Vec::new();
    for (topic, tasks) in shared.layout.repartition_topics() {
        if holds_records(&shared.layout.client, topic, tasks).await? {
            holding.push(topic);
        }
    }
    if holding.is_empty() || shared.generations.latest().await?.is_some() {
        return Ok(());
    }
    Err(WeirError::Usage(format!(
        "pipeline '{}': the repartition topics {} hold records of an earlier run, and its checkpoints in {dir} are gone; they would count as this run's. Delete the topics, or set another 'pipeline.name'",
        process.pipeline,
        holding.join(", ")
    )))
}

/// `host-pid-random`: names this process in logs and objects.
fn process_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "weir".into());
    let random: u32 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{random:08x}", std::process::id())
}

/// The checkpoint store did not answer (worth asking again), as opposed
/// to an answer that will not change (a snapshot of another job).
fn is_unanswered(error: &EngineError) -> bool {
    matches!(error, EngineError::Connector { connector, .. } if connector == "epochs" || connector == "generations")
}

/// This process's part of the job.
struct Process {
    pipeline: String,
    shared: Arc<Shared>,
}

/// Aborts a task when dropped.
struct Aborting(tokio::task::JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Process {
    /// Joins every stage's group, and watches where the job's tasks run.
    fn join_groups(&self) -> EngineResult<(Vec<Arc<StageMembership>>, Aborting)> {
        let memberships = self
            .shared
            .layout
            .stages
            .iter()
            .enumerate()
            .map(|(index, stage)| {
                StageMembership::join(
                    &self.shared.layout.client,
                    &stage_group(&self.pipeline, index),
                    &stage.topics[0],
                    &self.shared.process,
                )
                .map(Arc::new)
            })
            .collect::<EngineResult<Vec<_>>>()?;
        let views = memberships
            .iter()
            .zip(&self.shared.layout.stages)
            .enumerate()
            .map(|(index, (membership, stage))| placement::StageView {
                membership: membership.clone(),
                tasks: stage.tasks,
                input_node: self.shared.layout.node_offset(index),
            })
            .collect();
        let placement = Aborting(tokio::spawn(placement::watch(views, self.shared.clone())));
        tracing::info!(process = %self.shared.process, pipeline = %self.pipeline, stages = memberships.len(), "joined the job's groups");
        Ok((memberships, placement))
    }

    async fn run(self, mut controls: mpsc::Receiver<SourceControl>) -> EngineResult<()> {
        let (mut memberships, mut placement) = self.join_groups()?;
        let mut seen_changes = vec![0; memberships.len()];
        let mut changed_at: Option<Instant> = None;
        let mut last_look = Instant::now();
        let mut running: Option<Running> = None;
        loop {
            if self.shared.stuck.swap(false, Ordering::Relaxed) {
                // New members: the broker looks at the group again, and
                // evicts a member that died (its tasks then move).
                tracing::warn!(process = %self.shared.process, "an epoch waits {:?} past due: joining the stage groups again", self.shared.stuck_after);
                drop((memberships, placement));
                (memberships, placement) = self.join_groups()?;
                seen_changes = vec![0; memberships.len()];
            }
            let assignments: Vec<_> = memberships.iter().map(|m| m.assignment()).collect();
            let changes: Vec<u64> = assignments.iter().map(|a| a.changes).collect();
            if changes != seen_changes {
                // Stop at once: the tasks may be someone else's now.
                seen_changes = changes;
                changed_at = Some(Instant::now());
                if let Some(old) = running.take() {
                    old.stop();
                }
            }
            let assigned = generation::by_stage(
                &assignments
                    .iter()
                    .map(|a| a.partitions.clone())
                    .collect::<Vec<BTreeSet<i32>>>(),
            );
            // A store that does not answer delays the next generation (the
            // step is tried again), it does not fail the job.
            if changed_at.is_some_and(|at| at.elapsed() >= SETTLE) {
                match self.next_generation().await {
                    Ok(next) => match self.start(next, &assigned).await {
                        Ok(started) => {
                            changed_at = None;
                            running = Some(started);
                        }
                        Err(e) if is_unanswered(&e) => {
                            tracing::warn!("cannot start the new generation yet: {e}")
                        }
                        Err(e) => return Err(e),
                    },
                    Err(e) => tracing::warn!("cannot create the next generation yet: {e}"),
                }
            } else if changed_at.is_none() && last_look.elapsed() >= GENERATION_POLL {
                last_look = Instant::now();
                let current = running.as_ref().map(|r| r.generation.number);
                match self.shared.generations.latest().await {
                    Ok(Some(latest)) if Some(latest.number) > current => {
                        if let Some(old) = running.take() {
                            old.stop();
                        }
                        match self.start(latest, &assigned).await {
                            Ok(started) => running = Some(started),
                            // Looked at again at the next poll.
                            Err(e) if is_unanswered(&e) => {
                                tracing::warn!("cannot start the newest generation yet: {e}")
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("cannot list generations: {e}"),
                }
            }
            if let Some(failure) = running.as_mut().and_then(Running::failure) {
                return Err(failure);
            }
            match controls.try_recv() {
                Ok(SourceControl::Stop { .. }) | Err(mpsc::error::TryRecvError::Disconnected) => {
                    if let Some(old) = running.take() {
                        old.stop();
                    }
                    return Ok(());
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Closes the newest generation and creates the one after it.
    async fn next_generation(&self) -> EngineResult<Generation> {
        generation::roll_over(&self.shared).await
    }

    /// The tasks of `assigned` this process claims first in generation
    /// `number`: a view of the groups a moment old may still list a task
    /// that moved, and its new owner may start the same generation. The
    /// claims go to the store together, not one after another (a
    /// generation's start waits for them).
    async fn claim(
        &self,
        number: u64,
        assigned: &[BTreeSet<usize>],
    ) -> EngineResult<Vec<BTreeSet<usize>>> {
        use futures::{StreamExt, TryStreamExt};
        let mut tasks = Vec::new();
        for (stage, of_stage) in assigned.iter().enumerate() {
            tasks.extend(of_stage.iter().map(|task| (stage, *task)));
        }
        let outcomes: Vec<(usize, usize, bool)> = futures::stream::iter(tasks)
            .map(|(stage, task)| async move {
                let name = task_name(stage, task);
                let generations = &self.shared.generations;
                let mine = generations
                    .claim(number, &name, &self.shared.process)
                    .await?;
                Ok::<_, EngineError>((stage, task, mine))
            })
            .buffer_unordered(CONCURRENT_CLAIMS)
            .try_collect()
            .await?;
        let mut claimed = vec![BTreeSet::new(); assigned.len()];
        for (stage, task, mine) in outcomes {
            if mine {
                claimed[stage].insert(task);
            } else {
                tracing::warn!(process = %self.shared.process, generation = number, task = %task_name(stage, task), "the task runs on another process in this generation");
            }
        }
        Ok(claimed)
    }

    async fn start(
        &self,
        generation: Generation,
        assigned: &[BTreeSet<usize>],
    ) -> EngineResult<Running> {
        let claimed = self.claim(generation.number, assigned).await?;
        let assigned = claimed.as_slice();
        let names: Vec<String> = assigned
            .iter()
            .enumerate()
            .flat_map(|(stage, tasks)| tasks.iter().map(move |task| task_name(stage, *task)))
            .collect();
        // Only what the placement view shows: written off the start's
        // path, so a store that does not take it holds nothing up.
        let (generations, process) = (self.shared.generations.clone(), self.shared.process.clone());
        let number = generation.number;
        tokio::spawn(async move {
            if let Err(e) = generations.record_tasks(number, &process, &names).await {
                tracing::warn!("cannot record this process's tasks: {e}");
            }
        });
        self.shared.started.store(number, Ordering::Relaxed);
        tracing::info!(
            process = %self.shared.process,
            generation = generation.number,
            base = ?generation.base,
            tasks = %generation::describe(assigned),
            "starting generation"
        );
        Running::start(&self.shared, generation, assigned).await
    }
}
