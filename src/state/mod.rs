//! The state store: run history, checkpoints and delivered files, behind [`StateStore`]; the
//! embedded implementation, [`SqliteStore`], keeps them in one SQLite file, the shared one,
//! [`PgStore`], in a PostgreSQL database that processes on many machines use at once.
//!
//! The embedded store (`sqlite/`) is one file, `state.db`, in the state directory
//! (`--state-dir`, else `$STATE_DIRECTORY`, else `.tapline/` beside the pipelines); the
//! shared one (`postgres/`) has the same tables. This module holds what both share: the
//! roles, the errors, the types of what is stored. Secrets are never written here: a
//! destination is an account ID and a URL.

mod checkpoint;
mod fingerprint;
mod history;
mod lock;
mod postgres;
mod records;
mod sqlite;
#[cfg(test)]
mod suite;
mod triggers;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::changes::{KnownFingerprints, RecordFingerprint};
use crate::config::Secret;
use crate::engine::SharedSlots;
use crate::outcome::{Counts, SettledLines};
use crate::source::arrival::Arrival;

pub use checkpoint::{Checkpoint, Delivered};
pub use fingerprint::{Fingerprint, SettingsDigest};
use history::stop_kind;
pub use history::{FirstError, RunEntry, RunFilter, RunFinish, RunStart, utc_time};
pub use lock::{LockWait, PipelineLock};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// The state store's file name inside the state directory.
pub const DATABASE_FILE: &str = "state.db";

/// A problem with the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite refused an operation.
    #[error("the state store `{}`: {source}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was written by a newer tapline.
    #[error(
        "the state store `{}` has schema version {found}, but this tapline knows only up to {known}; upgrade tapline, or point --state-dir at another folder",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The newest version this binary knows.
        known: i64,
    },
    /// A file or folder of the state directory.
    #[error("the state directory `{}`: {source} (choose another with --state-dir)", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The shared store's database refused an operation, or could not be reached.
    #[error("the state store {url}: {reason}")]
    Postgres {
        /// Its URL, password masked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Another process, maybe on another machine, holds the pipeline's lease in the shared
    /// store and renews it.
    #[error(
        "pipeline `{pipeline}` is already running in another tapline process ({holder} holds its lease in the shared state store); wait for that run to end"
    )]
    Leased {
        /// The pipeline.
        pipeline: String,
        /// Who holds the lease: host, process ID.
        holder: String,
    },
    /// A newer run of the pipeline took its checkpoint over: this run's lease had expired
    /// (the process was paused, or could not reach the database).
    #[error(
        "run {run_id} no longer owns the checkpoint of `{pipeline}`: another process took the pipeline over after this run's lease expired; this run stops"
    )]
    TakenOver {
        /// The checkpoint's key.
        pipeline: String,
        /// This run.
        run_id: String,
    },
    /// Another process runs the pipeline.
    #[error(
        "pipeline `{pipeline}` is already running in another tapline process (it holds `{}`); wait for that run to end",
        lock.display()
    )]
    Busy {
        /// The pipeline.
        pipeline: String,
        /// The lock file.
        lock: PathBuf,
    },
}

/// How often the checkpoint written after every batch is also synced to disk. Every
/// checkpoint survives the process being killed (the write is in the operating system's
/// hands); only a power cut or a kernel crash can lose the ones since the last sync, and a
/// lost checkpoint means those batches are sent again, never that a record is lost. Syncing
/// every batch cost more CPU than mapping a quarter of its records.
pub const CHECKPOINT_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Where the state store is: chosen by `--state` (or `TAPLINE_STATE`) and `--state-dir`.
#[derive(Debug, Clone)]
pub enum Location {
    /// The embedded store: `state.db` in this folder.
    Folder(PathBuf),
    /// The shared store: a PostgreSQL database.
    Postgres(SharedSettings),
}

/// How to reach the shared store, and how long a lease lives without a heartbeat.
#[derive(Debug, Clone)]
pub struct SharedSettings {
    /// `postgres://user:password@host:5432/db?sslmode=require`.
    pub url: Secret,
    /// A process that stops renewing its leases (killed, or its machine gone) loses them
    /// after this long: its pipelines and request slots are free again (`--lease-seconds`).
    pub lease: Duration,
}

impl Location {
    /// Whether the store may hold anything: the embedded store's file exists; a database
    /// is asked.
    pub fn may_exist(&self) -> bool {
        match self {
            Location::Folder(dir) => dir.join(DATABASE_FILE).is_file(),
            Location::Postgres(_) => true,
        }
    }

