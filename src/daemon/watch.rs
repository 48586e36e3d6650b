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
}

/// Starts watching `dir`; the paths of each change (a file created, written, renamed or
/// removed) in it, or in a folder added later, arrive on the receiver.
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
    Ok((Watcher { watcher }, receiver))
}

/// Whether a changed file is a pipeline or `connections.yaml` (else it may be an arrival).
pub fn is_config(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("yaml" | "yml")
    )
}
