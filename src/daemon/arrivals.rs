//! `trigger: file_arrival`: the folders the daemon watches for files, the bucket prefixes it
//! lists every `poll_seconds`, and the scan that finds what arrived (each version sent once).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// later. A bucket is listed off the daemon's loop ([`list_bucket`]) when its pipeline's
    /// `poll_seconds` have passed (or its last run ended); what it finds comes back as a
    /// [`Listed`].
    pub(super) fn scan_arrivals(&mut self) {
        self.rescan_at = None;
        let clock = tokio::time::Instant::now();
        let idle: Vec<(PathBuf, Pipeline)> = self
            .entries
            .iter()
            .filter(|(_, entry)| {
                entry.pipeline.trigger == TriggerKind::FileArrival
                    && !entry.running
                    && !entry.listing
            })
            .map(|(file, entry)| (file.clone(), entry.pipeline.clone()))
            .collect();
        for (file, pipeline) in idle {
            let Some(pattern) = pipeline.source.path().map(Path::to_path_buf) else {
                continue;
            };
            let object = Location::is_object(&pattern);
            let Some(entry) = self.entries.get_mut(&file) else {
                continue;
            };
            if object && entry.next_poll.is_some_and(|due| due > clock) {
                continue;
            }
            entry.next_poll = pipeline.source.poll().map(|every| clock + every);
            if object {
                entry.listing = true;
                self.list_bucket_of(file, &pipeline.name, pattern);
            } else {
                self.scan_folder(&file, pipeline, &pattern);
            }
        }
        self.publish();
    }

    /// Starts listing the bucket prefix of the pipeline in `file` on a thread of its own.
    fn list_bucket_of(&self, file: PathBuf, pipeline: &str, pattern: PathBuf) {
        let known = self.handled.get(pipeline).cloned();
        let (store, sender) = (self.options.state.store.clone(), self.listed.0.clone());
        let name = pipeline.to_string();
        std::thread::spawn(move || {
            let listed = list_bucket(&store, (&name, &pattern), known);
            let _ = sender.send(Listed { file, ..listed });
        });
    }

    /// Looks in a local folder for the oldest file that arrived for the pipeline in `file`,
    /// and starts its run once it has been quiet for [`QUIET`].
    fn scan_folder(&mut self, file: &Path, pipeline: Pipeline, pattern: &Path) {
        let known = Arc::make_mut(self.handled.entry(pipeline.name.clone()).or_default());
        let store = &self.store;
        let mut unreadable = None;
        let mut handled = |arrival: &Arrival| {
            let key = handled_key(arrival);
            if known.contains(&key) {
                return true;
            }
            match store.has_arrived(&pipeline.name, arrival) {
                Ok(true) => {
                    known.insert(key);
                    true
                }
                Ok(false) => false,
                Err(error) => {
                    unreadable.get_or_insert(error);
                    true
                }
            }
        };
        let arrivals = crate::source::arrival::matching(pattern, &mut handled, Wanted::Oldest(1));
        if let Some(error) = unreadable {
            tracing::warn!(pipeline = %pipeline.name, %error, "cannot read arrivals");
            return;
        }
        let arrival = match arrivals {
            Ok(arrivals) => arrivals.into_iter().next(),
            Err(error) => {
                tracing::warn!(pipeline = %pipeline.name, %error, "cannot list arrived files");
                return;
            }
        };
        let Some(arrival) = arrival else {
            return;
        };
        let age = std::time::SystemTime::now()
            .duration_since(arrival.modified)
            .unwrap_or_default();
        if age < QUIET {
            let later = tokio::time::Instant::now() + (QUIET - age);
            self.rescan_at = Some(self.rescan_at.map_or(later, |at| at.min(later)));
            return;
        }
        self.arrived(file, pipeline, arrival);
    }

    /// Takes what a bucket listing found: remembers what the store said was handled, and
    /// starts a run for the oldest new object.
    pub(super) fn listed(&mut self, listed: Listed) {
        let Some(entry) = self.entries.get_mut(&listed.file) else {
            return;
        };
        entry.listing = false;
        // The next listing `poll_seconds` after this one ended, however long it took.
        entry.next_poll = entry
            .pipeline
            .source
            .poll()
            .map(|every| tokio::time::Instant::now() + every);
        let pipeline = entry.pipeline.clone();
        let known = Arc::make_mut(self.handled.entry(pipeline.name.clone()).or_default());
        known.extend(listed.learned);
        match listed.outcome {
            Ok(Some(arrival)) if !self.stopping => self.arrived(&listed.file, pipeline, arrival),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(pipeline = %pipeline.name, %error, "cannot list arrived files")
            }
        }
        self.publish();
    }

    /// Starts the run of one arrived file.
    fn arrived(&mut self, file: &Path, pipeline: Pipeline, arrival: Arrival) {
        tracing::info!(pipeline = %pipeline.name, file = %arrival.path.display(), "file arrived");
        let mut one = pipeline;
        one.source.set_path(arrival.path.clone());
        self.start(file, one, Cause::Arrival(arrival), None);
    }

    /// When the next bucket (or polled folder) is due to be listed.
    pub(super) fn next_poll(&self) -> Option<tokio::time::Instant> {
        self.entries
            .values()
            .filter(|entry| {
                entry.pipeline.trigger == TriggerKind::FileArrival
                    && !entry.running
                    && !entry.listing
            })
            .filter_map(|entry| entry.next_poll)
            .min()
    }
}

