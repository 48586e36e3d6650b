//! Where records and runs end, the vocabulary every stage shares: a record's [`Outcome`]
//! and [`Code`], the rejects-file entry [`Settled`], a run's [`Counts`], [`RunStatus`] and
//! [`Trigger`],
//! and the [`SettledLines`] a resumed run leaves out. It imports nothing of tapline's, so the
//! engine, the state store, notifications and the CLI all use it without using each other.

mod code;
mod lines;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use code::Code;
pub use lines::{SettledCursor, SettledLines};

/// Where a record ended. Every record read ends in exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// CleverTap took it.
    Accepted,
    /// It broke a rule before sending, and `skip_invalid_records` let the run go on.
    Skipped,
    /// CleverTap refused it (an `unprocessed` entry).
    Rejected,
    /// It was not delivered: a failed request, a stop, or an invalid record that stopped the run.
    Failed,
}

/// A record that did not end accepted: one line of the rejects file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settled {
    /// The line of the source file the record came from.
    pub line: u64,
    /// Skipped, rejected or failed.
    pub outcome: Outcome,
    /// Why: CleverTap's error code (`515`), or tapline's (`malformed_row`, `http_400`).
    pub code: Code,
    /// What went wrong.
    pub reason: String,
    /// The record itself, as it can be sent again.
    #[serde(flatten)]
    pub carried: Carried,
}

/// What a rejects entry carries of its record: the source row, for records that never
/// became a request, or the CleverTap record as it was sent. `tapline replay` reads it back
/// (possibly fixed by hand) through [`ReplayEntry`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Carried {
    /// The source row, as a JSON object (or the raw text of a row that could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<Value>,
    /// The CleverTap record as it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Value>,
}

impl Carried {
    /// A source row.
    pub fn row(row: Value) -> Self {
        Carried {
            row: Some(row),
            record: None,
        }
    }

    /// A record as sent.
    pub fn record(record: Option<Value>) -> Self {
        Carried { row: None, record }
    }
}

/// A rejects-file entry as `tapline replay` reads it back: what [`Settled`] wrote, of which
/// replay needs the source line and what was carried. The outcome, code and reason are not
/// read (they may have been edited, or removed, by hand).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReplayEntry {
    /// The source line; an entry without one stands on its own line of the rejects file.
    #[serde(default)]
    pub line: Option<u64>,
    /// The record.
    #[serde(flatten)]
    pub carried: Carried,
}

/// How many records ended where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Records read from the source (rows, valid or not).
    pub read: u64,
    /// Taken by CleverTap.
    pub accepted: u64,
    /// Invalid, skipped and reported.
    pub skipped: u64,
    /// Refused by CleverTap.
    pub rejected: u64,
    /// Not delivered.
    pub failed: u64,
    /// Not sent because CleverTap has them already (`send: changes`); written only when some
    /// are, so runs without change detection print what they always did.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unchanged: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

impl Counts {
    /// Each way a record can end with its count, named as `--json` and the history name
    /// it (and the daemon's metrics label it): `accepted`, `unchanged`, `skipped`,
    /// `rejected`, `failed`.
    pub fn by_ending(&self) -> [(&'static str, u64); 5] {
        [
            ("accepted", self.accepted),
            ("unchanged", self.unchanged),
            ("skipped", self.skipped),
            ("rejected", self.rejected),
            ("failed", self.failed),
        ]
    }

    /// Adds `count` records that ended in `outcome`.
    pub fn add(&mut self, outcome: Outcome, count: u64) {
        match outcome {
            Outcome::Accepted => self.accepted += count,
            Outcome::Skipped => self.skipped += count,
            Outcome::Rejected => self.rejected += count,
            Outcome::Failed => self.failed += count,
        }
    }
}

/// How many records that were not accepted share one reason code, with the first of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    /// The code they share.
    pub code: Code,
    /// How many records.
    pub records: u64,
    /// The source line of the first.
    pub example_line: u64,
    /// The first one's reason.
    pub example: String,
}

/// The reasons of a run's records that were not accepted, by code, most frequent first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reasons(Vec<ReasonCount>);

impl Reasons {
    /// Distinct codes kept (a run has a handful; this bounds a hostile server's).
    const MAX_CODES: usize = 64;

    /// Counts a record that was not accepted.
    pub fn note(&mut self, settled: &Settled) {
        if let Some(known) = self.0.iter_mut().find(|known| known.code == settled.code) {
            known.records += 1;
        } else if self.0.len() < Self::MAX_CODES {
            self.0.push(ReasonCount {
                code: settled.code,
                records: 1,
                example_line: settled.line,
                example: settled.reason.clone(),
            });
        }
    }

    /// The reasons, most frequent first (the first seen first among equals).
    pub fn into_sorted(mut self) -> Vec<ReasonCount> {
        self.0
            .sort_by_key(|reason| std::cmp::Reverse(reason.records));
        self.0
    }
}

/// How a run ended (or that it has not), as `--json`, the history and notifications say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still going, or killed before it could say otherwise.
    Running,
    /// Every record delivered (or skipped where allowed).
    Succeeded,
    /// Records were rejected or not delivered, or the run stopped.
    Failed,
    /// Stopped by a signal; the checkpoint lets the next run go on.
    Interrupted,
    /// The process died during the run (found later by the next run).
    Abandoned,
    /// Nothing to send: the file was already delivered.
    UpToDate,
}

impl RunStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Abandoned => "abandoned",
            RunStatus::UpToDate => "up_to_date",
        }
    }

    /// Whether the run did what it was for: everything delivered, or nothing left to deliver.
    pub fn is_success(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::UpToDate)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Interrupted,
            RunStatus::Abandoned,
            RunStatus::UpToDate,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
        .ok_or_else(|| format!("`{text}` is not a run status"))
    }
}

