//! Generations of a job that several processes run together.
//!
//! The first piece of the cluster protocol (`docs/cluster-protocol.md`):
//! when any task moves between processes, every process rolls back to the
//! last complete checkpoint under a new generation. The generation is an
//! object in the checkpoint store, created only if absent, so of several
//! processes that start generation `g + 1` at once exactly one creates it
//! and all of them adopt what it says. Nothing else decides.
//!
//! ```
//! # tokio_test_block_on(async {
//! use std::sync::Arc;
//! use datafusion::object_store::memory::InMemory;
//! use datafusion::object_store::path::Path;
//! use weir_engine::generations::{Base, Generations};
//!
//! let generations = Generations::new(Arc::new(InMemory::new()), Path::from("job/generations"));
//! let at = |epoch| Some(Base { generation: 0, epoch });
//! let first = generations.next(0, at(7), "process-a").await.unwrap();
//! // Another process that saw the same rebalance adopts the same generation.
//! let same = generations.next(0, at(9), "process-b").await.unwrap();
//! assert_eq!(first, same);
//! assert_eq!((first.number, first.base), (1, at(7)));
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::object_store::path::Path;
use datafusion::object_store::{
    Error as StoreError, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// One generation: its number, the complete epoch every task restores
/// from (`None`: the job's start), and the process that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u64,
    pub base: Option<Base>,
    pub creator: String,
    /// Wall-clock time of creation (ms since the Unix epoch): every
    /// process times the generation's checkpoints from it.
    #[serde(default)]
    pub created: i64,
}

/// A complete epoch of an earlier generation ([`crate::epochs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    pub generation: u64,
    pub epoch: u64,
}

/// The generations of one job, under a folder of the checkpoint store.
pub struct Generations {
    store: Arc<dyn ObjectStore>,
    dir: Path,
}

impl Generations {
    pub fn new(store: Arc<dyn ObjectStore>, dir: Path) -> Self {
        Generations { store, dir }
    }

    /// The newest generation, if any was started.
    pub async fn latest(&self) -> Result<Option<Generation>> {
        let objects: Vec<_> = self
            .store
            .list(Some(&self.dir))
            .try_collect()
            .await
            .map_err(store_error)?;
        let newest = objects
            .iter()
            .filter_map(|o| o.location.filename()?.parse::<u64>().ok())
            .max();
        match newest {
            Some(number) => self.read(number).await.map(Some),
            None => Ok(None),
        }
    }

