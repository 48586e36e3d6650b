//! The upload engine: batches to CleverTap with bounded concurrency, retries, and an outcome
//! for every record.
//!
//! A run is two halves joined by a bounded channel. The reading half ([`batch::produce`], on
//! its own thread) turns rows into encoded batches. The sending half (here) keeps at most
//! `thread_count` requests in flight, retries what [`crate::clevertap::retry`] says to, maps
//! CleverTap's `unprocessed` entries back to source lines, and settles each batch into a
//! [`BatchReport`]. Every record read ends accepted, skipped, rejected or failed.

pub mod batch;
mod budget;
mod custom_list;
pub mod outcome;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use batch::Batch;
pub use budget::{AccountBudget, AccountBudgets};
pub use outcome::{BatchReport, DryRunReport, RunSummary, StopReason};

use crate::outcome::{Code, Counts, Outcome, Settled, SettledLines};

use crate::clevertap::retry::{RetryPolicy, Verdict, classify};
use crate::clevertap::wire::{Endpoint, UploadResponse};
use crate::clevertap::{Client, Failure};
use crate::config::model::{
    AccountLimits, CustomList, OnInvalidRecord, OutputMapping, Source, Target,
};
use crate::template::RunContext;
use batch::{Batching, Produced};
use outcome::RejectsFile;

/// What to upload: one pipeline's source, target and limits.
#[derive(Debug, Clone)]
pub struct Job {
    /// The pipeline's name, for the summary.
    pub pipeline: String,
    /// The connection's name, for messages about credentials.
    pub connection: String,
    /// The file to read.
    pub source: Source,
    /// What its rows become.
    pub target: Target,
    /// The account's limits on records.
    pub limits: AccountLimits,
    /// What an invalid record does.
    pub on_invalid_record: OnInvalidRecord,
    /// Requests in flight at most (the endpoint's own limit also applies).
    pub thread_count: usize,
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
        self.thread_count.clamp(1, self.endpoint.max_in_flight)
    }
}

/// How many invalid records (skipped, or rejected by CleverTap) a run may meet before it
/// stops and fails. Only matters with `skip_invalid_records: true`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorBudget {
    /// At most this many.
    pub max_records: Option<u64>,
    /// At most this share of the records read (0.0–1.0), judged once
    /// [`ErrorBudget::RATIO_MIN_READ`] records are read, and at the end.
    pub max_ratio: Option<f64>,
}

impl ErrorBudget {
    /// Records read before the ratio is judged during a run: a share of a few records says
    /// little about a file.
    pub const RATIO_MIN_READ: u64 = 1000;

    /// Why the run must stop, if `counts` break the budget. `at_end`: the source is done,
    /// so the ratio is judged however few records were read.
    pub fn exceeded(&self, counts: &Counts, at_end: bool) -> Option<String> {
        let invalid = counts.skipped + counts.rejected;
        if let Some(max) = self.max_records
            && invalid > max
        {
            return Some(format!(
                "{invalid} invalid records, more than max_invalid_records ({max})"
            ));
        }
        if let Some(max) = self.max_ratio
            && counts.read > 0
            && (at_end || counts.read >= Self::RATIO_MIN_READ)
        {
            let ratio = invalid as f64 / counts.read as f64;
            if ratio > max {
                return Some(format!(
                    "{invalid} of {} records read are invalid ({:.1}%), more than max_invalid_ratio ({max})",
                    counts.read,
                    ratio * 100.0
                ));
            }
        }
        None
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
#[derive(Clone)]
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
}

/// Hears about a run as it goes: the progress display and the checkpoints.
pub trait Observer: Send {
    /// A batch has settled (every record in it has its outcome, and the rejects file has
    /// them). An error (progress could not be recorded) stops the run.
    fn batch_settled(&mut self, _report: &BatchReport, _counts: &Counts) -> Result<(), String> {
        Ok(())
    }
    /// A record was skipped before sending.
    fn record_skipped(&mut self, _settled: &Settled, _counts: &Counts) {}
}

/// An observer that ignores everything.
pub struct NoObserver;
impl Observer for NoObserver {}

/// The bookkeeping of a run in progress.
struct Ledger {
    budget: ErrorBudget,
    counts: Counts,
    requests: u64,
    retries: u64,
    rejects: RejectsFile,
    stop: Option<StopReason>,
    dry_run: Option<DryRunReport>,
}

impl Ledger {
    /// Books a settled batch: its rejects are written first, then the observer records it
    /// (a checkpoint), so nothing counted as settled is missing from the rejects file.
    fn settle_batch(&mut self, report: &BatchReport, observer: &mut dyn Observer) {
        self.counts.accepted += report.accepted as u64;
        for entry in &report.settled {
            self.counts.add(entry.outcome, 1);
            self.rejects.write(entry);
        }
        self.rejects.flush();
        if report.attempts > 0 {
            self.requests += u64::from(report.attempts);
            self.retries += u64::from(report.attempts - 1);
        }
        if let Err(error) = observer.batch_settled(report, &self.counts) {
            self.stop(StopReason::StateFailed(error));
        }
        self.check_budget(false);
    }

