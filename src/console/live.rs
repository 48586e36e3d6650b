//! What a daemon tells its console while it runs: how far each run in progress is, its own
//! state (pipelines loaded and scheduled, the account budgets in use), and the way the console
//! asks it to start a run. The daemon writes it; the console reads it and asks.
//!
//! A run reports through a [`RunTracker`], the observer the daemon hands the runner, so the
//! progress shown is the engine's own count of settled records, not a guess from the history.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::engine::{AccountBudgets, BatchReport, BudgetUse, NotRecorded, Observer};
use crate::outcome::{Counts, Settled};
use crate::source::ReadProgress;

/// The daemon as its console sees it. Cheap to clone; clones share.
#[derive(Clone)]
pub struct DaemonLink {
    published: Arc<Mutex<Published>>,
    budgets: AccountBudgets,
    /// Where actions go; `None` when the console has no token, so it takes none.
    actions: Option<mpsc::Sender<Asked>>,
}

/// What the daemon last published.
#[derive(Default)]
struct Published {
    entries: Vec<Entry>,
    stopping: bool,
    /// Runs in progress, by the tracker's key.
    runs: BTreeMap<u64, Progress>,
    next_key: u64,
}

/// How far one run is.
struct Progress {
    /// Known once the run has begun (its lock held, its history entry written).
    run_id: Option<String>,
    counts: Counts,
    /// How far through its input the reader is, once the input is open.
    source: Option<ReadProgress>,
    /// When the input opened, for the rate of reading.
    opened: Option<Instant>,
    /// When the first record settled: the time left is estimated a second after.
    settling_since: Option<Instant>,
}

/// How long records must have been settling before the time left is estimated: the reader
/// runs ahead of the uploads, so an estimate from its first bytes would be a guess.
const ESTIMATE_AFTER: Duration = Duration::from_secs(1);

/// A pipeline as the daemon has it loaded: the version it runs, which may be the last valid
/// one of a file that no longer loads.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The pipeline's name.
    pub name: String,
    /// Its next fire, milliseconds since the Unix epoch; none without a schedule.
    pub next_fire_ms: Option<i64>,
    /// A run of it is going.
    pub running: bool,
    /// A fire (or an ask) waits for that run to end (`overlap: queue`).
    pub queued: bool,
}

/// The daemon's own state, as the overview shows it.
#[derive(Debug, Serialize)]
pub struct DaemonState {
    /// Pipeline files loaded.
    pub pipelines: usize,
    /// Of them, those with a schedule.
    pub scheduled: usize,
    /// SIGTERM came: it starts nothing new.
    pub stopping: bool,
    /// Whether the console may start runs (a token is configured).
    pub actions: bool,
    /// Every pipeline it has loaded, by name.
    pub entries: Vec<Entry>,
    /// Requests in flight per account and API, against each one's limit.
    pub budgets: Vec<BudgetUse>,
}

/// How far a run in progress is, as the daemon's engine counts it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveProgress {
    /// Records by how they ended so far.
    pub records: Counts,
    /// Bytes of its input read.
    pub bytes_read: u64,
    /// Its input's size in bytes.
    pub bytes_total: u64,
    /// Seconds left, estimated from how fast the input is read, once records have settled
    /// for a second.
    pub eta_seconds: Option<u64>,
}

impl DaemonLink {
    /// A link for a daemon whose runs share `budgets`. With `actions`, the console may ask it
    /// to start runs: the asks come out of the returned receiver.
    pub fn new(
        budgets: AccountBudgets,
        actions: bool,
    ) -> (DaemonLink, Option<mpsc::Receiver<Asked>>) {
        let (sender, receiver) = if actions {
            let (sender, receiver) = mpsc::channel(ASKS_WAITING);
            (Some(sender), Some(receiver))
        } else {
            (None, None)
        };
        let link = DaemonLink {
            published: Arc::default(),
            budgets,
            actions: sender,
        };
        (link, receiver)
    }

