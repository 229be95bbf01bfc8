//! Metrics in Prometheus's text format, served over HTTP.
//!
//! `/metrics` renders every job of a session with stable names and labels
//! (job, operator, subtask, partition); `/healthz` answers `ok` while no job
//! has failed. The text is written by the `prometheus` crate's encoder from
//! metric families built off the jobs' snapshots at scrape time.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::TextEncoder;
use weir_engine::message::now_millis;
use weir_engine::metrics::HistogramSnapshot;

use crate::error::{Result, WeirError};
use crate::job::Job;
use crate::jobs::SharedJobs;

fn labels(pairs: &[(&str, String)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.to_string());
            l.set_value(v.clone());
            l
        })
        .collect()
}

/// Metric families by name, in first-use order.
#[derive(Default)]
struct Families {
    families: Vec<MetricFamily>,
}

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut MetricFamily {
        if let Some(i) = self.families.iter().position(|f| f.name() == name) {
            return &mut self.families[i];
        }
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        self.families.push(f);
        self.families.last_mut().expect("just pushed")
    }

    fn counter(&mut self, name: &str, help: &str, pairs: &[(&str, String)], value: f64) {
        let mut c = Counter::default();
        c.set_value(value);
        let mut m = Metric::default();
        m.set_label(labels(pairs));
        m.set_counter(c);
        self.family(name, help, MetricType::COUNTER)
            .mut_metric()
            .push(m);
    }

    fn gauge(&mut self, name: &str, help: &str, pairs: &[(&str, String)], value: f64) {
        let mut g = Gauge::default();
        g.set_value(value);
        let mut m = Metric::default();
        m.set_label(labels(pairs));
        m.set_gauge(g);
        self.family(name, help, MetricType::GAUGE)
            .mut_metric()
            .push(m);
    }

    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        pairs: &[(&str, String)],
        h: &HistogramSnapshot,
    ) {
        let mut hist = Histogram::default();
        hist.set_sample_count(h.count);
        hist.set_sample_sum(h.sum_us as f64 / 1e6);
        let mut cumulative = 0;
        let mut buckets = Vec::new();
        for (upper_us, count) in &h.buckets {
            cumulative += count;
            // Keep the output short: microsecond buckets below 100 µs are noise.
            if *upper_us < 64 {
                continue;
            }
            let mut b = Bucket::default();
            b.set_upper_bound(*upper_us as f64 / 1e6);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
        hist.set_bucket(buckets);
        let mut m = Metric::default();
        m.set_label(labels(pairs));
        m.set_histogram(hist);
        self.family(name, help, MetricType::HISTOGRAM)
            .mut_metric()
            .push(m);
    }
}

