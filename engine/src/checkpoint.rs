//! Checkpoints: where snapshots go, and the coordinator that takes them.
//!
//! The coordinator injects barriers at the sources every interval. Each
//! subtask snapshots its chain when the barrier has arrived on all its
//! inputs and reports the state; sinks prepare their commit. When every
//! subtask has reported, the states are written as Arrow IPC files through
//! object_store, then the manifest, last: a checkpoint counts only once its
//! manifest exists. Then sinks are told to commit. At the end of input every
//! subtask reports a final snapshot, so a finished job restores as finished.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::object_store::path::Path;
use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::error::{EngineError, Result};
use crate::graph::{Graph, NodeId};
use crate::message::{now_millis, CheckpointId, Millis};
use crate::runtime::{SnapshotAck, SourceControl};
use crate::source::FINAL_CHECKPOINT;
use crate::state::StateSnapshot;

/// How a job checkpoints.
#[derive(Clone)]
pub struct CheckpointConfig {
    pub interval: Duration,
    /// A checkpoint not complete after this long is abandoned.
    pub timeout: Duration,
    pub store: CheckpointStore,
    /// Complete checkpoints to keep.
    pub retain: usize,
}

/// `_manifest.json`: what a complete checkpoint holds. Written last; a
/// checkpoint without one does not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub checkpoint: CheckpointId,
    /// Taken at the end of input: a restored job has nothing left to read.
    #[serde(default)]
    pub finished: bool,
    /// The job's operators and parallelism ([`fingerprint`]).
    #[serde(default)]
    pub fingerprint: String,
    /// Wall-clock time of writing, ms since the epoch.
    #[serde(default)]
    pub created: i64,
    pub states: Vec<ManifestEntry>,
}

/// One state table of one subtask, or a subtask with no state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub node: NodeId,
    pub subtask: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The Arrow IPC file of the table, in the checkpoint's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// The checkpoints of one job under an object_store prefix.
#[derive(Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    display: String,
}

/// A checkpoint read back.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    pub checkpoint_id: CheckpointId,
    /// The job had finished when this checkpoint was taken.
    pub finished: bool,
    pub fingerprint: String,
    pub states: HashMap<(NodeId, usize), StateSnapshot>,
    pub location: String,
}

impl Restored {
    pub fn take(&mut self, node: NodeId, subtask: usize) -> Option<StateSnapshot> {
        self.states.remove(&(node, subtask))
    }
}

fn storage_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::connector("checkpoint", e)
}

/// What must match between a job and a checkpoint it restores: operators
/// and their parallelism.
pub fn fingerprint(graph: &Graph) -> String {
    graph
        .nodes
        .iter()
        .map(|n| format!("{}:{}:{}", n.id, n.name, n.parallelism))
        .collect::<Vec<_>>()
        .join(";")
}

fn checkpoint_dir(id: CheckpointId) -> String {
    format!("chk-{id:010}")
}

