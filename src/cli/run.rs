//! `tapline run`: runs pipelines once, with a progress line, and prints their summaries.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::error::{Error, Outcome, report};
use super::summary::{print_sandbox, print_summary, sandbox_json, summary_json};
use super::terminal::{self, outln};
use super::{Exit, RunArgs, folder_of, load_all, printed, runtime, spawn_signal_handler};
use crate::clevertap::Client;
use crate::config::{Credentials, Pipeline, Secret};
use crate::engine::{BatchReport, Delivery, NotRecorded, Observer};
use crate::outcome::{Counts, Settled};
use crate::runner::{self, Bookkeeping, DeliveredBefore, Resume};
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::source;

pub(super) fn run(args: &RunArgs) -> Outcome {
    // A dry run needs no secrets, but reads the account and endpoint when it can: they name
    // the destination whose record fingerprints (`send: changes`) it compares against.
    let credentials = if args.sandbox {
        Credentials::Ignore
    } else if args.dry_run {
        Credentials::Check
    } else {
        Credentials::Resolve
    };
    let mut pipelines = match load_all(&args.pipelines, credentials) {
        Ok(pipelines) => pipelines,
        // Their diagnostics are printed.
        Err((exit, _)) => return Ok(exit),
    };
    in_upload_order(&mut pipelines);
    runtime().block_on(run_pipelines(pipelines, args))
}

/// Orders pipelines as CleverTap asks: profiles before what refers to them, events last
/// ("upload user profiles first", import FAQs); otherwise as given.
fn in_upload_order(pipelines: &mut [Pipeline]) {
    use crate::config::model::Target;
    pipelines.sort_by_key(|pipeline| match pipeline.target {
        Target::Profiles { .. } => 0,
        Target::Events => 2,
        _ => 1,
    });
}

pub(super) async fn run_pipelines(pipelines: Vec<Pipeline>, args: &RunArgs) -> Outcome {
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let sandbox = if args.sandbox {
        Some(start_sandbox().await?)
    } else {
        None
    };
    let mut exit = Exit::Success;
    for mut pipeline in pipelines.into_iter().flat_map(one_per_file) {
        if let Some(sandbox) = &sandbox {
            send_to_sandbox(&mut pipeline, sandbox);
        }
        let places = args
            .state
            .store
            .places(folder_of(&pipeline.file))
            .map_err(Error::usage)?;
        let request = |delivery| {
            let mut request = runner::Request::manual(delivery, places, args.state.history_days);
            if args.fresh {
                request.resume = Resume::Fresh;
            }
            if args.force {
                request.delivered_before = DeliveredBefore::SendAgain;
            }
            if args.full {
                // Every record, whatever CleverTap had: the delivered-file guard too.
                request.changes = runner::Changes::SendAll;
                request.delivered_before = DeliveredBefore::SendAgain;
            }
            // A throwaway sandbox has nothing to resume and nothing to protect from
            // duplicates: the run is only written to the history, as sent to `sandbox`.
            if args.sandbox {
                request.bookkeeping = Bookkeeping::HistoryOnly;
                request.to_sandbox = true;
            }
            if args.dry_run {
                request.bookkeeping = Bookkeeping::Off;
            }
            request
        };
        let outcome = match delivery(&pipeline, args.dry_run) {
            Ok(delivery) => {
                execute(
                    &pipeline,
                    &request(delivery),
                    args.json,
                    sandbox.as_ref(),
                    &cancel,
                )
                .await
            }
            Err(error) => report(&error),
        };
        exit = exit.max(outcome);
        if cancel.is_cancelled() {
            break;
        }
    }
    if let Some(sandbox) = sandbox {
        if !args.json {
            exit = printed(print_sandbox(&mut terminal::stdout(), &sandbox), exit);
        }
        sandbox.stop().await;
    }
    Ok(exit)
}

