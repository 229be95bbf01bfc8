//! Event-time and processing-time window aggregation.
//!
//! Flink semantics: windows are `[start, end)`, a window fires once, when the
//! watermark reaches `end - 1`, and `window_time` is `end - 1`. Lateness is
//! per window and per row: a row is late for a window when that window had
//! already fired by the row's own watermark (see [`crate::row_watermark`]) or
//! by the operator's; it still counts in the later windows it belongs to.
//!
//! With early or late firing ([`EmitStrategy`], Flink's
//! `table.exec.emit.*`), a window also emits before it closes, and after
//! it for rows within the allowed lateness, as a changelog.

mod assign;
mod emit;
mod geometry;
mod layout;
mod session;
mod slicing;

pub use assign::AssignWindows;
pub use emit::EmitStrategy;
pub use geometry::{fmt_ms, SliceWindows};
pub use layout::{OutputColumn, OutputLayout};
pub use session::SessionWindowAggregate;
pub use slicing::{partial_key_columns, partial_schema, AggregateMode, WindowAggregate};

use datafusion::arrow::array::{Array, Int64Array, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DataFusionError;

use crate::error::Result;
use crate::message::{Millis, NO_WATERMARK};
use crate::row_watermark::row_watermarks;
use crate::state::StateTable;

/// Where a window operator takes each row's time from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The event-time column at this index (any timestamp type).
    EventTime { column: usize },
    /// The operator's wall clock when the row arrives (`PROCTIME()`).
    ProcessingTime,
}

/// Per-row times and lateness thresholds of a batch.
pub(crate) struct RowTimes {
    /// Event time in ms; `None` where the time is null.
    pub times: Vec<Option<Millis>>,
    /// A window is late for row `i` when `end - 1 <= thresholds[i]`.
    pub thresholds: Vec<Millis>,
}

impl TimeSource {
    pub fn is_processing_time(&self) -> bool {
        matches!(self, TimeSource::ProcessingTime)
    }

    /// How often a processing-time window checks the clock.
    pub(crate) fn timer_interval(&self) -> Option<std::time::Duration> {
        self.is_processing_time()
            .then(|| std::time::Duration::from_millis(100))
    }

    /// Times and lateness thresholds of each row. `fired` is the watermark
    /// up to which the operator has already fired windows.
    pub(crate) fn row_times(
        &self,
        batch: &RecordBatch,
        fired: Millis,
        now: Millis,
    ) -> Result<RowTimes> {
        let n = batch.num_rows();
        match self {
            TimeSource::ProcessingTime => Ok(RowTimes {
                times: vec![Some(now); n],
                thresholds: vec![NO_WATERMARK; n],
            }),
            TimeSource::EventTime { column } => {
                let times = timestamps_millis(batch.column(*column).as_ref())?;
                let wms = row_watermarks(batch)?;
                let thresholds = wms.values().iter().map(|w| (*w).max(fired)).collect();
                Ok(RowTimes {
                    times: times.iter().collect(),
                    thresholds,
                })
            }
        }
    }
}

/// A window operator's watermark in a checkpoint: windows it already fired
/// stay fired after a restore.
pub(crate) static WATERMARK_TABLE: std::sync::LazyLock<StateTable> =
    std::sync::LazyLock::new(|| StateTable::new("watermark", [("watermark", DataType::Int64)]));

/// A timestamp (any unit) or integer column as milliseconds.
pub fn timestamps_millis(array: &dyn Array) -> Result<Int64Array> {
    let millis = match array.data_type() {
        DataType::Int64 => {
            return Ok(array
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .unwrap_or_else(|| Int64Array::from(Vec::<i64>::new())))
        }
        DataType::Timestamp(TimeUnit::Millisecond, None) => array.slice(0, array.len()),
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            cast(array, &DataType::Timestamp(TimeUnit::Millisecond, None))?
        }
        other => {
            return Err(DataFusionError::Plan(format!(
                "a time attribute must be a TIMESTAMP, found {other}"
            ))
            .into())
        }
    };
    let ts = millis
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(|| DataFusionError::Internal("timestamp cast".into()))?;
    Ok(Int64Array::new(ts.values().clone(), ts.nulls().cloned()))
}
