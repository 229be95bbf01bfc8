//! Projection: DataFusion physical expressions evaluated on each batch.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_expr::PhysicalExpr;

use crate::changelog::{attach_kinds, row_kinds};
use crate::error::Result;
use crate::operator::{Operator, OperatorContext};
use crate::row_watermark::{attach, row_watermarks};

/// Computes `exprs` over each batch; the row kind and the row watermark
/// pass through.
#[derive(Debug, Clone)]
pub struct Projection {
    name: String,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// The output schema, without hidden columns.
    schema: SchemaRef,
}

impl Projection {
    /// `schema` is the output schema without hidden columns.
    pub fn new(
        name: impl Into<String>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Self {
        Projection {
            name: name.into(),
            exprs,
            schema,
        }
    }

    /// Evaluates the projection. The result carries the row kinds and the
    /// row watermark when `batch` does.
    pub fn project(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let mut columns = Vec::with_capacity(self.exprs.len() + 2);
        for expr in &self.exprs {
            columns.push(expr.evaluate(batch)?.into_array(rows)?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let data = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        let data = match row_kinds(batch) {
            Some(kinds) => attach_kinds(&data, Arc::new(kinds.clone()))?,
            None => data,
        };
        match row_watermarks(batch) {
            Ok(wm) => attach(&data, Arc::new(wm.clone())),
            Err(_) => Ok(data),
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
