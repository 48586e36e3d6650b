//! The per-pipeline lock: an OS file lock, so it is released when the process dies.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use super::StateError;

/// Held while a pipeline runs; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct PipelineLock {
    _file: File,
}

impl PipelineLock {
    /// Takes `<folder>/<pipeline>.lock`, or says who holds it.
    pub(super) fn acquire(folder: &Path, pipeline: &str) -> Result<Self, StateError> {
        std::fs::create_dir_all(folder).map_err(|source| StateError::Io {
            path: folder.to_path_buf(),
            source,
        })?;
        let path = folder.join(format!("{pipeline}.lock"));
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
            Ok(()) => Ok(PipelineLock { _file: file }),
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