    /// Books a record skipped before sending.
    fn settle_skipped(&mut self, settled: &Settled, observer: &mut dyn Observer) {
        self.counts.read += 1;
        self.counts.add(settled.outcome, 1);
        self.rejects.write(settled);
        observer.record_skipped(settled, &self.counts);
        self.check_budget(false);
    }

    fn check_budget(&mut self, at_end: bool) {
        if let Some(reason) = self.budget.exceeded(&self.counts, at_end) {
            self.stop(StopReason::ErrorBudget(reason));
        }
    }

    fn stop(&mut self, reason: StopReason) {
        if self.stop.is_none() {
            self.stop = Some(reason);
        }
    }
}

/// Uploads a job's source and reports what happened to every record.
///
/// `cancel` (Ctrl-C) stops new requests; requests in flight finish and count.
pub async fn run(
    job: Job,
    options: RunOptions,
    observer: &mut dyn Observer,
    cancel: CancellationToken,
) -> RunSummary {
    if let Some(list) = job.custom_list.clone() {
        return custom_list::run(job, &list, options, cancel).await;
    }
    let started = Instant::now();
    let mut ledger = Ledger {
        budget: job.error_budget,
        counts: Counts::default(),
        requests: 0,
        retries: 0,
        rejects: RejectsFile::new(&options.rejects_path),
        stop: None,
        dry_run: matches!(options.delivery, Delivery::DryRun).then_some(DryRunReport {
            requests: 0,
            records: 0,
            sample: None,
            affected: Vec::new(),
        }),
    };
    let mut warnings = Vec::new();
    let mut rows_resumed = 0;
    match crate::source::open(&job.source) {
        Ok(rows) => {
            if rows.columns().is_some_and(<[_]>::is_empty) {
                warnings.push("the source has no columns".to_string());
            }
            rows_resumed = send_all(&job, &options, rows, &mut ledger, observer, &cancel).await;
        }
        Err(error) => ledger.stop(StopReason::SourceFailed(error.to_string())),
    }
    if ledger.stop.is_none() {
        ledger.check_budget(true);
    }
    if ledger.counts.read == 0 && rows_resumed == 0 && ledger.stop.is_none() {
        warnings.push("the source has no records".to_string());
    }
    let (rejects_file, rejects_error) = ledger.rejects.finish();
    warnings.extend(rejects_error);
    RunSummary {
        run_id: job.context.run_id.clone(),
        pipeline: job.pipeline,
        counts: ledger.counts,
        requests: ledger.requests,
        retries: ledger.retries,
        duration: started.elapsed(),
        rejects_file,
        stop: ledger.stop,
        dry_run: ledger.dry_run,
        warnings,
        segment_id: None,
        rows_resumed,
        resumed_from: None,
        up_to_date: None,
    }
}

/// The sending half: takes what the reader produces and keeps requests in flight.
/// Returns how many rows were left out as settled by an earlier run.
async fn send_all(
    job: &Job,
    options: &RunOptions,
    rows: Box<dyn crate::source::RowStream>,
    ledger: &mut Ledger,
    observer: &mut dyn Observer,
    cancel: &CancellationToken,
) -> u64 {
    let thread_count = job.requests_in_flight();
    let (sender, mut produced) = mpsc::channel::<Produced>(thread_count);
    let settings = Batching {
        limits: job.limits,
        target: job.target,
        on_invalid_record: job.on_invalid_record,
        batch_size: job.endpoint.max_records,
        envelope: job.endpoint.envelope,
        output: job.output.clone(),
        context: job.context.clone(),
        already_settled: options.already_settled.clone(),
    };
    let runtime = tokio::runtime::Handle::current();
    let reader = std::thread::spawn(move || {
        let mut handoff = batch::Handoff::new(&sender, runtime, thread_count.div_ceil(2));
        batch::produce(rows, &settings, &mut handoff)
    });

    // The one place concurrency is bounded: a permit per request, moved into its task.
    let permits = Arc::new(Semaphore::new(thread_count));
    // Each task hands its permit back with its report, so the permit is released only once
    // the report is booked: a stop it brings is seen before the next batch can be sent.
    let mut in_flight: JoinSet<(BatchReport, OwnedSemaphorePermit)> = JoinSet::new();
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut courier: Option<Arc<Courier>> = None;
    let mut reading = true;
    loop {
        let accepting = reading && ledger.stop.is_none();
        if !accepting && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(joined) = in_flight.join_next() => settle_joined(joined, job, ledger, observer),
            () = cancel.cancelled(), if ledger.stop.is_none() => ledger.stop(StopReason::Interrupted),
            acquired = permits.clone().acquire_owned(), if accepting && permit.is_none() => {
                permit = Some(acquired.expect("the semaphore is never closed"));
            }
            next = produced.recv(), if accepting && permit.is_some() => match next {
                None => reading = false,
                Some(Produced::Batch(batch)) => {
                    ledger.counts.read += batch.lines.len() as u64;
                    match &options.delivery {
                        Delivery::DryRun => {
                            let report = dry_run(&batch, job.list_affected, ledger);
                            ledger.settle_batch(&report, observer);
                        }
                        Delivery::Send(client) => {
                            let courier = Arc::clone(courier.get_or_insert_with(|| Arc::new(Courier {
                                client: client.clone(),
                                connection: job.connection.clone(),
                                endpoint: job.endpoint,
                                policy: options.retry,
                                budget: options.account_budget.clone(),
                            })));
                            let cancel = cancel.clone();
                            let permit = permit.take().expect("this branch runs only with a permit");
                            in_flight.spawn(async move { (courier.deliver(batch, &cancel).await, permit) });
                        }
                    }
                }
                Some(Produced::Skipped(settled)) => ledger.settle_skipped(&settled, observer),
                Some(Produced::Stopped(settled)) => {
                    ledger.counts.read += 1;
                    ledger.counts.add(settled.outcome, 1);
                    ledger.rejects.write(&settled);
                    ledger.stop(StopReason::InvalidRecord { line: settled.line, reason: settled.reason.clone() });
                    reading = false;
                }
                Some(Produced::SourceFailed(message)) => {
                    ledger.stop(StopReason::SourceFailed(message));
                    reading = false;
                }
            },
        }
    }
    // Batches the reader already made but that were never sent count as failed.
    produced.close();
    while let Some(next) = produced.recv().await {
        match next {
            Produced::Batch(batch) => {
                ledger.counts.read += batch.lines.len() as u64;
                ledger.settle_batch(&unsent(batch, ledger.stop.as_ref()), observer);
            }
            Produced::Skipped(settled) | Produced::Stopped(settled) => {
                ledger.counts.read += 1;
                ledger.counts.add(settled.outcome, 1);
                ledger.rejects.write(&settled);
            }
            Produced::SourceFailed(message) => ledger.stop(StopReason::SourceFailed(message)),
        }
    }
    reader
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

impl BatchReport {
    fn of(batch: &Batch, accepted: usize, settled: Vec<Settled>, attempts: u32) -> Self {
        BatchReport {
            index: batch.index,
            first_line: batch.first_line(),
            last_line: batch.last_line(),
            records: batch.lines.len(),
            accepted,
            settled,
            attempts,
        }
    }
}

/// Books a finished request task: its stop condition, then its records.
fn settle_joined(
    joined: Result<(BatchReport, OwnedSemaphorePermit), tokio::task::JoinError>,
    job: &Job,
    ledger: &mut Ledger,
    observer: &mut dyn Observer,
) {
    let (report, permit) =
        joined.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
    note_batch_stop(&report, job.on_invalid_record, ledger);
    ledger.settle_batch(&report, observer);
    drop(permit);
}

/// A stop condition a settled batch brings: bad credentials, or a rejection that must stop.
fn note_batch_stop(report: &BatchReport, on_invalid: OnInvalidRecord, ledger: &mut Ledger) {
    if let Some(unauthorized) = report.settled.iter().find(|s| s.code == Code::Unauthorized) {
        ledger.stop(StopReason::Unauthorized(unauthorized.reason.clone()));
    }
    if on_invalid == OnInvalidRecord::Stop
        && let Some(rejected) = report
            .settled
            .iter()
            .find(|s| s.outcome == Outcome::Rejected)
    {
        ledger.stop(StopReason::Rejected {
            line: rejected.line,
            reason: rejected.reason.clone(),
        });
    }
}

fn unsent(batch: Batch, stop: Option<&StopReason>) -> BatchReport {
    let reason = match stop {
        Some(StopReason::Interrupted) => "not sent: the run was interrupted".to_string(),
        Some(reason) => format!("not sent: the run stopped ({})", short_reason(reason)),
        None => "not sent".to_string(),
    };
    failed_batch(&batch, Code::NotSent, &reason, 0)
}

fn short_reason(reason: &StopReason) -> String {
    match reason {
        StopReason::InvalidRecord { line, .. } => format!("invalid record at line {line}"),
        StopReason::Rejected { line, .. } => format!("record at line {line} rejected"),
        StopReason::Unauthorized(_) => "credentials refused".into(),
        StopReason::Interrupted => "interrupted".into(),
        StopReason::SourceFailed(_) => "source unreadable".into(),
        StopReason::Refused(_) => "refused by CleverTap".into(),
        StopReason::ErrorBudget(_) => "too many invalid records".into(),
        StopReason::StateFailed(_) => "progress could not be recorded".into(),
    }
}

fn failed_batch(batch: &Batch, code: Code, reason: &str, attempts: u32) -> BatchReport {
    let settled = batch
        .lines
        .iter()
        .enumerate()
        .map(|(index, &line)| Settled {
            line,
            outcome: Outcome::Failed,
            code,
            reason: reason.to_string(),
            row: None,
            record: batch.record(index),
        })
        .collect();
    BatchReport::of(batch, 0, settled, attempts)
}

fn dry_run(batch: &Batch, list_affected: bool, ledger: &mut Ledger) -> BatchReport {
    if let Some(report) = &mut ledger.dry_run {
        report.requests += 1;
        report.records += batch.lines.len() as u64;
        if report.sample.is_none() {
            report.sample = batch.record(0);
        }
        if list_affected {
            // A demerge record is the identity itself; a disassociation names its `value`;
            // a deletion, its `identity` or `guid`.
            report
                .affected
                .extend((0..batch.lines.len()).filter_map(|index| {
                    let record = batch.record(index)?;
                    if let serde_json::Value::String(identity) = record {
                        return Some(identity);
                    }
                    if let Some(key) = batch.key {
                        return Some(format!("{key} {}", record.get(key)?.as_str()?));
                    }
                    record.get("value")?.as_str().map(String::from)
                }));
        }
    }
    BatchReport::of(batch, 0, Vec::new(), 0)
}

/// Everything a request task needs to deliver a batch.
struct Courier {
    client: Client,
    /// The connection's name, for messages about credentials.
    connection: String,
    endpoint: Endpoint,
    policy: RetryPolicy,
    /// The account's shared budget, if any: a slot per attempt, released during back-off.
    budget: Option<AccountBudget>,
}

impl Courier {
    /// Sends one batch, retrying as [`classify`] says, and settles its records.
    async fn deliver(&self, batch: Batch, cancel: &CancellationToken) -> BatchReport {
        let (result, attempts) = with_retries(self.policy, cancel, || async {
            let _slot = match &self.budget {
                Some(budget) => Some(budget.slot().await),
                None => None,
            };
            self.client.send(&self.endpoint, batch.body.clone()).await
        })
        .await;
        let failure = match result {
            Ok(response) => return answered_batch(&batch, &response, attempts),
            Err(failure) => failure,
        };
        let reason = match classify(&failure) {
            Verdict::StopRun => {
                let reason = format!(
                    "CleverTap refused the credentials of connection `{}` ({failure}); check its account_id, passcode and region (a wrong region also answers 401)",
                    self.connection
                );
                return failed_batch(&batch, Code::Unauthorized, &reason, attempts);
            }
            Verdict::Retry { .. } if cancel.is_cancelled() => {
                return failed_batch(
                    &batch,
                    failure_code(&failure),
                    &format!("{failure}; not retried: the run was interrupted"),
                    attempts,
                );
            }
            Verdict::Retry { .. } => format!("{failure} (gave up after {attempts} attempts)"),
            Verdict::FailBatch => failure.to_string(),
        };
        tracing::error!(batch = batch.index, first_line = batch.first_line(), %reason, "batch not delivered");
        failed_batch(&batch, failure_code(&failure), &reason, attempts)
    }
}

/// Calls CleverTap until it answers, retrying what [`classify`] says to with the policy's
/// back-off; no new attempt starts once `cancel` fires. Returns the last result and the
/// number of attempts made.
async fn with_retries<T, F, Fut>(
    policy: RetryPolicy,
    cancel: &CancellationToken,
    mut call: F,
) -> (Result<T, Failure>, u32)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        let failure = match call().await {
            Ok(value) => return (Ok(value), attempts),
            Err(failure) => failure,
        };
        let Verdict::Retry { retry_after } = classify(&failure) else {
            return (Err(failure), attempts);
        };
        if attempts >= policy.max_attempts || cancel.is_cancelled() {
            return (Err(failure), attempts);
        }
        let delay = policy.delay(attempts, retry_after, rand::random::<f64>());
        tracing::debug!(attempt = attempts, ?delay, %failure, "retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return (Err(failure), attempts),
        }
    }
}

