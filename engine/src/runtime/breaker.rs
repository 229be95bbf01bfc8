//! `'sink.spill.path'`: a circuit breaker around a sink, so a sink that
//! slows down or fails does not stall the job behind it.
//!
//! The sink (the *primary*) runs in a task of its own behind a short
//! bounded queue. **Closed**: rows go to it. When `trip-count` writes in a
//! row wait longer than `latency-threshold`, or the sink fails, the breaker
//! **opens**: the primary instance is abandoned (what it took since its
//! last prepare was never prepared, so its own two-phase commit drops it),
//! and those rows and every later one go to the spill store instead,
//! committed with the checkpoints. While open, a fresh primary is probed
//! now and then: created and restored from its last prepared state (which
//! commits what it prepared). Once that succeeds the breaker is
//! **draining**: the committed spill files go to the primary, oldest
//! first, while new rows still spill. When no committed file is left, the
//! rows of the spill's uncommitted epochs (kept in memory, one or two
//! checkpoints' worth) go to the primary too and it takes over: closed.
//!
//! Nothing is lost or doubled: a spill file is deleted only after the
//! primary committed its rows (the checkpoint state lists it until then),
//! and a spill epoch the primary took from memory is listed the same way,
//! so it is deleted instead of drained. Order is kept: the backlog goes
//! first, and new rows wait behind it in the primary's queue.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{EngineError, Result};
use crate::message::{CheckpointId, Millis};
use crate::metrics::{BreakerState, SubtaskMetrics};
use crate::operator::SubtaskInfo;
use crate::source::{Sink, SinkFactory, Visibility, FINAL_CHECKPOINT};
use crate::spill::{SpillFile, SpillSpec};
use crate::state::{StateSnapshot, StateTable};

/// Commands waiting for the primary before a write blocks.
const QUEUE: usize = 16;

/// Whether the breaker was closed, at which checkpoint.
static MODE: std::sync::LazyLock<StateTable> = std::sync::LazyLock::new(|| {
    StateTable::new(
        "breaker",
        [("closed", DataType::Int64), ("checkpoint", DataType::Int64)],
    )
});

/// Spill files, or whole spill epochs (`name` null), whose rows the
/// primary prepared at `checkpoint`: deleted once it commits.
static DONE: std::sync::LazyLock<StateTable> = std::sync::LazyLock::new(|| {
    StateTable::new(
        "breaker_done",
        [
            ("checkpoint", DataType::Int64),
            ("epoch", DataType::Int64),
            ("name", DataType::Utf8),
        ],
    )
});

const PRIMARY: &str = "primary/";
const SPILL: &str = "spill/";

/// What the primary's task runs, in order.
enum Command {
    Write(RecordBatch),
    Watermark(Millis),
    Flush,
    /// Writes a committed spill file's rows.
    Drain(SpillFile),
    Restore(StateSnapshot, oneshot::Sender<Result<()>>),
    Prepare(CheckpointId, oneshot::Sender<Result<StateSnapshot>>),
    Commit(CheckpointId, oneshot::Sender<Result<()>>),
    Finish(oneshot::Sender<Result<()>>),
}

/// What the primary's task reports without being asked.
#[derive(Default)]
struct Progress {
    /// Writes in a row slower than the threshold.
    slow: AtomicU32,
    /// A drain is queued or running.
    draining: AtomicBool,
    /// Spill files written to the primary since its last prepare.
    drained: Mutex<Vec<SpillFile>>,
}

/// The primary, in its task.
struct Worker {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Result<()>>,
    progress: Arc<Progress>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Worker {
    fn spawn(sink: Box<dyn Sink>, spec: &SpillSpec, metrics: Arc<SubtaskMetrics>) -> Worker {
        let (commands, queue) = mpsc::channel(QUEUE);
        let progress = Arc::new(Progress::default());
        let task = tokio::spawn(work(sink, queue, spec.clone(), progress.clone(), metrics));
        Worker {
            commands,
            task,
            progress,
        }
    }

    /// Sends `make`'s command and waits for its answer, up to `limit`;
    /// `Err` says why the primary did not answer in time.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
        limit: Duration,
    ) -> std::result::Result<T, String> {
        let (reply, answer) = oneshot::channel();
        let asked = async {
            self.commands
                .send(make(reply))
                .await
                .map_err(|_| "the sink failed".to_string())?;
            match answer.await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(format!("the sink failed: {e}")),
                Err(_) => Err("the sink failed".to_string()),
            }
        };
        match tokio::time::timeout(limit, asked).await {
            Ok(result) => result,
            Err(_) => Err(format!("the sink did not answer within {limit:?}")),
        }
    }
}

