//! Session settings (`SET 'key' = 'value'`, Flink's keys): every key Weir
//! knows is declared once in [`SETTINGS`], with its type, default and a
//! one-line doc. `SET` checks the value against the type; an unknown key
//! is an error that names the nearest known one; `SET;` lists them all;
//! `RESET 'key'` restores the default.
//!
//! ```
//! use weir_planner::Settings;
//! let mut settings = Settings::default();
//! settings.set("table.exec.state.ttl", "1 h").unwrap();
//! assert_eq!(settings.state_ttl().unwrap().as_secs(), 3600);
//! let typo = settings.set("table.exec.sate.ttl", "1 h").unwrap_err();
//! assert!(typo.hint().contains("did you mean 'table.exec.state.ttl'?"));
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use weir_connectors::options::{parse_bytes, parse_duration};

/// What a setting's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number in `min..=max`.
    Count {
        min: u64,
        max: u64,
    },
    /// A duration: `10s`, `1 h`, `500 ms`, `1min`; a bare number is
    /// milliseconds, as in Flink.
    Duration,
    /// A size in bytes: `128mb`, `1 gb` (binary units, as Flink's).
    Size,
    Bool,
    /// Any text (a name, a path, an address).
    Text,
    /// One of these words.
    Choice(&'static [&'static str]),
}

impl Kind {
    /// Why `value` is not of this kind, if it is not.
    fn check(&self, value: &str) -> Result<(), String> {
        let ok = match self {
            Kind::Count { min, max } => {
                return match value.parse::<u64>() {
                    Ok(n) if (*min..=*max).contains(&n) => Ok(()),
                    _ => Err(format!("a whole number from {min} to {max}")),
                }
            }
            Kind::Duration => {
                return parse_duration(value)
                    .map(|_| ())
                    .map_err(|e| format!("{} ({e})", self.describe()))
            }
            Kind::Size => parse_bytes(value).is_some(),
            Kind::Bool => matches!(value.to_ascii_lowercase().as_str(), "true" | "false"),
            Kind::Text => !value.is_empty(),
            Kind::Choice(words) => words.iter().any(|w| w.eq_ignore_ascii_case(value)),
        };
        if ok {
            Ok(())
        } else {
            Err(self.describe())
        }
    }

    fn describe(&self) -> String {
        match self {
            Kind::Count { min, max } => format!("a whole number from {min} to {max}"),
            Kind::Duration => "a duration such as '10s', '500 ms' or '1 h'".into(),
            Kind::Size => "a size such as '128mb' or '1 gb'".into(),
            Kind::Bool => "'true' or 'false'".into(),
            Kind::Text => "a non-empty text".into(),
            Kind::Choice(words) => format!("one of {}", words.join(", ")),
        }
    }
}

/// One setting: its key, type, default and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub kind: Kind,
    /// Shown by `SET;` when unset; `None` when the default is computed or
    /// the setting is off.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

const fn setting(
    key: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    doc: &'static str,
) -> Setting {
    Setting {
        key,
        kind,
        default,
        doc,
    }
}

