//! What a run did: per-batch reports, why it stopped, its summary, and the rejects file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::outcome::{Counts, ReasonCount, RunStatus, Settled, StopKind};

/// The outcome of one batch: the unit a checkpoint can record.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    /// 0-based batch number in the run.
    pub index: u64,
    /// First source line in the batch.
    pub first_line: u64,
    /// Last source line in the batch.
    pub last_line: u64,
    /// Records in the batch.
    pub records: usize,
    /// Records CleverTap took.
    pub accepted: usize,
    /// Records refused or not delivered, each with its reason.
    pub settled: Vec<Settled>,
    /// Requests made for this batch (1 + retries); 0 in a dry run or when never sent.
    pub attempts: u32,
    /// Set when CleverTap could not be reached however often the batch was retried
    /// ([`StopReason::GaveUp`]), or cannot be reached at all ([`StopReason::Unreachable`]).
    /// The run stops, since the batches after it would meet the same.
    pub gave_up: Option<StopReason>,
    /// With `send: changes`: the fingerprints of the records CleverTap took, to record.
    pub fingerprints: Vec<crate::changes::RecordFingerprint>,
}

/// Why a run ended before the end of its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// An invalid record, with `skip_invalid_records: false`.
    InvalidRecord {
        /// Its line.
        line: u64,
        /// Why it is invalid.
        reason: String,
    },
    /// CleverTap refused a record, with `skip_invalid_records: false`.
    Rejected {
        /// Its line.
        line: u64,
        /// CleverTap's reason.
        reason: String,
    },
    /// CleverTap refused the credentials.
    Unauthorized(String),
    /// CleverTap cannot be reached as the connection names it: its host does not exist,
    /// or its certificate cannot be trusted.
    Unreachable(String),
    /// A batch could not be delivered however often it was retried (CleverTap down,
    /// throttling that never eased, the network gone).
    GaveUp {
        /// Requests made for the batch.
        attempts: u32,
        /// The last one's failure.
        last_failure: String,
    },
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The source file became unreadable.
    SourceFailed(String),
    /// CleverTap refused a step of a multi-step upload (a custom list), with its message.
    Refused(String),
    /// More invalid records than `max_invalid_records` / `max_invalid_ratio` allow.
    ErrorBudget(String),
    /// A checkpoint could not be written, so going on could send records twice later.
    StateFailed(String),
    /// The rejects file could not be written (a full disk, say): records whose entry is
    /// missing are not settled, so the run stops.
    RejectsFailed(String),
}

impl StopReason {
    /// Its kind, as a word a program can match on.
    pub fn kind(&self) -> StopKind {
        match self {
            StopReason::InvalidRecord { .. } => StopKind::InvalidRecord,
            StopReason::Rejected { .. } => StopKind::Rejected,
            StopReason::Unauthorized(_) => StopKind::Unauthorized,
            StopReason::Unreachable(_) => StopKind::Unreachable,
            StopReason::GaveUp { .. } => StopKind::GaveUp,
            StopReason::Interrupted => StopKind::Interrupted,
            StopReason::SourceFailed(_) => StopKind::SourceFailed,
            StopReason::Refused(_) => StopKind::Refused,
            StopReason::ErrorBudget(_) => StopKind::ErrorBudget,
            StopReason::StateFailed(_) => StopKind::StateFailed,
            StopReason::RejectsFailed(_) => StopKind::RejectsFailed,
        }
    }