/// What a bucket listing found for one pipeline file.
pub(super) struct Listed {
    file: PathBuf,
    /// Arrivals the store said were handled ([`handled_key`]s), to remember.
    learned: Vec<u64>,
    /// The oldest object not handled yet, or why the bucket or the store could not be read.
    outcome: Result<Option<Arrival>, String>,
}

/// How many of the oldest objects a listing does not know are kept, to be asked of the
/// store in turn: enough that objects another daemon handled meanwhile do not hold up the
/// rest.
const CANDIDATES: usize = 16;

/// Lists a bucket prefix for `pipeline` on a thread of its own (a listing of many objects
/// takes seconds, and the daemon's loop goes on meanwhile). `known` holds the arrivals the
/// daemon knows were handled; without it (the first listing), they are read from the store
/// once. Of the objects it does not know, the oldest are asked of the store one by one.
fn list_bucket(
    store: &crate::state::Location,
    (pipeline, pattern): (&str, &std::path::Path),
    known: Option<Arc<HashSet<u64>>>,
) -> Listed {
    let mut learned = Vec::new();
    let outcome = (|| {
        let store = crate::state::open(store).map_err(|error| error.to_string())?;
        let known = match known {
            Some(known) => known,
            None => {
                store
                    .arrivals(pipeline, &mut |arrival| learned.push(handled_key(&arrival)))
                    .map_err(|error| error.to_string())?;
                Arc::new(learned.iter().copied().collect())
            }
        };
        let candidates = crate::source::arrival::matching(
            pattern,
            &mut |arrival| known.contains(&handled_key(arrival)),
            Wanted::Oldest(CANDIDATES),
        )?;
        for candidate in candidates {
            if store
                .has_arrived(pipeline, &candidate)
                .map_err(|error| error.to_string())?
            {
                learned.push(handled_key(&candidate));
            } else {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    })();
    Listed {
        file: PathBuf::new(),
        learned,
        outcome,
    }
}

/// What the daemon remembers of an arrival it knows was handled (by pipeline), so a listing
/// of many objects asks the store only about new ones: 8 bytes each.
fn handled_key(arrival: &Arrival) -> u64 {
    let modified = arrival
        .modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    xxhash_rust::xxh3::xxh3_64(
        format!(
            "{}\n{}\n{modified}\n{}",
            arrival.path.display(),
            arrival.size,
            arrival.version
        )
        .as_bytes(),
    )
}
