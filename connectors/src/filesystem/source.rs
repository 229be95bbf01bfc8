//! Reading files: one split per file, files interleaved batch by batch so
//! every split's watermark advances together.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, StringArray, UInt64Array,
};
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
use weir_engine::{EngineError, Result, Source, SourcePoll, SplitId, StateSnapshot, SubtaskInfo};

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
    /// The object's size in bytes.
    size: u64,
    /// Bytes taken from the object store (line formats).
    fetched: u64,
    /// Rows in the file, from its footer (Parquet).
    total_rows: Option<u64>,
    /// Lines (line formats) or rows (Parquet) read so far.
    consumed: u64,
    /// Lines still to skip: read before a checkpoint this source restored.
    skip: u64,
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
    /// Per file: lines or rows read, and whether it is done.
    positions: BTreeMap<String, (u64, bool)>,
    /// Per split, for metrics: its file, position and what is left.
    progress: HashMap<SplitId, Progress>,
}

/// How far a file has been read.
struct Progress {
    path: String,
    /// Lines (line formats) or rows (Parquet) read.
    position: u64,
    /// Rows (Parquet) or bytes (line formats) not read yet, once known.
    remaining: Option<u64>,
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
            positions: BTreeMap::new(),
            progress: HashMap::new(),
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
            // Hidden files and folders (`.x`, `_x`, such as a sink's
            // `_staging`) below the prefix are not data.
            let relative = meta
                .location
                .prefix_match(prefix)
                .map(|parts| parts.collect::<Vec<_>>());
            let hidden = match relative {
                Some(parts) => parts
                    .iter()
                    .any(|p| p.as_ref().starts_with('.') || p.as_ref().starts_with('_')),
                None => meta
                    .location
                    .filename()
                    .is_some_and(|n| n.starts_with('.') || n.starts_with('_')),
            };
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

