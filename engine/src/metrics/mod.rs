//! Metrics per operator subtask, readable while a job runs.
//!
//! Counters are atomics updated by the subtask's task and read by anyone
//! holding the job's [`JobMetrics`]; a [`MetricsSnapshot`] is a consistent
//! enough copy for display and export.

mod heavy_hitters;
mod histogram;
mod monitor;

pub use heavy_hitters::{HeavyHitters, HotKey};
pub use histogram::{HistogramSnapshot, LatencyHistogram};
pub use monitor::{monitor, Alert, AlertKind, MonitorConfig};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc::WeakSender;

use crate::message::{Message, Millis, NO_WATERMARK};
use crate::operator::{SideState, StateSize};

/// Live counters of one subtask (a chain of operators run by one task).
#[derive(Debug)]
pub struct SubtaskMetrics {
    pub node: usize,
    pub operator: String,
    pub subtask: usize,
    rows_in: AtomicU64,
    rows_out: AtomicU64,
    batches_in: AtomicU64,
    batches_out: AtomicU64,
    late_rows: AtomicU64,
    /// Best-effort sinks: rows dropped because the sink could not keep up.
    dropped_rows: AtomicU64,
    /// Sinks with a spill path: the breaker's state (0: no breaker).
    breaker: AtomicU64,
    /// Rows the breaker sent to the spill store, and back to the sink.
    spilled_rows: AtomicU64,
    drained_rows: AtomicU64,
    /// Sinks: when (ms since the epoch) the oldest latency marker still
    /// waiting for its rows to become readable was created; 0: none.
    held_since: AtomicI64,
    watermark: AtomicI64,
    state_rows: AtomicU64,
    state_bytes: AtomicU64,
    /// A join's state per input side.
    state_sides: Mutex<Option<[SideState; 2]>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    busy_ns: AtomicU64,
    backpressured_ns: AtomicU64,
    started: std::time::Instant,
    inputs: Mutex<Vec<WeakSender<Message>>>,
    /// Time an operator takes per input batch.
    pub processing: LatencyHistogram,
    /// Emit wall time minus window end, for windowed results.
    pub event_time_latency: LatencyHistogram,
    /// At sinks: latency markers' travel time, by source node.
    end_to_end: Mutex<BTreeMap<usize, Arc<LatencyHistogram>>>,
    /// Keyed operators: the most frequent keys.
    pub hot_keys: Mutex<HeavyHitters>,
    /// Latency histograms, busy time and hot keys are recorded.
    pub detailed: bool,
    /// Sinks with `'latency.target'`: the target and what counts.
    latency_target: Mutex<Option<LatencyTarget>>,
}

/// A sink's latency target, and the nodes upstream of it whose windows'
/// emit latency (event time) counts toward its latency.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyTarget {
    pub target: Duration,
    pub upstream: Vec<usize>,
}

/// How a sink does against its latency target over the last minute.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyStatus {
    pub node: usize,
    pub sink: String,
    pub target: Duration,
    /// End-to-end p99 over the last minute (`None`: nothing measured).
    pub p99: Option<Duration>,
}

impl LatencyStatus {
    /// p99 over target: above 1 the target is missed.
    pub fn ratio(&self) -> Option<f64> {
        self.p99
            .map(|p| p.as_secs_f64() / self.target.as_secs_f64().max(1e-6))
    }
}

impl SubtaskMetrics {
    pub fn new(node: usize, operator: impl Into<String>, subtask: usize) -> Self {
        SubtaskMetrics {
            node,
            operator: operator.into(),
            subtask,
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            batches_in: AtomicU64::new(0),
            batches_out: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            dropped_rows: AtomicU64::new(0),
            breaker: AtomicU64::new(0),
            spilled_rows: AtomicU64::new(0),
            drained_rows: AtomicU64::new(0),
            held_since: AtomicI64::new(0),
            watermark: AtomicI64::new(NO_WATERMARK),
            state_rows: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            state_sides: Mutex::new(None),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            backpressured_ns: AtomicU64::new(0),
            started: std::time::Instant::now(),
            inputs: Mutex::new(Vec::new()),
            processing: LatencyHistogram::default(),
            event_time_latency: LatencyHistogram::default(),
            end_to_end: Mutex::new(BTreeMap::new()),
            hot_keys: Mutex::new(HeavyHitters::new(32)),
            detailed: true,
            latency_target: Mutex::new(None),
        }
    }

