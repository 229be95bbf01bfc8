//! Epochs of a job that several processes run together: each task's
//! snapshot of a checkpoint, and the manifest that makes it count.
//!
//! Part of the cluster protocol (`docs/cluster-protocol.md`). A manifest
//! is created once and says `complete` or `aborted`: the process that saw
//! every task's snapshot creates `complete` (only after the epoch before
//! it is complete), and a process closing the generation creates
//! `aborted` after the last complete one. Whichever exists first wins, so
//! no epoch past the base a new generation chose can ever be complete, and
//! sinks never publish rows the new generation produces again.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    Error as StoreError, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use futures::TryStreamExt;

use crate::error::{EngineError, Result};

/// What a manifest says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    Aborted,
}

impl Outcome {
    fn text(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Aborted => "aborted",
        }
    }
}

const MANIFEST: &str = "_manifest";

/// The epochs of one job, under a folder of the checkpoint store.
pub struct Epochs {
    store: Arc<dyn ObjectStore>,
    dir: Path,
}

impl Epochs {
    pub fn new(store: Arc<dyn ObjectStore>, dir: Path) -> Self {
        Epochs { store, dir }
    }

    /// Stores `task`'s snapshot of epoch `epoch` of `generation`.
    pub async fn put_snapshot(
        &self,
        generation: u64,
        epoch: u64,
        task: &str,
        snapshot: Bytes,
    ) -> Result<()> {
        self.store
            .put(
                &self.epoch_dir(generation, epoch).join(task),
                snapshot.into(),
            )
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// `task`'s snapshot of epoch `epoch` of `generation`.
    pub async fn snapshot(&self, generation: u64, epoch: u64, task: &str) -> Result<Bytes> {
        let object = self.epoch_dir(generation, epoch).join(task);
        let found = self.store.get(&object).await.map_err(store_error)?;
        found.bytes().await.map_err(store_error)
    }

    /// The tasks whose snapshots of an epoch are written.
    pub async fn written(&self, generation: u64, epoch: u64) -> Result<Vec<String>> {
        let objects: Vec<_> = self
            .store
            .list(Some(&self.epoch_dir(generation, epoch)))
            .try_collect()
            .await
            .map_err(store_error)?;
        Ok(objects
            .iter()
            .filter_map(|o| o.location.filename())
            .filter(|name| *name != MANIFEST)
            .map(str::to_string)
            .collect())
    }

    /// What the manifest of an epoch says, if it exists.
    pub async fn outcome(&self, generation: u64, epoch: u64) -> Result<Option<Outcome>> {
        let manifest = self.epoch_dir(generation, epoch).join(MANIFEST);
        match self.store.get(&manifest).await {
            Ok(found) => {
                let text = found.bytes().await.map_err(store_error)?;
                match text.as_ref() {
                    b"complete" => Ok(Some(Outcome::Complete)),
                    b"aborted" => Ok(Some(Outcome::Aborted)),
                    other => Err(store_error(format!(
                        "manifest {manifest} says {:?}",
                        String::from_utf8_lossy(other)
                    ))),
                }
            }
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Completes epoch `epoch` once all `tasks` snapshots are there and the
    /// epoch before is complete (`first` is the generation's first epoch,
    /// which follows its base and needs no predecessor here). Returns what
    /// the manifest says, or `None` while snapshots or the predecessor are
    /// missing.
    pub async fn try_complete(
        &self,
        generation: u64,
        epoch: u64,
        first: u64,
        tasks: usize,
    ) -> Result<Option<Outcome>> {
        if let Some(decided) = self.outcome(generation, epoch).await? {
            return Ok(Some(decided));
        }
        if epoch > first {
            match self.outcome(generation, epoch - 1).await? {
                Some(Outcome::Complete) => {}
                // After an aborted epoch nothing completes.
                Some(Outcome::Aborted) => return Ok(Some(Outcome::Aborted)),
                None => return Ok(None),
            }
        }
        let snapshots: Vec<_> = self
            .store
            .list(Some(&self.epoch_dir(generation, epoch)))
            .try_collect()
            .await
            .map_err(store_error)?;
        let written = snapshots
            .iter()
            .filter(|o| o.location.filename() != Some(MANIFEST))
            .count();
        if written < tasks {
            return Ok(None);
        }
        self.decide(generation, epoch, Outcome::Complete)
            .await
            .map(Some)
    }

    /// Closes `generation` (whose first epoch is `first`): returns its last
    /// complete epoch, if any, after making sure no later one can ever be
    /// complete.
    pub async fn close(&self, generation: u64, first: u64) -> Result<Option<u64>> {
        let mut last = self.newest_complete(generation).await?;
        loop {
            let next = last.map_or(first, |n| n + 1);
            match self.decide(generation, next, Outcome::Aborted).await? {
                Outcome::Aborted => return Ok(last),
                // A manifest writer got there first: that epoch counts.
                Outcome::Complete => last = Some(next),
            }
        }
    }

    /// The newest epoch of `generation` whose manifest says complete.
    async fn newest_complete(&self, generation: u64) -> Result<Option<u64>> {
        let objects: Vec<_> = self
            .store
            .list(Some(&self.generation_dir(generation)))
            .try_collect()
            .await
            .map_err(store_error)?;
        let mut epochs: Vec<u64> = objects
            .iter()
            .filter(|o| o.location.filename() == Some(MANIFEST))
            .filter_map(|o| o.location.parts().nth_back(1)?.as_ref().parse().ok())
            .collect();
        epochs.sort_unstable();
        for epoch in epochs.into_iter().rev() {
            if self.outcome(generation, epoch).await? == Some(Outcome::Complete) {
                return Ok(Some(epoch));
            }
        }
        Ok(None)
    }

    /// Creates the manifest of an epoch saying `outcome`, unless one exists;
    /// returns what the manifest says.
    async fn decide(&self, generation: u64, epoch: u64, outcome: Outcome) -> Result<Outcome> {
        let manifest = self.epoch_dir(generation, epoch).join(MANIFEST);
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let body = PutPayload::from_static(outcome.text().as_bytes());
        match self.store.put_opts(&manifest, body, create).await {
            Ok(_) => Ok(outcome),
            Err(StoreError::AlreadyExists { .. }) => self
                .outcome(generation, epoch)
                .await?
                .ok_or_else(|| store_error(format!("manifest {manifest} vanished"))),
            Err(e) => Err(store_error(e)),
        }
    }

    fn generation_dir(&self, generation: u64) -> Path {
        self.dir.clone().join(format!("{generation:020}"))
    }

    fn epoch_dir(&self, generation: u64, epoch: u64) -> Path {
        self.generation_dir(generation).join(format!("{epoch:020}"))
    }
}

fn store_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::connector("epochs", e)
}

#[cfg(test)]
mod tests {
    use datafusion::object_store::local::LocalFileSystem;

    use super::*;

    fn local(dir: &tempfile::TempDir) -> Arc<Epochs> {
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        Arc::new(Epochs::new(Arc::new(store), Path::from("job/epochs")))
    }

    async fn snapshot_all(epochs: &Epochs, generation: u64, epoch: u64, tasks: usize) {
        for t in 0..tasks {
            let task = format!("0-{t}");
            epochs
                .put_snapshot(generation, epoch, &task, Bytes::from(task.clone()))
                .await
                .unwrap();
        }
    }

    /// An epoch completes when every task's snapshot is there, and only
    /// after the epoch before it.
    #[tokio::test]
    async fn an_epoch_completes_with_all_snapshots_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let epochs = local(&dir);
        epochs
            .put_snapshot(1, 1, "0-0", Bytes::from_static(b"a"))
            .await
            .unwrap();
        assert_eq!(epochs.try_complete(1, 1, 1, 2).await.unwrap(), None);
        snapshot_all(&epochs, 1, 2, 2).await;
        assert_eq!(
            epochs.try_complete(1, 2, 1, 2).await.unwrap(),
            None,
            "epoch 1 is not complete yet"
        );
        snapshot_all(&epochs, 1, 1, 2).await;
        assert_eq!(
            epochs.try_complete(1, 1, 1, 2).await.unwrap(),
            Some(Outcome::Complete)
        );
        assert_eq!(
            epochs.try_complete(1, 2, 1, 2).await.unwrap(),
            Some(Outcome::Complete)
        );
        assert_eq!(
            epochs.snapshot(1, 2, "0-1").await.unwrap(),
            Bytes::from_static(b"0-1")
        );
        assert_eq!(epochs.close(1, 1).await.unwrap(), Some(2));
        assert_eq!(epochs.outcome(1, 3).await.unwrap(), Some(Outcome::Aborted));
        // A generation that never completed an epoch closes at its first.
        assert_eq!(epochs.close(2, 3).await.unwrap(), None);
        assert_eq!(epochs.outcome(2, 3).await.unwrap(), Some(Outcome::Aborted));
    }

    /// A manifest writer and a process closing the generation race: after
    /// the close, the epoch after the returned one is aborted, nothing later
    /// completes, and the returned one is complete.
    #[tokio::test]
    async fn closing_races_with_completion() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let epochs = local(&dir);
            snapshot_all(&epochs, 1, 1, 3).await;
            epochs.try_complete(1, 1, 1, 3).await.unwrap();
            for epoch in 2..=4 {
                snapshot_all(&epochs, 1, epoch, 3).await;
            }
            let writer = {
                let epochs = epochs.clone();
                tokio::spawn(async move {
                    for epoch in 2..=4 {
                        epochs.try_complete(1, epoch, 1, 3).await.unwrap();
                    }
                })
            };
            let closer = {
                let epochs = epochs.clone();
                tokio::spawn(async move { epochs.close(1, 1).await.unwrap() })
            };
            writer.await.unwrap();
            let last = closer.await.unwrap().unwrap();
            assert!((1..=4).contains(&last), "round {round}: {last}");
            assert_eq!(
                epochs.outcome(1, last).await.unwrap(),
                Some(Outcome::Complete)
            );
            if last < 4 {
                assert_eq!(
                    epochs.outcome(1, last + 1).await.unwrap(),
                    Some(Outcome::Aborted),
                    "round {round}"
                );
                for later in last + 1..=4 {
                    assert_ne!(
                        epochs.try_complete(1, later, 1, 3).await.unwrap(),
                        Some(Outcome::Complete),
                        "round {round}: epoch {later} completed after the close"
                    );
                }
            }
        }
    }
}
