//! Snapshots: the rows of a query as a run read them, kept zstd-compressed in the state
//! directory so that a killed run resumes from the same rows instead of a new query's.
//!
//! The layout is tapline's own and private: `TAPSNAP1`, the column names, then each row as
//! a `1` byte and one typed cell per column, then a `0` byte. A cell is a tag byte and its
//! payload: null, false, true, an integer (zigzag varint), a float (8 bytes), text or JSON
//! text (a varint length and UTF-8). A snapshot is complete when its [`SnapshotMeta`] file
//! exists beside it: the meta is written last.

use std::fs::File;
use std::io::{BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Row, RowError, RowStream};

const MAGIC: &[u8; 8] = b"TAPSNAP1";
/// zstd's level 1: fast, and a query's text compresses several times over even so.
const LEVEL: i32 = 1;
/// A longer cell is refused rather than read into memory.
const MAX_CELL_BYTES: u64 = 64 * 1024 * 1024;

const ROW: u8 = 1;
const END: u8 = 0;

/// A cell's tag.
mod tag {
    pub const NULL: u8 = 0;
    pub const FALSE: u8 = 1;
    pub const TRUE: u8 = 2;
    pub const INTEGER: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const TEXT: u8 = 5;
    pub const JSON: u8 = 6;
    pub const REFUSED: u8 = 7;
}

/// What is known of a complete snapshot, written beside it (`<snapshot>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Rows in the snapshot.
    pub rows: u64,
    /// The highest value of the incremental column, as PostgreSQL reads it back as `$1`.
    pub highest: Option<String>,
}

impl SnapshotMeta {
    /// Where the meta of the snapshot `path` is.
    pub fn path_of(snapshot: &Path) -> PathBuf {
        let mut name = snapshot.as_os_str().to_owned();
        name.push(".json");
        PathBuf::from(name)
    }

