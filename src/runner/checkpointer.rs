//! The observer a recorded run hands the engine: it writes the source lines of settled
//! batches (and the fingerprints of accepted records) to the checkpoint, a transaction per
//! half the requests in flight, keeps the first problems for the history, and passes
//! everything on to the progress display.

use crate::changes::RecordFingerprint;
use crate::engine::{BatchReport, NotRecorded, Observer};
use crate::outcome::{Counts, Outcome, Settled, SettledLines};
use crate::state::{Accepted, CheckpointKey, FirstError, StateError, StateStore};

/// Problems kept in the history and the notifications, per run.
pub(super) const FIRST_ERRORS: usize = 5;

/// Records settled lines in the checkpoint as batches settle, and keeps the first problems;
/// passes everything on to the progress display.
pub(super) struct Checkpointer<'a> {
    pub(super) store: &'a mut dyn StateStore,
    pub(super) run_id: &'a str,
    /// What the checkpoint is kept under.
    pub(super) key: CheckpointKey<'a>,
    /// The pipeline's name, which its record fingerprints are kept under.
    pub(super) pipeline: &'a str,
    /// Off when the source has no fingerprint.
    pub(super) recording: bool,
    /// Settled lines not yet written: skipped rows, and batches until there are
    /// `batches_per_write` of them; written together, as one transaction.
    pub(super) pending: Vec<(u64, u64)>,
    /// Fingerprints of accepted records in `pending`'s batches (`send: changes`), written
    /// in the same transaction.
    pub(super) fingerprints: Vec<RecordFingerprint>,
    /// How many settled batches one write covers ([`batches_per_checkpoint`]).
    pub(super) batches_per_write: usize,
    /// Settled batches in `pending`.
    pub(super) unwritten_batches: usize,
    /// The first problems, kept as everything is passed on to the progress display.
    pub(super) notes: ErrorNotes<'a>,
}

impl Checkpointer<'_> {
    /// Writes the settled lines waiting to be written, with the run's counts.
    fn write_pending(&mut self, counts: &Counts) -> Result<(), StateError> {
        if self.recording && !self.pending.is_empty() {
            // Merged: a run that left most rows unchanged writes a few ranges, not a row each.
            let settled = SettledLines::from_ranges(std::mem::take(&mut self.pending));
            self.store.settle_lines(
                self.key,
                settled.ranges(),
                Accepted {
                    pipeline: self.pipeline,
                    fingerprints: &self.fingerprints,
                },
                (self.run_id, counts),
            )?;
        }
        self.pending.clear();
        self.fingerprints.clear();
        self.unwritten_batches = 0;
        Ok(())
    }

    /// Writes what is still waiting when the run ends.
    pub(super) fn flush_pending(&mut self, counts: &Counts) {
        if let Err(error) = self.write_pending(counts) {
            tracing::warn!(%error, "the last settled rows could not be checkpointed; a resumed run will send them again");
        }
    }
}

impl Observer for Checkpointer<'_> {
    fn batch_settled(&mut self, report: &BatchReport, counts: &Counts) -> Result<(), NotRecorded> {
        // Its problems are kept for the history even when the checkpoint cannot be written.
        let shown = self.notes.batch_settled(report, counts);
        // A batch is settled unless it was not delivered (then all of it failed).
        let delivered = !report.settled.iter().any(|s| s.outcome == Outcome::Failed);
        if delivered && report.records > 0 {
            self.pending.push((report.first_line, report.last_line));
        }
        self.fingerprints.extend_from_slice(&report.fingerprints);
        self.unwritten_batches += 1;
        if self.unwritten_batches >= self.batches_per_write {
            self.write_pending(counts)
                .map_err(|error| NotRecorded(Box::new(error)))?;
        }
        shown
    }

    fn record_skipped(&mut self, settled: &Settled, counts: &Counts) {
        self.pending.push((settled.line, settled.line));
        self.notes.record_skipped(settled, counts);
    }

    fn records_unchanged(&mut self, ranges: &[(u64, u64)], counts: &Counts) {
        self.pending.extend_from_slice(ranges);
        self.notes.records_unchanged(ranges, counts);
    }

    fn record_failed(&mut self, settled: &Settled) {
        self.notes.record_failed(settled);
    }

    fn source_opened(&mut self, progress: &crate::source::ReadProgress) {
        self.notes.source_opened(progress);
    }

    fn sending_started(&mut self, limit: &crate::engine::concurrency::CurrentLimit) {
        self.notes.sending_started(limit);
    }

    fn query_started(&mut self, database: &str) {
        self.notes.query_started(database);
    }
}

/// Keeps the first problems of a run for its history entry (and notifications), and passes
/// everything on to the progress display: on its own for a run without a checkpoint (one
/// sent to the built-in sandbox), inside the [`Checkpointer`] otherwise.
pub(super) struct ErrorNotes<'a> {
    pub(super) first_errors: Vec<FirstError>,
    progress: &'a mut dyn Observer,
}

impl<'a> ErrorNotes<'a> {
    pub(super) fn new(progress: &'a mut dyn Observer) -> Self {
        ErrorNotes {
            first_errors: Vec::new(),
            progress,
        }
    }

    fn note(&mut self, settled: &Settled) {
        if self.first_errors.len() < FIRST_ERRORS {
            self.first_errors.push(FirstError::of(settled));
        }
    }
}

impl Observer for ErrorNotes<'_> {
    fn batch_settled(&mut self, report: &BatchReport, counts: &Counts) -> Result<(), NotRecorded> {
        for settled in &report.settled {
            self.note(settled);
        }
        self.progress.batch_settled(report, counts)
    }

    fn record_skipped(&mut self, settled: &Settled, counts: &Counts) {
        self.note(settled);
        self.progress.record_skipped(settled, counts);
    }

    fn records_unchanged(&mut self, ranges: &[(u64, u64)], counts: &Counts) {
        self.progress.records_unchanged(ranges, counts);
    }

    fn record_failed(&mut self, settled: &Settled) {
        self.note(settled);
        self.progress.record_failed(settled);
    }

    fn source_opened(&mut self, progress: &crate::source::ReadProgress) {
        self.progress.source_opened(progress);
    }

    fn sending_started(&mut self, limit: &crate::engine::concurrency::CurrentLimit) {
        self.progress.sending_started(limit);
    }

    fn query_started(&mut self, database: &str) {
        self.progress.query_started(database);
    }
}
