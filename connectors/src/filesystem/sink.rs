//! Writing part files: JSON lines, CSV or Parquet, rolled by size and age.
//!
//! Data streams to the store (multipart uploads), so memory stays bounded
//! whatever the file size; a part file becomes visible when it is closed.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use tokio::io::AsyncWriteExt;
use weir_engine::{EngineError, Result, Sink};

use crate::format::{encode_lines, Format};
use crate::store::Location;

enum Writer {
    Lines { out: Box<BufWriter>, bytes: u64 },
    Parquet(Box<AsyncArrowWriter<BufWriter>>),
}

struct PartFile {
    writer: Writer,
    path: Path,
    opened: Instant,
    rows: u64,
}

pub struct FileSink {
    location: Location,
    format: Format,
    schema: SchemaRef,
    /// Unique per run and subtask, so parallel writers never collide.
    prefix: String,
    roll_size: u64,
    roll_interval: Option<Duration>,
    sequence: u64,
    current: Option<PartFile>,
}

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError::connector("filesystem sink", e)
}

impl FileSink {
    pub fn new(
        location: Location,
        format: Format,
        schema: SchemaRef,
        prefix: String,
        roll_size: u64,
        roll_interval: Option<Duration>,
    ) -> Self {
        FileSink {
            location,
            format,
            schema,
            prefix,
            roll_size,
            roll_interval,
            sequence: 0,
            current: None,
        }
    }

    fn open(&mut self) -> Result<PartFile> {
        let name = format!(
            "part-{}-{:05}.{}",
            self.prefix,
            self.sequence,
            self.format.extension()
        );
        self.sequence += 1;
        let path = Path::from(format!("{}/{}", self.location.prefix, name).trim_start_matches('/'));
        let store = self.location.store.clone();
        let writer = match self.format {
            Format::Parquet => {
                let object = BufWriter::new(store, path.clone());
                Writer::Parquet(Box::new(
                    AsyncArrowWriter::try_new(object, self.schema.clone(), None).map_err(err)?,
                ))
            }
            _ => Writer::Lines {
                out: Box::new(BufWriter::new(store, path.clone())),
                bytes: 0,
            },
        };
        Ok(PartFile {
            writer,
            path,
            opened: Instant::now(),
            rows: 0,
        })
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(file) = self.current.take() {
            match file.writer {
                Writer::Parquet(w) => {
                    w.close().await.map_err(err)?;
                }
                Writer::Lines { mut out, .. } => out.shutdown().await.map_err(err)?,
            }
            tracing::debug!(path = %file.path, rows = file.rows, "closed part file");
        }
        Ok(())
    }

    fn size(file: &PartFile) -> u64 {
        match &file.writer {
            Writer::Lines { bytes, .. } => *bytes,
            Writer::Parquet(w) => (w.bytes_written() + w.in_progress_size()) as u64,
        }
    }
}

/// `batch` with the sink's column names (the query's may differ).
fn with_schema(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    Ok(RecordBatch::try_new(
        schema.clone(),
        batch.columns().to_vec(),
    )?)
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = with_schema(batch, &self.schema)?;
        let roll = self.current.as_ref().is_some_and(|f| {
            Self::size(f) >= self.roll_size
                || self.roll_interval.is_some_and(|i| f.opened.elapsed() >= i)
        });
        if roll {
            self.close().await?;
        }
        if self.current.is_none() {
            self.current = Some(self.open()?);
        }
        let Some(file) = self.current.as_mut() else {
            return Err(err("no open part file"));
        };
        file.rows += batch.num_rows() as u64;
        match &mut file.writer {
            Writer::Parquet(w) => w.write(&batch).await.map_err(err)?,
            Writer::Lines { out, bytes } => {
                let mut buffer = Vec::new();
                let header = matches!(self.format, Format::Csv { header: true, .. }) && *bytes == 0;
                encode_lines(&self.format, &batch, &mut buffer, header)?;
                *bytes += buffer.len() as u64;
                out.write_all(&buffer).await.map_err(err)?;
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        self.close().await
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if self.current.is_some() {
            tracing::warn!("filesystem sink dropped with an open part file; it is not visible");
        }
    }
}
