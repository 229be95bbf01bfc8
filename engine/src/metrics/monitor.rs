//! Watching a running job for the problems operators ask about first: a
//! stuck watermark, a hot partition, a hot key, a backpressured subtask, a
//! sink missing its latency target.
//! Each is logged (tracing, warn) when it appears and kept as an [`Alert`]
//! while it lasts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::{BreakerState, JobMetrics, LatencyStatus, LatencyTarget, MetricsSnapshot};
use crate::message::{now_millis, Millis, FINAL_WATERMARK};

/// Thresholds of the detectors.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// How often the detectors look.
    pub interval: Duration,
    /// A watermark that has not moved for this long while rows arrive is stalled
    /// (`'watermark.stall-timeout'`).
    pub stall_timeout: Duration,
    /// A subtask blocked on full channels more than this share of a
    /// period is backpressured.
    pub backpressure: f64,
    /// A key with more than this share of a keyed operator's rows is hot.
    pub hot_key_share: f64,
    /// A partition with this many times the median lag or rate is hot.
    pub hot_partition_factor: f64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(30),
            backpressure: 0.5,
            hot_key_share: 0.5,
            hot_partition_factor: 10.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertKind {
    WatermarkStall,
    HotPartition,
    HotKey,
    Backpressure,
    LatencyTarget,
    SinkBreaker,
}

impl AlertKind {
    pub fn name(&self) -> &'static str {
        match self {
            AlertKind::WatermarkStall => "watermark_stall",
            AlertKind::HotPartition => "hot_partition",
            AlertKind::HotKey => "hot_key",
            AlertKind::Backpressure => "backpressure",
            AlertKind::LatencyTarget => "latency_target",
            AlertKind::SinkBreaker => "sink_breaker",
        }
    }
}

/// A problem the monitor found, while it lasts.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    /// What it is about: a partition, an operator subtask, a key.
    pub subject: String,
    pub message: String,
    /// When it was first seen (wall clock, ms).
    pub since: Millis,
}

#[derive(Debug, Default)]
struct Previous {
    /// Subtasks: (rows taken in, watermark, unchanged since).
    watermarks: HashMap<(usize, usize), (u64, Option<Millis>, std::time::Instant)>,
    /// Subtasks: (backpressured ms, uptime ms).
    pressure: HashMap<(usize, usize), (u64, u64)>,
    /// Splits: rows.
    split_rows: HashMap<(usize, String), u64>,
    /// Sinks with a latency target: cumulative latency bucket counts over
    /// the last minute, of their markers (`false`) and of the windows
    /// upstream (`true`).
    latency: HashMap<(usize, bool), LatencyHistory>,
}

/// The partitions whose figure is at least 1000 and more than `factor`
/// times the median of their siblings': (partition, figure, that median).
/// A source with one partition has no siblings to compare with.
fn outliers(figures: &[(String, u64)], factor: f64) -> Vec<(&String, u64, u64)> {
    if figures.len() < 2 {
        return Vec::new();
    }
    figures
        .iter()
        .filter_map(|(split, figure)| {
            let mut others: Vec<u64> = figures
                .iter()
                .filter(|(s, _)| s != split)
                .map(|(_, f)| *f)
                .collect();
            others.sort_unstable();
            let median = others[others.len() / 2];
            (*figure >= 1000 && *figure as f64 > factor * median.max(1) as f64)
                .then_some((split, *figure, median))
        })
        .collect()
}

/// Runs the detectors over a job's metrics until `alive` turns false.
pub async fn monitor(
    metrics: Arc<JobMetrics>,
    config: MonitorConfig,
    mut alive: tokio::sync::watch::Receiver<bool>,
) {
    let mut previous = Previous::default();
    let mut tick = tokio::time::interval(config.interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = alive.changed() => {
                if changed.is_err() || !*alive.borrow() {
                    return;
                }
            }
        }
        let snapshot = metrics.snapshot();
        let mut found = detect(&snapshot, &config, &mut previous);
        let latency = latency_targets(&snapshot, &mut previous.latency, std::time::Instant::now());
        found.extend(latency_alerts(&latency));
        metrics.set_alerts(found);
        metrics.set_latency(latency);
    }
}