/// The primary's task: runs commands, times writes.
async fn work(
    mut sink: Box<dyn Sink>,
    mut queue: mpsc::Receiver<Command>,
    spec: SpillSpec,
    progress: Arc<Progress>,
    metrics: Arc<SubtaskMetrics>,
) -> Result<()> {
    let threshold = spec.latency_threshold;
    while let Some(command) = queue.recv().await {
        match command {
            Command::Write(batch) => timed_write(&mut sink, batch, threshold, &progress).await?,
            Command::Watermark(at) => sink.on_watermark(at),
            Command::Flush => sink.flush().await?,
            Command::Drain(file) => {
                for batch in spec.store.read(&file).await? {
                    let rows = batch.num_rows() as u64;
                    timed_write(&mut sink, batch, threshold, &progress).await?;
                    metrics.add_drained_rows(rows);
                }
                progress.drained.lock().push(file);
                progress.draining.store(false, Ordering::Relaxed);
            }
            Command::Restore(state, reply) => {
                let _ = reply.send(sink.restore(state).await);
            }
            Command::Prepare(checkpoint, reply) => {
                let _ = reply.send(sink.prepare_commit(checkpoint).await);
            }
            Command::Commit(checkpoint, reply) => {
                let _ = reply.send(sink.commit(checkpoint).await);
            }
            Command::Finish(reply) => {
                let _ = reply.send(sink.finish().await);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Writes, counting writes slower than `threshold` in a row.
async fn timed_write(
    sink: &mut Box<dyn Sink>,
    batch: RecordBatch,
    threshold: Duration,
    progress: &Progress,
) -> Result<()> {
    let started = Instant::now();
    let result = sink.write(batch).await;
    if started.elapsed() > threshold {
        progress.slow.fetch_add(1, Ordering::Relaxed);
    } else {
        progress.slow.store(0, Ordering::Relaxed);
    }
    result
}

enum Mode {
    Closed(Worker),
    Open {
        probe: Option<JoinHandle<Result<Box<dyn Sink>>>>,
        next_probe: Instant,
    },
    Draining {
        worker: Worker,
        backlog: std::collections::VecDeque<SpillFile>,
    },
}

/// What the primary prepared at a checkpoint that holds spilled rows.
#[derive(Debug, Default)]
struct Done {
    files: Vec<SpillFile>,
    /// Spill epochs handed over from memory: all their files.
    epochs: Vec<CheckpointId>,
}

/// The runtime's side of a sink with a spill path.
pub(crate) struct BreakerSink {
    factory: SinkFactory,
    info: SubtaskInfo,
    name: String,
    spec: SpillSpec,
    spill: Box<dyn Sink>,
    metrics: Arc<SubtaskMetrics>,
    mode: Mode,
    flush_interval: Option<Duration>,
    visibility: Visibility,
    /// The primary's last prepared state: a fresh instance restores it.
    primary_state: StateSnapshot,
    /// Rows given to the primary since its last prepare; the first
    /// `tail_in_spill` are also in the spill's uncommitted epochs.
    tail: Vec<RecordBatch>,
    tail_in_spill: usize,
    /// Rows of the spill's epochs not committed yet, by epoch (the open
    /// one is `last_prepared + 1`).
    spill_pending: BTreeMap<CheckpointId, Vec<RecordBatch>>,
    /// Spill epochs the primary took from memory since its last prepare.
    covering: Vec<CheckpointId>,
    /// By the checkpoint that prepared them in the primary.
    done: BTreeMap<CheckpointId, Done>,
    last_prepared: CheckpointId,
    last_committed: CheckpointId,
    /// Writes in a row that waited longer than the threshold for room.
    slow: u32,
}

impl BreakerSink {
    pub(crate) fn new(
        factory: SinkFactory,
        info: SubtaskInfo,
        name: &str,
        spec: SpillSpec,
        metrics: Arc<SubtaskMetrics>,
    ) -> Result<Self> {
        let primary = factory(info)?;
        let spill = spec.store.writer(info)?;
        let flush_interval = primary.flush_interval();
        let visibility = primary.visibility();
        metrics.set_breaker(BreakerState::Closed);
        let worker = Worker::spawn(primary, &spec, metrics.clone());
        Ok(BreakerSink {
            factory,
            info,
            name: name.to_string(),
            spec,
            spill,
            metrics,
            mode: Mode::Closed(worker),
            flush_interval,
            visibility,
            primary_state: StateSnapshot::default(),
            tail: Vec::new(),
            tail_in_spill: 0,
            spill_pending: BTreeMap::new(),
            covering: Vec::new(),
            done: BTreeMap::new(),
            last_prepared: 0,
            last_committed: 0,
            slow: 0,
        })
    }

    /// How long the primary may take to answer, and how often it is probed.
    fn limit(&self) -> Duration {
        (self.spec.latency_threshold * self.spec.trip_count.max(1)).max(Duration::from_secs(1))
    }

    /// How long the primary may take to prepare or commit `checkpoint`:
    /// at the end of input it is waited for.
    fn limit_for(&self, checkpoint: CheckpointId) -> Duration {
        match checkpoint {
            FINAL_CHECKPOINT => Duration::MAX,
            _ => self.limit(),
        }
    }

    fn spill_epoch(&self) -> CheckpointId {
        self.last_prepared.saturating_add(1)
    }

    async fn spill_write(&mut self, batch: RecordBatch) -> Result<()> {
        self.metrics.add_spilled_rows(batch.num_rows() as u64);
        self.spill.write(batch.clone()).await?;
        let epoch = self.spill_epoch();
        self.spill_pending.entry(epoch).or_default().push(batch);
        Ok(())
    }

    /// Opens the breaker: the primary is dropped, and what it took since
    /// its last prepare goes to the spill.
    async fn trip(&mut self, reason: &str) -> Result<()> {
        let next_probe = Instant::now() + self.limit();
        match std::mem::replace(
            &mut self.mode,
            Mode::Open {
                probe: None,
                next_probe,
            },
        ) {
            Mode::Open { probe, next_probe } => {
                self.mode = Mode::Open { probe, next_probe };
                return Ok(());
            }
            Mode::Closed(worker) | Mode::Draining { worker, .. } => drop(worker),
        }
        tracing::warn!(
            sink = %self.name,
            subtask = self.info.index,
            "circuit breaker open: {reason}; rows go to the spill store {}",
            self.spec.store.describe()
        );
        self.metrics.set_breaker(BreakerState::Open);
        let tail = std::mem::take(&mut self.tail);
        for batch in tail.into_iter().skip(self.tail_in_spill) {
            self.spill_write(batch).await?;
        }
        self.tail_in_spill = 0;
        self.covering.clear();
        self.slow = 0;
        Ok(())
    }

    /// Gives a batch to the primary; trips when it waits too long. A
    /// batch `in_spill` is in the spill's open epochs already (a trip does
    /// not spill it again).
    async fn give(&mut self, batch: RecordBatch, in_spill: bool) -> Result<()> {
        let threshold = self.spec.latency_threshold;
        let trip_count = self.spec.trip_count.max(1);
        self.tail.push(batch.clone());
        if in_spill {
            self.tail_in_spill += 1;
        }
        let mut command = Command::Write(batch);
        loop {
            let Mode::Closed(worker) = &self.mode else {
                return Err(EngineError::Task(
                    "circuit breaker: a write while open".into(),
                ));
            };
            let reason = if worker.progress.slow.load(Ordering::Relaxed) >= trip_count {
                format!("{trip_count} writes in a row slower than {threshold:?}")
            } else {
                match worker.commands.send_timeout(command, threshold).await {
                    Ok(()) => {
                        self.slow = 0;
                        return Ok(());
                    }
                    Err(mpsc::error::SendTimeoutError::Timeout(again)) => {
                        self.slow += 1;
                        command = again;
                        if self.slow < trip_count {
                            continue;
                        }
                        format!("the sink took no rows for {trip_count} times {threshold:?}")
                    }
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => self.worker_failure().await,
                }
            };
            return self.trip(&reason).await;
        }
    }

    /// Why the primary's task ended.
    async fn worker_failure(&mut self) -> String {
        let worker = match &mut self.mode {
            Mode::Closed(worker) | Mode::Draining { worker, .. } => worker,
            Mode::Open { .. } => return "the sink failed".into(),
        };
        match (&mut worker.task).await {
            Ok(Err(e)) => format!("the sink failed: {e}"),
            _ => "the sink stopped".into(),
        }
    }

    /// Moves the breaker along: probes while open, queues the next spill
    /// file while draining, and closes once the backlog is gone.
    async fn advance(&mut self) -> Result<()> {
        let limit = self.limit();
        match &mut self.mode {
            Mode::Closed(_) => Ok(()),
            Mode::Open { probe, next_probe } => {
                match probe {
                    Some(running) if running.is_finished() => {
                        let outcome = running.await;
                        *probe = None;
                        *next_probe = Instant::now() + limit;
                        match outcome {
                            Ok(Ok(primary)) => return self.recovered(primary).await,
                            Ok(Err(e)) => tracing::debug!(sink = %self.name, "probe failed: {e}"),
                            Err(e) => tracing::debug!(sink = %self.name, "probe ended: {e}"),
                        }
                    }
                    Some(_) => {}
                    None if Instant::now() >= *next_probe => {
                        let (factory, info) = (self.factory.clone(), self.info);
                        let state = self.primary_state.clone();
                        *probe = Some(tokio::spawn(async move {
                            let restored = async {
                                let mut primary = factory(info)?;
                                primary.restore(state).await?;
                                Ok(primary)
                            };
                            tokio::time::timeout(limit, restored)
                                .await
                                .map_err(|_| EngineError::Task("the sink did not answer".into()))?
                        }));
                    }
                    None => {}
                }
                Ok(())
            }
            Mode::Draining { worker, backlog } => {
                if worker.progress.draining.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if backlog.is_empty() {
                    let listed = self.backlog().await?;
                    if listed.is_empty() {
                        return self.close().await;
                    }
                    if let Mode::Draining { backlog, .. } = &mut self.mode {
                        backlog.extend(listed);
                    }
                }
                let Mode::Draining { worker, backlog } = &mut self.mode else {
                    return Ok(());
                };
                let Some(file) = backlog.pop_front() else {
                    return Ok(());
                };
                worker.progress.draining.store(true, Ordering::Relaxed);
                if worker.commands.send(Command::Drain(file)).await.is_err() {
                    let reason = self.worker_failure().await;
                    return self.trip(&reason).await;
                }
                Ok(())
            }
        }
    }

    /// A probe restored a fresh primary: what the old one prepared is
    /// committed, so the spill files it took can go; then drain.
    async fn recovered(&mut self, primary: Box<dyn Sink>) -> Result<()> {
        tracing::info!(sink = %self.name, subtask = self.info.index, "the sink answers again: draining the spilled rows back to it");
        self.delete_done(Some(self.last_prepared.min(self.last_committed)))
            .await?;
        let worker = Worker::spawn(primary, &self.spec, self.metrics.clone());
        self.mode = Mode::Draining {
            worker,
            backlog: Default::default(),
        };
        self.metrics.set_breaker(BreakerState::Draining);
        Ok(())
    }

    /// Committed spill files not yet given to the primary, oldest first.
    async fn backlog(&mut self) -> Result<Vec<SpillFile>> {
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut epochs: BTreeSet<CheckpointId> = self.covering.iter().copied().collect();
        for done in self.done.values() {
            taken.extend(done.files.iter().map(|f| f.name.clone()));
            epochs.extend(done.epochs.iter().copied());
        }
        if let Mode::Draining { worker, .. } = &self.mode {
            taken.extend(
                worker
                    .progress
                    .drained
                    .lock()
                    .iter()
                    .map(|f| f.name.clone()),
            );
        }
        let store = self.spec.store.clone();
        let files = store.files(self.info.index).await?;
        Ok(files
            .into_iter()
            .filter(|f| !taken.contains(&f.name) && !epochs.contains(&f.epoch))
            .collect())
    }

    /// The backlog is drained: the spill's uncommitted rows go to the
    /// primary from memory, and it takes the new rows again.
    async fn close(&mut self) -> Result<()> {
        let placeholder = Mode::Open {
            probe: None,
            next_probe: Instant::now(),
        };
        let worker = match std::mem::replace(&mut self.mode, placeholder) {
            Mode::Draining { worker, .. } | Mode::Closed(worker) => worker,
            open => {
                self.mode = open;
                return Ok(());
            }
        };
        self.mode = Mode::Closed(worker);
        self.metrics.set_breaker(BreakerState::Closed);
        tracing::info!(sink = %self.name, subtask = self.info.index, "circuit breaker closed: the spilled rows are back in the sink");
        // Kept until the spill commits them: after a trip they are files
        // to drain again.
        let pending: Vec<RecordBatch> = self.spill_pending.values().flatten().cloned().collect();
        self.covering = self.spill_pending.keys().copied().collect();
        self.tail.clear();
        self.tail_in_spill = 0;
        for batch in pending {
            self.give(batch, true).await?;
            if !matches!(self.mode, Mode::Closed(_)) {
                break;
            }
        }
        Ok(())
    }

    /// Deletes the spill files the primary committed, up to `checkpoint`.
    async fn delete_done(&mut self, checkpoint: Option<CheckpointId>) -> Result<()> {
        let Some(checkpoint) = checkpoint else {
            return Ok(());
        };
        let due: Vec<CheckpointId> = self.done.range(..=checkpoint).map(|(c, _)| *c).collect();
        if due.is_empty() {
            return Ok(());
        }
        let mut listed: Option<Vec<SpillFile>> = None;
        for c in due {
            let Some(done) = self.done.remove(&c) else {
                continue;
            };
            for file in &done.files {
                self.spec.store.delete(file).await?;
            }
            if !done.epochs.is_empty() {
                if listed.is_none() {
                    listed = Some(self.spec.store.files(self.info.index).await?);
                }
                for file in listed.iter().flatten() {
                    if done.epochs.contains(&file.epoch) {
                        self.spec.store.delete(file).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The breaker's checkpoint state: its mode, the primary's and the
    /// spill's states, and what waits for deletion.
    fn state(&self, spill: StateSnapshot, checkpoint: CheckpointId) -> Result<StateSnapshot> {
        let closed = i64::from(matches!(self.mode, Mode::Closed(_)));
        let mut tables = vec![MODE.write(vec![
            Arc::new(Int64Array::from(vec![closed])),
            Arc::new(Int64Array::from(vec![checkpoint as i64])),
        ])?];
        let (mut checkpoints, mut epochs, mut names) = (Vec::new(), Vec::new(), Vec::new());
        for (checkpoint, done) in &self.done {
            for file in &done.files {
                checkpoints.push(*checkpoint as i64);
                epochs.push(file.epoch as i64);
                names.push(Some(file.name.clone()));
            }
            for epoch in &done.epochs {
                checkpoints.push(*checkpoint as i64);
                epochs.push(*epoch as i64);
                names.push(None);
            }
        }
        tables.push(DONE.write(vec![
            Arc::new(Int64Array::from(checkpoints)),
            Arc::new(Int64Array::from(epochs)),
            Arc::new(StringArray::from(names)),
        ])?);
        let prefixed = |prefix: &str, state: &StateSnapshot| {
            state
                .tables
                .iter()
                .map(|(name, batch)| (format!("{prefix}{name}"), batch.clone()))
                .collect::<Vec<_>>()
        };
        tables.extend(prefixed(PRIMARY, &self.primary_state));
        tables.extend(prefixed(SPILL, &spill));
        Ok(StateSnapshot { tables })
    }
}

impl Drop for BreakerSink {
    /// A probe still running belongs to this sink: it stops with it.
    fn drop(&mut self) {
        if let Mode::Open {
            probe: Some(probe), ..
        } = &self.mode
        {
            probe.abort();
        }
    }
}

/// The tables of `state` under `prefix`, without it.
fn unprefixed(state: &StateSnapshot, prefix: &str) -> StateSnapshot {
    StateSnapshot {
        tables: state
            .tables
            .iter()
            .filter_map(|(name, batch)| {
                name.strip_prefix(prefix)
                    .map(|n| (n.to_string(), batch.clone()))
            })
            .collect(),
    }
}

#[async_trait]
impl Sink for BreakerSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.advance().await?;
        match self.mode {
            Mode::Closed(_) => self.give(batch, false).await,
            _ => self.spill_write(batch).await,
        }
    }

    fn on_watermark(&mut self, watermark: Millis) {
        if let Mode::Closed(worker) = &self.mode {
            let _ = worker.commands.try_send(Command::Watermark(watermark));
        }
    }

    fn flush_interval(&self) -> Option<Duration> {
        self.flush_interval
    }

    async fn flush(&mut self) -> Result<()> {
        if let Mode::Closed(worker) = &self.mode {
            let _ = worker.commands.try_send(Command::Flush);
        }
        self.advance().await
    }

    fn visibility(&self) -> Visibility {
        self.visibility
    }

    async fn prepare_commit(&mut self, checkpoint: CheckpointId) -> Result<StateSnapshot> {
        self.advance().await?;
        let end = checkpoint == FINAL_CHECKPOINT;
        if end {
            // The end of input: the sink gets every row before the job ends.
            let mut waited = Instant::now();
            while !matches!(self.mode, Mode::Closed(_)) {
                if waited.elapsed() >= Duration::from_secs(10) {
                    waited = Instant::now();
                    tracing::warn!(sink = %self.name, "waiting for the sink to take the spilled rows before the job ends");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.advance().await?;
            }
        }
        let limit = self.limit_for(checkpoint);
        let prepared = match &self.mode {
            Mode::Closed(worker) | Mode::Draining { worker, .. } => {
                let answer = worker
                    .ask(|reply| Command::Prepare(checkpoint, reply), limit)
                    .await;
                let files = std::mem::take(&mut *worker.progress.drained.lock());
                Some(answer.map(|state| (state, files)))
            }
            Mode::Open { .. } => None,
        };
        match prepared {
            Some(Ok((state, files))) => {
                self.primary_state = state;
                let epochs = std::mem::take(&mut self.covering);
                // The spilled rows it took from memory are drained now.
                let covered = self.tail[..self.tail_in_spill].iter();
                self.metrics
                    .add_drained_rows(covered.map(|b| b.num_rows() as u64).sum());
                if !files.is_empty() || !epochs.is_empty() {
                    let done = self.done.entry(checkpoint).or_default();
                    done.files.extend(files);
                    done.epochs.extend(epochs);
                }
                self.tail.clear();
                self.tail_in_spill = 0;
            }
            Some(Err(reason)) => self.trip(&reason).await?,
            None => {}
        }
        let spill = self.spill.prepare_commit(checkpoint).await?;
        if !end {
            self.last_prepared = checkpoint;
        }
        self.state(spill, checkpoint)
    }

    async fn commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
        self.spill.commit(checkpoint).await?;
        self.last_committed = self.last_committed.max(checkpoint);
        let limit = self.limit_for(checkpoint);
        if let Mode::Closed(worker) | Mode::Draining { worker, .. } = &self.mode {
            if let Err(reason) = worker
                .ask(|reply| Command::Commit(checkpoint, reply), limit)
                .await
            {
                // Committed later by the next primary's restore.
                self.trip(&reason).await?;
            }
        }
        // The spill's epochs up to here are files now.
        self.spill_pending.retain(|epoch, _| *epoch > checkpoint);
        if !matches!(self.mode, Mode::Open { .. }) {
            self.delete_done(Some(checkpoint)).await?;
        }
        self.advance().await
    }

    async fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        self.spill.restore(unprefixed(&state, SPILL)).await?;
        self.primary_state = unprefixed(&state, PRIMARY);
        self.done.clear();
        if let Some(done) = DONE.read(&state)? {
            let checkpoints = done.column::<Int64Array>("checkpoint")?;
            let epochs = done.column::<Int64Array>("epoch")?;
            let names = done.column::<StringArray>("name")?;
            for i in 0..done.num_rows() {
                let entry = self
                    .done
                    .entry(checkpoints.value(i) as CheckpointId)
                    .or_default();
                let epoch = epochs.value(i) as CheckpointId;
                match names.is_null(i) {
                    true => entry.epochs.push(epoch),
                    false => entry.files.push(SpillFile {
                        epoch,
                        name: names.value(i).to_string(),
                    }),
                }
            }
        }
        let (closed, checkpoint) = match MODE.read(&state)? {
            Some(mode) => (
                mode.first::<Int64Type>("closed")? == Some(1),
                mode.first::<Int64Type>("checkpoint")?.unwrap_or(0) as CheckpointId,
            ),
            None => (true, 0),
        };
        // The checkpoint restored from is complete: committed.
        self.last_prepared = checkpoint;
        self.last_committed = checkpoint;
        let limit = self.limit();
        let restored = match (&self.mode, closed) {
            (Mode::Closed(worker), true) => {
                let state = self.primary_state.clone();
                worker
                    .ask(|reply| Command::Restore(state, reply), limit)
                    .await
            }
            _ => Err("the breaker was open at the checkpoint".to_string()),
        };
        match restored {
            Ok(()) => {
                let last = self.done.keys().last().copied();
                self.delete_done(last).await
            }
            Err(reason) => self.trip(&reason).await,
        }
    }

    async fn finish(&mut self) -> Result<()> {
        self.spill.finish().await?;
        match &self.mode {
            Mode::Closed(worker) => worker
                .ask(Command::Finish, Duration::MAX)
                .await
                .map_err(EngineError::Task),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! A sink and a spill store in memory: the breaker's rules, without
    //! servers (`repl/tests/s3.rs` runs it against SeaweedFS).

    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicU64;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    static PENDING: std::sync::LazyLock<StateTable> = std::sync::LazyLock::new(|| {
        StateTable::new(
            "memory",
            [
                ("writer", DataType::Int64),
                ("checkpoint", DataType::Int64),
                ("name", DataType::Utf8),
                ("value", DataType::Int64),
            ],
        )
    });

    fn batch(values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    fn values(batch: &RecordBatch) -> Vec<i64> {
        let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
        column.unwrap().values().to_vec()
    }

    /// Rows as a pending table: (writer, checkpoint, file, value).
    fn table(rows: &[(u64, CheckpointId, String, i64)]) -> (String, RecordBatch) {
        PENDING
            .write(vec![
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.0 as i64),
                )),
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.1 as i64),
                )),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.2.clone()),
                )),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ])
            .unwrap()
    }

    fn rows(state: &StateSnapshot) -> Vec<(u64, CheckpointId, String, i64)> {
        let Some(t) = PENDING.read(state).unwrap() else {
            return Vec::new();
        };
        let writers = t.column::<Int64Array>("writer").unwrap();
        let checkpoints = t.column::<Int64Array>("checkpoint").unwrap();
        let names = t.column::<StringArray>("name").unwrap();
        let values = t.column::<Int64Array>("value").unwrap();
        (0..t.num_rows())
            .map(|i| {
                (
                    writers.value(i) as u64,
                    checkpoints.value(i) as CheckpointId,
                    names.value(i).to_string(),
                    values.value(i),
                )
            })
            .collect()
    }

    /// What a reader of the sink sees, and a switch that makes it hang.
    #[derive(Clone, Default)]
    struct Remote {
        committed: Arc<Mutex<Vec<i64>>>,
        published: Arc<Mutex<BTreeSet<(u64, CheckpointId)>>>,
        stalled: Arc<AtomicBool>,
        writers: Arc<AtomicU64>,
    }

    impl Remote {
        async fn answer(&self) {
            while self.stalled.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        fn publish(&self, writer: u64, checkpoint: CheckpointId, values: &[i64]) {
            if self.published.lock().insert((writer, checkpoint)) {
                self.committed.lock().extend_from_slice(values);
            }
        }
    }

    /// An exactly-once sink: rows are visible once their checkpoint commits.
    struct MemorySink {
        remote: Remote,
        writer: u64,
        open: Vec<i64>,
        pending: BTreeMap<CheckpointId, Vec<i64>>,
    }

    #[async_trait]
    impl Sink for MemorySink {
        async fn write(&mut self, batch: RecordBatch) -> Result<()> {
            self.remote.answer().await;
            self.open.extend(values(&batch));
            Ok(())
        }

        async fn prepare_commit(&mut self, checkpoint: CheckpointId) -> Result<StateSnapshot> {
            self.remote.answer().await;
            let open = std::mem::take(&mut self.open);
            self.pending.entry(checkpoint).or_default().extend(open);
            let rows: Vec<_> = self
                .pending
                .iter()
                .flat_map(|(c, vs)| vs.iter().map(|v| (self.writer, *c, String::new(), *v)))
                .collect();
            Ok(StateSnapshot {
                tables: vec![table(&rows)],
            })
        }

        async fn commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
            self.remote.answer().await;
            let due: Vec<CheckpointId> =
                self.pending.range(..=checkpoint).map(|(c, _)| *c).collect();
            for c in due {
                let vs = self.pending.remove(&c).unwrap_or_default();
                self.remote.publish(self.writer, c, &vs);
            }
            Ok(())
        }

        async fn restore(&mut self, state: StateSnapshot) -> Result<()> {
            self.remote.answer().await;
            let mut grouped: BTreeMap<(u64, CheckpointId), Vec<i64>> = BTreeMap::new();
            for (writer, checkpoint, _, value) in rows(&state) {
                grouped.entry((writer, checkpoint)).or_default().push(value);
            }
            for ((writer, checkpoint), vs) in grouped {
                self.remote.publish(writer, checkpoint, &vs);
            }
            Ok(())
        }
    }

    /// Published spill files: name to (epoch, values).
    type Files = BTreeMap<String, (CheckpointId, Vec<i64>)>;

    /// Spill files in memory, published with checkpoints like part files.
    #[derive(Clone, Default)]
    struct MemorySpill {
        files: Arc<Mutex<Files>>,
        published: Arc<Mutex<BTreeSet<String>>>,
    }

    impl MemorySpill {
        fn publish(&self, name: &str, epoch: CheckpointId, values: Vec<i64>) {
            if self.published.lock().insert(name.to_string()) {
                self.files.lock().insert(name.to_string(), (epoch, values));
            }
        }
    }

    struct SpillWriter {
        spill: MemorySpill,
        epoch: CheckpointId,
        open: Vec<i64>,
        sequence: usize,
        pending: Vec<(CheckpointId, String, Vec<i64>)>,
    }

    #[async_trait]
    impl Sink for SpillWriter {
        async fn write(&mut self, batch: RecordBatch) -> Result<()> {
            self.open.extend(values(&batch));
            Ok(())
        }

        async fn prepare_commit(&mut self, checkpoint: CheckpointId) -> Result<StateSnapshot> {
            if !self.open.is_empty() {
                let name = format!("{:010}-{:04}", self.epoch, self.sequence);
                self.sequence += 1;
                let open = std::mem::take(&mut self.open);
                self.pending.push((checkpoint, name, open));
            }
            if checkpoint != FINAL_CHECKPOINT {
                self.epoch = checkpoint + 1;
                self.sequence = 0;
            }
            let rows: Vec<_> = self
                .pending
                .iter()
                .flat_map(|(_, name, vs)| vs.iter().map(|v| (0, 0, name.clone(), *v)))
                .collect();
            let epoch = (self.epoch, 0, "epoch".to_string(), 0);
            Ok(StateSnapshot {
                tables: vec![table(&[rows, vec![epoch]].concat())],
            })
        }

        async fn commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
            let (due, rest) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|(c, _, _)| *c <= checkpoint);
            self.pending = rest;
            for (_, name, vs) in due {
                let epoch = name[..10].parse().unwrap();
                self.spill.publish(&name, epoch, vs);
            }
            Ok(())
        }

        async fn restore(&mut self, state: StateSnapshot) -> Result<()> {
            let mut grouped: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for (writer, _, name, value) in rows(&state) {
                if name == "epoch" {
                    self.epoch = writer;
                } else {
                    grouped.entry(name).or_default().push(value);
                }
            }
            for (name, vs) in grouped {
                let epoch = name[..10].parse().unwrap();
                self.spill.publish(&name, epoch, vs);
            }
            Ok(())
        }
    }

    #[async_trait]
    impl crate::spill::SpillStore for MemorySpill {
        fn writer(&self, _subtask: SubtaskInfo) -> Result<Box<dyn Sink>> {
            Ok(Box::new(SpillWriter {
                spill: self.clone(),
                epoch: 1,
                open: Vec::new(),
                sequence: 0,
                pending: Vec::new(),
            }))
        }

        async fn files(&self, _subtask: usize) -> Result<Vec<SpillFile>> {
            let files = self.files.lock();
            let mut listed: Vec<SpillFile> = files
                .iter()
                .map(|(name, (epoch, _))| SpillFile {
                    epoch: *epoch,
                    name: name.clone(),
                })
                .collect();
            listed.sort();
            Ok(listed)
        }

        async fn read(&self, file: &SpillFile) -> Result<Vec<RecordBatch>> {
            let files = self.files.lock();
            Ok(files
                .get(&file.name)
                .map(|(_, vs)| batch(vs.clone()))
                .into_iter()
                .collect())
        }

        async fn delete(&self, file: &SpillFile) -> Result<()> {
            self.files.lock().remove(&file.name);
            Ok(())
        }

        fn describe(&self) -> String {
            "memory".into()
        }
    }

    struct Run {
        remote: Remote,
        spill: MemorySpill,
        metrics: Arc<SubtaskMetrics>,
        next: i64,
        checkpoint: CheckpointId,
    }

    impl Run {
        fn new() -> Run {
            Run {
                remote: Remote::default(),
                spill: MemorySpill::default(),
                metrics: Arc::new(SubtaskMetrics::new(0, "sink: t", 0)),
                next: 0,
                checkpoint: 0,
            }
        }

        fn breaker(&self) -> BreakerSink {
            let remote = self.remote.clone();
            let factory: SinkFactory = Arc::new(move |_| {
                let writer = remote.writers.fetch_add(1, Ordering::Relaxed);
                Ok(Box::new(MemorySink {
                    remote: remote.clone(),
                    writer,
                    open: Vec::new(),
                    pending: BTreeMap::new(),
                }) as Box<dyn Sink>)
            });
            let spec = SpillSpec {
                store: Arc::new(self.spill.clone()),
                latency_threshold: Duration::from_millis(20),
                trip_count: 3,
            };
            let info = SubtaskInfo {
                index: 0,
                parallelism: 1,
            };
            BreakerSink::new(factory, info, "sink: t", spec, self.metrics.clone()).unwrap()
        }

        async fn write(&mut self, sink: &mut BreakerSink, batches: usize) {
            for _ in 0..batches {
                let values: Vec<i64> = (self.next..self.next + 10).collect();
                self.next += 10;
                sink.write(batch(values)).await.unwrap();
            }
        }

        async fn checkpoint(&mut self, sink: &mut BreakerSink) -> StateSnapshot {
            self.checkpoint += 1;
            let state = sink.prepare_commit(self.checkpoint).await.unwrap();
            sink.commit(self.checkpoint).await.unwrap();
            state
        }

        fn state(&self) -> Option<BreakerState> {
            self.metrics.snapshot().breaker
        }

        /// Writes and checkpoints until the breaker closed again.
        async fn until_closed(&mut self, sink: &mut BreakerSink) {
            let started = Instant::now();
            while self.state() != Some(BreakerState::Closed) {
                assert!(started.elapsed() < Duration::from_secs(20), "never closed");
                self.write(sink, 2).await;
                self.checkpoint(sink).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// Ends the input; `restarted`: the metrics counted rows that were
        /// spilled again after the restart.
        async fn end(&mut self, mut sink: BreakerSink, restarted: bool) {
            self.write(&mut sink, 3).await;
            sink.prepare_commit(FINAL_CHECKPOINT).await.unwrap();
            sink.commit(FINAL_CHECKPOINT).await.unwrap();
            sink.finish().await.unwrap();
            let committed = self.remote.committed.lock().clone();
            let expected: Vec<i64> = (0..self.next).collect();
            let first_wrong = committed.iter().zip(&expected).position(|(a, b)| a != b);
            assert!(
                committed == expected,
                "in order, each once: {} rows of {}, first wrong at {first_wrong:?}",
                committed.len(),
                expected.len()
            );
            assert!(self.spill.files.lock().is_empty(), "spill files left");
            let m = self.metrics.snapshot();
            assert!(m.spilled_rows > 0);
            if !restarted {
                assert_eq!(m.spilled_rows, m.drained_rows);
            }
        }
    }

    /// The sink hangs mid-run: the breaker opens within trip-count times
    /// the threshold, rows spill, and once the sink answers they go back
    /// to it in order; every row arrives once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_sink_spills_and_gets_every_row_back_in_order() {
        let mut run = Run::new();
        let mut sink = run.breaker();
        run.write(&mut sink, 5).await;
        run.checkpoint(&mut sink).await;
        run.remote.stalled.store(true, Ordering::Relaxed);
        let started = Instant::now();
        run.write(&mut sink, 40).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "writes kept their speed"
        );
        assert_eq!(run.state(), Some(BreakerState::Open));
        run.checkpoint(&mut sink).await;
        run.write(&mut sink, 10).await;
        run.checkpoint(&mut sink).await;
        assert!(!run.spill.files.lock().is_empty());
        run.remote.stalled.store(false, Ordering::Relaxed);
        run.until_closed(&mut sink).await;
        run.write(&mut sink, 5).await;
        run.checkpoint(&mut sink).await;
        run.end(sink, false).await;
    }

    /// A restart from a checkpoint taken while the breaker was open: the
    /// spilled rows of that checkpoint stay, later ones are written again,
    /// and the sink gets each row once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_while_open_loses_and_doubles_nothing() {
        let mut run = Run::new();
        let mut sink = run.breaker();
        run.write(&mut sink, 5).await;
        run.checkpoint(&mut sink).await;
        run.remote.stalled.store(true, Ordering::Relaxed);
        run.write(&mut sink, 30).await;
        let state = run.checkpoint(&mut sink).await;
        let (next, checkpoint) = (run.next, run.checkpoint);
        // Rows after the checkpoint, then a crash: they are replayed.
        run.write(&mut sink, 10).await;
        sink.prepare_commit(checkpoint + 1).await.unwrap();
        drop(sink);
        run.next = next;
        let mut sink = run.breaker();
        sink.restore(state).await.unwrap();
        assert_eq!(run.state(), Some(BreakerState::Open));
        run.write(&mut sink, 10).await;
        run.checkpoint = checkpoint;
        run.checkpoint(&mut sink).await;
        run.remote.stalled.store(false, Ordering::Relaxed);
        run.until_closed(&mut sink).await;
        run.end(sink, true).await;
    }
}
