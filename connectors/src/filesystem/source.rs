//! Reading files: one split per file, files interleaved batch by batch so
//! every split's watermark advances together.

use std::collections::VecDeque;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::new_null_array;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
// Deprecated in parquet 59 in favour of hand-written readers; it is still
// the library's own object_store reader, so we keep using it.
#[allow(deprecated)]
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use weir_engine::{EngineError, Result, Source, SourcePoll, SplitId, SubtaskInfo};

use crate::deadletter::BadDataPolicy;
use crate::format::{Format, Line, LineDecoder};
use crate::store::Location;

/// Files open at once per subtask; more are read in turn.
const MAX_OPEN_FILES: usize = 64;

enum Reader {
    Lines {
        stream: BoxStream<'static, object_store::Result<Bytes>>,
        buffer: Vec<u8>,
        line: u64,
        done: bool,
    },
    Parquet(BoxStream<'static, parquet::errors::Result<RecordBatch>>),
}

struct OpenFile {
    split: SplitId,
    path: Path,
    reader: Reader,
}

/// What reading a file needs, apart from the open files themselves.
struct ReadContext {
    location: Location,
    format: Format,
    schema: SchemaRef,
    bad_data: BadDataPolicy,
    batch_size: usize,
    subtask: SubtaskInfo,
    decoder: Option<LineDecoder>,
}

pub struct FileSource {
    ctx: ReadContext,
    /// Files assigned to this subtask and not yet opened (`None` until listed).
    pending: Option<VecDeque<(SplitId, ObjectMeta)>>,
    open: VecDeque<OpenFile>,
}

impl FileSource {
    pub fn new(
        location: Location,
        format: Format,
        schema: SchemaRef,
        stream: String,
        bad_data: BadDataPolicy,
        batch_size: usize,
        subtask: SubtaskInfo,
    ) -> Result<Self> {
        let decoder = match format {
            Format::Parquet => None,
            _ => Some(LineDecoder::new(format.clone(), schema.clone(), stream)?),
        };
        Ok(FileSource {
            ctx: ReadContext {
                location,
                format,
                schema,
                bad_data,
                batch_size,
                subtask,
                decoder,
            },
            pending: None,
            open: VecDeque::new(),
        })
    }
}

impl ReadContext {
    /// Lists the files under the location, sorted; file `i` belongs to
    /// subtask `i % parallelism`. Hidden files (`.x`, `_x`) are skipped.
    async fn list(&self) -> Result<Vec<(SplitId, ObjectMeta)>> {
        let prefix = &self.location.prefix;
        let mut files: Vec<ObjectMeta> = Vec::new();
        let prefix_opt = (!prefix.as_ref().is_empty()).then_some(prefix);
        let mut listing = self.location.store.list(prefix_opt);
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| {
                EngineError::connector("filesystem", format!("{}: {e}", self.location.display))
            })?;
            let hidden = meta
                .location
                .filename()
                .is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
            if !hidden {
                files.push(meta);
            }
        }
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(files
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.subtask.parallelism == self.subtask.index)
            .map(|(i, m)| (i as SplitId, m))
            .collect())
    }

    async fn open_file(&self, split: SplitId, meta: ObjectMeta) -> Result<OpenFile> {
        let store = self.location.store.clone();
        let err = |e: &dyn std::fmt::Display| {
            EngineError::connector("filesystem", format!("{}: {e}", meta.location))
        };
        let reader = match self.format {
            Format::Parquet => {
                #[allow(deprecated)]
                let reader = ParquetObjectReader::new(store, meta.location.clone())
                    .with_file_size(meta.size);
                let stream = ParquetRecordBatchStreamBuilder::new(reader)
                    .await
                    .map_err(|e| err(&e))?
                    .with_batch_size(self.batch_size)
                    .build()
                    .map_err(|e| err(&e))?;
                Reader::Parquet(stream.boxed())
            }
            _ => {
                let result = store.get(&meta.location).await.map_err(|e| err(&e))?;
                Reader::Lines {
                    stream: result.into_stream(),
                    buffer: Vec::new(),
                    line: 0,
                    done: false,
                }
            }
        };
        Ok(OpenFile {
            split,
            path: meta.location,
            reader,
        })
    }

    /// Up to `batch_size` rows from `file`; `None` at its end.
    async fn read(&self, file: &mut OpenFile) -> Result<Option<RecordBatch>> {
        match &mut file.reader {
            Reader::Parquet(stream) => match stream.next().await {
                None => Ok(None),
                Some(batch) => {
                    let batch = batch.map_err(|e| {
                        EngineError::connector("filesystem", format!("{}: {e}", file.path))
                    })?;
                    Ok(Some(conform(&batch, &self.schema, &file.path)?))
                }
            },
            Reader::Lines {
                stream,
                buffer,
                line,
                done,
            } => {
                let header = matches!(self.format, Format::Csv { header: true, .. });
                loop {
                    let complete = buffer.iter().filter(|b| **b == b'\n').count();
                    if complete >= self.batch_size
                        || (*done && !buffer.is_empty())
                        || (*done && buffer.is_empty())
                    {
                        break;
                    }
                    match stream.next().await {
                        Some(chunk) => {
                            let chunk = chunk.map_err(|e| {
                                EngineError::connector("filesystem", format!("{}: {e}", file.path))
                            })?;
                            buffer.extend_from_slice(&chunk);
                        }
                        None => *done = true,
                    }
                }
                if buffer.is_empty() && *done {
                    return Ok(None);
                }
                // Cut the first `batch_size` complete lines (all of them at the end).
                let mut cut = 0;
                let mut taken = 0;
                for (i, b) in buffer.iter().enumerate() {
                    if *b == b'\n' {
                        taken += 1;
                        cut = i + 1;
                        if taken == self.batch_size {
                            break;
                        }
                    }
                }
                if *done && taken < self.batch_size {
                    cut = buffer.len();
                }
                let chunk: Vec<u8> = buffer.drain(..cut).collect();
                let mut lines = Vec::new();
                for raw in chunk.split(|b| *b == b'\n') {
                    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                    *line += 1;
                    if raw.iter().all(u8::is_ascii_whitespace) || (header && *line == 1) {
                        continue;
                    }
                    lines.push(Line {
                        bytes: raw,
                        location: format!("{}:{}", file.path, line),
                    });
                }
                // split() yields an empty piece after a trailing newline.
                if chunk.last() == Some(&b'\n') {
                    *line -= 1;
                }
                let decoder = self
                    .decoder
                    .as_ref()
                    .ok_or_else(|| EngineError::connector("filesystem", "no decoder"))?;
                let (batch, bad) = decoder.decode(&lines)?;
                self.bad_data.handle(bad).await?;
                Ok(Some(batch.unwrap_or_else(|| {
                    RecordBatch::new_empty(self.schema.clone())
                })))
            }
        }
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

#[async_trait]
impl Source for FileSource {
    fn splits(&self) -> Vec<SplitId> {
        Vec::new()
    }

    async fn poll(&mut self) -> Result<SourcePoll> {
        let Some(pending) = &mut self.pending else {
            let files = self.ctx.list().await?;
            let splits = files.iter().map(|(s, _)| *s).collect();
            self.pending = Some(files.into());
            return Ok(SourcePoll::SplitsAdded(splits));
        };
        // Open one more file per poll until all are open (or the cap).
        if self.open.len() < MAX_OPEN_FILES {
            if let Some((split, meta)) = pending.pop_front() {
                let file = self.ctx.open_file(split, meta).await?;
                self.open.push_back(file);
            }
        }
        let Some(mut file) = self.open.pop_front() else {
            return Ok(if self.pending.as_ref().is_some_and(|p| !p.is_empty()) {
                SourcePoll::Pending
            } else {
                SourcePoll::End
            });
        };
        match self.ctx.read(&mut file).await? {
            None => Ok(SourcePoll::SplitEnded(file.split)),
            Some(batch) => {
                let split = file.split;
                self.open.push_back(file);
                if batch.num_rows() == 0 {
                    return Ok(SourcePoll::Pending);
                }
                Ok(SourcePoll::Batch { split, batch })
            }
        }
    }
}
