//! Session settings from `SET 'key' = 'value'` (Flink's keys).

use std::collections::BTreeMap;
use std::time::Duration;

use weir_connectors::options::parse_duration;
use weir_sql::SqlError;

/// Keys Weir understands; any other key is kept (as Flink does) but has
/// no effect.
pub const KNOWN: &[(&str, &str)] = &[
    (
        "parallelism.default",
        "subtasks per operator (default: number of cores)",
    ),
    (
        "table.exec.source.idle-timeout",
        "default 'scan.watermark.idle-timeout' of every stream",
    ),
    (
        "table.exec.state.ttl",
        "how long a GROUP BY without a window keeps a key it has not seen (e.g. '1 h'); needed for one on an unbounded stream",
    ),
    (
        "pipeline.name",
        "the job name; checkpoints of a job are kept under it",
    ),
    (
        "execution.checkpointing.interval",
        "take a checkpoint this often (e.g. '10s'); off by default",
    ),
    (
        "state.checkpoints.dir",
        "where checkpoints go: a local directory or an object store URL",
    ),
    (
        "state.checkpoints.num-retained",
        "complete checkpoints to keep (default 3)",
    ),
    (
        "execution.checkpointing.timeout",
        "abandon a checkpoint not complete after this (default 60s)",
    ),
    (
        "execution.savepoint.path",
        "start the next job from this checkpoint",
    ),
];

#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SqlError> {
        let key = key.trim().to_string();
        match key.as_str() {
            "parallelism.default" => {
                let n: usize = value.trim().parse().map_err(|_| {
                    SqlError::new(format!(
                        "'parallelism.default' must be a positive number, got '{value}'"
                    ))
                })?;
                if n == 0 || n > 1024 {
                    return Err(SqlError::new(
                        "'parallelism.default' must be between 1 and 1024",
                    ));
                }
            }
            "table.exec.source.idle-timeout"
            | "execution.checkpointing.interval"
            | "execution.checkpointing.timeout" => {
                parse_duration(value).ok_or_else(|| {
                    SqlError::new(format!(
                        "'{key}' must be a duration like '5s', got '{value}'"
                    ))
                })?;
            }
            _ => {}
        }
        self.values.insert(key, value.trim().to_string());
        Ok(())
    }

    pub fn reset(&mut self, key: Option<&str>) {
        match key {
            Some(k) => {
                self.values.remove(k);
            }
            None => self.values.clear(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Subtasks per operator: `parallelism.default` or the number of cores.
    pub fn parallelism(&self) -> usize {
        self.get("parallelism.default")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn idle_timeout(&self) -> Result<Option<Duration>, SqlError> {
        Ok(self
            .get("table.exec.source.idle-timeout")
            .and_then(parse_duration)
            .filter(|d| !d.is_zero()))
    }

    /// `table.exec.state.ttl`, when set and not zero.
    pub fn state_ttl(&self) -> Result<Option<Duration>, SqlError> {
        match self.get("table.exec.state.ttl") {
            None => Ok(None),
            Some(v) => parse_duration(v)
                .map(|d| Some(d).filter(|d| !d.is_zero()))
                .ok_or_else(|| {
                    SqlError::new(format!(
                        "'table.exec.state.ttl' must be a duration like '1 h', got '{v}'"
                    ))
                }),
        }
    }

    pub fn job_name(&self) -> Option<&str> {
        self.get("pipeline.name")
    }

    /// `execution.checkpointing.interval`, when checkpoints are on.
    pub fn checkpoint_interval(&self) -> Result<Option<Duration>, SqlError> {
        match self.get("execution.checkpointing.interval") {
            None => Ok(None),
            Some(v) => parse_duration(v)
                .map(|d| Some(d).filter(|d| !d.is_zero()))
                .ok_or_else(|| SqlError::new(format!("'execution.checkpointing.interval' must be a duration like '10s', got '{v}'"))),
        }
    }

    /// Where checkpoints go: `state.checkpoints.dir` (or Flink's newer
    /// `execution.checkpointing.dir`), else `weir-checkpoints` here.
    pub fn checkpoint_dir(&self) -> &str {
        self.get("state.checkpoints.dir")
            .or(self.get("execution.checkpointing.dir"))
            .unwrap_or("weir-checkpoints")
    }

    /// Complete checkpoints to keep (`state.checkpoints.num-retained`).
    pub fn checkpoints_retained(&self) -> usize {
        self.get("state.checkpoints.num-retained")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
    }

    /// `execution.checkpointing.timeout`.
    pub fn checkpoint_timeout(&self) -> Duration {
        self.get("execution.checkpointing.timeout")
            .and_then(parse_duration)
            .unwrap_or(Duration::from_secs(60))
    }

    /// A checkpoint to start from (`execution.savepoint.path`, as Flink
    /// names it; `weir run --from-checkpoint`).
    pub fn restore_path(&self) -> Option<&str> {
        self.get("execution.savepoint.path")
    }
}