/// Every job's metrics in Prometheus's text format.
pub fn prometheus_text(jobs: &[Job]) -> Result<String> {
    let mut f = Families::default();
    let now = now_millis();
    for job in jobs {
        let name = job.name().to_string();
        let id = job.id().to_string();
        let m = job.metrics();
        f.gauge(
            "weir_job_running",
            "1 while the job runs",
            &[("job", name.clone()), ("job_id", id.clone())],
            f64::from(u8::from(job.status().is_running())),
        );
        for t in &m.tasks {
            let process = t.process.clone().unwrap_or_default();
            let l = [
                ("job", name.clone()),
                ("job_id", id.clone()),
                ("stage", t.stage.to_string()),
                ("task", t.task.to_string()),
                ("process", process),
            ];
            if t.local {
                f.gauge(
                    "weir_task_assigned",
                    "1 for each task of a cluster job this process runs",
                    &l,
                    1.0,
                );
            }
            if let Some(lag) = t.lag {
                f.gauge(
                    "weir_task_lag",
                    "Records of a cluster job's task's input partition not read yet (every task of the job)",
                    &l,
                    lag as f64,
                );
            }
        }
        for s in &m.subtasks {
            let l = [
                ("job", name.clone()),
                ("job_id", id.clone()),
                ("operator", format!("[{}] {}", s.node, s.operator)),
                ("subtask", s.subtask.to_string()),
            ];
            f.counter(
                "weir_operator_rows_in_total",
                "Rows into the operator",
                &l,
                s.rows_in as f64,
            );
            f.counter(
                "weir_operator_rows_out_total",
                "Rows out of the operator",
                &l,
                s.rows_out as f64,
            );
            f.counter(
                "weir_operator_batches_in_total",
                "Batches into the operator",
                &l,
                s.batches_in as f64,
            );
            f.counter(
                "weir_operator_bytes_in_total",
                "Bytes (Arrow memory) into the operator",
                &l,
                s.bytes_in as f64,
            );
            f.counter(
                "weir_operator_bytes_out_total",
                "Bytes (Arrow memory) out of the operator",
                &l,
                s.bytes_out as f64,
            );
            f.counter(
                "weir_operator_late_rows_total",
                "Rows that arrived after their window fired",
                &l,
                s.late_rows as f64,
            );
            if s.dropped_rows > 0 {
                f.counter(
                    "weir_sink_dropped_rows_total",
                    "Rows a best-effort sink dropped because it could not keep up",
                    &l,
                    s.dropped_rows as f64,
                );
            }
            if let Some(state) = s.breaker {
                f.gauge(
                    "weir_sink_breaker_state",
                    "A sink's circuit breaker: 0 closed, 1 open (rows spill), 2 draining (spilled rows go back)",
                    &l,
                    (state as u8 - 1) as f64,
                );
                f.counter(
                    "weir_sink_spilled_rows_total",
                    "Rows a sink's circuit breaker wrote to its spill store",
                    &l,
                    s.spilled_rows as f64,
                );
                f.counter(
                    "weir_sink_drained_rows_total",
                    "Spilled rows given back to the sink",
                    &l,
                    s.drained_rows as f64,
                );
                f.gauge(
                    "weir_sink_spill_backlog_rows",
                    "Spilled rows the sink has not taken back yet",
                    &l,
                    s.spilled_rows.saturating_sub(s.drained_rows) as f64,
                );
            }
            f.counter(
                "weir_operator_busy_seconds_total",
                "Time spent processing",
                &l,
                s.busy_ms as f64 / 1e3,
            );
            f.counter(
                "weir_operator_backpressured_seconds_total",
                "Time spent waiting for room in a full downstream channel",
                &l,
                s.backpressured_ms as f64 / 1e3,
            );
            f.gauge(
                "weir_operator_channel_fill",
                "Share of the input channels' capacity in use",
                &l,
                s.channel_fill,
            );
            f.gauge(
                "weir_operator_state_rows",
                "Rows (groups, buffered rows) of operator state",
                &l,
                s.state_rows as f64,
            );
            f.gauge(
                "weir_operator_state_bytes",
                "Bytes of operator state",
                &l,
                s.state_bytes as f64,
            );
            for (side, state) in ["left", "right"].iter().zip(s.state_sides.iter().flatten()) {
                let mut l = l.to_vec();
                l.push(("side", side.to_string()));
                f.gauge(
                    "weir_join_state_rows",
                    "Rows a join keeps, per input side",
                    &l,
                    state.rows as f64,
                );
                f.gauge(
                    "weir_join_state_bytes",
                    "Bytes a join keeps, per input side",
                    &l,
                    state.bytes as f64,
                );
            }
            if let Some(w) = s.watermark.filter(|w| *w != weir_engine::FINAL_WATERMARK) {
                f.gauge(
                    "weir_operator_watermark_ms",
                    "Event-time watermark (ms since the epoch)",
                    &l,
                    w as f64,
                );
                f.gauge(
                    "weir_operator_watermark_lag_seconds",
                    "Wall clock minus watermark",
                    &l,
                    (now - w) as f64 / 1e3,
                );
            }
            if s.processing.count > 0 {
                f.histogram(
                    "weir_operator_processing_seconds",
                    "Time to process one input batch",
                    &l,
                    &s.processing,
                );
            }
            if s.event_time_latency.count > 0 {
                f.histogram(
                    "weir_operator_event_time_latency_seconds",
                    "Wall-clock time a window was emitted minus its end",
                    &l,
                    &s.event_time_latency,
                );
            }
            for (source, h) in &s.end_to_end {
                let source = m
                    .subtasks
                    .iter()
                    .find(|x| x.node == *source)
                    .map_or(source.to_string(), |x| x.operator.clone());
                let l = [
                    ("job", name.clone()),
                    ("job_id", id.clone()),
                    ("source", source),
                    ("sink", s.operator.clone()),
                    ("subtask", s.subtask.to_string()),
                ];
                f.histogram(
                    "weir_end_to_end_latency_seconds",
                    "Time latency markers take from a source to a sink",
                    &l,
                    h,
                );
            }
        }
        for status in &m.latency {
            let l = [
                ("job", name.clone()),
                ("job_id", id.clone()),
                ("sink", status.sink.clone()),
            ];
            f.gauge(
                "weir_latency_target_seconds",
                "A sink's latency target ('latency.target')",
                &l,
                status.target.as_secs_f64(),
            );
            if let Some(ratio) = status.ratio() {
                f.gauge(
                    "weir_latency_target_ratio",
                    "A sink's end-to-end p99 over the last minute divided by its latency target (above 1: missed)",
                    &l,
                    ratio,
                );
            }
        }
        for totals in m.by_operator() {
            for key in m.hot_keys(totals.node) {
                let l = [
                    ("job", name.clone()),
                    ("job_id", id.clone()),
                    ("operator", format!("[{}] {}", totals.node, totals.operator)),
                    ("key", key.key.clone()),
                ];
                f.gauge(
                    "weir_hot_key_share",
                    "Estimated share of a keyed operator's rows with this key",
                    &l,
                    key.share,
                );
            }
        }
        for p in &m.splits {
            let source = m
                .subtasks
                .iter()
                .find(|x| x.node == p.node)
                .map_or(p.node.to_string(), |x| x.operator.clone());
            let l = [
                ("job", name.clone()),
                ("job_id", id.clone()),
                ("source", source),
                ("partition", p.split.clone()),
            ];
            f.counter(
                "weir_partition_rows_total",
                "Rows read from the partition",
                &l,
                p.rows as f64,
            );
            f.counter(
                "weir_partition_bytes_total",
                "Bytes read from the partition",
                &l,
                p.bytes as f64,
            );
            if let Some(lag) = p.lag {
                f.gauge(
                    "weir_partition_lag",
                    "Records available but not read (consumer lag)",
                    &l,
                    lag as f64,
                );
            }
            if let Some(position) = p.position {
                f.gauge(
                    "weir_partition_position",
                    "How far the partition was read (offset or line)",
                    &l,
                    position as f64,
                );
            }
            if let Some(w) = p.watermark {
                f.gauge(
                    "weir_partition_watermark_ms",
                    "The partition's own watermark",
                    &l,
                    w as f64,
                );
            }
            if let Some(t) = p.last_record {
                f.gauge(
                    "weir_partition_last_record_ms",
                    "Wall clock of the last record read",
                    &l,
                    t as f64,
                );
            }
        }
        let c = job.checkpoints();
        let l = [("job", name.clone()), ("job_id", id.clone())];
        f.counter(
            "weir_checkpoints_completed_total",
            "Checkpoints completed",
            &l,
            c.completed as f64,
        );
        f.counter(
            "weir_checkpoints_failed_total",
            "Checkpoints failed or timed out",
            &l,
            c.failed as f64,
        );
        if let Some(at) = c.last_completed_at {
            f.gauge(
                "weir_checkpoint_duration_seconds",
                "Duration of the last checkpoint",
                &l,
                c.last_duration_ms as f64 / 1e3,
            );
            f.gauge(
                "weir_checkpoint_size_bytes",
                "Size of the last checkpoint",
                &l,
                c.last_size_bytes as f64,
            );
            f.gauge(
                "weir_checkpoint_alignment_seconds",
                "Longest barrier alignment of the last checkpoint",
                &l,
                c.last_alignment_ms as f64 / 1e3,
            );
            f.gauge(
                "weir_checkpoint_age_seconds",
                "Time since the last checkpoint completed",
                &l,
                (now - at) as f64 / 1e3,
            );
        }
        for alert in &m.alerts {
            let l = [
                ("job", name.clone()),
                ("job_id", id.clone()),
                ("kind", alert.kind.name().to_string()),
                ("subject", alert.subject.clone()),
            ];
            f.gauge(
                "weir_alert",
                "1 while the monitor reports this problem",
                &l,
                1.0,
            );
        }
    }
    let mut text = String::new();
    TextEncoder::new()
        .encode_utf8(&f.families, &mut text)
        .map_err(|e| WeirError::Usage(format!("metrics encoding: {e}")))?;
    Ok(text)
}

