//! Writing part files: JSON lines, CSV, Parquet, Avro or protobuf messages,
//! rolled by size and age.
//!
//! Data streams to the store (multipart uploads), so memory stays bounded
//! whatever the file size. Delivery:
//!
//! - at-least-once: part files are written under their final names and are
//!   complete at every barrier.
//! - exactly-once (with checkpoints): part files are written under
//!   `_staging/` (hidden from readers), closed at each barrier and recorded
//!   in the checkpoint as prepared; when the checkpoint completes they are
//!   renamed to their final names. A restart commits what the restored
//!   checkpoint prepared (again, harmlessly, if it was) and deletes staging
//!   files written after it. Final names are deterministic (subtask,
//!   checkpoint, sequence), so a replay rewrites the same names and never
//!   doubles a row. Files roll at every checkpoint, as Flink's bulk formats do.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::AsyncArrowWriter;
use tokio::io::AsyncWriteExt;
use weir_engine::{
    CheckpointId, EngineError, Result, Sink, StateSnapshot, StateTable, Visibility,
    FINAL_CHECKPOINT,
};

use super::avro_file::AvroPart;
use super::partitions::{PartitionCommit, Partitioning};
use super::protobuf_file::delimit;
use crate::format::{encode_lines, Format};
use crate::protobuf::ProtobufEncoder;
use crate::store::Location;

enum Writer {
    Lines { out: Box<BufWriter>, bytes: u64 },
    Parquet(Box<AsyncArrowWriter<BufWriter>>),
    Avro { part: AvroPart, out: Box<BufWriter> },
}

struct PartFile {
    writer: Writer,
    /// Where it is written (staging, for exactly-once).
    path: Path,
    /// Where it becomes visible.
    target: Path,
    opened: Instant,
    rows: u64,
}

/// How part files are named and made visible.
pub enum Delivery {
    /// Final names, unique per run and subtask.
    AtLeastOnce { prefix: String },
    /// Staged, committed with checkpoints; named by subtask and checkpoint.
    ExactlyOnce { subtask: usize },
}

pub struct FileSink {
    location: Location,
    format: Format,
    /// Encodes the messages of a `protobuf` file.
    messages: Option<Arc<ProtobufEncoder>>,
    schema: SchemaRef,
    delivery: Delivery,
    roll_size: u64,
    roll_interval: Option<Duration>,
    /// The checkpoint the rows now written belong to (exactly-once).
    epoch: CheckpointId,
    sequence: u64,
    /// The open part file of each partition directory (none: `[]`).
    current: BTreeMap<Vec<String>, PartFile>,
    partitioning: Option<Partitioning>,
    commit: Option<PartitionCommit>,
    watermark: i64,
    /// Closed files of the current epoch: (written at, visible at).
    closed: Vec<(Path, Path)>,
    /// Prepared files by checkpoint, waiting for it to complete.
    pending: BTreeMap<CheckpointId, Vec<(Path, Path)>>,
    /// Makes this instance's staging names its own: an instance that
    /// lives on after its task moved (a cluster job's zombie) cannot
    /// overwrite what the task's new instance stages under the same
    /// final name.
    instance: u32,
    /// Names this sink's exactly-once files apart from another job's
    /// writing to the same path: drawn at the first start, kept in the
    /// checkpoints (Flink's part-file UUID). Empty for a checkpoint taken
    /// before sinks had one.
    writer: String,
}

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError::connector("filesystem sink", e)
}

const STAGING: &str = "_staging";

/// Files written for a checkpoint and not yet published: staging path and
/// the name they get when it completes.
static PENDING: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "pending",
        [
            ("checkpoint", DataType::UInt64),
            ("staging", DataType::Utf8),
            ("target", DataType::Utf8),
        ],
    )
});

/// The next checkpoint's number, which names its files.
static EPOCH: LazyLock<StateTable> =
    LazyLock::new(|| StateTable::new("epoch", [("epoch", DataType::Int64)]));

/// The writer id that names the files.
static WRITER: LazyLock<StateTable> =
    LazyLock::new(|| StateTable::new("writer", [("writer", DataType::Utf8)]));

