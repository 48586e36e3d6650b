//! The sending half of a run: takes the batches the reader makes, keeps at most
//! `thread_count` requests in flight, and books each batch as it settles.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::answer::{answered_batch, failed_batch, failure_code};
use super::batch::{self, Batch, Batching, Produced};
use super::concurrency::{Ended, Limiter, Permit};
use super::ledger::Ledger;
use super::unchanged::{ChangeDetection, ChangeFilter};
use super::{BatchReport, Delivery, Job, Observer, RunOptions, StopReason};
use crate::changes::RecordFingerprint;
use crate::clevertap::retry::{RetryPolicy, Verdict, classify};
use crate::clevertap::wire::Endpoint;
use crate::clevertap::{Client, Failure};
use crate::config::model::OnInvalidRecord;
use crate::outcome::{Code, Outcome};

/// The sending half: takes what the reader produces and keeps requests in flight.
/// Returns what the reading half reported when it was done.
pub(super) async fn send_all(
    job: &Job,
    options: &RunOptions,
    rows: Box<dyn crate::source::RowStream>,
    changes: Option<ChangeDetection>,
    ledger: &mut Ledger,
    observer: &mut dyn Observer,
    cancel: &CancellationToken,
) -> batch::ReadEnd {
    let thread_count = job.requests_in_flight();
    let (reader, mut produced) = start_reader(job, options, rows, changes, thread_count);

    // The one place concurrency is bounded: a permit per request, moved into its task.
    let limiter = Limiter::new(
        job.thread_count,
        job.most_in_flight(),
        options.account_budget.clone(),
    );
    observer.sending_started(&limiter.current());
    // Each task hands its permit back with its report, so the permit is released only once
    // the report is booked: a stop it brings is seen before the next batch can be sent.
    let mut in_flight: JoinSet<(BatchReport, Permit)> = JoinSet::new();
    let mut permit: Option<Permit> = None;
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
            acquired = limiter.acquire(), if accepting && permit.is_none() => {
                permit = Some(acquired);
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
                                limiter: Arc::clone(&limiter),
                            })));
                            let cancel = cancel.clone();
                            let permit = permit.take().expect("this branch runs only with a permit");
                            in_flight.spawn(async move { (courier.deliver(batch, &cancel).await, permit) });
                        }
                    }
                }
                Some(Produced::Skipped(settled)) => ledger.settle_skipped(&settled, observer),
                Some(Produced::Unchanged(ranges)) => ledger.settle_unchanged(&ranges, observer),
                Some(Produced::Stopped(settled)) => {
                    ledger.settle_stopping(settled, observer);
                    reading = false;
                }
                Some(Produced::SourceFailed(message)) => {
                    ledger.stop(StopReason::SourceFailed(message));
                    reading = false;
                }
            },
        }
    }
    drop(permit);
    settle_never_sent(produced, ledger, observer).await;
    ledger.concurrency = Some(limiter.seen());
    reader_end(reader, ledger)
}

/// Starts the reading half on a thread of its own: rows into batches (and skipped,
/// unchanged or stopping rows), handed over a channel as deep as the requests in flight.
fn start_reader(
    job: &Job,
    options: &RunOptions,
    rows: Box<dyn crate::source::RowStream>,
    changes: Option<ChangeDetection>,
    thread_count: usize,
) -> (
    std::thread::JoinHandle<batch::ReadEnd>,
    mpsc::Receiver<Produced>,
) {
    let filter = changes.map(|detection| ChangeFilter::new(job.target, detection));
    let (sender, produced) = mpsc::channel::<Produced>(thread_count);
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
        batch::produce(rows, &settings, filter, &mut handoff)
    });
    (reader, produced)
}

/// Books what the reader made but was never sent (the run stopped): batches as failed,
/// rows as they would have been settled.
async fn settle_never_sent(
    mut produced: mpsc::Receiver<Produced>,
    ledger: &mut Ledger,
    observer: &mut dyn Observer,
) {
    produced.close();
    while let Some(next) = produced.recv().await {
        match next {
            Produced::Batch(batch) => {
                ledger.counts.read += batch.lines.len() as u64;
                ledger.settle_batch(&unsent(batch, ledger.stop.as_ref()), observer);
            }
            Produced::Skipped(settled) | Produced::Stopped(settled) => {
                ledger.book_unsent_row(&settled, observer);
            }
            Produced::Unchanged(ranges) => ledger.settle_unchanged(&ranges, observer),
            Produced::SourceFailed(message) => ledger.stop(StopReason::SourceFailed(message)),
        }
    }
}

