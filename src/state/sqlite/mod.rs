//! The embedded state store: one SQLite file, `state.db`, in the state directory.
//!
//! Its schema is versioned with `PRAGMA user_version` and migrated at open; a newer schema
//! than this binary knows is refused. WAL and a busy timeout let several processes share it;
//! a [`PipelineLock`] file keeps two of them from running the same pipeline at once. Each
//! role's statements are in a file of their own.

mod checkpoints;
mod fingerprints;
mod history;
mod triggers;
mod watermarks;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use tokio_util::sync::CancellationToken;

use super::{
    Accepted, Checkpoint, CheckpointKey, Checkpoints, DATABASE_FILE, Delivered, Fingerprint,
    History, LockWait, Locks, PipelineLock, RecordFingerprints, RunEntry, RunFilter, RunFinish,
    RunStart, SettingsDigest, StateError, Triggers, Watermarks,
};
use crate::changes::KnownFingerprints;
use crate::outcome::{Counts, SettledLines};
use crate::source::arrival::Arrival;

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
    // 10: why a run stopped, as a word a program matches on (`stop_reason` is the message).
    "ALTER TABLE runs ADD COLUMN stop_kind TEXT;",
    // 11: indexes for the history's lists (the console, `tapline history`): newest first,
    // of a pipeline, or of a status, each read from its index in order.
    RUN_LIST_INDEXES,
    // 12: the limits of requests in flight each run went through (`thread_count: auto`).
    "ALTER TABLE runs ADD COLUMN concurrency TEXT;",
    // 13: an object's ETag is part of what identifies its arrival (empty for a local file).
    "CREATE TABLE arrivals_with_version (
        pipeline      TEXT NOT NULL,
        path          TEXT NOT NULL,
        size          INTEGER NOT NULL,
        modified_ns   INTEGER NOT NULL,
        version       TEXT NOT NULL DEFAULT '',
        seen_at       INTEGER NOT NULL,
        PRIMARY KEY (pipeline, path, size, modified_ns, version)
    );
    INSERT INTO arrivals_with_version (pipeline, path, size, modified_ns, seen_at)
        SELECT pipeline, path, size, modified_ns, seen_at FROM arrivals;
    DROP TABLE arrivals;
    ALTER TABLE arrivals_with_version RENAME TO arrivals;",
];

/// Migration 11 (see [`MIGRATIONS`]); the same in the shared store.
const RUN_LIST_INDEXES: &str = "DROP INDEX runs_by_pipeline;
    CREATE INDEX runs_by_pipeline ON runs (pipeline, started_at, run_id);
    CREATE INDEX runs_by_start ON runs (started_at, run_id);
    CREATE INDEX runs_by_status ON runs (status, started_at, run_id);";

/// Migration 8 of the embedded store (see [`MIGRATIONS`]).
const EVENT_EXPIRY_FROM_NOW_SQLITE: &str = "UPDATE record_fingerprints
    SET expires_at = max(expires_at, CAST(strftime('%s', 'now') AS INTEGER) + 90 * 86400)
    WHERE expires_at IS NOT NULL;";

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
    fn checkpoint(&self, key: CheckpointKey<'_>) -> Result<Option<Checkpoint>, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        SqliteStore::checkpoint(self, pipeline, destination)
    }
    fn begin_checkpoint(
        &mut self,
        key: CheckpointKey<'_>,
        run_id: &str,
        source: (&Fingerprint, &SettingsDigest),
        settled: &SettledLines,
    ) -> Result<(), StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        SqliteStore::begin_checkpoint(self, pipeline, destination, run_id, source, settled)
    }
    fn settle_lines(
        &mut self,
        key: CheckpointKey<'_>,
        ranges: &[(u64, u64)],
        accepted: Accepted<'_>,
        progress: (&str, &Counts),
    ) -> Result<(), StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        SqliteStore::settle_lines(self, (pipeline, destination), ranges, accepted, progress)
    }
    fn finish_delivery(
        &mut self,
        key: CheckpointKey<'_>,
        run_id: &str,
        source: (&Fingerprint, &SettingsDigest),
    ) -> Result<(), StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        SqliteStore::finish_delivery(self, pipeline, destination, run_id, source)
    }
    fn delivered(
        &self,
        key: CheckpointKey<'_>,
        source: (&Fingerprint, &SettingsDigest),
    ) -> Result<Option<Delivered>, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        SqliteStore::delivered(self, pipeline, destination, source)
    }
}

impl RecordFingerprints for SqliteStore {
    fn known_fingerprints(
        &self,
        key: CheckpointKey<'_>,
    ) -> Result<Box<dyn KnownFingerprints>, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        SqliteStore::known_fingerprints(self, pipeline, destination)
    }
    fn merge_fingerprints(&mut self, key: CheckpointKey<'_>) -> Result<u64, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        SqliteStore::merge_fingerprints(self, pipeline, destination)
    }
    fn forget_fingerprints(&mut self, pipeline: &str) -> Result<u64, StateError> {
        SqliteStore::forget_fingerprints(self, pipeline)
    }
    fn prune_fingerprints(&mut self, key: CheckpointKey<'_>, now: i64) -> Result<u64, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        SqliteStore::prune_fingerprints(self, pipeline, destination, now)
    }
}

impl Watermarks for SqliteStore {
    fn watermark(&self, key: CheckpointKey<'_>) -> Result<Option<String>, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        SqliteStore::watermark(self, pipeline, destination)
    }
    fn set_watermark(
        &self,
        key: CheckpointKey<'_>,
        reached: (&str, &str),
    ) -> Result<(), StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
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
    fn runs(&self, filter: &RunFilter) -> Result<Vec<RunEntry>, StateError> {
        SqliteStore::runs(self, filter)
    }
    fn run(&self, run_id: &str) -> Result<Option<RunEntry>, StateError> {
        SqliteStore::run(self, run_id)
    }
    fn pipeline_names(&self) -> Result<Vec<String>, StateError> {
        SqliteStore::pipeline_names(self)
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
    fn arrivals(&self, pipeline: &str, each: &mut dyn FnMut(Arrival)) -> Result<(), StateError> {
        SqliteStore::arrivals(self, pipeline, each)
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
