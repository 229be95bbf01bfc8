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
    ("pipeline.name", "the job name"),
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
            "table.exec.source.idle-timeout" => {
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

    pub fn job_name(&self) -> Option<&str> {
        self.get("pipeline.name")
    }
}
