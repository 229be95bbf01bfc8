//! Avro object container files (`'format' = 'avro'` on the filesystem
//! connector): a file's writer schema is in its header and is resolved
//! against the declared columns as Kafka records' are
//! ([`crate::avro`]). A file is read whole (object stores serve it in one
//! request; its blocks are decoded in batches), and written as one part
//! file, kept in memory until it is closed.

use std::collections::VecDeque;
use std::io::Cursor;
use std::sync::Arc;

use arrow_avro::reader::{read_header_info, ReaderBuilder};
use arrow_avro::writer::AvroWriter;
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use object_store::path::Path;
use object_store::ObjectStore;
use weir_engine::{EngineError, Result};

use crate::avro::{as_declared, reader_schema, writable};

/// The rows of one Avro file, decoded.
pub(crate) struct AvroFileRows {
    batches: VecDeque<RecordBatch>,
    pub total_rows: u64,
}

impl AvroFileRows {
    /// Reads and decodes `path`, skipping its first `skip` rows (read
    /// before a restore).
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        path: &Path,
        declared: SchemaRef,
        batch_size: usize,
        skip: u64,
    ) -> Result<Self> {
        let failed = |e: &dyn std::fmt::Display| {
            EngineError::connector("filesystem", format!("{path}: {e}"))
        };
        let bytes: Bytes = super::read_whole(&store, path).await?;
        let writer = read_header_info(Cursor::new(&bytes[..]))
            .and_then(|header| header.writer_schema())
            .map_err(|e| failed(&format!("not an Avro file: {e}")))?;
        let reader = reader_schema(&declared, &writer.json_string).map_err(|e| failed(&e))?;
        let decoded = ReaderBuilder::new()
            .with_reader_schema(reader)
            .with_batch_size(batch_size)
            .build(Cursor::new(bytes))
            .map_err(|e| failed(&format!("cannot be read as the declared columns: {e}")))?;
        let mut batches = VecDeque::new();
        let (mut total_rows, mut skip) = (0, skip);
        for batch in decoded {
            let batch = batch.map_err(|e| failed(&e))?;
            let batch = as_declared(&declared, &batch).map_err(|e| failed(&e))?;
            total_rows += batch.num_rows() as u64;
            let skipped = skip.min(batch.num_rows() as u64);
            skip -= skipped;
            let batch = batch.slice(skipped as usize, batch.num_rows() - skipped as usize);
            if batch.num_rows() > 0 {
                batches.push_back(batch);
            }
        }
        Ok(AvroFileRows {
            batches,
            total_rows,
        })
    }

    /// The next batch of rows, if any is left.
    pub fn next_batch(&mut self) -> Option<RecordBatch> {
        self.batches.pop_front()
    }
}

/// A part file being written: Avro blocks in memory.
pub(crate) struct AvroPart {
    writer: Option<AvroWriter<Vec<u8>>>,
    /// The Arrow size of the rows written, for rolling.
    pub bytes: u64,
}

impl AvroPart {
    pub fn new() -> Self {
        AvroPart {
            writer: None,
            bytes: 0,
        }
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let failed = |e: &dyn std::fmt::Display| EngineError::connector("filesystem", e);
        let (schema, batch) = writable(batch, "record").map_err(|e| failed(&e))?;
        if self.writer.is_none() {
            self.writer = Some(AvroWriter::new(Vec::new(), schema).map_err(|e| failed(&e))?);
        }
        if let Some(writer) = &mut self.writer {
            writer.write(&batch).map_err(|e| failed(&e))?;
        }
        self.bytes += batch.get_array_memory_size() as u64;
        Ok(())
    }

    /// The file's bytes (empty when no row was written).
    pub fn finish(self) -> Result<Vec<u8>> {
        let Some(mut writer) = self.writer else {
            return Ok(Vec::new());
        };
        writer
            .finish()
            .map_err(|e| EngineError::connector("filesystem", e))?;
        Ok(writer.into_inner())
    }
}