impl CheckpointStore {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, display: impl Into<String>) -> Self {
        CheckpointStore {
            store,
            prefix,
            display: display.into(),
        }
    }

    fn path(&self, parts: &[&str]) -> Path {
        let mut text = self.prefix.to_string();
        for p in parts {
            if !text.is_empty() {
                text.push('/');
            }
            text.push_str(p);
        }
        Path::from(text)
    }

    /// Writes a checkpoint: state files, then the manifest. Returns bytes written.
    ///
    /// The manifest is [`Manifest`] as JSON.
    pub async fn write(
        &self,
        id: CheckpointId,
        fingerprint: &str,
        finished: bool,
        states: &[(NodeId, usize, StateSnapshot)],
    ) -> Result<u64> {
        let dir = checkpoint_dir(id);
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        for (node, subtask, state) in states {
            for (k, (name, batch)) in state.tables.iter().enumerate() {
                let file = format!("{node}-{subtask}-{k}.arrow");
                let mut buffer = Vec::new();
                {
                    let mut writer = FileWriter::try_new(&mut buffer, batch.schema_ref())?;
                    writer.write(batch)?;
                    writer.finish()?;
                }
                bytes += buffer.len() as u64;
                self.store
                    .put(&self.path(&[&dir, &file]), PutPayload::from(buffer))
                    .await
                    .map_err(storage_error)?;
                entries.push(ManifestEntry {
                    node: *node,
                    subtask: *subtask,
                    table: Some(name.clone()),
                    file: Some(file),
                });
            }
            if state.tables.is_empty() {
                entries.push(ManifestEntry {
                    node: *node,
                    subtask: *subtask,
                    table: None,
                    file: None,
                });
            }
        }
        let manifest = Manifest {
            checkpoint: id,
            finished,
            fingerprint: fingerprint.to_string(),
            created: now_millis(),
            states: entries,
        };
        let text = serde_json::to_string(&manifest)
            .map_err(|e| storage_error(format!("{dir}: manifest: {e}")))?;
        bytes += text.len() as u64;
        self.store
            .put(
                &self.path(&[&dir, "_manifest.json"]),
                PutPayload::from(text.into_bytes()),
            )
            .await
            .map_err(storage_error)?;
        Ok(bytes)
    }

    /// Ids of checkpoint folders, newest first (complete or not).
    async fn ids(&self) -> Result<Vec<CheckpointId>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(storage_error)?;
        let mut ids: Vec<CheckpointId> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| {
                p.filename()
                    .and_then(|n| n.strip_prefix("chk-"))
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// Reads the checkpoint `id`; an error if it is incomplete or corrupt.
    pub async fn read(&self, id: CheckpointId) -> Result<Restored> {
        let dir = checkpoint_dir(id);
        let manifest = self
            .store
            .get(&self.path(&[&dir, "_manifest.json"]))
            .await
            .map_err(|e| storage_error(format!("{dir} has no manifest: {e}")))?
            .bytes()
            .await
            .map_err(storage_error)?;
        let manifest: Manifest = serde_json::from_slice(&manifest)
            .map_err(|e| storage_error(format!("{dir}: bad manifest: {e}")))?;
        let mut restored = Restored {
            checkpoint_id: id,
            finished: manifest.finished,
            fingerprint: manifest.fingerprint,
            states: HashMap::new(),
            location: format!("{}/{dir}", self.display),
        };
        for entry in manifest.states {
            let state = restored
                .states
                .entry((entry.node, entry.subtask))
                .or_default();
            let (Some(table), Some(file)) = (entry.table, entry.file) else {
                continue;
            };
            let file = file.as_str();
            let data = self
                .store
                .get(&self.path(&[&dir, file]))
                .await
                .map_err(|e| storage_error(format!("{dir}/{file}: {e}")))?
                .bytes()
                .await
                .map_err(storage_error)?;
            let reader = FileReader::try_new(Cursor::new(data.to_vec()), None)?;
            let schema = reader.schema();
            let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
            let batch = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
            state.tables.push((table, batch));
        }
        Ok(restored)
    }

    /// The newest complete checkpoint; corrupt or partial ones are skipped
    /// with a warning.
    pub async fn latest(&self) -> Result<Option<Restored>> {
        for id in self.ids().await? {
            match self.read(id).await {
                Ok(r) => return Ok(Some(r)),
                Err(e) => {
                    tracing::warn!(checkpoint = id, location = %self.display, "skipping checkpoint: {e}")
                }
            }
        }
        Ok(None)
    }

    /// Deletes all but the newest `keep` complete checkpoints (and any
    /// incomplete one older than the newest complete).
    pub async fn cleanup(&self, keep: usize, newest_complete: CheckpointId) -> Result<()> {
        let ids = self.ids().await?;
        let mut kept = 0;
        for id in ids {
            if id > newest_complete {
                continue;
            }
            if kept < keep {
                kept += 1;
                continue;
            }
            let dir = self.path(&[&checkpoint_dir(id)]);
            let files: Vec<_> = self.store.list(Some(&dir)).collect().await;
            for file in files.into_iter().flatten() {
                let _ = self.store.delete(&file.location).await;
            }
        }
        Ok(())
    }
}