    /// A sink's latency target.
    pub fn set_latency_target(&self, target: LatencyTarget) {
        *self.latency_target.lock() = Some(target);
    }

    /// Counters only: no timing, histograms or key sketches.
    pub fn without_details(mut self) -> Self {
        self.detailed = false;
        self
    }

    pub fn add_bytes(&self, bytes_in: usize, bytes_out: usize) {
        self.bytes_in.fetch_add(bytes_in as u64, Relaxed);
        self.bytes_out.fetch_add(bytes_out as u64, Relaxed);
    }

    /// Time spent processing (in an operator call).
    pub fn add_busy(&self, time: Duration) {
        self.busy_ns.fetch_add(time.as_nanos() as u64, Relaxed);
    }

    /// Time spent waiting for room in a full downstream channel.
    pub fn add_backpressured(&self, time: Duration) {
        self.backpressured_ns
            .fetch_add(time.as_nanos() as u64, Relaxed);
    }

    /// A latency marker from `source` reached this sink after `latency`.
    pub fn observe_end_to_end(&self, source: usize, latency: Duration) {
        let histogram = self.end_to_end.lock().entry(source).or_default().clone();
        histogram.observe(latency);
    }

    pub fn add_input(&self, rows: usize) {
        self.rows_in.fetch_add(rows as u64, Relaxed);
        self.batches_in.fetch_add(1, Relaxed);
    }

    pub fn add_output(&self, rows: usize) {
        self.rows_out.fetch_add(rows as u64, Relaxed);
        self.batches_out.fetch_add(1, Relaxed);
    }

    /// The oldest latency marker a sink still holds was created `age` ago
    /// (`None`: it holds none).
    pub fn set_oldest_held(&self, age: Option<std::time::Duration>) {
        let since = age.map_or(0, |a| {
            (crate::message::now_millis() - a.as_millis() as i64).max(1)
        });
        self.held_since.store(since, Relaxed);
    }

    /// A best-effort sink dropped rows it could not take in time.
    pub fn add_dropped_rows(&self, rows: u64) {
        self.dropped_rows.fetch_add(rows, Relaxed);
    }

    /// The sink's circuit breaker changed state.
    pub fn set_breaker(&self, state: BreakerState) {
        self.breaker.store(state as u64, Relaxed);
    }

    /// The breaker wrote rows to the spill store.
    pub fn add_spilled_rows(&self, rows: u64) {
        self.spilled_rows.fetch_add(rows, Relaxed);
    }

    /// The breaker gave spilled rows back to the sink.
    pub fn add_drained_rows(&self, rows: u64) {
        self.drained_rows.fetch_add(rows, Relaxed);
    }

    pub fn add_late_rows(&self, rows: u64) {
        self.late_rows.fetch_add(rows, Relaxed);
    }

    pub fn set_watermark(&self, watermark: Millis) {
        self.watermark.store(watermark, Relaxed);
    }

    pub fn set_state_size(&self, size: StateSize) {
        self.state_rows.store(size.rows, Relaxed);
        self.state_bytes.store(size.bytes, Relaxed);
        if size.sides.is_some() {
            *self.state_sides.lock() = size.sides;
        }
    }

    pub(crate) fn watch_input(&self, sender: WeakSender<Message>) {
        self.inputs.lock().push(sender);
    }