    /// Starts the generation after `current`, restoring from `base`; when
    /// another process started it first, its generation (and its base) is
    /// the one returned.
    pub async fn next(
        &self,
        current: u64,
        base: Option<Base>,
        creator: &str,
    ) -> Result<Generation> {
        let proposed = Generation {
            number: current + 1,
            base,
            creator: creator.to_string(),
            created: crate::message::now_millis(),
        };
        let body = serde_json::to_vec(&proposed).map_err(store_error)?;
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(proposed.number), PutPayload::from(body), create)
            .await
        {
            Ok(_) => Ok(proposed),
            Err(StoreError::AlreadyExists { .. }) => self.read(proposed.number).await,
            Err(e) => Err(store_error(e)),
        }
    }

    /// Claims task `task` of generation `number` for `process`: `true`
    /// when `process` holds it (it claimed it now, or before), `false` when
    /// another process did first. Created atomically, as generations are:
    /// two processes whose views of a rebalance differ for a moment (one
    /// has not seen a task taken from it yet) cannot both run the task in
    /// one generation, which would write its rows twice.
    pub async fn claim(&self, number: u64, task: &str, process: &str) -> Result<bool> {
        let path = self.claims_dir().join(format!("{number:020}")).join(task);
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let body = PutPayload::from(process.as_bytes().to_vec());
        match self.store.put_opts(&path, body, create).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => {
                let holder = self.contents(&path).await?;
                Ok(holder == process.as_bytes())
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// Records the tasks (`stage-task`) `process` runs in generation
    /// `number`, in one object beside the claims (deleted with them): any
    /// process reads the whole job's placement with one list and one read
    /// per process, whatever the broker tells of its groups.
    pub async fn record_tasks(&self, number: u64, process: &str, tasks: &[String]) -> Result<()> {
        let path = self.processes_dir(number).join(process);
        let body = PutPayload::from(tasks.join("\n").into_bytes());
        self.store.put(&path, body).await.map_err(store_error)?;
        Ok(())
    }

    /// Who runs each task (`stage-task`) in generation `number`, as the
    /// processes recorded it.
    pub async fn placement(&self, number: u64) -> Result<HashMap<String, String>> {
        let dir = self.processes_dir(number);
        let listed: Vec<Path> = self
            .store
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(store_error)?;
        let mut owners = HashMap::new();
        for location in listed {
            let Some(process) = location.filename().map(str::to_string) else {
                continue;
            };
            let tasks = self.contents(&location).await?;
            for task in String::from_utf8_lossy(&tasks).lines() {
                owners.insert(task.to_string(), process.clone());
            }
        }
        Ok(owners)
    }

    fn processes_dir(&self, number: u64) -> Path {
        self.claims_dir()
            .join(format!("{number:020}"))
            .join("processes")
    }

    /// Deletes the task claims of the generations before `number`; how
    /// many it deleted. A claim matters only while its generation can
    /// still complete a checkpoint, and a generation is closed before the
    /// next one is created (`docs/cluster-protocol.md`), so the creator of
    /// generation `g` forgets the claims before `g - 1`: one small object
    /// per task and generation no longer piles up.
    pub async fn forget_claims_before(&self, number: u64) -> Result<usize> {
        let claims = self.claims_dir();
        let old: Vec<Path> = self
            .store
            .list(Some(&claims))
            .try_filter_map(|meta| {
                let generation = meta
                    .location
                    .prefix_match(&claims)
                    .and_then(|mut parts| parts.next())
                    .and_then(|part| part.as_ref().parse::<u64>().ok());
                let old = generation.is_some_and(|g| g < number);
                futures::future::ready(Ok(old.then_some(meta.location)))
            })
            .try_collect()
            .await
            .map_err(store_error)?;
        let count = old.len();
        let locations = futures::stream::iter(old.into_iter().map(Ok)).boxed();
        self.store
            .delete_stream(locations)
            .try_collect::<Vec<Path>>()
            .await
            .map_err(store_error)?;
        Ok(count)
    }

    /// Beside the generations, not under them: listing them stays short.
    fn claims_dir(&self) -> Path {
        Path::from(format!("{}-claims", self.dir))
    }

    async fn read(&self, number: u64) -> Result<Generation> {
        let bytes = self.contents(&self.path(number)).await?;
        serde_json::from_slice(&bytes).map_err(store_error)
    }

    /// The whole of a (small) object.
    async fn contents(&self, path: &Path) -> Result<Vec<u8>> {
        let read = self.store.get(path).await.map_err(store_error)?;
        Ok(read.bytes().await.map_err(store_error)?.to_vec())
    }

    /// Zero-padded, so names sort as numbers.
    fn path(&self, number: u64) -> Path {
        self.dir.clone().join(format!("{number:020}"))
    }
}

fn store_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::connector("generations", e)
}

#[cfg(test)]
mod tests {
    use datafusion::object_store::local::LocalFileSystem;

    use super::*;

    fn epoch(epoch: u64) -> Option<Base> {
        Some(Base {
            generation: 0,
            epoch,
        })
    }

    fn local(dir: &tempfile::TempDir) -> Generations {
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        Generations::new(Arc::new(store), Path::from("job/generations"))
    }

    /// Two processes that both think they run a task in one generation:
    /// the first claim holds, again for its process, never for the other;
    /// the next generation is claimed afresh; listing generations does not
    /// see the claims.
    #[tokio::test]
    async fn a_task_is_claimed_once_per_generation() {
        let dir = tempfile::tempdir().unwrap();
        let generations = local(&dir);
        generations.next(0, None, "p1").await.unwrap();
        assert!(generations.claim(1, "0-3", "p1").await.unwrap());
        assert!(!generations.claim(1, "0-3", "p4").await.unwrap());
        assert!(generations.claim(1, "0-3", "p1").await.unwrap());
        assert!(generations.claim(2, "0-3", "p4").await.unwrap());
        assert_eq!(generations.latest().await.unwrap().unwrap().number, 1);
    }

