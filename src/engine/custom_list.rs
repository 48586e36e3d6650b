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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::outcome::{DryRunReport, RejectsFile, RunSummary, StopReason};
use super::{Delivery, Job, RunOptions, with_retries};
use crate::clevertap::Failure;
use crate::clevertap::retry::{Verdict, classify};
use crate::clevertap::wire::CustomListCompleted;
use crate::config::model::{CustomList, OnInvalidRecord};
use crate::mapping::{self, custom_list_line};
use crate::outcome::{Code, Counts, Outcome, Settled};
use crate::source::{self, Row, RowError};

const HEADER: &[u8] = b"Type,Identity\n";

/// CleverTap's limit on a custom list's CSV uploaded through the API (5 GB).
pub const MAX_LIST_BYTES: u64 = 5_000_000_000;

/// What reading the source once produced.
struct Tally {
    read: u64,
    lines: u64,
    skipped: u64,
    /// Bytes of the CSV, its header included.
    bytes: u64,
    sample: Option<serde_json::Value>,
    stop: Option<StopReason>,
    rejects: RejectsFile,
}

/// Reads every row into CSV lines written to `output`. Skipped rows go to the rejects file;
/// an invalid row with `Stop`, an unreadable file, a list past [`MAX_LIST_BYTES`] or a
/// failed write stops it.
fn write_entries(
    job: &Job,
    rejects_path: &Path,
    output: &mut dyn Write,
    cancel: &CancellationToken,
) -> Tally {
    let mut tally = Tally {
        read: 0,
        lines: 0,
        skipped: 0,
        bytes: 0,
        sample: None,
        stop: None,
        rejects: RejectsFile::new(rejects_path),
    };
    let mut write = |tally: &mut Tally, bytes: &[u8]| match output.write_all(bytes) {
        Ok(()) => {
            tally.bytes += bytes.len() as u64;
            true
        }
        Err(error) => {
            tally.stop = Some(StopReason::StateFailed(format!(
                "cannot write the list to its spool file in the state directory: {error}"
            )));
            false
        }
    };
    let mut rows = match source::open(&job.source) {
        Ok(rows) => rows,
        Err(error) => {
            tally.stop = Some(StopReason::SourceFailed(error.to_string()));
            return tally;
        }
    };
    if !write(&mut tally, HEADER) {
        return tally;
    }
    let mut row = Row::default();
    while let Some(next) = rows.read_row(&mut row) {
        let entry = match next {
            Ok(()) => match (&row.record, &job.output) {
                // Replayed from a rejects file: already an entry.
                (Some(record), _) => Ok(record.clone()),
                (None, Some(mapping)) => mapping::output::apply(mapping, &row, &job.context)
                    .and_then(|mapped| mapping::map_row(job.target, &mapped)),
                (None, None) => mapping::map_row(job.target, &row),
            }
            .map_err(|invalid| (row.line, invalid.code, invalid.reason, row.to_json())),
            Err(RowError::Invalid { line, reason, raw }) => Err((
                line,
                Code::MalformedRow,
                reason,
                serde_json::Value::String(raw),
            )),
            Err(RowError::Fatal(message)) => {
                tally.stop = Some(StopReason::SourceFailed(message));
                break;
            }
        };
        tally.read += 1;
        match entry {
            Ok(entry) => {
                let line = custom_list_line(&entry);
                if tally.bytes + line.len() as u64 > MAX_LIST_BYTES {
                    tally.stop = Some(StopReason::Refused(format!(
                        "the list's CSV would pass CleverTap's limit of {MAX_LIST_BYTES} bytes (5 GB) at line {}, with {} bytes before it; split the source into several lists",
                        row.line, tally.bytes
                    )));
                    break;
                }
                if !write(&mut tally, line.as_bytes()) {
                    break;
                }
                tally.lines += 1;
                tally.sample.get_or_insert(entry);
                // Ctrl-C breaks the list off; CleverTap never sees a partial list.
                if tally.lines.is_multiple_of(10_000) && cancel.is_cancelled() {
                    tally.stop = Some(StopReason::Interrupted);
                    break;
                }
            }
            Err((line, code, reason, data)) => {
                let stops =
                    job.on_invalid_record == OnInvalidRecord::Stop && code != Code::EmptyRow;
                let outcome = if stops {
                    Outcome::Failed
                } else {
                    Outcome::Skipped
                };
                tally.rejects.write(&Settled {
                    line,
                    outcome,
                    code,
                    reason: reason.clone(),
                    row: Some(data),
                    record: None,
                });
                if stops {
                    tally.stop = Some(StopReason::InvalidRecord { line, reason });
                    break;
                }
                tally.skipped += 1;
            }
        }
    }
    if tally.stop.is_none()
        && let Err(error) = output.flush()
    {
        tally.stop = Some(StopReason::StateFailed(format!(
            "cannot write the list to its spool file in the state directory: {error}"
        )));
    }
    tally
}