impl FileSink {
    pub fn new(
        location: Location,
        format: Format,
        schema: SchemaRef,
        delivery: Delivery,
        roll_size: u64,
        roll_interval: Option<Duration>,
    ) -> Self {
        FileSink {
            location,
            format,
            messages: None,
            schema,
            delivery,
            roll_size,
            roll_interval,
            epoch: 1,
            sequence: 0,
            current: BTreeMap::new(),
            partitioning: None,
            commit: None,
            watermark: i64::MIN,
            closed: Vec::new(),
            pending: BTreeMap::new(),
            instance: rand::random(),
            writer: format!("{:08x}", rand::random::<u32>()),
        }
    }

    /// Writes each row as a message (`protobuf`: each after its length).
    pub fn writing_messages(mut self, encoder: Arc<ProtobufEncoder>) -> Self {
        self.messages = Some(encoder);
        self
    }

    /// Writes each row under its partition's directory, and commits
    /// partitions as `commit` says.
    pub fn partitioned(
        mut self,
        partitioning: Partitioning,
        commit: Option<PartitionCommit>,
    ) -> Self {
        self.schema = partitioning.data_schema.clone();
        self.partitioning = Some(partitioning);
        self.commit = commit;
        self
    }

    /// Writes `_SUCCESS` into every partition that is complete (all of
    /// them at the end of input).
    async fn commit_partitions(&mut self, end: bool) -> Result<()> {
        let Some(commit) = self.commit.as_mut() else {
            return Ok(());
        };
        for dir in commit.due(self.watermark, end) {
            let path = self.in_dir(&dir, "_SUCCESS");
            self.location
                .store
                .put(&path, object_store::PutPayload::new())
                .await
                .map_err(|e| err(format!("cannot write {path}: {e}")))?;
            tracing::info!(partition = %dir.join("/"), "partition committed");
        }
        Ok(())
    }

