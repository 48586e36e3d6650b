//! CSV and TSV: a header row names the columns; every row must have as many fields.
//!
//! A row is at most [`MAX_RECORD_BYTES`]: a longer one (a quote that is never closed
//! swallows the rest of the file into one field) ends the read with its line, so memory stays
//! bounded and a broken file is never taken as read in full.

use std::io::BufRead;
use std::sync::Arc;

use serde_json::Value;

use super::{OpenError, Row, RowError, RowStream};

/// The longest row read, quoted line breaks included. CleverTap takes at most 512 bytes per
/// value, so a longer row is a broken file, not data.
pub const MAX_RECORD_BYTES: u64 = 1024 * 1024;

pub(super) struct DelimitedStream {
    reader: csv::Reader<TailTracking>,
    columns: Vec<Arc<str>>,
    record: csv::ByteRecord,
    quoting: bool,
    /// The line the next row starts on (blank lines aside), for a row too long to read.
    next_line: u64,
    /// Set once the file turned out to be broken past reading: nothing more is read.
    broken: bool,
}

/// Remembers how the file ends (its size, last byte, and last byte that is not a line break)
/// and refuses to hand out more than [`MAX_RECORD_BYTES`] of one row.
pub(super) struct TailTracking {
    inner: Box<dyn BufRead + Send>,
    last_byte: Option<u8>,
    last_raw_byte: Option<u8>,
    total_bytes: u64,
    reached_end: bool,
    /// Where the row being read starts. csv asks for more input only once it has used all
    /// it was given, so everything handed out since then belongs to that row.
    record_start: u64,
}

/// The error [`TailTracking`] gives for a row longer than [`MAX_RECORD_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("the row is longer than {} MiB", MAX_RECORD_BYTES / 1024 / 1024)]
struct RowTooLong;

impl std::io::Read for TailTracking {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.total_bytes - self.record_start > MAX_RECORD_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RowTooLong,
            ));
        }
        let read = self.inner.read(buffer)?;
        self.total_bytes += read as u64;
        self.reached_end |= read == 0 && !buffer.is_empty();
        if read > 0 {
            self.last_raw_byte = Some(buffer[read - 1]);
        }
        if let Some(&byte) = buffer[..read]
            .iter()
            .rev()
            .find(|&&b| b != b'\n' && b != b'\r')
        {
            self.last_byte = Some(byte);
        }
        Ok(read)
    }
}

impl DelimitedStream {
    pub(super) fn new(
        reader: Box<dyn BufRead + Send>,
        delimiter: u8,
        quoting: bool,
        path: &str,
    ) -> Result<Self, OpenError> {
        let mut reader = csv::ReaderBuilder::new()
            // As large as the reader's own buffer, so that csv reads straight through it
            // instead of copying the file once more in 8 KiB pieces.
            .buffer_capacity(super::READ_BUFFER_BYTES)
            .delimiter(delimiter)
            .quoting(quoting)
            .flexible(true)
            .has_headers(false)
            .from_reader(TailTracking {
                inner: reader,
                last_byte: None,
                last_raw_byte: None,
                total_bytes: 0,
                reached_end: false,
                record_start: 0,
            });
        let mut header = csv::ByteRecord::new();
        let bad_header = |problem: String| OpenError::BadHeader {
            path: path.to_string(),
            problem,
        };
        match reader.read_byte_record(&mut header) {
            Ok(true) => {}
            Ok(false) => return Err(OpenError::Empty(path.to_string())),
            Err(error) => return Err(bad_header(format!("cannot be read: {error}"))),
        }
        let mut columns: Vec<Arc<str>> = Vec::with_capacity(header.len());
        for (index, field) in header.iter().enumerate() {
            let mut name = std::str::from_utf8(field)
                .map_err(|_| bad_header(format!("has invalid UTF-8 in column {}", index + 1)))?;
            if index == 0 {
                name = name.trim_start_matches('\u{feff}');
            }
            let name = name.trim();
            if name.is_empty() {
                return Err(bad_header(format!(
                    "has an empty name for column {}",
                    index + 1
                )));
            }
            if columns.iter().any(|existing| &**existing == name) {
                return Err(bad_header(format!("names column `{name}` twice")));
            }
            columns.push(Arc::from(name));
        }
        let next_line = reader.position().line();
        let record_start = reader.position().byte();
        reader.get_mut().record_start = record_start;
        Ok(DelimitedStream {
            reader,
            columns,
            record: csv::ByteRecord::new(),
            quoting,
            next_line,
            broken: false,
        })
    }
}

impl RowStream for DelimitedStream {
    fn columns(&self) -> Option<&[Arc<str>]> {
        Some(&self.columns)
    }