/// The spooled CSV of one run; the file is removed when it is dropped, however the run ends.
struct Spool {
    path: PathBuf,
}

impl Spool {
    fn create(dir: &Path, job: &Job) -> std::io::Result<(Spool, std::fs::File)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}-{}.csv", job.pipeline, job.context.run_id));
        let file = std::fs::File::create(&path)?;
        Ok((Spool { path }, file))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %self.path.display(), %error, "cannot remove a custom list's spool file");
        }
    }
}

/// Runs a custom-list job: dry run, or the spool and the three steps with retries.
pub(super) async fn run(
    job: Job,
    list: &CustomList,
    options: RunOptions,
    cancel: CancellationToken,
) -> RunSummary {
    let started = Instant::now();
    let job = Arc::new(job);
    let summary = |tally: &Tally, counts: Counts, requests: u64, retries: u64| RunSummary {
        pipeline: job.pipeline.clone(),
        run_id: job.context.run_id.clone(),
        counts,
        requests,
        retries,
        duration: started.elapsed(),
        rejects_file: None,
        stop: tally.stop.clone(),
        dry_run: None,
        warnings: Vec::new(),
        segment_id: None,
        rows_resumed: 0,
        resumed_from: None,
        up_to_date: None,
    };
    let read = |spool: Option<std::fs::File>| {
        let reader_job = Arc::clone(&job);
        let path = options.rejects_path.clone();
        let reader_cancel = cancel.clone();
        tokio::task::spawn_blocking(move || match spool {
            Some(file) => {
                let mut output = std::io::BufWriter::with_capacity(256 * 1024, file);
                write_entries(&reader_job, &path, &mut output, &reader_cancel)
            }
            None => write_entries(&reader_job, &path, &mut std::io::sink(), &reader_cancel),
        })
    };
    let client = match &options.delivery {
        Delivery::DryRun => {
            let tally = read(None)
                .await
                .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
            let counts = Counts {
                read: tally.read,
                skipped: tally.skipped,
                failed: tally.read - tally.lines - tally.skipped,
                ..Counts::default()
            };
            let mut result = summary(&tally, counts, 0, 0);
            result.dry_run = Some(DryRunReport {
                requests: 3,
                records: tally.lines,
                sample: tally.sample.clone(),
                affected: Vec::new(),
            });
            return finish(result, tally);
        }
        Delivery::Send(client) => client.clone(),
    };

    // The CSV first, into the spool: its length is known before anything is sent, and a
    // list that stops early (an invalid row, past 5 GB) costs no request.
    let (spool, file) = match Spool::create(&options.spool_dir, &job) {
        Ok(spool) => spool,
        Err(error) => {
            let tally = stopped(
                &options,
                StopReason::StateFailed(format!(
                    "cannot make the custom list's spool file in `{}`: {error} (choose another folder with --state-dir)",
                    options.spool_dir.display()
                )),
            );
            return finish(summary(&tally, Counts::default(), 0, 0), tally);
        }
    };
    let tally = read(Some(file))
        .await
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
    if tally.stop.is_some() {
        let counts = tally.counts(false);
        return finish(summary(&tally, counts, 0, 0), tally);
    }

    let mut requests = 0;
    let mut retries = 0;
    // Step 1: a pre-signed URL.
    let (presigned, attempts) =
        with_retries(options.retry, &cancel, || client.presigned_url()).await;
    requests += u64::from(attempts);
    retries += u64::from(attempts - 1);
    let presigned = match presigned {
        Ok(presigned) => presigned,
        Err(failure) => {
            let mut tally = tally;
            tally.stop = Some(failed_step("get an upload URL", &job, &failure));
            let counts = tally.counts(false);
            return finish(summary(&tally, counts, requests, retries), tally);
        }
    };
    // Step 2: the spooled CSV with its exact length; a retry sends the same bytes again.
    let (uploaded, attempts) = with_retries(options.retry, &cancel, || {
        client.put_presigned(&presigned.url, &spool.path, tally.bytes)
    })
    .await;
    requests += u64::from(attempts);
    retries += u64::from(attempts - 1);
    drop(spool);
    if let Err(failure) = uploaded {
        let mut tally = tally;
        tally.stop = Some(StopReason::Refused(format!(
            "could not upload the list to its pre-signed URL: {failure}"
        )));
        let counts = tally.counts(false);
        return finish(summary(&tally, counts, requests, retries), tally);
    }
    // Step 3: register the segment.
    let completed = CustomListCompleted {
        name: list.name.clone(),
        email: list.uploader_email.clone(),
        filename: format!("{}.csv", job.pipeline),
        creator: "tapline".into(),
        url: presigned.url.clone(),
        replace: list.replace,
    };
    let (answer, attempts) = with_retries(options.retry, &cancel, || {
        client.complete_custom_list(&completed)
    })
    .await;
    requests += u64::from(attempts);
    retries += u64::from(attempts - 1);
    let mut refusal = match answer {
        Ok(answer) if answer.status == "success" => {
            let mut result = summary(&tally, tally.counts(true), requests, retries);
            result.segment_id = answer.segment_id;
            return finish(result, tally);
        }
        Ok(answer) => answer
            .error
            .unwrap_or_else(|| format!("CleverTap answered `{}`", answer.status)),
        Err(failure) => failure_message(&failure),
    };
    if attempts > 1 && !list.replace {
        refusal.push_str(
            " (this step was tried again after an attempt whose answer was lost, which may have created the segment already: check the dashboard for it before running again)",
        );
    }
    let mut tally = tally;
    tally.stop = Some(StopReason::Refused(format!(
        "CleverTap did not register segment `{}`: {refusal}",
        list.name
    )));
    let counts = tally.counts(false);
    finish(summary(&tally, counts, requests, retries), tally)
}

