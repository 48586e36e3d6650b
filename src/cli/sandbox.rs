//! `tapline sandbox`: the local CleverTap, served until Ctrl-C.

use std::io::Write;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::{Error, Outcome};
use super::terminal::{errln, outln};
use super::{Exit, SandboxArgs, runtime, spawn_signal_handler};
use crate::sandbox::{Sandbox, SandboxConfig};

pub(super) fn serve_sandbox(args: SandboxArgs) -> Outcome {
    if !(0.0..=1.0).contains(&args.fault_rate) {
        return Err(Error::usage("--fault-rate must be between 0.0 and 1.0"));
    }
    let config = SandboxConfig {
        account_id: args.account_id,
        passcode: args.passcode,
        latency: Duration::from_millis(args.latency_ms),
        latency_per_request: Duration::from_millis(args.latency_per_request_ms),
        max_concurrent: args.concurrency_limit,
        fault_rate: args.fault_rate,
        faults: args.faults,
        slow_response: Duration::from_millis(args.slow_ms),
        keep_records: args.keep_records,
        discarded_events: args.discard_event,
        seed: args.seed,
        admin_emails: args.admin_email,
        ..SandboxConfig::default()
    };
    runtime().block_on(async move {
        let sandbox = Sandbox::start(config, args.listen)
            .await
            .map_err(|error| Error::failed(format!("cannot listen on {}: {error}", args.listen)))?;
        let (account_id, passcode) = sandbox.credentials();
        // The default passcode is in the documentation; one given with --passcode is a
        // secret of whoever gave it, and stays out of the terminal and its logs.
        let passcode = if passcode == crate::sandbox::DEFAULT_PASSCODE {
            format!("`{passcode}`")
        } else {
            "as given with --passcode".to_string()
        };
        // Callers read the URL from the first line: without it the sandbox is of no use.
        if let Err(error) = outln!("{}", sandbox.base_url()) {
            sandbox.stop().await;
            return Err(Error::failed(format!(
                "cannot print the sandbox's URL: {error}"
            )));
        }
        errln!(
            "tapline sandbox listening on {} (account id `{account_id}`, passcode {passcode})",
            sandbox.base_url()
        );
        errln!(
            "  inspect: GET {}/_sandbox/inspect · records: GET {}/_sandbox/records?type=profile",
            sandbox.base_url(),
            sandbox.base_url()
        );
        let _ = std::io::stdout().flush();
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        cancel.cancelled().await;
        sandbox.stop().await;
        Ok(Exit::Success)
    })
}