/// What the reading thread reported when it was done. A panic on it is a failed run, never
/// the end of the process.
fn reader_end(
    reader: std::thread::JoinHandle<batch::ReadEnd>,
    ledger: &mut Ledger,
) -> batch::ReadEnd {
    reader.join().unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        ledger.stop(StopReason::SourceFailed(format!(
            "reading the source failed ({message}); this is a bug in tapline, please report it with the source's format"
        )));
        batch::ReadEnd::default()
    })
}

/// Books a finished request task: its stop condition, then its records.
fn settle_joined(
    joined: Result<(BatchReport, Permit), tokio::task::JoinError>,
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
    if let Some(gave_up) = &report.gave_up {
        ledger.stop(gave_up.clone());
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

/// The fingerprints of the batch's records that CleverTap took: all but those it refused.
fn accepted_fingerprints(batch: &Batch, report: &BatchReport) -> Vec<RecordFingerprint> {
    if batch.fingerprints.is_empty() || report.accepted == 0 {
        return Vec::new();
    }
    let refused: std::collections::HashSet<u64> =
        report.settled.iter().map(|settled| settled.line).collect();
    batch
        .lines
        .iter()
        .zip(&batch.fingerprints)
        .filter(|(line, _)| !refused.contains(line))
        .filter_map(|(_, fingerprint)| *fingerprint)
        .collect()
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
        StopReason::Unreachable(_) => "CleverTap unreachable".into(),
        StopReason::GaveUp { .. } => "CleverTap unreachable after every retry".into(),
        StopReason::Interrupted => "interrupted".into(),
        StopReason::SourceFailed(_) => "source unreadable".into(),
        StopReason::Refused(_) => "refused by CleverTap".into(),
        StopReason::ErrorBudget(_) => "too many invalid records".into(),
        StopReason::StateFailed(_) => "progress could not be recorded".into(),
        StopReason::RejectsFailed(_) => "the rejects file could not be written".into(),
    }
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
            // a deletion, its `identity` or `guid`. Each exactly as it will be sent.
            report
                .affected
                .extend((0..batch.lines.len()).filter_map(|index| {
                    let record = batch.record(index)?;
                    Some(match (&record, batch.key) {
                        (serde_json::Value::String(_), _) => affected(&record),
                        (_, Some(key)) => format!("{key} {}", affected(record.get(key)?)),
                        _ => affected(record.get("value")?),
                    })
                }));
        }
    }
    BatchReport::of(batch, 0, Vec::new(), 0)
}

/// A value a destructive operation will send, as a dry run lists it: plain text as it is,
/// a number as a number, and in quotes (JSON's) text whose edges or characters would not
/// show, so `" alice"` is never listed as `alice`.
fn affected(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text)
            if !text.is_empty()
                && text.trim() == text
                && !text.chars().any(|c| c.is_control() || c == '"') =>
        {
            text.clone()
        }
        other => other.to_string(),
    }
}

/// Everything a request task needs to deliver a batch.
struct Courier {
    client: Client,
    /// The connection's name, for messages about credentials.
    connection: String,
    endpoint: Endpoint,
    policy: RetryPolicy,
    /// The run's limit and the account's budget: a slot per attempt, released during
    /// back-off, and told how each attempt went.
    limiter: Arc<Limiter>,
}

