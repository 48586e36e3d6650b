//! The daemon's folder of pipelines: loading every file, reloading one that changed (a
//! broken edit keeps its last valid version scheduled), and watching the folder, again when
//! it is deleted, made anew or swapped.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::config::model::Schedule;
use crate::config::{Credentials, Pipeline};
use crate::{config, scheduler};

use super::{Daemon, Entry, fire_in_zone, schedule_key, watch};

impl Daemon {
    /// Loads every pipeline file again. A file that loads replaces its entry (keeping its
    /// next fire when its schedule is unchanged); one that does not keeps the last valid
    /// version; a file that is gone is unscheduled (a run in progress finishes).
    pub(super) fn reload(&mut self, now: DateTime<Utc>) {
        self.clients.clear();
        self.rearm_folder_watch_if_replaced();
        let files = if self.watched_dir.is_none() {
            // The folder is gone: so are its pipelines, until it comes back.
            Vec::new()
        } else {
            let (files, problems) = config::discover(std::slice::from_ref(&self.options.dir));
            if !problems.is_empty() {
                for problem in problems {
                    tracing::error!("{problem}");
                }
                return;
            }
            files
        };
        let credentials = match self.options.sandbox {
            Some(_) => Credentials::Ignore,
            None => Credentials::Resolve,
        };
        for file in &files {
            let mut loaded = config::load_pipeline(file, credentials);
            if let (Some(pipeline), Some(sandbox)) = (&mut loaded.pipeline, &self.options.sandbox) {
                pipeline
                    .connection
                    .account_id
                    .clone_from(&sandbox.account_id);
                pipeline.connection.passcode = config::Secret::new(&sandbox.passcode);
                pipeline.connection.base_url.clone_from(&sandbox.base_url);
            }
            let report: String = loaded
                .diagnostics
                .iter()
                .map(|diagnostic| format!("{diagnostic}\n"))
                .collect();
            let new_report = self.reported.get(file) != Some(&report);
            if new_report {
                for diagnostic in &loaded.diagnostics {
                    if diagnostic.is_error() {
                        tracing::error!(file = %file.display(), "{diagnostic}");
                    } else {
                        tracing::warn!(file = %file.display(), "{diagnostic}");
                    }
                }
                self.reported.insert(file.clone(), report);
            }
            match loaded.pipeline {
                Some(pipeline) => {
                    if self.broken.remove(file) {
                        tracing::info!(file = %file.display(), "the file is valid again");
                    }
                    self.upsert(file, pipeline, now);
                }
                None => {
                    self.broken.insert(file.clone());
                    if new_report && self.entries.contains_key(file) {
                        tracing::warn!(
                            file = %file.display(),
                            "the file has errors; its last valid version stays scheduled"
                        );
                    }
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .entries
            .keys()
            .filter(|file| !files.contains(file))
            .cloned()
            .collect();
        for file in gone {
            if let Some(entry) = self.entries.remove(&file) {
                tracing::info!(pipeline = %entry.pipeline.name, "pipeline file removed: unscheduled");
            }
            self.reported.remove(&file);
            self.broken.remove(&file);
        }
        self.watch_arrival_folders();
        self.publish();
    }

    /// Watches the pipeline folder again when it is another folder than the one watched:
    /// deleted and made again, or swapped in with `mv` or a symlink flip.
    pub(super) fn rearm_folder_watch_if_replaced(&mut self) {
        if watch::identity(&self.options.dir) != self.watched_dir {
            self.rearm_folder_watch();
        }
    }

    /// Watches the pipeline folder afresh (SIGHUP, or it was replaced); notes it when the
    /// folder is gone.
    pub(super) fn rearm_folder_watch(&mut self) {
        let now = watch::identity(&self.options.dir);
        let dir = self.options.dir.clone();
        if self.watched_dir.is_some() {
            self.watcher.remove(&dir);
        }
        match now {
            Some(_) => match self.watcher.add(&dir) {
                Ok(()) => {
                    if now != self.watched_dir {
                        tracing::warn!(dir = %dir.display(), "the pipelines folder was replaced; watching the new one");
                    }
                }
                Err(error) => {
                    tracing::error!(dir = %dir.display(), %error, "cannot watch the pipelines folder; edits are seen only at SIGHUP")
                }
            },
            None if self.watched_dir.is_some() => {
                tracing::error!(dir = %dir.display(), "the pipelines folder is gone: its pipelines are unscheduled until it comes back");
            }
            None => {}
        }
        self.watched_dir = now;
        self.canonical_dir = std::fs::canonicalize(&dir).ok();
    }

    /// Whether a changed path is the pipeline folder itself (seen from the folder around it).
    pub(super) fn is_pipeline_folder(&self, path: &Path) -> bool {
        path == self.absolute_dir
            || path == self.options.dir
            || self.canonical_dir.as_deref() == Some(path)
    }

    /// Whether a changed path is something else in the folder around the pipeline folder
    /// (and not in a folder files arrive in).
    pub(super) fn is_beside_pipeline_folder(&self, path: &Path) -> bool {
        let parent = path.parent();
        parent.is_some()
            && parent == self.absolute_dir.parent()
            && !parent.is_some_and(|parent| self.arrival_folders.contains(parent))
    }

    /// Whether a changed path is a pipeline file or `connections.yaml` of the folder.
    pub(super) fn is_pipeline_file(&self, path: &Path) -> bool {
        let in_folder = path.parent().is_some_and(|parent| {
            parent == self.options.dir || std::fs::canonicalize(parent).ok() == self.canonical_dir
        });
        in_folder && watch::is_config(path)
    }

    pub(super) fn upsert(&mut self, file: &Path, pipeline: Pipeline, now: DateTime<Utc>) {
        let next_fire = |schedule: Option<&Schedule>| {
            schedule.and_then(|schedule| scheduler::next_fire(schedule, now))
        };
        match self.entries.get_mut(file) {
            Some(entry) => {
                let same_schedule = schedule_key(entry.pipeline.schedule.as_ref())
                    == schedule_key(pipeline.schedule.as_ref());
                if !same_schedule {
                    entry.next_fire = next_fire(pipeline.schedule.as_ref());
                    let next_fire = fire_in_zone(pipeline.schedule.as_ref(), entry.next_fire);
                    tracing::info!(pipeline = %pipeline.name, next_fire, "schedule changed");
                }
                entry.pipeline = pipeline;
            }
            None => {
                let fire = next_fire(pipeline.schedule.as_ref());
                match fire {
                    Some(_) => {
                        let next_fire = fire_in_zone(pipeline.schedule.as_ref(), fire);
                        tracing::info!(pipeline = %pipeline.name, next_fire, "pipeline scheduled")
                    }
                    None => {
                        tracing::info!(pipeline = %pipeline.name, "pipeline loaded (no schedule: runs only with `tapline run`)")
                    }
                }
                self.entries.insert(
                    file.to_path_buf(),
                    Entry {
                        pipeline,
                        next_fire: fire,
                        running: false,
                        queued: None,
                        next_poll: None,
                        listing: false,
                    },
                );
            }
        }
    }
}