/// Every session setting Weir knows.
pub const SETTINGS: &[Setting] = &[
    setting("parallelism.default", Kind::Count { min: 1, max: 1024 }, None, "subtasks per operator (default: the number of cores)"),
    setting("pipeline.name", Kind::Text, None, "the job name; a job's checkpoints are kept under it (default: insert-into-<sink>)"),
    setting("table.exec.source.idle-timeout", Kind::Duration, None, "default 'scan.watermark.idle-timeout' of every stream; off by default"),
    setting("table.exec.state.ttl", Kind::Duration, None, "how long a GROUP BY without a window keeps a key it has not seen (e.g. '1 h'); needed on an unbounded stream"),
    setting("execution.checkpointing.interval", Kind::Duration, None, "take a checkpoint this often (e.g. '10s'); off by default"),
    setting("execution.checkpointing.timeout", Kind::Duration, Some("60s"), "abandon a checkpoint not complete after this"),
    setting("state.checkpoints.dir", Kind::Text, Some("weir-checkpoints"), "where checkpoints go: a local directory or an object store URL"),
    setting("execution.checkpointing.dir", Kind::Text, None, "Flink's newer name of 'state.checkpoints.dir'"),
    setting("state.checkpoints.num-retained", Kind::Count { min: 1, max: 1000 }, Some("3"), "complete checkpoints to keep"),
    setting("execution.savepoint.path", Kind::Text, None, "start the next job from this checkpoint (weir run --from-checkpoint)"),
    setting("watermark.stall-timeout", Kind::Duration, Some("30s"), "alert when a watermark has not moved for this long while rows arrive"),
    setting("metrics.address", Kind::Text, None, "serve Prometheus metrics on this address (e.g. '127.0.0.1:9249')"),
    setting("metrics.latency.interval", Kind::Duration, Some("1s"), "how often sources send latency markers; '0' turns them off"),
    setting("latency.target", Kind::Duration, None, "the end-to-end p99 within which every sink's rows should be visible (a sink's 'latency.target' option overrides); a miss over a sliding minute is an alert and weir_latency_target_ratio > 1"),
    setting("metrics.detailed", Kind::Bool, Some("true"), "per-batch timing, histograms, hot keys and latency markers; 'false' keeps counters only"),
    setting("execution.runtime-mode", Kind::Choice(&["automatic", "streaming", "batch"]), Some("automatic"), "'streaming': a GROUP BY without a window emits its changes as rows arrive, on bounded input too; 'automatic': on bounded input it emits its final rows once, at the end; 'batch': as 'automatic', and every source must be bounded"),
    setting("execution.target", Kind::Choice(&["local", "kafka"]), Some("local"), "where a job runs: 'local', this process on all its cores; 'kafka', one job shared by every weir process running the same file, coordinated through Kafka consumer groups and the checkpoint store (docs/cluster-protocol.md; weir run --cluster)"),
    setting("pipeline.max-parallelism", Kind::Count { min: 1, max: 32768 }, Some("16"), "a cluster job's tasks per key-shuffled stage: the partitions of its repartition topic, fixed for the job's life"),
    setting("cluster.repartition.replication", Kind::Count { min: 1, max: 32 }, Some("1"), "copies of each record between a cluster job's stages (the repartition topics' replication factor)"),
    setting("cluster.repartition.retention", Kind::Duration, Some("7d"), "how long a cluster job's repartition topics keep records"),
    setting("table.exec.emit.early-fire.enabled", Kind::Bool, Some("false"), "a window aggregate also emits its result so far before the window closes, as updates (-U/+U)"),
    setting("table.exec.emit.early-fire.delay", Kind::Duration, None, "how often early firing emits: '0' after every input batch, else every this much processing time"),
    setting("table.exec.emit.late-fire.enabled", Kind::Bool, Some("false"), "rows within 'table.exec.emit.allow-lateness' update a closed window every 'table.exec.emit.late-fire.delay' (without it: at once)"),
    setting("table.exec.emit.late-fire.delay", Kind::Duration, None, "how often late firing emits: '0' after every input batch, else every this much processing time"),
    setting("table.exec.emit.allow-lateness", Kind::Duration, None, "how long after its end (event time) a window still takes rows, emitting updates; later rows go to the late-data output"),
    setting("sql-client.execution.result-mode", Kind::Choice(&["table", "changelog", "tableau"]), Some("table"), "how the shell and weir run show an updating result: 'table' (the result, changed in place), 'changelog' (each change with an op column)"),
];

/// The setting of `key`, if Weir knows it.
pub fn setting_of(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Why a `SET` or `RESET` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("unknown setting '{key}'")]
    Unknown {
        key: String,
        /// The nearest known key.
        nearest: Option<&'static str>,
    },
    #[error("'{key}' must be {expected}, got '{value}'")]
    Invalid {
        key: &'static str,
        value: String,
        expected: String,
    },
}

impl SettingError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            SettingError::Unknown {
                nearest: Some(k), ..
            } => format!("did you mean '{k}'? SET; lists every setting"),
            SettingError::Unknown { .. } => "SET; lists every setting".into(),
            SettingError::Invalid { key, .. } => {
                setting_of(key).map_or_else(String::new, |s| s.doc.to_string())
            }
        }
    }
}

/// The values set in a session.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<&'static str, String>,
}

