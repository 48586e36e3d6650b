//! `trigger: file_arrival`: the folders the daemon watches for files, and the scan that
//! finds the files that arrived (each version sent once).

use std::path::{Path, PathBuf};

use crate::config::Pipeline;
use crate::config::model::TriggerKind;

use super::{Cause, Daemon, QUIET};

impl Daemon {
    /// Starts watching the folder of each `file_arrival` pipeline.
    pub(super) fn watch_arrival_folders(&mut self) {
        let folders: Vec<PathBuf> = self
            .entries
            .values()
            .filter(|entry| entry.pipeline.trigger == TriggerKind::FileArrival)
            .filter_map(|entry| {
                entry
                    .pipeline
                    .source
                    .path()?
                    .parent()
                    .map(Path::to_path_buf)
            })
            .collect();
        for folder in folders {
            if self.arrival_folders.contains(&folder) {
                continue;
            }
            match self.watcher.add(&folder) {
                Ok(()) => {
                    self.arrival_folders.insert(folder);
                }
                Err(error) => {
                    tracing::error!(folder = %folder.display(), %error, "cannot watch the folder files arrive in")
                }
            }
        }
    }

    /// Starts a run for the oldest file that arrived for each idle `file_arrival` pipeline.
    /// A file still being written (changed within [`QUIET`]) is looked at again later.
    pub(super) fn scan_arrivals(&mut self) {
        self.rescan_at = None;
        let now = std::time::SystemTime::now();
        let idle: Vec<(PathBuf, Pipeline)> = self
            .entries
            .iter()
            .filter(|(_, entry)| {
                entry.pipeline.trigger == TriggerKind::FileArrival && !entry.running
            })
            .map(|(file, entry)| (file.clone(), entry.pipeline.clone()))
            .collect();
        for (file, pipeline) in idle {
            let Some(pattern) = pipeline.source.path() else {
                continue;
            };
            let arrivals = match crate::source::arrival::matching(pattern) {
                Ok(arrivals) => arrivals,
                Err(error) => {
                    tracing::warn!(pipeline = %pipeline.name, %error, "cannot list arrived files");
                    continue;
                }
            };
            for arrival in arrivals {
                match self.store.has_arrived(&pipeline.name, &arrival) {
                    Ok(false) => {}
                    Ok(true) => continue,
                    Err(error) => {
                        tracing::warn!(pipeline = %pipeline.name, %error, "cannot read arrivals");
                        break;
                    }
                }
                let age = now.duration_since(arrival.modified).unwrap_or_default();
                if age < QUIET {
                    let later = tokio::time::Instant::now() + (QUIET - age);
                    self.rescan_at = Some(self.rescan_at.map_or(later, |at| at.min(later)));
                    break;
                }
                tracing::info!(pipeline = %pipeline.name, file = %arrival.path.display(), "file arrived");
                let mut one = pipeline.clone();
                one.source.set_path(arrival.path.clone());
                self.start(&file, one, Cause::Arrival(arrival), None);
                break;
            }
        }
        self.publish();
    }
}