    fn published(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The daemon says which pipelines it has loaded, and whether it stops.
    pub fn set_entries(&self, entries: Vec<Entry>, stopping: bool) {
        let mut published = self.published();
        published.entries = entries;
        published.stopping = stopping;
    }

    /// The observer of one run, which publishes how far it is while it runs; `reply` hears
    /// its run ID once it has begun, or why it did not start.
    pub fn track(&self, reply: Option<oneshot::Sender<Answer>>) -> RunTracker {
        let mut published = self.published();
        let key = published.next_key;
        published.next_key += 1;
        published.runs.insert(
            key,
            Progress {
                run_id: None,
                counts: Counts::default(),
                source: None,
                opened: None,
                settling_since: None,
            },
        );
        RunTracker {
            published: Arc::clone(&self.published),
            key,
            reply,
        }
    }

    /// The daemon's own state now.
    pub fn state(&self) -> DaemonState {
        let published = self.published();
        DaemonState {
            pipelines: published.entries.len(),
            scheduled: published
                .entries
                .iter()
                .filter(|entry| entry.next_fire_ms.is_some())
                .count(),
            stopping: published.stopping,
            actions: self.actions.is_some(),
            entries: published.entries.clone(),
            budgets: self.budgets.in_flight(),
        }
    }

    /// Whether the console may start runs.
    pub fn takes_actions(&self) -> bool {
        self.actions.is_some()
    }

    /// How far each run in progress is, by run ID.
    pub fn progress(&self) -> BTreeMap<String, LiveProgress> {
        let published = self.published();
        let now = Instant::now();
        published
            .runs
            .values()
            .filter_map(|progress| Some((progress.run_id.clone()?, progress.shown(now))))
            .collect()
    }

    /// Asks the daemon to start a run, and waits until it has begun (its run ID), was queued,
    /// or was refused.
    pub async fn ask(&self, action: Action) -> Answer {
        let Some(actions) = &self.actions else {
            return Answer::Refused(Refusal::NoToken);
        };
        let (reply, answer) = oneshot::channel();
        match actions.try_send(Asked { action, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Answer::Refused(Refusal::Busy(
                    "the daemon has too many requests waiting; try again in a moment".into(),
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Answer::Refused(Refusal::Stopping);
            }
        }
        // The daemon drops the reply only when it stops before answering.
        answer.await.unwrap_or(Answer::Refused(Refusal::Stopping))
    }
}

/// Asks waiting for the daemon, at most.
const ASKS_WAITING: usize = 16;

impl Progress {
    fn shown(&self, now: Instant) -> LiveProgress {
        let (bytes_read, bytes_total) = self
            .source
            .as_ref()
            .map_or((0, 0), |source| (source.read(), source.total));
        let settled_long_enough = self
            .settling_since
            .is_some_and(|since| now.duration_since(since) >= ESTIMATE_AFTER);
        let eta_seconds = match self.opened {
            Some(opened) if settled_long_enough && bytes_read > 0 && bytes_total >= bytes_read => {
                let elapsed = now.duration_since(opened).as_secs_f64();
                let left = (bytes_total - bytes_read) as f64;
                Some((elapsed * left / bytes_read as f64).ceil() as u64)
            }
            _ => None,
        };
        LiveProgress {
            records: self.counts,
            bytes_read,
            bytes_total,
            eta_seconds,
        }
    }
}

/// The observer of one daemon run: it publishes the run's counts and how far through its
/// input it is, and answers the console that asked for the run. Dropped, the run leaves the
/// published list.
pub struct RunTracker {
    published: Arc<Mutex<Published>>,
    key: u64,
    reply: Option<oneshot::Sender<Answer>>,
}

impl RunTracker {
    fn update(&self, change: impl FnOnce(&mut Progress)) {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(progress) = published.runs.get_mut(&self.key) {
            change(progress);
        }
    }

    fn settled(&self, counts: &Counts) {
        let counts = *counts;
        self.update(|progress| {
            progress.counts = counts;
            progress.settling_since.get_or_insert_with(Instant::now);
        });
    }

    /// The run is over: an asker still waiting hears its run ID, or why it did not start.
    pub fn ended(mut self, run_id: Result<&str, String>) {
        if let Some(reply) = self.reply.take() {
            let answer = match run_id {
                Ok(run_id) => Answer::Started {
                    run_id: run_id.to_string(),
                },
                Err(reason) => Answer::Refused(Refusal::NotStarted(reason)),
            };
            let _ = reply.send(answer);
        }
    }
}

impl Drop for RunTracker {
    fn drop(&mut self) {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        published.runs.remove(&self.key);
    }
}

impl Observer for RunTracker {
    fn run_began(&mut self, run_id: &str) {
        let id = run_id.to_string();
        self.update(|progress| progress.run_id = Some(id));
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Answer::Started {
                run_id: run_id.to_string(),
            });
        }
    }

    fn batch_settled(&mut self, _report: &BatchReport, counts: &Counts) -> Result<(), NotRecorded> {
        self.settled(counts);
        Ok(())
    }

    fn record_skipped(&mut self, _settled: &Settled, counts: &Counts) {
        self.settled(counts);
    }

    fn records_unchanged(&mut self, _ranges: &[(u64, u64)], counts: &Counts) {
        self.settled(counts);
    }

    fn source_opened(&mut self, source: &ReadProgress) {
        let source = source.clone();
        self.update(|progress| {
            progress.source = Some(source);
            progress.opened = Some(Instant::now());
        });
    }
}

/// An action the console asks of the daemon, with where the answer goes.
pub struct Asked {
    /// What is asked.
    pub action: Action,
    /// Where the daemon answers.
    pub reply: oneshot::Sender<Answer>,
}

/// What the console may ask of the daemon.
#[derive(Debug, Clone)]
pub enum Action {
    /// Run a pipeline now, as its schedule would (`POST /api/pipelines/{name}/runs`).
    RunNow {
        /// The pipeline's name.
        pipeline: String,
    },
    /// Send the records a run's rejects file holds again, through its pipeline.
    Replay {
        /// The pipeline's name.
        pipeline: String,
        /// The rejects file.
        rejects_file: PathBuf,
    },
}

/// What the daemon answers an action.
#[derive(Debug)]
pub enum Answer {
    /// The run has begun, under this ID.
    Started {
        /// Its ID, as the history has it.
        run_id: String,
    },
    /// The pipeline is running and queues what comes meanwhile (`overlap: queue`): it runs
    /// when the run ends.
    Queued,
    /// No run starts.
    Refused(Refusal),
}

/// Why the daemon starts no run.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The console has no token: it only reads.
    #[error("this console only reads: actions need a token (start the daemon with --token-file)")]
    NoToken,
    /// No loaded pipeline has the name.
    #[error("no pipeline `{0}` is loaded in the daemon")]
    UnknownPipeline(String),
    /// The pipeline cannot run this way.
    #[error("{0}")]
    NotRunnable(String),
    /// It is running already, or the daemon is too busy to listen.
    #[error("{0}")]
    Busy(String),
    /// The daemon is stopping.
    #[error("the daemon is stopping; it starts no new runs")]
    Stopping,
    /// The runner could not start it (another process holds the pipeline, the state store).
    #[error("the run did not start: {0}")]
    NotStarted(String),
}