impl Settings {
    /// The value set for `key`, if any (not the default).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Sets `key` after checking that Weir knows it and the value fits.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SettingError> {
        let setting = known(key.trim())?;
        let value = value.trim();
        setting
            .kind
            .check(value)
            .map_err(|expected| SettingError::Invalid {
                key: setting.key,
                value: value.to_string(),
                expected,
            })?;
        self.values.insert(setting.key, value.to_string());
        Ok(())
    }

    /// Restores `key` (or every key) to its default.
    pub fn reset(&mut self, key: Option<&str>) -> Result<(), SettingError> {
        match key {
            Some(k) => {
                self.values.remove(known(k.trim())?.key);
            }
            None => self.values.clear(),
        }
        Ok(())
    }

    /// Every setting with its value (set, or the default; empty when none)
    /// and its doc, for `SET;`.
    pub fn listing(&self) -> Vec<(&'static str, String, &'static str)> {
        SETTINGS
            .iter()
            .map(|s| {
                let value = self
                    .get(s.key)
                    .or(s.default)
                    .unwrap_or_default()
                    .to_string();
                (s.key, value, s.doc)
            })
            .collect()
    }

    /// The values set, for inspection.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// A duration setting, set or by default; `None` when neither.
    pub fn duration(&self, key: &str) -> Option<Duration> {
        self.get(key)
            .or_else(|| setting_of(key).and_then(|s| s.default))
            .and_then(|v| parse_duration(v).ok())
    }

    /// A duration setting that is off when unset or zero.
    fn duration_on(&self, key: &str) -> Option<Duration> {
        self.duration(key).filter(|d| !d.is_zero())
    }

    fn count(&self, key: &str) -> Option<usize> {
        self.get(key)
            .or_else(|| setting_of(key).and_then(|s| s.default))
            .and_then(|v| v.parse().ok())
    }

    /// Subtasks per operator: `parallelism.default` or the number of cores.
    pub fn parallelism(&self) -> usize {
        self.count("parallelism.default")
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// `table.exec.source.idle-timeout`, when on.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.duration_on("table.exec.source.idle-timeout")
    }

    /// `table.exec.state.ttl`, when set and not zero.
    pub fn state_ttl(&self) -> Option<Duration> {
        self.duration_on("table.exec.state.ttl")
    }

    /// Whether a bounded input streams its changes as an unbounded one
    /// does (`execution.runtime-mode` = `streaming`).
    pub fn streaming_mode(&self) -> bool {
        self.get("execution.runtime-mode")
            .is_some_and(|m| m.eq_ignore_ascii_case("streaming"))
    }

    /// Whether every source must be bounded (`execution.runtime-mode` =
    /// `batch`).
    pub fn batch_mode(&self) -> bool {
        self.get("execution.runtime-mode")
            .is_some_and(|m| m.eq_ignore_ascii_case("batch"))
    }

    /// Whether updating results are shown as their changes
    /// (`sql-client.execution.result-mode` = `changelog`).
    pub fn changelog_results(&self) -> bool {
        self.get("sql-client.execution.result-mode")
            .is_some_and(|m| m.eq_ignore_ascii_case("changelog"))
    }

    pub fn job_name(&self) -> Option<&str> {
        self.get("pipeline.name")
    }

    /// `execution.checkpointing.interval`, when checkpoints are on.
    pub fn checkpoint_interval(&self) -> Option<Duration> {
        self.duration_on("execution.checkpointing.interval")
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
        self.count("state.checkpoints.num-retained").unwrap_or(3)
    }

    /// `execution.checkpointing.timeout`.
    pub fn checkpoint_timeout(&self) -> Duration {
        self.duration("execution.checkpointing.timeout")
            .unwrap_or(Duration::from_secs(60))
    }

    /// A checkpoint to start from (`execution.savepoint.path`, as Flink
    /// names it; `weir run --from-checkpoint`).
    pub fn restore_path(&self) -> Option<&str> {
        self.get("execution.savepoint.path")
    }

    /// `watermark.stall-timeout`.
    pub fn stall_timeout(&self) -> Duration {
        self.duration("watermark.stall-timeout")
            .unwrap_or(Duration::from_secs(30))
    }

    /// `execution.target` is `kafka`: the job is shared by processes.
    pub fn cluster(&self) -> bool {
        self.get("execution.target") == Some("kafka")
    }

    /// A cluster job's tasks per key-shuffled stage.
    pub fn max_parallelism(&self) -> usize {
        self.count("pipeline.max-parallelism").unwrap_or(16)
    }

    /// Replication factor and retention of a cluster job's repartition topics.
    pub fn repartition_topics(&self) -> (usize, Duration) {
        (
            self.count("cluster.repartition.replication").unwrap_or(1),
            self.duration("cluster.repartition.retention")
                .unwrap_or(Duration::from_secs(7 * 24 * 3600)),
        )
    }

    /// `latency.target`: every sink's, unless its own option says.
    pub fn latency_target(&self) -> Option<Duration> {
        self.duration("latency.target")
    }

    /// `metrics.latency.interval`; `None` turns latency markers off.
    pub fn latency_interval(&self) -> Option<Duration> {
        self.duration_on("metrics.latency.interval")
    }

    /// Whether a boolean setting is `true`.
    fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// Early firing (`table.exec.emit.early-fire.*`): `None` when off,
    /// else its delay, `None` inside when the delay is unset.
    pub fn early_fire(&self) -> Option<Option<Duration>> {
        self.flag("table.exec.emit.early-fire.enabled")
            .then(|| self.duration("table.exec.emit.early-fire.delay"))
    }

    /// Late firing (`table.exec.emit.late-fire.*`), as [`Self::early_fire`].
    pub fn late_fire(&self) -> Option<Option<Duration>> {
        self.flag("table.exec.emit.late-fire.enabled")
            .then(|| self.duration("table.exec.emit.late-fire.delay"))
    }

    /// `table.exec.emit.allow-lateness`, when set and not zero.
    pub fn allow_lateness(&self) -> Option<Duration> {
        self.duration_on("table.exec.emit.allow-lateness")
    }

    /// `metrics.detailed`.
    pub fn detailed_metrics(&self) -> bool {
        !self
            .get("metrics.detailed")
            .is_some_and(|v| v.eq_ignore_ascii_case("false"))
    }

    /// `metrics.address`, when set.
    pub fn metrics_address(&self) -> Option<&str> {
        self.get("metrics.address")
    }
}