    /// `parts` under the sink's path, each one level (a `/` in one is
    /// encoded, not a level).
    fn path(&self, parts: &[&str]) -> Path {
        let prefix: Vec<object_store::path::PathPart<'static>> = self
            .location
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string().into())
            .collect();
        prefix
            .into_iter()
            .chain(
                parts
                    .iter()
                    .map(|p| object_store::path::PathPart::from(p.to_string())),
            )
            .collect()
    }

    /// `file` in partition directory `dir`.
    fn in_dir(&self, dir: &[String], file: &str) -> Path {
        let mut parts: Vec<&str> = dir.iter().map(String::as_str).collect();
        parts.push(file);
        self.path(&parts)
    }

    fn staging_prefix(&self, subtask: usize) -> String {
        match self.writer.as_str() {
            "" => format!("part-{subtask:03}-"),
            writer => format!("part-{writer}-{subtask:03}-"),
        }
    }

    /// A new part file in partition directory `dir`.
    fn open(&mut self, dir: &[String]) -> Result<PartFile> {
        let ext = self.format.extension();
        let (path, target) = match &self.delivery {
            Delivery::AtLeastOnce { prefix } => {
                let name = format!("part-{prefix}-{:05}.{ext}", self.sequence);
                let p = self.in_dir(dir, &name);
                (p.clone(), p)
            }
            Delivery::ExactlyOnce { subtask } => {
                let name = format!(
                    "{}{:010}-{:04}.{ext}",
                    self.staging_prefix(*subtask),
                    self.epoch,
                    self.sequence
                );
                // Staged flat (the sequence makes names unique), published
                // into its partition.
                let staged = format!("{name}.{:08x}", self.instance);
                (self.path(&[STAGING, &staged]), self.in_dir(dir, &name))
            }
        };
        self.sequence += 1;
        let store = self.location.store.clone();
        let writer = match self.format {
            Format::Parquet => {
                let object = BufWriter::new(store, path.clone());
                Writer::Parquet(Box::new(
                    AsyncArrowWriter::try_new(object, self.schema.clone(), None).map_err(err)?,
                ))
            }
            Format::Avro => Writer::Avro {
                part: AvroPart::new(),
                out: Box::new(BufWriter::new(store, path.clone())),
            },
            _ => Writer::Lines {
                out: Box::new(BufWriter::new(store, path.clone())),
                bytes: 0,
            },
        };
        Ok(PartFile {
            writer,
            path,
            target,
            opened: Instant::now(),
            rows: 0,
        })
    }

    /// Completes every open part file (they are durable afterwards).
    async fn close(&mut self) -> Result<()> {
        for dir in self.current.keys().cloned().collect::<Vec<_>>() {
            self.close_one(&dir).await?;
        }
        Ok(())
    }

    async fn close_one(&mut self, dir: &[String]) -> Result<()> {
        if let Some(file) = self.current.remove(dir) {
            match file.writer {
                Writer::Parquet(w) => {
                    w.close().await.map_err(err)?;
                }
                Writer::Lines { mut out, .. } => out.shutdown().await.map_err(err)?,
                Writer::Avro { part, mut out } => {
                    out.write_all(&part.finish()?).await.map_err(err)?;
                    out.shutdown().await.map_err(err)?;
                }
            }
            tracing::debug!(path = %file.path, rows = file.rows, "closed part file");
            self.closed.push((file.path, file.target));
        }
        Ok(())
    }

    /// Appends `batch` to the part file of partition `dir`.
    async fn write_to(&mut self, dir: &[String], batch: &RecordBatch) -> Result<()> {
        let roll = self.current.get(dir).is_some_and(|f| {
            Self::size(f) >= self.roll_size
                || self.roll_interval.is_some_and(|i| f.opened.elapsed() >= i)
        });
        if roll {
            self.close_one(dir).await?;
        }
        if !self.current.contains_key(dir) {
            let file = self.open(dir)?;
            self.current.insert(dir.to_vec(), file);
        }
        let Some(file) = self.current.get_mut(dir) else {
            return Err(err("no open part file"));
        };
        file.rows += batch.num_rows() as u64;
        match &mut file.writer {
            Writer::Parquet(w) => w.write(batch).await.map_err(err)?,
            Writer::Avro { part, .. } => part.write(batch)?,
            Writer::Lines { out, bytes } => {
                let mut buffer = Vec::new();
                match &self.messages {
                    Some(encoder) => delimit(encoder.encode_rows(batch)?, &mut buffer),
                    None => {
                        let header =
                            matches!(self.format, Format::Csv { header: true, .. }) && *bytes == 0;
                        encode_lines(&self.format, batch, &mut buffer, header)?;
                    }
                }
                *bytes += buffer.len() as u64;
                out.write_all(&buffer).await.map_err(err)?;
            }
        }
        Ok(())
    }

    fn size(file: &PartFile) -> u64 {
        match &file.writer {
            Writer::Lines { bytes, .. } => *bytes,
            Writer::Parquet(w) => (w.bytes_written() + w.in_progress_size()) as u64,
            Writer::Avro { part, .. } => part.bytes,
        }
    }

    fn is_exactly_once(&self) -> bool {
        matches!(self.delivery, Delivery::ExactlyOnce { .. })
    }

    /// Makes a prepared file visible; already visible is fine.
    async fn publish(store: &Arc<dyn ObjectStore>, from: &Path, to: &Path) -> Result<()> {
        match store.rename(from, to).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => match store.head(to).await {
                Ok(_) => Ok(()),
                Err(e) => Err(err(format!(
                    "prepared file {from} is gone and {to} does not exist: {e}"
                ))),
            },
            Err(e) => Err(err(format!("cannot publish {from}: {e}"))),
        }
    }

    fn state(&self) -> Result<StateSnapshot> {
        let mut checkpoints = Vec::new();
        let mut froms = Vec::new();
        let mut tos = Vec::new();
        for (id, files) in &self.pending {
            for (from, to) in files {
                checkpoints.push(*id);
                froms.push(from.to_string());
                tos.push(to.to_string());
            }
        }
        let pending = PENDING.write(vec![
            Arc::new(UInt64Array::from(checkpoints)),
            Arc::new(StringArray::from(froms)),
            Arc::new(StringArray::from(tos)),
        ])?;
        let epoch = EPOCH.write(vec![Arc::new(Int64Array::from(vec![self.epoch as i64]))])?;
        let writer = WRITER.write(vec![Arc::new(StringArray::from(vec![self.writer.clone()]))])?;
        Ok(StateSnapshot {
            tables: vec![pending, epoch, writer],
        })
    }
}

