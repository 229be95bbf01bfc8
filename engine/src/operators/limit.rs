//! Limit: passes the first `fetch` rows (after `skip`) and drops the rest.

use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::operator::{Operator, OperatorContext};

/// `LIMIT fetch OFFSET skip` on a single subtask.
#[derive(Debug, Clone)]
pub struct Limit {
    skip: usize,
    fetch: Option<usize>,
    seen: usize,
}

impl Limit {
    pub fn new(skip: usize, fetch: Option<usize>) -> Self {
        Limit {
            skip,
            fetch,
            seen: 0,
        }
    }
}

impl Operator for Limit {
    fn name(&self) -> &str {
        "limit"
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let rows = batch.num_rows();
        let start = self.skip.saturating_sub(self.seen).min(rows);
        let end = match self.fetch {
            Some(f) => (self.skip + f).saturating_sub(self.seen).min(rows),
            None => rows,
        };
        self.seen += rows;
        if end > start {
            ctx.emit(batch.slice(start, end - start));
        }
        Ok(())
    }
}
