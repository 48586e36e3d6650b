//! One run of one pipeline with its bookkeeping: the pipeline lock, the checkpoint that lets
//! a killed run resume, the guard against sending a delivered file twice, the run's history
//! entry, and its notifications.
//!
//! `tapline run`, `tapline replay` and the daemon all start runs here; the upload itself is
//! the engine's. A dry run is only the upload; a run sent to the built-in sandbox (`--sandbox`)
//! is the upload and its history entry.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::config::Pipeline;
use crate::config::model::{Compression, Source, SourceFormat, TriggerKind, redacted_url};
use crate::engine::{AccountBudgets, Delivery, Observer, RunSummary};
use crate::file_stem;
pub use crate::outcome::Trigger;
use crate::source::arrival::Arrival;
use crate::state::{self, SettingsDigest, StateError};
mod checkpointer;
mod phases;
mod plan;
mod snapshots;

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
    /// Sent to the built-in sandbox (`--sandbox`): the history says `sandbox` where it
    /// would name the account and host.
    pub to_sandbox: bool,
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
    /// Only the history entry: runs sent to the built-in sandbox (`run --sandbox`,
    /// `replay --sandbox`), which have nothing to resume and nothing to protect from
    /// duplicates, yet show in `tapline history` as sent to `sandbox`.
    HistoryOnly,
    /// None of them: dry runs.
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
            to_sandbox: false,
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

/// How many settled batches one checkpoint write covers: half the requests in flight,
/// rounded up. A killed run sends again at most the batches in flight and those settled
/// since the last write, `in_flight + batches_per_checkpoint(in_flight) - 1` in all (15
/// batches at 10 in flight, the 1,000-record batches of a profile upload). Writing after
/// every batch cost a tenth of an upload's CPU time at 10 in flight.
pub fn batches_per_checkpoint(in_flight: usize) -> usize {
    in_flight.div_ceil(2).max(1)
}

/// Runs a pipeline once, with its bookkeeping (or without: dry runs; or only its history
/// entry: a throwaway sandbox),
/// and reports what happened.
///
/// A run is a short sequence of phases (`phases.rs`): begin (the lock, the history entry),
/// prepare the input (a file, a replay, a query's snapshot), plan (resume, start fresh, or
/// nothing to send: `plan.rs`), deliver (the engine, with the checkpoint as its observer:
/// `checkpointer.rs`), and finish (the delivery record, the watermark, the arrival, the
/// history, the notifications).
pub async fn run(
    pipeline: &Pipeline,
    request: &Request,
    progress: &mut dyn Observer,
    cancel: CancellationToken,
) -> Result<RunSummary, RunError> {
    let run = phases::Start::new(pipeline, request);
    match request.bookkeeping {
        Bookkeeping::Off | Bookkeeping::HistoryOnly => {
            phases::run_unrecorded(run, progress, cancel).await
        }
        Bookkeeping::Kept => phases::run_recorded(run, progress, cancel).await,
    }
}