/// `batch` with the sink's column names (the query's may differ), and its
/// row kinds when it is a changelog (for a changelog format).
fn with_schema(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    let schema = match weir_engine::changelog::row_kind_index(batch.schema_ref()) {
        Some(_) => weir_engine::changelog::with_row_kind(schema),
        None => schema.clone(),
    };
    Ok(RecordBatch::try_new(schema, batch.columns().to_vec())?)
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let Some(partitioning) = self.partitioning.clone() else {
            let batch = with_schema(batch, &self.schema)?;
            return self.write_to(&[], &batch).await;
        };
        let full = partitioning.full_schema.clone();
        let batch = with_schema(batch, &full)?;
        for (dir, values, rows) in partitioning.split(&batch).map_err(err)? {
            self.write_to(&dir, &rows).await?;
            if let Some(commit) = self.commit.as_mut() {
                commit.written(&dir, &values);
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64) {
        self.watermark = self.watermark.max(watermark);
    }

    fn visibility(&self) -> Visibility {
        match self.delivery {
            Delivery::ExactlyOnce { .. } => Visibility::AtCommit,
            Delivery::AtLeastOnce { .. } => Visibility::AtFlush,
        }
    }

    /// At-least-once part files close on their own clock (and are read
    /// once closed), not only at barriers: no checkpoint, slow or not,
    /// holds them back.
    fn flush_interval(&self) -> Option<Duration> {
        match self.delivery {
            Delivery::ExactlyOnce { .. } => None,
            Delivery::AtLeastOnce { .. } => self.roll_interval,
        }
    }

    async fn flush(&mut self) -> Result<()> {
        let Some(interval) = self.roll_interval.filter(|_| !self.is_exactly_once()) else {
            return Ok(());
        };
        let due: Vec<Vec<String>> = self
            .current
            .iter()
            .filter(|(_, f)| f.opened.elapsed() >= interval)
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in due {
            self.close_one(&dir).await?;
        }
        // Closed at-least-once files are read where they are.
        self.closed.clear();
        self.commit_partitions(false).await
    }

    async fn prepare_commit(&mut self, checkpoint: CheckpointId) -> Result<StateSnapshot> {
        self.close().await?;
        let closed = std::mem::take(&mut self.closed);
        if !self.is_exactly_once() {
            // At-least-once files are visible once closed.
            self.commit_partitions(false).await?;
            return Ok(StateSnapshot::default());
        }
        if !closed.is_empty() {
            self.pending.entry(checkpoint).or_default().extend(closed);
        }
        if checkpoint != FINAL_CHECKPOINT {
            self.epoch = checkpoint + 1;
            self.sequence = 0;
        }
        self.state()
    }

    async fn commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
        let store = self.location.store.clone();
        let due: Vec<CheckpointId> = self
            .pending
            .range(..=checkpoint)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(files) = self.pending.remove(&id) {
                for (from, to) in files {
                    Self::publish(&store, &from, &to).await?;
                }
            }
        }
        self.commit_partitions(false).await
    }

    async fn finish(&mut self) -> Result<()> {
        self.commit_partitions(true).await
    }

    async fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        let Delivery::ExactlyOnce { subtask } = self.delivery else {
            return Ok(());
        };
        let store = self.location.store.clone();
        let mut kept = std::collections::HashSet::new();
        if let Some(pending) = PENDING.read(&state)? {
            let froms = pending.column::<StringArray>("staging")?;
            let tos = pending.column::<StringArray>("target")?;
            for i in 0..pending.num_rows() {
                let (from, to) = (Path::from(froms.value(i)), Path::from(tos.value(i)));
                Self::publish(&store, &from, &to).await?;
                kept.insert(to);
            }
        }
        // The files go on under the restored writer's names.
        self.writer = match WRITER.read(&state)? {
            Some(writer) => {
                let ids = writer.column::<StringArray>("writer")?;
                ids.iter().flatten().next().unwrap_or_default().to_string()
            }
            None => String::new(),
        };
        if let Some(epoch) = EPOCH.read(&state)? {
            if let Some(e) = epoch.first::<Int64Type>("epoch")? {
                self.epoch = e.max(1) as CheckpointId;
            }
        }
        // Staging files of this subtask written after the checkpoint: their
        // rows will be read again.
        let staging = self.path(&[STAGING]);
        let prefix = self.staging_prefix(subtask);
        let leftovers: Vec<_> = store.list(Some(&staging)).collect().await;
        for meta in leftovers.into_iter().flatten() {
            if meta
                .location
                .filename()
                .is_some_and(|n| n.starts_with(&prefix))
            {
                let _ = store.delete(&meta.location).await;
            }
        }
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if !self.current.is_empty() {
            tracing::debug!("filesystem sink dropped with an open part file; it is not visible");
        }
    }
}
