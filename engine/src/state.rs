//! Operator state as Arrow: what a checkpoint stores.

use datafusion::arrow::record_batch::RecordBatch;

/// The state of one operator subtask: named Arrow tables.
///
/// Arrow-native so a checkpoint can write it as Arrow IPC or Parquet without
/// a second serialisation format, and so accumulator state produced by
/// DataFusion's `state()` can be stored as is.
#[derive(Debug, Clone, Default)]
pub struct StateSnapshot {
    pub tables: Vec<(String, RecordBatch)>,
}

impl StateSnapshot {
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|(_, b)| b.num_rows() == 0)
    }

    pub fn table(&self, name: &str) -> Option<&RecordBatch> {
        self.tables.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }
}
