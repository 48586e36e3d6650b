//! The rejects file: one JSON line per record that did not end accepted, written as its
//! outcome is booked.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::outcome::Settled;

/// The rejects file: one JSON object per skipped, rejected or failed record. Created on the
/// first entry, flushed after every batch so a crash loses none. A write that fails fails
/// every later one too: the caller settles nothing whose entry is not written.
pub(super) struct RejectsFile {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    error: Option<String>,
    /// A dry run writes none: it says what it would refuse, and leaves no file behind.
    off: bool,
}

impl RejectsFile {
    pub(super) fn new(path: &Path) -> Self {
        RejectsFile {
            path: path.to_path_buf(),
            writer: None,
            error: None,
            off: false,
        }
    }

    /// No file at all (a dry run).
    pub(super) fn none() -> Self {
        RejectsFile {
            off: true,
            ..RejectsFile::new(Path::new(""))
        }
    }

    /// Writes an entry (to the file's buffer: [`RejectsFile::flush`] makes it last).
    pub(super) fn write(&mut self, entry: &Settled) -> Result<(), String> {
        if self.off {
            return Ok(());
        }
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let written = match &mut self.writer {
            Some(writer) => Self::append(writer, entry),
            None => self
                .path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| File::create(&self.path))
                .and_then(|file| Self::append(self.writer.insert(BufWriter::new(file)), entry)),
        };
        written.map_err(|error| self.failed(&error))
    }

    fn append(writer: &mut BufWriter<File>, entry: &Settled) -> std::io::Result<()> {
        serde_json::to_writer(&mut *writer, entry)?;
        writer.write_all(b"\n")
    }

    /// Hands what was written to the file system.
    pub(super) fn flush(&mut self) -> Result<(), String> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        match &mut self.writer {
            Some(writer) => writer.flush().map_err(|error| self.failed(&error)),
            None => Ok(()),
        }
    }

    /// Remembers a failure, and says it.
    fn failed(&mut self, error: &std::io::Error) -> String {
        let message = format!(
            "cannot write the rejects file `{}`: {error}; records whose entry is not written are not counted as settled, and the next run sends them again (free some space, or choose another folder with --rejects-dir)",
            self.path.display()
        );
        self.error = Some(message.clone());
        message
    }

    /// The file's path if anything was written, and the write error if one happened.
    pub(super) fn finish(mut self) -> (Option<PathBuf>, Option<String>) {
        let _ = self.flush();
        let path = self.writer.is_some().then(|| self.path.clone());
        (path, self.error)
    }
}
