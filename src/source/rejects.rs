//! A tapline rejects file read back as a source, for `tapline replay`.
//!
//! Each entry is read as the [`ReplayEntry`] of what [`crate::outcome::Settled`] wrote, and
//! becomes a row on its original source line: an entry with `record` (the
//! CleverTap record as it was sent) is sent as it is; an entry with only `row` (the source
//! row, for records that never became a request) is mapped like any row. Either may have
//! been fixed by hand before the replay.

use std::io::BufRead;
use std::sync::Arc;

use serde_json::Value;

use super::jsonl::JsonlStream;
use super::{Row, RowError, RowStream};
use crate::outcome::{Carried, ReplayEntry};

pub(super) struct RejectsStream {
    entries: JsonlStream,
    entry: Row,
}

impl RejectsStream {
    pub(super) fn new(reader: Box<dyn BufRead + Send>) -> Self {
        RejectsStream {
            entries: JsonlStream::new(reader),
            entry: Row::default(),
        }
    }
}

impl RowStream for RejectsStream {
    fn columns(&self) -> Option<&[Arc<str>]> {
        None
    }

    fn read_row(&mut self, row: &mut Row) -> Option<Result<(), RowError>> {
        if let Err(error) = self.entries.read_row(&mut self.entry)? {
            return Some(Err(match error {
                RowError::Invalid { line, reason, raw } => RowError::Invalid {
                    line,
                    reason: format!("line {line} of the rejects file: {reason}"),
                    raw,
                },
                fatal => fatal,
            }));
        }
        let entry_line = self.entry.line;
        // The entry as `Settled` wrote it (or as a person fixed it), read back typed.
        let fields = self.entry.fields.drain(..);
        let object = Value::Object(
            fields
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
        );
        row.fields.clear();
        row.record = None;
        row.line = entry_line;
        let bad_line = |written: &Value| {
            Some(Err(RowError::Invalid {
                line: entry_line,
                reason: format!(
                    "line {entry_line} of the rejects file has `line: {written}`; it must be the source line, a whole number from 1"
                ),
                raw: String::new(),
            }))
        };
        let written_line = object.get("line").cloned();
        let entry = match serde_json::from_value::<ReplayEntry>(object) {
            Ok(entry) => entry,
            Err(error) => {
                if let Some(written) = written_line.filter(|line| !line.is_u64()) {
                    return bad_line(&written);
                }
                return Some(Err(RowError::Invalid {
                    line: entry_line,
                    reason: format!("line {entry_line} of the rejects file: {error}"),
                    raw: String::new(),
                }));
            }
        };
        let line = match entry.line {
            Some(0) => return bad_line(&Value::from(0)),
            Some(line) => line,
            None => entry_line,
        };
        row.line = line;
        let Carried {
            row: source_row,
            record,
        } = entry.carried;
        Some(match (record, source_row) {
            (Some(record), _) => {
                row.record = Some(record);
                Ok(())
            }
            (None, Some(Value::Object(fields))) => {
                row.fields
                    .extend(fields.into_iter().map(|(k, v)| (Arc::from(k), v)));
                Ok(())
            }
            (None, Some(Value::String(raw))) => Err(RowError::Invalid {
                line,
                reason: format!(
                    "line {entry_line} of the rejects file holds the row as raw text; write the fixed row in `row` as a JSON object to replay it"
                ),
                raw,
            }),
            (None, _) => Err(RowError::Invalid {
                line,
                reason: format!(
                    "line {entry_line} of the rejects file has neither `record` nor a `row` object"
                ),
                raw: String::new(),
            }),
        })
    }
}
