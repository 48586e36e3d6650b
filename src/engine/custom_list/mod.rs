//! A custom-list upload (docs/clevertap-api.md §7): the source's identities become one
//! `Type,Identity` CSV, spooled to a file in the state directory (never held in memory), sent
//! to a pre-signed URL with its exact `Content-Length` and registered as a segment. Every
//! identity read ends uploaded (accepted), skipped or failed.
//!
//! Why a spool file: a pre-signed S3 URL refuses a chunked upload (`501 NotImplemented`) and
//! one without `Content-Length` (`411`), so the length must be known before the first byte
//! goes. Counting in a first pass and streaming in a second would map the source twice and
//! fail if the file changed between the passes; the spool is the exact bytes that were
//! counted, and a retried upload sends the same bytes again without reading the source.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

mod spool;
use spool::Spool;

use super::ledger::{Judged, Ledger};
use super::read::{Read, SourceRows, skipped};
use super::send::with_retries;
use super::{BatchReport, Delivery, Job, Observer, RunOptions, RunSummary, StopReason};
use crate::changes::RecordFingerprint;
use crate::clevertap::Failure;
use crate::clevertap::retry::{Verdict, classify};
use crate::clevertap::wire::{AnswerStatus, CustomListCompleted};
use crate::config::model::{CustomList, OnInvalidRecord, SegmentMode};
use crate::mapping::{self, custom_list_line};
use crate::outcome::{Code, Outcome, Settled};
use crate::source;

const HEADER: &[u8] = b"Type,Identity\n";

/// CleverTap's limit on a custom list's CSV uploaded through the API (5 GB).
pub const MAX_LIST_BYTES: u64 = 5_000_000_000;

/// The list that reading the source made (its rows' outcomes are in the ledger).
#[derive(Default)]
struct Listed {
    /// Identities written.
    lines: u64,
    /// The source lines of the first and last identity written.
    first_line: Option<u64>,
    last_line: u64,
    /// Bytes of the CSV, its header included.
    bytes: u64,
    /// A hash of the CSV as written: the list's content, for `send: changes`.
    content: xxhash_rust::xxh3::Xxh3,
    sample: Option<serde_json::Value>,
    /// Source rows left out because an earlier run settled them.
    rows_resumed: u64,
}

/// What reading the source into a list needs.
struct Lister<'a> {
    job: &'a Job,
    options: &'a RunOptions,
    cancel: &'a CancellationToken,
}

