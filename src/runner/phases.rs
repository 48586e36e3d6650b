//! The phases of one run: begin (open the store, take the pipeline's lock, write the history
//! entry), prepare the input (a file, a rejects file to replay, or a query's snapshot: read
//! anew or resumed), plan (`plan.rs`), deliver (the engine, checkpointing as it goes), and
//! finish (the delivery record, the watermark, the arrival, the history, the notifications:
//! `phases/finish.rs`).
//! A dry run is prepare and deliver only; a run sent to a throwaway sandbox is that with its
//! history entry.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

mod finish;

use super::checkpointer::{Checkpointer, ErrorNotes};
use super::plan::{Fit, Plan, fit, plan};
use super::snapshots::{
    incremental_bound, query_failed, remove_snapshot, snapshot_path, snapshot_source,
};
use super::{
    Bookkeeping, Changes, Request, Resume, RunError, batches_per_checkpoint, checkpoint_key,
    destination, rejects_path, settings_digest,
};
use crate::clevertap::retry::RetryPolicy;
use crate::config::Pipeline;
use crate::config::model::{
    Compression, FileSource, OnInvalidRecord, QuerySource, Send, Source, SourceFormat, Target,
};
use crate::engine::{
    self, AccountBudgets, ChangeDetection, Delivery, ErrorBudget, Job, Observer, RunOptions,
    RunSummary,
};
use crate::file_stem;
use crate::mapping;
use crate::source::snapshot::SnapshotMeta;
use crate::state::{
    self, Checkpoint, CheckpointKey, Fingerprint, FirstError, LockWait, PipelineLock, RunStart,
    SettingsDigest, StateError, StateStore,
};
use crate::template::RunContext;
use finish::{finish, keep_fingerprints, notify, record_history};

/// What every run starts from: its ID, where it sends, and the engine's job and options.
pub(super) struct Start<'a> {
    pipeline: &'a Pipeline,
    request: &'a Request,
    run_id: String,
    /// The account and host ([`destination`]).
    destination: String,
    /// What checkpoints and deliveries are kept under ([`checkpoint_key`]).
    key: String,
    /// The query whose rows the run reads through a snapshot, if the source is one (and
    /// the run is not a replay).
    query: Option<&'a QuerySource>,
    /// The pipeline file, absolute, so `tapline replay` finds it from any folder.
    pipeline_file: PathBuf,
}

/// What the engine is given: the job (its input filled in when a query's snapshot is read)
/// and the run's options.
pub(super) struct Work {
    job: Job,
    options: RunOptions,
}

impl<'a> Start<'a> {
    pub(super) fn new(pipeline: &'a Pipeline, request: &'a Request) -> (Self, Work) {
        let run_id = super::new_run_id();
        let destination = destination(pipeline);
        // What the engine reads: the pipeline's file, a rejects file to replay, or (filled in
        // when it is read) the snapshot of a query's rows.
        let (input, query) = match (&request.replay, &pipeline.source) {
            (Some(rejects), source) => (
                FileSource {
                    path: rejects.clone(),
                    format: SourceFormat::Rejects,
                    compression: Compression::None,
                    timezone: source.timezone(),
                    projection: None,
                    poll: None,
                },
                None,
            ),
            (None, Source::File(file)) => (file.clone(), None),
            (None, Source::Query(query)) => (snapshot_source(PathBuf::new(), query), Some(query)),
        };
        let job = job(pipeline, &run_id, input);
        let options = RunOptions {
            delivery: request.delivery.clone(),
            retry: RetryPolicy::default(),
            rejects_path: rejects_path(&request.state.rejects_dir, &pipeline.name, &run_id),
            spool_dir: request.state.work_dir.join("spool"),
            already_settled: None,
            account_budget: request
                .account_budgets
                .as_ref()
                .map(|budgets| budgets.for_api(&destination, &job.endpoint, job.most_in_flight())),
            changes: None,
        };
        let start = Start {
            pipeline,
            request,
            key: checkpoint_key(pipeline),
            destination,
            run_id,
            query,
            pipeline_file: std::fs::canonicalize(&pipeline.file)
                .unwrap_or_else(|_| pipeline.file.clone()),
        };
        (start, Work { job, options })
    }