    /// Fraction (0..=1) of the input channels' capacity in use.
    pub fn channel_fill(&self) -> f64 {
        let inputs = self.inputs.lock();
        let (mut used, mut total) = (0usize, 0usize);
        for sender in inputs.iter().filter_map(|w| w.upgrade()) {
            used += sender.max_capacity() - sender.capacity();
            total += sender.max_capacity();
        }
        if total == 0 {
            0.0
        } else {
            used as f64 / total as f64
        }
    }

    pub fn snapshot(&self) -> SubtaskSnapshot {
        let watermark = self.watermark.load(Relaxed);
        let (hot_keys, hot_key_total) = {
            let sketch = self.hot_keys.lock();
            // Every counter, not a top few: merging subtasks' top lists
            // would drop keys that are frequent overall.
            (sketch.top(usize::MAX), sketch.total())
        };
        SubtaskSnapshot {
            node: self.node,
            operator: self.operator.clone(),
            subtask: self.subtask,
            rows_in: self.rows_in.load(Relaxed),
            rows_out: self.rows_out.load(Relaxed),
            batches_in: self.batches_in.load(Relaxed),
            batches_out: self.batches_out.load(Relaxed),
            late_rows: self.late_rows.load(Relaxed),
            dropped_rows: self.dropped_rows.load(Relaxed),
            breaker: BreakerState::from_number(self.breaker.load(Relaxed)),
            spilled_rows: self.spilled_rows.load(Relaxed),
            drained_rows: self.drained_rows.load(Relaxed),
            oldest_held: match self.held_since.load(Relaxed) {
                0 => None,
                since => Some(std::time::Duration::from_millis(
                    (crate::message::now_millis() - since).max(0) as u64,
                )),
            },
            watermark: (watermark != NO_WATERMARK).then_some(watermark),
            state_rows: self.state_rows.load(Relaxed),
            state_bytes: self.state_bytes.load(Relaxed),
            state_sides: *self.state_sides.lock(),
            channel_fill: self.channel_fill(),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            busy_ms: self.busy_ns.load(Relaxed) / 1_000_000,
            backpressured_ms: self.backpressured_ns.load(Relaxed) / 1_000_000,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            processing: self.processing.snapshot(),
            event_time_latency: self.event_time_latency.snapshot(),
            end_to_end: self
                .end_to_end
                .lock()
                .iter()
                .map(|(k, h)| (*k, h.snapshot()))
                .collect(),
            hot_keys,
            hot_key_total,
            latency_target: self.latency_target.lock().clone(),
        }
    }
}

/// A sink's circuit breaker (`'sink.spill.path'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Rows go to the sink.
    Closed = 1,
    /// The sink is slow or failing: rows go to the spill store, and the
    /// sink is probed now and then.
    Open = 2,
    /// The sink answers again: the spilled rows go back to it, in order,
    /// while new rows still spill.
    Draining = 3,
}

impl BreakerState {
    fn from_number(n: u64) -> Option<Self> {
        match n {
            1 => Some(BreakerState::Closed),
            2 => Some(BreakerState::Open),
            3 => Some(BreakerState::Draining),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::Draining => "draining",
        }
    }
}