impl Courier {
    /// Sends one batch, retrying as [`classify`] says, and settles its records.
    async fn deliver(&self, batch: Batch, cancel: &CancellationToken) -> BatchReport {
        let (result, attempts) = with_retries(self.policy, cancel, || async {
            let sending = self.limiter.sending().await;
            let result = self.client.send(&self.endpoint, batch.body.clone()).await;
            self.limiter.ended(sending, ended(&result));
            result
        })
        .await;
        let failure = match result {
            Ok(response) => {
                let mut report = answered_batch(&batch, &response, attempts);
                report.fingerprints = accepted_fingerprints(&batch, &report);
                return report;
            }
            Err(failure) => failure,
        };
        let reason = match classify(&failure) {
            Verdict::StopRun if matches!(failure, Failure::Unreachable { .. }) => {
                let reason = failure.to_string();
                tracing::error!(batch = batch.index, first_line = batch.first_line(), %reason, "batch not delivered");
                return BatchReport {
                    gave_up: Some(StopReason::Unreachable(reason.clone())),
                    ..failed_batch(&batch, failure_code(&failure), &reason, attempts)
                };
            }
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
            Verdict::Retry { .. } => {
                let reason = format!("{failure} (gave up after {attempts} attempts)");
                tracing::error!(batch = batch.index, first_line = batch.first_line(), %reason, "batch not delivered");
                return BatchReport {
                    gave_up: Some(StopReason::GaveUp {
                        attempts,
                        last_failure: failure.to_string(),
                    }),
                    ..failed_batch(&batch, failure_code(&failure), &reason, attempts)
                };
            }
            Verdict::FailBatch => failure.to_string(),
        };
        tracing::error!(batch = batch.index, first_line = batch.first_line(), %reason, "batch not delivered");
        failed_batch(&batch, failure_code(&failure), &reason, attempts)
    }
}

/// How an attempt ended, as the run's limit hears it.
fn ended<T>(result: &Result<T, Failure>) -> Ended {
    match result {
        Ok(_) => Ended::Answered,
        Err(Failure::Status { status: 429, .. }) => Ended::Throttled,
        Err(failure) => match classify(failure) {
            Verdict::Retry { .. } => Ended::Failed,
            Verdict::StopRun | Verdict::FailBatch => Ended::Neutral,
        },
    }
}

/// Calls CleverTap until it answers, retrying what [`classify`] says to with the policy's
/// back-off; no new attempt starts once `cancel` fires. Returns the last result and the
/// number of attempts made.
pub(super) async fn with_retries<T, F, Fut>(
    policy: RetryPolicy,
    cancel: &CancellationToken,
    mut call: F,
) -> (Result<T, Failure>, u32)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut attempts = 0;
    let mut first_connect_failure = None;
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
        if let Failure::Connect { .. } = failure {
            // Against the back-off's ceiling, not the jittered wait: the number of attempts
            // does not depend on luck (6 or 7 with the default policy).
            let since = *first_connect_failure.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() + policy.delay(attempts, None, 1.0) > policy.connect_patience {
                return (Err(failure), attempts);
            }
        }
        // Throttling is routine at full concurrency; anything else is worth a line while
        // the run waits (on the terminal, and in the daemon's log).
        if matches!(failure, Failure::Status { status: 429, .. }) {
            tracing::debug!(attempt = attempts, ?delay, %failure, "retrying");
        } else {
            tracing::warn!(
                "retrying (attempt {} of {}): {failure}",
                attempts + 1,
                policy.max_attempts
            );
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return (Err(failure), attempts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Failure {
        Failure::Connect {
            host: "in1.api.clevertap.com".into(),
            cause: "Connection refused".into(),
        }
    }

    /// A host that refuses every connection is given up within the policy's patience, after
    /// 6 or 7 attempts however the jitter falls; a 503 gets all 10.
    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_is_given_up_within_the_patience() {
        let policy = RetryPolicy::default();
        let cancel = CancellationToken::new();
        for _ in 0..20 {
            let started = tokio::time::Instant::now();
            let (result, attempts) =
                with_retries(policy, &cancel, || async { Err::<(), _>(refused()) }).await;
            assert_eq!(result, Err(refused()));
            assert!((6..=7).contains(&attempts), "{attempts}");
            assert!(started.elapsed() <= policy.connect_patience);
        }
        let unavailable = Failure::Status {
            status: 503,
            retry_after: None,
            message: String::new(),
        };
        let (_, attempts) = with_retries(policy, &cancel, || async {
            Err::<(), _>(unavailable.clone())
        })
        .await;
        assert_eq!(attempts, policy.max_attempts);
    }
}