    /// What the run's checkpoint, delivery and watermark are kept under.
    fn checkpoint_key(&self) -> CheckpointKey<'_> {
        CheckpointKey::new(&self.key, &self.destination)
    }

    /// What the pipeline's record fingerprints are kept under: its name, whatever file it
    /// reads.
    fn fingerprints_key(&self) -> CheckpointKey<'_> {
        CheckpointKey::new(&self.pipeline.name, &self.destination)
    }

    /// The run's history entry as it starts.
    fn history_entry(&self) -> RunStart<'_> {
        RunStart {
            run_id: &self.run_id,
            pipeline: &self.pipeline.name,
            pipeline_file: &self.pipeline_file,
            trigger: self.request.trigger,
            scheduled_for: self.request.scheduled_for,
            destination: if self.request.to_sandbox {
                "sandbox"
            } else {
                &self.destination
            },
        }
    }

    /// Change detection for `send: changes`: against what the store knows, unless `changes`
    /// sends everything; `None` for a pipeline that sends everything anyway.
    fn change_detection(
        &self,
        store: &dyn StateStore,
        changes: Changes,
    ) -> Result<Option<ChangeDetection>, StateError> {
        let Send::Changes { event_days } = self.pipeline.send else {
            return Ok(None);
        };
        let known = match changes {
            Changes::LeaveOut => Some(store.known_fingerprints(self.fingerprints_key())?),
            Changes::SendAll => None,
        };
        Ok(Some(ChangeDetection::new(event_days, known)))
    }

    /// Reads the query's rows into a snapshot at `path` (the one step both kinds of run
    /// share), and points the job at it; a query that cannot be read is the run's summary.
    async fn read_snapshot(
        &self,
        query: &QuerySource,
        (bound, path): (Option<String>, &std::path::Path),
        (work, progress): (&mut Work, &mut dyn Observer),
        cancel: &CancellationToken,
    ) -> Result<SnapshotMeta, RunSummary> {
        progress.query_started(&query.database.name);
        let meta = crate::source::query::materialize(query, bound, path, cancel)
            .await
            .map_err(|error| query_failed(self.pipeline, &self.run_id, error))?;
        work.job.source.path = path.to_path_buf();
        Ok(meta)
    }
}

