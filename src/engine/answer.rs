//! CleverTap's answer to a batch, decoded into an outcome for each of its records: accepted,
//! rejected (an `unprocessed` entry, found by its record number or echoed identity), or
//! failed with the request.

use super::BatchReport;
use super::batch::Batch;
use crate::clevertap::Failure;
use crate::clevertap::wire::{AnswerStatus, UploadResponse};
use crate::outcome::{Carried, Code, Outcome, Settled};

impl BatchReport {
    pub(super) fn of(batch: &Batch, accepted: usize, settled: Vec<Settled>, attempts: u32) -> Self {
        BatchReport {
            index: batch.index,
            first_line: batch.first_line(),
            last_line: batch.last_line(),
            records: batch.lines.len(),
            accepted,
            settled,
            attempts,
            gave_up: None,
            fingerprints: Vec::new(),
        }
    }
}

pub(super) fn failed_batch(batch: &Batch, code: Code, reason: &str, attempts: u32) -> BatchReport {
    let settled = batch
        .lines
        .iter()
        .enumerate()
        .map(|(index, &line)| Settled {
            line,
            outcome: Outcome::Failed,
            code,
            reason: reason.to_string(),
            carried: Carried::record(batch.record(index)),
        })
        .collect();
    BatchReport::of(batch, 0, settled, attempts)
}

pub(super) fn failure_code(failure: &Failure) -> Code {
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
pub(super) fn answered_batch(
    batch: &Batch,
    response: &UploadResponse,
    attempts: u32,
) -> BatchReport {
    if response.status == AnswerStatus::Fail && response.unprocessed.is_empty() {
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
            carried: Carried::record(batch.record(index)),
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
