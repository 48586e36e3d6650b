//! One run of one pipeline with its bookkeeping: the pipeline lock, the checkpoint that lets
//! a killed run resume, the guard against sending a delivered file twice, the run's history
//! entry, and its notifications.
//!
//! `tapline run`, `tapline replay` and the daemon all start runs here; the upload itself is
//! the engine's. Without a state store (dry runs, `--sandbox`) a run is only the upload.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::changes::RecordFingerprint;
use crate::clevertap::retry::RetryPolicy;
use crate::config::Pipeline;
use crate::config::model::{
    Compression, FileSource, OnInvalidRecord, QuerySource, Rerun, Send, Source, SourceFormat,
    Target, TriggerKind, redacted_url,
};
use crate::engine::{
    self, AccountBudgets, BatchReport, ChangeDetection, Delivery, ErrorBudget, Job, Observer,
    RunOptions, RunSummary,
};
use crate::file_stem;
use crate::mapping;
use crate::notifications::{self, RunNotice};
use crate::outcome::{Counts, Outcome, RunStatus, Settled, SettledLines};
use crate::source::arrival::Arrival;
use crate::source::snapshot::SnapshotMeta;
use crate::state::{
    self, Accepted, Checkpoint, Fingerprint, FirstError, LockWait, RunFinish, RunStart,
    SettingsDigest, StateError, StateStore,
};
use crate::template::RunContext;
use snapshots::{
    incremental_bound, query_failed, read_query, remove_snapshot, snapshot_path, snapshot_source,
};

mod snapshots;

/// Problems kept in the history and the notifications, per run.
const FIRST_ERRORS: usize = 5;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `tapline run`.
    Manual,
    /// `tapline replay`.
    Replay,
    /// The daemon's schedule.
    Schedule,
    /// A file arrived (`trigger: file_arrival`).
    FileArrival,
}

impl Trigger {
    /// The name stored in the history.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Replay => "replay",
            Trigger::Schedule => "schedule",
            Trigger::FileArrival => "file_arrival",
        }
    }
}

/// How to run a pipeline this time.
#[derive(Clone)]
pub struct Request {
    /// What started it.
    pub trigger: Trigger,
    /// Send, or only build.
    pub delivery: Delivery,
    /// Whether it goes on from the checkpoint of an unfinished run.
    pub resume: Resume,
    /// Whether a file delivered in full before is sent again.
    pub delivered_before: DeliveredBefore,
    /// Send the entries of this rejects file instead of the pipeline's source.
    pub replay: Option<PathBuf>,
    /// Where run history, checkpoints and rejects files live.
    pub state: StatePlaces,
    /// Whether the run keeps its lock, checkpoint, history and notifications.
    pub bookkeeping: Bookkeeping,
    /// Runs older than this many days are pruned from the history, with their rejects files.
    pub history_days: u32,
    /// Budgets of requests in flight per account, shared by the runs of a daemon.
    pub account_budgets: Option<AccountBudgets>,
    /// With `send: changes`: leave out what CleverTap has, or send it all (`--full`).
    pub changes: Changes,
    /// The fire of the schedule this run is for (the daemon's schedule runs).
    pub scheduled_for: Option<chrono::DateTime<chrono::Utc>>,
    /// The arrived file this run sends (`trigger: file_arrival`): checked and recorded as
    /// handled under the pipeline's lock, so that of several daemons only one sends it.
    pub arrival: Option<Arrival>,
}

/// Where a run's state is kept: the state store, and the local folders of its files.
#[derive(Debug, Clone)]
pub struct StatePlaces {
    /// The state store.
    pub store: state::Location,
    /// Local files: query snapshots between a run and the run that resumes it, the spool.
    pub work_dir: PathBuf,
    /// Rejects files.
    pub rejects_dir: PathBuf,
}

impl StatePlaces {
    /// The embedded store in `dir`, with snapshots, the spool and `rejects/` beside it.
    pub fn folder(dir: PathBuf) -> Self {
        StatePlaces {
            store: state::Location::Folder(dir.clone()),
            rejects_dir: dir.join("rejects"),
            work_dir: dir,
        }
    }
}

