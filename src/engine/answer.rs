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
        Failure::Connect { .. } | Failure::Unreachable { .. } => Code::Connect,
        Failure::Interrupted(_) => Code::ConnectionBroken,
        Failure::Status { status, .. } => Code::Http(*status),
        Failure::InvalidResponse(_) => Code::InvalidResponse,
        Failure::NotReady(_) => Code::NotReady,
        Failure::Spool(_) => Code::Spool,
    }
}

/// Settles a batch CleverTap answered: each `unprocessed` entry rejects the record it names
/// (by its record number, which only `/1/upload` gives, else by the record it echoes), and
/// the rest are accepted. A `fail` with no per-record detail fails the whole batch. When an
/// entry names no record of the request, or `processed` does not add up with the entries,
/// the answer does not say which records CleverTap took: none of those left is counted as
/// accepted (they fail, and `tapline replay` sends them again).
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
    let count = batch.lines.len();
    // The records are read back only to match an entry that gives no record number (a
    // batch CleverTap took whole, the common case, is never parsed).
    let mut records: Option<Vec<Option<serde_json::Value>>> = None;
    let mut rejected = vec![false; count];
    let mut unmatched = 0;
    let mut settled = Vec::new();
    for entry in &response.unprocessed {
        let index = entry
            .record_index()
            .filter(|&index| index < count && !rejected[index])
            .or_else(|| {
                let records = records
                    .get_or_insert_with(|| (0..count).map(|index| batch.record(index)).collect());
                match_echoed_record(records, entry.record.as_ref(), &rejected)
            });
        let Some(index) = index else {
            tracing::warn!(batch = batch.index, entry = ?entry, "an unprocessed entry matches no record of the batch");
            unmatched += 1;
            continue;
        };
        rejected[index] = true;
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
    let matched = response.unprocessed.len() - unmatched;
    let left = count - matched;
    let adds_up = response
        .processed
        .is_none_or(|processed| processed == left as u64);
    let accepted = if unmatched == 0 && adds_up {
        left
    } else {
        let reason = unmatched_reason(response, unmatched, left);
        tracing::error!(batch = batch.index, first_line = batch.first_line(), %reason, "answer not matched");
        settled.extend(
            (0..count)
                .filter(|&index| !rejected[index])
                .map(|index| Settled {
                    line: batch.lines[index],
                    outcome: Outcome::Failed,
                    code: Code::UnmatchedAnswer,
                    reason: reason.clone(),
                    carried: Carried::record(batch.record(index)),
                }),
        );
        0
    };
    settled.sort_by_key(|entry| entry.line);
    BatchReport::of(batch, accepted, settled, attempts)
}

/// Why the records an answer does not account for are not counted as accepted.
fn unmatched_reason(response: &UploadResponse, unmatched: usize, left: usize) -> String {
    let what = if unmatched > 0 {
        format!(
            "{unmatched} of its {} unprocessed entries name no record of the request",
            response.unprocessed.len()
        )
    } else {
        format!(
            "it says {} processed, but {left} records are not listed as unprocessed",
            response.processed.unwrap_or_default()
        )
    };
    format!(
        "CleverTap's answer could not be matched to the records sent ({what}), so it is not known whether this record was taken; send it again with `tapline replay`"
    )
}

/// When CleverTap's entry has no record number, finds the record it echoes: the same record,
/// else the one with the same identity (or address, for subscriptions and disassociation).
fn match_echoed_record(
    records: &[Option<serde_json::Value>],
    echoed: Option<&serde_json::Value>,
    taken: &[bool],
) -> Option<usize> {
    let echoed = match echoed? {
        serde_json::Value::String(text) => {
            serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.clone()))
        }
        other => other.clone(),
    };
    let free = |index: &usize| !taken[*index];
    if let Some(index) = (0..records.len())
        .filter(free)
        .find(|&index| records[index].as_ref() == Some(&echoed))
    {
        return Some(index);
    }
    let wanted = record_key(&echoed)?;
    (0..records.len())
        .filter(free)
        .find(|&index| records[index].as_ref().and_then(record_key) == Some(wanted.clone()))
}

