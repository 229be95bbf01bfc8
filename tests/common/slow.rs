//! The `slow` connector: a sink that takes 5 ms for every batch, counting
//! the rows it took and the subtasks opened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use weir::crates::connectors::{Connector, ConnectorError, TableSpec};
use weir::crates::engine::{Sink, SinkFactory};

/// Registers as `'connector' = 'slow'`; clones share the counters.
#[derive(Clone, Default)]
pub struct SlowConnector {
    pub rows: Arc<AtomicU64>,
    pub opened: Arc<AtomicU64>,
}

struct SlowSink {
    rows: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl Sink for SlowSink {
    async fn write(&mut self, batch: RecordBatch) -> weir::crates::engine::Result<()> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl Connector for SlowConnector {
    fn name(&self) -> &'static str {
        "slow"
    }

    fn sink(&self, _spec: &TableSpec) -> Result<SinkFactory, ConnectorError> {
        let this = self.clone();
        Ok(Arc::new(move |_| {
            this.opened.fetch_add(1, Ordering::Relaxed);
            Ok(Box::new(SlowSink {
                rows: this.rows.clone(),
            }) as Box<dyn Sink>)
        }))
    }
}
