//! The last phase of a recorded run: the plan's warnings, the query's watermark and
//! snapshot, a lost lease, the arrival, the record fingerprints, the history entry, then the
//! notifications.

use super::super::Request;
use super::super::snapshots::remove_snapshot;
use super::{Delivered, Held, Snapshot, Start};
use crate::config::Pipeline;
use crate::config::model::{QuerySource, Source};
use crate::engine::{RunSummary, StopReason};
use crate::notifications::{self, RunNotice};
use crate::outcome::RunStatus;
use crate::runner::plan::Plan;
use crate::state::{CheckpointKey, FirstError, RunFinish, StateStore};

/// Ends a run: the plan's warnings, the query's watermark and snapshot, a lost lease, the
/// arrival, the history entry, then the notifications (after the store is let go).
pub(super) async fn finish(
    start: Start<'_>,
    held: Held,
    plan: Plan,
    snapshot: Option<Snapshot>,
    delivered: Delivered,
) -> RunSummary {
    let Delivered {
        mut summary,
        first_errors,
        in_full,
    } = delivered;
    let (pipeline, store) = (start.pipeline, &held.store);
    summary.warnings.splice(0..0, plan.warnings);
    // An incremental query that found nothing new says since when, not that the source is
    // empty.
    if let Some(since) = snapshot
        .as_ref()
        .and_then(|snapshot| snapshot.since.as_ref())
        && let Some(empty) = summary
            .warnings
            .iter_mut()
            .find(|warning| *warning == crate::engine::NO_RECORDS)
    {
        *empty = format!(
            "no rows since {since}, the highest value the last full delivery sent: nothing new to send"
        );
    }
    // A query delivered in full: its snapshot goes, and an incremental one's next run reads
    // what is newer than the highest value sent. Otherwise the snapshot stays for the run
    // that resumes this one.
    if let (Some(Snapshot { path, meta, .. }), true) = (&snapshot, in_full) {
        if let (
            Some(highest),
            Source::Query(QuerySource {
                incremental: Some(_),
                ..
            }),
        ) = (&meta.highest, &pipeline.source)
            && let Err(error) =
                store.set_watermark(start.checkpoint_key(), (highest, &start.run_id))
        {
            summary.warnings.push(format!(
                "the incremental watermark could not be recorded, so the next run reads these rows again: {error}"
            ));
        }
        remove_snapshot(path);
    }
    let lost = held.lease_lost.is_cancelled() && !held.interrupted.is_cancelled();
    if lost {
        summary.warnings.push(
            "this run's lease was taken over by another process (this one had stopped renewing it), so it stopped; that process resumes from the checkpoint".to_string(),
        );
    }
    // An arrived file is handled once its run ended for good: delivered, or failed for a
    // reason sending it again would meet too. An interrupted run leaves it to the next.
    if let Some(arrival) = &start.request.arrival
        && summary.status() != RunStatus::Interrupted
        && !lost
        && let Err(error) = store.record_arrival(&pipeline.name, arrival)
    {
        summary.warnings.push(format!(
            "the arrival of this file could not be recorded, so it may be sent again: {error}"
        ));
    }
    record_history(&**store, &mut summary, &first_errors);
    drop(held);
    notify(pipeline, start.request, &mut summary, first_errors).await;
    summary
}

/// Moves what a `send: changes` run accepted into the fingerprints later runs read, and
/// forgets events past `changes.event_days`. A failure costs nothing but time: the next run
/// merges what is left.
pub(super) fn keep_fingerprints(store: &mut dyn StateStore, key: CheckpointKey<'_>, events: bool) {
    if let Err(error) = store.merge_fingerprints(key) {
        tracing::warn!(%error, "cannot merge this run's record fingerprints; the next run will");
    }
    if events && let Err(error) = store.prune_fingerprints(key, chrono::Utc::now().timestamp()) {
        tracing::warn!(%error, "cannot forget the fingerprints of old events");
    }
}

/// Writes the history entry.
pub(super) fn record_history(
    store: &dyn StateStore,
    summary: &mut RunSummary,
    first_errors: &[FirstError],
) {
    let status = summary.status();
    let finished = store.finish_run(
        &summary.run_id,
        &RunFinish {
            status,
            records: summary.counts,
            requests: summary.requests,
            retries: summary.retries,
            resumed_from: summary.resumed_from.clone(),
            rows_resumed: summary.rows_resumed,
            rejects_file: summary.rejects_file.clone(),
            stop_reason: summary.stop.as_ref().map(ToString::to_string),
            stop_kind: summary.stop.as_ref().map(StopReason::kind),
            first_errors: first_errors.to_vec(),
            warnings: summary.warnings.clone(),
            concurrency: summary.concurrency,
        },
    );
    if let Err(error) = finished {
        summary.warnings.push(format!(
            "the run could not be recorded in the history: {error}"
        ));
    }
}

/// Sends the pipeline's notifications about the run; what could not be delivered becomes a
/// warning of the run.
pub(super) async fn notify(
    pipeline: &Pipeline,
    request: &Request,
    summary: &mut RunSummary,
    first_errors: Vec<FirstError>,
) {
    let status = summary.status();
    if !pipeline.notifications.is_empty() {
        let notice = RunNotice {
            pipeline: summary.pipeline.clone(),
            run_id: summary.run_id.clone(),
            status,
            trigger: request.trigger,
            records: summary.counts,
            duration_ms: summary.duration.as_millis() as u64,
            stop_reason: summary.stop.as_ref().map(ToString::to_string),
            stop_kind: summary.stop.as_ref().map(StopReason::kind),
            first_errors,
            rejects_file: summary
                .rejects_file
                .as_ref()
                .map(|path| path.display().to_string()),
        };
        let undelivered = notifications::send(&pipeline.notifications, &notice).await;
        summary.warnings.extend(undelivered);
    }
}
