//! The upload engine: batches to CleverTap with bounded concurrency, retries, and an outcome
//! for every record.
//!
//! A run is two halves joined by a bounded channel. The reading half ([`batch::produce`], on
//! its own thread) turns rows into encoded batches. The sending half ([`send`]) keeps at most
//! `thread_count` requests in flight, retries what [`crate::clevertap::retry`] says to, and
//! settles each batch into a [`BatchReport`] ([`answer`] maps CleverTap's `unprocessed`
//! entries back to source lines). The [`ledger`] books every outcome: counts, the rejects file,
//! the error budget, the observer. Every record read ends accepted, skipped, rejected or failed.

mod answer;
pub mod batch;
mod budget;
pub mod concurrency;
mod custom_list;
mod ledger;
mod read;
mod rejects;
mod send;
mod summary;
mod unchanged;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// The warning of a run whose source had no records.
pub const NO_RECORDS: &str = "the source has no records";

pub use budget::{AccountBudget, AccountBudgets, BudgetUse, SharedSlot, SharedSlots};
pub use ledger::ErrorBudget;
pub use summary::{BatchReport, DryRunReport, RunSummary, StopReason};
pub use unchanged::ChangeDetection;

use crate::clevertap::Client;
use crate::clevertap::retry::RetryPolicy;
use crate::clevertap::wire::Endpoint;
use crate::config::model::{
    AccountLimits, CustomList, FileSource, OnInvalidRecord, OutputMapping, Target, ThreadCount,
};
use crate::outcome::{Counts, Settled, SettledLines};
use crate::template::RunContext;
use ledger::{Judged, Ledger};

/// What to upload: one pipeline's source, target and limits.
#[derive(Debug, Clone)]
pub struct Job {
    /// The pipeline's name, for the summary.
    pub pipeline: String,
    /// The connection's name, for messages about credentials.
    pub connection: String,
    /// The file to read.
    pub source: FileSource,
    /// What its rows become.
    pub target: Target,
    /// The account's limits on records.
    pub limits: AccountLimits,
    /// What an invalid record does.
    pub on_invalid_record: OnInvalidRecord,
    /// Requests in flight: at most a fixed number, or adapted (the endpoint's own limit
    /// also applies).
    pub thread_count: ThreadCount,
    /// The API the records go to, with its batch size and concurrency limit.
    pub endpoint: Endpoint,
    /// In a dry run, list every identity or value the run would touch (destructive operations).
    pub list_affected: bool,
    /// The output mapping, if the pipeline has one.
    pub output: Option<Arc<OutputMapping>>,
    /// The run's ID, start time and names, for templates.
    pub context: RunContext,
    /// For `Target::CustomList`: the segment to make or update.
    pub custom_list: Option<CustomList>,
    /// How many invalid records the run may skip before it stops.
    pub error_budget: ErrorBudget,
}

impl Job {
    /// Requests in flight at most: the pipeline's thread count, within CleverTap's limit for
    /// the API.
    pub fn requests_in_flight(&self) -> usize {
        match self.thread_count {
            ThreadCount::Fixed(count) => count.clamp(1, self.most_in_flight()),
            ThreadCount::Auto => self.most_in_flight(),
        }
    }

    /// The most requests in flight the account allows for the API: the API's limit, or the
    /// connection's lower `limits.concurrency`.
    pub fn most_in_flight(&self) -> usize {
        self.limits
            .concurrency
            .map_or(self.endpoint.max_in_flight, |limit| {
                limit.min(self.endpoint.max_in_flight)
            })
            .max(1)
    }
}

/// Where batches go.
#[derive(Clone)]
pub enum Delivery {
    /// To CleverTap (or the sandbox) through this client.
    Send(Client),
    /// Nowhere: build and check every request, send none.
    DryRun,
}