/// A run without bookkeeping: a dry run (which still reads what `send: changes` would
/// leave out and what an incremental query would read, from the store as it is), or a run
/// against a throwaway sandbox, which is only written to the history.
pub(super) async fn run_unrecorded(
    (start, mut work): (Start<'_>, Work),
    progress: &mut dyn Observer,
    cancel: CancellationToken,
) -> Result<RunSummary, RunError> {
    let request = start.request;
    let dry_run = matches!(request.delivery, Delivery::DryRun);
    let store = if (dry_run && request.state.store.may_exist())
        || request.bookkeeping == Bookkeeping::HistoryOnly
    {
        Some(state::open(&request.state.store)?)
    } else {
        None
    };
    if let (Some(store), true) = (&store, dry_run) {
        work.options.changes = start.change_detection(&**store, request.changes)?;
    }
    let in_history = request.bookkeeping == Bookkeeping::HistoryOnly;
    if in_history && let Some(store) = &store {
        store.start_run(&start.history_entry())?;
    }
    progress.run_began(&start.run_id);
    let mut notes = ErrorNotes::new(progress);
    let snapshot = match start.query {
        Some(query) => {
            let path = request.state.work_dir.join("spool").join(format!(
                "{}-{}.snapshot",
                file_stem::of(&start.pipeline.name),
                start.run_id
            ));
            let bound = match store.as_deref().filter(|_| dry_run) {
                Some(store) => {
                    incremental_bound(store, query, request.changes, start.checkpoint_key())?
                }
                None => None,
            };
            if let Err(mut summary) = start
                .read_snapshot(query, (bound, &path), (&mut work, &mut notes), &cancel)
                .await
            {
                if in_history && let Some(store) = &store {
                    record_history(&**store, &mut summary, &[]);
                }
                return Ok(summary);
            }
            Some(path)
        }
        None => None,
    };
    let mut summary = engine::run(work.job, work.options, &mut notes, cancel).await;
    if let Some(path) = snapshot {
        remove_snapshot(&path);
    }
    if in_history && let Some(store) = &store {
        record_history(&**store, &mut summary, &notes.first_errors);
    }
    Ok(summary)
}

/// What a recorded run holds while it runs: the store, the pipeline's lock, and how it
/// learns that its lease was lost.
struct Held {
    store: Box<dyn StateStore>,
    _lock: PipelineLock,
    /// Cancelled when another process took the lease over; the run's own token.
    lease_lost: CancellationToken,
    /// Cancelled by Ctrl-C, SIGTERM or the daemon.
    interrupted: CancellationToken,
}

/// How the deliver phase ended.
struct Delivered {
    summary: RunSummary,
    first_errors: Vec<FirstError>,
    /// Every row settled: the input is delivered in full.
    in_full: bool,
}

/// A run with its bookkeeping, phase by phase.
pub(super) async fn run_recorded(
    (start, mut work): (Start<'_>, Work),
    progress: &mut dyn Observer,
    cancel: CancellationToken,
) -> Result<RunSummary, RunError> {
    let mut held = begin(&start, &mut work, cancel)?;
    progress.run_began(&start.run_id);
    let settings = settings_digest(start.pipeline);
    let checkpoint = match start.request.resume {
        Resume::FromCheckpoint => held.store.checkpoint(start.checkpoint_key())?,
        Resume::Fresh => None,
    };
    let input = input(&start, &*held.store, (&settings, checkpoint.as_ref()))?;
    let cancel = held.lease_lost.clone();
    let snapshot = match prepare_input(&start, input, (&mut work, progress), &cancel).await {
        Ok(snapshot) => snapshot,
        Err(mut summary) => {
            record_history(&*held.store, &mut summary, &[]);
            drop(held);
            notify(start.pipeline, start.request, &mut summary, Vec::new()).await;
            return Ok(summary);
        }
    };
    // A replay sends what a rejects file holds: no checkpoint, nothing to deduplicate.
    let plan = if start.request.replay.is_some() {
        Plan {
            changes: start.request.changes,
            ..Plan::default()
        }
    } else {
        plan(
            &mut *held.store,
            (start.pipeline, &work.job.source.path, checkpoint),
            start.request,
            (start.checkpoint_key(), &settings),
            &start.run_id,
        )?
    };
    let delivered = match &plan.up_to_date {
        Some(delivered_by) => Delivered {
            summary: up_to_date(start.pipeline, &start.run_id, delivered_by),
            first_errors: Vec::new(),
            in_full: true,
        },
        None => deliver(&start, (&mut held, work), (&plan, &settings), progress).await?,
    };
    Ok(finish(start, held, plan, snapshot, delivered).await)
}

/// Opens the store, takes the pipeline's lock (a lease with the shared store), checks an
/// arrived file was not handled already, and writes the run's history entry.
fn begin(start: &Start<'_>, work: &mut Work, cancel: CancellationToken) -> Result<Held, RunError> {
    let (pipeline, request) = (start.pipeline, start.request);
    let store = state::open(&request.state.store)?;
    // With the shared store the lock is a lease: if another process takes it over (this one
    // was paused past it), the run stops.
    let lease_lost = cancel.child_token();
    let lock = store.lock(&pipeline.name, LockWait::ForADeadHolder, lease_lost.clone())?;
    if let Some(arrival) = &request.arrival
        && store.has_arrived(&pipeline.name, arrival)?
    {
        return Err(RunError::ArrivalHandled {
            file: arrival.path.clone(),
        });
    }
    if work.options.account_budget.is_none()
        && let Some(shared) = store.shared_slots()
    {
        // Processes sharing the store share each account's requests in flight.
        work.options.account_budget = Some(AccountBudgets::new(Some(shared)).for_api(
            &start.destination,
            &work.job.endpoint,
            work.job.most_in_flight(),
        ));
    }
    let abandoned = store.abandon_running(&pipeline.name)?;
    if abandoned > 0 {
        tracing::warn!(pipeline = %pipeline.name, abandoned, "earlier runs ended without a word (killed?); marked abandoned");
    }
    prune(&*store, request.history_days);
    store.start_run(&start.history_entry())?;
    Ok(Held {
        store,
        _lock: lock,
        lease_lost,
        interrupted: cancel,
    })
}

/// The snapshot a query run reads (none for a file).
struct Snapshot {
    path: PathBuf,
    meta: SnapshotMeta,
    /// The watermark an incremental query bound as `$1` when it was read by this run.
    since: Option<String>,
}

/// How the input is made ready.
enum Input<'a> {
    /// The pipeline's file, or a rejects file to replay: as it is.
    File,
    /// The snapshot a stopped run read, resumed.
    Resumed(PathBuf, SnapshotMeta),
    /// The query, read anew into a snapshot at `path`, binding `bound` as `$1`.
    Query {
        query: &'a QuerySource,
        path: PathBuf,
        bound: Option<String>,
    },
}

/// Decides how the input is made ready. A run that resumes a stopped one goes on from the
/// snapshot that run read, never from a new query (which could return other rows), and only
/// when the checkpoint applies to this run (the same query, database and settings) and to
/// that very snapshot.
fn input<'a>(
    start: &Start<'a>,
    store: &dyn StateStore,
    (settings, checkpoint): (&SettingsDigest, Option<&Checkpoint>),
) -> Result<Input<'a>, RunError> {
    let Some(query) = start.query else {
        return Ok(Input::File);
    };
    let path = snapshot_path(&start.request.state.work_dir, start.checkpoint_key());
    let resumable = checkpoint.filter(|checkpoint| {
        matches!(
            fit(checkpoint, start.pipeline, settings, start.request.changes),
            Fit::Resume { .. }
        )
    });
    let resumed = SnapshotMeta::read(&path).filter(|_| {
        resumable.is_some_and(|checkpoint| {
            Fingerprint::of(&path)
                .is_ok_and(|snapshot| checkpoint.fingerprint.same_content(&snapshot))
        })
    });
    if let Some(meta) = resumed {
        return Ok(Input::Resumed(path, meta));
    }
    remove_snapshot(&path);
    let bound = incremental_bound(store, query, start.request.changes, start.checkpoint_key())?;
    Ok(Input::Query { query, path, bound })
}

