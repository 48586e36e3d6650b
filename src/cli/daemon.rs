//! `tapline daemon`: runs the pipelines of a folder on their schedules and file arrivals.

use std::time::Duration;

use super::terminal::errln;
use super::{DaemonArgs, Exit, pipelines_folder, runtime};
use crate::runner;

pub(super) fn daemon(args: &DaemonArgs) -> Exit {
    if let Err(exit) = pipelines_folder(&args.dir) {
        return exit;
    }
    let options = crate::daemon::Options {
        state_dir: runner::state_dir(args.state.state_dir.as_deref(), &args.dir),
        dir: args.dir.clone(),
        history_days: args.state.history_days,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        metrics_listen: args.metrics_listen,
    };
    match runtime().block_on(crate::daemon::run(options)) {
        Ok(()) => Exit::Success,
        Err(error) => {
            tracing::error!("{error:#}");
            errln!("error: {error:#}");
            Exit::Usage
        }
    }
}
