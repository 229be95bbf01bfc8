//! Window assignment without aggregation: `SELECT * FROM TABLE(HOP(...))`
//! gives each row once per window it belongs to, with `window_start`,
//! `window_end` and `window_time` appended.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use super::{timestamps_millis, SliceWindows};
use crate::error::Result;
use crate::message::Millis;
use crate::operator::{Operator, OperatorContext};
use crate::row_watermark::{row_watermarks, with_row_watermark};

#[derive(Debug, Clone)]
pub struct AssignWindows {
    windows: SliceWindows,
    time_column: usize,
    /// Input columns plus the three window columns (no row watermark).
    schema: SchemaRef,
}

impl AssignWindows {
    pub fn new(windows: SliceWindows, time_column: usize, schema: SchemaRef) -> Self {
        AssignWindows {
            windows,
            time_column,
            schema: with_row_watermark(&schema),
        }
    }
}

fn as_timestamps(values: Vec<Millis>, target: &DataType) -> Result<ArrayRef> {
    let ms: ArrayRef = Arc::new(Int64Array::from(values));
    let ms = cast(&ms, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    Ok(cast(&ms, target)?)
}

impl Operator for AssignWindows {
    fn name(&self) -> &str {
        "assign windows"
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let times = timestamps_millis(batch.column(self.time_column).as_ref())?;
        let mut indices = Vec::new();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        for (row, t) in times.iter().enumerate() {
            let Some(t) = t else { continue };
            let slice_end = self.windows.slice_end(t);
            let (first, _, _) = self.windows.windows_of_slice(slice_end);
            for end in self.windows.window_ends_from(slice_end, first) {
                indices.push(row as u32);
                starts.push(self.windows.window_start(end));
                ends.push(end);
            }
        }
        if indices.is_empty() {
            return Ok(());
        }
        let rows = take_record_batch(&batch, &UInt32Array::from(indices))?;
        let wm = row_watermarks(&rows)?.clone();
        let mut columns: Vec<ArrayRef> = rows.columns()[..rows.num_columns() - 1].to_vec();
        let n = columns.len();
        let times: Vec<Millis> = ends.iter().map(|e| e - 1).collect();
        columns.push(as_timestamps(starts, self.schema.field(n).data_type())?);
        columns.push(as_timestamps(ends, self.schema.field(n + 1).data_type())?);
        columns.push(as_timestamps(times, self.schema.field(n + 2).data_type())?);
        columns.push(Arc::new(wm));
        ctx.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }
}
