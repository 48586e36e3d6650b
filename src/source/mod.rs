//! Streaming readers of sources: CSV, TSV and JSON Lines files (each optionally gzip- or
//! zstd-compressed) and Parquet files, on this machine or in S3 ([`object`]), and the
//! snapshots of PostgreSQL and MySQL queries ([`query`]).
//!
//! A source yields [`Row`]s one at a time with the line (or row number) they started on; a
//! file is never held in memory. A row that cannot be read (wrong field count, invalid UTF-8, bad JSON) is an
//! [`RowError::Invalid`] carrying its line and raw text, so the run can skip or stop on it like
//! any other invalid record; only an unreadable file is fatal.

pub mod arrival;
mod delimited;
pub(crate) mod exact;
mod jsonl;
pub mod object;
mod parquet;
pub(crate) mod query;
mod rejects;
pub(crate) mod snapshot;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::config::model::{Compression, FileSource, SourceFormat};
use object::Location;

const READ_BUFFER_BYTES: usize = 256 * 1024;

/// One source row: its fields in file order, and the line it started on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// 1-based line in the (decompressed) file where the row starts.
    pub line: u64,
    /// Column name and value. CSV values are strings; JSONL keeps JSON types.
    pub fields: Vec<(Arc<str>, Value)>,
    /// A record already in CleverTap's form (replayed from a rejects file): it is sent as it
    /// is instead of being mapped from `fields`.
    pub record: Option<Value>,
}

impl Row {
    /// The row as a JSON object, for the rejects file.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.fields
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone()))
                .collect(),
        )
    }
}

/// A problem reading rows.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// One row is unreadable; the rows after it can still be read.
    #[error("line {line}: {reason}")]
    Invalid {
        /// Where the row starts.
        line: u64,
        /// What is wrong with it.
        reason: String,
        /// The row's text as far as it could be read.
        raw: String,
    },
    /// The file cannot be read any further.
    #[error("{0}")]
    Fatal(String),
}

/// A stream of rows. Implemented per file format; more sources (Parquet, a database query)
/// can join behind the same trait.
pub trait RowStream: Send {
    /// The column names, when the format has a header.
    fn columns(&self) -> Option<&[Arc<str>]>;

    /// Reads the next row into `row`, reusing its allocations where the format allows
    /// (the hot loop of a run reads millions of rows into one buffer). `None` at the end.
    fn read_row(&mut self, row: &mut Row) -> Option<Result<(), RowError>>;

    /// The next row as a new value, `None` at the end.
    fn next_row(&mut self) -> Option<Result<Row, RowError>> {
        let mut row = Row::default();
        self.read_row(&mut row).map(|result| result.map(|()| row))
    }
}

/// Why a source cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file is missing or unreadable.
    #[error("cannot open `{path}`: {error}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// An object in a bucket cannot be read: why, naming the bucket and key.
    #[error("{0}")]
    Object(String),
    /// The file has no header row.
    #[error("`{0}` is empty: it has no header row")]
    Empty(String),
    /// The header row is unusable.
    #[error("the header of `{path}` {problem}")]
    BadHeader {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

/// How far a reader is through its file: bytes taken from the disk so far (compressed bytes
/// for a `.gz`), of the file's size. Cheap to share: the reader adds once per buffer it fills.
#[derive(Debug, Clone, Default)]
pub struct ReadProgress {
    read: Arc<AtomicU64>,
    /// The file's size in bytes.
    pub total: u64,
}

impl ReadProgress {
    /// Bytes read so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

/// A file (or object) that counts the bytes read from it into a [`ReadProgress`].
struct Counted {
    bytes: Box<dyn Read + Send>,
    read: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let count = self.bytes.read(buffer)?;
        self.read.fetch_add(count as u64, Ordering::Relaxed);
        Ok(count)
    }
}

/// Opens a source for streaming.
pub fn open(source: &FileSource) -> Result<Box<dyn RowStream>, OpenError> {
    open_with_progress(source).map(|(rows, _)| rows)
}

/// Opens a source for streaming, with a view of how far through its file the reader is.
///
/// A panic inside a reader's library (a corrupt Parquet page can panic the parquet crate) is
/// a located error of the run, never the end of the process: opening and every read run
/// inside [`Guarded`].
pub fn open_with_progress(
    source: &FileSource,
) -> Result<(Box<dyn RowStream>, ReadProgress), OpenError> {
    let shown = source.path.display().to_string();
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open_unguarded(source)))
        .unwrap_or_else(|panic| {
            Err(OpenError::BadHeader {
                path: shown.clone(),
                problem: format!(
                    "cannot be read: its reader failed ({})",
                    panic_message(&*panic)
                ),
            })
        })?;
    let (rows, progress) = opened;
    Ok((Box::new(Guarded::new(rows, shown)), progress))
}

fn open_unguarded(source: &FileSource) -> Result<(Box<dyn RowStream>, ReadProgress), OpenError> {
    if source.format == SourceFormat::Parquet {
        let (rows, progress) = parquet::ParquetStream::open(
            &source.path,
            source.projection.as_deref(),
            source.timezone,
        )?;
        return Ok((Box::new(rows), progress));
    }
    let (reader, progress) = open_bytes(&source.path, source.compression)?;
    let rows = rows_of(source, reader)?;
    Ok((rows, progress))
}