    async fn open_file(&self, split: SplitId, meta: ObjectMeta, skip: u64) -> Result<OpenFile> {
        let store = self.location.store.clone();
        let err = |e: &dyn std::fmt::Display| {
            EngineError::connector("filesystem", format!("{}: {e}", meta.location))
        };
        let mut total_rows = None;
        let reader = match self.format {
            Format::Parquet => {
                #[allow(deprecated)]
                let reader = ParquetObjectReader::new(store, meta.location.clone())
                    .with_file_size(meta.size);
                let builder = ParquetRecordBatchStreamBuilder::new(reader)
                    .await
                    .map_err(|e| err(&e))?;
                total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).ok();
                let stream = builder
                    .with_batch_size(self.batch_size)
                    .with_offset(skip as usize)
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
            size: meta.size,
            fetched: 0,
            total_rows,
            consumed: if matches!(self.format, Format::Parquet) {
                skip
            } else {
                0
            },
            skip: if matches!(self.format, Format::Parquet) {
                0
            } else {
                skip
            },
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
                    file.consumed += batch.num_rows() as u64;
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
                            file.fetched += chunk.len() as u64;
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
                    if file.skip > 0 && *line <= file.skip {
                        continue;
                    }
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
                file.consumed = *line;
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

impl OpenFile {
    /// Rows (Parquet) or bytes (line formats) not read yet.
    fn remaining(&self) -> Option<u64> {
        match &self.reader {
            Reader::Parquet(_) => self.total_rows.map(|t| t.saturating_sub(self.consumed)),
            Reader::Lines { buffer, .. } => {
                Some(self.size.saturating_sub(self.fetched) + buffer.len() as u64)
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

    /// The file's path.
    fn split_name(&self, split: SplitId) -> String {
        self.progress
            .get(&split)
            .map_or_else(|| split.to_string(), |p| p.path.clone())
    }

    /// Lines (JSON, CSV) or rows (Parquet) read.
    fn position(&self, split: SplitId) -> Option<i64> {
        self.progress
            .get(&split)
            .and_then(|p| i64::try_from(p.position).ok())
    }

    /// Rows (Parquet) or bytes (JSON, CSV) not read yet.
    fn lag(&self, split: SplitId) -> Option<i64> {
        self.progress
            .get(&split)
            .and_then(|p| p.remaining)
            .and_then(|r| i64::try_from(r).ok())
    }

    async fn poll(&mut self) -> Result<SourcePoll> {
        let Some(pending) = &mut self.pending else {
            let mut files = self.ctx.list().await?;
            // Files a restored checkpoint had finished are not read again.
            files.retain(|(_, meta)| {
                !self
                    .positions
                    .get(meta.location.as_ref())
                    .is_some_and(|p| p.1)
            });
            for (split, meta) in &files {
                let position = self
                    .positions
                    .get(meta.location.as_ref())
                    .map_or(0, |p| p.0);
                self.progress.insert(
                    *split,
                    Progress {
                        path: meta.location.to_string(),
                        position,
                        remaining: None,
                    },
                );
            }
            let splits = files.iter().map(|(s, _)| *s).collect();
            self.pending = Some(files.into());
            return Ok(SourcePoll::SplitsAdded(splits));
        };
        // Open one more file per poll until all are open (or the cap).
        if self.open.len() < MAX_OPEN_FILES {
            if let Some((split, meta)) = pending.pop_front() {
                let skip = self
                    .positions
                    .get(meta.location.as_ref())
                    .map_or(0, |p| p.0);
                let file = self.ctx.open_file(split, meta, skip).await?;
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
        let read = self.ctx.read(&mut file).await?;
        self.positions
            .insert(file.path.to_string(), (file.consumed, read.is_none()));
        self.progress.insert(
            file.split,
            Progress {
                path: file.path.to_string(),
                position: file.consumed,
                remaining: if read.is_none() {
                    Some(0)
                } else {
                    file.remaining()
                },
            },
        );
        match read {
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

    fn snapshot(&mut self) -> Result<StateSnapshot> {
        let paths: Vec<&str> = self.positions.keys().map(String::as_str).collect();
        let consumed: Vec<u64> = self.positions.values().map(|p| p.0).collect();
        let done: Vec<bool> = self.positions.values().map(|p| p.1).collect();
        let table = RecordBatch::try_from_iter(vec![
            ("path", Arc::new(StringArray::from(paths)) as ArrayRef),
            (
                "consumed",
                Arc::new(UInt64Array::from(consumed)) as ArrayRef,
            ),
            ("finished", Arc::new(BooleanArray::from(done)) as ArrayRef),
        ])?;
        Ok(StateSnapshot {
            tables: vec![("files".into(), table)],
        })
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        let Some(table) = state.table("files") else {
            return Ok(());
        };
        let (Some(paths), Some(consumed), Some(done)) = (
            table.column(0).as_any().downcast_ref::<StringArray>(),
            table.column(1).as_any().downcast_ref::<UInt64Array>(),
            table.column(2).as_any().downcast_ref::<BooleanArray>(),
        ) else {
            return Err(EngineError::connector(
                "filesystem",
                "bad checkpointed file positions",
            ));
        };
        for i in 0..table.num_rows() {
            self.positions.insert(
                paths.value(i).to_string(),
                (consumed.value(i), done.value(i)),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn source(dir: &std::path::Path, format: Format) -> FileSource {
        let location =
            crate::store::resolve(dir.to_str().unwrap(), &Options::default(), false).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        FileSource::new(
            location,
            format,
            schema,
            "s".into(),
            BadDataPolicy::Drop,
            3,
            SubtaskInfo {
                index: 0,
                parallelism: 1,
            },
        )
        .unwrap()
    }

    async fn values(s: &mut FileSource, polls: usize) -> (Vec<i64>, bool) {
        let mut out = Vec::new();
        for _ in 0..polls {
            match s.poll().await.unwrap() {
                SourcePoll::Batch { batch, .. } => out.extend(
                    batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .values()
                        .iter()
                        .copied(),
                ),
                SourcePoll::End => return (out, true),
                _ => {}
            }
        }
        (out, false)
    }

    #[tokio::test]
    async fn restored_positions_read_every_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let lines = |from: i64, to: i64| {
            (from..to)
                .map(|x| format!("{{\"x\": {x}}}\n"))
                .collect::<String>()
        };
        std::fs::write(dir.path().join("a.json"), lines(0, 10)).unwrap();
        std::fs::write(dir.path().join("b.json"), lines(100, 104)).unwrap();
        let mut first = source(dir.path(), Format::Json);
        let (mut seen, ended) = values(&mut first, 6).await;
        assert!(!ended && !seen.is_empty());
        let state = first.snapshot().unwrap();
        let mut second = source(dir.path(), Format::Json);
        second.restore(state).unwrap();
        let (rest, ended) = values(&mut second, 100).await;
        assert!(ended);
        seen.extend(rest);
        seen.sort();
        let mut expected: Vec<i64> = (0..10).chain(100..104).collect();
        expected.sort();
        assert_eq!(seen, expected);
    }

    /// The split of the file named `name`, after listing.
    fn split_of(s: &FileSource, name: &str) -> SplitId {
        *s.progress
            .iter()
            .find(|(_, p)| p.path.ends_with(name))
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn a_file_reports_its_position_and_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let line = |x: i64| format!("{{\"x\": {x}}}\n");
        let text: String = (0..10).map(line).collect();
        std::fs::write(dir.path().join("a.json"), &text).unwrap();
        let mut s = source(dir.path(), Format::Json);
        assert!(matches!(
            s.poll().await.unwrap(),
            SourcePoll::SplitsAdded(_)
        ));
        let split = split_of(&s, "a.json");
        assert!(s.split_name(split).ends_with("a.json"));
        assert_eq!((s.position(split), s.lag(split)), (Some(0), None));

        // One batch of three lines: the other seven are the bytes left.
        assert!(matches!(s.poll().await.unwrap(), SourcePoll::Batch { .. }));
        let left: usize = (3..10).map(|x| line(x).len()).sum();
        assert_eq!(
            (s.position(split), s.lag(split)),
            (Some(3), Some(left as i64))
        );
        let (_, ended) = values(&mut s, 100).await;
        assert!(ended);
        assert_eq!((s.position(split), s.lag(split)), (Some(10), Some(0)));
    }

    #[tokio::test]
    async fn a_parquet_file_reports_rows_left() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..10)) as ArrayRef],
        )
        .unwrap();
        let file = std::fs::File::create(dir.path().join("a.parquet")).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let mut s = source(dir.path(), Format::Parquet);
        assert!(matches!(
            s.poll().await.unwrap(),
            SourcePoll::SplitsAdded(_)
        ));
        let split = split_of(&s, "a.parquet");
        assert!(matches!(s.poll().await.unwrap(), SourcePoll::Batch { .. }));
        assert_eq!((s.position(split), s.lag(split)), (Some(3), Some(7)));
    }
}
