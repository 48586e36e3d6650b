//! File names made from pipeline names (rejects files, query snapshots, custom-list spools,
//! lock files): the name as it is when it fits, else a prefix and a hash of the whole, so a
//! file name stays within every file system's 255 bytes whatever the pipeline is called.

use std::borrow::Cow;

/// Bytes of a pipeline name kept as it is in a file name; longer names keep a prefix and
/// a hash. Leaves room for a run ID, a hash and an extension within 255 bytes.
const MAX_NAME_BYTES: usize = 120;

/// `name` as the stem of a file name: itself when it is at most [`MAX_NAME_BYTES`] long,
/// else its first bytes (cut at a character boundary), `~` and a hash of the whole name,
/// so two long names that share a prefix still name two files.
pub(crate) fn of(name: &str) -> Cow<'_, str> {
    if name.len() <= MAX_NAME_BYTES {
        return Cow::Borrowed(name);
    }
    let mut cut = MAX_NAME_BYTES - 17;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}~{:016x}", &name[..cut], hash(&[name])))
}

/// A 64-bit hash of several parts (xxh3), each ended by a byte no UTF-8 text holds.
pub(crate) fn hash(parts: &[&str]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(&[0xff]);
    }
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_name_stays_and_a_long_one_is_cut_with_its_hash() {
        assert_eq!(of("vip"), "vip");
        let long = "é".repeat(120);
        let stem = of(&long);
        assert!(stem.len() <= MAX_NAME_BYTES, "{}", stem.len());
        assert!(stem.starts_with("éé"));
        let other = format!("{}x", "é".repeat(119));
        assert_ne!(of(&other), stem, "names sharing a prefix name two files");
        // With a run ID and an extension it fits any file system's 255 bytes.
        assert!(format!("{stem}-20261204T152300Z-5042.jsonl").len() < 255);
    }
}