/// Makes the input ready as [`input`] decided; `Err`: the query failed, and this is the
/// run's summary.
async fn prepare_input(
    start: &Start<'_>,
    input: Input<'_>,
    (work, progress): (&mut Work, &mut dyn Observer),
    cancel: &CancellationToken,
) -> Result<Option<Snapshot>, RunSummary> {
    match input {
        Input::File => Ok(None),
        Input::Resumed(path, meta) => {
            work.job.source.path.clone_from(&path);
            Ok(Some(Snapshot {
                path,
                meta,
                since: None,
            }))
        }
        Input::Query { query, path, bound } => {
            let meta = start
                .read_snapshot(query, (bound.clone(), &path), (work, progress), cancel)
                .await?;
            Ok(Some(Snapshot {
                path,
                meta,
                since: bound,
            }))
        }
    }
}

/// Sends the input through the engine, the checkpoint recording what settles; records the
/// delivery when every row settled and the input did not change meanwhile.
async fn deliver(
    start: &Start<'_>,
    (held, work): (&mut Held, Work),
    (plan, settings): (&Plan, &SettingsDigest),
    progress: &mut dyn Observer,
) -> Result<Delivered, RunError> {
    let (pipeline, store) = (start.pipeline, &mut held.store);
    let Work { job, mut options } = work;
    options.already_settled = plan
        .resume
        .as_ref()
        .map(|(_, lines)| Arc::new(lines.clone()));
    // A replay sends what the rejects file holds, as asked.
    if start.request.replay.is_none() && matches!(pipeline.send, Send::Changes { .. }) {
        // What a killed run accepted is in the journal still.
        store.merge_fingerprints(start.fingerprints_key())?;
        options.changes = start.change_detection(&**store, plan.changes)?;
    }
    let mut book = Checkpointer {
        store: &mut **store,
        run_id: &start.run_id,
        key: start.checkpoint_key(),
        pipeline: &pipeline.name,
        recording: plan.fingerprint.is_some(),
        pending: Vec::new(),
        fingerprints: Vec::new(),
        batches_per_write: batches_per_checkpoint(job.requests_in_flight()),
        unwritten_batches: 0,
        notes: ErrorNotes::new(progress),
    };
    let source = job.source.path.clone();
    let events = job.target == Target::Events;
    let mut summary = engine::run(job, options, &mut book, held.lease_lost.clone()).await;
    book.flush_pending(&summary.counts);
    let first_errors = book.notes.first_errors;
    if matches!(pipeline.send, Send::Changes { .. }) {
        keep_fingerprints(&mut **store, start.fingerprints_key(), events);
    }
    summary.resumed_from = plan.resume.as_ref().map(|(run_id, _)| run_id.clone());
    // Every row settled: the input is done, and a later run will not send it again; unless
    // it was written to while it was read, when what was sent is not what the fingerprint
    // says (the next run sees other content and starts over).
    let changed = plan
        .fingerprint
        .as_ref()
        .is_some_and(|fingerprint| !fingerprint.still_matches(&source));
    if changed {
        summary.warnings.push(
            "the source file changed while it was being read, so it is not marked delivered: the next run sends it again from the first row".to_string(),
        );
    }
    let in_full = summary.stop.is_none() && summary.counts.failed == 0 && !changed;
    if let Some(fingerprint) = plan.fingerprint.as_ref().filter(|_| in_full)
        && let Err(error) = store.finish_delivery(
            start.checkpoint_key(),
            &start.run_id,
            (fingerprint, settings),
        )
    {
        summary.warnings.push(format!(
            "the delivery could not be recorded, so a later run may send this file again: {error}"
        ));
    }
    Ok(Delivered {
        summary,
        first_errors,
        in_full,
    })
}