    fn read_row(&mut self, row: &mut Row) -> Option<Result<(), RowError>> {
        if self.broken {
            return None;
        }
        loop {
            let read = self.reader.read_byte_record(&mut self.record);
            let end = self.reader.position().clone();
            self.reader.get_mut().record_start = end.byte();
            match read {
                Ok(false) => return None,
                Ok(true) => {}
                Err(error) => {
                    let line = error.position().map_or(0, |position| position.line());
                    return Some(match error.kind() {
                        csv::ErrorKind::Io(io)
                            if io.get_ref().is_some_and(|e| e.is::<RowTooLong>()) =>
                        {
                            self.broken = true;
                            Err(RowError::Fatal(format!(
                                "line {}: the row starting here is longer than {} MiB, so the file cannot be read past it; most likely a quote opened in this row is never closed: close it, or quote the field's own quotes as \"\"",
                                self.next_line,
                                MAX_RECORD_BYTES / 1024 / 1024
                            )))
                        }
                        csv::ErrorKind::Io(_) => Err(RowError::Fatal(error.to_string())),
                        _ => Err(RowError::Invalid {
                            line,
                            reason: error.to_string(),
                            raw: String::new(),
                        }),
                    });
                }
            }
            let start = self.start_line();
            self.next_line = end.line();
            // A blank line is no record.
            if self.record.len() == 1 && self.record[0].is_empty() {
                continue;
            }
            return Some(self.fill(row, start));
        }
    }
}

impl DelimitedStream {
    /// The line the record just read starts on. The reader's own record position counts
    /// blank lines before the record as part of it, so this works back from where the
    /// record ended instead, less the line breaks inside quoted fields.
    fn start_line(&self) -> u64 {
        let end = self.reader.position().line();
        let fields = self.record.as_slice();
        // `contains` finds a byte with memchr: most records have no line break to count.
        let inner_breaks = if fields.contains(&b'\n') {
            fields.iter().filter(|&&b| b == b'\n').count() as u64
        } else {
            0
        };
        let terminated = !self.at_end_of_file()
            || (self.reader.get_ref().last_raw_byte == Some(b'\n')
                && !self.is_unterminated_quote());
        end.saturating_sub(inner_breaks + u64::from(terminated))
            .max(1)
    }

    /// Whether the record just read ends where the file ends.
    fn at_end_of_file(&self) -> bool {
        let tail = self.reader.get_ref();
        tail.reached_end && self.reader.position().byte() == tail.total_bytes
    }

    /// A quote that is not closed where it should be swallows the lines after it into one
    /// field: the record spans lines, and either it runs to the end of a file that does not
    /// end with the closing quote, or it does not have the header's fields (the quotes of
    /// later rows paired up with the wrong ones). Either way the lines it swallowed were
    /// never read as rows.
    fn is_unterminated_quote(&self) -> bool {
        self.quoting
            && self.record.as_slice().contains(&b'\n')
            && ((self.at_end_of_file() && self.reader.get_ref().last_byte != Some(b'"'))
                || self.record.len() != self.columns.len())
    }

    /// Puts the record just read into `row`, reusing its strings when it held the last row.
    fn fill(&self, row: &mut Row, line: u64) -> Result<(), RowError> {
        let raw = || String::from_utf8_lossy(self.record.as_slice()).into_owned();
        if self.is_unterminated_quote() {
            // Not a row to skip: the rows the quote swallowed were never read, so the file
            // must not count as delivered.
            return Err(RowError::Fatal(format!(
                "line {line}: a quote opened in this row is not closed where it should be, so the lines after it were read as part of this row and cannot be sent: close the quote, or quote the field's own quotes as \"\""
            )));
        }
        if self.record.len() != self.columns.len() {
            return Err(RowError::Invalid {
                line,
                reason: format!(
                    "the row has {} fields but the header has {} columns (an unquoted delimiter, or an unterminated quote?)",
                    self.record.len(),
                    self.columns.len()
                ),
                raw: raw(),
            });
        }
        let reusable = row.fields.len() == self.columns.len()
            && row
                .fields
                .iter()
                .zip(&self.columns)
                .all(|((name, value), column)| Arc::ptr_eq(name, column) && value.is_string());
        if !reusable {
            row.fields.clear();
            row.fields.extend(
                self.columns
                    .iter()
                    .map(|column| (Arc::clone(column), Value::String(String::new()))),
            );
        }
        // One UTF-8 check for the whole record; each field is then a slice of it. A field
        // boundary inside a character (`str::get` is `None`) means the field is not UTF-8.
        let whole = std::str::from_utf8(self.record.as_slice());
        for (index, (name, value)) in row.fields.iter_mut().enumerate() {
            let text = whole
                .ok()
                .and_then(|whole| whole.get(self.record.range(index)?));
            let Some(text) = text.or_else(|| std::str::from_utf8(&self.record[index]).ok()) else {
                return Err(RowError::Invalid {
                    line,
                    reason: format!("column `{name}` is not valid UTF-8"),
                    raw: raw(),
                });
            };
            if let Value::String(field) = value {
                field.clear();
                field.push_str(text);
            }
        }
        row.line = line;
        Ok(())
    }
}