    /// The store as messages name it: the file, or the URL with its password masked.
    pub fn shown(&self) -> String {
        match self {
            Location::Folder(dir) => format!("`{}`", dir.join(DATABASE_FILE).display()),
            Location::Postgres(settings) => {
                crate::config::model::redacted_database_url(settings.url.expose())
            }
        }
    }
}

/// What a checkpoint, a delivery, a watermark and record fingerprints are kept under: a
/// pipeline and where it sends. For checkpoints and deliveries the pipeline is its name (a
/// `file_arrival` pipeline's name and file: a checkpoint per arriving file); for record
/// fingerprints and watermarks, its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointKey<'a> {
    /// The pipeline, as above.
    pub pipeline: &'a str,
    /// Its destination: the account ID and host (`runner::destination`).
    pub destination: &'a str,
}

impl<'a> CheckpointKey<'a> {
    /// The key of `pipeline` at `destination`.
    pub fn new(pipeline: &'a str, destination: &'a str) -> Self {
        CheckpointKey {
            pipeline,
            destination,
        }
    }
}

/// The fingerprints of records CleverTap accepted (`send: changes`), under the pipeline they
/// belong to: its name, at the checkpoint's destination. (A `file_arrival` pipeline keeps a
/// checkpoint per arriving file, but one set of fingerprints: an event in two files is one
/// event.)
#[derive(Debug, Clone, Copy)]
pub struct Accepted<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The fingerprints.
    pub fingerprints: &'a [RecordFingerprint],
}

/// What tapline keeps between runs, wherever it is kept, in roles: each is what one part of
/// tapline needs (the runner all of them; `tapline history`, and a console, only
/// [`History`]). Each method is one short transaction. [`SqliteStore`] is the embedded
/// store, [`PgStore`] the shared one; `suite.rs` holds both to the same tests.
pub trait StateStore:
    Locks + Checkpoints + RecordFingerprints + Watermarks + History + Triggers + Send
{
}

impl<T: Locks + Checkpoints + RecordFingerprints + Watermarks + History + Triggers + Send>
    StateStore for T
{
}

/// A state store's role: the pipeline lock (a lease with the shared store) and the request slots processes share.
pub trait Locks {
    /// Takes the lock that keeps other processes from running `pipeline` until it is
    /// dropped (or this process dies). A shared store's lock is a lease: if another process
    /// takes it over (this one stopped renewing it), `on_loss` is cancelled.
    fn lock(
        &self,
        pipeline: &str,
        wait: LockWait,
        on_loss: CancellationToken,
    ) -> Result<PipelineLock, StateError>;
    /// Request slots of each CleverTap account that every process using this store counts
    /// against (the shared store), so that their sum stays within the account's limit.
    fn shared_slots(&self) -> Option<std::sync::Arc<dyn SharedSlots>> {
        None
    }
}

