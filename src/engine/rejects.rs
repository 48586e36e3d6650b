//! The rejects file: one JSON line per record that did not end accepted, written as its
//! outcome is booked.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::outcome::Settled;

/// The rejects file: one JSON object per skipped, rejected or failed record. Created on the
/// first entry, flushed after every batch so a crash loses none.
pub(super) struct RejectsFile {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    error: Option<String>,
}

impl RejectsFile {
    pub(super) fn new(path: &Path) -> Self {
        RejectsFile {
            path: path.to_path_buf(),
            writer: None,
            error: None,
        }
    }

    pub(super) fn write(&mut self, entry: &Settled) {
        if self.error.is_some() {
            return;
        }
        if self.writer.is_none() {
            let created = self
                .path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| File::create(&self.path));
            match created {
                Ok(file) => self.writer = Some(BufWriter::new(file)),
                Err(error) => {
                    self.error = Some(format!(
                        "cannot write the rejects file `{}`: {error}",
                        self.path.display()
                    ));
                    return;
                }
            }
        }
        if let Some(writer) = &mut self.writer {
            let written = serde_json::to_writer(&mut *writer, entry)
                .map_err(std::io::Error::from)
                .and_then(|()| writer.write_all(b"\n"));
            if let Err(error) = written {
                self.error = Some(format!(
                    "cannot write the rejects file `{}`: {error}",
                    self.path.display()
                ));
            }
        }
    }

    pub(super) fn flush(&mut self) {
        if let Some(writer) = &mut self.writer
            && let Err(error) = writer.flush()
        {
            self.error = Some(format!(
                "cannot write the rejects file `{}`: {error}",
                self.path.display()
            ));
        }
    }

    /// The file's path if anything was written, and the write error if one happened.
    pub(super) fn finish(mut self) -> (Option<PathBuf>, Option<String>) {
        self.flush();
        let path = self.writer.is_some().then(|| self.path.clone());
        (path, self.error)
    }
}