/// Checkpoint figures of a job.
#[derive(Debug, Default)]
pub struct CheckpointMetrics {
    completed: AtomicU64,
    failed: AtomicU64,
    last_id: AtomicU64,
    last_duration_ms: AtomicU64,
    last_size: AtomicU64,
    last_alignment_ms: AtomicU64,
    last_completed_at: AtomicI64,
}

/// A copy of [`CheckpointMetrics`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointSnapshot {
    pub completed: u64,
    pub failed: u64,
    pub last_id: Option<CheckpointId>,
    pub last_duration_ms: u64,
    pub last_size_bytes: u64,
    /// The longest barrier alignment of the last checkpoint.
    pub last_alignment_ms: u64,
    /// Wall clock when the last checkpoint completed.
    pub last_completed_at: Option<Millis>,
}

impl CheckpointMetrics {
    pub fn snapshot(&self) -> CheckpointSnapshot {
        let completed = self.completed.load(Relaxed);
        let at = self.last_completed_at.load(Relaxed);
        CheckpointSnapshot {
            completed,
            failed: self.failed.load(Relaxed),
            last_id: (completed > 0).then(|| self.last_id.load(Relaxed)),
            last_duration_ms: self.last_duration_ms.load(Relaxed),
            last_size_bytes: self.last_size.load(Relaxed),
            last_alignment_ms: self.last_alignment_ms.load(Relaxed),
            last_completed_at: (at > 0).then_some(at),
        }
    }
}

/// One checkpoint being collected.
struct InFlight {
    started: Instant,
    acks: Vec<SnapshotAck>,
}

/// Runs the checkpoints of one job until every subtask has sent its final
/// snapshot (or the job is gone).
pub(crate) struct Coordinator {
    pub config: CheckpointConfig,
    pub controls: Vec<mpsc::Sender<SourceControl>>,
    pub acks: mpsc::Receiver<SnapshotAck>,
    /// Snapshots per checkpoint: one per subtask task.
    pub expected: usize,
    pub commits: watch::Sender<CheckpointId>,
    pub metrics: Arc<CheckpointMetrics>,
    pub next_id: CheckpointId,
    pub fingerprint: String,
}