fn detect(
    snapshot: &MetricsSnapshot,
    config: &MonitorConfig,
    previous: &mut Previous,
) -> Vec<Alert> {
    let now = std::time::Instant::now();
    let mut alerts = Vec::new();
    let mut alert = |kind, subject: String, message: String| {
        alerts.push(Alert {
            kind,
            subject,
            message,
            since: now_millis(),
        })
    };

    // A sink's circuit breaker is open or draining: its rows are in the
    // spill store, not (yet) in the sink.
    for s in &snapshot.subtasks {
        if let Some(state @ (BreakerState::Open | BreakerState::Draining)) = s.breaker {
            alert(
                AlertKind::SinkBreaker,
                format!("{}[{}]", s.operator, s.subtask),
                format!(
                    "{}[{}]: circuit breaker {}: {} spilled rows not in the sink yet",
                    s.operator,
                    s.subtask,
                    state.name(),
                    s.spilled_rows.saturating_sub(s.drained_rows)
                ),
            );
        }
    }

    // Watermark stall: a subtask takes in rows but its watermark stays put.
    // Only in jobs that have event time at all (some split has a
    // watermark), so a stream without a WATERMARK clause is not "stalled".
    // The culprit is the split holding the minimum back: one with no
    // watermark yet, else the lowest.
    let culprit = snapshot
        .splits
        .iter()
        .find(|p| p.watermark.is_none())
        .or_else(|| snapshot.splits.iter().min_by_key(|p| p.watermark));
    let has_event_time = snapshot.splits.iter().any(|p| p.watermark.is_some());
    let mut stalled: Vec<String> = Vec::new();
    for s in &snapshot.subtasks {
        if s.watermark == Some(FINAL_WATERMARK) {
            continue;
        }
        let rows = if s.operator.starts_with("source:") {
            s.rows_out
        } else {
            s.rows_in
        };
        let entry =
            previous
                .watermarks
                .entry((s.node, s.subtask))
                .or_insert((rows, s.watermark, now));
        if entry.1 != s.watermark {
            *entry = (rows, s.watermark, now);
            continue;
        }
        let stalled_for = now.duration_since(entry.2);
        if !has_event_time || rows <= entry.0 || stalled_for < config.stall_timeout {
            continue;
        }
        let held_by = culprit.map_or_else(|| format!("subtask {}", s.subtask), |p| p.split.clone());
        if stalled.contains(&held_by) {
            continue;
        }
        stalled.push(held_by.clone());
        let at = s
            .watermark
            .map_or("no watermark yet".to_string(), |w| format!("watermark {w}"));
        alert(
            AlertKind::WatermarkStall,
            held_by.clone(),
            format!(
                "{} (subtask {}) has taken in rows for {} s with its {at} unchanged; held back by split {held_by}",
                s.operator,
                s.subtask,
                stalled_for.as_secs()
            ),
        );
    }

    // Hot partition: far more lag, or far more rows per period, than its siblings.
    let mut by_source: BTreeMap<usize, Vec<&super::SplitSnapshot>> = BTreeMap::new();
    for p in &snapshot.splits {
        by_source.entry(p.node).or_default().push(p);
    }
    let mut rates: HashMap<(usize, String), u64> = HashMap::new();
    for p in &snapshot.splits {
        let before = previous
            .split_rows
            .insert((p.node, p.split.clone()), p.rows)
            .unwrap_or(p.rows);
        rates.insert((p.node, p.split.clone()), p.rows.saturating_sub(before));
    }
    for (node, splits) in &by_source {
        let lags: Vec<(String, u64)> = splits
            .iter()
            .filter_map(|p| p.lag.map(|l| (p.split.clone(), l.max(0) as u64)))
            .collect();
        for (split, lag, others) in outliers(&lags, config.hot_partition_factor) {
            alert(
                AlertKind::HotPartition,
                split.clone(),
                format!("partition {split} lags {lag} records behind (its siblings: {others})"),
            );
        }
        let per_period: Vec<(String, u64)> = splits
            .iter()
            .map(|p| (p.split.clone(), rates[&(*node, p.split.clone())]))
            .collect();
        for (split, rate, others) in outliers(&per_period, config.hot_partition_factor) {
            alert(
                AlertKind::HotPartition,
                split.clone(),
                format!(
                    "partition {split} carries {rate} rows per period (its siblings: {others})"
                ),
            );
        }
    }

    // Hot key: one key carries most of a keyed operator's rows.
    for totals in snapshot.by_operator() {
        let keys = snapshot.hot_keys(totals.node);
        if let Some(top) = keys.first() {
            let seen: u64 = snapshot
                .subtasks
                .iter()
                .filter(|s| s.node == totals.node)
                .map(|s| s.hot_key_total)
                .sum();
            if seen >= 1000 && top.share >= config.hot_key_share {
                alert(
                    AlertKind::HotKey,
                    format!("{} key {}", totals.operator, top.key),
                    format!(
                        "key {} carries {:.0}% of the rows of {}",
                        top.key,
                        top.share * 100.0,
                        totals.operator
                    ),
                );
            }
        }
    }

    // Backpressure: blocked on full channels most of the last period.
    for s in &snapshot.subtasks {
        let (pressed, up) = previous
            .pressure
            .insert((s.node, s.subtask), (s.backpressured_ms, s.uptime_ms))
            .unwrap_or((0, 0));
        let period = s.uptime_ms.saturating_sub(up);
        if period == 0 {
            continue;
        }
        let share = s.backpressured_ms.saturating_sub(pressed) as f64 / period as f64;
        if share >= config.backpressure {
            alert(
                AlertKind::Backpressure,
                format!("{} subtask {}", s.operator, s.subtask),
                format!(
                    "{} (subtask {}) spent {:.0}% of the last period waiting for downstream",
                    s.operator,
                    s.subtask,
                    share * 100.0
                ),
            );
        }
    }
    alerts
}