/// What a run of a `send: changes` pipeline does with records CleverTap has already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Changes {
    /// Leaves them out: only new and changed records are sent.
    #[default]
    LeaveOut,
    /// Sends every record and records each accepted one anew (`tapline run --full`, after
    /// data was changed in CleverTap's dashboard).
    SendAll,
}

/// What a run does about the checkpoint of an unfinished run of its pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Go on from it: rows it settled are not sent again.
    FromCheckpoint,
    /// Ignore it and start from the first row (`--fresh`).
    Fresh,
}

/// What a run does with a file that an earlier run delivered in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveredBefore {
    /// Send nothing (with `rerun: changed`, the default): the run is up to date.
    Skip,
    /// Send it again (`--force`, `tapline replay`).
    SendAgain,
}

/// Whether a run keeps its bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bookkeeping {
    /// The pipeline lock, the checkpoint, the delivered-file guard, the history entry and
    /// the notifications.
    Kept,
    /// None of them: dry runs, and runs against a throwaway sandbox.
    Off,
}

impl Request {
    /// `tapline run`: resumes, skips a file delivered before, keeps its bookkeeping.
    pub fn manual(delivery: Delivery, state: StatePlaces, history_days: u32) -> Self {
        Request {
            trigger: Trigger::Manual,
            delivery,
            resume: Resume::FromCheckpoint,
            delivered_before: DeliveredBefore::Skip,
            replay: None,
            state,
            bookkeeping: Bookkeeping::Kept,
            history_days,
            account_budgets: None,
            changes: Changes::LeaveOut,
            scheduled_for: None,
            arrival: None,
        }
    }

    /// `tapline replay`: sends the entries of a rejects file through the pipeline.
    pub fn replay(
        rejects_file: PathBuf,
        delivery: Delivery,
        state: StatePlaces,
        history_days: u32,
    ) -> Self {
        Request {
            trigger: Trigger::Replay,
            delivered_before: DeliveredBefore::SendAgain,
            replay: Some(rejects_file),
            ..Request::manual(delivery, state, history_days)
        }
    }

