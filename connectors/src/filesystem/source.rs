//! Reading files: one split per file, files interleaved chunk by chunk so
//! every split's watermark advances together.
//!
//! JSON and CSV files are cut into chunks of whole lines in linear time
//! ([`LineSplitter`]) and decoded on several cores at once: chunks are
//! decoded in parallel but emitted strictly in the order they were cut, so
//! every row, its row watermark, the late rows and the dead letters are
//! exactly those of a read on one core (`'scan.parallel-decode'` = `1`).
//! Parquet files are read the same way, a row group at a time
//! ([`ParquetGroups`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{BooleanArray, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use tokio::task::JoinHandle;
use weir_engine::{
    EngineError, Result, Source, SourcePoll, SplitId, StateSnapshot, StateTable, SubtaskInfo,
};

use super::avro_file::AvroFileRows;
use super::lines::{LineChunk, LineSplitter};
use super::parquet::ParquetGroups;
use super::protobuf_file::ProtobufFileRows;
use crate::deadletter::BadDataPolicy;
use crate::format::{Decoded, Format, LineDecoder};
use crate::options::Options;
use crate::protobuf::ProtobufDecoder;
use crate::registry::ConnectorError;
use crate::replay::DeadLetters;
use crate::store::Location;

/// Files open at once per subtask; more are read in turn.
const MAX_OPEN_FILES: usize = 64;

/// How far each file has been read: bytes consumed, and whether it is done.
static FILES: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "files",
        [
            ("path", DataType::Utf8),
            ("consumed", DataType::UInt64),
            ("finished", DataType::Boolean),
        ],
    )
});

enum Reader {
    Lines {
        stream: BoxStream<'static, object_store::Result<Bytes>>,
        splitter: LineSplitter,
        done: bool,
    },
    Parquet(ParquetGroups),
    Avro(AvroFileRows),
    Protobuf(ProtobufFileRows),
}

struct OpenFile {
    split: SplitId,
    path: Path,
    reader: Reader,
    /// The object's size in bytes.
    size: u64,
    /// Bytes taken from the object store (line formats).
    fetched: u64,
    /// Rows taken so far (Parquet).
    rows: u64,
}

impl OpenFile {
    /// Lines (line formats) or rows (Parquet) read so far.
    fn position(&self) -> u64 {
        match &self.reader {
            Reader::Lines { splitter, .. } => splitter.lines_taken(),
            Reader::Parquet(_) | Reader::Avro(_) | Reader::Protobuf(_) => self.rows,
        }
    }

    /// Rows (Parquet) or bytes (line formats) not read yet.
    fn remaining(&self) -> Option<u64> {
        match &self.reader {
            Reader::Parquet(groups) => Some(groups.total_rows.saturating_sub(self.rows)),
            Reader::Avro(rows) => Some(rows.total_rows.saturating_sub(self.rows)),
            Reader::Protobuf(rows) => Some(rows.total_rows.saturating_sub(self.rows)),
            Reader::Lines { splitter, .. } => {
                Some(self.size.saturating_sub(self.fetched) + splitter.buffered() as u64)
            }
        }
    }
}

/// A read on its way out, in the order it was taken from its file.
struct InFlight {
    split: SplitId,
    path: String,
    /// Lines or rows of the file read once this is emitted.
    position: u64,
    /// What is left of the file then, if known.
    remaining: Option<u64>,
    work: Work,
}

enum Work {
    /// A chunk of lines or a row group being decoded on another core.
    Decoding(JoinHandle<Result<VecDeque<Decoded>>>),
    /// Rows read and decoded already, in batches to emit in order.
    Done(VecDeque<Decoded>),
    /// The file ended after the reads before this one.
    Ended,
}

/// What reading a file needs, apart from the open files themselves.
struct ReadContext {
    location: Location,
    format: Format,
    schema: SchemaRef,
    bad_data: BadDataPolicy,
    batch_size: usize,
    subtask: SubtaskInfo,
    decoder: Option<Arc<LineDecoder>>,
    /// Decodes the messages of `protobuf` files.
    messages: Option<Arc<ProtobufDecoder>>,
    /// Chunks decoded at once; 1 decodes in the source's own task.
    parallel_decode: usize,
    /// The files are dead letters, read as the stream's rows or records
    /// (the `dead-letter` connector), with `schema`'s columns.
    dead_letters: Option<Arc<DeadLetters>>,
}

