//! The state store: run history, checkpoints and delivered files, behind [`StateStore`]; the
//! embedded implementation, [`SqliteStore`], keeps them in one SQLite file, the shared one,
//! [`PgStore`], in a PostgreSQL database that processes on many machines use at once.
//!
//! The embedded store is one file, `state.db`, in the state directory (`--state-dir`, else
//! `$STATE_DIRECTORY`, else `.tapline/` beside the pipelines). Its schema is versioned with
//! `PRAGMA user_version` and migrated at open; a newer schema than this binary knows is
//! refused. WAL and a busy timeout let several processes share it; [`PipelineLock`] keeps two
//! of them from running the same pipeline at once. Secrets are never written here: a
//! destination is an account ID and a URL.

mod checkpoint;
mod fingerprint;
mod history;
mod lock;
mod postgres;
mod records;
#[cfg(test)]
mod suite;
mod triggers;
mod watermarks;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use tokio_util::sync::CancellationToken;

use crate::changes::{KnownFingerprints, RecordFingerprint};
use crate::config::Secret;
use crate::engine::SharedSlots;
use crate::outcome::{Counts, SettledLines};
use crate::source::arrival::Arrival;

pub use checkpoint::{Checkpoint, Delivered};
pub use fingerprint::{Fingerprint, SettingsDigest};
pub use history::{FirstError, RunEntry, RunFinish, RunStart};
pub use lock::{LockWait, PipelineLock};
pub use postgres::PgStore;

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