/// A copy of one subtask's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct SubtaskSnapshot {
    pub node: usize,
    pub operator: String,
    pub subtask: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    pub batches_in: u64,
    pub batches_out: u64,
    pub late_rows: u64,
    /// Best-effort sinks: rows dropped because the sink could not keep up.
    pub dropped_rows: u64,
    /// Sinks with a spill path: the circuit breaker's state.
    pub breaker: Option<BreakerState>,
    /// Rows the breaker spilled, and drained back to the sink (the
    /// difference is the backlog).
    pub spilled_rows: u64,
    pub drained_rows: u64,
    /// Sinks: how long the oldest latency marker still waiting for its rows
    /// to become readable (a commit) has waited.
    pub oldest_held: Option<std::time::Duration>,
    /// The subtask's current input watermark (ms), if any was seen.
    pub watermark: Option<Millis>,
    pub state_rows: u64,
    pub state_bytes: u64,
    /// A join's state per input side (left, right).
    pub state_sides: Option<[SideState; 2]>,
    /// Fraction of the input channels' capacity in use (backpressure).
    pub channel_fill: f64,
    /// Approximate in-memory size of the batches in and out.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Time in operator calls.
    pub busy_ms: u64,
    /// Time blocked sending to a full downstream channel.
    pub backpressured_ms: u64,
    /// Time since the subtask started.
    pub uptime_ms: u64,
    /// Time per input batch.
    pub processing: HistogramSnapshot,
    /// Emit time minus window end (window operators).
    pub event_time_latency: HistogramSnapshot,
    /// Sinks: latency marker travel time by source node.
    pub end_to_end: Vec<(usize, HistogramSnapshot)>,
    /// Keyed operators: every key the sketch counts (at most its capacity).
    pub hot_keys: Vec<HotKey>,
    /// Sinks: the latency target, if one is set.
    pub latency_target: Option<LatencyTarget>,
    /// Rows the hot-key sketch has seen.
    pub hot_key_total: u64,
}

impl SubtaskSnapshot {
    /// Wall clock minus watermark, in ms.
    pub fn watermark_lag(&self, now: Millis) -> Option<Millis> {
        self.watermark
            .filter(|w| *w != crate::message::FINAL_WATERMARK)
            .map(|w| now.saturating_sub(w))
    }
}

/// Live counters of one source split (a Kafka partition, a file).
#[derive(Debug)]
pub struct SplitMetrics {
    pub node: usize,
    pub subtask: usize,
    pub split: String,
    rows: AtomicU64,
    bytes: AtomicU64,
    watermark: AtomicI64,
    last_record: AtomicI64,
    lag: AtomicI64,
    position: AtomicI64,
}

impl SplitMetrics {
    pub fn new(node: usize, subtask: usize, split: impl Into<String>) -> Self {
        SplitMetrics {
            node,
            subtask,
            split: split.into(),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            watermark: AtomicI64::new(NO_WATERMARK),
            last_record: AtomicI64::new(NO_WATERMARK),
            lag: AtomicI64::new(-1),
            position: AtomicI64::new(-1),
        }
    }

    pub fn set_position(&self, position: i64) {
        self.position.store(position, Relaxed);
    }

    pub fn add_rows(&self, rows: usize, bytes: usize, now: Millis) {
        self.rows.fetch_add(rows as u64, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.last_record.store(now, Relaxed);
    }

    pub fn set_watermark(&self, watermark: Millis) {
        self.watermark.store(watermark, Relaxed);
    }

    pub fn set_lag(&self, lag: i64) {
        self.lag.store(lag, Relaxed);
    }

    pub fn snapshot(&self) -> SplitSnapshot {
        let opt = |v: i64| (v != NO_WATERMARK).then_some(v);
        SplitSnapshot {
            node: self.node,
            subtask: self.subtask,
            split: self.split.clone(),
            rows: self.rows.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            watermark: opt(self.watermark.load(Relaxed)),
            last_record: opt(self.last_record.load(Relaxed)),
            lag: Some(self.lag.load(Relaxed)).filter(|l| *l >= 0),
            position: Some(self.position.load(Relaxed)).filter(|p| *p >= 0),
        }
    }
}

/// A copy of one split's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSnapshot {
    pub node: usize,
    pub subtask: usize,
    pub split: String,
    pub rows: u64,
    pub bytes: u64,
    /// The split's own watermark.
    pub watermark: Option<Millis>,
    /// Wall-clock time of the last record read.
    pub last_record: Option<Millis>,
    /// Records available but not read yet (Kafka: high watermark − position).
    pub lag: Option<i64>,
    /// How far the split has been read (Kafka: the next offset; files: the line).
    pub position: Option<i64>,
}

