//! `WITH (...)` options: lookup, parsing and checking for unknown keys.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use crate::registry::ConnectorError;

/// The options of one stream or sink, keys lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    values: BTreeMap<String, String>,
}

impl Options {
    pub fn new<K: AsRef<str>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Options {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.into()))
                .collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// These options without `key`.
    pub fn without(&self, key: &str) -> Self {
        let mut values = self.values.clone();
        values.remove(key);
        Options { values }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn require(&self, key: &str) -> Result<&str, ConnectorError> {
        self.get(key)
            .ok_or_else(|| ConnectorError::option(key, "is required"))
    }

    /// Parses `key` if present.
    pub fn parse<T: FromStr>(&self, key: &str) -> Result<Option<T>, ConnectorError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| ConnectorError::option(key, format!("'{v}' is not valid: {e}"))),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConnectorError> {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) if v == "true" => Ok(Some(true)),
            Some(v) if v == "false" => Ok(Some(false)),
            Some(v) => Err(ConnectorError::option(
                key,
                format!("'{v}' is not true or false"),
            )),
        }
    }

    /// A duration such as `10s`, `500 ms`, `1min`, `2 h` or plain ms.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, ConnectorError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_duration(v).map(Some).map_err(|e| {
                ConnectorError::option(
                    key,
                    format!("'{v}' is not a duration (e.g. '10s', '500ms', '1min'): {e}"),
                )
            }),
        }
    }

    /// A size such as `128MB`, `64kb`, `1 GiB` or plain bytes.
    pub fn bytes(&self, key: &str) -> Result<Option<u64>, ConnectorError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_bytes(v).map(Some).ok_or_else(|| {
                ConnectorError::option(key, format!("'{v}' is not a size (e.g. '128MB')"))
            }),
        }
    }

    /// Fails on keys that are neither in `known` nor start with one of
    /// `prefixes`, naming the closest known key: a typo in an option
    /// should not be silently ignored.
    pub fn check_known(
        &self,
        connector: &str,
        known: &[&str],
        prefixes: &[&str],
    ) -> Result<(), ConnectorError> {
        const COMMON: &[&str] = &[
            "connector",
            "format",
            "bad-data",
            "bad-data.path",
            "bad-data.topic",
            "late-data",
            "late-data.path",
            "latency.target",
            "sink.spill.path",
            "sink.spill.latency-threshold",
            "sink.spill.trip-count",
            "scan.watermark.idle-timeout",
            "scan.watermark.idle-advance",
        ];
        for key in self.values.keys() {
            let ok = known.contains(&key.as_str())
                || COMMON.contains(&key.as_str())
                || prefixes.iter().any(|p| key.starts_with(p))
                || key.starts_with("bad-data.properties.");
            if !ok {
                let nearest = known
                    .iter()
                    .chain(COMMON)
                    .map(|k| (strsim::levenshtein(key, k), *k))
                    .min_by_key(|(d, _)| *d)
                    .filter(|(d, _)| *d <= 3)
                    .map(|(_, k)| k);
                let hint = match nearest {
                    Some(k) => format!("did you mean '{k}'?"),
                    None => format!("options of '{connector}': {}", known.join(", ")),
                };
                return Err(ConnectorError::option(
                    key,
                    format!("is not an option of the '{connector}' connector; {hint}"),
                ));
            }
        }
        Ok(())
    }
}

/// A duration as Flink writes them (`10 s`, `500ms`, `1 min`, `2h`,
/// `1.5 s`): parsed by `humantime`, case-insensitively, after Flink's
/// spellings humantime lacks (`milli`, `millisecond`, `micro`, `nano`) are
/// mapped to its own. A bare number is milliseconds, Flink's default unit.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    let text = v.to_ascii_lowercase();
    let unit_at = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let unit = match unit.trim_end_matches('s') {
        "milli" | "millisecond" => "ms",
        "micro" | "microsecond" => "us",
        "nano" | "nanosecond" => "ns",
        _ => unit,
    };
    humantime::parse_duration(&format!("{number}{unit}")).map_err(|e| e.to_string())
}

/// A size as Flink writes them (`128mb`, `64 kb`, `1 GiB`, plain bytes):
/// binary units, so `64kb` is 64 × 1024 bytes as in Flink's `MemorySize`.
pub fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let v = v
        .strip_suffix("bytes")
        .or_else(|| v.strip_suffix("BYTES"))
        .unwrap_or(v);
    parse_size::Config::new().with_binary().parse_size(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        let ms = |v: &str| parse_duration(v).map(|d| d.as_millis());
        assert_eq!(ms("10s"), Ok(10_000));
        assert_eq!(ms("500 ms"), Ok(500));
        assert_eq!(ms("1min"), Ok(60_000));
        assert_eq!(ms("1 MIN"), Ok(60_000));
        assert_eq!(ms("2 h"), Ok(7_200_000));
        assert_eq!(ms("1.5 s"), Ok(1_500));
        assert_eq!(ms("250"), Ok(250));
        assert_eq!(ms("3 milliseconds"), Ok(3));
        assert_eq!(ms("7 milli"), Ok(7));
        assert_eq!(ms("1 day"), Ok(86_400_000));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert_eq!(parse_bytes("128MB"), Some(128 * 1024 * 1024));
        assert_eq!(parse_bytes("64 kb"), Some(64 * 1024));
        assert_eq!(parse_bytes("1 GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("1g"), Some(1 << 30));
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("100 bytes"), Some(100));
        assert_eq!(parse_bytes("lots"), None);
    }

    #[test]
    fn unknown_option_names_the_nearest() {
        let o = Options::new([("connector", "nexmark"), ("events.nmu", "10")]);
        let err = o.check_known("nexmark", &["events.num"], &[]).unwrap_err();
        assert!(
            err.to_string().contains("did you mean 'events.num'"),
            "{err}"
        );
    }
}