pub struct FileSource {
    ctx: ReadContext,
    /// Files assigned to this subtask and not yet opened (`None` until listed).
    pending: Option<VecDeque<(SplitId, ObjectMeta)>>,
    open: VecDeque<OpenFile>,
    in_flight: VecDeque<InFlight>,
    /// Per file: lines or rows emitted, and whether it is done.
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

/// The file source's settings.
#[derive(Debug, Clone)]
pub struct FileSourceOptions {
    /// Lines or rows per batch.
    pub batch_size: usize,
    /// Chunks decoded at once (`'scan.parallel-decode'`).
    pub parallel_decode: usize,
}

impl FileSourceOptions {
    /// `'scan.batch-size'` (default 8192) and `'scan.parallel-decode'`
    /// (default: every core decodes chunks of one file).
    pub fn from_options(options: &Options) -> std::result::Result<Self, ConnectorError> {
        Ok(FileSourceOptions {
            batch_size: options
                .parse::<usize>("scan.batch-size")?
                .unwrap_or(8192)
                .max(1),
            parallel_decode: options
                .parse::<usize>("scan.parallel-decode")?
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .max(1),
        })
    }
}

impl FileSource {
    pub fn new(
        location: Location,
        format: Format,
        schema: SchemaRef,
        stream: String,
        bad_data: BadDataPolicy,
        options: FileSourceOptions,
        subtask: SubtaskInfo,
    ) -> Result<Self> {
        let (decoder, messages) = match &format {
            Format::Parquet | Format::Avro => (None, None),
            Format::Protobuf(config) => {
                let decoder = ProtobufDecoder::new(config, schema.clone(), stream)
                    .map_err(|e| EngineError::connector("filesystem", e))?;
                (None, Some(Arc::new(decoder)))
            }
            _ => {
                let decoder = LineDecoder::new(format.clone(), schema.clone(), stream)?;
                (Some(Arc::new(decoder)), None)
            }
        };
        Ok(FileSource {
            ctx: ReadContext {
                location,
                format,
                schema,
                bad_data,
                batch_size: options.batch_size.max(1),
                subtask,
                decoder,
                messages,
                parallel_decode: options.parallel_decode.max(1),
                dead_letters: None,
            },
            pending: None,
            open: VecDeque::new(),
            in_flight: VecDeque::new(),
            positions: BTreeMap::new(),
            progress: HashMap::new(),
        })
    }
}

impl FileSource {
    /// Reads the files as dead letters ([`crate::replay`]): their rows
    /// have `schema`.
    pub fn reading_dead_letters(mut self, letters: Arc<DeadLetters>, schema: SchemaRef) -> Self {
        self.ctx.schema = schema;
        self.ctx.dead_letters = Some(letters);
        self
    }
}

impl ReadContext {
    /// The files of the location, sorted; file `i` belongs to subtask
    /// `i % parallelism`.
    async fn list(&self) -> Result<Vec<(SplitId, ObjectMeta)>> {
        let mut files = self.matching_files().await?;
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(files
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.subtask.parallelism == self.subtask.index)
            .map(|(i, m)| (i as SplitId, m))
            .collect())
    }

