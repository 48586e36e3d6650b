//! `trigger: file_arrival`: the folders the daemon watches for files, and the scan that
//! finds the files that arrived (each version sent once).

use std::path::{Path, PathBuf};

use crate::config::Pipeline;
use crate::config::model::TriggerKind;
use crate::source::arrival::{Arrival, Wanted};
use crate::source::object::Location;

use super::{Cause, Daemon, QUIET};

impl Daemon {
    /// Starts watching the folder of each `file_arrival` pipeline (a bucket is listed
    /// instead, see [`Daemon::scan_arrivals`]).
    pub(super) fn watch_arrival_folders(&mut self) {
        let folders: Vec<PathBuf> = self
            .entries
            .values()
            .filter(|entry| entry.pipeline.trigger == TriggerKind::FileArrival)
            .filter_map(|entry| {
                let pattern = entry.pipeline.source.path()?;
                if Location::is_object(pattern) {
                    return None;
                }
                pattern.parent().map(Path::to_path_buf)
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
    /// A local file still being written (changed within [`QUIET`]) is looked at again
    /// later; an object is whole once listed. A bucket is listed only when its pipeline's
    /// `poll_seconds` have passed (or its last run ended).
    pub(super) fn scan_arrivals(&mut self) {
        self.rescan_at = None;
        let now = std::time::SystemTime::now();
        let clock = tokio::time::Instant::now();
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
            let object = Location::is_object(pattern);
            if let Some(entry) = self.entries.get_mut(&file) {
                if object && entry.next_poll.is_some_and(|due| due > clock) {
                    continue;
                }
                entry.next_poll = pipeline.source.poll().map(|every| clock + every);
            }
            let (store, handled) = (&self.store, &mut self.handled);
            let mut unreadable = None;
            let mut known = |arrival: &Arrival| {
                let key = handled_key(&pipeline.name, arrival);
                if handled.contains(&key) {
                    return true;
                }
                match store.has_arrived(&pipeline.name, arrival) {
                    Ok(true) => {
                        handled.insert(key);
                        true
                    }
                    Ok(false) => false,
                    Err(error) => {
                        unreadable.get_or_insert(error);
                        true
                    }
                }
            };
            let arrivals = crate::source::arrival::matching(pattern, &mut known, Wanted::Oldest);
            if let Some(error) = unreadable {
                tracing::warn!(pipeline = %pipeline.name, %error, "cannot read arrivals");
                continue;
            }
            let arrivals = match arrivals {
                Ok(arrivals) => arrivals,
                Err(error) => {
                    tracing::warn!(pipeline = %pipeline.name, %error, "cannot list arrived files");
                    continue;
                }
            };
            let Some(arrival) = arrivals.into_iter().next() else {
                continue;
            };
            let age = now.duration_since(arrival.modified).unwrap_or_default();
            if !object && age < QUIET {
                let later = tokio::time::Instant::now() + (QUIET - age);
                self.rescan_at = Some(self.rescan_at.map_or(later, |at| at.min(later)));
                continue;
            }
            tracing::info!(pipeline = %pipeline.name, file = %arrival.path.display(), "file arrived");
            let mut one = pipeline.clone();
            one.source.set_path(arrival.path.clone());
            self.start(&file, one, Cause::Arrival(arrival), None);
        }
        self.publish();
    }

    /// When the next bucket (or polled folder) is due to be listed.
    pub(super) fn next_poll(&self) -> Option<tokio::time::Instant> {
        self.entries
            .values()
            .filter(|entry| entry.pipeline.trigger == TriggerKind::FileArrival && !entry.running)
            .filter_map(|entry| entry.next_poll)
            .min()
    }
}

/// What the daemon remembers of an arrival it knows was handled, so a listing of many
/// objects asks the store only about new ones: 8 bytes each.
fn handled_key(pipeline: &str, arrival: &Arrival) -> u64 {
    let modified = arrival
        .modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    xxhash_rust::xxh3::xxh3_64(
        format!(
            "{pipeline}\n{}\n{}\n{modified}\n{}",
            arrival.path.display(),
            arrival.size,
            arrival.version
        )
        .as_bytes(),
    )
}