    /// A run the daemon starts (a schedule's fire or an arriving file), within the
    /// account budgets its runs share.
    pub fn scheduled(
        trigger: Trigger,
        delivery: Delivery,
        state: StatePlaces,
        history_days: u32,
        account_budgets: AccountBudgets,
    ) -> Self {
        Request {
            trigger,
            account_budgets: Some(account_budgets),
            ..Request::manual(delivery, state, history_days)
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state store is unusable, or the pipeline is already running.
    #[error(transparent)]
    State(#[from] StateError),
    /// The arrived file was handled already, by another process sharing the state store.
    #[error("`{}` was handled already by another process", file.display())]
    ArrivalHandled {
        /// The file.
        file: PathBuf,
    },
}

/// The state directory: `--state-dir`, else systemd's `$STATE_DIRECTORY`, else `.tapline/`
/// in the pipeline's folder.
pub fn state_dir(given: Option<&Path>, pipeline_folder: &Path) -> PathBuf {
    if let Some(dir) = given {
        return dir.to_path_buf();
    }
    // systemd may list several directories, separated by colons; the first is ours.
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| {
            dirs.to_str()
                .and_then(|d| d.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|dir| !dir.as_os_str().is_empty())
    {
        return dir;
    }
    pipeline_folder.join(".tapline")
}

/// A run ID: UTC start time and a random suffix, e.g. `20261129T043735Z-5042`.
pub fn new_run_id() -> String {
    let suffix: u16 = rand::random();
    format!(
        "{}-{suffix:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    )
}

/// `<rejects dir>/<pipeline>-<run id>.jsonl`, the pipeline's name shortened (with a hash of
/// it) where it would make the name too long for a file system.
pub fn rejects_path(rejects_dir: &Path, pipeline: &str, run_id: &str) -> PathBuf {
    rejects_dir.join(format!("{}-{run_id}.jsonl", file_stem::of(pipeline)))
}

/// What checkpoints and deliveries of a pipeline are kept under (with the destination): its
/// name, and for a `file_arrival` pipeline also the file's name (each arriving file has its
/// own). Record fingerprints are the pipeline's, whatever file carried the record.
fn checkpoint_key(pipeline: &Pipeline) -> String {
    match pipeline.trigger {
        TriggerKind::Schedule => pipeline.name.clone(),
        TriggerKind::FileArrival => {
            let file = pipeline
                .source
                .path()
                .and_then(Path::file_name)
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("{}/{file}", pipeline.name)
        }
    }
}

/// Where a pipeline sends: its account and host (no secret, even one written into the
/// endpoint URL), the key of checkpoints, deliveries and account budgets.
pub fn destination(pipeline: &Pipeline) -> String {
    format!(
        "{}@{}",
        pipeline.connection.account_id,
        redacted_url(&pipeline.connection.base_url)
    )
}

/// What the pipeline does with its source, as checkpoints and deliveries remember it: the
/// same file sent as something else is not settled by an earlier run. It covers every
/// setting that changes the requests (the destination is in the key already); a change of
/// this description in a later tapline makes checkpoints start over, never resume wrongly.
///
/// A query's text, its incremental column and its database (the URL without the password)
/// are part of it: a snapshot of another query's rows is never resumed.
fn settings_digest(pipeline: &Pipeline) -> SettingsDigest {
    let (format, compression, query) = match &pipeline.source {
        Source::File(file) => (file.format, file.compression, String::new()),
        Source::Query(query) => (
            SourceFormat::Snapshot,
            Compression::Zstd,
            format!(
                "; query={:?}; incremental={:?}; database={:?}",
                query.query,
                query.incremental,
                query.database.shown()
            ),
        ),
    };
    SettingsDigest::of(&format!(
        "target={:?}; custom_list={:?}; output={:?}; format={:?}; gzip={}; metadata={:?}{}{query}",
        pipeline.target,
        pipeline.custom_list,
        pipeline.output,
        format,
        compression == Compression::Gzip,
        pipeline.metadata,
        // Written only for zstd, so checkpoints of plain and gzip files made before zstd
        // was read still apply.
        if compression == Compression::Zstd {
            "; zstd"
        } else {
            ""
        },
    ))
}

/// Runs a pipeline once, with its bookkeeping, and reports what happened.
pub async fn run(
    pipeline: &Pipeline,
    request: &Request,
    progress: &mut dyn Observer,
    cancel: CancellationToken,
) -> Result<RunSummary, RunError> {
    let run_id = new_run_id();
    let destination = destination(pipeline);
    let key = checkpoint_key(pipeline);
    // What the engine reads: the pipeline's file, a rejects file to replay, or (filled in
    // below) the snapshot of a query's rows.
    let (input, query) = match (&request.replay, &pipeline.source) {
        (Some(rejects), source) => (
            FileSource {
                path: rejects.clone(),
                format: SourceFormat::Rejects,
                compression: Compression::None,
                timezone: source.timezone(),
                projection: None,
            },
            None,
        ),
        (None, Source::File(file)) => (file.clone(), None),
        (None, Source::Query(query)) => (snapshot_source(PathBuf::new(), query), Some(query)),
    };
    let mut job = job(pipeline, &run_id, input);
    let mut options = RunOptions {
        delivery: request.delivery.clone(),
        retry: RetryPolicy::default(),
        rejects_path: rejects_path(&request.state.rejects_dir, &pipeline.name, &run_id),
        spool_dir: request.state.work_dir.join("spool"),
        already_settled: None,
        account_budget: request
            .account_budgets
            .as_ref()
            .map(|budgets| budgets.for_api(&destination, &job.endpoint)),
        changes: None,
    };
    if request.bookkeeping == Bookkeeping::Off {
        // A dry run still says what `send: changes` would leave out (and reads what an
        // incremental query would), from the store as it is.
        let store =
            if matches!(request.delivery, Delivery::DryRun) && request.state.store.may_exist() {
                Some(state::open(&request.state.store)?)
            } else {
                None
            };
        if let (Some(store), Send::Changes { event_days }) = (&store, pipeline.send) {
            let known = match request.changes {
                Changes::LeaveOut => Some(store.known_fingerprints(&pipeline.name, &destination)?),
                Changes::SendAll => None,
            };
            options.changes = Some(ChangeDetection::new(event_days, known));
        }
        let Some(query) = query else {
            return Ok(engine::run(job, options, progress, cancel).await);
        };
        let snapshot = request.state.work_dir.join("spool").join(format!(
            "{}-{run_id}.snapshot",
            file_stem::of(&pipeline.name)
        ));
        let bound = match &store {
            Some(store) => {
                incremental_bound(&**store, query, request.changes, (&key, &destination))?
            }
            None => None,
        };
        progress.query_started(&query.database.name);
        if let Err(error) = read_query(query, bound, &snapshot, &cancel).await {
            return Ok(query_failed(pipeline, &run_id, error));
        }
        job.source.path.clone_from(&snapshot);
        let summary = engine::run(job, options, progress, cancel).await;
        remove_snapshot(&snapshot);
        return Ok(summary);
    }

    let mut store = state::open(&request.state.store)?;
    // With the shared store the lock is a lease: if another process takes it over (this one
    // was paused past it), the run stops.
    let lease_lost = cancel.child_token();
    let _lock = store.lock(&pipeline.name, LockWait::ForADeadHolder, lease_lost.clone())?;
    let (cancel, interrupted) = (lease_lost.clone(), cancel);
    if let Some(arrival) = &request.arrival
        && store.has_arrived(&pipeline.name, arrival)?
    {
        return Err(RunError::ArrivalHandled {
            file: arrival.path.clone(),
        });
    }
    if options.account_budget.is_none()
        && let Some(shared) = store.shared_slots()
    {
        // Processes sharing the store share each account's requests in flight.
        options.account_budget =
            Some(AccountBudgets::new(Some(shared)).for_api(&destination, &job.endpoint));
    }
    let abandoned = store.abandon_running(&pipeline.name)?;
    if abandoned > 0 {
        tracing::warn!(pipeline = %pipeline.name, abandoned, "earlier runs ended without a word (killed?); marked abandoned");
    }
    prune(&*store, request.history_days);
    // Absolute, so `tapline replay` finds the pipeline from any folder.
    let pipeline_file =
        std::fs::canonicalize(&pipeline.file).unwrap_or_else(|_| pipeline.file.clone());
    store.start_run(&RunStart {
        run_id: &run_id,
        pipeline: &pipeline.name,
        pipeline_file: &pipeline_file,
        trigger: request.trigger.as_str(),
        scheduled_for: request.scheduled_for,
    })?;

    let settings = settings_digest(pipeline);
    let checkpoint = match request.resume {
        Resume::FromCheckpoint => store.checkpoint(&key, &destination)?,
        Resume::Fresh => None,
    };
    // A query's rows are read into a snapshot first; a run that resumes a stopped one goes
    // on from the snapshot that run read, never from a new query (which could return other
    // rows), and only when the checkpoint applies to this run (the same query, database
    // and settings) and to that very snapshot.
    let snapshot = match query {
        Some(query) => {
            let path = snapshot_path(&request.state.work_dir, (&key, &destination));
            let resumable = checkpoint.as_ref().filter(|checkpoint| {
                matches!(
                    fit(checkpoint, pipeline, &settings, request.changes),
                    Fit::Resume { .. }
                )
            });
            let meta = match SnapshotMeta::read(&path).filter(|_| {
                resumable.is_some_and(|checkpoint| {
                    Fingerprint::of(&path)
                        .is_ok_and(|snapshot| checkpoint.fingerprint.same_content(&snapshot))
                })
            }) {
                Some(meta) => meta,
                None => {
                    remove_snapshot(&path);
                    let bound =
                        incremental_bound(&*store, query, request.changes, (&key, &destination))?;
                    progress.query_started(&query.database.name);
                    match read_query(query, bound, &path, &cancel).await {
                        Ok(meta) => meta,
                        Err(error) => {
                            let mut summary = query_failed(pipeline, &run_id, error);
                            record_history(&*store, &mut summary, &[]);
                            drop(store);
                            notify(pipeline, request, &mut summary, Vec::new()).await;
                            return Ok(summary);
                        }
                    }
                }
            };
            job.source.path.clone_from(&path);
            Some((path, meta))
        }
        None => None,
    };

    // A replay sends what a rejects file holds: no checkpoint, nothing to deduplicate.
    let plan = if request.replay.is_some() {
        Plan {
            changes: request.changes,
            ..Plan::default()
        }
    } else {
        plan(
            &mut *store,
            (pipeline, &job.source.path, checkpoint),
            request,
            (&destination, &settings),
            &run_id,
        )?
    };
    let (mut summary, first_errors, delivered) = match &plan.up_to_date {
        Some(delivered_by) => (
            up_to_date(pipeline, &run_id, delivered_by),
            Vec::new(),
            true,
        ),
        None => {
            options.already_settled = plan
                .resume
                .as_ref()
                .map(|(_, lines)| Arc::new(lines.clone()));
            // A replay sends what the rejects file holds, as asked.
            if let Send::Changes { event_days } = pipeline.send
                && request.replay.is_none()
            {
                // What a killed run accepted is in the journal still.
                store.merge_fingerprints(&pipeline.name, &destination)?;
                let known = match plan.changes {
                    Changes::LeaveOut => {
                        Some(store.known_fingerprints(&pipeline.name, &destination)?)
                    }
                    Changes::SendAll => None,
                };
                options.changes = Some(ChangeDetection::new(event_days, known));
            }
            let mut book = Checkpointer {
                store: &mut *store,
                run_id: &run_id,
                key: &key,
                pipeline: &pipeline.name,
                destination: &destination,
                recording: plan.fingerprint.is_some(),
                pending: Vec::new(),
                fingerprints: Vec::new(),
                batches_per_write: batches_per_checkpoint(job.requests_in_flight()),
                unwritten_batches: 0,
                first_errors: Vec::new(),
                progress,
            };
            let job_source = job.source.path.clone();
            let events = job.target == Target::Events;
            let mut summary = engine::run(job, options, &mut book, cancel).await;
            book.flush_pending(&summary.counts);
            let first_errors = book.first_errors;
            if matches!(pipeline.send, Send::Changes { .. }) {
                keep_fingerprints(&mut *store, (&pipeline.name, &destination), events);
            }
            summary.resumed_from = plan.resume.map(|(run_id, _)| run_id);
            // Every row settled: the file is done, and a later run will not send it again;
            // unless it was written to while it was read, when what was sent is not what
            // the fingerprint says (the next run sees other content and starts over).
            let changed = plan
                .fingerprint
                .as_ref()
                .is_some_and(|fingerprint| !fingerprint.still_matches(&job_source));
            if changed {
                summary.warnings.push(
                    "the source file changed while it was being read, so it is not marked delivered: the next run sends it again from the first row".to_string(),
                );
            }
            let delivered = summary.stop.is_none() && summary.counts.failed == 0 && !changed;
            if let Some(fingerprint) = plan.fingerprint.as_ref().filter(|_| delivered)
                && let Err(error) =
                    store.finish_delivery(&key, &destination, &run_id, (fingerprint, &settings))
            {
                summary.warnings.push(format!(
                    "the delivery could not be recorded, so a later run may send this file again: {error}"
                ));
            }
            (summary, first_errors, delivered)
        }
    };
    summary.warnings.splice(0..0, plan.warnings);
    // A query delivered in full: its snapshot goes, and an incremental one's next run reads
    // what is newer than the highest value sent. Otherwise the snapshot stays for the run
    // that resumes this one.
    if let (Some((path, meta)), true) = (&snapshot, delivered) {
        if let (
            Some(highest),
            Source::Query(QuerySource {
                incremental: Some(_),
                ..
            }),
        ) = (&meta.highest, &pipeline.source)
            && let Err(error) = store.set_watermark(&key, &destination, (highest, &run_id))
        {
            summary.warnings.push(format!(
                "the incremental watermark could not be recorded, so the next run reads these rows again: {error}"
            ));
        }
        remove_snapshot(path);
    }
    let lost = lease_lost.is_cancelled() && !interrupted.is_cancelled();
    if lost {
        summary.warnings.push(
            "this run's lease was taken over by another process (this one had stopped renewing it), so it stopped; that process resumes from the checkpoint".to_string(),
        );
    }
    // An arrived file is handled once its run ended for good: delivered, or failed for a
    // reason sending it again would meet too. An interrupted run leaves it to the next.
    if let Some(arrival) = &request.arrival
        && summary.status() != RunStatus::Interrupted
        && !lost
        && let Err(error) = store.record_arrival(&pipeline.name, arrival)
    {
        summary.warnings.push(format!(
            "the arrival of this file could not be recorded, so it may be sent again: {error}"
        ));
    }
    record_history(&*store, &mut summary, &first_errors);
    drop(store);
    notify(pipeline, request, &mut summary, first_errors).await;
    Ok(summary)
}

/// Moves what a `send: changes` run accepted into the fingerprints later runs read, and
/// forgets events past `changes.event_days`. A failure costs nothing but time: the next run
/// merges what is left.
fn keep_fingerprints(store: &mut dyn StateStore, (key, destination): (&str, &str), events: bool) {
    if let Err(error) = store.merge_fingerprints(key, destination) {
        tracing::warn!(%error, "cannot merge this run's record fingerprints; the next run will");
    }
    if events
        && let Err(error) =
            store.prune_fingerprints(key, destination, chrono::Utc::now().timestamp())
    {
        tracing::warn!(%error, "cannot forget the fingerprints of old events");
    }
}

/// What the state says this run should do.
#[derive(Default)]
struct Plan {
    /// The source's fingerprint, when it could be read (no checkpoint without it).
    fingerprint: Option<Fingerprint>,
    /// The run whose checkpoint this one goes on from, and its settled lines.
    resume: Option<(String, SettledLines)>,
    /// The run that already delivered this file: nothing to send.
    up_to_date: Option<String>,
    /// What the run does with records CleverTap has: as asked, or as the run it resumes did.
    changes: Changes,
    /// Why the checkpoint was dropped, and such.
    warnings: Vec<String>,
}

/// How the checkpoint of an unfinished run applies to this one.
enum Fit {
    /// Go on from it, leaving out or sending all as the run that left it did.
    Resume {
        /// That run's way.
        changes: Changes,
    },
    /// It does not apply: why, in a sentence that goes on "so this run starts from the
    /// first row".
    StartOver(String),
}

/// What a checkpoint records of the settings: the settings' digest, and for a `send:
/// changes` run that sends every record (`--full`) that it does, so that the run that
/// resumes it does too.
fn checkpoint_settings(
    pipeline: &Pipeline,
    settings: &SettingsDigest,
    changes: Changes,
) -> SettingsDigest {
    match (pipeline.send, changes) {
        (Send::Changes { .. }, Changes::SendAll) => {
            SettingsDigest::of(&format!("{}; send every record", settings.0))
        }
        _ => settings.clone(),
    }
}

/// Whether the checkpoint `checkpoint` applies to a run with these settings, asked to do
/// `changes` with records CleverTap has.
fn fit(
    checkpoint: &Checkpoint,
    pipeline: &Pipeline,
    settings: &SettingsDigest,
    changes: Changes,
) -> Fit {
    let recorded = &checkpoint.settings;
    let run = &checkpoint.run_id;
    if *recorded == checkpoint_settings(pipeline, settings, changes) {
        return Fit::Resume { changes };
    }
    let all = checkpoint_settings(pipeline, settings, Changes::SendAll);
    match changes {
        Changes::LeaveOut if *recorded == all => Fit::Resume {
            changes: Changes::SendAll,
        },
        Changes::SendAll if recorded == settings => Fit::StartOver(format!(
            "run {run} stopped sending only what changed, and `--full` sends every record"
        )),
        _ if recorded.is_unknown() => Fit::StartOver(format!(
            "run {run} stopped by an older tapline that did not record the pipeline's settings, so its checkpoint does not apply"
        )),
        _ => Fit::StartOver(format!(
            "run {run} stopped under other settings (target, operation, output mapping, custom list, source format, or the query and its database), so its checkpoint does not apply"
        )),
    }
}

/// Decides between resuming `checkpoint`, starting fresh, and sending nothing; takes the
/// checkpoint.
fn plan(
    store: &mut dyn StateStore,
    (pipeline, source, checkpoint): (&Pipeline, &Path, Option<Checkpoint>),
    request: &Request,
    (destination, settings): (&str, &SettingsDigest),
    run_id: &str,
) -> Result<Plan, StateError> {
    let mut plan = Plan {
        changes: request.changes,
        ..Plan::default()
    };
    // An unreadable source is the engine's to report; without a fingerprint nothing is kept.
    let Ok(fingerprint) = Fingerprint::of(source) else {
        return Ok(plan);
    };
    let key = checkpoint_key(pipeline);
    // The settings first: an edited query also reads other rows, and the edit is the cause.
    let resumable = match checkpoint {
        Some(checkpoint) => match fit(&checkpoint, pipeline, settings, request.changes) {
            Fit::Resume { .. } if !checkpoint.fingerprint.same_content(&fingerprint) => {
                plan.warnings.push(format!(
                    "the source changed since run {} stopped ({}), so this run starts from the first row",
                    checkpoint.run_id,
                    fingerprint.difference(&checkpoint.fingerprint)
                ));
                None
            }
            Fit::Resume { changes } => {
                if changes != request.changes {
                    plan.warnings.push(format!(
                        "run {} was started with `--full`, so this run goes on from its checkpoint sending every record, as that run did",
                        checkpoint.run_id
                    ));
                }
                plan.changes = changes;
                Some(checkpoint)
            }
            Fit::StartOver(why) => {
                plan.warnings
                    .push(format!("{why}, so this run starts from the first row"));
                None
            }
        },
        None => None,
    };
    if resumable.is_none()
        && request.delivered_before == DeliveredBefore::Skip
        && pipeline.rerun == Rerun::Changed
        && let Some(delivered) = store.delivered(&key, destination, (&fingerprint, settings))?
    {
        plan.up_to_date = Some(delivered.run_id);
        return Ok(plan);
    }
    let settled = match resumable {
        Some(checkpoint) => {
            let settled = checkpoint.settled;
            plan.resume = Some((checkpoint.run_id, settled.clone()));
            settled
        }
        None => SettledLines::default(),
    };
    store.begin_checkpoint(
        &key,
        destination,
        run_id,
        (
            &fingerprint,
            &checkpoint_settings(pipeline, settings, plan.changes),
        ),
        &settled,
    )?;
    plan.fingerprint = Some(fingerprint);
    Ok(plan)
}

/// The summary of a run that sent nothing because the file was delivered before.
fn up_to_date(pipeline: &Pipeline, run_id: &str, delivered_by: &str) -> RunSummary {
    RunSummary {
        up_to_date: Some(delivered_by.to_string()),
        ..RunSummary::empty(&pipeline.name, run_id)
    }
}

/// Writes the history entry.
fn record_history(store: &dyn StateStore, summary: &mut RunSummary, first_errors: &[FirstError]) {
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
            first_errors: first_errors.to_vec(),
            warnings: summary.warnings.clone(),
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
async fn notify(
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
            trigger: request.trigger.as_str().to_string(),
            records: summary.counts,
            duration_ms: summary.duration.as_millis() as u64,
            stop_reason: summary.stop.as_ref().map(ToString::to_string),
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

/// How many settled batches one checkpoint write covers: half the requests in flight,
/// rounded up. A killed run sends again at most the batches in flight and those settled
/// since the last write, `in_flight + batches_per_checkpoint(in_flight) - 1` in all (15
/// batches at 10 in flight, the 1,000-record batches of a profile upload). Writing after
/// every batch cost a tenth of an upload's CPU time at 10 in flight.
pub fn batches_per_checkpoint(in_flight: usize) -> usize {
    in_flight.div_ceil(2).max(1)
}

/// Records settled lines in the checkpoint as batches settle, and keeps the first problems;
/// passes everything on to the progress display.
struct Checkpointer<'a> {
    store: &'a mut dyn StateStore,
    run_id: &'a str,
    /// What the checkpoint is kept under ([`checkpoint_key`]).
    key: &'a str,
    /// The pipeline's name, which its record fingerprints are kept under.
    pipeline: &'a str,
    destination: &'a str,
    /// Off when the source has no fingerprint.
    recording: bool,
    /// Settled lines not yet written: skipped rows, and batches until there are
    /// `batches_per_write` of them; written together, as one transaction.
    pending: Vec<(u64, u64)>,
    /// Fingerprints of accepted records in `pending`'s batches (`send: changes`), written
    /// in the same transaction.
    fingerprints: Vec<RecordFingerprint>,
    /// How many settled batches one write covers ([`batches_per_checkpoint`]).
    batches_per_write: usize,
    /// Settled batches in `pending`.
    unwritten_batches: usize,
    first_errors: Vec<FirstError>,
    progress: &'a mut dyn Observer,
}

impl Checkpointer<'_> {
    fn note(&mut self, settled: &Settled) {
        if self.first_errors.len() < FIRST_ERRORS {
            self.first_errors.push(FirstError {
                line: settled.line,
                code: settled.code,
                reason: settled.reason.clone(),
            });
        }
    }

    /// Writes the settled lines waiting to be written, with the run's counts.
    fn write_pending(&mut self, counts: &Counts) -> Result<(), StateError> {
        if self.recording && !self.pending.is_empty() {
            // Merged: a run that left most rows unchanged writes a few ranges, not a row each.
            let settled = SettledLines::from_ranges(std::mem::take(&mut self.pending));
            self.store.settle_lines(
                self.key,
                self.destination,
                settled.ranges(),
                Accepted {
                    pipeline: self.pipeline,
                    fingerprints: &self.fingerprints,
                },
                (self.run_id, counts),
            )?;
        }
        self.pending.clear();
        self.fingerprints.clear();
        self.unwritten_batches = 0;
        Ok(())
    }

    /// Writes what is still waiting when the run ends.
    fn flush_pending(&mut self, counts: &Counts) {
        if let Err(error) = self.write_pending(counts) {
            tracing::warn!(%error, "the last settled rows could not be checkpointed; a resumed run will send them again");
        }
    }
}

impl Observer for Checkpointer<'_> {
    fn batch_settled(&mut self, report: &BatchReport, counts: &Counts) -> Result<(), String> {
        for settled in &report.settled {
            self.note(settled);
        }
        // A batch is settled unless it was not delivered (then all of it failed).
        let delivered = !report.settled.iter().any(|s| s.outcome == Outcome::Failed);
        if delivered && report.records > 0 {
            self.pending.push((report.first_line, report.last_line));
        }
        self.fingerprints.extend_from_slice(&report.fingerprints);
        self.unwritten_batches += 1;
        if self.unwritten_batches >= self.batches_per_write {
            self.write_pending(counts)
                .map_err(|error| error.to_string())?;
        }
        self.progress.batch_settled(report, counts)
    }

    fn record_skipped(&mut self, settled: &Settled, counts: &Counts) {
        self.note(settled);
        self.pending.push((settled.line, settled.line));
        self.progress.record_skipped(settled, counts);
    }

    fn records_unchanged(&mut self, ranges: &[(u64, u64)], counts: &Counts) {
        self.pending.extend_from_slice(ranges);
        self.progress.records_unchanged(ranges, counts);
    }

    fn record_failed(&mut self, settled: &Settled) {
        self.note(settled);
        self.progress.record_failed(settled);
    }

    fn source_opened(&mut self, progress: &crate::source::ReadProgress) {
        self.progress.source_opened(progress);
    }
}