impl Lister<'_> {
    /// Reads the source into `output` (the CSV) and `lines` (each entry's source line).
    /// Reading and mapping are blocking work; they run here, on this worker (the runtime
    /// moves its other tasks away meanwhile), so the rows book into the ledger and the
    /// observer as on the other paths. A single-threaded runtime has no other worker.
    fn read(
        &self,
        ledger: &mut Ledger,
        observer: &mut dyn Observer,
        output: &mut dyn Write,
        lines: &mut dyn Write,
    ) -> Listed {
        let mut list = ListFiles {
            output,
            lines,
            listed: Listed::default(),
        };
        let mut write = || self.write_entries(ledger, observer, &mut list);
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => write(),
            _ => tokio::task::block_in_place(write),
        }
        list.listed
    }

    /// Reads every row into the list, booking each row's outcome in the ledger: skipped
    /// rows (and the error budget) as on every path; an invalid row with `Stop`, an
    /// unreadable file, a list past [`MAX_LIST_BYTES`] or a failed write stops it.
    fn write_entries(
        &self,
        ledger: &mut Ledger,
        observer: &mut dyn Observer,
        list: &mut ListFiles<'_>,
    ) {
        let job = self.job;
        let rows = match source::open_with_progress(&job.source) {
            Ok((rows, progress)) => {
                observer.source_opened(&progress);
                rows
            }
            Err(error) => return ledger.stop(StopReason::SourceFailed(error.to_string())),
        };
        if let Err(reason) = list.write(HEADER) {
            return ledger.stop(reason);
        }
        let mut source_rows = SourceRows::new(
            rows,
            self.options.already_settled.as_deref(),
            job.output.clone(),
            &job.context,
        );
        while let Some(read) = source_rows.next() {
            let (row, entry) = match read {
                Read::Row {
                    source: row,
                    mapped,
                } => (
                    row.line,
                    match &row.record {
                        // Replayed from a rejects file: already an entry.
                        Some(record) => Ok(record.clone()),
                        None => mapping::map_row(job.target, mapped),
                    }
                    .map_err(|invalid| skipped(row, invalid)),
                ),
                Read::Invalid(settled) => (settled.line, Err(settled)),
                Read::Fatal(message) => {
                    ledger.stop(StopReason::SourceFailed(message));
                    break;
                }
            };
            let go_on = match entry {
                Ok(entry) => self.add_entry(ledger, list, row, entry),
                Err(settled) => self.settle_invalid(ledger, observer, settled),
            };
            if !go_on {
                break;
            }
        }
        list.listed.rows_resumed = source_rows.left_out;
        if ledger.stop.is_none() {
            ledger.check_budget(Judged::AtEnd);
        }
        if ledger.stop.is_none()
            && let Err(error) = list.output.flush().and_then(|()| list.lines.flush())
        {
            ledger.stop(StopReason::StateFailed(format!(
                "cannot write the list to its spool file in the state directory: {error}"
            )));
        }
    }

    /// Adds the entry of source line `row` to the list; false when the list stops here.
    fn add_entry(
        &self,
        ledger: &mut Ledger,
        list: &mut ListFiles<'_>,
        row: u64,
        entry: serde_json::Value,
    ) -> bool {
        ledger.counts.read += 1;
        if let Err(not_added) = list.add(row, entry) {
            if not_added.failed {
                ledger.counts.add(Outcome::Failed, 1);
            }
            ledger.stop(not_added.reason);
            return false;
        }
        // Ctrl-C breaks the list off; CleverTap never sees a partial list.
        if list.listed.lines.is_multiple_of(10_000) && self.cancel.is_cancelled() {
            ledger.stop(StopReason::Interrupted);
            return false;
        }
        true
    }

    /// Books a row that makes no entry; false when it stops the list.
    fn settle_invalid(
        &self,
        ledger: &mut Ledger,
        observer: &mut dyn Observer,
        settled: Settled,
    ) -> bool {
        // A row without an identity is no entry at all: skipped whatever
        // `skip_invalid_records` says.
        if self.job.on_invalid_record == OnInvalidRecord::Stop && settled.code != Code::EmptyRow {
            ledger.settle_stopping(
                Settled {
                    outcome: Outcome::Failed,
                    ..settled
                },
                observer,
            );
            return false;
        }
        ledger.settle_skipped(&settled, observer);
        ledger.stop.is_none()
    }
}

/// The list being spooled: its CSV, the source line of each entry, and what they hold.
struct ListFiles<'a> {
    output: &'a mut dyn Write,
    lines: &'a mut dyn Write,
    listed: Listed,
}

/// Why an entry was not added: what stops the run, and whether the entry counts failed.
struct NotAdded {
    reason: StopReason,
    failed: bool,
}

impl ListFiles<'_> {
    /// Writes bytes of the CSV.
    fn write(&mut self, bytes: &[u8]) -> Result<(), StopReason> {
        self.output.write_all(bytes).map_err(|error| {
            StopReason::StateFailed(format!(
                "cannot write the list to its spool file in the state directory: {error}"
            ))
        })?;
        self.listed.bytes += bytes.len() as u64;
        self.listed.content.update(bytes);
        Ok(())
    }

    /// Adds the entry of source line `row`, unless the list would pass CleverTap's limit.
    fn add(&mut self, row: u64, entry: serde_json::Value) -> Result<(), NotAdded> {
        let line = custom_list_line(&entry);
        if self.listed.bytes + line.len() as u64 > MAX_LIST_BYTES {
            return Err(NotAdded {
                reason: StopReason::Refused(format!(
                    "the list's CSV would pass CleverTap's limit of {MAX_LIST_BYTES} bytes (5 GB) at line {row}, with {} bytes before it; split the source into several lists",
                    self.listed.bytes
                )),
                failed: true,
            });
        }
        self.write(line.as_bytes()).map_err(|reason| NotAdded {
            reason,
            failed: true,
        })?;
        self.listed.lines += 1;
        writeln!(self.lines, "{row}").map_err(|error| NotAdded {
            reason: StopReason::StateFailed(format!(
                "cannot write the list's line numbers to its spool file in the state directory: {error}"
            )),
            failed: false,
        })?;
        let listed = &mut self.listed;
        listed.first_line.get_or_insert(row);
        listed.last_line = row;
        listed.sample.get_or_insert(entry);
        Ok(())
    }
}

