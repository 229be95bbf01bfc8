//! The output columns of a window aggregation, in the order the SQL plan
//! expects them.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{EngineError, Result};
use crate::message::Millis;
use crate::row_watermark::with_row_watermark;

/// One output column of a window aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputColumn {
    WindowStart,
    WindowEnd,
    /// `window_end - 1 ms`, the window's rowtime.
    WindowTime,
    /// The i-th group key.
    Key(usize),
    /// The i-th aggregate's value.
    Aggregate(usize),
}

/// Output columns and their schema.
#[derive(Debug, Clone)]
pub struct OutputLayout {
    pub columns: Vec<OutputColumn>,
    /// The output schema, without the row watermark.
    pub schema: SchemaRef,
}

impl OutputLayout {
    pub fn new(columns: Vec<OutputColumn>, schema: SchemaRef) -> Result<Self> {
        if columns.len() != schema.fields().len() {
            return Err(EngineError::Graph(format!(
                "window output has {} columns but its schema {}",
                columns.len(),
                schema.fields().len()
            )));
        }
        Ok(OutputLayout { columns, schema })
    }

    /// Builds an output batch. `starts`/`ends` hold one value per output row.
    pub fn assemble(
        &self,
        starts: Vec<Millis>,
        ends: Vec<Millis>,
        keys: &[ArrayRef],
        values: &[ArrayRef],
        row_watermark: Millis,
    ) -> Result<RecordBatch> {
        let rows = ends.len();
        let times: Vec<Millis> = ends.iter().map(|e| e - 1).collect();
        let (starts, ends, times) = (
            Int64Array::from(starts),
            Int64Array::from(ends),
            Int64Array::from(times),
        );
        let mut out: Vec<ArrayRef> = Vec::with_capacity(self.columns.len() + 1);
        for (column, field) in self.columns.iter().zip(self.schema.fields()) {
            let array: ArrayRef = match column {
                OutputColumn::WindowStart => as_type(&starts, field.data_type())?,
                OutputColumn::WindowEnd => as_type(&ends, field.data_type())?,
                OutputColumn::WindowTime => as_type(&times, field.data_type())?,
                OutputColumn::Key(i) => keys
                    .get(*i)
                    .cloned()
                    .ok_or_else(|| EngineError::Graph(format!("missing key column {i}")))?,
                OutputColumn::Aggregate(i) => values
                    .get(*i)
                    .cloned()
                    .ok_or_else(|| EngineError::Graph(format!("missing aggregate {i}")))?,
            };
            let array = if array.data_type() != field.data_type() {
                cast(&array, field.data_type())?
            } else {
                array
            };
            out.push(array);
        }
        out.push(Arc::new(Int64Array::from_value(row_watermark, rows)));
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            with_row_watermark(&self.schema),
            out,
            &options,
        )?)
    }
}

/// Millisecond values as a column of `data_type` (a timestamp type).
fn as_type(values: &Int64Array, data_type: &DataType) -> Result<ArrayRef> {
    use datafusion::arrow::datatypes::TimeUnit;
    let millis: ArrayRef = Arc::new(values.clone());
    let as_ms = cast(&millis, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    Ok(cast(&as_ms, data_type)?)
}
