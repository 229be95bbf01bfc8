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
            Some(v) => parse_duration(v).map(Some).ok_or_else(|| {
                ConnectorError::option(
                    key,
                    format!("'{v}' is not a duration (e.g. '10s', '500ms', '1min')"),
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
            "late-data",
            "late-data.path",
            "scan.watermark.idle-timeout",
            "scan.watermark.idle-advance",
        ];
        for key in self.values.keys() {
            let ok = known.contains(&key.as_str())
                || COMMON.contains(&key.as_str())
                || prefixes.iter().any(|p| key.starts_with(p));
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

fn split_number(v: &str) -> Option<(f64, String)> {
    let v = v.trim();
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let number: f64 = v[..end].parse().ok()?;
    Some((number, v[end..].trim().to_ascii_lowercase()))
}

pub fn parse_duration(v: &str) -> Option<Duration> {
    let (n, unit) = split_number(v)?;
    let ms = match unit.as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => n,
        "s" | "sec" | "secs" | "second" | "seconds" => n * 1e3,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60e3,
        "h" | "hour" | "hours" => n * 3600e3,
        "d" | "day" | "days" => n * 86400e3,
        _ => return None,
    };
    Some(Duration::from_micros((ms * 1000.0) as u64))
}

pub fn parse_bytes(v: &str) -> Option<u64> {
    let (n, unit) = split_number(v)?;
    let scale: f64 = match unit.as_str() {
        "" | "b" | "bytes" => 1.0,
        "kb" | "k" | "kib" => 1024.0,
        "mb" | "m" | "mib" => 1024.0 * 1024.0,
        "gb" | "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * scale) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("500 ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_bytes("128MB"), Some(128 * 1024 * 1024));
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
