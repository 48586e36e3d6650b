//! The snapshots of query sources' rows: where a run keeps them, how a query is read into
//! one (on a thread of its own), and what a run whose query failed reports.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::config::Pipeline;
use crate::config::model::{Compression, FileSource, QuerySource, SourceFormat};
use crate::engine::{RunSummary, StopReason};
use crate::file_stem;
use crate::source::query::QueryError;
use crate::source::snapshot::SnapshotMeta;
use crate::state::{StateError, StateStore};

use super::Changes;

/// Where a pipeline's query snapshot is kept between a run and the run that resumes it:
/// named after what its checkpoint is kept under (the key and the destination), so two
/// pipelines of one name sending to two accounts never read each other's rows.
pub(super) fn snapshot_path(work_dir: &Path, (key, destination): (&str, &str)) -> PathBuf {
    work_dir.join("snapshots").join(format!(
        "{}-{:016x}.snapshot",
        file_stem::of(key),
        file_stem::hash(&[key, destination])
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
    }
}

/// What an incremental query binds as `$1`: the highest value a fully delivered run sent, or
/// NULL (`None`) on a first run, with `--full`, and for a query that is not incremental.
pub(super) fn incremental_bound(
    store: &dyn StateStore,
    query: &QuerySource,
    changes: Changes,
    (key, destination): (&str, &str),
) -> Result<Option<String>, StateError> {
    match (&query.incremental, changes) {
        (Some(_), Changes::LeaveOut) => store.watermark(key, destination),
        _ => Ok(None),
    }
}

/// Runs a query into a snapshot at `path`, on a thread of its own: compressing the rows is
/// work the runtime's threads should not wait on.
pub(super) async fn read_query(
    query: &QuerySource,
    bound: Option<String>,
    path: &Path,
    cancel: &CancellationToken,
) -> Result<SnapshotMeta, QueryError> {
    tracing::info!(database = %query.database.name, "reading the query's rows");
    let (query, path, cancel) = (query.clone(), path.to_path_buf(), cancel.clone());
    let runtime = tokio::runtime::Handle::current();
    let name = query.database.name.clone();
    tokio::task::spawn_blocking(move || {
        runtime.block_on(crate::source::query::snapshot(
            &query, bound, &path, &cancel,
        ))
    })
    .await
    .unwrap_or_else(|error| {
        Err(QueryError::Failed {
            name,
            rows: 0,
            reason: format!("the reading thread ended: {error}"),
        })
    })
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