    /// The meta of a complete snapshot; `None` when the snapshot was never finished.
    pub fn read(snapshot: &Path) -> Option<SnapshotMeta> {
        let text = std::fs::read(Self::path_of(snapshot)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// Removes a snapshot and its meta; a snapshot that is not there is no error.
pub fn remove(snapshot: &Path) -> std::io::Result<()> {
    for path in [SnapshotMeta::path_of(snapshot), snapshot.to_path_buf()] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Writes a snapshot: [`SnapshotWriter::row`] per row, then [`SnapshotWriter::finish`].
/// Until it finishes, the rows are in `<path>.partial`.
pub struct SnapshotWriter {
    encoder: zstd::stream::write::Encoder<'static, BufWriter<File>>,
    /// The row being written, flushed to the encoder in one call.
    buffer: Vec<u8>,
    path: PathBuf,
    partial: PathBuf,
    rows: u64,
}

impl SnapshotWriter {
    /// Starts a snapshot of rows with these columns.
    pub fn create(path: &Path, columns: &[String]) -> std::io::Result<Self> {
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)?;
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = BufWriter::with_capacity(256 * 1024, File::create(&partial)?);
        let mut encoder = zstd::stream::write::Encoder::new(file, LEVEL)?;
        let mut header = Vec::new();
        header.extend_from_slice(MAGIC);
        put_varint(&mut header, columns.len() as u64);
        for column in columns {
            put_bytes(&mut header, column.as_bytes());
        }
        encoder.write_all(&header)?;
        Ok(SnapshotWriter {
            encoder,
            buffer: Vec::with_capacity(4096),
            path: path.to_path_buf(),
            partial,
            rows: 0,
        })
    }

    /// The cells of the next row, written through a [`Cells`] in column order.
    pub fn row(&mut self) -> Cells<'_> {
        self.buffer.clear();
        self.buffer.push(ROW);
        Cells { writer: self }
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Ends the snapshot: flushes it to disk, moves it into place and writes its meta.
    pub fn finish(self, highest: Option<String>) -> std::io::Result<SnapshotMeta> {
        let SnapshotWriter {
            mut encoder,
            path,
            partial,
            rows,
            ..
        } = self;
        encoder.write_all(&[END])?;
        let file = encoder.finish()?;
        let file = file.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()?;
        std::fs::rename(&partial, &path)?;
        let meta = SnapshotMeta { rows, highest };
        let meta_path = SnapshotMeta::path_of(&path);
        let mut meta_partial = meta_path.as_os_str().to_owned();
        meta_partial.push(".partial");
        std::fs::write(&meta_partial, serde_json::to_vec(&meta)?)?;
        std::fs::rename(&meta_partial, &meta_path)?;
        Ok(meta)
    }

    /// Drops an unfinished snapshot's file.
    pub fn abandon(self) {
        let partial = self.partial.clone();
        drop(self);
        let _ = std::fs::remove_file(partial);
    }
}

/// The cells of one row being written.
pub struct Cells<'a> {
    writer: &'a mut SnapshotWriter,
}

impl Cells<'_> {
    /// A NULL: the field is left out of the record.
    pub fn null(&mut self) {
        self.writer.buffer.push(tag::NULL);
    }

    /// A boolean.
    pub fn bool(&mut self, value: bool) {
        self.writer
            .buffer
            .push(if value { tag::TRUE } else { tag::FALSE });
    }

    /// An integer.
    pub fn integer(&mut self, value: i64) {
        self.writer.buffer.push(tag::INTEGER);
        put_varint(&mut self.writer.buffer, zigzag(value));
    }

    /// A float; one that JSON cannot hold (NaN, infinity) is written as NULL.
    pub fn float(&mut self, value: f64) {
        if !value.is_finite() {
            return self.null();
        }
        self.writer.buffer.push(tag::FLOAT);
        self.writer.buffer.extend_from_slice(&value.to_le_bytes());
    }

    /// Text, sent as a string.
    pub fn text(&mut self, value: &str) {
        self.writer.buffer.push(tag::TEXT);
        put_bytes(&mut self.writer.buffer, value.as_bytes());
    }

    /// JSON text (a json column, an array, a numeric), sent as the JSON value it holds.
    pub fn json(&mut self, value: &str) {
        self.writer.buffer.push(tag::JSON);
        put_bytes(&mut self.writer.buffer, value.as_bytes());
    }

    /// A value tapline cannot send as the source has it: the row reads back as an invalid
    /// record, `reason` naming the value's type and what is wrong with it.
    pub fn refused(&mut self, reason: &str) {
        self.writer.buffer.push(tag::REFUSED);
        put_bytes(&mut self.writer.buffer, reason.as_bytes());
    }

    /// Ends the row.
    pub fn end(self) -> std::io::Result<()> {
        self.writer.rows += 1;
        self.writer.encoder.write_all(&self.writer.buffer)
    }
}

/// Reads a snapshot back as rows; a row's "line" is its number in the query's result.
pub(super) struct SnapshotStream {
    reader: Box<dyn BufRead + Send>,
    columns: Vec<Arc<str>>,
    row: u64,
    ended: bool,
    /// The last text cell's bytes, reused.
    scratch: Vec<u8>,
}

impl SnapshotStream {
    pub(super) fn new(mut reader: Box<dyn BufRead + Send>) -> Result<Self, String> {
        let mut magic = [0; 8];
        reader
            .read_exact(&mut magic)
            .map_err(|error| format!("not a tapline snapshot: {error}"))?;
        if &magic != MAGIC {
            return Err("not a tapline snapshot".into());
        }
        let count = varint(&mut reader).map_err(|error| error.to_string())?;
        let mut columns = Vec::new();
        for _ in 0..count.min(100_000) {
            let name = bytes(&mut reader).map_err(|error| error.to_string())?;
            let name = String::from_utf8(name).map_err(|_| "a column name is not UTF-8")?;
            columns.push(Arc::from(name));
        }
        Ok(SnapshotStream {
            reader,
            columns,
            row: 0,
            ended: false,
            scratch: Vec::new(),
        })
    }

    /// Reads a row's cells; returns why the row is refused, naming the first column whose
    /// value was.
    fn read_cells(&mut self, row: &mut Row) -> std::io::Result<Option<String>> {
        let SnapshotStream {
            reader,
            columns,
            scratch,
            ..
        } = self;
        let mut refused = None;
        row.fields
            .resize_with(columns.len(), || (Arc::from(""), Value::Null));
        for ((name, value), column) in row.fields.iter_mut().zip(columns.iter()) {
            if !Arc::ptr_eq(name, column) {
                *name = Arc::clone(column);
            }
            let mut tag = [0];
            reader.read_exact(&mut tag)?;
            *value = match tag[0] {
                tag::NULL => Value::Null,
                tag::FALSE => Value::Bool(false),
                tag::TRUE => Value::Bool(true),
                tag::INTEGER => Value::from(unzigzag(varint(reader)?)),
                tag::FLOAT => {
                    let mut bytes = [0; 8];
                    reader.read_exact(&mut bytes)?;
                    serde_json::Number::from_f64(f64::from_le_bytes(bytes))
                        .map_or(Value::Null, Value::Number)
                }
                tag::TEXT => {
                    read_bytes(reader, scratch)?;
                    let text = std::str::from_utf8(scratch)
                        .map_err(|_| invalid("a text cell is not UTF-8"))?;
                    // The last row's string for this column is reused when there is one.
                    if let Value::String(reused) = value {
                        reused.clear();
                        reused.push_str(text);
                        continue;
                    }
                    Value::String(text.to_string())
                }
                tag::JSON => {
                    read_bytes(reader, scratch)?;
                    serde_json::from_slice(scratch)
                        .map_err(|error| invalid(&format!("a JSON cell is broken: {error}")))?
                }
                tag::REFUSED => {
                    read_bytes(reader, scratch)?;
                    refused.get_or_insert_with(|| {
                        format!("column `{column}`: {}", String::from_utf8_lossy(scratch))
                    });
                    Value::Null
                }
                other => return Err(invalid(&format!("unknown cell tag {other}"))),
            };
        }
        Ok(refused)
    }
}

impl RowStream for SnapshotStream {
    fn columns(&self) -> Option<&[Arc<str>]> {
        Some(&self.columns)
    }