/// Cumulative latency bucket counts, each with when it was taken.
type LatencyHistory = VecDeque<(std::time::Instant, Vec<u64>)>;

/// The window a sink's latency is judged over.
const LATENCY_WINDOW: Duration = Duration::from_secs(60);

/// Each sink with a latency target and its end-to-end p99 over the last
/// minute: the larger of its latency markers' (source to visible rows)
/// and its upstream windows' emit latency (window end to emission, in
/// event time).
fn latency_targets(
    snapshot: &MetricsSnapshot,
    history: &mut HashMap<(usize, bool), LatencyHistory>,
    now: std::time::Instant,
) -> Vec<LatencyStatus> {
    let mut sinks: BTreeMap<usize, (&str, &LatencyTarget)> = BTreeMap::new();
    for s in &snapshot.subtasks {
        if let Some(target) = &s.latency_target {
            sinks.entry(s.node).or_insert((&s.operator, target));
        }
    }
    let mut statuses = Vec::new();
    for (node, (sink, target)) in sinks {
        let markers = cumulative(
            snapshot
                .subtasks
                .iter()
                .filter(|s| s.node == node)
                .flat_map(|s| s.end_to_end.iter().map(|(_, h)| h)),
        );
        let windows = cumulative(
            snapshot
                .subtasks
                .iter()
                .filter(|s| target.upstream.contains(&s.node))
                .map(|s| &s.event_time_latency),
        );
        // A marker still waiting for a commit is at least this late now.
        let waiting = snapshot
            .subtasks
            .iter()
            .filter(|s| s.node == node)
            .filter_map(|s| s.oldest_held)
            .max();
        let p99 = [(false, markers), (true, windows)]
            .into_iter()
            .filter_map(|(upstream, counts)| {
                let recent = last_minute(history.entry((node, upstream)).or_default(), now, counts);
                quantile(&recent, 0.99)
            })
            .chain(waiting)
            .max();
        statuses.push(LatencyStatus {
            node,
            sink: sink.to_string(),
            target: target.target,
            p99,
        });
    }
    statuses
}