/// A reader whose panics are errors: a read that panics ends the stream with a
/// [`RowError::Fatal`] naming the file and the row it was reading.
struct Guarded {
    inner: Option<Box<dyn RowStream>>,
    file: String,
    /// Rows read so far.
    rows: u64,
}

impl Guarded {
    fn new(inner: Box<dyn RowStream>, file: String) -> Self {
        Guarded {
            inner: Some(inner),
            file,
            rows: 0,
        }
    }
}

impl RowStream for Guarded {
    fn columns(&self) -> Option<&[Arc<str>]> {
        self.inner.as_ref().and_then(|inner| inner.columns())
    }

    fn read_row(&mut self, row: &mut Row) -> Option<Result<(), RowError>> {
        let inner = self.inner.as_mut()?;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.read_row(row))) {
            Ok(read) => {
                self.rows += 1;
                read
            }
            Err(panic) => {
                // A reader that panicked is in no state to read on.
                self.inner = None;
                Some(Err(RowError::Fatal(format!(
                    "`{}` cannot be read past row {}: its reader failed ({}); the file is damaged or written in a way tapline cannot read",
                    self.file,
                    self.rows,
                    panic_message(&*panic)
                ))))
            }
        }
    }
}

/// What a panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

fn rows_of(
    source: &FileSource,
    reader: Box<dyn BufRead + Send>,
) -> Result<Box<dyn RowStream>, OpenError> {
    let display = source.path.display().to_string();
    Ok(match source.format {
        SourceFormat::Csv => Box::new(delimited::DelimitedStream::new(
            reader, b',', true, &display,
        )?),
        SourceFormat::Tsv => Box::new(delimited::DelimitedStream::new(
            reader, b'\t', false, &display,
        )?),
        SourceFormat::Jsonl => Box::new(jsonl::JsonlStream::new(reader)),
        SourceFormat::Rejects => Box::new(rejects::RejectsStream::new(reader)),
        SourceFormat::Snapshot => {
            Box::new(snapshot::SnapshotStream::new(reader).map_err(|problem| {
                OpenError::BadHeader {
                    path: display.clone(),
                    problem,
                }
            })?)
        }
        // Parquet is read by path (it seeks), never as a stream of bytes.
        SourceFormat::Parquet => {
            return Err(OpenError::BadHeader {
                path: display,
                problem: "is Parquet, which is read from a file, not a stream".into(),
            });
        }
    })
}

/// The column names of a source: its header, or the keys of the first JSONL record.
pub fn columns(source: &FileSource) -> Result<Vec<String>, OpenError> {
    let mut stream = open(source)?;
    if let Some(columns) = stream.columns() {
        return Ok(columns.iter().map(|c| c.to_string()).collect());
    }
    loop {
        match stream.next_row() {
            Some(Ok(row)) => {
                return Ok(row
                    .fields
                    .iter()
                    .map(|(name, _)| name.to_string())
                    .collect());
            }
            Some(Err(RowError::Invalid { .. })) => continue,
            Some(Err(RowError::Fatal(problem))) => {
                return Err(OpenError::BadHeader {
                    path: source.path.display().to_string(),
                    problem,
                });
            }
            None => return Ok(Vec::new()),
        }
    }
}

/// A UUID's 16 bytes as `00010203-0405-0607-0809-0a0b0c0d0e0f`.
fn hyphenated_uuid(bytes: [u8; 16]) -> String {
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn open_bytes(
    path: &Path,
    compression: Compression,
) -> Result<(Box<dyn BufRead + Send>, ReadProgress), OpenError> {
    let (bytes, total): (Box<dyn Read + Send>, u64) =
        match Location::of(path).map_err(OpenError::Object)? {
            Location::Object(url) => {
                let object =
                    object::read::Object::open(&url).map_err(|error| OpenError::Object(error.0))?;
                let size = object.version.size;
                (Box::new(object::read::ObjectReader::new(object)), size)
            }
            Location::Local(path) => {
                let file = File::open(path).map_err(|error| OpenError::Io {
                    path: path.display().to_string(),
                    error,
                })?;
                let size = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
                (Box::new(file), size)
            }
        };
    let progress = ReadProgress {
        read: Arc::default(),
        total,
    };
    let file = Counted {
        bytes,
        read: Arc::clone(&progress.read),
    };
    let buffered = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let reader: Box<dyn BufRead + Send> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            READ_BUFFER_BYTES,
            flate2::bufread::MultiGzDecoder::new(buffered),
        )),
        Compression::Zstd => {
            // Every frame of the file, as `zstd -d` reads it.
            let decoder = zstd::stream::read::Decoder::with_buffer(buffered).map_err(|error| {
                OpenError::Io {
                    path: path.display().to_string(),
                    error,
                }
            })?;
            Box::new(BufReader::with_capacity(READ_BUFFER_BYTES, decoder))
        }
    };
    Ok((reader, progress))
}

#[cfg(test)]
mod tests;