/// One task of a job that several processes share
/// (`docs/cluster-protocol.md`): where it runs and how far behind it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSnapshot {
    pub stage: usize,
    pub task: usize,
    /// The process it is assigned to, if any.
    pub process: Option<String>,
    /// Records of its input partition not read yet.
    pub lag: Option<i64>,
    /// This process runs it.
    pub local: bool,
}

/// All subtask metrics of one job.
#[derive(Debug, Default)]
pub struct JobMetrics {
    subtasks: Mutex<Vec<Arc<SubtaskMetrics>>>,
    splits: Mutex<Vec<Arc<SplitMetrics>>>,
    alerts: Mutex<Vec<Alert>>,
    /// Other jobs shown as parts of this one (a cluster job's stages),
    /// with the number added to their node ids to keep them apart.
    parts: Mutex<Vec<(Arc<JobMetrics>, usize)>>,
    tasks: Mutex<Vec<TaskSnapshot>>,
    latency: Mutex<Vec<LatencyStatus>>,
}

impl JobMetrics {
    pub fn register(&self, metrics: Arc<SubtaskMetrics>) {
        self.subtasks.lock().push(metrics);
    }

    pub fn register_split(&self, metrics: Arc<SplitMetrics>) {
        self.splits.lock().push(metrics);
    }

    /// Shows `part`'s metrics as this job's, its node ids moved up by
    /// `node_offset`.
    pub fn include(&self, part: Arc<JobMetrics>, node_offset: usize) {
        self.parts.lock().push((part, node_offset));
    }

    /// Stops showing the parts (their jobs ended).
    pub fn clear_parts(&self) {
        self.parts.lock().clear();
    }

    /// Sets where the job's tasks run (a cluster job).
    /// The sinks' latency against their targets (the monitor's finding).
    pub fn set_latency(&self, statuses: Vec<LatencyStatus>) {
        *self.latency.lock() = statuses;
    }

    pub fn set_tasks(&self, tasks: Vec<TaskSnapshot>) {
        *self.tasks.lock() = tasks;
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut subtasks: Vec<_> = self.subtasks.lock().iter().map(|m| m.snapshot()).collect();
        let mut splits: Vec<_> = self.splits.lock().iter().map(|m| m.snapshot()).collect();
        let mut alerts = self.alerts.lock().clone();
        let mut latency = self.latency.lock().clone();
        for (part, offset) in self.parts.lock().iter() {
            let shown = part.snapshot();
            subtasks.extend(shown.subtasks.into_iter().map(|mut s| {
                s.node += offset;
                s
            }));
            splits.extend(shown.splits.into_iter().map(|mut s| {
                s.node += offset;
                s
            }));
            alerts.extend(shown.alerts);
            latency.extend(shown.latency.into_iter().map(|mut l| {
                l.node += offset;
                l
            }));
        }
        subtasks.sort_by_key(|s| (s.node, s.subtask));
        splits.sort_by(|a, b| (a.node, &a.split).cmp(&(b.node, &b.split)));
        MetricsSnapshot {
            subtasks,
            splits,
            alerts,
            tasks: self.tasks.lock().clone(),
            latency,
        }
    }

    /// Replaces the current alerts, logging the new ones.
    pub fn set_alerts(&self, found: Vec<Alert>) {
        let mut alerts = self.alerts.lock();
        let mut next = Vec::with_capacity(found.len());
        for mut alert in found {
            match alerts
                .iter()
                .find(|a| a.kind == alert.kind && a.subject == alert.subject)
            {
                Some(old) => alert.since = old.since,
                None => {
                    tracing::warn!(kind = alert.kind.name(), subject = %alert.subject, "{}", alert.message)
                }
            }
            next.push(alert);
        }
        *alerts = next;
    }
}

/// A copy of a job's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub subtasks: Vec<SubtaskSnapshot>,
    pub splits: Vec<SplitSnapshot>,
    /// Problems found by the monitor, while they last.
    pub alerts: Vec<Alert>,
    /// A cluster job's tasks, all of them (empty for a local job).
    pub tasks: Vec<TaskSnapshot>,
    /// Sinks with a latency target, and how they do.
    pub latency: Vec<LatencyStatus>,
}

