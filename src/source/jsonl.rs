//! JSON Lines: one JSON object per line; blank lines are ignored.

use std::io::BufRead;
use std::sync::Arc;

use serde_json::Value;

use super::{Row, RowError, RowStream};

/// A longer line is refused rather than read into memory.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

pub(super) struct JsonlStream {
    reader: Box<dyn BufRead + Send>,
    line: u64,
    buffer: Vec<u8>,
}

impl JsonlStream {
    pub(super) fn new(reader: Box<dyn BufRead + Send>) -> Self {
        JsonlStream {
            reader,
            line: 0,
            buffer: Vec::new(),
        }
    }

    /// Reads one line into the buffer, refusing to grow past the limit.
    fn read_line(&mut self) -> std::io::Result<(usize, bool)> {
        self.buffer.clear();
        let mut total = 0;
        let mut too_long = false;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok((total, too_long));
            }
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(index) => (&available[..=index], true),
                None => (available, false),
            };
            let length = chunk.len();
            if self.buffer.len() + length <= MAX_LINE_BYTES {
                self.buffer.extend_from_slice(chunk);
            } else {
                too_long = true;
            }
            self.reader.consume(length);
            total += length;
            if done {
                return Ok((total, too_long));
            }
        }
    }
}

impl RowStream for JsonlStream {
    fn columns(&self) -> Option<&[Arc<str>]> {
        None
    }

    fn read_row(&mut self, row: &mut Row) -> Option<Result<(), RowError>> {
        loop {
            let (read, too_long) = match self.read_line() {
                Ok(result) => result,
                Err(error) => return Some(Err(RowError::Fatal(error.to_string()))),
            };
            if read == 0 {
                return None;
            }
            self.line += 1;
            let line = self.line;
            if too_long {
                return Some(Err(RowError::Invalid {
                    line,
                    reason: format!(
                        "the line is longer than {} MiB",
                        MAX_LINE_BYTES / 1024 / 1024
                    ),
                    raw: String::new(),
                }));
            }
            let Ok(text) = std::str::from_utf8(&self.buffer) else {
                return Some(Err(RowError::Invalid {
                    line,
                    reason: "the line is not valid UTF-8".into(),
                    raw: String::from_utf8_lossy(&self.buffer).into_owned(),
                }));
            };
            // The last line of a file cut short (a copy that stopped, a full disk) has no
            // line break.
            let cut_short = !self.buffer.ends_with(b"\n");
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            return Some(match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => {
                    row.line = line;
                    row.fields.clear();
                    row.fields
                        .extend(map.into_iter().map(|(k, v)| (Arc::from(k), v)));
                    Ok(())
                }
                Ok(_) => Err(RowError::Invalid {
                    line,
                    reason: "the line is JSON but not an object".into(),
                    raw: text.to_string(),
                }),
                Err(error) if cut_short && error.is_eof() => Err(RowError::Fatal(format!(
                    "line {line}: the file ends inside this line's JSON, so it was cut short (an export or copy that did not finish?): send the whole file"
                ))),
                Err(error) => Err(RowError::Invalid {
                    line,
                    reason: format!("invalid JSON: {error}"),
                    raw: text.to_string(),
                }),
            });
        }
    }
}