/// An HTTP server for `/metrics` and `/healthz`; stops when dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves the jobs at `address` (e.g. `127.0.0.1:9249`; port 0 picks one).
    pub fn start(address: &str, jobs: SharedJobs) -> Result<Self> {
        let server =
            Arc::new(tiny_http::Server::http(address).map_err(|e| {
                WeirError::Usage(format!("cannot serve metrics on {address}: {e}"))
            })?);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("weir-metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let (status, body, kind) = match request.url() {
                        "/metrics" => match prometheus_text(&jobs.read()) {
                            Ok(text) => (200, text, "text/plain; version=0.0.4"),
                            Err(e) => (500, e.to_string(), "text/plain"),
                        },
                        "/healthz" => {
                            let failed: Vec<String> = jobs
                                .read()
                                .iter()
                                .filter(|j| matches!(j.status(), weir_engine::JobStatus::Failed(_)))
                                .map(|j| j.name().to_string())
                                .collect();
                            if failed.is_empty() {
                                (200, "ok\n".to_string(), "text/plain")
                            } else {
                                (
                                    503,
                                    format!("failed: {}\n", failed.join(", ")),
                                    "text/plain",
                                )
                            }
                        }
                        _ => (
                            404,
                            "not found: try /metrics or /healthz\n".to_string(),
                            "text/plain",
                        ),
                    };
                    let header =
                        tiny_http::Header::from_bytes(&b"Content-Type"[..], kind.as_bytes()).ok();
                    let mut response =
                        tiny_http::Response::from_string(body).with_status_code(status);
                    if let Some(h) = header {
                        response = response.with_header(h);
                    }
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| WeirError::Usage(format!("cannot start the metrics thread: {e}")))?;
        Ok(MetricsServer {
            server,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.server_addr().to_ip()
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
