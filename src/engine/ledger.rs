//! The bookkeeping of a run: where each record ended, the rejects file, the requests made,
//! the error budget and why the run stops. Every path (uploads, the other APIs, custom lists)
//! books its records here, so they count, report and stop alike.

use super::rejects::RejectsFile;
use std::time::Duration;

use super::{
    BatchReport, Delivery, DryRunReport, Job, Observer, RunOptions, RunSummary, StopReason,
};
use crate::outcome::{Counts, Reasons, Settled};

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

    /// Why the run must stop, if `counts` break the budget.
    pub(super) fn exceeded(&self, counts: &Counts, judged: Judged) -> Option<String> {
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
            && (judged == Judged::AtEnd || counts.read >= Self::RATIO_MIN_READ)
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

/// The bookkeeping of a run in progress.
pub(super) struct Ledger {
    budget: ErrorBudget,
    pub(super) counts: Counts,
    pub(super) requests: u64,
    pub(super) retries: u64,
    pub(super) rejects: RejectsFile,
    pub(super) stop: Option<StopReason>,
    pub(super) dry_run: Option<DryRunReport>,
    /// Why records were not accepted, by code.
    reasons: Reasons,
    /// The limits of requests in flight the run went through, once it sent.
    pub(super) concurrency: Option<super::concurrency::Concurrency>,
}

/// When the error budget is judged: while reading (the ratio only once enough records are
/// read), or at the end of the source (however few were read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Judged {
    /// While the source is still being read.
    SoFar,
    /// The source is done.
    AtEnd,
}

impl Ledger {
    /// An empty ledger for a run of `job`.
    pub(super) fn new(job: &Job, options: &RunOptions) -> Self {
        Ledger {
            budget: job.error_budget,
            counts: Counts::default(),
            requests: 0,
            retries: 0,
            rejects: match options.delivery {
                Delivery::DryRun => RejectsFile::none(),
                Delivery::Send(_) => RejectsFile::new(&options.rejects_path),
            },
            stop: None,
            reasons: Reasons::default(),
            concurrency: None,
            dry_run: matches!(options.delivery, Delivery::DryRun).then_some(DryRunReport {
                requests: 0,
                records: 0,
                sample: None,
                affected: Vec::new(),
            }),
        }
    }

    /// Books a settled batch: its rejects are written first, then the observer records it
    /// (a checkpoint), so nothing counted as settled is missing from the rejects file.
    /// A batch whose rejects cannot be written is not settled: the run stops, and the next
    /// one sends the batch again.
    pub(super) fn settle_batch(&mut self, report: &BatchReport, observer: &mut dyn Observer) {
        self.counts.accepted += report.accepted as u64;
        let mut written = Ok(());
        for entry in &report.settled {
            self.counts.add(entry.outcome, 1);
            self.reasons.note(entry);
            written = written.and_then(|()| self.rejects.write(entry));
        }
        written = written.and_then(|()| self.rejects.flush());
        if report.attempts > 0 {
            self.requests += u64::from(report.attempts);
            self.retries += u64::from(report.attempts - 1);
        }
        if let Err(error) = written {
            self.stop(StopReason::RejectsFailed(error));
            return;
        }
        if let Err(error) = observer.batch_settled(report, &self.counts) {
            self.stop(StopReason::StateFailed(error.to_string()));
        }
        self.check_budget(Judged::SoFar);
    }

    /// Books lines whose records CleverTap has already (`send: changes`): read, unchanged,
    /// settled.
    pub(super) fn settle_unchanged(&mut self, ranges: &[(u64, u64)], observer: &mut dyn Observer) {
        let count: u64 = ranges.iter().map(|(first, last)| last - first + 1).sum();
        self.counts.read += count;
        self.counts.unchanged += count;
        observer.records_unchanged(ranges, &self.counts);
    }

    /// Books a record skipped before sending.
    pub(super) fn settle_skipped(&mut self, settled: &Settled, observer: &mut dyn Observer) {
        self.counts.read += 1;
        self.counts.add(settled.outcome, 1);
        self.reasons.note(settled);
        // Written and handed to the file system before the line counts as settled.
        if let Err(error) = self
            .rejects
            .write(settled)
            .and_then(|()| self.rejects.flush())
        {
            self.stop(StopReason::RejectsFailed(error));
            return;
        }
        observer.record_skipped(settled, &self.counts);
        self.check_budget(Judged::SoFar);
    }

    pub(super) fn check_budget(&mut self, judged: Judged) {
        if let Some(reason) = self.budget.exceeded(&self.counts, judged) {
            self.stop(StopReason::ErrorBudget(reason));
        }
    }

    /// Books an invalid row that stops the run (with `skip_invalid_records: false`).
    pub(super) fn settle_stopping(&mut self, settled: Settled, observer: &mut dyn Observer) {
        self.book_unsent_row(&settled, observer);
        self.stop(StopReason::InvalidRecord {
            line: settled.line,
            reason: settled.reason,
        });
    }

    /// Books a row that never became a request, without telling the observer (the run is
    /// stopping).
    pub(super) fn book_unsent_row(&mut self, settled: &Settled, observer: &mut dyn Observer) {
        self.counts.read += 1;
        self.book_undelivered(settled, observer);
    }

    /// Books a record read (and counted) earlier that was not delivered after all.
    pub(super) fn book_undelivered(&mut self, settled: &Settled, observer: &mut dyn Observer) {
        self.counts.add(settled.outcome, 1);
        self.reasons.note(settled);
        if let Err(error) = self.rejects.write(settled) {
            self.stop(StopReason::RejectsFailed(error));
        }
        observer.record_failed(settled);
    }

    /// The run's summary, once nothing more is booked.
    pub(super) fn finish(self, job: &Job, duration: Duration, rows_resumed: u64) -> RunSummary {
        let mut warnings = Vec::new();
        if self.counts.read == 0 && rows_resumed == 0 && self.stop.is_none() {
            warnings.push(super::NO_RECORDS.to_string());
        }
        let (rejects_file, rejects_error) = self.rejects.finish();
        // Said once: a run the rejects file stopped says it in its stop reason.
        if !matches!(self.stop, Some(StopReason::RejectsFailed(_))) {
            warnings.extend(rejects_error);
        }
        RunSummary {
            run_id: job.context.run_id.clone(),
            pipeline: job.pipeline.clone(),
            counts: self.counts,
            requests: self.requests,
            retries: self.retries,
            duration,
            rejects_file,
            stop: self.stop,
            dry_run: self.dry_run,
            warnings,
            segment_id: None,
            rows_resumed,
            resumed_from: None,
            up_to_date: None,
            reasons: self.reasons.into_sorted(),
            concurrency: self.concurrency,
        }
    }

    /// Stops the run for `reason`, unless it stops for a weightier one already: what ends
    /// every request (credentials, an outage, a broken source or state) names the cause
    /// before an invalid row met while the run was stopping.
    pub(super) fn stop(&mut self, reason: StopReason) {
        if self
            .stop
            .as_ref()
            .is_none_or(|stopped| reason.weight() > stopped.weight())
        {
            self.stop = Some(reason);
        }
    }
}