    /// What `'path'` names: the object itself when there is one by that
    /// name (`object_store` lists a prefix as a folder, so listing a file's
    /// own path would find nothing), else every visible object below it.
    /// A path that matches nothing is an error, not an empty stream; an
    /// existing empty local folder reads as empty.
    async fn matching_files(&self) -> Result<Vec<ObjectMeta>> {
        let location = &self.location;
        let failed = |e: &dyn std::fmt::Display| {
            EngineError::connector("filesystem", format!("{}: {e}", location.display))
        };
        let prefix = &location.prefix;
        if !prefix.as_ref().is_empty() {
            match location.store.head(prefix).await {
                Ok(meta) => return Ok(vec![meta]),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(failed(&e)),
            }
        }
        let mut files: Vec<ObjectMeta> = Vec::new();
        let prefix_opt = (!prefix.as_ref().is_empty()).then_some(prefix);
        let mut listing = location.store.list(prefix_opt);
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| failed(&e))?;
            if !is_hidden(&meta.location, prefix) {
                files.push(meta);
            }
        }
        if files.is_empty() && !location.directory {
            return Err(failed(
                &"matches no file: no object has this name and none is below it (check the bucket and the path)",
            ));
        }
        Ok(files)
    }

    /// Opens a file, to read it from line or row `skip` on.
    async fn open_file(&self, split: SplitId, meta: ObjectMeta, skip: u64) -> Result<OpenFile> {
        let store = self.location.store.clone();
        let reader = match self.format {
            Format::Parquet => Reader::Parquet(
                ParquetGroups::open(
                    store,
                    meta.location.clone(),
                    meta.size,
                    self.schema.clone(),
                    self.batch_size,
                    skip,
                )
                .await?,
            ),
            Format::Avro => Reader::Avro(
                AvroFileRows::open(
                    store,
                    &meta.location,
                    self.schema.clone(),
                    self.batch_size,
                    skip,
                )
                .await?,
            ),
            Format::Protobuf(_) => {
                let decoder = self
                    .messages
                    .as_deref()
                    .ok_or_else(|| EngineError::connector("filesystem", "no message decoder"))?;
                let rows =
                    ProtobufFileRows::open(store, &meta.location, decoder, self.batch_size, skip);
                Reader::Protobuf(rows.await?)
            }
            _ => {
                // A CSV header is line 1: skipped like lines read before.
                let header = matches!(self.format, Format::Csv { header: true, .. });
                Reader::Lines {
                    stream: ranges(store, meta.location.clone(), meta.size),
                    splitter: LineSplitter::new(self.batch_size, skip.max(u64::from(header))),
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
            rows: if matches!(
                self.format,
                Format::Parquet | Format::Avro | Format::Protobuf(_)
            ) {
                skip
            } else {
                0
            },
        })
    }

    /// Takes the next read from `file`: a chunk of lines to decode, a
    /// Parquet batch, or its end.
    async fn take(&self, file: &mut OpenFile) -> Result<InFlight> {
        let failed = |e: &dyn std::fmt::Display| {
            EngineError::connector("filesystem", format!("{}: {e}", file.path))
        };
        let work = match &mut file.reader {
            Reader::Avro(rows) => match rows.next_batch() {
                None => Work::Ended,
                Some(batch) => {
                    file.rows += batch.num_rows() as u64;
                    Work::Done(VecDeque::from([Decoded::rows(batch)]))
                }
            },
            Reader::Protobuf(rows) => match rows.next_batch() {
                None => Work::Ended,
                Some((decoded, messages)) => {
                    file.rows += messages;
                    Work::Done(VecDeque::from([decoded]))
                }
            },
            Reader::Parquet(groups) => match groups.next_group() {
                None => Work::Ended,
                Some((read, rows)) => {
                    file.rows += rows;
                    let read = async move {
                        let batches = read.await?;
                        Ok::<_, EngineError>(batches.into_iter().map(Decoded::rows).collect())
                    };
                    if self.parallel_decode > 1 {
                        Work::Decoding(tokio::spawn(read))
                    } else {
                        Work::Done(read.await?)
                    }
                }
            },
            Reader::Lines {
                stream,
                splitter,
                done,
            } => loop {
                let chunk = if *done {
                    splitter.finish()
                } else {
                    splitter.next_chunk()
                };
                if let Some(chunk) = chunk {
                    break self.decode(chunk, &file.path)?;
                }
                if *done {
                    break Work::Ended;
                }
                match stream.next().await {
                    Some(bytes) => {
                        let bytes = bytes.map_err(|e| failed(&e))?;
                        file.fetched += bytes.len() as u64;
                        splitter.push(&bytes);
                    }
                    None => *done = true,
                }
            },
        };
        let ended = matches!(work, Work::Ended);
        Ok(InFlight {
            split: file.split,
            path: file.path.to_string(),
            position: file.position(),
            remaining: if ended { Some(0) } else { file.remaining() },
            work,
        })
    }

    /// Decodes a chunk here, or starts decoding it on another core.
    fn decode(&self, chunk: LineChunk, path: &Path) -> Result<Work> {
        let decoder = self
            .decoder
            .clone()
            .ok_or_else(|| EngineError::connector("filesystem", "no decoder"))?;
        let path = path.to_string();
        let dead_letters = self.dead_letters.clone();
        let schema = self.schema.clone();
        let decode = move || -> Result<VecDeque<Decoded>> {
            let first = chunk.first_line;
            let decoded = match &dead_letters {
                Some(letters) => letters.decode_lines(&chunk.bytes, &path, first, &schema)?,
                None => decoder
                    .decode_lines(&chunk.bytes, &|i| format!("{path}:{}", first + i as u64))?,
            };
            Ok(VecDeque::from([decoded]))
        };
        Ok(if self.parallel_decode > 1 {
            Work::Decoding(tokio::spawn(async move { decode() }))
        } else {
            Work::Done(decode()?)
        })
    }
}

/// Bytes read per request.
const READ_SIZE: u64 = 4 << 20;

/// The bytes of an object, read in ranges of [`READ_SIZE`] with the next
/// one requested while the last is cut and decoded. (`object_store`'s
/// whole-object stream reads a local file in 8 KiB pieces, each a blocking
/// task of its own: that costs more than decoding the bytes.)
fn ranges(
    store: Arc<dyn object_store::ObjectStore>,
    path: Path,
    size: u64,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    let starts = (0..size).step_by(READ_SIZE as usize);
    futures::stream::iter(starts)
        .map(move |start| {
            let (store, path) = (store.clone(), path.clone());
            async move {
                store
                    .get_range(&path, start..(start + READ_SIZE).min(size))
                    .await
            }
        })
        .buffered(2)
        .boxed()
}

