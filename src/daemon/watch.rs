//! Watching folders: the pipeline folder (the folder, not the files, because editors save by
//! writing a new file and renaming it over the old one) and the folders `file_arrival`
//! pipelines read. Events arrive as they happen (inotify, no polling); the daemon gathers a
//! burst of them into one reload or scan ([`DEBOUNCE`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// How long after the last change of a burst the daemon reloads.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches folders until dropped.
pub struct Watcher {
    watcher: RecommendedWatcher,
}

impl Watcher {
    /// Watches one more folder.
    pub fn add(&mut self, dir: &Path) -> notify::Result<()> {
        self.watcher.watch(dir, RecursiveMode::NonRecursive)
    }

    /// Stops watching a folder (one that was removed or moved away is no longer watched
    /// anyway; that is no error).
    pub fn remove(&mut self, dir: &Path) {
        let _ = self.watcher.unwatch(dir);
    }
}

/// What identifies a folder on disk (device and inode): a folder deleted and made again, or
/// swapped in with `mv` or a symlink flip, is another folder under the same name.
pub fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|metadata| (metadata.dev(), metadata.ino()))
}

/// Starts watching `dir` and the folder it is in (to see `dir` itself removed, made again or
/// swapped); the paths of each change (a file created, written, renamed or removed) in
/// them, or in a folder added later, arrive on the receiver.
pub fn watch(dir: &Path) -> notify::Result<(Watcher, mpsc::UnboundedReceiver<Vec<PathBuf>>)> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        match result {
            // Reading a file is an event too (the daemon's own reloads and runs): only
            // creations, changes and removals count.
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                let _ = sender.send(event.paths);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "watching folders"),
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    if let Some(parent) = std::path::absolute(dir)
        .ok()
        .and_then(|dir| dir.parent().map(Path::to_path_buf))
    {
        // Without it the daemon still works; only a swapped folder goes unnoticed until SIGHUP.
        if let Err(error) = watcher.watch(&parent, RecursiveMode::NonRecursive) {
            tracing::warn!(folder = %parent.display(), %error, "cannot watch the folder around the pipelines folder; a swapped pipelines folder is seen only at SIGHUP");
        }
    }
    Ok((Watcher { watcher }, receiver))
}

/// Whether a changed file is a pipeline or `connections.yaml` (else it may be an arrival).
pub fn is_config(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("yaml" | "yml")
    )
}