/// The summary of a run that sent nothing because the file was delivered before.
fn up_to_date(pipeline: &Pipeline, run_id: &str, delivered_by: &str) -> RunSummary {
    RunSummary {
        up_to_date: Some(delivered_by.to_string()),
        ..RunSummary::empty(&pipeline.name, run_id)
    }
}

/// Deletes history older than the retention, and its rejects files.
fn prune(store: &dyn StateStore, days: u32) {
    match store.prune(days) {
        Ok(files) => {
            for file in files {
                if let Err(error) = std::fs::remove_file(&file)
                    && error.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(file = %file.display(), %error, "cannot delete an old rejects file");
                }
            }
        }
        Err(error) => tracing::warn!(%error, "cannot prune the run history"),
    }
}

/// The engine's job for a pipeline that reads `source`.
fn job(pipeline: &Pipeline, run_id: &str, source: FileSource) -> Job {
    let error_budget = match pipeline.on_invalid_record {
        OnInvalidRecord::Skip => ErrorBudget {
            max_records: pipeline.max_invalid_records,
            max_ratio: pipeline.max_invalid_ratio,
        },
        OnInvalidRecord::Stop => ErrorBudget::default(),
    };
    Job {
        pipeline: pipeline.name.clone(),
        connection: pipeline.connection.name.clone(),
        source,
        target: pipeline.target,
        limits: pipeline.connection.limits,
        on_invalid_record: pipeline.on_invalid_record,
        thread_count: pipeline.thread_count,
        endpoint: mapping::endpoint(pipeline.target),
        list_affected: pipeline.target.is_destructive(),
        output: pipeline.output.clone().map(Arc::new),
        context: RunContext {
            pipeline: pipeline.name.clone(),
            run_id: run_id.to_string(),
            started: chrono::Utc::now(),
            segment_id: pipeline.metadata.segment_id.clone(),
            segment_name: pipeline.metadata.segment_name.clone(),
            audience_id: pipeline.metadata.audience_id.clone(),
            timezone: pipeline.source.timezone(),
        },
        custom_list: pipeline.custom_list.clone(),
        error_budget,
    }
}
