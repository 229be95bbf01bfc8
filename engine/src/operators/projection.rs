//! Projection: DataFusion physical expressions evaluated on each batch.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;
use crate::operator::{Operator, OperatorContext};
use crate::row_watermark::{row_watermarks, with_row_watermark};

/// Computes `exprs` over each batch; the row watermark passes through.
#[derive(Debug, Clone)]
pub struct Projection {
    name: String,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// The output schema, row watermark included.
    schema: SchemaRef,
}

impl Projection {
    /// `schema` is the output schema without the row watermark.
    pub fn new(
        name: impl Into<String>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Self {
        Projection {
            name: name.into(),
            exprs,
            schema: with_row_watermark(&schema),
        }
    }

    /// Evaluates the projection. `batch` may or may not carry the row
    /// watermark; the result carries it when the input did.
    pub fn project(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let mut columns = Vec::with_capacity(self.exprs.len() + 1);
        for expr in &self.exprs {
            columns.push(expr.evaluate(batch)?.into_array(rows)?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        match row_watermarks(batch) {
            Ok(wm) => {
                columns.push(Arc::new(wm.clone()));
                Ok(RecordBatch::try_new_with_options(
                    self.schema.clone(),
                    columns,
                    &options,
                )?)
            }
            Err(_) => {
                let schema = crate::row_watermark::without_row_watermark(&self.schema);
                Ok(RecordBatch::try_new_with_options(
                    schema, columns, &options,
                )?)
            }
        }
    }
}

impl Operator for Projection {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        ctx.emit(self.project(&batch)?);
        Ok(())
    }
}
