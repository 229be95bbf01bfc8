//! A bounded source of rows known when the query is planned: `VALUES`
//! lists, and the single empty row a `SELECT` without `FROM` reads.

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::operator::SubtaskInfo;
use crate::source::{Source, SourceFactory, SourcePoll, SplitId};

/// Emits its batches once, from subtask 0, then ends.
pub struct ValuesSource {
    batches: std::vec::IntoIter<RecordBatch>,
}

impl ValuesSource {
    /// A factory for a source of `batches`; subtasks other than the first
    /// have nothing to read.
    pub fn factory(batches: Vec<RecordBatch>) -> SourceFactory {
        std::sync::Arc::new(move |info: SubtaskInfo| {
            let batches = if info.index == 0 {
                batches.clone()
            } else {
                Vec::new()
            };
            Ok(Box::new(ValuesSource {
                batches: batches.into_iter(),
            }) as Box<dyn Source>)
        })
    }
}

#[async_trait]
impl Source for ValuesSource {
    fn splits(&self) -> Vec<SplitId> {
        vec![0]
    }

    fn split_name(&self, _split: SplitId) -> String {
        "values".into()
    }

    async fn poll(&mut self) -> Result<SourcePoll> {
        Ok(match self.batches.next() {
            Some(batch) => SourcePoll::Batch { split: 0, batch },
            None => SourcePoll::End,
        })
    }
}