impl Coordinator {
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.tick().await;
        let mut in_flight: BTreeMap<CheckpointId, InFlight> = BTreeMap::new();
        let mut finals: Vec<SnapshotAck> = Vec::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    in_flight.retain(|id, c| {
                        let expired = c.started.elapsed() > self.config.timeout;
                        if expired {
                            tracing::warn!(checkpoint = id, "checkpoint timed out; the job carries on");
                            self.metrics.failed.fetch_add(1, Relaxed);
                        }
                        !expired
                    });
                    // After the first subtask finished, no new checkpoint
                    // can complete: only the final one follows.
                    if in_flight.is_empty() && finals.is_empty() {
                        let id = self.next_id;
                        self.next_id += 1;
                        let barrier = crate::message::Barrier { checkpoint_id: id, injected_at: now_millis() };
                        in_flight.insert(id, InFlight { started: Instant::now(), acks: Vec::new() });
                        for control in &self.controls {
                            let _ = control.try_send(SourceControl::Barrier(barrier));
                        }
                    }
                }
                ack = self.acks.recv() => {
                    let Some(ack) = ack else { return };
                    if ack.checkpoint_id == FINAL_CHECKPOINT {
                        finals.push(ack);
                        if finals.len() == self.expected {
                            let id = self.next_id;
                            let acks = std::mem::take(&mut finals);
                            if self.complete(id, acks, Instant::now(), true).await {
                                let _ = self.commits.send(FINAL_CHECKPOINT);
                            }
                            return;
                        }
                        continue;
                    }
                    let id = ack.checkpoint_id;
                    let Some(c) = in_flight.get_mut(&id) else { continue };
                    c.acks.push(ack);
                    if c.acks.len() == self.expected {
                        if let Some(c) = in_flight.remove(&id) {
                            if self.complete(id, c.acks, c.started, false).await {
                                let _ = self.commits.send(id);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writes a checkpoint; true when its manifest is written.
    async fn complete(
        &self,
        id: CheckpointId,
        acks: Vec<SnapshotAck>,
        started: Instant,
        finished: bool,
    ) -> bool {
        let alignment = acks.iter().map(|a| a.alignment_ms).max().unwrap_or(0);
        let mut states = Vec::new();
        for ack in acks {
            for (node, state) in ack.states {
                states.push((node, ack.subtask, state));
            }
        }
        match self
            .config
            .store
            .write(id, &self.fingerprint, finished, &states)
            .await
        {
            Ok(bytes) => {
                let m = &self.metrics;
                m.completed.fetch_add(1, Relaxed);
                m.last_id.store(id, Relaxed);
                m.last_duration_ms
                    .store(started.elapsed().as_millis() as u64, Relaxed);
                m.last_size.store(bytes, Relaxed);
                m.last_alignment_ms.store(alignment, Relaxed);
                m.last_completed_at.store(now_millis(), Relaxed);
                tracing::debug!(checkpoint = id, bytes, finished, "checkpoint complete");
                if let Err(e) = self
                    .config
                    .store
                    .cleanup(self.config.retain.max(1), id)
                    .await
                {
                    tracing::warn!("checkpoint cleanup: {e}");
                }
                true
            }
            Err(e) => {
                tracing::warn!(checkpoint = id, "checkpoint failed: {e}");
                self.metrics.failed.fetch_add(1, Relaxed);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::object_store::local::LocalFileSystem;

    fn state(v: i64) -> StateSnapshot {
        let batch = RecordBatch::try_from_iter(vec![(
            "v",
            std::sync::Arc::new(Int64Array::from(vec![v])) as ArrayRef,
        )])
        .unwrap();
        StateSnapshot {
            tables: vec![("t".into(), batch)],
        }
    }

    fn value(r: &Restored) -> i64 {
        let s = &r.states[&(3, 1)];
        s.table("t")
            .unwrap()
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    }

    #[tokio::test]
    async fn newest_complete_checkpoint_wins_and_broken_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let store = CheckpointStore::new(fs, Path::from("job"), "test");
        for id in 1..=4 {
            store
                .write(id, "fp", false, &[(3, 1, state(id as i64 * 10))])
                .await
                .unwrap();
        }
        assert_eq!(value(&store.latest().await.unwrap().unwrap()), 40);
        // 4 lost a state file (a crash mid-write), 5 never got its manifest.
        std::fs::remove_file(dir.path().join("job/chk-0000000004/3-1-0.arrow")).unwrap();
        std::fs::create_dir_all(dir.path().join("job/chk-0000000005")).unwrap();
        std::fs::write(
            dir.path().join("job/chk-0000000005/3-1-0.arrow"),
            b"partial",
        )
        .unwrap();
        let latest = store.latest().await.unwrap().unwrap();
        assert_eq!((latest.checkpoint_id, value(&latest)), (3, 30));
        // Keep the newest two complete ones up to 3.
        store.cleanup(2, 3).await.unwrap();
        assert!(!dir
            .path()
            .join("job/chk-0000000001/_manifest.json")
            .exists());
        assert!(dir
            .path()
            .join("job/chk-0000000002/_manifest.json")
            .exists());
        assert!(dir
            .path()
            .join("job/chk-0000000003/_manifest.json")
            .exists());
    }
}
