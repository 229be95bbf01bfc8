//! Progress of running jobs on stderr, when stderr is a terminal: events
//! read, events per second, the watermark, and for bounded sources a bar to
//! their end.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use weir::Job;

/// Shows progress until dropped. Does nothing when stderr is not a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(jobs: &[Job]) -> Self {
        if jobs.is_empty() || !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                task: None,
            };
        }
        let total: Option<u64> = jobs.iter().map(|j| j.expected_rows()).sum();
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} events  {per_sec}  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {pos} events  {per_sec}  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        let jobs = jobs.to_vec();
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let (mut events, mut watermark) = (0u64, None::<i64>);
                for job in &jobs {
                    for s in job
                        .metrics()
                        .subtasks
                        .iter()
                        .filter(|s| s.operator.starts_with("source:"))
                    {
                        events += s.rows_out;
                        watermark = match (watermark, s.watermark) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                }
                shown.set_position(events);
                if let Some(w) = watermark.and_then(chrono::DateTime::from_timestamp_millis) {
                    shown.set_message(format!("watermark {}", w.format("%Y-%m-%d %H:%M:%S")));
                }
            }
        });
        Progress {
            bar: Some(bar),
            task: Some(task),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