/// Bucket counts summed over histograms.
fn cumulative<'a>(histograms: impl Iterator<Item = &'a super::HistogramSnapshot>) -> Vec<u64> {
    let mut counts = Vec::new();
    for h in histograms {
        counts.resize(counts.len().max(h.buckets.len()), 0);
        for (i, (_, c)) in h.buckets.iter().enumerate() {
            counts[i] += c;
        }
    }
    counts
}

/// The counts of the last [`LATENCY_WINDOW`]: `counts` (cumulative) minus
/// those a minute ago (none, if the sink is younger), keeping the history.
fn last_minute(
    history: &mut LatencyHistory,
    now: std::time::Instant,
    counts: Vec<u64>,
) -> Vec<u64> {
    let old = |t: &std::time::Instant| now.duration_since(*t) >= LATENCY_WINDOW;
    while history.len() >= 2 && old(&history[1].0) {
        history.pop_front();
    }
    let recent = match history.front() {
        Some((t, base)) if old(t) => counts
            .iter()
            .enumerate()
            .map(|(i, c)| c.saturating_sub(base.get(i).copied().unwrap_or(0)))
            .collect(),
        _ => counts.clone(),
    };
    history.push_back((now, counts));
    recent
}

/// The `q` quantile of power-of-two microsecond buckets (bucket `i` holds
/// values up to `2^i` µs), interpolated inside its bucket: a target is
/// compared with a value, not with a bucket's upper bound twice as high.
fn quantile(counts: &[u64], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0);
    let mut seen = 0u64;
    for (i, c) in counts.iter().enumerate() {
        if *c > 0 && (seen + c) as f64 >= rank {
            let upper = (1u64 << i) as f64;
            let lower = if i == 0 { 0.0 } else { upper / 2.0 };
            let within = (rank - seen as f64) / *c as f64;
            return Some(Duration::from_micros(
                (lower + within * (upper - lower)) as u64,
            ));
        }
        seen += c;
    }
    None
}

