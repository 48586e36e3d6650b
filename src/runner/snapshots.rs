//! The run's side of query snapshots: where a run keeps one (keyed like its checkpoint), what
//! an incremental query binds, and what a run whose query failed reports. Reading a query
//! into a snapshot is `source::query::materialize`.

use std::path::{Path, PathBuf};

use crate::config::Pipeline;
use crate::config::model::{Compression, FileSource, QuerySource, SourceFormat};
use crate::engine::{RunSummary, StopReason};
use crate::file_stem;
use crate::source::query::QueryError;
use crate::state::{CheckpointKey, StateError, StateStore};

use super::Changes;

/// Where a pipeline's query snapshot is kept between a run and the run that resumes it:
/// named after what its checkpoint is kept under (the key and the destination), so two
/// pipelines of one name sending to two accounts never read each other's rows.
pub(super) fn snapshot_path(work_dir: &Path, key: CheckpointKey<'_>) -> PathBuf {
    work_dir.join("snapshots").join(format!(
        "{}-{:016x}.snapshot",
        file_stem::of(key.pipeline),
        file_stem::hash(&[key.pipeline, key.destination])
    ))
}

/// The engine's source for a query's snapshot at `path`.
pub(super) fn snapshot_source(path: PathBuf, query: &QuerySource) -> FileSource {
    FileSource {
        path,
        format: SourceFormat::Snapshot,
        compression: Compression::Zstd,
        timezone: query.timezone,
        projection: None,
        poll: None,
    }
}

/// What an incremental query binds as `$1`: the highest value a fully delivered run sent, or
/// NULL (`None`) on a first run, with `--full`, and for a query that is not incremental.
pub(super) fn incremental_bound(
    store: &dyn StateStore,
    query: &QuerySource,
    changes: Changes,
    key: CheckpointKey<'_>,
) -> Result<Option<String>, StateError> {
    match (&query.incremental, changes) {
        (Some(_), Changes::LeaveOut) => store.watermark(key),
        _ => Ok(None),
    }
}

/// The summary of a run whose query could not be read: nothing was sent.
pub(super) fn query_failed(pipeline: &Pipeline, run_id: &str, error: QueryError) -> RunSummary {
    let stop = match error {
        QueryError::Interrupted => StopReason::Interrupted,
        error => StopReason::SourceFailed(error.to_string()),
    };
    RunSummary {
        stop: Some(stop),
        ..RunSummary::empty(&pipeline.name, run_id)
    }
}

/// Removes a query's snapshot; one left behind is only disk, and the next run replaces it.
pub(super) fn remove_snapshot(path: &Path) {
    if let Err(error) = crate::source::snapshot::remove(path) {
        tracing::warn!(file = %path.display(), %error, "cannot remove a query's snapshot");
    }
}
