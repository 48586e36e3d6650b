//! Watching the pipeline folder: debounced, and on the folder, not the files, because editors
//! save by writing a new file and renaming it over the old one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// How long a burst of events is gathered into one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches `dir` until dropped.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Starts watching `dir`; each debounced burst of changes to `.yaml`/`.yml` files (pipelines,
/// `connections.yaml`) arrives on the receiver as the paths it touched.
pub fn watch(dir: &Path) -> notify::Result<(Watcher, mpsc::UnboundedReceiver<Vec<PathBuf>>)> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        match result {
            Ok(events) => {
                let mut paths: Vec<PathBuf> = events
                    .into_iter()
                    // Reading a file is an event too (the daemon's own reloads): only
                    // creations, changes and removals count.
                    .filter(|event| !matches!(event.event.kind, EventKind::Access(_)))
                    .flat_map(|event| event.event.paths)
                    .filter(|path| is_config(path))
                    .collect();
                paths.sort();
                paths.dedup();
                if !paths.is_empty() {
                    let _ = sender.send(paths);
                }
            }
            Err(errors) => {
                for error in errors {
                    tracing::warn!(%error, "watching the pipeline folder");
                }
            }
        }
    })?;
    debouncer.watch(dir, RecursiveMode::NonRecursive)?;
    Ok((
        Watcher {
            _debouncer: debouncer,
        },
        receiver,
    ))
}

fn is_config(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("yaml" | "yml")
    )
}
