//! `tapline state`: changes to what the state store keeps (`forget`: a pipeline's record
//! fingerprints and incremental watermark).

use std::path::Path;

use super::terminal::{errln, outln};
use super::{Exit, printed};

/// `tapline state forget`: drops a pipeline's record fingerprints and watermark.
pub(super) fn forget(pipeline: &str, dir: &Path, state_dir: Option<&Path>) -> Exit {
    let dir = crate::runner::state_dir(state_dir, dir);
    if !dir.join(crate::state::DATABASE_FILE).is_file() {
        errln!(
            "error: there is no state store `{}`\n  hint: give the pipelines folder with `--dir`, or the store's folder with `--state-dir`",
            dir.join(crate::state::DATABASE_FILE).display()
        );
        return Exit::Usage;
    }
    let forgotten = crate::state::open(&dir).and_then(|mut store| {
        let _lock = store.lock(pipeline)?;
        let fingerprints = store.forget_fingerprints(pipeline)?;
        Ok((fingerprints, store.forget_watermarks(pipeline)?))
    });
    match forgotten {
        Ok((count, watermarks)) => printed(
            outln!(
                "{pipeline}: forgot {count} record fingerprints{}; its next run sends every record",
                if watermarks > 0 {
                    " and its incremental watermark"
                } else {
                    ""
                }
            ),
            Exit::Success,
        ),
        Err(error) => {
            errln!("error: {error}");
            Exit::Failed
        }
    }
}
