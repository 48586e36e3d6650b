//! What CleverTap accepted of each record, for `send: changes`: the fingerprints of
//! [`crate::changes`], kept per pipeline and destination (a "scope"), written with the
//! checkpoint that settles their records, read back one key at a time while a run reads its
//! source (they live on disk: ten million of them are a few hundred MB, never in memory).

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{DATABASE_FILE, SqliteStore, StateError};
use crate::changes::{KnownFingerprints, RecordFingerprint};

/// The scope of a pipeline's fingerprints at a destination: a hash, so each of millions of
/// rows holds 8 bytes of it, not the names.
pub(super) fn scope(pipeline: &str, destination: &str) -> i64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(pipeline.as_bytes());
    hasher.update(&[0xff]);
    hasher.update(destination.as_bytes());
    hasher.digest() as i64
}

/// A record's key within its scope, as the tables keep it: one 64-bit integer.
fn row_key(scope: i64, key: u64) -> i64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&scope.to_le_bytes());
    hasher.update(&key.to_le_bytes());
    hasher.digest() as i64
}

/// Appends fingerprints of accepted records to the journal, inside the caller's transaction
/// (appending is cheap whatever the table's size; [`SqliteStore::merge_fingerprints`]
/// moves them into the table lookups read).
pub(super) fn insert(
    transaction: &rusqlite::Transaction<'_>,
    (pipeline, destination): (&str, &str),
    fingerprints: &[RecordFingerprint],
) -> rusqlite::Result<()> {
    if fingerprints.is_empty() {
        return Ok(());
    }
    let scope = scope(pipeline, destination);
    transaction
        .prepare_cached(
            "INSERT OR IGNORE INTO fingerprint_scopes (scope, pipeline, destination)
             VALUES (?1, ?2, ?3)",
        )?
        .execute(params![scope, pipeline, destination])?;
    let mut insert = transaction.prepare_cached(
        "INSERT INTO fingerprint_journal (key, scope, content, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for fingerprint in fingerprints {
        insert.execute(params![
            row_key(scope, fingerprint.key),
            scope,
            fingerprint.content as i64,
            fingerprint.expires_at
        ])?;
    }
    Ok(())
}

/// Reads the fingerprints of one scope through a read-only connection of its own, so the
/// thread that reads the source asks while the run writes checkpoints on another. It reads
/// one snapshot, taken at its first lookup (what earlier runs accepted; this run's records
/// are judged already), so its page cache is not emptied by every checkpoint the run writes.
struct Reader {
    connection: Connection,
    scope: i64,
    in_snapshot: bool,
    /// No run of the scope recorded anything yet (a first, seeding run): nothing to ask.
    empty: bool,
}

/// The reader's page cache, in KiB (SQLite's default is 2 MiB): lookups hit random pages of
/// a table of tens of bytes per fingerprint.
const READER_CACHE_KIB: i64 = 48 * 1024;

impl KnownFingerprints for Reader {
    fn content(&mut self, key: u64) -> Result<Option<u64>, String> {
        if !self.in_snapshot {
            self.connection
                .execute_batch("BEGIN")
                .map_err(|error| error.to_string())?;
            self.in_snapshot = true;
            self.empty = self
                .connection
                .query_row(
                    "SELECT NOT EXISTS (SELECT 1 FROM fingerprint_scopes WHERE scope = ?1)",
                    params![self.scope],
                    |row| row.get(0),
                )
                .map_err(|error| error.to_string())?;
        }
        if self.empty {
            return Ok(None);
        }
        self.connection
            .prepare_cached("SELECT content FROM record_fingerprints WHERE key = ?1")
            .and_then(|mut statement| {
                statement
                    .query_row(params![row_key(self.scope, key)], |row| {
                        row.get::<_, i64>(0)
                    })
                    .optional()
            })
            .map(|content| content.map(|content| content as u64))
            .map_err(|error| error.to_string())
    }
}

impl SqliteStore {
    /// The fingerprints CleverTap accepted from `pipeline` at `destination`.
    pub fn known_fingerprints(
        &self,
        pipeline: &str,
        destination: &str,
    ) -> Result<Box<dyn KnownFingerprints>, StateError> {
        let connection = Connection::open_with_flags(
            self.dir.join(DATABASE_FILE),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|connection| {
            connection.busy_timeout(super::BUSY_TIMEOUT)?;
            connection.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
            Ok(connection)
        })
        .map_err(|error| self.error(error))?;
        Ok(Box::new(Reader {
            connection,
            scope: scope(pipeline, destination),
            in_snapshot: false,
            empty: false,
        }))
    }

    /// Moves the journal's fingerprints of a scope into the table, in key order (the last
    /// written wins for a key), in one transaction; returns how many.
    pub fn merge_fingerprints(
        &mut self,
        pipeline: &str,
        destination: &str,
    ) -> Result<u64, StateError> {
        let scope = scope(pipeline, destination);
        let result = (|| {
            let transaction = self.connection.transaction()?;
            let merged = transaction.execute(
                "INSERT OR REPLACE INTO record_fingerprints (key, scope, content, expires_at)
                 SELECT key, scope, content, expires_at FROM fingerprint_journal
                 WHERE scope = ?1 ORDER BY key, id",
                params![scope],
            )?;
            transaction.execute(
                "DELETE FROM fingerprint_journal WHERE scope = ?1",
                params![scope],
            )?;
            transaction.commit()?;
            // The journal's pages go back to the file system (stores made with
            // `auto_vacuum`; others reuse them for the next journal).
            // (Each step of the pragma frees one page: step it to the end.)
            let mut vacuum = self.connection.prepare("PRAGMA incremental_vacuum")?;
            let mut steps = vacuum.query([])?;
            while steps.next()?.is_some() {}
            Ok(merged as u64)
        })();
        result.map_err(|error| self.error(error))
    }

    /// Drops every fingerprint of `pipeline` (at every destination); returns how many.
    pub fn forget_fingerprints(&mut self, pipeline: &str) -> Result<u64, StateError> {
        let result = (|| {
            let transaction = self.connection.transaction()?;
            let forgotten = transaction.execute(
                "DELETE FROM record_fingerprints WHERE scope IN
                 (SELECT scope FROM fingerprint_scopes WHERE pipeline = ?1)",
                params![pipeline],
            )?;
            transaction.execute(
                "DELETE FROM fingerprint_journal WHERE scope IN
                 (SELECT scope FROM fingerprint_scopes WHERE pipeline = ?1)",
                params![pipeline],
            )?;
            transaction.execute(
                "DELETE FROM fingerprint_scopes WHERE pipeline = ?1",
                params![pipeline],
            )?;
            transaction.commit()?;
            Ok(forgotten as u64)
        })();
        result.map_err(|error| self.error(error))
    }

    /// Drops the fingerprints of `pipeline` at `destination` that expired by `now` (seconds);
    /// returns how many.
    pub fn prune_fingerprints(
        &mut self,
        pipeline: &str,
        destination: &str,
        now: i64,
    ) -> Result<u64, StateError> {
        self.connection
            .execute(
                "DELETE FROM record_fingerprints
                 WHERE scope = ?1 AND expires_at IS NOT NULL AND expires_at < ?2",
                params![scope(pipeline, destination), now],
            )
            .map(|pruned| pruned as u64)
            .map_err(|error| self.error(error))
    }
}