/// An alert for each sink above its target.
fn latency_alerts(statuses: &[LatencyStatus]) -> Vec<Alert> {
    statuses
        .iter()
        .filter(|s| s.ratio().is_some_and(|r| r > 1.0))
        .map(|s| Alert {
            kind: AlertKind::LatencyTarget,
            subject: s.sink.clone(),
            message: format!(
                "{}: end-to-end p99 {:?} over the last minute, above its latency target {:?}",
                s.sink,
                s.p99.unwrap_or_default(),
                s.target
            ),
            since: now_millis(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{SplitMetrics, SubtaskMetrics};

    fn job(watermark: Option<Millis>) -> (Arc<JobMetrics>, Arc<SubtaskMetrics>) {
        let job = Arc::new(JobMetrics::default());
        let split = Arc::new(SplitMetrics::new(0, 0, "events-1"));
        if let Some(w) = watermark {
            split.set_watermark(w);
        }
        job.register_split(split);
        let window = Arc::new(SubtaskMetrics::new(1, "window aggregate", 0));
        if let Some(w) = watermark {
            window.set_watermark(w);
        }
        job.register(window.clone());
        (job, window)
    }

    fn instant_stalls() -> MonitorConfig {
        MonitorConfig {
            stall_timeout: Duration::ZERO,
            ..MonitorConfig::default()
        }
    }

    #[test]
    fn rows_in_under_a_still_watermark_is_a_stall_named_by_its_split() {
        let (job, window) = job(Some(5));
        let mut previous = Previous::default();
        let config = instant_stalls();
        assert!(detect(&job.snapshot(), &config, &mut previous).is_empty());
        window.add_input(10);
        let alerts = detect(&job.snapshot(), &config, &mut previous);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].kind, AlertKind::WatermarkStall);
        assert_eq!(alerts[0].subject, "events-1");
    }

    #[test]
    fn a_moving_watermark_or_no_event_time_is_no_stall() {
        let (job, window) = job(Some(5));
        let mut previous = Previous::default();
        let config = instant_stalls();
        detect(&job.snapshot(), &config, &mut previous);
        window.add_input(10);
        window.set_watermark(6);
        assert!(detect(&job.snapshot(), &config, &mut previous).is_empty());

        let (job, window) = job_without_watermarks();
        let mut previous = Previous::default();
        detect(&job.snapshot(), &config, &mut previous);
        window.add_input(10);
        assert!(detect(&job.snapshot(), &config, &mut previous).is_empty());
    }

    fn job_without_watermarks() -> (Arc<JobMetrics>, Arc<SubtaskMetrics>) {
        job(None)
    }

    #[test]
    fn a_sink_above_its_target_over_the_last_minute_is_an_alert() {
        let job = Arc::new(JobMetrics::default());
        let window = Arc::new(SubtaskMetrics::new(2, "window aggregate", 0));
        let sink = Arc::new(SubtaskMetrics::new(3, "sink: out", 0));
        sink.set_latency_target(LatencyTarget {
            target: Duration::from_millis(500),
            upstream: vec![2],
        });
        job.register(window.clone());
        job.register(sink.clone());
        let mut history = HashMap::new();
        let t0 = std::time::Instant::now();
        let judge = |history: &mut _, at: Duration| {
            let statuses = latency_targets(&job.snapshot(), history, t0 + at);
            assert_eq!(statuses.len(), 1);
            let alerts = latency_alerts(&statuses);
            (statuses[0].clone(), alerts)
        };
        let (status, _) = judge(&mut history, Duration::ZERO);
        assert_eq!(status.p99, None, "nothing measured yet");

        for _ in 0..100 {
            sink.observe_end_to_end(0, Duration::from_millis(100));
        }
        let (status, alerts) = judge(&mut history, Duration::from_secs(1));
        let p99 = status.p99.unwrap();
        assert!(p99 > Duration::from_millis(64) && p99 <= Duration::from_millis(131));
        assert!(alerts.is_empty());

        // Ten slow markers in 110: the p99 is a slow one.
        for _ in 0..10 {
            sink.observe_end_to_end(1, Duration::from_secs(2));
        }
        let (status, alerts) = judge(&mut history, Duration::from_secs(2));
        assert!(status.ratio().unwrap() > 1.0, "{status:?}");
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].kind, alerts[0].subject.as_str()),
            (AlertKind::LatencyTarget, "sink: out")
        );

        // A minute on, only fast markers came: the slow ones left the window.
        for _ in 0..100 {
            sink.observe_end_to_end(0, Duration::from_millis(100));
        }
        let (status, alerts) = judge(&mut history, Duration::from_secs(63));
        assert!(status.ratio().unwrap() < 1.0, "{status:?}");
        assert!(alerts.is_empty());

        // A window upstream emitting seconds after its end counts too.
        for _ in 0..5 {
            window.event_time_latency.observe(Duration::from_secs(3));
        }
        let (status, alerts) = judge(&mut history, Duration::from_secs(64));
        assert!(status.p99.unwrap() > Duration::from_secs(2), "{status:?}");
        assert_eq!(alerts.len(), 1);
    }

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        // 100 values in (512, 1024] µs.
        let mut counts = vec![0; 11];
        counts[10] = 100;
        assert_eq!(quantile(&counts, 0.5), Some(Duration::from_micros(768)));
        assert_eq!(quantile(&counts, 0.99), Some(Duration::from_micros(1018)));
        assert_eq!(quantile(&[0, 0], 0.99), None);
    }
}
