//! Reading a Parquet file row group by row group, so the groups of one
//! file can be decoded on several cores and still be emitted in order.
//!
//! Only the declared columns are decoded (a projection mask by name); a
//! declared column the file lacks reads as NULL, one of another type is
//! cast ([`conform`]). A read restored from a checkpoint skips the rows
//! already emitted: whole groups first, then rows within the next one.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use datafusion::arrow::array::new_null_array;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStore;
// Deprecated in parquet 59 in favour of hand-written readers; it is still
// the library's own object_store reader, so we keep using it.
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
#[allow(deprecated)]
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use weir_engine::{EngineError, Result};

/// One row group still to read.
#[derive(Debug, Clone, Copy)]
struct Group {
    index: usize,
    /// Rows at its start already emitted (a restored read).
    skip: usize,
    /// Rows this read yields.
    rows: u64,
}

/// The row groups of one file still to read.
pub(super) struct ParquetGroups {
    #[allow(deprecated)]
    reader: ParquetObjectReader,
    metadata: ArrowReaderMetadata,
    projection: ProjectionMask,
    groups: VecDeque<Group>,
    schema: SchemaRef,
    path: Path,
    batch_size: usize,
    /// Rows in the file, from its footer.
    pub total_rows: u64,
}

/// A row group read: its rows, conformed to the declared schema, in
/// batches of at most the batch size.
pub(super) type GroupRead =
    std::pin::Pin<Box<dyn Future<Output = Result<Vec<RecordBatch>>> + Send>>;

impl ParquetGroups {
    /// Reads the footer of `path` and plans to read it from row `skip` on.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        path: Path,
        size: u64,
        schema: SchemaRef,
        batch_size: usize,
        skip: u64,
    ) -> Result<Self> {
        let failed = |e: &dyn std::fmt::Display| {
            EngineError::connector("filesystem", format!("{path}: {e}"))
        };
        #[allow(deprecated)]
        let mut reader = ParquetObjectReader::new(store, path.clone()).with_file_size(size);
        let metadata = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
            .await
            .map_err(|e| failed(&e))?;
        let file_schema = metadata.schema();
        let roots = schema
            .fields()
            .iter()
            .filter_map(|f| file_schema.index_of(f.name()).ok());
        let projection = ProjectionMask::roots(metadata.parquet_schema(), roots);
        let mut groups = VecDeque::new();
        let mut first_row = 0u64;
        for (index, group) in metadata.metadata().row_groups().iter().enumerate() {
            let rows = u64::try_from(group.num_rows()).unwrap_or(0);
            let end = first_row + rows;
            if end > skip {
                let skipped = skip.saturating_sub(first_row);
                groups.push_back(Group {
                    index,
                    skip: skipped as usize,
                    rows: rows - skipped,
                });
            }
            first_row = end;
        }
        Ok(ParquetGroups {
            reader,
            metadata,
            projection,
            groups,
            schema,
            path,
            batch_size,
            total_rows: first_row,
        })
    }

    /// The read of the next row group and the rows it yields, or `None`
    /// at the end of the file. The read owns what it needs, so it can run
    /// on another core.
    pub fn next_group(&mut self) -> Option<(GroupRead, u64)> {
        let group = self.groups.pop_front()?;
        let reader = self.reader.clone();
        let metadata = self.metadata.clone();
        let projection = self.projection.clone();
        let schema = self.schema.clone();
        let path = self.path.clone();
        let batch_size = self.batch_size;
        let read = async move {
            let failed = |e: &dyn std::fmt::Display| {
                EngineError::connector("filesystem", format!("{path}: {e}"))
            };
            let batches: Vec<RecordBatch> =
                ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
                    .with_row_groups(vec![group.index])
                    .with_projection(projection)
                    .with_offset(group.skip)
                    .with_batch_size(batch_size)
                    .build()
                    .map_err(|e| failed(&e))?
                    .try_collect()
                    .await
                    .map_err(|e| failed(&e))?;
            batches.iter().map(|b| conform(b, &schema, &path)).collect()
        };
        Some((Box::pin(read), group.rows))
    }
}

/// A batch read from a typed file, made to match the declared schema:
/// columns by name, cast to the declared type; missing columns are null.
fn conform(batch: &RecordBatch, schema: &SchemaRef, path: &Path) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(c) if c.data_type() == field.data_type() => c.clone(),
            Some(c) => cast(c, field.data_type()).map_err(|e| {
                EngineError::connector(
                    "filesystem",
                    format!(
                        "{path}: column '{}' is {} and cannot be read as {}: {e}",
                        field.name(),
                        c.data_type(),
                        field.data_type()
                    ),
                )
            })?,
            None => new_null_array(field.data_type(), batch.num_rows()),
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