fn failure_code(failure: &Failure) -> Code {
    match failure {
        Failure::Timeout(_) => Code::Timeout,
        Failure::Connect(_) => Code::Connect,
        Failure::Interrupted(_) => Code::ConnectionBroken,
        Failure::Status { status, .. } => Code::Http(*status),
        Failure::InvalidResponse(_) => Code::InvalidResponse,
        Failure::NotReady(_) => Code::NotReady,
        Failure::Spool(_) => Code::Spool,
    }
}

/// Settles a batch CleverTap answered: its `unprocessed` records are rejected, the rest
/// accepted. A `fail` with no per-record detail fails the whole batch.
fn answered_batch(batch: &Batch, response: &UploadResponse, attempts: u32) -> BatchReport {
    if response.status == "fail" && response.unprocessed.is_empty() {
        let reason = format!(
            "CleverTap answered `fail`: {}",
            response.error.as_deref().unwrap_or("no reason given")
        );
        tracing::error!(batch = batch.index, first_line = batch.first_line(), %reason, "batch refused");
        return failed_batch(batch, Code::RequestFailed, &reason, attempts);
    }
    let mut rejected_indexes: Vec<usize> = Vec::new();
    let mut settled = Vec::new();
    for entry in &response.unprocessed {
        let index = entry
            .record_index()
            .filter(|index| *index < batch.lines.len() && !rejected_indexes.contains(index))
            .or_else(|| match_echoed_record(batch, entry.record.as_ref(), &rejected_indexes));
        let Some(index) = index else {
            tracing::warn!(batch = batch.index, entry = ?entry, "an unprocessed entry matches no record of the batch");
            continue;
        };
        rejected_indexes.push(index);
        let reason = entry
            .error
            .clone()
            .unwrap_or_else(|| "rejected by CleverTap".into());
        settled.push(Settled {
            line: batch.lines[index],
            outcome: Outcome::Rejected,
            code: entry
                .code
                .and_then(|code| u16::try_from(code).ok())
                .map_or(Code::Rejected, Code::CleverTap),
            reason,
            row: None,
            record: batch.record(index),
        });
    }
    settled.sort_by_key(|entry| entry.line);
    BatchReport::of(
        batch,
        batch.lines.len() - rejected_indexes.len(),
        settled,
        attempts,
    )
}

/// When CleverTap's message has no record number, find the record by the identity it echoed.
fn match_echoed_record(
    batch: &Batch,
    echoed: Option<&serde_json::Value>,
    taken: &[usize],
) -> Option<usize> {
    let echoed = match echoed? {
        serde_json::Value::String(text) => serde_json::from_str(text).ok()?,
        other => other.clone(),
    };
    let key = |record: &serde_json::Value| -> Option<String> {
        crate::clevertap::rules::IDENTITY_FIELDS
            .iter()
            .find_map(|field| {
                record
                    .get(*field)
                    .map(|value| value.to_string().trim_matches('"').to_string())
            })
    };
    let wanted = key(&echoed)?;
    (0..batch.lines.len()).find(|index| {
        !taken.contains(index)
            && batch.record(*index).as_ref().and_then(key) == Some(wanted.clone())
    })
}