/// Migrations, in order: the schema version is the number of them applied.
const MIGRATIONS: &[&str] = &[
    // 1: run history, checkpoints and delivered files.
    "CREATE TABLE runs (
        run_id        TEXT PRIMARY KEY,
        pipeline      TEXT NOT NULL,
        pipeline_file TEXT NOT NULL,
        trigger       TEXT NOT NULL,
        started_at    INTEGER NOT NULL,
        finished_at   INTEGER,
        status        TEXT NOT NULL,
        read          INTEGER NOT NULL DEFAULT 0,
        accepted      INTEGER NOT NULL DEFAULT 0,
        skipped       INTEGER NOT NULL DEFAULT 0,
        rejected      INTEGER NOT NULL DEFAULT 0,
        failed        INTEGER NOT NULL DEFAULT 0,
        requests      INTEGER NOT NULL DEFAULT 0,
        retries       INTEGER NOT NULL DEFAULT 0,
        resumed_from  TEXT,
        rows_resumed  INTEGER NOT NULL DEFAULT 0,
        rejects_file  TEXT,
        stop_reason   TEXT,
        first_errors  TEXT NOT NULL DEFAULT '[]',
        warnings      TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX runs_by_pipeline ON runs (pipeline, started_at);
    CREATE TABLE checkpoints (
        pipeline      TEXT NOT NULL,
        destination   TEXT NOT NULL,
        run_id        TEXT NOT NULL,
        size          INTEGER NOT NULL,
        modified_ns   INTEGER NOT NULL,
        sha256        TEXT NOT NULL,
        PRIMARY KEY (pipeline, destination)
    );
    CREATE TABLE settled_lines (
        pipeline      TEXT NOT NULL,
        destination   TEXT NOT NULL,
        first_line    INTEGER NOT NULL,
        last_line     INTEGER NOT NULL
    );
    CREATE INDEX settled_lines_by_checkpoint ON settled_lines (pipeline, destination);
    CREATE TABLE deliveries (
        pipeline      TEXT NOT NULL,
        destination   TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        size          INTEGER NOT NULL,
        run_id        TEXT NOT NULL,
        delivered_at  INTEGER NOT NULL,
        PRIMARY KEY (pipeline, destination, sha256)
    );",
    // 2: the daemon's last fire of each pipeline, for catch-up after downtime.
    "CREATE TABLE fires (
        pipeline      TEXT PRIMARY KEY,
        fired_at      INTEGER NOT NULL
    );",
    // 3: files that started `trigger: file_arrival` runs, each version once.
    "CREATE TABLE arrivals (
        pipeline      TEXT NOT NULL,
        path          TEXT NOT NULL,
        size          INTEGER NOT NULL,
        modified_ns   INTEGER NOT NULL,
        seen_at       INTEGER NOT NULL,
        PRIMARY KEY (pipeline, path, size, modified_ns)
    );",
    // 4: what the pipeline did with the file (target, mapping, ...), so a file checkpointed
    // or delivered as one thing is not taken as settled as another. Empty: recorded before.
    "ALTER TABLE checkpoints ADD COLUMN settings TEXT NOT NULL DEFAULT '';
    ALTER TABLE deliveries ADD COLUMN settings TEXT NOT NULL DEFAULT '';",
    // 5: `send: changes`. One row per record CleverTap accepted: which thing it is (`key`)
    // and what was sent (`content`), both 64-bit hashes, under a scope (pipeline and
    // destination, hashed); events are forgotten after `expires_at` (seconds). A run
    // appends what it accepted to the journal with each checkpoint, and merges the journal
    // into the table in key order when it ends (random inserts into a large table, once per
    // checkpoint, rewrote most of its pages every time). Runs count the records they did
    // not send as unchanged.
    // `key` is the record's key hashed with its scope: the table's integer row key, which
    // SQLite finds faster than a composite key. A journal row holds one checkpoint's
    // fingerprints, packed (`state::records::JournalEntry`).
    "CREATE TABLE fingerprint_journal (
        id            INTEGER PRIMARY KEY,
        scope         INTEGER NOT NULL,
        entries       BLOB NOT NULL
    );
    CREATE TABLE record_fingerprints (
        key           INTEGER PRIMARY KEY,
        scope         INTEGER NOT NULL,
        content       INTEGER NOT NULL,
        expires_at    INTEGER
    );
    CREATE TABLE fingerprint_scopes (
        scope         INTEGER PRIMARY KEY,
        pipeline      TEXT NOT NULL,
        destination   TEXT NOT NULL
    );
    ALTER TABLE runs ADD COLUMN unchanged INTEGER NOT NULL DEFAULT 0;",
    // 6: incremental query sources: the highest value of the incremental column a fully
    // delivered run sent, bound as `$1` by the next run.
    "CREATE TABLE watermarks (
        pipeline      TEXT NOT NULL,
        destination   TEXT NOT NULL,
        value         TEXT NOT NULL,
        run_id        TEXT NOT NULL,
        updated_at    INTEGER NOT NULL,
        PRIMARY KEY (pipeline, destination)
    );",
    // 7: which fire of the schedule a run was for, and which process ran it (host:pid), so
    // the history of several daemons shows each fire and who took it.
    "ALTER TABLE runs ADD COLUMN scheduled_for INTEGER;
    ALTER TABLE runs ADD COLUMN runner TEXT;",
    // 8: an event's fingerprint is forgotten `changes.event_days` after the run that sent
    // it, no longer after its `ts` (a backfill of old events went twice). The ones kept
    // before are kept as if sent now, for the default 90 days.
    EVENT_EXPIRY_FROM_NOW_SQLITE,
    // 9: where each run sent (the account ID and host, or `sandbox`), shown by the history.
    "ALTER TABLE runs ADD COLUMN destination TEXT;",
];