/// What names a record's profile or address: its identity field and value, the `value` of a
/// subscription or disassociation, or the record itself when it is a bare identity.
fn record_key(record: &serde_json::Value) -> Option<(&'static str, String)> {
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    };
    if let Some(identity) = text(record) {
        return Some(("", identity));
    }
    crate::clevertap::rules::IDENTITY_FIELDS
        .iter()
        .chain(&["value", "guid"])
        .find_map(|field| Some((*field, text(record.get(*field)?)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A batch of these records, at lines 10, 11, ...
    fn batch(records: &[Value]) -> Batch {
        let mut body = b"{\"d\":[".to_vec();
        let mut spans = Vec::new();
        for (index, record) in records.iter().enumerate() {
            if index > 0 {
                body.push(b',');
            }
            let start = body.len();
            body.extend_from_slice(record.to_string().as_bytes());
            spans.push(start..body.len());
        }
        body.extend_from_slice(b"]}");
        Batch {
            index: 0,
            lines: (10..10 + records.len() as u64).collect(),
            body: body.into(),
            spans,
            key: None,
            fingerprints: Vec::new(),
        }
    }

    fn answer(text: Value) -> UploadResponse {
        serde_json::from_value(text).unwrap()
    }

    /// (line, outcome) of each record not accepted, and how many were accepted.
    fn outcomes(report: &BatchReport) -> (usize, Vec<(u64, Outcome)>) {
        let settled = report.settled.iter().map(|s| (s.line, s.outcome)).collect();
        (report.accepted, settled)
    }

    #[test]
    fn each_answer_settles_every_record_once() {
        let subscriptions = [
            json!({"type": "email", "value": "a@x.co", "status": "Unsubscribe"}),
            json!({"type": "email", "value": "b@x.co", "status": "Unsubscribe"}),
            json!({"type": "email", "value": "c@x.co", "status": "Unsubscribe"}),
        ];
        let entry = |record: &Value| json!({"status": "fail", "code": 400, "error": "no", "record": record});
        let cases = [
            (
                "a numbered entry (/1/upload)",
                json!({"status": "partial", "processed": 2, "unprocessed": [
                    {"status": "fail", "code": 515, "error": "bad. Skipped record number : 2"}]}),
                (2, vec![(11, Outcome::Rejected)]),
            ),
            (
                "an echoed record without a number",
                json!({"status": "partial", "processed": 2, "unprocessed": [entry(&subscriptions[1])]}),
                (2, vec![(11, Outcome::Rejected)]),
            ),
            (
                "an echoed record sent as a JSON string",
                json!({"status": "partial", "processed": 2, "unprocessed": [
                    {"status": "fail", "error": "no", "record": subscriptions[2].to_string()}]}),
                (2, vec![(12, Outcome::Rejected)]),
            ),
            (
                "the echoed record's address, its status changed",
                json!({"status": "partial", "processed": 2, "unprocessed": [
                    entry(&json!({"type": "email", "value": "a@x.co"}))]}),
                (2, vec![(10, Outcome::Rejected)]),
            ),
            (
                "an entry that names no record: none of the rest is accepted",
                json!({"status": "partial", "processed": 2, "unprocessed": [
                    entry(&json!({"type": "email", "value": "z@x.co", "status": "Unsubscribe"}))]}),
                (
                    0,
                    vec![
                        (10, Outcome::Failed),
                        (11, Outcome::Failed),
                        (12, Outcome::Failed),
                    ],
                ),
            ),
            (
                "`processed` that does not add up",
                json!({"status": "partial", "processed": 1, "unprocessed": [entry(&subscriptions[0])]}),
                (
                    0,
                    vec![
                        (10, Outcome::Rejected),
                        (11, Outcome::Failed),
                        (12, Outcome::Failed),
                    ],
                ),
            ),
            (
                "no `processed`: the entries alone",
                json!({"status": "success", "unprocessed": []}),
                (3, vec![]),
            ),
        ];
        let batch = batch(&subscriptions);
        for (case, text, expected) in cases {
            let report = answered_batch(&batch, &answer(text), 1);
            assert_eq!(outcomes(&report), expected, "{case}");
            let unmatched = report
                .settled
                .iter()
                .filter(|s| s.outcome == Outcome::Failed)
                .all(|s| {
                    s.code == Code::UnmatchedAnswer
                        && s.reason.contains("could not be matched")
                        && s.carried != Carried::record(None)
                });
            assert!(unmatched, "{case}: {:?}", report.settled);
        }
    }
}
