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

/// Writes fingerprints of accepted records, inside the caller's transaction.
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
        "INSERT OR REPLACE INTO record_fingerprints (scope, key, content, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for fingerprint in fingerprints {
        insert.execute(params![
            scope,
            fingerprint.key as i64,
            fingerprint.content as i64,
            fingerprint.expires_at
        ])?;
    }
    Ok(())
}

/// Reads the fingerprints of one scope through a read-only connection of its own, so the
/// thread that reads the source asks while the run writes checkpoints on another.
struct Reader {
    connection: Connection,
    scope: i64,
}

impl KnownFingerprints for Reader {
    fn content(&mut self, key: u64) -> Result<Option<u64>, String> {
        self.connection
            .prepare_cached("SELECT content FROM record_fingerprints WHERE scope = ?1 AND key = ?2")
            .and_then(|mut statement| {
                statement
                    .query_row(params![self.scope, key as i64], |row| row.get::<_, i64>(0))
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
            Ok(connection)
        })
        .map_err(|error| self.error(error))?;
        Ok(Box::new(Reader {
            connection,
            scope: scope(pipeline, destination),
        }))
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