    /// How much a reason says about the run: one that ends every request (refused
    /// credentials most of all) outweighs one about the records or a signal; between equals
    /// the first stays.
    pub(super) fn weight(&self) -> u8 {
        match self {
            StopReason::InvalidRecord { .. }
            | StopReason::Rejected { .. }
            | StopReason::ErrorBudget(_)
            | StopReason::Interrupted => 0,
            StopReason::GaveUp { .. }
            | StopReason::SourceFailed(_)
            | StopReason::Refused(_)
            | StopReason::StateFailed(_)
            | StopReason::RejectsFailed(_) => 1,
            StopReason::Unauthorized(_) | StopReason::Unreachable(_) => 2,
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::InvalidRecord { line, reason } => write!(
                f,
                "stopped at line {line}, an invalid record: {reason} (fix the row, or set `skip_invalid_records: true` to skip such rows)"
            ),
            StopReason::Rejected { line, reason } => write!(
                f,
                "stopped: CleverTap rejected the record at line {line}: {reason} (set `skip_invalid_records: true` to go on past rejected records)"
            ),
            StopReason::Unauthorized(message) | StopReason::Unreachable(message) => {
                write!(f, "stopped: {message}")
            }
            StopReason::GaveUp {
                attempts,
                last_failure,
            } => write!(
                f,
                "stopped: a batch was not delivered after {attempts} attempts (the last: {last_failure}); what was delivered is checkpointed, and the next run sends the rest"
            ),
            StopReason::Interrupted => {
                write!(f, "interrupted: no new requests were sent after the signal")
            }
            StopReason::SourceFailed(message) => {
                write!(f, "stopped: the source cannot be read: {message}")
            }
            StopReason::Refused(message) => write!(f, "failed: {message}"),
            StopReason::ErrorBudget(message) => write!(
                f,
                "stopped: {message}; the file looks broken (fix it, or raise the limit in the pipeline)"
            ),
            StopReason::StateFailed(message) => write!(
                f,
                "stopped: progress cannot be recorded in the state store: {message}"
            ),
            StopReason::RejectsFailed(message) => write!(f, "stopped: {message}"),
        }
    }
}

/// A dry run's account of what would have been sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRunReport {
    /// Requests that would have been made.
    pub requests: u64,
    /// Records that would have been sent.
    pub records: u64,
    /// The first record that would have been sent.
    pub sample: Option<Value>,
    /// For operations CleverTap cannot undo: every identity or phone number affected.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub affected: Vec<String>,
}

/// Everything a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The pipeline's name.
    pub pipeline: String,
    /// The run's ID.
    pub run_id: String,
    /// Where each record ended.
    pub counts: Counts,
    /// HTTP requests made, retries included.
    pub requests: u64,
    /// Of those, retries.
    pub retries: u64,
    /// Wall time.
    pub duration: Duration,
    /// The rejects file, when any record was skipped, rejected or failed.
    pub rejects_file: Option<PathBuf>,
    /// Why the run stopped early, if it did.
    pub stop: Option<StopReason>,
    /// Set in a dry run.
    pub dry_run: Option<DryRunReport>,
    /// Things worth knowing that did not fail the run.
    pub warnings: Vec<String>,
    /// For a custom list: the ID of the segment CleverTap made or updated.
    pub segment_id: Option<i64>,
    /// Source rows left out because an earlier run had settled them.
    pub rows_resumed: u64,
    /// The run whose checkpoint this one went on from.
    pub resumed_from: Option<String>,
    /// Set when nothing was sent because the file was already delivered: by which run.
    pub up_to_date: Option<String>,
    /// Why records were not accepted, by code, most frequent first.
    pub reasons: Vec<ReasonCount>,
    /// The limits of requests in flight it went through (none when it sent nothing).
    pub concurrency: Option<super::concurrency::Concurrency>,
}

impl RunSummary {
    /// The summary of a run that sent nothing (yet): no counts, no stop.
    pub fn empty(pipeline: &str, run_id: &str) -> Self {
        RunSummary {
            pipeline: pipeline.to_string(),
            run_id: run_id.to_string(),
            counts: Counts::default(),
            requests: 0,
            retries: 0,
            duration: Duration::ZERO,
            rejects_file: None,
            stop: None,
            dry_run: None,
            warnings: Vec::new(),
            segment_id: None,
            rows_resumed: 0,
            resumed_from: None,
            up_to_date: None,
            reasons: Vec::new(),
            concurrency: None,
        }
    }

    /// Whether every record read was delivered or (allowed) skipped.
    pub fn succeeded(&self) -> bool {
        self.stop.is_none() && self.counts.failed == 0 && self.counts.rejected == 0
    }

    /// How the run ended: the one place a run's status is worked out.
    pub fn status(&self) -> RunStatus {
        if self.up_to_date.is_some() {
            RunStatus::UpToDate
        } else if self.succeeded() {
            RunStatus::Succeeded
        } else if self.stop == Some(StopReason::Interrupted) {
            RunStatus::Interrupted
        } else {
            RunStatus::Failed
        }
    }
}
