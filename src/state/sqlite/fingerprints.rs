//! `send: changes` in the embedded store: the journal written with each checkpoint, merged
//! into `record_fingerprints` when a run ends, and read back through a connection of its
//! own into the snapshot of [`records`](super::super::records).

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::super::records::{
    IN_MEMORY_FINGERPRINTS, JournalEntry, MERGE_CHUNK, Snapshot, pair_hash, row_key, scope,
};
use super::super::{DATABASE_FILE, StateError};
use super::SqliteStore;
use crate::changes::{KnownFingerprints, RecordFingerprint};

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
    let entries = JournalEntry::pack(scope, fingerprints);
    transaction
        .prepare_cached("INSERT INTO fingerprint_journal (scope, entries) VALUES (?1, ?2)")?
        .execute(params![scope, entries])?;
    Ok(())
}

/// Writes entries into the table in key order; for a key written twice, the later wins.
fn merge_sorted(
    transaction: &rusqlite::Transaction<'_>,
    scope: i64,
    entries: &mut Vec<JournalEntry>,
) -> rusqlite::Result<()> {
    // Stable: entries of one key keep the order they were written in.
    entries.sort_by_key(|entry| entry.key);
    let mut insert = transaction.prepare_cached(
        "INSERT OR REPLACE INTO record_fingerprints (key, scope, content, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for entry in entries.drain(..) {
        insert.execute(params![entry.key, scope, entry.content, entry.expires_at])?;
    }
    Ok(())
}

/// Reads the fingerprints of one scope through a read-only connection of its own, so the
/// thread that reads the source asks while the run writes checkpoints on another. It reads
/// one snapshot, taken at its first lookup (what earlier runs accepted; this run's records
/// are judged already).
///
/// The question is only ever "was this key accepted with this content?", so the snapshot is
/// held as one 64-bit hash of each (key, content) pair, sorted and indexed by its top bits:
/// 8 bytes a fingerprint, and a lookup touches one or two cache lines. A scope larger than
/// [`IN_MEMORY_FINGERPRINTS`] has its lowest keys in memory and the others looked up in the
/// table, so memory stays bounded whatever its size.
struct Reader {
    connection: Connection,
    scope: i64,
    snapshot: Option<Snapshot>,
}

/// The reader's page cache while it loads (the scan needs none) and, for a scope larger than
/// memory, for the keys beyond it, in KiB.
const LOADING_CACHE_KIB: i64 = 2 * 1024;
const READER_CACHE_KIB: i64 = 24 * 1024;

impl Reader {
    fn load(&mut self) -> rusqlite::Result<Snapshot> {
        self.connection.execute_batch("BEGIN")?;
        let count: i64 = self.connection.query_row(
            "SELECT count(*) FROM record_fingerprints WHERE scope = ?1",
            params![self.scope],
            |row| row.get(0),
        )?;
        let mut pairs = Vec::with_capacity((count.max(0) as usize).min(IN_MEMORY_FINGERPRINTS));
        let mut covers_up_to = None;
        {
            let mut statement = self.connection.prepare(
                "SELECT key, content FROM record_fingerprints WHERE scope = ?1 ORDER BY key",
            )?;
            let mut rows = statement.query(params![self.scope])?;
            let mut last_key = None;
            while let Some(row) = rows.next()? {
                if pairs.len() == IN_MEMORY_FINGERPRINTS {
                    covers_up_to = last_key;
                    break;
                }
                let key = row.get::<_, i64>(0)?;
                pairs.push(pair_hash(key, row.get::<_, i64>(1)? as u64));
                last_key = Some(key);
            }
        }
        if covers_up_to.is_some() {
            self.connection
                .pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
        }
        Ok(Snapshot::of(pairs, covers_up_to))
    }
}

