//! Watching the pipeline folder: the folder, not the files, because editors save by writing
//! a new file and renaming it over the old one. Events arrive as they happen (inotify, no
//! polling); the daemon gathers a burst of them into one reload ([`DEBOUNCE`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// How long after the last change of a burst the daemon reloads.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches a folder until dropped.
pub struct Watcher {
    _watcher: RecommendedWatcher,
}

/// Starts watching `dir`; the paths of each change to a `.yaml`/`.yml` file (pipelines,
/// `connections.yaml`) arrive on the receiver.
pub fn watch(dir: &Path) -> notify::Result<(Watcher, mpsc::UnboundedReceiver<Vec<PathBuf>>)> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        match result {
            // Reading a file is an event too (the daemon's own reloads): only creations,
            // changes and removals count.
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                let paths: Vec<PathBuf> =
                    event.paths.into_iter().filter(|p| is_config(p)).collect();
                if !paths.is_empty() {
                    let _ = sender.send(paths);
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "watching the pipeline folder"),
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok((Watcher { _watcher: watcher }, receiver))
}

fn is_config(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("yaml" | "yml")
    )
}