/// How a run behaves, beyond the job itself.
pub struct RunOptions {
    /// Send, or only build.
    pub delivery: Delivery,
    /// Retry attempts and back-off.
    pub retry: RetryPolicy,
    /// Where the rejects file goes (created only when something is rejected).
    pub rejects_path: PathBuf,
    /// A folder for a custom list's CSV while it is uploaded (removed afterwards).
    pub spool_dir: PathBuf,
    /// Source lines an earlier run settled: they are read but not sent again.
    pub already_settled: Option<Arc<SettledLines>>,
    /// The account's budget of requests in flight, shared with other pipelines (the daemon);
    /// each request takes a slot on top of the run's own `thread_count`.
    pub account_budget: Option<AccountBudget>,
    /// With `send: changes`: what CleverTap has, so it is not sent again.
    pub changes: Option<ChangeDetection>,
}

/// Why an observer could not record a settled batch (its checkpoint could not be written):
/// the run stops, since going on could send records twice later.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct NotRecorded(pub Box<dyn std::error::Error + Send + Sync>);

/// Hears about a run as it goes: the progress display and the checkpoints.
pub trait Observer: Send {
    /// The run has begun (the runner calls it): its lock is held and its history entry,
    /// under `run_id`, is written.
    fn run_began(&mut self, _run_id: &str) {}
    /// A batch has settled (every record in it has its outcome, and the rejects file has
    /// them). An error (progress could not be recorded) stops the run.
    fn batch_settled(
        &mut self,
        _report: &BatchReport,
        _counts: &Counts,
    ) -> Result<(), NotRecorded> {
        Ok(())
    }
    /// A record was skipped before sending.
    fn record_skipped(&mut self, _settled: &Settled, _counts: &Counts) {}
    /// A record ended failed without its batch being settled (the row that stopped the run,
    /// rows read but never sent, a custom list CleverTap did not take): nothing to
    /// checkpoint, but one of the run's errors.
    fn record_failed(&mut self, _settled: &Settled) {}
    /// Records CleverTap has already were not sent (`send: changes`): these lines are
    /// settled.
    fn records_unchanged(&mut self, _ranges: &[(u64, u64)], _counts: &Counts) {}
    /// The source is open: how far through its file the reader is, as it reads.
    fn source_opened(&mut self, _progress: &crate::source::ReadProgress) {}
    /// Requests are about to be sent: the run's limit of requests in flight, as it changes.
    fn sending_started(&mut self, _limit: &concurrency::CurrentLimit) {}
    /// The rows of a query on `database` are being read into the run's snapshot (before the
    /// source opens).
    fn query_started(&mut self, _database: &str) {}
}

/// Uploads a job's source and reports what happened to every record.
///
/// `cancel` (Ctrl-C) stops new requests; requests in flight finish and count.
pub async fn run(
    job: Job,
    mut options: RunOptions,
    observer: &mut dyn Observer,
    cancel: CancellationToken,
) -> RunSummary {
    if let Some(list) = job.custom_list.clone() {
        return custom_list::run(job, &list, options, observer, cancel).await;
    }
    let started = Instant::now();
    let changes = options.changes.take();
    let mut ledger = Ledger::new(&job, &options);
    let mut warnings = Vec::new();
    let mut rows_resumed = 0;
    match crate::source::open_with_progress(&job.source) {
        Ok((rows, progress)) => {
            observer.source_opened(&progress);
            if rows.columns().is_some_and(<[_]>::is_empty) {
                warnings.push("the source has no columns".to_string());
            }
            let end = send::send_all(
                &job,
                &options,
                rows,
                changes,
                &mut ledger,
                observer,
                &cancel,
            )
            .await;
            rows_resumed = end.left_out;
            warnings.extend(end.notes.warnings());
        }
        Err(error) => ledger.stop(StopReason::SourceFailed(error.to_string())),
    }
    if ledger.stop.is_none() {
        ledger.check_budget(Judged::AtEnd);
    }
    let mut summary = ledger.finish(&job, started.elapsed(), rows_resumed);
    summary.warnings.splice(0..0, warnings);
    summary
}
