//! Run history: one row per run, written when it starts and again when it ends.
//!
//! A run still marked `running` whose pipeline lock is free was killed; the next run of the
//! pipeline marks it `abandoned`.

use std::path::PathBuf;

use serde::Serialize;

use chrono::{DateTime, Utc};

use crate::outcome::{Code, Concurrency, Counts, RunStatus, StopKind, Trigger};

/// One of the first problems of a run, kept in the history (no record data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FirstError {
    /// Source line.
    pub line: u64,
    /// CleverTap's code or ours.
    pub code: Code,
    /// What went wrong.
    pub reason: String,
}

impl FirstError {
    /// The problem of a settled record.
    pub fn of(settled: &crate::outcome::Settled) -> Self {
        FirstError {
            line: settled.line,
            code: settled.code,
            reason: settled.reason.clone(),
        }
    }
}

/// What is known when a run starts.
#[derive(Debug, Clone)]
pub struct RunStart<'a> {
    /// The run's ID.
    pub run_id: &'a str,
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The pipeline file.
    pub pipeline_file: &'a std::path::Path,
    /// What started it.
    pub trigger: Trigger,
    /// The fire of the schedule it runs for (`schedule` runs).
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Where it sends: the account ID and host, or `sandbox` (never a secret).
    pub destination: &'a str,
}

/// What is known when it ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunFinish {
    /// How it ended.
    pub status: RunStatus,
    /// Where its records ended.
    pub records: Counts,
    /// HTTP requests, retries included.
    pub requests: u64,
    /// Retries.
    pub retries: u64,
    /// The run whose checkpoint it went on from.
    pub resumed_from: Option<String>,
    /// Source rows it did not send because an earlier run had settled them.
    pub rows_resumed: u64,
    /// Its rejects file.
    pub rejects_file: Option<PathBuf>,
    /// Why it stopped early, for a person.
    pub stop_reason: Option<String>,
    /// Why it stopped early, as a word a program matches on (none for runs recorded before
    /// tapline kept it, or by a newer tapline with a kind this one does not know).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_kind: Option<StopKind>,
    /// Its first problems.
    pub first_errors: Vec<FirstError>,
    /// Its warnings.
    pub warnings: Vec<String>,
    /// The limits of requests in flight it went through (none for runs that sent nothing,
    /// or were recorded before tapline kept them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

/// A run as the history shows it: how it started and, flattened in, how it ended (or, for a
/// run still going or killed, its counts at the last checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEntry {
    /// The run's ID.
    pub run_id: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file.
    pub pipeline_file: PathBuf,
    /// What started it (a name this tapline does not know, from a newer one, reads as
    /// `manual`).
    pub trigger: Trigger,
    /// Start, milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// End, when it ended.
    pub finished_at_ms: Option<i64>,
    /// The fire of the schedule it ran for, milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for_ms: Option<i64>,
    /// The process that ran it: `host:pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// Where it sent: `ACCOUNT_ID@https://host`, or `sandbox` for the built-in sandbox
    /// (`--sandbox`). Runs recorded before tapline kept it have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// How it ended.
    #[serde(flatten)]
    pub end: RunFinish,
}

/// Which runs a history reader asks for: newest first, at most `limit`, of one pipeline and
/// one status when given, older than the run `before` when given (the next page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this pipeline's runs.
    pub pipeline: Option<String>,
    /// Only runs that ended so (or are still `running`).
    pub status: Option<RunStatus>,
    /// Only runs that started before this run (by start time, then run ID): the next page
    /// after a page whose last run this is. A run ID the history does not hold gives none.
    pub before: Option<String>,
    /// At most this many.
    pub limit: usize,
}

impl RunEntry {
    /// How long it took, `12.3 s`; none while it runs (or when it was killed).
    pub fn took(&self) -> Option<String> {
        self.finished_at_ms
            .map(|end| format!("{:.1} s", (end - self.started_at_ms).max(0) as f64 / 1000.0))
    }
}

/// A time of the history (milliseconds since the Unix epoch) as it is shown: UTC,
/// `2026-12-05 03:00:00`.
pub fn utc_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map_or_else(|| "?".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

impl RunFilter {
    /// The newest `limit` runs, of `pipeline` or of all.
    pub fn newest(pipeline: Option<&str>, limit: usize) -> RunFilter {
        RunFilter {
            pipeline: pipeline.map(str::to_string),
            limit,
            ..RunFilter::default()
        }
    }
}

/// A stored stop kind read back: `None` when none was stored, or when it is a word of a
/// newer tapline that this one does not know (its `stop_reason` still says it).
pub(super) fn stop_kind(stored: Option<String>) -> Option<StopKind> {
    stored.and_then(|word| word.parse().ok())
}