/// A tally of a list that stopped before any row was read.
fn stopped(options: &RunOptions, stop: StopReason) -> Tally {
    Tally {
        read: 0,
        lines: 0,
        skipped: 0,
        bytes: 0,
        sample: None,
        stop: Some(stop),
        rejects: RejectsFile::new(&options.rejects_path),
    }
}

impl Tally {
    /// Where the identities read ended: uploaded ones are accepted only once the segment
    /// is registered; rows neither uploaded nor skipped (the one that stopped the run) failed.
    fn counts(&self, registered: bool) -> Counts {
        let not_uploaded = self.read - self.lines - self.skipped;
        let (accepted, failed) = if registered {
            (self.lines, not_uploaded)
        } else {
            (0, self.lines + not_uploaded)
        };
        Counts {
            read: self.read,
            accepted,
            skipped: self.skipped,
            failed,
            ..Counts::default()
        }
    }
}

fn finish(mut summary: RunSummary, tally: Tally) -> RunSummary {
    let (path, error) = tally.rejects.finish();
    summary.rejects_file = path;
    summary.warnings.extend(error);
    if summary.counts.read == 0 && summary.stop.is_none() {
        summary.warnings.push("the source has no records".into());
    }
    summary
}

fn failure_message(failure: &Failure) -> String {
    match failure {
        Failure::Status { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn failed_step(step: &str, job: &Job, failure: &Failure) -> StopReason {
    match classify(failure) {
        Verdict::StopRun => StopReason::Unauthorized(format!(
            "CleverTap refused the credentials of connection `{}` ({failure}); check its account_id, passcode and region",
            job.connection
        )),
        _ => StopReason::Refused(format!("could not {step}: {failure}")),
    }
}
