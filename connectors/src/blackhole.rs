//! `'connector' = 'blackhole'`: a sink that discards every row (benchmarks).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use weir_engine::{Result, Sink, SinkFactory};

use crate::options::Options;
use crate::registry::{Connector, ConnectorError, SinkChanges, TableSpec};

pub struct BlackholeConnector;

impl Connector for BlackholeConnector {
    fn sink_changes(&self, _options: &Options) -> SinkChanges {
        SinkChanges::All
    }

    fn name(&self) -> &'static str {
        "blackhole"
    }

    fn sink(&self, spec: &TableSpec) -> Result<SinkFactory, ConnectorError> {
        spec.options
            .check_known("blackhole", &["sink.parallelism"], &[])?;
        Ok(Arc::new(|_| Ok(Box::new(Blackhole) as Box<dyn Sink>)))
    }
}

struct Blackhole;

#[async_trait]
impl Sink for Blackhole {
    async fn write(&mut self, _batch: RecordBatch) -> Result<()> {
        Ok(())
    }
}