/// What started a run, as `--json`, the history and notifications say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `tapline run`.
    Manual,
    /// `tapline replay`.
    Replay,
    /// The daemon's schedule.
    Schedule,
    /// A file arrived (`trigger: file_arrival`).
    FileArrival,
    /// Asked for through the daemon's console or its HTTP API
    /// (`POST /api/pipelines/{name}/runs`, an orchestrator's trigger).
    Api,
}

impl Trigger {
    /// Every trigger.
    const ALL: [Trigger; 5] = [
        Trigger::Manual,
        Trigger::Replay,
        Trigger::Schedule,
        Trigger::FileArrival,
        Trigger::Api,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Replay => "replay",
            Trigger::Schedule => "schedule",
            Trigger::FileArrival => "file_arrival",
            Trigger::Api => "api",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so tables can align it (`{:<8}`).
        f.pad(self.as_str())
    }
}

impl FromStr for Trigger {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Trigger::ALL
            .into_iter()
            .find(|trigger| trigger.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a trigger"))
    }
}

/// Why a run stopped early, as a word a program can match on (`--json`, the history, a
/// console); the message beside it says the rest for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// An invalid record, with `skip_invalid_records: false`.
    InvalidRecord,
    /// CleverTap refused a record, with `skip_invalid_records: false`.
    Rejected,
    /// CleverTap refused the credentials.
    Unauthorized,
    /// CleverTap's host does not exist, or its certificate cannot be trusted.
    Unreachable,
    /// A batch was not delivered however often it was retried.
    GaveUp,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The source could not be read.
    SourceFailed,
    /// CleverTap refused a step of a custom list's upload.
    Refused,
    /// More invalid records than the error budget allows.
    ErrorBudget,
    /// Progress could not be recorded in the state store.
    StateFailed,
    /// The rejects file could not be written.
    RejectsFailed,
}

impl StopKind {
    /// Every kind.
    const ALL: [StopKind; 11] = [
        StopKind::InvalidRecord,
        StopKind::Rejected,
        StopKind::Unauthorized,
        StopKind::Unreachable,
        StopKind::GaveUp,
        StopKind::Interrupted,
        StopKind::SourceFailed,
        StopKind::Refused,
        StopKind::ErrorBudget,
        StopKind::StateFailed,
        StopKind::RejectsFailed,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            StopKind::InvalidRecord => "invalid_record",
            StopKind::Rejected => "rejected",
            StopKind::Unauthorized => "unauthorized",
            StopKind::Unreachable => "unreachable",
            StopKind::GaveUp => "gave_up",
            StopKind::Interrupted => "interrupted",
            StopKind::SourceFailed => "source_failed",
            StopKind::Refused => "refused",
            StopKind::ErrorBudget => "error_budget",
            StopKind::StateFailed => "state_failed",
            StopKind::RejectsFailed => "rejects_failed",
        }
    }
}

impl fmt::Display for StopKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for StopKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        StopKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a kind of stop"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endings_are_named_as_the_json_names_the_counts() {
        let counts = Counts {
            read: 15,
            accepted: 1,
            unchanged: 2,
            skipped: 3,
            rejected: 4,
            failed: 5,
        };
        let json = serde_json::to_value(counts).unwrap();
        for (name, count) in counts.by_ending() {
            assert_eq!(json[name], count, "{name}");
        }
    }

    #[test]
    fn triggers_read_back_as_written() {
        for trigger in Trigger::ALL {
            assert_eq!(trigger.as_str().parse(), Ok(trigger));
            assert_eq!(
                serde_json::to_value(trigger).unwrap(),
                serde_json::json!(trigger.as_str())
            );
        }
        assert!("cron".parse::<Trigger>().is_err());
    }

    #[test]
    fn stop_kinds_read_back_as_written() {
        for kind in StopKind::ALL {
            assert_eq!(kind.as_str().parse(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
        assert!("exploded".parse::<StopKind>().is_err());
    }

    #[test]
    fn a_rejects_entry_is_written_as_before_and_read_back_typed() {
        let settled = Settled {
            line: 7,
            outcome: Outcome::Rejected,
            code: Code::from_str("515").unwrap(),
            reason: "bad".into(),
            carried: Carried::record(Some(serde_json::json!({"identity": "u1"}))),
        };
        let written = serde_json::to_string(&settled).unwrap();
        assert_eq!(
            written,
            r#"{"line":7,"outcome":"rejected","code":"515","reason":"bad","record":{"identity":"u1"}}"#
        );
        let read: ReplayEntry = serde_json::from_str(&written).unwrap();
        assert_eq!(read.line, Some(7));
        assert_eq!(read.carried, settled.carried);
        // Hand-edited: another code, no reason, a fixed row.
        let edited: ReplayEntry =
            serde_json::from_str(r#"{"line":3,"code":"x","row":{"identity":"u2"}}"#).unwrap();
        assert_eq!(
            edited.carried,
            Carried::row(serde_json::json!({"identity": "u2"}))
        );
    }
}

/// The limits of requests in flight a run went through (`--json`'s and the history's
/// `concurrency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    /// `thread_count: auto`; `false`: a fixed number.
    pub adaptive: bool,
    /// The lowest limit.
    pub min: usize,
    /// The highest.
    pub max: usize,
    /// The limit at the end.
    #[serde(rename = "final")]
    pub last: usize,
}

impl fmt::Display for Concurrency {
    /// `auto: between 4 and 15 requests, 12 at the end`, or `at most 10 requests`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.adaptive {
            write!(
                f,
                "auto: between {} and {} requests, {} at the end",
                self.min, self.max, self.last
            )
        } else {
            write!(f, "at most {} requests", self.max)
        }
    }
}
