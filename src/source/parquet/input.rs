//! Where a Parquet file's bytes come from: a local file, or ranges of an object in a bucket
//! (the reader asks for the footer, then each wanted column's pages).

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{ChunkReader, Length};

use crate::source::OpenError;
use crate::source::object::Location;
use crate::source::object::read::{Object, ObjectChunks};

/// Where a Parquet file's bytes come from: a local file, or ranges of an object.
pub(super) enum Input {
    File(File),
    Object(ObjectChunks),
}

impl Input {
    pub(super) fn open(path: &Path) -> Result<Input, OpenError> {
        match Location::of(path).map_err(OpenError::Object)? {
            Location::Object(url) => Object::open(&url)
                .map(|object| Input::Object(ObjectChunks::new(object)))
                .map_err(|error| OpenError::Object(error.0)),
            Location::Local(path) => {
                File::open(path)
                    .map(Input::File)
                    .map_err(|error| OpenError::Io {
                        path: path.display().to_string(),
                        error,
                    })
            }
        }
    }
}

impl Length for Input {
    fn len(&self) -> u64 {
        match self {
            Input::File(file) => file.len(),
            Input::Object(object) => object.len(),
        }
    }
}

impl ChunkReader for Input {
    type T = Box<dyn std::io::Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            Input::File(file) => Box::new(file.get_read(start)?),
            Input::Object(object) => Box::new(object.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        match self {
            Input::File(file) => file.get_bytes(start, length),
            Input::Object(object) => object.get_bytes(start, length),
        }
    }
}