/// Migration 8 of the embedded store (see [`MIGRATIONS`]).
const EVENT_EXPIRY_FROM_NOW_SQLITE: &str = "UPDATE record_fingerprints
    SET expires_at = max(expires_at, CAST(strftime('%s', 'now') AS INTEGER) + 90 * 86400)
    WHERE expires_at IS NOT NULL;";

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
    /// The checkpoint of an unfinished run of `pipeline` to `destination`, if any.
    fn checkpoint(
        &self,
        pipeline: &str,
        destination: &str,
    ) -> Result<Option<Checkpoint>, StateError>;
    /// Starts the checkpoint of a run (keeping lines an earlier run settled).
    fn begin_checkpoint(
        &mut self,
        pipeline: &str,
        destination: &str,
        run_id: &str,
        source: (&Fingerprint, &SettingsDigest),
        settled: &SettledLines,
    ) -> Result<(), StateError>;
    /// Records lines as settled, with the run's counts so far and the fingerprints of the
    /// records among them that CleverTap accepted (`send: changes`), in one transaction.
    fn settle_lines(
        &mut self,
        pipeline: &str,
        destination: &str,
        ranges: &[(u64, u64)],
        accepted: Accepted<'_>,
        progress: (&str, &Counts),
    ) -> Result<(), StateError>;
    /// Records a source as delivered in full, and drops its checkpoint.
    fn finish_delivery(
        &mut self,
        pipeline: &str,
        destination: &str,
        run_id: &str,
        source: (&Fingerprint, &SettingsDigest),
    ) -> Result<(), StateError>;
    /// The run that delivered this source in full, if one did.
    fn delivered(
        &self,
        pipeline: &str,
        destination: &str,
        source: (&Fingerprint, &SettingsDigest),
    ) -> Result<Option<Delivered>, StateError>;
}

/// A state store's role: what CleverTap accepted of each record (`send: changes`).
pub trait RecordFingerprints {
    /// The fingerprints CleverTap accepted from `pipeline` at `destination`, to be read
    /// from another thread while the run goes on.
    fn known_fingerprints(
        &self,
        pipeline: &str,
        destination: &str,
    ) -> Result<Box<dyn KnownFingerprints>, StateError>;
    /// Moves the fingerprints a run of `pipeline` at `destination` wrote as it went (and
    /// any a killed run left) into the table lookups read; returns how many.
    fn merge_fingerprints(&mut self, pipeline: &str, destination: &str) -> Result<u64, StateError>;
    /// Drops every fingerprint of `pipeline`; returns how many (`tapline state forget`).
    fn forget_fingerprints(&mut self, pipeline: &str) -> Result<u64, StateError>;
    /// Drops the fingerprints of `pipeline` at `destination` that expired by `now`
    /// (seconds since the epoch); returns how many.
    fn prune_fingerprints(
        &mut self,
        pipeline: &str,
        destination: &str,
        now: i64,
    ) -> Result<u64, StateError>;
}

