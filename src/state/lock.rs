//! The per-pipeline lock: with the embedded store an OS file lock, released when the process
//! dies; with the shared store a lease in the database, renewed by a heartbeat and lost when
//! it stops (see `postgres::coordinator`).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use super::StateError;
use super::postgres::Lease;

/// Held while a pipeline runs; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct PipelineLock {
    _held: Held,
}

#[derive(Debug)]
enum Held {
    File(#[allow(dead_code, reason = "held for its lock, never read")] File),
    Lease(#[allow(dead_code, reason = "held for its lease, never read")] Lease),
}

/// What taking a pipeline's lock does when another process holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Refuses at once: the daemon looking for runs that a dead process left, `state forget`.
    No,
    /// Waits while the holder may be dead (its lease is not renewed) for the lease to
    /// expire, then takes it; refuses as soon as the holder renews it. Only a shared store's
    /// lease waits: a file lock is released the moment its process dies.
    ForADeadHolder,
}

impl PipelineLock {
    /// The lock a shared store's lease is.
    pub(super) fn lease(lease: Lease) -> Self {
        PipelineLock {
            _held: Held::Lease(lease),
        }
    }
}

impl PipelineLock {
    /// Takes `<folder>/<pipeline>.lock`, or says who holds it.
    pub(super) fn acquire(folder: &Path, pipeline: &str) -> Result<Self, StateError> {
        std::fs::create_dir_all(folder).map_err(|source| StateError::Io {
            path: folder.to_path_buf(),
            source,
        })?;
        let path = folder.join(format!("{}.lock", crate::file_stem::of(pipeline)));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StateError::Io {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(PipelineLock {
                _held: Held::File(file),
            }),
            Err(TryLockError::WouldBlock) => Err(StateError::Busy {
                pipeline: pipeline.to_string(),
                lock: path,
            }),
            Err(TryLockError::Error(source)) => Err(StateError::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = PipelineLock::acquire(dir.path(), "vip").unwrap();
        let refused = PipelineLock::acquire(dir.path(), "vip").unwrap_err();
        assert!(matches!(refused, StateError::Busy { .. }), "{refused}");
        assert!(refused.to_string().contains("already running"));
        // Another pipeline is not affected.
        PipelineLock::acquire(dir.path(), "events").unwrap();
        drop(first);
        PipelineLock::acquire(dir.path(), "vip").unwrap();
    }
}