/// Runs a custom-list job: dry run, or the spool and the three steps with retries.
pub(super) async fn run(
    job: Job,
    list: &CustomList,
    mut options: RunOptions,
    observer: &mut dyn Observer,
    cancel: CancellationToken,
) -> RunSummary {
    let started = Instant::now();
    let mut ledger = Ledger::new(&job, &options);
    let changes = options.changes.take();
    let lister = Lister {
        job: &job,
        options: &options,
        cancel: &cancel,
    };
    let (listed, sent) = match &options.delivery {
        Delivery::DryRun => {
            let sink = (&mut std::io::sink(), &mut std::io::sink());
            let listed = lister.read(&mut ledger, observer, sink.0, sink.1);
            if let Some(report) = &mut ledger.dry_run {
                report.requests = 3;
                report.records = listed.lines;
                report.sample.clone_from(&listed.sample);
            }
            (listed, Sent::NotRegistered)
        }
        Delivery::Send(client) => {
            let steps = Steps {
                client,
                job: &job,
                list,
                options: &options,
                cancel: &cancel,
            };
            send(&lister, &steps, changes.as_ref(), &mut ledger, observer).await
        }
    };
    let mut segment_id_made = None;
    if let Sent::Registered {
        segment_id,
        fingerprint,
    } = sent
    {
        // Registered: every identity written is accepted, as one settled batch.
        let report = BatchReport {
            index: 0,
            first_line: listed.first_line.unwrap_or_default(),
            last_line: listed.last_line,
            records: listed.lines as usize,
            accepted: listed.lines as usize,
            settled: Vec::new(),
            attempts: 0,
            gave_up: None,
            fingerprints: fingerprint.into_iter().collect(),
        };
        ledger.settle_batch(&report, observer);
        segment_id_made = segment_id;
    }
    finish(ledger, &job, started, &listed, segment_id_made)
}

/// What sending a list came to.
enum Sent {
    /// CleverTap registered the segment (its ID when it said); with `send: changes`, the
    /// list's fingerprint to keep.
    Registered {
        segment_id: Option<i64>,
        fingerprint: Option<RecordFingerprint>,
    },
    /// CleverTap has this very list already (`send: changes`): nothing was uploaded.
    Unchanged,
    /// The run stopped (the ledger says why) or was a dry run.
    NotRegistered,
}

/// Spools the list, then (unless it is unchanged or the run stopped) uploads and registers
/// it; a list not registered books every identity as failed in the rejects file.
async fn send(
    lister: &Lister<'_>,
    steps: &Steps<'_>,
    changes: Option<&super::ChangeDetection>,
    ledger: &mut Ledger,
    observer: &mut dyn Observer,
) -> (Listed, Sent) {
    // The CSV first, into the spool: its length is known before anything is sent, and a
    // list that stops early (an invalid row, past 5 GB) costs no request.
    let spool_dir = &lister.options.spool_dir;
    let (spool, csv, lines) = match Spool::create(spool_dir, lister.job) {
        Ok(created) => created,
        Err(error) => {
            ledger.stop(StopReason::StateFailed(format!(
                "cannot make the custom list's spool file in `{}`: {error} (choose another folder with --state-dir)",
                spool_dir.display()
            )));
            return (Listed::default(), Sent::NotRegistered);
        }
    };
    let mut output = std::io::BufWriter::with_capacity(256 * 1024, csv);
    let mut lines = std::io::BufWriter::with_capacity(64 * 1024, lines);
    let listed = lister.read(ledger, observer, &mut output, &mut lines);
    drop((output, lines));
    let fingerprint = RecordFingerprint {
        key: crate::changes::custom_list_key(&steps.list.name),
        content: listed.content.digest(),
        expires_at: None,
    };
    let unchanged =
        changes.is_some_and(|changes| changes.holds(fingerprint.key, fingerprint.content));
    if unchanged && ledger.stop.is_none() {
        // CleverTap has this very list: nothing to upload.
        ledger.counts.unchanged += listed.lines;
        if let Some(first) = listed.first_line {
            observer.records_unchanged(&[(first, listed.last_line)], &ledger.counts);
        }
        return (listed, Sent::Unchanged);
    }
    let mut sent = Sent::NotRegistered;
    if ledger.stop.is_none() {
        match steps.upload(&spool.path, listed.bytes, ledger).await {
            Ok(segment_id) => {
                sent = Sent::Registered {
                    segment_id,
                    fingerprint: changes.is_some().then_some(fingerprint),
                }
            }
            Err(stop) => ledger.stop(stop),
        }
    }
    if let Some(stop) = &ledger.stop {
        let reason = format!("the list was not delivered ({stop})");
        spool.book_undelivered(&listed, &reason, ledger, observer);
    }
    (listed, sent)
}

