//! Filter: keeps the rows for which a predicate is true.

use std::sync::Arc;

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DataFusionError;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;
use crate::operator::{Operator, OperatorContext};

/// Keeps rows where `predicate` is true (null counts as false, as in SQL).
#[derive(Debug, Clone)]
pub struct Filter {
    name: String,
    predicate: Arc<dyn PhysicalExpr>,
}

impl Filter {
    pub fn new(name: impl Into<String>, predicate: Arc<dyn PhysicalExpr>) -> Self {
        Filter {
            name: name.into(),
            predicate,
        }
    }
}

/// `predicate` evaluated on every row of `batch`.
pub(crate) fn predicate_mask(
    predicate: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> Result<BooleanArray> {
    let mask = predicate.evaluate(batch)?.into_array(batch.num_rows())?;
    let mask = mask
        .as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("predicate is not boolean".into()))?;
    Ok(mask)
}

impl Operator for Filter {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let mask = predicate_mask(&self.predicate, &batch)?;
        if mask.true_count() == batch.num_rows() {
            ctx.emit(batch);
        } else {
            ctx.emit(filter_record_batch(&batch, &mask)?);
        }
        Ok(())
    }
}