impl KnownFingerprints for Reader {
    fn holds(&mut self, key: u64, content: u64) -> Result<bool, String> {
        if self.snapshot.is_none() {
            self.snapshot = Some(self.load().map_err(|error| error.to_string())?);
        }
        let snapshot = self.snapshot.as_ref().expect("loaded above");
        let row_key = row_key(self.scope, key);
        if let Some(held) = snapshot.holds(row_key, content) {
            return Ok(held);
        }
        self.connection
            .prepare_cached("SELECT content FROM record_fingerprints WHERE key = ?1")
            .and_then(|mut statement| {
                statement
                    .query_row(params![row_key], |row| row.get::<_, i64>(0))
                    .optional()
            })
            .map(|found| found == Some(content as i64))
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
            connection.pragma_update(None, "cache_size", -LOADING_CACHE_KIB)?;
            Ok(connection)
        })
        .map_err(|error| self.error(error))?;
        Ok(Box::new(Reader {
            connection,
            scope: scope(pipeline, destination),
            snapshot: None,
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
            let mut merged = 0;
            let mut entries = Vec::new();
            {
                let mut rows = transaction.prepare(
                    "SELECT entries FROM fingerprint_journal WHERE scope = ?1 ORDER BY id",
                )?;
                let mut rows = rows.query(params![scope])?;
                while let Some(row) = rows.next()? {
                    let bytes = row.get_ref(0)?.as_blob()?;
                    for entry in JournalEntry::read_all(bytes) {
                        entries.push(entry);
                        merged += 1;
                        if entries.len() == MERGE_CHUNK {
                            merge_sorted(&transaction, scope, &mut entries)?;
                        }
                    }
                }
            }
            merge_sorted(&transaction, scope, &mut entries)?;
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
            Ok(merged)
        })();
        result.map_err(|error| self.error(error))
    }

    /// Drops every fingerprint of `pipeline` (at every destination, and the scopes of single
    /// arrived files that an older tapline kept, `pipeline/file`); returns how many.
    pub fn forget_fingerprints(&mut self, pipeline: &str) -> Result<u64, StateError> {
        const SCOPES: &str = "SELECT scope FROM fingerprint_scopes
            WHERE pipeline = ?1 OR substr(pipeline, 1, length(?1) + 1) = ?1 || '/'";
        let result = (|| {
            let transaction = self.connection.transaction()?;
            let forgotten = transaction.execute(
                &format!("DELETE FROM record_fingerprints WHERE scope IN ({SCOPES})"),
                params![pipeline],
            )?;
            transaction.execute(
                &format!("DELETE FROM fingerprint_journal WHERE scope IN ({SCOPES})"),
                params![pipeline],
            )?;
            transaction.execute(
                &format!("DELETE FROM fingerprint_scopes WHERE scope IN ({SCOPES})"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_accepted_twice_keeps_what_was_accepted_last() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let print = |content| RecordFingerprint {
            key: 1,
            content,
            expires_at: None,
        };
        for content in [10, 20] {
            let transaction = store.connection.transaction().unwrap();
            insert(&transaction, ("p", "d"), &[print(content)]).unwrap();
            transaction.commit().unwrap();
        }
        assert_eq!(store.merge_fingerprints("p", "d").unwrap(), 2);
        let mut known = store.known_fingerprints("p", "d").unwrap();
        assert!(known.holds(1, 20).unwrap());
        assert!(!known.holds(1, 10).unwrap());
    }

    #[test]
    fn a_large_snapshot_finds_every_accepted_pair_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let prints: Vec<RecordFingerprint> = (0..50_000_u64)
            .map(|n| RecordFingerprint {
                key: xxhash_rust::xxh3::xxh3_64(&n.to_le_bytes()),
                content: n * 7,
                expires_at: None,
            })
            .collect();
        let transaction = store.connection.transaction().unwrap();
        insert(&transaction, ("p", "d"), &prints).unwrap();
        transaction.commit().unwrap();
        store.merge_fingerprints("p", "d").unwrap();
        let mut known = store.known_fingerprints("p", "d").unwrap();
        for print in &prints {
            assert!(known.holds(print.key, print.content).unwrap());
            assert!(!known.holds(print.key, print.content + 1).unwrap());
            assert!(!known.holds(print.key ^ 1, print.content).unwrap());
        }
    }
}