impl MetricsSnapshot {
    /// The subtasks of operators whose name contains `name`.
    pub fn operator<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SubtaskSnapshot> + 'a {
        self.subtasks
            .iter()
            .filter(move |s| s.operator.contains(name))
    }

    /// The most frequent keys of a node, over all its subtasks.
    pub fn hot_keys(&self, node: usize) -> Vec<HotKey> {
        let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut total = 0;
        for s in self.subtasks.iter().filter(|s| s.node == node) {
            total += s.hot_key_total;
            for k in &s.hot_keys {
                let e = counts.entry(k.key.clone()).or_default();
                e.0 += k.count;
                e.1 += k.guaranteed;
            }
        }
        let mut keys: Vec<HotKey> = counts
            .into_iter()
            .map(|(key, (count, guaranteed))| HotKey {
                key,
                count,
                guaranteed,
                share: if total == 0 {
                    0.0
                } else {
                    count as f64 / total as f64
                },
            })
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.count));
        keys.truncate(5);
        keys
    }

    /// Sum of late rows over all subtasks.
    pub fn late_rows(&self) -> u64 {
        self.subtasks.iter().map(|s| s.late_rows).sum()
    }

    /// Per-operator totals: (node, operator, rows_in, rows_out, late, state rows).
    pub fn by_operator(&self) -> Vec<OperatorTotals> {
        let mut out: Vec<OperatorTotals> = Vec::new();
        for s in &self.subtasks {
            match out.iter_mut().find(|o| o.node == s.node) {
                Some(o) => o.add(s),
                None => {
                    let mut o = OperatorTotals {
                        node: s.node,
                        operator: s.operator.clone(),
                        ..Default::default()
                    };
                    o.add(s);
                    out.push(o);
                }
            }
        }
        out
    }
}

/// Metrics of all subtasks of one operator, summed (watermark: the minimum).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperatorTotals {
    pub node: usize,
    pub operator: String,
    pub subtasks: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    pub late_rows: u64,
    pub state_rows: u64,
    pub state_bytes: u64,
    /// A join's state per input side, summed over subtasks.
    pub state_sides: Option<[SideState; 2]>,
    pub watermark: Option<Millis>,
    pub max_channel_fill: f64,
}

impl OperatorTotals {
    fn add(&mut self, s: &SubtaskSnapshot) {
        self.subtasks += 1;
        self.rows_in += s.rows_in;
        self.rows_out += s.rows_out;
        self.late_rows += s.late_rows;
        self.state_rows += s.state_rows;
        self.state_bytes += s.state_bytes;
        if let Some(sides) = s.state_sides {
            let total = self.state_sides.get_or_insert_with(Default::default);
            for (t, s) in total.iter_mut().zip(sides) {
                t.rows += s.rows;
                t.bytes += s.bytes;
            }
        }
        self.watermark = match (self.watermark, s.watermark) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max_channel_fill = self.max_channel_fill.max(s.channel_fill);
    }
}

impl fmt::Display for MetricsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in self.by_operator() {
            writeln!(
                f,
                "[{}] {} x{}: rows in {} out {}, late {}, state {} rows / {} B, watermark {}, channel fill {:.0}%",
                o.node,
                o.operator,
                o.subtasks,
                o.rows_in,
                o.rows_out,
                o.late_rows,
                o.state_rows,
                o.state_bytes,
                o.watermark.map_or("-".to_string(), |w| w.to_string()),
                o.max_channel_fill * 100.0
            )?;
        }
        Ok(())
    }
}

impl JobMetrics {
    /// The metrics of one subtask of a node.
    pub fn find(&self, node: usize, subtask: usize) -> Option<Arc<SubtaskMetrics>> {
        self.subtasks
            .lock()
            .iter()
            .find(|m| m.node == node && m.subtask == subtask)
            .cloned()
    }
}
