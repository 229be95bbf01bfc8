//! Jobs as tables: `SHOW JOBS`, and `DESCRIBE JOB`'s metrics.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use weir_engine::message::now_millis;
use weir_engine::metrics::OperatorTotals;

use crate::job::Job;

fn table(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap_or_else(|_| RecordBatch::new_empty(Arc::new(Schema::empty())))
}

fn text(values: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

fn numbers(values: Vec<u64>) -> ArrayRef {
    Arc::new(UInt64Array::from(values))
}

fn ms(us: u64) -> String {
    if us >= 1000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// `SHOW JOBS`: one row per job.
pub fn jobs_table(jobs: &[Job]) -> RecordBatch {
    let rows_out: Vec<u64> = jobs
        .iter()
        .map(|j| {
            j.metrics()
                .subtasks
                .iter()
                .filter(|s| s.operator.starts_with("sink:"))
                .map(|s| s.rows_in)
                .sum()
        })
        .collect();
    let column = |f: &dyn Fn(&Job) -> String| text(jobs.iter().map(f).collect());
    table(vec![
        ("id", column(&|j| j.id().to_string())),
        ("name", column(&|j| j.name().to_string())),
        ("status", column(&|j| j.status().to_string())),
        ("sink", column(&|j| j.sink().to_string())),
        ("rows written", numbers(rows_out)),
        (
            "last checkpoint",
            column(&|j| checkpoint_summary(&j.checkpoints())),
        ),
    ])
}

/// `#12, 1.5 s ago, 120 ms, 3.2 KB (1 failed)`, or empty without checkpoints.
fn checkpoint_summary(c: &weir_engine::CheckpointSnapshot) -> String {
    let Some(id) = c.last_id else {
        return if c.failed > 0 {
            format!("{} failed", c.failed)
        } else {
            String::new()
        };
    };
    let age = c
        .last_completed_at
        .map_or(0.0, |t| (now_millis() - t) as f64 / 1000.0);
    let mut text = format!(
        "#{id}, {age:.1} s ago, {} ms, {:.1} KB, alignment {} ms",
        c.last_duration_ms,
        c.last_size_bytes as f64 / 1024.0,
        c.last_alignment_ms
    );
    if c.failed > 0 {
        text.push_str(&format!(" ({} failed)", c.failed));
    }
    text
}

/// Per-operator metrics of a job as a table.
pub fn job_metrics_table(job: &Job) -> RecordBatch {
    let now = now_millis();
    let totals = job.metrics().by_operator();
    let column = |f: &dyn Fn(&OperatorTotals) -> String| text(totals.iter().map(f).collect());
    let number = |f: &dyn Fn(&OperatorTotals) -> u64| numbers(totals.iter().map(f).collect());
    let fill: Vec<f64> = totals.iter().map(|o| o.max_channel_fill).collect();
    table(vec![
        (
            "operator",
            column(&|o| format!("[{}] {}", o.node, o.operator)),
        ),
        ("subtasks", number(&|o| o.subtasks as u64)),
        ("rows in", number(&|o| o.rows_in)),
        ("rows out", number(&|o| o.rows_out)),
        ("late rows", number(&|o| o.late_rows)),
        (
            "watermark",
            column(&|o| o.watermark.map(format_watermark).unwrap_or_default()),
        ),
        (
            "watermark lag",
            column(&|o| match o.watermark {
                Some(w) if w != weir_engine::FINAL_WATERMARK => {
                    format!("{:.1}s", (now - w) as f64 / 1000.0)
                }
                _ => String::new(),
            }),
        ),
        ("channel fill", Arc::new(Float64Array::from(fill))),
        ("state rows", number(&|o| o.state_rows)),
        (
            "join state (left / right)",
            column(&|o| {
                o.state_sides.map_or(String::new(), |[l, r]| {
                    format!("{} / {} rows", l.rows, r.rows)
                })
            }),
        ),
    ])
}

fn format_watermark(ms: i64) -> String {
    if ms == weir_engine::FINAL_WATERMARK {
        return "end".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Operators, partitions, hot keys, alerts and checkpoints of a job.
pub fn job_report(job: &Job) -> Vec<(String, RecordBatch)> {
    let m = job.metrics();
    let now = now_millis();
    let mut tables = vec![(
        format!("job {} ({}): {}", job.id(), job.name(), job.status()),
        job_metrics_table(job),
    )];

    let busy: Vec<_> = m.subtasks.iter().collect();
    if !busy.is_empty() {
        let share = |part: u64, whole: u64| {
            if whole == 0 {
                0.0
            } else {
                part as f64 / whole as f64 * 100.0
            }
        };
        tables.push((
            "subtasks".to_string(),
            table(vec![
                (
                    "operator",
                    text(
                        busy.iter()
                            .map(|s| format!("[{}] {}", s.node, s.operator))
                            .collect(),
                    ),
                ),
                (
                    "subtask",
                    numbers(busy.iter().map(|s| s.subtask as u64).collect()),
                ),
                (
                    "busy %",
                    Arc::new(Float64Array::from(
                        busy.iter()
                            .map(|s| share(s.busy_ms, s.uptime_ms))
                            .collect::<Vec<_>>(),
                    )),
                ),
                (
                    "backpressured %",
                    Arc::new(Float64Array::from(
                        busy.iter()
                            .map(|s| share(s.backpressured_ms, s.uptime_ms))
                            .collect::<Vec<_>>(),
                    )),
                ),
                (
                    "batch p50",
                    text(busy.iter().map(|s| ms(s.processing.p50_us)).collect()),
                ),
                (
                    "batch p99",
                    text(busy.iter().map(|s| ms(s.processing.p99_us)).collect()),
                ),
                (
                    "batch max",
                    text(busy.iter().map(|s| ms(s.processing.max_us)).collect()),
                ),
                (
                    "window emit p99",
                    text(
                        busy.iter()
                            .map(|s| {
                                if s.event_time_latency.count > 0 {
                                    ms(s.event_time_latency.p99_us)
                                } else {
                                    String::new()
                                }
                            })
                            .collect(),
                    ),
                ),
                (
                    "end-to-end p99",
                    text(
                        busy.iter()
                            .map(|s| {
                                s.end_to_end
                                    .iter()
                                    .map(|(_, h)| ms(h.p99_us))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .collect(),
                    ),
                ),
            ]),
        ));
    }

    if !m.splits.is_empty() {
        let p = &m.splits;
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        tables.push((
            "partitions".to_string(),
            table(vec![
                (
                    "partition",
                    text(p.iter().map(|s| s.split.clone()).collect()),
                ),
                ("rows", numbers(p.iter().map(|s| s.rows).collect())),
                (
                    "position",
                    text(p.iter().map(|s| opt(s.position)).collect()),
                ),
                ("lag", text(p.iter().map(|s| opt(s.lag)).collect())),
                (
                    "watermark",
                    text(p.iter().map(|s| opt(s.watermark)).collect()),
                ),
                (
                    "last record",
                    text(
                        p.iter()
                            .map(|s| {
                                s.last_record
                                    .map(|t| format!("{:.1} s ago", (now - t) as f64 / 1000.0))
                                    .unwrap_or_default()
                            })
                            .collect(),
                    ),
                ),
            ]),
        ));
    }

    let mut hot = Vec::new();
    for o in m.by_operator() {
        for k in m.hot_keys(o.node) {
            hot.push((format!("[{}] {}", o.node, o.operator), k));
        }
    }
    if !hot.is_empty() {
        tables.push((
            "hot keys".to_string(),
            table(vec![
                (
                    "operator",
                    text(hot.iter().map(|(o, _)| o.clone()).collect()),
                ),
                (
                    "key",
                    text(hot.iter().map(|(_, k)| k.key.clone()).collect()),
                ),
                ("rows", numbers(hot.iter().map(|(_, k)| k.count).collect())),
                (
                    "share %",
                    Arc::new(Float64Array::from(
                        hot.iter().map(|(_, k)| k.share * 100.0).collect::<Vec<_>>(),
                    )),
                ),
            ]),
        ));
    }

    if !m.tasks.is_empty() {
        // A cluster job: every task of the job, wherever it runs.
        let tasks = &m.tasks;
        tables.push((
            "tasks".to_string(),
            table(vec![
                (
                    "task",
                    text(
                        tasks
                            .iter()
                            .map(|t| format!("{}-{}", t.stage, t.task))
                            .collect(),
                    ),
                ),
                (
                    "process",
                    text(
                        tasks
                            .iter()
                            .map(|t| match (&t.process, t.local) {
                                (Some(p), true) => format!("{p} (this one)"),
                                (Some(p), false) => p.clone(),
                                (None, _) => "-".to_string(),
                            })
                            .collect(),
                    ),
                ),
                (
                    "lag",
                    text(
                        tasks
                            .iter()
                            .map(|t| t.lag.map(|l| l.to_string()).unwrap_or_default())
                            .collect(),
                    ),
                ),
            ]),
        ));
    }

    if !m.latency.is_empty() {
        let ms = |d: std::time::Duration| format!("{}", d.as_millis());
        tables.push((
            "latency targets".to_string(),
            table(vec![
                (
                    "sink",
                    text(m.latency.iter().map(|l| l.sink.clone()).collect()),
                ),
                (
                    "target ms",
                    text(m.latency.iter().map(|l| ms(l.target)).collect()),
                ),
                (
                    "p99 ms (last minute)",
                    text(
                        m.latency
                            .iter()
                            .map(|l| l.p99.map(ms).unwrap_or_else(|| "-".into()))
                            .collect(),
                    ),
                ),
                (
                    "ratio",
                    text(
                        m.latency
                            .iter()
                            .map(|l| l.ratio().map(|r| format!("{r:.2}")).unwrap_or_default())
                            .collect(),
                    ),
                ),
            ]),
        ));
    }

    if !m.alerts.is_empty() {
        tables.push((
            "alerts".to_string(),
            table(vec![
                (
                    "kind",
                    text(m.alerts.iter().map(|a| a.kind.name().to_string()).collect()),
                ),
                (
                    "subject",
                    text(m.alerts.iter().map(|a| a.subject.clone()).collect()),
                ),
                (
                    "message",
                    text(m.alerts.iter().map(|a| a.message.clone()).collect()),
                ),
                (
                    "for",
                    text(
                        m.alerts
                            .iter()
                            .map(|a| format!("{:.0} s", (now - a.since) as f64 / 1000.0))
                            .collect(),
                    ),
                ),
            ]),
        ));
    }

    let c = job.checkpoints();
    if c.completed + c.failed > 0 {
        tables.push((
            "checkpoints".to_string(),
            table(vec![
                ("completed", numbers(vec![c.completed])),
                ("failed", numbers(vec![c.failed])),
                (
                    "last id",
                    text(vec![c.last_id.map(|i| i.to_string()).unwrap_or_default()]),
                ),
                ("duration ms", numbers(vec![c.last_duration_ms])),
                ("size bytes", numbers(vec![c.last_size_bytes])),
                ("alignment ms", numbers(vec![c.last_alignment_ms])),
                (
                    "age",
                    text(vec![c
                        .last_completed_at
                        .map(|t| format!("{:.1} s", (now - t) as f64 / 1000.0))
                        .unwrap_or_default()]),
                ),
            ]),
        ));
    }
    tables
}