/// A state store's role: the watermarks of incremental queries.
pub trait Watermarks {
    /// The highest incremental value a fully delivered run of `pipeline` sent to
    /// `destination`, which the next run binds as `$1`.
    fn watermark(&self, pipeline: &str, destination: &str) -> Result<Option<String>, StateError>;
    /// Records the watermark `(value, run_id)` a fully delivered run reached.
    fn set_watermark(
        &self,
        pipeline: &str,
        destination: &str,
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
    /// The newest runs (of one pipeline, or all), newest first.
    fn runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunEntry>, StateError>;
    /// One run.
    fn run(&self, run_id: &str) -> Result<Option<RunEntry>, StateError>;
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
}

/// Opens the state store for a reader of the run history (`tapline history`, a console):
/// only the [`History`] role.
pub fn open_history(location: &Location) -> Result<Box<dyn History>, StateError> {
    Ok(open(location)?)
}

/// Opens the state store (creating it if needed, and bringing its schema up to date).
pub fn open(location: &Location) -> Result<Box<dyn StateStore>, StateError> {
    Ok(match location {
        Location::Folder(dir) => Box::new(SqliteStore::open(dir)?),
        Location::Postgres(settings) => Box::new(PgStore::open(settings)?),
    })
}

impl Locks for SqliteStore {
    fn lock(
        &self,
        pipeline: &str,
        _wait: LockWait,
        _on_loss: CancellationToken,
    ) -> Result<PipelineLock, StateError> {
        // A file lock is released by the system when its process dies: nothing to wait for,
        // and nothing to lose while the process lives.
        PipelineLock::acquire(&self.dir.join("locks"), pipeline)
    }
}

impl Checkpoints for SqliteStore {
    fn checkpoint(
        &self,
        pipeline: &str,
        destination: &str,
    ) -> Result<Option<Checkpoint>, StateError> {
        SqliteStore::checkpoint(self, pipeline, destination)
    }
    fn begin_checkpoint(
        &mut self,
        pipeline: &str,
        destination: &str,
        run_id: &str,
        source: (&Fingerprint, &SettingsDigest),
        settled: &SettledLines,
    ) -> Result<(), StateError> {
        SqliteStore::begin_checkpoint(self, pipeline, destination, run_id, source, settled)
    }
    fn settle_lines(
        &mut self,
        pipeline: &str,
        destination: &str,
        ranges: &[(u64, u64)],
        accepted: Accepted<'_>,
        progress: (&str, &Counts),
    ) -> Result<(), StateError> {
        SqliteStore::settle_lines(self, (pipeline, destination), ranges, accepted, progress)
    }
    fn finish_delivery(
        &mut self,
        pipeline: &str,
        destination: &str,
        run_id: &str,
        source: (&Fingerprint, &SettingsDigest),
    ) -> Result<(), StateError> {
        SqliteStore::finish_delivery(self, pipeline, destination, run_id, source)
    }
    fn delivered(
        &self,
        pipeline: &str,
        destination: &str,
        source: (&Fingerprint, &SettingsDigest),
    ) -> Result<Option<Delivered>, StateError> {
        SqliteStore::delivered(self, pipeline, destination, source)
    }
}

impl RecordFingerprints for SqliteStore {
    fn known_fingerprints(
        &self,
        pipeline: &str,
        destination: &str,
    ) -> Result<Box<dyn KnownFingerprints>, StateError> {
        SqliteStore::known_fingerprints(self, pipeline, destination)
    }
    fn merge_fingerprints(&mut self, pipeline: &str, destination: &str) -> Result<u64, StateError> {
        SqliteStore::merge_fingerprints(self, pipeline, destination)
    }
    fn forget_fingerprints(&mut self, pipeline: &str) -> Result<u64, StateError> {
        SqliteStore::forget_fingerprints(self, pipeline)
    }
    fn prune_fingerprints(
        &mut self,
        pipeline: &str,
        destination: &str,
        now: i64,
    ) -> Result<u64, StateError> {
        SqliteStore::prune_fingerprints(self, pipeline, destination, now)
    }
}

impl Watermarks for SqliteStore {
    fn watermark(&self, pipeline: &str, destination: &str) -> Result<Option<String>, StateError> {
        SqliteStore::watermark(self, pipeline, destination)
    }
    fn set_watermark(
        &self,
        pipeline: &str,
        destination: &str,
        reached: (&str, &str),
    ) -> Result<(), StateError> {
        SqliteStore::set_watermark(self, pipeline, destination, reached)
    }
    fn forget_watermarks(&self, pipeline: &str) -> Result<u64, StateError> {
        SqliteStore::forget_watermarks(self, pipeline)
    }
}

impl History for SqliteStore {
    fn start_run(&self, run: &RunStart<'_>) -> Result<(), StateError> {
        SqliteStore::start_run(self, run)
    }
    fn finish_run(&self, run_id: &str, finish: &RunFinish) -> Result<(), StateError> {
        SqliteStore::finish_run(self, run_id, finish)
    }
    fn abandon_running(&self, pipeline: &str) -> Result<usize, StateError> {
        SqliteStore::abandon_running(self, pipeline)
    }
    fn runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunEntry>, StateError> {
        SqliteStore::runs(self, pipeline, limit)
    }
    fn run(&self, run_id: &str) -> Result<Option<RunEntry>, StateError> {
        SqliteStore::run(self, run_id)
    }
    fn prune(&self, days: u32) -> Result<Vec<PathBuf>, StateError> {
        SqliteStore::prune(self, days)
    }
}

impl Triggers for SqliteStore {
    fn last_fire(&self, pipeline: &str) -> Result<Option<DateTime<Utc>>, StateError> {
        SqliteStore::last_fire(self, pipeline)
    }
    fn claim_fire(&self, pipeline: &str, at: DateTime<Utc>) -> Result<bool, StateError> {
        SqliteStore::claim_fire(self, pipeline, at)
    }
    fn has_arrived(&self, pipeline: &str, arrival: &Arrival) -> Result<bool, StateError> {
        SqliteStore::has_arrived(self, pipeline, arrival)
    }
    fn record_arrival(&self, pipeline: &str, arrival: &Arrival) -> Result<(), StateError> {
        SqliteStore::record_arrival(self, pipeline, arrival)
    }
}

/// The embedded state store: one SQLite file.
pub struct SqliteStore {
    connection: Connection,
    dir: PathBuf,
    /// When a checkpoint was last synced to disk.
    checkpoint_synced: Instant,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DATABASE_FILE);
        let database = |source| StateError::Database {
            path: path.clone(),
            source,
        };
        let mut connection = Connection::open(&path).map_err(database)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(database)?;
        // A transaction takes the write lock when it begins, so one that reads and then
        // writes never finds, half-way, that another process wrote first (SQLite answers that
        // with an immediate "database is locked", without waiting).
        connection.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        // WAL lets readers (`tapline history`) and a writer work at once; FULL makes every
        // write survive a power loss, not only a killed process (checkpoints relax this,
        // see CHECKPOINT_SYNC_INTERVAL). Switching a new database to WAL needs it alone, and
        // SQLite does not wait for that: processes opening a new store at once retry.
        when_not_busy(
            || {
                // A new store gives back the pages a merged fingerprint journal leaves free
                // (`incremental_vacuum`); an existing one keeps its mode and reuses them.
                connection.execute_batch(
                    "PRAGMA auto_vacuum = INCREMENTAL;
                     PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                     PRAGMA journal_size_limit = 67108864;",
                )
            },
            is_busy,
        )
        .map_err(database)?;
        when_not_busy(
            || migrate(&mut connection, &path),
            |error| matches!(error, StateError::Database { source, .. } if is_busy(source)),
        )?;
        Ok(SqliteStore {
            connection,
            dir: dir.to_path_buf(),
            checkpoint_synced: Instant::now(),
        })
    }

    fn error(&self, source: rusqlite::Error) -> StateError {
        StateError::Database {
            path: self.dir.join(DATABASE_FILE),
            source,
        }
    }
}