/// The setting of `key`, or an error naming the nearest one.
fn known(key: &str) -> Result<&'static Setting, SettingError> {
    setting_of(key).ok_or_else(|| SettingError::Unknown {
        key: key.to_string(),
        nearest: SETTINGS
            .iter()
            .map(|s| (strsim::jaro_winkler(key, s.key), s.key))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| k),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_against_their_kind() {
        let mut s = Settings::default();
        s.set("parallelism.default", "4").unwrap();
        assert_eq!(s.parallelism(), 4);
        for (key, bad) in [
            ("parallelism.default", "0"),
            ("parallelism.default", "many"),
            ("table.exec.state.ttl", "soon"),
            ("metrics.detailed", "yes"),
        ] {
            let e = s.set(key, bad).unwrap_err();
            assert!(
                matches!(e, SettingError::Invalid { .. }),
                "{key} = {bad}: {e}"
            );
        }
        s.set("table.exec.state.ttl", "1 h").unwrap();
        assert_eq!(s.state_ttl(), Some(Duration::from_secs(3600)));
        s.set("execution.checkpointing.interval", "500").unwrap();
        assert_eq!(s.checkpoint_interval(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn an_unknown_key_names_the_nearest() {
        let mut s = Settings::default();
        let e = s.set("table.exec.sate.ttl", "1 h").unwrap_err();
        assert_eq!(
            e,
            SettingError::Unknown {
                key: "table.exec.sate.ttl".into(),
                nearest: Some("table.exec.state.ttl")
            }
        );
        assert!(e.hint().contains("'table.exec.state.ttl'"));
        assert!(s.reset(Some("nope.at.all")).is_err());
    }

    #[test]
    fn reset_restores_the_default_and_listing_shows_every_key() {
        let mut s = Settings::default();
        s.set("state.checkpoints.num-retained", "7").unwrap();
        assert_eq!(s.checkpoints_retained(), 7);
        s.reset(Some("state.checkpoints.num-retained")).unwrap();
        assert_eq!(s.checkpoints_retained(), 3);
        let listing = s.listing();
        assert_eq!(listing.len(), SETTINGS.len());
        assert!(listing
            .iter()
            .any(|(k, v, _)| *k == "execution.checkpointing.timeout" && v == "60s"));
    }
}
