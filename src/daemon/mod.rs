//! `tapline daemon`: runs a folder of pipelines on their cron schedules, reloads them when a
//! file changes or on SIGHUP, and lives under systemd.
//!
//! One task owns all the state and waits on one `select!`: the earliest fire time, a change
//! in the folder, a signal, or the end of a run. Only `file_arrival` pipelines on a bucket
//! (or with `poll_seconds`) are polled, each at its own interval: between fires the process
//! sleeps. Runs go through [`runner::run`] like `tapline run`, with one [`AccountBudgets`]
//! shared by all of them, so pipelines on one CleverTap account never exceed its limit.
//! A pipeline file that fails to load is logged with its `file:line:col`, and the last valid
//! version of it stays scheduled.

mod arrivals;
mod folder;
mod health;
mod listener;
pub mod metrics;
mod runs;
mod systemd;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clevertap::Client;
use crate::config::Pipeline;
use crate::config::model::Schedule;
use crate::console::{Asked, Console, DaemonLink};
use crate::engine::{AccountBudgets, RunSummary};
use crate::runner::{self, RunError};
use crate::scheduler;
use crate::source::arrival::Arrival;
use crate::state::StateStore;
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
    /// Where to serve `/metrics`, `/health` and the console.
    pub listen: Option<Listen>,
    /// Sends every pipeline here instead of to its connection's CleverTap, whose secrets are
    /// then not needed (`tapline daemon --sandbox`).
    pub sandbox: Option<SandboxTarget>,
}

/// The daemon's HTTP listener.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Its address.
    pub address: SocketAddr,
    /// The token the console asks for (`--token-file`).
    pub token: Option<crate::console::Token>,
    /// Given by its old name, `--metrics-listen`: on a non-loopback address without a token
    /// it serves `/metrics` and `/health` only, as it always did, instead of refusing to start.
    pub metrics_only_without_token: bool,
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
    /// The fire (or the console's ask) that came while it ran, with `overlap: queue`.
    queued: Option<Cause>,
    /// When a `file_arrival` pipeline's files are listed next (`None`: at the next scan).
    next_poll: Option<tokio::time::Instant>,
    /// Its bucket is being listed ([`arrivals::Listed`] comes back).
    listing: bool,
}