/// The run's summary, with the segment CleverTap made or updated.
fn finish(
    ledger: Ledger,
    job: &Job,
    started: Instant,
    listed: &Listed,
    segment_id: Option<i64>,
) -> RunSummary {
    let mut summary = ledger.finish(job, started.elapsed(), listed.rows_resumed);
    summary.segment_id = segment_id;
    summary
}

/// What the three steps of a custom-list upload need.
struct Steps<'a> {
    client: &'a crate::clevertap::Client,
    job: &'a Job,
    list: &'a CustomList,
    options: &'a RunOptions,
    cancel: &'a CancellationToken,
}

impl Steps<'_> {
    /// The three steps for a spooled list: a pre-signed URL, the upload of the spool's `bytes`,
    /// the registration. Returns the segment's ID, or why the list was not registered; books the
    /// requests made.
    async fn upload(
        &self,
        spool: &Path,
        bytes: u64,
        ledger: &mut Ledger,
    ) -> Result<Option<i64>, StopReason> {
        let Steps {
            client,
            job,
            list,
            options,
            cancel,
        } = *self;
        let book = |ledger: &mut Ledger, attempts: u32| {
            ledger.requests += u64::from(attempts);
            ledger.retries += u64::from(attempts.saturating_sub(1));
        };
        // Step 1: a pre-signed URL.
        let (presigned, attempts) =
            with_retries(options.retry, cancel, || client.presigned_url()).await;
        book(ledger, attempts);
        let presigned =
            presigned.map_err(|failure| failed_step("get an upload URL", job, &failure))?;
        // Step 2: the spooled CSV with its exact length; a retry sends the same bytes again.
        let (uploaded, attempts) = with_retries(options.retry, cancel, || {
            client.put_presigned(&presigned.url, spool, bytes)
        })
        .await;
        book(ledger, attempts);
        uploaded.map_err(|failure| {
            StopReason::Refused(format!(
                "could not upload the list to its pre-signed URL: {failure}"
            ))
        })?;
        // Step 3: register the segment.
        let replace = list.mode == SegmentMode::Update;
        let completed = CustomListCompleted {
            name: list.name.clone(),
            email: list.uploader_email.clone(),
            filename: format!("{}.csv", job.pipeline),
            creator: "tapline".into(),
            url: presigned.url.clone(),
            replace,
        };
        let (answer, attempts) = with_retries(options.retry, cancel, || {
            client.complete_custom_list(&completed)
        })
        .await;
        book(ledger, attempts);
        let mut refusal = match answer {
            Ok(answer) if answer.status == AnswerStatus::Success => return Ok(answer.segment_id),
            Ok(answer) => answer
                .error
                .unwrap_or_else(|| format!("CleverTap answered `{}`", answer.status)),
            Err(failure) => failure_message(&failure),
        };
        if attempts > 1 && !replace {
            refusal.push_str(
            " (this step was tried again after an attempt whose answer was lost, which may have created the segment already: check the dashboard for it before running again)",
        );
        }
        Err(StopReason::Refused(format!(
            "CleverTap did not register segment `{}`: {refusal}",
            list.name
        )))
    }
}

fn failure_message(failure: &Failure) -> String {
    match failure {
        Failure::Status { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn failed_step(step: &str, job: &Job, failure: &Failure) -> StopReason {
    match classify(failure) {
        Verdict::StopRun if matches!(failure, Failure::Unreachable { .. }) => {
            StopReason::Unreachable(format!("could not {step}: {failure}"))
        }
        Verdict::StopRun => StopReason::Unauthorized(format!(
            "CleverTap refused the credentials of connection `{}` ({failure}); check its account_id, passcode and region",
            job.connection
        )),
        _ => StopReason::Refused(format!("could not {step}: {failure}")),
    }
}
