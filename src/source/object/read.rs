//! Reading one version of an object: front to back for the line formats
//! ([`ObjectReader`], a [`std::io::Read`]), and where the Parquet reader asks
//! ([`ObjectChunks`], its `ChunkReader`). Requests run on the object runtime; the reader
//! waits for the range it needs while the next ones are already on their way.

use std::collections::VecDeque;
use std::io::Read;
use std::ops::Range;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use object_store::path::Path as Key;
use object_store::{GetOptions, GetRange, ObjectStore};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

use super::{Bucket, ObjectError, ObjectUrl, ObjectVersion, waiting};

/// Bytes asked for at a time when an object is read front to back.
const RANGE_BYTES: u64 = 4 * 1024 * 1024;
/// Ranges on their way while the current one is read.
const RANGES_AHEAD: usize = 2;
/// The block the Parquet reader's reads are served from.
const BLOCK_BYTES: u64 = 1024 * 1024;
/// Blocks kept for the Parquet reader (a row group's columns are read side by side, each
/// from its own block); the least recently used goes first.
const BLOCKS_KEPT: usize = 16;

/// One version of an object, opened: every range is asked of this version (its ETag).
pub(crate) struct Object {
    bucket: Bucket,
    key: Key,
    /// The version read.
    pub(crate) version: ObjectVersion,
}

/// What a range request answers.
type Answer = Result<Bytes, object_store::Error>;

impl Object {
    /// The object at `url` as it is now.
    pub(crate) fn open(url: &ObjectUrl) -> Result<Arc<Object>, ObjectError> {
        let bucket = Bucket::of(url)?;
        let version = bucket.head(url)?;
        Ok(Arc::new(Object {
            bucket,
            key: super::key_of(url),
            version,
        }))
    }

    /// Starts fetching `range` of this version; the bytes arrive on the receiver.
    fn fetch(&self, range: Range<u64>) -> Receiver<Answer> {
        tracing::debug!(object = %self.version.url, start = range.start, end = range.end, "reading a range");
        let store = self.bucket.store.clone();
        let key = self.key.clone();
        let etag = self.version.etag.clone();
        waiting(async move {
            let options = GetOptions {
                range: Some(GetRange::Bounded(range)),
                if_match: (!etag.is_empty()).then(|| etag.clone()),
                ..GetOptions::default()
            };
            let answer = store.get_opts(&key, options).await?;
            if !etag.is_empty() && answer.meta.e_tag.as_deref().is_some_and(|now| now != etag) {
                return Err(object_store::Error::Precondition {
                    path: key.to_string(),
                    source: "the ETag changed".into(),
                });
            }
            answer.bytes().await
        })
    }

    /// Waits for a range started by [`Object::fetch`].
    fn receive(&self, answer: &Receiver<Answer>) -> Result<Bytes, ObjectError> {
        match answer.recv() {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(error)) => Err(self.bucket.explain(&self.version.url, error)),
            Err(_) => Err(ObjectError("the object reader stopped".to_string())),
        }
    }

    /// The bytes of `range`, waited for.
    fn range(&self, range: Range<u64>) -> Result<Bytes, ObjectError> {
        self.receive(&self.fetch(range))
    }
}

/// An object read front to back, [`RANGE_BYTES`] at a time with [`RANGES_AHEAD`] more on
/// their way: at most (1 + [`RANGES_AHEAD`]) ranges in memory.
pub(crate) struct ObjectReader {
    object: Arc<Object>,
    current: Bytes,
    ahead: VecDeque<Receiver<Answer>>,
    /// Where the next range to ask for starts.
    next_start: u64,
}

impl ObjectReader {
    /// Reads `object` from its first byte.
    pub(crate) fn new(object: Arc<Object>) -> ObjectReader {
        ObjectReader {
            object,
            current: Bytes::new(),
            ahead: VecDeque::new(),
            next_start: 0,
        }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.current.is_empty() {
            let size = self.object.version.size;
            while self.ahead.len() < RANGES_AHEAD && self.next_start < size {
                let end = (self.next_start + RANGE_BYTES).min(size);
                self.ahead
                    .push_back(self.object.fetch(self.next_start..end));
                self.next_start = end;
            }
            let Some(next) = self.ahead.pop_front() else {
                return Ok(0);
            };
            self.current = self
                .object
                .receive(&next)
                .map_err(|error| std::io::Error::other(error.0))?;
        }
        let count = buffer.len().min(self.current.len());
        buffer[..count].copy_from_slice(&self.current[..count]);
        let _ = self.current.split_to(count);
        Ok(count)
    }
}