    /// Each process's recorded tasks make the placement of its
    /// generation; the record goes with the generation's claims.
    #[tokio::test]
    async fn recorded_tasks_make_the_placement_and_are_forgotten_with_the_claims() {
        let dir = tempfile::tempdir().unwrap();
        let generations = local(&dir);
        let tasks = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        generations
            .record_tasks(4, "p1", &tasks(&["0-0", "1-2"]))
            .await
            .unwrap();
        generations
            .record_tasks(4, "p2", &tasks(&["0-1"]))
            .await
            .unwrap();
        generations
            .record_tasks(5, "p2", &tasks(&["0-0"]))
            .await
            .unwrap();
        let placement = generations.placement(4).await.unwrap();
        let expected: HashMap<String, String> = [("0-0", "p1"), ("1-2", "p1"), ("0-1", "p2")]
            .into_iter()
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect();
        assert_eq!(placement, expected);
        assert!(generations.placement(3).await.unwrap().is_empty());
        assert_eq!(generations.forget_claims_before(5).await.unwrap(), 2);
        assert!(generations.placement(4).await.unwrap().is_empty());
        assert_eq!(generations.placement(5).await.unwrap().len(), 1);
    }

    /// The claims of generations before a number are deleted, the others
    /// kept: a deleted claim can be taken again, a kept one cannot.
    #[tokio::test]
    async fn old_claims_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let generations = local(&dir);
        for number in 1..=3 {
            for task in ["0-0", "0-1", "1-0"] {
                assert!(generations.claim(number, task, "p1").await.unwrap());
            }
        }
        assert_eq!(generations.forget_claims_before(3).await.unwrap(), 6);
        assert_eq!(generations.forget_claims_before(3).await.unwrap(), 0);
        assert!(
            generations.claim(2, "0-1", "p2").await.unwrap(),
            "forgotten"
        );
        assert!(!generations.claim(3, "0-1", "p2").await.unwrap(), "kept");
    }

    /// Processes that see the same task movement race to start the next
    /// generation: exactly one proposal wins, and every process gets it.
    #[tokio::test]
    async fn racing_processes_adopt_one_generation() {
        let dir = tempfile::tempdir().unwrap();
        let generations = Arc::new(local(&dir));
        assert_eq!(generations.latest().await.unwrap(), None);
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let generations = generations.clone();
                tokio::spawn(async move {
                    generations
                        .next(0, epoch(i), &format!("process-{i}"))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut adopted = Vec::new();
        for racer in racers {
            adopted.push(racer.await.unwrap());
        }
        let winner = adopted[0].clone();
        assert!(adopted.iter().all(|g| *g == winner), "{adopted:?}");
        assert_eq!(winner.number, 1);
        assert_eq!(
            winner.creator,
            format!("process-{}", winner.base.unwrap().epoch),
            "the base is the creator's proposal"
        );
        assert_eq!(generations.latest().await.unwrap(), Some(winner));
    }

    /// Generations follow one another, and the newest is found by number
    /// (not by name order alone: names are padded so both agree).
    #[tokio::test]
    async fn the_latest_is_the_highest_number() {
        let dir = tempfile::tempdir().unwrap();
        let generations = local(&dir);
        let mut current = 0;
        for base in [None, epoch(3), epoch(12)] {
            current = generations.next(current, base, "p").await.unwrap().number;
        }
        let latest = generations.latest().await.unwrap().unwrap();
        assert_eq!((latest.number, latest.base), (3, epoch(12)));
        // A process still on generation 1 proposing 2 gets the existing 2.
        let stale = generations.next(1, epoch(99), "late").await.unwrap();
        assert_eq!((stale.number, stale.base), (2, epoch(3)));
    }
}