/// Why the daemon starts a run.
enum Cause {
    /// The fire of the schedule due at this time (claimed by this daemon).
    Fire(DateTime<Utc>),
    /// A file arrived.
    Arrival(Arrival),
    /// The console or its HTTP API asked for it.
    RunNow,
    /// The console asked to send a rejects file again.
    Replay(PathBuf),
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
    /// Arrivals known to be handled, by pipeline ([`arrivals::handled_key`]), so listing a
    /// bucket of many objects asks the store only about new ones; shared with a listing.
    handled: HashMap<String, Arc<HashSet<u64>>>,
    /// Where bucket listings send what they found, and where the loop hears it.
    listed: (
        mpsc::UnboundedSender<arrivals::Listed>,
        mpsc::UnboundedReceiver<arrivals::Listed>,
    ),
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
    /// What the console sees of the daemon: its state and its runs' progress.
    link: DaemonLink,
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
    /// `--listen`'s address cannot be served.
    #[error("cannot listen on {address}: {source}")]
    Metrics {
        /// The address.
        address: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The console would be open to the network without a token.
    #[error(transparent)]
    Console(#[from] crate::console::ServeError),
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
    let (mut daemon, mut changes, mut asks) = Daemon::set_up(options).await?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
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
            () = wake_at(daemon.next_poll()) => daemon.scan_arrivals(),
            Some(listed) = daemon.listed.1.recv() => daemon.listed(listed),
            _ = hangup.recv() => {
                systemd::reloading();
                tracing::info!("SIGHUP: reloading every pipeline");
                daemon.reported.clear();
                daemon.rearm_folder_watch();
                daemon.reload(Utc::now());
                systemd::ready(&daemon.status());
            }
            Some(finished) = daemon.runs.join_next_with_id() => daemon.run_ended(finished),
            Some(asked) = next_ask(&mut asks) => daemon.act(asked),
            _ = tick(&mut watchdog) => systemd::watchdog(),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    // Asks that come while stopping are refused at once.
    drop(asks);
    daemon.shut_down().await;
    Ok(())
}

/// The console's next ask; never, when the console takes none.
async fn next_ask(asks: &mut Option<tokio::sync::mpsc::Receiver<Asked>>) -> Option<Asked> {
    match asks {
        Some(asks) => asks.recv().await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    /// The daemon before its first reload: its state store, budgets and metrics, the
    /// `/metrics` and `/health` listener with the console when asked for, and the watch on
    /// the pipelines folder, whose changes come through the first receiver; the console's
    /// asks come through the second, when it takes actions (it has a token).
    async fn set_up(options: Options) -> Result<SetUp, StartError> {
        let store = crate::state::open(&options.state.store)?;
        // With the shared store, the budgets count against slots every process shares.
        let budgets = AccountBudgets::new(store.shared_slots());
        let metrics = Arc::new(Metrics::new(budgets.clone()));
        let health = Arc::new(Health::new(options.state.store.clone()));
        let takes_actions = options
            .listen
            .as_ref()
            .is_some_and(|listen| listen.token.is_some());
        let (link, asks) = DaemonLink::new(budgets.clone(), takes_actions);
        if let Some(listen) = &options.listen {
            let address = listen.address;
            let console = match crate::console::check_exposure(address, listen.token.as_ref()) {
                Ok(()) => Some(
                    Console::open(&options.state.store, options.dir.clone(), "daemon")?
                        .with_daemon(link.clone()),
                ),
                Err(_) if listen.metrics_only_without_token => {
                    tracing::warn!(%address, "the console is not served on a non-loopback address without --token-file; serving /metrics and /health only");
                    None
                }
                Err(refused) => return Err(refused.into()),
            };
            let with_console = console.is_some();
            let console = console.map(|console| (console, listen.token.clone()));
            let bound =
                listener::serve(address, Arc::clone(&metrics), Arc::clone(&health), console)
                    .await
                    .map_err(|source| StartError::Metrics { address, source })?;
            if with_console {
                tracing::info!(%bound, "the console is at http://{bound}/ (and /metrics, /health)");
            } else {
                tracing::info!(%bound, "serving /metrics and /health");
            }
        }
        let (watcher, changes) = watch::watch(&options.dir).map_err(|error| StartError::Watch {
            dir: options.dir.clone(),
            reason: error.to_string(),
        })?;

        let canonical_dir = std::fs::canonicalize(&options.dir).ok();
        let absolute_dir =
            std::path::absolute(&options.dir).unwrap_or_else(|_| options.dir.clone());
        let watched_dir = watch::identity(&options.dir);
        let daemon = Daemon {
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
            handled: HashMap::new(),
            listed: mpsc::unbounded_channel(),
            clients: HashMap::new(),
            canonical_dir,
            absolute_dir,
            watched_dir,
            stopping: false,
            link,
        };
        Ok((daemon, changes, asks))
    }
}

/// The daemon, the changes of its pipelines folder, and the console's asks.
type SetUp = (
    Daemon,
    tokio::sync::mpsc::UnboundedReceiver<Vec<PathBuf>>,
    Option<tokio::sync::mpsc::Receiver<Asked>>,
);

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
        let entries = self
            .entries
            .values()
            .map(|entry| crate::console::Entry {
                name: entry.pipeline.name.clone(),
                next_fire_ms: entry.next_fire.map(|at| at.timestamp_millis()),
                running: entry.running,
                queued: entry.queued.is_some(),
            })
            .collect();
        self.link.set_entries(entries, self.stopping);
    }

    fn earliest_fire(&self) -> Option<DateTime<Utc>> {
        self.entries
            .values()
            .filter_map(|entry| entry.next_fire)
            .min()
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