/// Hidden files and folders (`.x`, `_x`, such as a sink's `_staging`)
/// below the prefix are not data.
fn is_hidden(path: &Path, prefix: &Path) -> bool {
    let hidden = |part: &str| part.starts_with('.') || part.starts_with('_');
    match path.prefix_match(prefix) {
        Some(mut parts) => parts.any(|p| hidden(p.as_ref())),
        None => path.filename().is_some_and(hidden),
    }
}

impl FileSource {
    /// Lists the files on the first poll; files a restored checkpoint had
    /// finished are not read again.
    async fn list(&mut self) -> Result<Vec<SplitId>> {
        let mut files = self.ctx.list().await?;
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
        Ok(splits)
    }

    /// Opens the next file, if there is room.
    async fn open_next(&mut self) -> Result<()> {
        if self.open.len() >= MAX_OPEN_FILES {
            return Ok(());
        }
        let Some((split, meta)) = self.pending.as_mut().and_then(VecDeque::pop_front) else {
            return Ok(());
        };
        let skip = self
            .positions
            .get(meta.location.as_ref())
            .map_or(0, |p| p.0);
        let file = self.ctx.open_file(split, meta, skip).await?;
        self.open.push_back(file);
        Ok(())
    }

    /// Takes reads from the open files in turn until `parallel_decode` are
    /// on their way out.
    async fn top_up(&mut self) -> Result<()> {
        while self.in_flight.len() < self.ctx.parallel_decode {
            let Some(mut file) = self.open.pop_front() else {
                return Ok(());
            };
            let read = self.ctx.take(&mut file).await?;
            let ended = matches!(read.work, Work::Ended);
            self.in_flight.push_back(read);
            if !ended {
                self.open.push_back(file);
            }
        }
        Ok(())
    }

    /// Records that `read` is emitted: its file's position and progress.
    fn emitted(&mut self, read: &InFlight, ended: bool) {
        self.positions
            .insert(read.path.clone(), (read.position, ended));
        self.progress.insert(
            read.split,
            Progress {
                path: read.path.clone(),
                position: read.position,
                remaining: read.remaining,
            },
        );
    }
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
        if self.pending.is_none() {
            return Ok(SourcePoll::SplitsAdded(self.list().await?));
        }
        // Open one more file per poll until all are open (or the cap).
        self.open_next().await?;
        self.top_up().await?;
        let Some(mut read) = self.in_flight.pop_front() else {
            return Ok(if self.pending.as_ref().is_some_and(|p| !p.is_empty()) {
                SourcePoll::Pending
            } else {
                SourcePoll::End
            });
        };
        let mut pieces = match std::mem::replace(&mut read.work, Work::Ended) {
            Work::Ended => {
                self.emitted(&read, true);
                return Ok(SourcePoll::SplitEnded(read.split));
            }
            Work::Done(pieces) => pieces,
            Work::Decoding(task) => task
                .await
                .map_err(|e| EngineError::Task(format!("decoding {}: {e}", read.path)))??,
        };
        let decoded = pieces.pop_front().unwrap_or_default();
        if !pieces.is_empty() {
            // A row group's later batches go out next, each moving the
            // file's position on by its rows.
            let later: u64 = pieces.iter().map(Decoded::num_rows).sum();
            self.in_flight.push_front(InFlight {
                split: read.split,
                path: read.path.clone(),
                position: read.position,
                remaining: read.remaining,
                work: Work::Done(pieces),
            });
            read.position -= later;
            read.remaining = read.remaining.map(|r| r + later);
        }
        let Decoded { batch, bad } = decoded;
        self.ctx
            .bad_data
            .handle(bad.into_iter().map(|(_, b)| b).collect())
            .await?;
        self.emitted(&read, false);
        match batch {
            Some(batch) if batch.num_rows() > 0 => Ok(SourcePoll::Batch {
                split: read.split,
                batch,
            }),
            _ => Ok(SourcePoll::Pending),
        }
    }

    fn snapshot(&mut self) -> Result<StateSnapshot> {
        let paths: Vec<&str> = self.positions.keys().map(String::as_str).collect();
        let consumed: Vec<u64> = self.positions.values().map(|p| p.0).collect();
        let done: Vec<bool> = self.positions.values().map(|p| p.1).collect();
        let table = FILES.write(vec![
            Arc::new(StringArray::from(paths)),
            Arc::new(UInt64Array::from(consumed)),
            Arc::new(BooleanArray::from(done)),
        ])?;
        Ok(StateSnapshot {
            tables: vec![table],
        })
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        let Some(table) = FILES.read(&state)? else {
            return Ok(());
        };
        let paths = table.column::<StringArray>("path")?;
        let consumed = table.column::<UInt64Array>("consumed")?;
        let done = table.column::<BooleanArray>("finished")?;
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
    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

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
            FileSourceOptions {
                batch_size: 3,
                parallel_decode: 1,
            },
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
