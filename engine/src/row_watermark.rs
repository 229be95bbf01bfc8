//! The row watermark: a hidden last column on every batch.
//!
//! Within one source split the watermark is defined per row: the largest
//! watermark candidate (event time minus the declared delay) of the rows
//! *before* this one. Carrying it with the row lets a window operator decide
//! lateness exactly as if rows had arrived one by one, however they were
//! batched, so the same input gives the same output at any batch size.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{EngineError, Result};
use crate::message::Millis;

/// Name of the row-watermark column.
pub const ROW_WATERMARK: &str = "_weir_row_watermark";

/// `schema` plus the trailing row-watermark column.
pub fn with_row_watermark(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(ROW_WATERMARK, DataType::Int64, false)));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `schema` without the trailing row-watermark column, if it has one.
pub fn without_row_watermark(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    if fields.last().is_some_and(|f| f.name() == ROW_WATERMARK) {
        fields.pop();
    }
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The row watermarks of a batch (its last column).
pub fn row_watermarks(batch: &RecordBatch) -> Result<&Int64Array> {
    let named = batch
        .schema_ref()
        .fields()
        .last()
        .is_some_and(|f| f.name() == ROW_WATERMARK);
    batch
        .columns()
        .last()
        .filter(|_| named)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| EngineError::Graph("batch has no row-watermark column".into()))
}

/// Appends `watermarks` as the row-watermark column.
pub fn attach(batch: &RecordBatch, watermarks: ArrayRef) -> Result<RecordBatch> {
    let schema = with_row_watermark(batch.schema_ref());
    let mut columns = batch.columns().to_vec();
    columns.push(watermarks);
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema, columns, &options,
    )?)
}

/// Appends a row-watermark column holding `watermark` for every row.
pub fn attach_constant(batch: &RecordBatch, watermark: Millis) -> Result<RecordBatch> {
    attach(
        batch,
        Arc::new(Int64Array::from_value(watermark, batch.num_rows())),
    )
}

/// Drops the row-watermark column: what sinks and callers see.
pub fn strip(batch: &RecordBatch) -> RecordBatch {
    let n = batch.num_columns();
    if n > 0 && batch.schema_ref().field(n - 1).name() == ROW_WATERMARK {
        let indices: Vec<usize> = (0..n - 1).collect();
        // Projecting a subset of existing columns cannot fail.
        batch.project(&indices).unwrap_or_else(|_| batch.clone())
    } else {
        batch.clone()
    }
}
