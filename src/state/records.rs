//! What CleverTap accepted of each record, for `send: changes`: the fingerprints of
//! [`crate::changes`], kept per pipeline and destination (a "scope"), written with the
//! checkpoint that settles their records, read back one key at a time while a run reads its
//! source (they live on disk: ten million of them are a few hundred MB, never in memory).

use crate::changes::RecordFingerprint;

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

/// One hash of a fingerprint's row key and content: equal for the same pair, and for
/// different pairs only by a 64-bit collision.
pub(super) fn pair_hash(row_key: i64, content: u64) -> u64 {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&row_key.to_le_bytes());
    bytes[8..].copy_from_slice(&content.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
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
}
