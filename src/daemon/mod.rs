//! `tapline daemon`: runs a folder of pipelines on their cron schedules, reloads them when a
//! file changes or on SIGHUP, and lives under systemd.
//!
//! One task owns all the state and waits on one `select!`: the earliest fire time, a change
//! in the folder, a signal, or the end of a run. Nothing polls: between fires the process
//! sleeps. Runs go through [`runner::run`] like `tapline run`, with one [`AccountBudgets`]
//! shared by all of them, so pipelines on one CleverTap account never exceed its limit.
//! A pipeline file that fails to load is logged with its `file:line:col`, and the last valid
//! version of it stays scheduled.

mod health;
mod listener;
pub mod metrics;
mod systemd;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clevertap::Client;
use crate::config::model::Schedule;
use crate::config::model::{CatchUp, Overlap, TriggerKind};
use crate::config::{self, Credentials, Pipeline};
use crate::engine::{AccountBudgets, Delivery, NoObserver, RunSummary};
use crate::runner::{self, RunError, Trigger};
use crate::scheduler;
use crate::source::arrival::Arrival;
use crate::state::{LockWait, StateStore};
use health::Health;
use metrics::Metrics;

/// How the daemon is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The folder of pipeline files.
    pub dir: PathBuf,
    /// Where the state is kept (run history, checkpoints, last fires, rejects files).
    pub state: runner::StatePlaces,
    /// Runs older than this many days are pruned from the history.
    pub history_days: u32,
    /// How long SIGTERM waits for running uploads before it interrupts them.
    pub shutdown_timeout: Duration,
    /// Where to serve `/metrics` and `/health`.
    pub metrics_listen: Option<SocketAddr>,
    /// Sends every pipeline here instead of to its connection's CleverTap, whose secrets are
    /// then not needed (`tapline daemon --sandbox`).
    pub sandbox: Option<SandboxTarget>,
}

/// A CleverTap sandbox every pipeline is sent to.
#[derive(Debug, Clone)]
pub struct SandboxTarget {
    /// The account ID it accepts.
    pub account_id: String,
    /// The passcode it accepts.
    pub passcode: String,
    /// Its base URL.
    pub base_url: String,
}

/// A loaded pipeline and its place in the schedule.
struct Entry {
    pipeline: Pipeline,
    /// The next fire, for a pipeline with a schedule.
    next_fire: Option<DateTime<Utc>>,
    running: bool,
    /// The fire that came while it ran, with `overlap: queue`.
    queued: Option<DateTime<Utc>>,
}

/// Why the daemon starts a run.
enum Cause {
    /// The fire of the schedule due at this time (claimed by this daemon).
    Fire(DateTime<Utc>),
    /// A file arrived.
    Arrival(Arrival),
}

/// What a finished run task hands back: the pipeline file, the fire it ran for, and how it
/// went.
type Finished = (PathBuf, Option<DateTime<Utc>>, Result<RunSummary, RunError>);

/// The daemon's state, owned by its one task.
struct Daemon {
    options: Options,
    store: Box<dyn StateStore>,
    /// By pipeline file.
    entries: BTreeMap<PathBuf, Entry>,
    /// The diagnostics last logged for each file, so a reload repeats none.
    reported: HashMap<PathBuf, String>,
    /// Files whose last version had errors, to say when one is valid again.
    broken: BTreeSet<PathBuf>,
    runs: JoinSet<Finished>,
    /// The pipeline file of each run task, to find it again if the task panics.
    run_files: HashMap<tokio::task::Id, PathBuf>,
    budgets: AccountBudgets,
    metrics: Arc<Metrics>,
    /// What `/health` answers.
    health: Arc<Health>,
    /// Cancelled when the shutdown grace period ends.
    interrupt_runs: CancellationToken,
    /// The status systemd was last told.
    last_status: String,
    /// Watches the pipeline folder and the folders of `file_arrival` pipelines.
    watcher: watch::Watcher,
    /// Folders of `file_arrival` pipelines being watched.
    arrival_folders: BTreeSet<PathBuf>,
    /// When to look for arrived files again (one was still being written).
    rescan_at: Option<tokio::time::Instant>,
    /// HTTP clients by connection; emptied at each reload, as a passcode may have changed.
    clients: HashMap<String, Client>,
    /// The pipeline folder as the file system names it, to recognise its files in events.
    canonical_dir: Option<PathBuf>,
    /// The pipeline folder as given, made absolute, to recognise events about the folder itself.
    absolute_dir: PathBuf,
    /// The pipeline folder being watched ([`watch::identity`]); `None` while it is gone.
    watched_dir: Option<(u64, u64)>,
    /// SIGTERM came: runs that end start nothing new.
    stopping: bool,
}

