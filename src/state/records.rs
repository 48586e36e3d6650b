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
pub(super) fn row_key(scope: i64, key: u64) -> i64 {
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
    let entries = JournalEntry::pack(scope, fingerprints);
    transaction
        .prepare_cached("INSERT INTO fingerprint_journal (scope, entries) VALUES (?1, ?2)")?
        .execute(params![scope, entries])?;
    Ok(())
}

/// One fingerprint in the journal: 24 bytes, little-endian, packed by the thousand into one
/// row per checkpoint (a row per fingerprint cost a microsecond each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JournalEntry {
    pub(super) key: i64,
    pub(super) content: i64,
    pub(super) expires_at: Option<i64>,
}

impl JournalEntry {
    pub(super) const BYTES: usize = 24;
    /// `expires_at` of a fingerprint that never expires.
    const NEVER: i64 = i64::MIN;

    /// The journal bytes of the fingerprints of accepted records in `scope`.
    pub(super) fn pack(scope: i64, fingerprints: &[RecordFingerprint]) -> Vec<u8> {
        let mut entries = Vec::with_capacity(fingerprints.len() * Self::BYTES);
        for fingerprint in fingerprints {
            JournalEntry {
                key: row_key(scope, fingerprint.key),
                content: fingerprint.content as i64,
                expires_at: fingerprint.expires_at,
            }
            .write(&mut entries);
        }
        entries
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key.to_le_bytes());
        out.extend_from_slice(&self.content.to_le_bytes());
        out.extend_from_slice(&self.expires_at.unwrap_or(Self::NEVER).to_le_bytes());
    }

    /// The entries of a journal row; a torn tail (never written so) is ignored.
    pub(super) fn read_all(bytes: &[u8]) -> impl Iterator<Item = JournalEntry> + '_ {
        bytes.chunks_exact(Self::BYTES).map(|entry| {
            let field =
                |at: usize| i64::from_le_bytes(entry[at..at + 8].try_into().expect("8 bytes"));
            JournalEntry {
                key: field(0),
                content: field(8),
                expires_at: Some(field(16)).filter(|expires| *expires != Self::NEVER),
            }
        })
    }
}

/// Journal entries sorted and written at once, at most (24 MiB): a larger journal is merged
/// in several sorted passes.
pub(super) const MERGE_CHUNK: usize = 1 << 20;

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

/// What a reader loaded at its first lookup.
pub(super) struct Snapshot {
    /// The pair hashes, sorted.
    pairs: Vec<u64>,
    /// Where the pairs whose top `bucket_bits` bits are `b` start: `buckets[b]..buckets[b + 1]`.
    buckets: Vec<u32>,
    /// About eight pairs a bucket, at most [`MAX_BUCKET_BITS`] bits.
    bucket_bits: u32,
    /// The highest row key the pairs cover when the scope had more; `None` when they hold
    /// every fingerprint of the scope.
    covers_up_to: Option<i64>,
}

/// Fingerprints a reader holds in memory at most (8 bytes each: 96 MiB), so the run's
/// memory stays bounded whatever the scope's size.
pub(super) const IN_MEMORY_FINGERPRINTS: usize = 12 << 20;

/// The most top bits of a pair hash that index [`Snapshot::buckets`] (4 MiB of offsets).
const MAX_BUCKET_BITS: u32 = 20;

/// The reader's page cache while it loads (the scan needs none) and, for a scope larger than
/// memory, for the keys beyond it, in KiB.
const LOADING_CACHE_KIB: i64 = 2 * 1024;
const READER_CACHE_KIB: i64 = 24 * 1024;

/// One hash of a fingerprint's row key and content: equal for the same pair, and for
/// different pairs only by a 64-bit collision.
pub(super) fn pair_hash(row_key: i64, content: u64) -> u64 {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&row_key.to_le_bytes());
    bytes[8..].copy_from_slice(&content.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

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

/// The bucket of a pair hash: its top `bits` bits.
fn bucket_of(pair: u64, bits: u32) -> usize {
    pair.checked_shr(64 - bits).unwrap_or(0) as usize
}

impl Snapshot {
    /// The snapshot of the pair hashes of the lowest row keys of a scope, up to
    /// `covers_up_to` (`None`: all of them).
    pub(super) fn of(mut pairs: Vec<u64>, covers_up_to: Option<i64>) -> Snapshot {
        pairs.sort_unstable();
        let bucket_bits = (pairs.len() / 8).max(1).ilog2().min(MAX_BUCKET_BITS);
        let mut buckets = vec![0_u32; (1 << bucket_bits) + 1];
        let mut at = 0;
        for (bucket, start) in buckets.iter_mut().enumerate() {
            while at < pairs.len() && bucket_of(pairs[at], bucket_bits) < bucket {
                at += 1;
            }
            *start = at as u32;
        }
        Snapshot {
            pairs,
            buckets,
            bucket_bits,
            covers_up_to,
        }
    }

    /// Whether the pair is held: `Some` from memory, `None` when its row key lies beyond
    /// what the snapshot covers (the table must be asked).
    pub(super) fn holds(&self, row_key: i64, content: u64) -> Option<bool> {
        self.covers_up_to
            .is_none_or(|last| row_key <= last)
            .then(|| self.contains(pair_hash(row_key, content)))
    }

    fn contains(&self, pair: u64) -> bool {
        let bucket = bucket_of(pair, self.bucket_bits);
        let (start, end) = (
            self.buckets[bucket] as usize,
            self.buckets[bucket + 1] as usize,
        );
        self.pairs[start..end].contains(&pair)
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
    fn journal_entries_pack_and_unpack() {
        let entries = [
            JournalEntry {
                key: -5,
                content: i64::MAX,
                expires_at: None,
            },
            JournalEntry {
                key: 7,
                content: 0,
                expires_at: Some(1_800_000_000),
            },
        ];
        let mut bytes = Vec::new();
        for entry in &entries {
            entry.write(&mut bytes);
        }
        assert_eq!(bytes.len(), 2 * JournalEntry::BYTES);
        assert_eq!(JournalEntry::read_all(&bytes).collect::<Vec<_>>(), entries);
    }

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
