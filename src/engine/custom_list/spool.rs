//! The custom list's spool: the CSV of one run written to a file in the state directory
//! (its exact length known before the upload), and the source line of each identity beside it.

use std::path::{Path, PathBuf};

use super::Listed;
use crate::engine::ledger::Ledger;
use crate::engine::{Job, Observer, StopReason};
use crate::outcome::{Carried, Code, Outcome, Settled};

/// The spooled CSV of one run, and beside it the source line of each of its identities (so
/// a list CleverTap did not take can name each identity's line in the rejects file); both
/// files are removed when it is dropped, however the run ends.
pub(super) struct Spool {
    pub(super) path: PathBuf,
    lines_path: PathBuf,
}

impl Spool {
    pub(super) fn create(
        dir: &Path,
        job: &Job,
    ) -> std::io::Result<(Spool, std::fs::File, std::fs::File)> {
        std::fs::create_dir_all(dir)?;
        let stem = format!(
            "{}-{}",
            crate::file_stem::of(&job.pipeline),
            job.context.run_id
        );
        let spool = Spool {
            path: dir.join(format!("{stem}.csv")),
            lines_path: dir.join(format!("{stem}.lines")),
        };
        let csv = std::fs::File::create(&spool.path)?;
        let lines = std::fs::File::create(&spool.lines_path)?;
        Ok((spool, csv, lines))
    }

    /// Books every identity of the list as failed, each with its source line and entry, in
    /// the rejects file: CleverTap never sees a partial list, so none of it was delivered.
    pub(super) fn book_undelivered(
        &self,
        listed: &Listed,
        reason: &str,
        ledger: &mut Ledger,
        observer: &mut dyn Observer,
    ) {
        let booked = self.read_back(reason, |settled| {
            ledger.book_undelivered(&settled, observer);
        });
        match booked {
            Ok(count) if count == listed.lines => {}
            Ok(count) => {
                ledger
                    .counts
                    .add(Outcome::Failed, listed.lines.saturating_sub(count));
                tracing::warn!(
                    listed = listed.lines,
                    read_back = count,
                    "the custom list's spool holds fewer identities than were written"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the custom list's spool back; its identities are counted as failed but not listed in the rejects file");
                ledger.counts.add(Outcome::Failed, listed.lines);
            }
        }
        if let Err(error) = ledger.rejects.flush() {
            ledger.stop(StopReason::RejectsFailed(error));
        }
    }

    /// Reads the spool's identities with their source lines, giving each to `book` as a
    /// failed record; returns how many.
    fn read_back(&self, reason: &str, mut book: impl FnMut(Settled)) -> std::io::Result<u64> {
        use std::io::BufRead;
        let mut entries = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_path(&self.path)
            .map_err(std::io::Error::other)?;
        let mut lines = std::io::BufReader::new(std::fs::File::open(&self.lines_path)?).lines();
        let mut count = 0;
        for entry in entries.records() {
            let entry = entry.map_err(std::io::Error::other)?;
            let Some(line) = lines.next().transpose()? else {
                break;
            };
            book(Settled {
                line: line.trim().parse().unwrap_or(0),
                outcome: Outcome::Failed,
                code: Code::NotSent,
                reason: reason.to_string(),
                carried: Carried::record(Some(serde_json::json!({
                    "type": entry.get(0).unwrap_or("i"),
                    "identity": entry.get(1).unwrap_or_default(),
                }))),
            });
            count += 1;
        }
        Ok(count)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        for path in [&self.path, &self.lines_path] {
            if let Err(error) = std::fs::remove_file(path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %path.display(), %error, "cannot remove a custom list's spool file");
            }
        }
    }
}