/// How long a process waits for another to release the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `step` until it succeeds or fails other than `busy` ("database is locked"), for at
/// most [`BUSY_TIMEOUT`]: for the few steps where SQLite answers busy without waiting itself.
fn when_not_busy<T, E>(
    mut step: impl FnMut() -> Result<T, E>,
    busy: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match step() {
            Err(error) if busy(&error) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Whether SQLite said "database is locked".
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(failure, _) if failure.code == rusqlite::ErrorCode::DatabaseBusy)
}

/// Applies the migrations the database lacks, all in one immediate transaction: the first
/// of several processes opening a new store at once migrates it, the others wait for the
/// write lock (the busy timeout), then find it up to date.
fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StateError> {
    let database = |source| StateError::Database {
        path: path.to_path_buf(),
        source,
    };
    let known = MIGRATIONS.len() as i64;
    let transaction = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(database)?;
    let found: i64 = transaction
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(database)?;
    if found > known {
        return Err(StateError::NewerSchema {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    if found == known {
        return Ok(());
    }
    for sql in &MIGRATIONS[found as usize..] {
        transaction.execute_batch(sql).map_err(database)?;
    }
    transaction
        .execute_batch(&format!("PRAGMA user_version = {known}"))
        .map_err(database)?;
    transaction.commit().map_err(database)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        // Opening again applies nothing twice.
        let store = SqliteStore::open(dir.path()).unwrap();
        let version: i64 = store
            .connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        store
            .connection
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        drop(store);
        let error = SqliteStore::open(dir.path()).err().expect("refused");
        assert!(matches!(error, StateError::NewerSchema { found: 99, .. }));
        assert!(error.to_string().contains("upgrade tapline"), "{error}");
    }
}
