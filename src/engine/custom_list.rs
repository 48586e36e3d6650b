//! A custom-list upload (docs/clevertap-api.md §7): the source's identities become one
//! `Type,Identity` CSV, streamed to a pre-signed URL — never held in memory — and then
//! registered as a segment. Every identity read ends uploaded (accepted), skipped or failed.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::outcome::{Counts, DryRunReport, Outcome, RejectsFile, RunSummary, Settled, StopReason};
use super::{Delivery, Job, RunOptions, with_retries};
use crate::clevertap::Failure;
use crate::clevertap::retry::{Verdict, classify};
use crate::clevertap::wire::CustomListCompleted;
use crate::config::model::{CustomList, OnInvalidRecord};
use crate::mapping::{self, custom_list_line};
use crate::source::{self, Row, RowError};

const CHUNK_BYTES: usize = 64 * 1024;
const HEADER: &[u8] = b"Type,Identity\n";

/// What reading the source once produced.
struct Tally {
    read: u64,
    lines: u64,
    skipped: u64,
    sample: Option<serde_json::Value>,
    stop: Option<StopReason>,
    rejects: RejectsFile,
}

/// Reads every row into CSV lines sent down `output` in chunks. Skipped rows go to the
/// rejects file; an invalid row with `Stop` (or an unreadable file) breaks the stream.
fn stream_entries(
    job: &Job,
    rejects_path: &std::path::Path,
    output: Option<&mpsc::Sender<std::io::Result<Bytes>>>,
    cancel: &CancellationToken,
) -> Tally {
    let mut tally = Tally {
        read: 0,
        lines: 0,
        skipped: 0,
        sample: None,
        stop: None,
        rejects: RejectsFile::new(rejects_path),
    };
    let send = |chunk: Vec<u8>| {
        output.is_none_or(|output| output.blocking_send(Ok(Bytes::from(chunk))).is_ok())
    };
    let mut rows = match source::open(&job.source) {
        Ok(rows) => rows,
        Err(error) => {
            tally.stop = Some(StopReason::SourceFailed(error.to_string()));
            return tally;
        }
    };
    let mut chunk = HEADER.to_vec();
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
                "malformed_row".to_string(),
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
                chunk.extend_from_slice(custom_list_line(&entry).as_bytes());
                tally.lines += 1;
                tally.sample.get_or_insert(entry);
                if chunk.len() >= CHUNK_BYTES {
                    // Ctrl-C breaks the upload off; CleverTap never sees a partial list.
                    if cancel.is_cancelled() {
                        tally.stop = Some(StopReason::Interrupted);
                        break;
                    }
                    if !send(std::mem::take(&mut chunk)) {
                        tally.stop = Some(StopReason::Interrupted);
                        return tally;
                    }
                }
            }
            Err((line, code, reason, data)) => {
                let stops = job.on_invalid_record == OnInvalidRecord::Stop && code != "empty_row";
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
    if tally.stop.is_some() {
        if let Some(output) = output {
            let _ =
                output.blocking_send(Err(std::io::Error::other("the custom list stopped early")));
        }
        return tally;
    }
    send(chunk);
    tally
}

/// Runs a custom-list job: dry run, or the three steps with retries.
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
    let client = match &options.delivery {
        Delivery::DryRun => {
            let reader_job = Arc::clone(&job);
            let path = options.rejects_path.clone();
            let reader_cancel = cancel.clone();
            let tally = tokio::task::spawn_blocking(move || {
                stream_entries(&reader_job, &path, None, &reader_cancel)
            })
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
            let tally = Tally {
                read: 0,
                lines: 0,
                skipped: 0,
                sample: None,
                stop: Some(failed_step("get an upload URL", &job, &failure)),
                rejects: RejectsFile::new(&options.rejects_path),
            };
            return finish(summary(&tally, Counts::default(), requests, retries), tally);
        }
    };
    // Step 2: the CSV, streamed; a failed upload reads the file again.
    let mut attempt = 0;
    let tally = loop {
        attempt += 1;
        requests += 1;
        let (sender, receiver) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let reader_job = Arc::clone(&job);
        let path = options.rejects_path.clone();
        let reader_cancel = cancel.clone();
        let reader = tokio::task::spawn_blocking(move || {
            stream_entries(&reader_job, &path, Some(&sender), &reader_cancel)
        });
        let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) },
        ));
        let uploaded = client.put_presigned(&presigned.url, body).await;
        let mut tally = reader
            .await
            .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
        // A stop found while reading (an invalid row, an unreadable file) is not retried.
        let failure = match (uploaded, &tally.stop) {
            (_, Some(_)) | (Ok(()), None) => break tally,
            (Err(failure), None) => failure,
        };
        let retry = matches!(classify(&failure), Verdict::Retry { .. })
            && attempt < options.retry.max_attempts
            && !cancel.is_cancelled();
        if !retry {
            tally.stop = Some(failed_step("upload the list", &job, &failure));
            break tally;
        }
        retries += 1;
        // The upload keeps its own loop (each attempt reads the file again); like
        // `with_retries`, a Ctrl-C during the back-off ends it.
        tokio::select! {
            () = tokio::time::sleep(options.retry.delay(attempt, None, rand::random::<f64>())) => {}
            () = cancel.cancelled() => {
                tally.stop = Some(StopReason::Interrupted);
                break tally;
            }
        }
    };
    if tally.stop.is_some() {
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
    let refusal = match answer {
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
    let mut tally = tally;
    tally.stop = Some(StopReason::Refused(format!(
        "CleverTap did not register segment `{}`: {refusal}",
        list.name
    )));
    let counts = tally.counts(false);
    finish(summary(&tally, counts, requests, retries), tally)
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
