//! Turning a job's checkpoint settings into the engine's configuration:
//! where checkpoints go, and which one to restore.

use weir_connectors::{store::resolve, Options};
use weir_engine::{CheckpointConfig, CheckpointStore, Restored};
use weir_planner::CheckpointPlan;

use crate::error::{Result, WeirError};

fn usage(e: impl std::fmt::Display) -> WeirError {
    WeirError::Usage(e.to_string())
}

/// The store of a job's checkpoints: `{dir}/{job}`.
fn store_at(dir: &str) -> Result<CheckpointStore> {
    let location = resolve(dir, &Options::default(), true).map_err(usage)?;
    Ok(CheckpointStore::new(location.store, location.prefix, dir))
}

/// The checkpoint configuration of job `name`, and the checkpoint to start
/// from: the one `restore_from` names, or the newest complete one (a corrupt
/// or partial checkpoint is skipped with a warning).
pub(crate) async fn prepare(
    plan: &CheckpointPlan,
    name: &str,
) -> Result<(CheckpointConfig, Option<Restored>)> {
    let dir = format!("{}/{}", plan.dir.trim_end_matches('/'), name);
    let store = store_at(&dir)?;
    let restore = match &plan.restore_from {
        Some(path) => {
            let path = path.trim_end_matches('/');
            let (parent, last) = path.rsplit_once('/').unwrap_or((".", path));
            let id: u64 = last
                .strip_prefix("chk-")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    usage(format!(
                        "'{path}' is not a checkpoint folder (…/chk-NNNNNNNNNN)"
                    ))
                })?;
            Some(store_at(parent)?.read(id).await?)
        }
        None => store.latest().await?,
    };
    let config = CheckpointConfig {
        interval: plan.interval,
        timeout: plan.timeout,
        store,
        retain: plan.retained,
    };
    Ok((config, restore))
}
