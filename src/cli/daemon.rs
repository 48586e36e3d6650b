//! `tapline daemon`: runs the pipelines of a folder on their schedules and file arrivals.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::{Error, Outcome};
use super::{DaemonArgs, Exit, pipelines_folder, runtime};
use crate::sandbox::{Sandbox, SandboxConfig};

pub(super) fn daemon(args: &DaemonArgs) -> Outcome {
    if let Some(file) = &args.file {
        let folder = file
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        return Err(Error::usage(format!(
            "the daemon runs every pipeline of a folder, not `{}`\n  hint: `tapline daemon --dir {}` (to run one pipeline once: `tapline run {}`)",
            file.display(),
            folder.display(),
            file.display()
        )));
    }
    pipelines_folder(&args.dir)?;
    let state = args.state.store.places(&args.dir).map_err(Error::usage)?;
    let options = crate::daemon::Options {
        state,
        dir: args.dir.clone(),
        history_days: args.state.history_days,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        listen: listen(args)?,
        sandbox: None,
    };
    let result = runtime().block_on(async {
        if !args.sandbox {
            return crate::daemon::run(options).await;
        }
        let sandbox = Sandbox::start(
            SandboxConfig::default(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .map_err(|error| crate::daemon::StartError::Sandbox(error.to_string()))?;
        let (account_id, passcode) = sandbox.credentials();
        let base_url = sandbox.base_url();
        tracing::info!(
            url = %base_url,
            "sending every pipeline to the built-in sandbox; GET {base_url}/_sandbox/inspect shows what it received"
        );
        let options = crate::daemon::Options {
            sandbox: Some(crate::daemon::SandboxTarget {
                account_id: account_id.to_string(),
                passcode: passcode.to_string(),
                base_url,
            }),
            ..options
        };
        let ended = crate::daemon::run(options).await;
        sandbox.stop().await;
        ended
    });
    result.map(|()| Exit::Success).map_err(Error::usage)
}

/// The daemon's listener: `--listen` (or its old name), with the console's token.
fn listen(args: &DaemonArgs) -> Result<Option<crate::daemon::Listen>, Error> {
    let Some(address) = args.listen.or(args.metrics_listen) else {
        return Ok(None);
    };
    Ok(Some(crate::daemon::Listen {
        address,
        token: super::ui::token(&args.console)?,
        metrics_only_without_token: args.listen.is_none(),
    }))
}