/// A state store's role: checkpoints of unfinished runs and the last delivery of each pipeline to each destination.
pub trait Checkpoints {
    /// The checkpoint of an unfinished run under `key`, if any.
    fn checkpoint(&self, key: CheckpointKey<'_>) -> Result<Option<Checkpoint>, StateError>;
    /// Starts the checkpoint of a run (keeping lines an earlier run settled).
    fn begin_checkpoint(
        &mut self,
        key: CheckpointKey<'_>,
        run_id: &str,
        source: (&Fingerprint, &SettingsDigest),
        settled: &SettledLines,
    ) -> Result<(), StateError>;
    /// Records lines as settled, with the run's counts so far and the fingerprints of the
    /// records among them that CleverTap accepted (`send: changes`), in one transaction.
    fn settle_lines(
        &mut self,
        key: CheckpointKey<'_>,
        ranges: &[(u64, u64)],
        accepted: Accepted<'_>,
        progress: (&str, &Counts),
    ) -> Result<(), StateError>;
    /// Records a source as delivered in full, and drops its checkpoint.
    fn finish_delivery(
        &mut self,
        key: CheckpointKey<'_>,
        run_id: &str,
        source: (&Fingerprint, &SettingsDigest),
    ) -> Result<(), StateError>;
    /// The run that delivered this source in full, if one did.
    fn delivered(
        &self,
        key: CheckpointKey<'_>,
        source: (&Fingerprint, &SettingsDigest),
    ) -> Result<Option<Delivered>, StateError>;
}

/// A state store's role: what CleverTap accepted of each record (`send: changes`).
pub trait RecordFingerprints {
    /// The fingerprints CleverTap accepted from a pipeline at a destination, to be read
    /// from another thread while the run goes on.
    fn known_fingerprints(
        &self,
        key: CheckpointKey<'_>,
    ) -> Result<Box<dyn KnownFingerprints>, StateError>;
    /// Moves the fingerprints a run of a pipeline at a destination wrote as it went (and
    /// any a killed run left) into the table lookups read; returns how many.
    fn merge_fingerprints(&mut self, key: CheckpointKey<'_>) -> Result<u64, StateError>;
    /// Drops every fingerprint of `pipeline`; returns how many (`tapline state forget`).
    fn forget_fingerprints(&mut self, pipeline: &str) -> Result<u64, StateError>;
    /// Drops the fingerprints of a pipeline at a destination that expired by `now`
    /// (seconds since the epoch); returns how many.
    fn prune_fingerprints(&mut self, key: CheckpointKey<'_>, now: i64) -> Result<u64, StateError>;
}

/// A state store's role: the watermarks of incremental queries.
pub trait Watermarks {
    /// The highest incremental value a fully delivered run sent under `key`, which the
    /// next run binds as `$1`.
    fn watermark(&self, key: CheckpointKey<'_>) -> Result<Option<String>, StateError>;
    /// Records the watermark `(value, run_id)` a fully delivered run reached.
    fn set_watermark(
        &self,
        key: CheckpointKey<'_>,
        reached: (&str, &str),
    ) -> Result<(), StateError>;
    /// Drops every watermark of `pipeline`; returns how many (`tapline state forget`).
    fn forget_watermarks(&self, pipeline: &str) -> Result<u64, StateError>;
}

/// A state store's role: the run history: what `tapline history` and a console read.
pub trait History {
    /// Records a run as started.
    fn start_run(&self, run: &RunStart<'_>) -> Result<(), StateError>;
    /// Records how a run ended.
    fn finish_run(&self, run_id: &str, finish: &RunFinish) -> Result<(), StateError>;
    /// Marks the runs of `pipeline` still `running` as abandoned; returns how many.
    fn abandon_running(&self, pipeline: &str) -> Result<usize, StateError>;
    /// The runs `filter` asks for, newest first.
    fn runs(&self, filter: &RunFilter) -> Result<Vec<RunEntry>, StateError>;
    /// One run.
    fn run(&self, run_id: &str) -> Result<Option<RunEntry>, StateError>;
    /// The name of every pipeline with a run in the history, in name order (a console with
    /// no folder of pipeline files lists these).
    fn pipeline_names(&self) -> Result<Vec<String>, StateError>;
    /// Deletes runs older than `days`; returns their rejects files, to delete.
    fn prune(&self, days: u32) -> Result<Vec<PathBuf>, StateError>;
}

/// A state store's role: the daemon's fires and the files that arrived.
pub trait Triggers {
    /// When the daemon last fired `pipeline`'s schedule.
    fn last_fire(&self, pipeline: &str) -> Result<Option<DateTime<Utc>>, StateError>;
    /// Claims the fire of `pipeline`'s schedule due `at`: `true` for the one process that
    /// claims it first, `false` for every other (and for a fire older than the last claimed).
    fn claim_fire(&self, pipeline: &str, at: DateTime<Utc>) -> Result<bool, StateError>;
    /// Whether this arrival of a file was handled already.
    fn has_arrived(&self, pipeline: &str, arrival: &Arrival) -> Result<bool, StateError>;
    /// Records an arrival as handled.
    fn record_arrival(&self, pipeline: &str, arrival: &Arrival) -> Result<(), StateError>;
    /// Hands `each` every arrival of `pipeline` recorded as handled, one at a time (the
    /// daemon remembers them, so a poll of a bucket asks the store only about new objects).
    fn arrivals(&self, pipeline: &str, each: &mut dyn FnMut(Arrival)) -> Result<(), StateError>;
}

/// Opens the state store for a reader of the run history (`tapline history`, a console):
/// only the [`History`] role.
pub fn open_history(location: &Location) -> Result<Box<dyn History + Send>, StateError> {
    Ok(open(location)?)
}

/// Opens the state store (creating it if needed, and bringing its schema up to date).
pub fn open(location: &Location) -> Result<Box<dyn StateStore>, StateError> {
    Ok(match location {
        Location::Folder(dir) => Box::new(SqliteStore::open(dir)?),
        Location::Postgres(settings) => Box::new(PgStore::open(settings)?),
    })
}

/// This process as the history and leases name it: `host:pid`.
pub fn this_process() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .ok()
            .map(|host| host.trim().to_string())
            .filter(|host| !host.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_string());
        format!("{host}:{}", std::process::id())
    })
    .clone()
}

/// Milliseconds since the Unix epoch, as the store keeps times.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