/// Starts the built-in sandbox on a free loopback port (`--sandbox`).
pub(super) async fn start_sandbox() -> Result<Sandbox, Error> {
    Sandbox::start(
        SandboxConfig::default(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .map_err(|error| Error::failed(format!("cannot start the sandbox: {error}")))
}

/// Points a pipeline at the sandbox, with its credentials.
pub(super) fn send_to_sandbox(pipeline: &mut Pipeline, sandbox: &Sandbox) {
    let (account_id, passcode) = sandbox.credentials();
    pipeline.connection.account_id = account_id.to_string();
    pipeline.connection.passcode = Secret::new(passcode);
    pipeline.connection.base_url = sandbox.base_url();
}

/// A `file_arrival` pipeline whose source is a pattern runs once per matching file, oldest
/// first (files already delivered are then up to date); any other pipeline runs as it is.
pub(super) fn one_per_file(pipeline: Pipeline) -> Vec<Pipeline> {
    let Some(pattern) = pipeline
        .source
        .path()
        .filter(|path| source::arrival::is_pattern(path))
        .map(Path::to_path_buf)
    else {
        return vec![pipeline];
    };
    match source::arrival::matching(&pattern, &mut |_| false, source::arrival::Wanted::Every) {
        Ok(files) => {
            if files.is_empty() {
                // A reader that went away hears of it with the summaries that follow.
                let _ = outln!(
                    "{}: no file matches `{}`; nothing to send",
                    pipeline.name,
                    pattern.display()
                );
            }
            files
                .into_iter()
                .map(|file| {
                    let mut one = pipeline.clone();
                    one.source.set_path(file.path);
                    one
                })
                .collect()
        }
        Err(error) => {
            report(&Error::failed(format!("{}: {error}", pipeline.name)));
            Vec::new()
        }
    }
}

/// Where a pipeline's batches go: CleverTap through a client, or nowhere in a dry run.
pub(super) fn delivery(pipeline: &Pipeline, dry_run: bool) -> Result<Delivery, Error> {
    if dry_run {
        return Ok(Delivery::DryRun);
    }
    Client::new(&pipeline.connection.account())
        .map(Delivery::Send)
        .map_err(|error| Error::usage(format!("{}: {error}", pipeline.name)))
}

/// Runs one pipeline and prints its summary; returns its exit code.
pub(super) async fn execute(
    pipeline: &Pipeline,
    request: &runner::Request,
    json: bool,
    sandbox: Option<&Sandbox>,
    cancel: &CancellationToken,
) -> Exit {
    let mut progress = Progress::new(
        &pipeline.name,
        !json,
        matches!(pipeline.send, crate::config::model::Send::Changes { .. }),
    );
    let result = runner::run(pipeline, request, &mut progress, cancel.clone()).await;
    progress.finish();
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            if json {
                let line = json!({"pipeline": pipeline.name, "status": "failed", "error": error.to_string()});
                return printed(outln!("{line}"), Exit::Failed);
            }
            return report(&Error::failed(format!("{}: {error}", pipeline.name)));
        }
    };
    let exit = if summary.succeeded() {
        Exit::Success
    } else {
        Exit::Failed
    };
    let written = if json {
        let mut line = summary_json(&summary);
        if let Some(sandbox) = sandbox {
            line["sandbox"] = sandbox_json(sandbox);
        }
        outln!("{line}")
    } else {
        print_summary(&mut terminal::stdout(), &summary, pipeline)
    };
    printed(written, exit)
}

/// A progress line on a terminal, a few updates a second; nothing otherwise. Once the source
/// is open it shows how far through the file the reader is (bytes, so it works for rows of
/// any length and for gzip), and once records have settled for a while, an estimate of the
/// time left (the reader runs ahead of the uploads, so an estimate from its first bytes
/// would be a guess).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    source: Option<crate::source::ReadProgress>,
    /// The run leaves out what CleverTap has (`send: changes`): the line counts `unchanged`.
    changes: bool,
    /// The line shows the estimate of the time left.
    estimating: bool,
    /// The run's limit of requests in flight, shown when `thread_count: auto` moves it.
    limit: Option<crate::engine::concurrency::CurrentLimit>,
}

/// Redraws per second, at most.
const PROGRESS_HZ: u8 = 4;

/// How long records must have been settling before the time left is estimated.
const ESTIMATE_AFTER: Duration = Duration::from_secs(1);

/// The bar, with or without the estimate of the time left.
fn bar_style(estimate: bool) -> indicatif::ProgressStyle {
    let template = if estimate {
        "{spinner} {prefix} [{bar:24}] {bytes}/{total_bytes} · ETA {eta} · {msg}"
    } else {
        "{spinner} {prefix} [{bar:24}] {bytes}/{total_bytes} · {msg}"
    };
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress {
    fn new(pipeline: &str, enabled: bool, changes: bool) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                source: None,
                changes,
                estimating: false,
                limit: None,
            };
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            None,
            indicatif::ProgressDrawTarget::stderr_with_hz(PROGRESS_HZ),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(pipeline.to_string());
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress {
            bar: Some(bar),
            source: None,
            changes,
            estimating: false,
            limit: None,
        }
    }

    fn show(&mut self, counts: &Counts) {
        let Some(bar) = &self.bar else { return };
        if let Some(source) = &self.source {
            bar.set_position(source.read());
            let settled = counts.accepted + counts.unchanged + counts.skipped + counts.rejected;
            if !self.estimating && settled > 0 && bar.elapsed() >= ESTIMATE_AFTER {
                bar.set_style(bar_style(true));
                self.estimating = true;
            }
        }
        let unchanged = if self.changes {
            format!(" · {} unchanged", counts.unchanged)
        } else {
            String::new()
        };
        let in_flight = match &self.limit {
            Some(limit) if limit.adaptive => format!(" · auto: {} in flight", limit.get()),
            _ => String::new(),
        };
        bar.set_message(format!(
            "{} read · {} accepted{unchanged} · {} skipped · {} rejected · {} failed{in_flight}",
            counts.read, counts.accepted, counts.skipped, counts.rejected, counts.failed
        ));
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn batch_settled(&mut self, _report: &BatchReport, counts: &Counts) -> Result<(), NotRecorded> {
        self.show(counts);
        Ok(())
    }

    fn record_skipped(&mut self, _settled: &Settled, counts: &Counts) {
        self.show(counts);
    }

    fn records_unchanged(&mut self, _ranges: &[(u64, u64)], counts: &Counts) {
        self.show(counts);
    }

    fn sending_started(&mut self, limit: &crate::engine::concurrency::CurrentLimit) {
        self.limit = Some(limit.clone());
    }

    fn query_started(&mut self, database: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("reading the query's rows from `{database}`"));
        }
    }

    fn source_opened(&mut self, source: &crate::source::ReadProgress) {
        let Some(bar) = &self.bar else { return };
        if source.total == 0 {
            return;
        }
        bar.set_length(source.total);
        bar.set_style(bar_style(false));
        self.source = Some(source.clone());
    }
}
