//! `tapline state`: changes to what the state store keeps (`forget`: a pipeline's record
//! fingerprints and incremental watermark).

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::error::{Error, Outcome};
use super::terminal::outln;
use super::{Exit, StoreArgs, printed};
use crate::state::LockWait;

/// `tapline state forget`: drops a pipeline's record fingerprints and watermark.
pub(super) fn forget(pipeline: &str, dir: &Path, store: &StoreArgs) -> Outcome {
    let location = store.places(dir).map_err(Error::usage)?.store;
    if !location.may_exist() {
        return Err(Error::usage(format!(
            "there is no state store {}\n  hint: give the pipelines folder with `--dir`, or the store's folder with `--state-dir`",
            location.shown()
        )));
    }
    let (count, watermarks) = crate::state::open(&location)
        .and_then(|mut store| {
            let _lock = store.lock(pipeline, LockWait::No, CancellationToken::new())?;
            let fingerprints = store.forget_fingerprints(pipeline)?;
            Ok((fingerprints, store.forget_watermarks(pipeline)?))
        })
        .map_err(Error::failed)?;
    Ok(printed(
        outln!(
            "{pipeline}: forgot {count} record fingerprints{}; its next run sends every record",
            if watermarks > 0 {
                " and its incremental watermark"
            } else {
                ""
            }
        ),
        Exit::Success,
    ))
}