    fn read_row(&mut self, row: &mut Row) -> Option<Result<(), RowError>> {
        if self.ended {
            return None;
        }
        let mut marker = [0];
        if let Err(error) = self.reader.read_exact(&mut marker) {
            self.ended = true;
            return Some(Err(RowError::Fatal(format!(
                "the snapshot ends early: {error}"
            ))));
        }
        if marker[0] == END {
            self.ended = true;
            return None;
        }
        self.row += 1;
        row.line = self.row;
        row.record = None;
        match self.read_cells(row) {
            Ok(None) => Some(Ok(())),
            Ok(Some(reason)) => Some(Err(RowError::Invalid {
                line: self.row,
                reason,
                raw: row.to_json().to_string(),
            })),
            Err(error) => {
                self.ended = true;
                Some(Err(RowError::Fatal(format!(
                    "the snapshot is broken at row {}: {error}",
                    self.row
                ))))
            }
        }
    }
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_string())
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(reader: &mut impl Read) -> std::io::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0];
        reader.read_exact(&mut byte)?;
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(invalid("a number is too long"))
}

fn bytes(reader: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    read_bytes(reader, &mut bytes)?;
    Ok(bytes)
}

/// Reads a length-prefixed cell into `into`, replacing what it held.
fn read_bytes(reader: &mut impl Read, into: &mut Vec<u8>) -> std::io::Result<()> {
    let length = varint(reader)?;
    if length > MAX_CELL_BYTES {
        return Err(invalid("a cell is too long"));
    }
    into.clear();
    into.resize(length as usize, 0);
    reader.read_exact(into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cell_reads_back_as_the_json_it_stands_for() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("q.snapshot");
        let columns = ["identity", "Age", "Score", "Ok", "Gone", "Tags"].map(String::from);
        let mut writer = SnapshotWriter::create(&path, &columns).unwrap();
        for n in [-3_i64, 1 << 40] {
            let mut cells = writer.row();
            cells.text(&format!("u{n}"));
            cells.integer(n);
            cells.float(2.5);
            cells.bool(n > 0);
            cells.null();
            cells.json(r#"["a","b"]"#);
            cells.end().unwrap();
        }
        assert!(SnapshotMeta::read(&path).is_none(), "unfinished");
        let meta = writer.finish(Some("7".into())).unwrap();
        assert_eq!(SnapshotMeta::read(&path), Some(meta));
        let reader = super::super::open_bytes(&path, crate::config::model::Compression::Zstd)
            .unwrap()
            .0;
        let mut stream = SnapshotStream::new(reader).unwrap();
        assert_eq!(stream.columns().unwrap().len(), 6);
        let first = stream.next_row().unwrap().unwrap();
        assert_eq!(first.line, 1);
        assert_eq!(
            first.to_json(),
            serde_json::json!({"identity": "u-3", "Age": -3, "Score": 2.5, "Ok": false, "Gone": null, "Tags": ["a", "b"]})
        );
        let second = stream.next_row().unwrap().unwrap();
        assert_eq!(second.fields[1].1, serde_json::json!(1_i64 << 40));
        assert!(stream.next_row().is_none());
        remove(&path).unwrap();
        assert!(!path.exists() && SnapshotMeta::read(&path).is_none());
    }

    #[test]
    fn a_cut_snapshot_is_an_error_not_an_end() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("q.snapshot");
        let mut writer = SnapshotWriter::create(&path, &["a".to_string()]).unwrap();
        let mut cells = writer.row();
        cells.text("x");
        cells.end().unwrap();
        writer.finish(None).unwrap();
        // Keep the first half of the decompressed bytes only.
        let mut whole = Vec::new();
        zstd::stream::read::Decoder::new(File::open(&path).unwrap())
            .unwrap()
            .read_to_end(&mut whole)
            .unwrap();
        let cut = &whole[..whole.len() - 2];
        let mut stream = SnapshotStream::new(Box::new(std::io::Cursor::new(cut.to_vec()))).unwrap();
        assert!(matches!(stream.next_row(), Some(Err(RowError::Fatal(_)))));
        assert!(stream.next_row().is_none());
    }
}
