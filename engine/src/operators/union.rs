//! `UNION ALL`: the rows of every input, as they come, under the union's
//! column names. The runtime merges the inputs' watermarks (their
//! minimum), so a window after the union waits for its slowest input.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::changelog::{attach_kinds, row_kinds, without_kinds};
use crate::error::Result;
use crate::operator::{Operator, OperatorContext};
use crate::row_watermark::{attach, row_watermarks, strip};

/// Passes on every input's rows, named as the union's columns.
#[derive(Debug, Clone)]
pub struct Union {
    /// The union's columns, without hidden ones.
    schema: SchemaRef,
}

impl Union {
    pub fn new(schema: SchemaRef) -> Self {
        Union { schema }
    }
}

impl Operator for Union {
    fn name(&self) -> &str {
        "union"
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let data = without_kinds(&strip(&batch));
        let options = RecordBatchOptions::new().with_row_count(Some(data.num_rows()));
        let mut out = RecordBatch::try_new_with_options(
            self.schema.clone(),
            data.columns().to_vec(),
            &options,
        )?;
        if let Some(kinds) = row_kinds(&batch) {
            out = attach_kinds(&out, std::sync::Arc::new(kinds.clone()))?;
        }
        if let Ok(watermarks) = row_watermarks(&batch) {
            out = attach(&out, std::sync::Arc::new(watermarks.clone()))?;
        }
        ctx.emit(out);
        Ok(())
    }
}