/// A fire time as the pipeline's schedule reads it: in its zone, with the offset.
fn fire_in_zone(schedule: Option<&Schedule>, fire: Option<DateTime<Utc>>) -> String {
    match (schedule, fire) {
        (Some(schedule), Some(fire)) => scheduler::in_zone(schedule, fire),
        _ => "never".to_string(),
    }
}

/// How long a new file must stay unchanged before it counts as arrived: an exporter that
/// writes in place is still writing it.
const QUIET: Duration = Duration::from_secs(1);

/// How long an arrived file whose run could not start waits before it is tried again.
const ARRIVAL_RETRY: Duration = Duration::from_secs(30);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state store cannot be used.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// `--metrics-listen`'s address cannot be served.
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics {
        /// The address.
        address: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The pipeline folder cannot be watched.
    #[error("cannot watch `{}`: {reason}", dir.display())]
    Watch {
        /// The folder.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The signals cannot be listened for.
    #[error("cannot listen for signals: {0}")]
    Signals(#[from] std::io::Error),
    /// The built-in sandbox (`--sandbox`) cannot listen.
    #[error("cannot start the sandbox: {0}")]
    Sandbox(String),
}

/// Runs the daemon until SIGTERM or SIGINT. An error is returned only when it cannot start;
/// the command line has checked that `dir` is a folder.
pub async fn run(options: Options) -> Result<(), StartError> {
    let store = crate::state::open(&options.state.store)?;
    // With the shared store, the budgets count against slots every process shares.
    let budgets = AccountBudgets::new(store.shared_slots());
    let metrics = Arc::new(Metrics::new(budgets.clone()));
    let health = Arc::new(Health::new(options.state.store.clone()));
    if let Some(address) = options.metrics_listen {
        let bound = listener::serve(address, Arc::clone(&metrics), Arc::clone(&health))
            .await
            .map_err(|source| StartError::Metrics { address, source })?;
        tracing::info!(%bound, "serving /metrics and /health");
    }
    let (watcher, mut changes) = watch::watch(&options.dir).map_err(|error| StartError::Watch {
        dir: options.dir.clone(),
        reason: error.to_string(),
    })?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

    let canonical_dir = std::fs::canonicalize(&options.dir).ok();
    let absolute_dir = std::path::absolute(&options.dir).unwrap_or_else(|_| options.dir.clone());
    let watched_dir = watch::identity(&options.dir);
    let mut daemon = Daemon {
        options,
        store,
        entries: BTreeMap::new(),
        reported: HashMap::new(),
        broken: BTreeSet::new(),
        runs: JoinSet::new(),
        run_files: HashMap::new(),
        budgets,
        metrics,
        health,
        interrupt_runs: CancellationToken::new(),
        last_status: String::new(),
        watcher,
        arrival_folders: BTreeSet::new(),
        rescan_at: None,
        clients: HashMap::new(),
        canonical_dir,
        absolute_dir,
        watched_dir,
        stopping: false,
    };
    daemon.reload(Utc::now());
    daemon.abandon_dead_runs();
    daemon.catch_up(Utc::now());
    daemon.scan_arrivals();
    systemd::ready(&daemon.status());
    tracing::info!(
        dir = %daemon.options.dir.display(),
        pipelines = daemon.entries.len(),
        scheduled = daemon.scheduled(),
        "daemon started"
    );
    let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);
    // Files changed since the last reload, and when to reload: a burst of events (an editor
    // writes, renames, sets times) becomes one reload, `DEBOUNCE` after its last event.
    let mut changed: Vec<PathBuf> = Vec::new();
    let mut arrived = false;
    let mut reload_at: Option<tokio::time::Instant> = None;

    loop {
        let next_fire = daemon.earliest_fire();
        tokio::select! {
            () = sleep_until(next_fire) => daemon.fire_due(Utc::now()),
            Some(paths) = changes.recv() => {
                for path in paths {
                    if daemon.is_pipeline_file(&path) || daemon.is_pipeline_folder(&path) {
                        changed.push(path);
                    } else if daemon.is_beside_pipeline_folder(&path) {
                        // Something else in the folder around the pipelines folder.
                        continue;
                    } else {
                        arrived = true;
                    }
                    reload_at = Some(tokio::time::Instant::now() + watch::DEBOUNCE);
                }
            }
            () = wake_at(reload_at) => {
                reload_at = None;
                if !changed.is_empty() {
                    changed.sort();
                    changed.dedup();
                    tracing::info!(files = ?changed, "pipeline files changed; reloading");
                    changed.clear();
                    daemon.reload(Utc::now());
                }
                if std::mem::take(&mut arrived) {
                    daemon.scan_arrivals();
                }
            }
            () = wake_at(daemon.rescan_at) => daemon.scan_arrivals(),
            _ = hangup.recv() => {
                systemd::reloading();
                tracing::info!("SIGHUP: reloading every pipeline");
                daemon.reported.clear();
                daemon.rearm_folder_watch();
                daemon.reload(Utc::now());
                systemd::ready(&daemon.status());
            }
            Some(finished) = daemon.runs.join_next_with_id() => daemon.run_ended(finished),
            _ = tick(&mut watchdog) => systemd::watchdog(),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    daemon.shut_down().await;
    Ok(())
}

/// Sleeps until `when`; forever when there is nothing scheduled.
async fn sleep_until(when: Option<DateTime<Utc>>) {
    match when {
        Some(when) => {
            let wait = (when - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
        }
        None => std::future::pending().await,
    }
}

/// Wakes at `when`; never, when there is none.
async fn wake_at(when: Option<tokio::time::Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// The watchdog's next tick; never, when systemd set no watchdog.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl Daemon {
    fn scheduled(&self) -> usize {
        self.entries
            .values()
            .filter(|entry| entry.next_fire.is_some())
            .count()
    }

    fn running(&self) -> usize {
        self.entries.values().filter(|entry| entry.running).count()
    }

    /// The one-line status systemd shows.
    fn status(&self) -> String {
        format!(
            "{} pipelines scheduled, {} running",
            self.scheduled(),
            self.running()
        )
    }

    /// Tells systemd and the metrics how many pipelines are scheduled and running; systemd
    /// hears only changes.
    fn publish(&mut self) {
        let status = self.status();
        if status != self.last_status {
            systemd::status(&status);
            self.last_status = status;
        }
        self.metrics.set_load(self.scheduled(), self.running());
        self.health.set(self.entries.len(), self.stopping);
    }

    fn earliest_fire(&self) -> Option<DateTime<Utc>> {
        self.entries
            .values()
            .filter_map(|entry| entry.next_fire)
            .min()
    }

    /// Loads every pipeline file again. A file that loads replaces its entry (keeping its
    /// next fire when its schedule is unchanged); one that does not keeps the last valid
    /// version; a file that is gone is unscheduled (a run in progress finishes).
    fn reload(&mut self, now: DateTime<Utc>) {
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
    fn rearm_folder_watch_if_replaced(&mut self) {
        if watch::identity(&self.options.dir) != self.watched_dir {
            self.rearm_folder_watch();
        }
    }

    /// Watches the pipeline folder afresh (SIGHUP, or it was replaced); notes it when the
    /// folder is gone.
    fn rearm_folder_watch(&mut self) {
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
    fn is_pipeline_folder(&self, path: &Path) -> bool {
        path == self.absolute_dir
            || path == self.options.dir
            || self.canonical_dir.as_deref() == Some(path)
    }

    /// Whether a changed path is something else in the folder around the pipeline folder
    /// (and not in a folder files arrive in).
    fn is_beside_pipeline_folder(&self, path: &Path) -> bool {
        let parent = path.parent();
        parent.is_some()
            && parent == self.absolute_dir.parent()
            && !parent.is_some_and(|parent| self.arrival_folders.contains(parent))
    }

    /// Whether a changed path is a pipeline file or `connections.yaml` of the folder.
    fn is_pipeline_file(&self, path: &Path) -> bool {
        let in_folder = path.parent().is_some_and(|parent| {
            parent == self.options.dir || std::fs::canonicalize(parent).ok() == self.canonical_dir
        });
        in_folder && watch::is_config(path)
    }

    /// Marks the runs that a dead process left `running` as abandoned, for each pipeline
    /// no other process is running now (its lock is free). Their checkpoints stay: the next
    /// run resumes them (an arrived file's run starts again at once, see `scan_arrivals`).
    fn abandon_dead_runs(&self) {
        for entry in self.entries.values() {
            let name = &entry.pipeline.name;
            let Ok(_lock) = self
                .store
                .lock(name, LockWait::No, CancellationToken::new())
            else {
                continue;
            };
            match self.store.abandon_running(name) {
                Ok(0) => {}
                Ok(abandoned) => {
                    tracing::warn!(pipeline = %name, abandoned, "runs left unfinished by a process that died; marked abandoned, their checkpoints kept")
                }
                Err(error) => tracing::warn!(pipeline = %name, %error, "cannot mark dead runs"),
            }
        }
    }

    /// Starts watching the folder of each `file_arrival` pipeline.
    fn watch_arrival_folders(&mut self) {
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
    fn scan_arrivals(&mut self) {
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
                self.start(&file, one, Cause::Arrival(arrival));
                break;
            }
        }
        self.publish();
    }

    fn upsert(&mut self, file: &Path, pipeline: Pipeline, now: DateTime<Utc>) {
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
                    },
                );
            }
        }
    }

    /// `catch_up: latest`: a pipeline that missed a fire while the daemon was down runs now.
    fn catch_up(&mut self, now: DateTime<Utc>) {
        let mut due = Vec::new();
        for (file, entry) in &self.entries {
            let Some(schedule) = &entry.pipeline.schedule else {
                continue;
            };
            if schedule.catch_up != CatchUp::Latest {
                continue;
            }
            let last = match self.store.last_fire(&entry.pipeline.name) {
                Ok(Some(last)) => last,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the last fires");
                    continue;
                }
            };
            if let Some(missed) = scheduler::missed_fire(schedule, last, now) {
                let shown = scheduler::in_zone(schedule, missed);
                tracing::info!(pipeline = %entry.pipeline.name, missed = shown, "catching up a fire missed while the daemon was down");
                due.push((file.clone(), missed));
            }
        }
        for (file, missed) in due {
            self.fire(&file, missed);
        }
    }

    /// Fires every pipeline whose time has come and moves its next fire on.
    fn fire_due(&mut self, now: DateTime<Utc>) {
        let due: Vec<(PathBuf, DateTime<Utc>)> = self
            .entries
            .iter()
            .filter_map(|(file, entry)| {
                entry
                    .next_fire
                    .filter(|fire| *fire <= now)
                    .map(|fire| (file.clone(), fire))
            })
            .collect();
        for (file, fire) in due {
            if let Some(entry) = self.entries.get_mut(&file) {
                // From now, not from the fire: fires that passed while the machine slept
                // are not made up in a burst.
                entry.next_fire = entry
                    .pipeline
                    .schedule
                    .as_ref()
                    .and_then(|schedule| scheduler::next_fire(schedule, now));
            }
            self.fire(&file, fire);
        }
        self.publish();
    }

    /// Claims the fire due `at` (another daemon sharing the state store may have claimed
    /// it: then it is that daemon's), and starts its run, or skips or queues it when the
    /// pipeline is still running.
    fn fire(&mut self, file: &Path, at: DateTime<Utc>) {
        let Some(entry) = self.entries.get_mut(file) else {
            return;
        };
        let name = entry.pipeline.name.clone();
        match self.store.claim_fire(&name, at) {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(pipeline = %name, fire = %at, "fire claimed by another process sharing the state store");
                return;
            }
            Err(error) => {
                // Unclaimed, it could run twice; the next fire tries again.
                tracing::error!(pipeline = %name, %error, "cannot claim the fire in the state store; it does not run");
                return;
            }
        }
        if entry.running {
            let overlap = entry
                .pipeline
                .schedule
                .as_ref()
                .map_or(Overlap::Skip, |schedule| schedule.overlap);
            match overlap {
                Overlap::Skip => {
                    tracing::warn!(pipeline = %name, fire_ms = at.timestamp_millis(), "fire skipped: the previous run is still going")
                }
                Overlap::Queue => {
                    tracing::info!(pipeline = %name, "fire queued: the previous run is still going");
                    entry.queued = Some(at);
                }
            }
            return;
        }
        let pipeline = entry.pipeline.clone();
        self.start(file, pipeline, Cause::Fire(at));
    }

    /// Starts a run of the pipeline of `file` (as given: an arrival has its own source).
    fn start(&mut self, file: &Path, pipeline: Pipeline, cause: Cause) {
        let name = pipeline.name.clone();
        let client = match self.client(&pipeline) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(pipeline = %name, %error, "cannot run");
                return;
            }
        };
        let Some(entry) = self.entries.get_mut(file) else {
            return;
        };
        entry.running = true;
        let trigger = match cause {
            Cause::Fire(_) => Trigger::Schedule,
            Cause::Arrival(_) => Trigger::FileArrival,
        };
        let mut request = runner::Request::scheduled(
            trigger,
            Delivery::Send(client),
            self.options.state.clone(),
            self.options.history_days,
            self.budgets.clone(),
        );
        request.to_sandbox = self.options.sandbox.is_some();
        match cause {
            Cause::Fire(at) => request.scheduled_for = Some(at),
            Cause::Arrival(arrival) => request.arrival = Some(arrival),
        }
        let cancel = self.interrupt_runs.child_token();
        let file = file.to_path_buf();
        let fire = request.scheduled_for;
        tracing::info!(pipeline = %name, fire_ms = fire.map(|at| at.timestamp_millis()), "run starting");
        let task_file = file.clone();
        let task = self.runs.spawn(async move {
            let result = runner::run(&pipeline, &request, &mut NoObserver, cancel).await;
            (task_file, fire, result)
        });
        self.run_files.insert(task.id(), file);
        self.publish();
    }

    /// The HTTP client of a pipeline's connection, made once per connection and reload
    /// (making one loads the system's root certificates) and shared by its runs.
    fn client(&mut self, pipeline: &Pipeline) -> Result<Client, crate::clevertap::ClientError> {
        let key = format!(
            "{}/{}",
            pipeline.connection.name,
            runner::destination(pipeline)
        );
        if let Some(client) = self.clients.get(&key) {
            return Ok(client.clone());
        }
        let client = Client::new(&pipeline.connection.account())?;
        self.clients.insert(key, client.clone());
        Ok(client)
    }

    /// Logs a finished run, and starts a queued one.
    fn run_ended(&mut self, finished: Result<(tokio::task::Id, Finished), tokio::task::JoinError>) {
        let (file, fire, result) = match finished {
            Ok((id, finished)) => {
                self.run_files.remove(&id);
                finished
            }
            Err(error) => {
                // A panic in a run is a bug; the daemon and the other pipelines go on.
                tracing::error!(%error, "a run ended abnormally");
                if let Some(file) = self.run_files.remove(&error.id())
                    && let Some(entry) = self.entries.get_mut(&file)
                {
                    entry.running = false;
                }
                self.publish();
                return;
            }
        };
        let handled_elsewhere = matches!(result, Err(RunError::ArrivalHandled { .. }));
        match &result {
            Ok(summary) => {
                self.metrics.run_finished(summary);
                log_summary(summary);
            }
            Err(error @ RunError::ArrivalHandled { .. }) => {
                tracing::info!(file = %file.display(), "{error}")
            }
            Err(error @ RunError::State(crate::state::StateError::Leased { .. })) => {
                let fire_ms = fire.map(|at| at.timestamp_millis());
                tracing::warn!(file = %file.display(), fire_ms, %error, "run skipped: another process is running the pipeline")
            }
            Err(error) => tracing::error!(file = %file.display(), %error, "run not started"),
        }
        let (queued, arrivals) = match self.entries.get_mut(&file) {
            Some(entry) => {
                entry.running = false;
                (
                    std::mem::take(&mut entry.queued),
                    entry.pipeline.trigger == TriggerKind::FileArrival,
                )
            }
            None => (None, false),
        };
        if self.stopping {
            self.publish();
            return;
        }
        if result.is_err() && arrivals && !handled_elsewhere {
            // The run could not start (the state store, another process running it): try
            // the file again later, not in a loop.
            let later = tokio::time::Instant::now() + ARRIVAL_RETRY;
            self.rescan_at = Some(self.rescan_at.map_or(later, |at| at.min(later)));
            self.publish();
            return;
        }
        if let Some(at) = queued
            && let Some(entry) = self.entries.get(&file)
        {
            // Claimed when it came.
            tracing::info!(pipeline = %entry.pipeline.name, "starting the queued fire");
            let pipeline = entry.pipeline.clone();
            self.start(&file, pipeline, Cause::Fire(at));
        }
        if arrivals {
            // More files may have arrived while it ran.
            self.scan_arrivals();
        }
        self.publish();
    }

    /// Stops scheduling, gives running uploads the grace period to finish, then interrupts
    /// them (they stop sending, let requests in flight end, and keep their checkpoints).
    async fn shut_down(mut self) {
        self.stopping = true;
        systemd::stopping();
        let running = self.runs.len();
        tracing::info!(
            running,
            grace = ?self.options.shutdown_timeout,
            "stopping: no new runs; waiting for running uploads"
        );
        let grace = tokio::time::sleep(self.options.shutdown_timeout);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                joined = self.runs.join_next_with_id() => match joined {
                    Some(finished) => self.run_ended(finished),
                    None => break,
                },
                () = &mut grace, if !self.interrupt_runs.is_cancelled() => {
                    tracing::warn!("grace period over: interrupting running uploads (their checkpoints keep what was delivered)");
                    self.interrupt_runs.cancel();
                }
            }
        }
        tracing::info!("daemon stopped");
    }
}