/// An object as the Parquet reader reads it: ranges where it asks, served from a few
/// [`BLOCK_BYTES`] blocks, so the footer, then each wanted column's pages, are all that is
/// fetched (a projection never downloads the other columns).
#[derive(Clone)]
pub(crate) struct ObjectChunks {
    object: Arc<Object>,
    blocks: Arc<Mutex<VecDeque<(u64, Bytes)>>>,
}

impl ObjectChunks {
    /// The Parquet view of `object`.
    pub(crate) fn new(object: Arc<Object>) -> ObjectChunks {
        ObjectChunks {
            object,
            blocks: Arc::default(),
        }
    }

    /// Block `index`, from the kept blocks or fetched.
    fn block(&self, index: u64) -> Result<Bytes, ParquetError> {
        let mut blocks = self
            .blocks
            .lock()
            .map_err(|_| ParquetError::General("the object's blocks were lost".into()))?;
        if let Some(at) = blocks.iter().position(|(kept, _)| *kept == index) {
            let found = blocks
                .remove(at)
                .map(|(_, bytes)| bytes)
                .unwrap_or_default();
            blocks.push_back((index, found.clone()));
            return Ok(found);
        }
        let start = index * BLOCK_BYTES;
        let end = (start + BLOCK_BYTES).min(self.object.version.size);
        let bytes = self.object.range(start..end).map_err(general)?;
        if blocks.len() == BLOCKS_KEPT {
            blocks.pop_front();
        }
        blocks.push_back((index, bytes.clone()));
        Ok(bytes)
    }
}

fn general(error: ObjectError) -> ParquetError {
    ParquetError::General(error.0)
}

impl Length for ObjectChunks {
    fn len(&self) -> u64 {
        self.object.version.size
    }
}

impl ChunkReader for ObjectChunks {
    type T = ChunkRead;

    fn get_read(&self, start: u64) -> Result<ChunkRead, ParquetError> {
        Ok(ChunkRead {
            chunks: self.clone(),
            at: start,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        let end = start + length as u64;
        if end > self.len() {
            return Err(ParquetError::EOF(format!(
                "bytes {start}..{end} are past the end of the object ({} bytes)",
                self.len()
            )));
        }
        if length == 0 {
            return Ok(Bytes::new());
        }
        let (first, last) = (start / BLOCK_BYTES, (end - 1) / BLOCK_BYTES);
        if first == last {
            let block = self.block(first)?;
            let offset = (start - first * BLOCK_BYTES) as usize;
            return Ok(block.slice(offset..offset + length));
        }
        if length as u64 >= 2 * BLOCK_BYTES {
            // A large page: fetched as it is, not through the blocks.
            return self.object.range(start..end).map_err(general);
        }
        let mut joined = BytesMut::with_capacity(length);
        for index in first..=last {
            let block = self.block(index)?;
            let block_start = index * BLOCK_BYTES;
            let from = start.max(block_start) - block_start;
            let to = end.min(block_start + block.len() as u64) - block_start;
            joined.extend_from_slice(&block[from as usize..to as usize]);
        }
        Ok(joined.freeze())
    }
}

/// Reads an object from an offset on, through its [`ObjectChunks`] blocks.
pub(crate) struct ChunkRead {
    chunks: ObjectChunks,
    at: u64,
}

impl Read for ChunkRead {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let size = self.chunks.len();
        if self.at >= size || buffer.is_empty() {
            return Ok(0);
        }
        let index = self.at / BLOCK_BYTES;
        let block = self
            .chunks
            .block(index)
            .map_err(|error| std::io::Error::other(error.to_string()))?;
        let offset = (self.at - index * BLOCK_BYTES) as usize;
        let count = buffer.len().min(block.len().saturating_sub(offset));
        buffer[..count].copy_from_slice(&block[offset..offset + count]);
        self.at += count as u64;
        Ok(count)
    }
}
