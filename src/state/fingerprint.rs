//! A source file's fingerprint (size, modification time and what identifies its content:
//! a SHA-256 of a local file, an object's ETag), and the digest of what a pipeline does with
//! it.
//!
//! The content decides whether two files are the same; size and time are kept to say why a
//! checkpoint no longer applies. Checkpoints and deliveries hold both: the same file sent
//! as something else (another target, mapping or format) is not the same delivery.

use std::io::Read;
use std::path::Path;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::source::object::{self, Location, ObjectVersion};

/// A digest of everything that changes what a pipeline sends from the same file: its
/// target and operation, output mapping, custom list, source format and template metadata.
/// (The destination is part of every key already.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsDigest(pub String);

impl SettingsDigest {
    /// The digest of a description of the settings; the caller decides what it covers.
    pub fn of(description: &str) -> Self {
        SettingsDigest(hex::encode(Sha256::digest(description.as_bytes())))
    }

    /// Whether it was recorded before settings were.
    pub fn is_unknown(&self) -> bool {
        self.0.is_empty()
    }
}

/// What identifies a source file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Bytes on disk (or in the bucket).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (0 when the system has none).
    pub modified_ns: i64,
    /// The content: the SHA-256 of a local file's bytes in hex, or `etag:` and an object's
    /// ETag (the store gives an object a new one whenever it is written).
    pub content: String,
}

impl Fingerprint {
    /// A local file's, read once (streamed) to hash it; an object's, from its store (the
    /// object is not read).
    pub fn of(path: &Path) -> std::io::Result<Self> {
        if let Location::Object(url) = Location::of(path).map_err(std::io::Error::other)? {
            return object::head(&url)
                .map(|version| Fingerprint::of_object(&version))
                .map_err(|error| std::io::Error::other(error.0));
        }
        let mut file = std::fs::File::open(path)?;
        let metadata = file.metadata()?;
        let modified_ns = modified_ns(&metadata);
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 256 * 1024];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        Ok(Fingerprint {
            size: metadata.len(),
            modified_ns,
            content: hex::encode(hasher.finalize()),
        })
    }

    /// One version of an object: its size, time and ETag.
    pub fn of_object(version: &ObjectVersion) -> Self {
        Fingerprint {
            size: version.size,
            modified_ns: version
                .modified
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as i64),
            content: format!("etag:{}", version.etag),
        }
    }

    /// Whether the file at `path` still has this size and modification time (an object:
    /// this size and ETag): `false` when it was written to (or replaced) after the
    /// fingerprint was taken.
    pub fn still_matches(&self, path: &Path) -> bool {
        if let Ok(Location::Object(url)) = Location::of(path) {
            return object::head(&url).is_ok_and(|version| {
                let now = Fingerprint::of_object(&version);
                now.size == self.size && now.content == self.content
            });
        }
        std::fs::metadata(path).is_ok_and(|metadata| {
            metadata.len() == self.size && modified_ns(&metadata) == self.modified_ns
        })
    }

    /// Whether both are the same content.
    pub fn same_content(&self, other: &Fingerprint) -> bool {
        self.size == other.size && self.content == other.content
    }

    /// Why `self` (now) differs from `before`, for a warning.
    pub fn difference(&self, before: &Fingerprint) -> String {
        if self.size != before.size {
            format!("its size went from {} to {} bytes", before.size, self.size)
        } else if self.modified_ns != before.modified_ns {
            "it was modified and its content differs".to_string()
        } else {
            "its content differs".to_string()
        }
    }
}

/// The modification time in nanoseconds since the Unix epoch, 0 when the system has none.
fn modified_ns(metadata: &std::fs::Metadata) -> i64 {
    metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_same_content_whatever_the_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, "identity\n1\n").unwrap();
        let first = Fingerprint::of(&path).unwrap();
        assert_eq!(first.size, 11);
        assert_eq!(
            first.content,
            "c492687c1ee5988d337c38c4185bc7a2c28976d381a919254828c56187a595be"
        );
        let touched = Fingerprint {
            modified_ns: first.modified_ns + 1,
            ..first.clone()
        };
        assert!(touched.same_content(&first));
        std::fs::write(&path, "identity\n2\n").unwrap();
        let changed = Fingerprint::of(&path).unwrap();
        assert!(!changed.same_content(&first));
        assert_eq!(changed.size, first.size);
        std::fs::write(&path, "identity\n22\n").unwrap();
        let longer = Fingerprint::of(&path).unwrap();
        assert_eq!(
            longer.difference(&first),
            "its size went from 11 to 12 bytes"
        );
    }
}
