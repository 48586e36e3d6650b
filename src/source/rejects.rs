//! A tapline rejects file read back as a source, for `tapline replay`.
//!
//! Each entry becomes a row on its original source line: an entry with `record` (the
//! CleverTap record as it was sent) is sent as it is; an entry with only `row` (the source
//! row, for records that never became a request) is mapped like any row. Either may have
//! been fixed by hand before the replay.

use std::io::BufRead;
use std::sync::Arc;

use serde_json::Value;

use super::jsonl::JsonlStream;
use super::{Row, RowError, RowStream};

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
        let mut source_line = None;
        let mut source_row = None;
        let mut record = None;
        let mut bad_line = None;
        for (name, value) in self.entry.fields.drain(..) {
            match &*name {
                "line" => match value.as_u64().filter(|line| *line > 0) {
                    Some(line) => source_line = Some(line),
                    None => bad_line = Some(value),
                },
                "row" => source_row = Some(value),
                "record" => record = Some(value),
                _ => {}
            }
        }
        let line = source_line.unwrap_or(entry_line);
        row.line = line;
        row.fields.clear();
        row.record = None;
        if let Some(bad) = bad_line {
            return Some(Err(RowError::Invalid {
                line,
                reason: format!(
                    "line {entry_line} of the rejects file has `line: {bad}`; it must be the source line, a whole number from 1"
                ),
                raw: String::new(),
            }));
        }
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
