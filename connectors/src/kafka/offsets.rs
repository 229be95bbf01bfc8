//! Where a Kafka source starts reading and, when bounded, where it stops.

use std::collections::HashMap;

use crate::options::Options;
use crate::registry::ConnectorError;

/// The options that say where reading starts and stops.
pub(crate) const POSITION_OPTIONS: &[&str] = &[
    "scan.startup.mode",
    "scan.startup.timestamp-millis",
    "scan.startup.specific-offsets",
    "scan.bounded.mode",
    "scan.bounded.timestamp-millis",
    "scan.bounded.specific-offsets",
];

/// `'scan.startup.mode'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupMode {
    Earliest,
    Latest,
    GroupOffsets,
    Timestamp(i64),
    /// Partition → offset; unlisted partitions start at the earliest.
    Specific(HashMap<i32, i64>),
}

/// `'scan.bounded.mode'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundedMode {
    Unbounded,
    /// The end of each partition when the job starts.
    Latest,
    GroupOffsets,
    Timestamp(i64),
    Specific(HashMap<i32, i64>),
}

/// Flink's `'partition:0,offset:42;partition:1,offset:300'`.
fn specific_offsets(options: &Options, key: &str) -> Result<HashMap<i32, i64>, ConnectorError> {
    let text = options.require(key)?;
    let mut out = HashMap::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let mut partition = None;
        let mut offset = None;
        for kv in part.split(',') {
            match kv.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("partition", v)) => partition = v.parse::<i32>().ok(),
                Some(("offset", v)) => offset = v.parse::<i64>().ok(),
                _ => {}
            }
        }
        match (partition, offset) {
            (Some(p), Some(o)) => {
                out.insert(p, o);
            }
            _ => {
                return Err(ConnectorError::option(
                    key,
                    format!("'{part}' is not 'partition:N,offset:M'"),
                ))
            }
        }
    }
    Ok(out)
}

fn timestamp(options: &Options, key: &str) -> Result<i64, ConnectorError> {
    options
        .parse::<i64>(key)?
        .ok_or_else(|| ConnectorError::option(key, "is required for the 'timestamp' mode"))
}

impl StartupMode {
    pub fn parse(options: &Options) -> Result<Self, ConnectorError> {
        Ok(match options.get("scan.startup.mode").unwrap_or("group-offsets") {
            "earliest-offset" => StartupMode::Earliest,
            "latest-offset" => StartupMode::Latest,
            "group-offsets" if options.get("properties.group.id").is_none() => StartupMode::Earliest,
            "group-offsets" => StartupMode::GroupOffsets,
            "timestamp" => StartupMode::Timestamp(timestamp(options, "scan.startup.timestamp-millis")?),
            "specific-offsets" => StartupMode::Specific(specific_offsets(options, "scan.startup.specific-offsets")?),
            other => {
                return Err(ConnectorError::option(
                    "scan.startup.mode",
                    format!("'{other}' is not earliest-offset, latest-offset, group-offsets, timestamp or specific-offsets"),
                ))
            }
        })
    }
}

impl BoundedMode {
    pub fn parse(options: &Options) -> Result<Self, ConnectorError> {
        Ok(match options.get("scan.bounded.mode").unwrap_or("unbounded") {
            "unbounded" => BoundedMode::Unbounded,
            "latest-offset" => BoundedMode::Latest,
            "group-offsets" => BoundedMode::GroupOffsets,
            "timestamp" => BoundedMode::Timestamp(timestamp(options, "scan.bounded.timestamp-millis")?),
            "specific-offsets" => BoundedMode::Specific(specific_offsets(options, "scan.bounded.specific-offsets")?),
            other => {
                return Err(ConnectorError::option(
                    "scan.bounded.mode",
                    format!("'{other}' is not unbounded, latest-offset, group-offsets, timestamp or specific-offsets"),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_offsets_parse_as_flink_writes_them() {
        let o = Options::new([
            ("scan.startup.mode", "specific-offsets"),
            (
                "scan.startup.specific-offsets",
                "partition:0,offset:42;partition:1,offset:300",
            ),
        ]);
        assert_eq!(
            StartupMode::parse(&o).unwrap(),
            StartupMode::Specific(HashMap::from([(0, 42), (1, 300)]))
        );
        let bad = Options::new([
            ("scan.bounded.mode", "specific-offsets"),
            ("scan.bounded.specific-offsets", "p0"),
        ]);
        assert!(BoundedMode::parse(&bad).is_err());
    }
}