/// What identifies a schedule: when it changes, the next fire is computed again.
fn schedule_key(schedule: Option<&Schedule>) -> Option<(String, chrono_tz::Tz)> {
    schedule.map(|schedule| (schedule.expression.clone(), schedule.timezone))
}

fn log_summary(summary: &RunSummary) {
    let counts = summary.counts;
    let status = summary.status().as_str();
    let stop = summary.stop.as_ref().map(ToString::to_string);
    if summary.succeeded() {
        tracing::info!(
            pipeline = %summary.pipeline,
            run_id = %summary.run_id,
            status,
            read = counts.read,
            accepted = counts.accepted,
            skipped = counts.skipped,
            rows_resumed = summary.rows_resumed,
            up_to_date = summary.up_to_date.as_deref(),
            duration_ms = summary.duration.as_millis() as u64,
            "run finished"
        );
    } else {
        tracing::warn!(
            pipeline = %summary.pipeline,
            run_id = %summary.run_id,
            status,
            read = counts.read,
            accepted = counts.accepted,
            skipped = counts.skipped,
            rejected = counts.rejected,
            failed = counts.failed,
            stop = stop.as_deref(),
            rejects_file = summary.rejects_file.as_ref().map(|path| path.display().to_string()),
            "run failed"
        );
    }
    for warning in &summary.warnings {
        tracing::warn!(pipeline = %summary.pipeline, run_id = %summary.run_id, "{warning}");
    }
}
