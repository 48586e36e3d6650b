//! The `tapline` command line: argument parsing, printing, and exit codes.
//!
//! Exit codes come from one place, [`Exit`]: 0 every record delivered (or skipped where
//! allowed), 1 the run failed or stopped, 2 a usage or configuration error.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clevertap::Client;
use crate::config::{self, Credentials, Diagnostic, Pipeline, Secret};
use crate::engine::{self, Delivery, Observer, RunSummary};
use crate::outcome::{Counts, Settled};
use crate::runner::{self, Bookkeeping, DeliveredBefore, Resume};
use crate::sandbox::{self, Fault, Sandbox, SandboxConfig};
use crate::{mapping, preflight, source};

mod history;
pub mod terminal;

use terminal::{errln, outln};

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Everything delivered.
    Success = 0,
    /// A run failed or stopped.
    Failed = 1,
    /// Bad arguments or configuration.
    Usage = 2,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Move customer data from files into CleverTap.
#[derive(Debug, Parser)]
#[command(name = "tapline", version, about, long_about = None)]
struct Cli {
    /// Log lines as `text` (default), `json` (one object per line, for log shippers) or
    /// `journald` (native journal entries with fields such as PIPELINE and RUN_ID).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines; colours only on a terminal.
    Text,
    /// One JSON object per line, with fields such as `pipeline` and `run_id`.
    Json,
    /// Straight to the systemd journal, each field a journal field; text on stderr when
    /// there is no journal.
    Journald,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check pipeline files offline and report every problem as file:line:col.
    Validate {
        /// Pipeline files or folders of them.
        #[arg(default_value = "pipelines")]
        paths: Vec<PathBuf>,
    },
    /// Run pipelines once and print what happened to every record.
    Run(RunArgs),
    /// Print the JSON Schema of pipeline files (or of connections.yaml).
    Schema {
        /// Print the schema of connections.yaml instead.
        #[arg(long)]
        connections: bool,
    },
    /// Serve the local CleverTap sandbox until Ctrl-C.
    Sandbox(SandboxArgs),
    /// Show past runs, or one run in detail.
    History(HistoryArgs),
    /// Send the records of a rejects file again, through the pipeline that wrote it.
    Replay(ReplayArgs),
    /// Run a folder of pipelines on their schedules until SIGTERM; reload on changes.
    Daemon(DaemonArgs),
    /// Print each scheduled pipeline's next fire times, in its time zone.
    Next {
        /// The folder of pipeline files.
        #[arg(long, default_value = "pipelines")]
        dir: PathBuf,
        /// How many fire times to print per pipeline.
        #[arg(long, default_value_t = 3)]
        count: usize,
    },
}

#[derive(Debug, Args)]
struct DaemonArgs {
    /// The folder of pipeline files to schedule and watch.
    #[arg(long, default_value = "pipelines")]
    dir: PathBuf,
    /// Seconds SIGTERM waits for running uploads before it interrupts them.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,
    /// Serve Prometheus `/metrics` and `/health` on this address, e.g. 127.0.0.1:9464.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    state: StateArgs,
}

/// Where the state lives and how long history is kept.
#[derive(Debug, Args)]
struct StateArgs {
    /// Folder of the state store (run history, checkpoints, rejects files). Default:
    /// $STATE_DIRECTORY, else `.tapline/` in the pipeline's folder.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Runs older than this many days are pruned from the history with their rejects files.
    #[arg(long, default_value_t = 90)]
    history_days: u32,
}

#[derive(Debug, Args)]
struct HistoryArgs {
    /// Only this pipeline's runs.
    pipeline: Option<String>,
    /// Show one run in detail: its counts, first errors and rejects file.
    #[arg(long, conflicts_with = "pipeline")]
    run: Option<String>,
    /// The pipelines folder, whose `.tapline/` holds the state when --state-dir is not given.
    #[arg(long, default_value = "pipelines")]
    dir: PathBuf,
    /// Folder of the state store.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Runs to list at most.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// A rejects file (`.tapline/rejects/<pipeline>-<run id>.jsonl`), fixed by hand or not.
    rejects_file: PathBuf,
    /// The pipeline to send through; default: the one whose run wrote the file.
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Pipeline files or folders of them.
    #[arg(required = true)]
    pipelines: Vec<PathBuf>,
    /// Build and check every request, send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Send to a built-in CleverTap sandbox on loopback instead of CleverTap.
    #[arg(long, conflicts_with = "dry_run")]
    sandbox: bool,
    /// Print one JSON object per pipeline instead of text.
    #[arg(long)]
    json: bool,
    /// Start from the first row, ignoring the checkpoint of an unfinished run.
    #[arg(long)]
    fresh: bool,
    /// Send the file even if it was already delivered in full.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, Args)]
struct SandboxArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Account ID the sandbox accepts.
    #[arg(long, default_value = sandbox::DEFAULT_ACCOUNT_ID)]
    account_id: String,
    /// Passcode the sandbox accepts.
    #[arg(long, default_value = sandbox::DEFAULT_PASSCODE)]
    passcode: String,
    /// Response time in milliseconds: each answer comes this long after its request
    /// arrived, the sandbox's own work included.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share of uploads (0.0–1.0) that get an injected fault.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Faults to inject, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "too-many,server-error,unavailable,drop"
    )]
    faults: Vec<Fault>,
    /// Milliseconds a `slow` fault waits before answering.
    #[arg(long, default_value_t = 5000)]
    slow_ms: u64,
    /// Uploads in flight above this get 429.
    #[arg(long, default_value_t = sandbox::DEFAULT_MAX_CONCURRENT)]
    max_concurrent: usize,
    /// Accepted records kept for inspection (counts are always kept).
    #[arg(long, default_value_t = 1_000_000)]
    keep_records: usize,
    /// An event name discarded in the dashboard (528); repeat for more.
    #[arg(long)]
    discard_event: Vec<String>,
    /// Seed for the fault draws, to see the same faults on every run.
    #[arg(long)]
    seed: Option<u64>,
    /// An admin email that custom lists may name; repeat for more.
    #[arg(long, default_value = sandbox::DEFAULT_ADMIN_EMAIL)]
    admin_email: Vec<String>,
}

/// Runs the command line and returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Success.into()
            };
        }
    };
    let default_level = if matches!(cli.command, Command::Daemon(_)) {
        "info"
    } else {
        "warn"
    };
    init_logging(cli.log_format, default_level);
    let exit = match cli.command {
        Command::Validate { paths } => validate(&paths),
        Command::Schema { connections } => schema(connections),
        Command::Run(args) => run(&args),
        Command::Sandbox(args) => serve_sandbox(args),
        Command::History(args) => history::show(&args),
        Command::Replay(args) => replay(&args),
        Command::Daemon(args) => daemon(&args),
        Command::Next { dir, count } => next(&dir, count),
    };
    exit.into()
}

/// Logs go to stderr (journald keeps them), coloured only on a terminal; `TAPLINE_LOG`
/// sets the level (`info`, `debug`, ...).
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("TAPLINE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
    };
    let stderr = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match format {
        LogFormat::Text => drop(stderr.try_init()),
        LogFormat::Json => drop(stderr.json().flatten_event(true).try_init()),
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(journald) => {
                use tracing_subscriber::layer::SubscriberExt;
                use tracing_subscriber::util::SubscriberInitExt;
                let journald = journald.with_syslog_identifier("tapline".into());
                drop(
                    tracing_subscriber::registry()
                        .with(filter())
                        .with(journald)
                        .try_init(),
                );
            }
            Err(error) => {
                drop(stderr.try_init());
                tracing::warn!(%error, "no systemd journal; logging to stderr");
            }
        },
    }
}

fn daemon(args: &DaemonArgs) -> Exit {
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

fn next(dir: &Path, count: usize) -> Exit {
    let pipelines = match load_all(&[dir.to_path_buf()], Credentials::Ignore) {
        Ok(pipelines) => pipelines,
        Err((exit, _)) => return exit,
    };
    let now = chrono::Utc::now();
    let mut out = terminal::stdout();
    for pipeline in &pipelines {
        if pipeline.trigger == crate::config::model::TriggerKind::FileArrival {
            let _ = writeln!(
                out,
                "{}: runs when a file matching `{}` arrives",
                pipeline.name,
                pipeline.source.path.display()
            );
            continue;
        }
        let Some(schedule) = &pipeline.schedule else {
            let _ = writeln!(
                out,
                "{}: no schedule (runs only with `tapline run`)",
                pipeline.name
            );
            continue;
        };
        let _ = writeln!(
            out,
            "{}: `{}` in {}",
            pipeline.name, schedule.expression, schedule.timezone
        );
        let fires = crate::scheduler::upcoming(schedule, now, count);
        if fires.is_empty() {
            let _ = writeln!(out, "  never (no date matches)");
        }
        for fire in fires {
            let _ = writeln!(out, "  {}", crate::scheduler::in_zone(schedule, fire));
        }
    }
    Exit::Success
}

fn runtime() -> tokio::runtime::Runtime {
    // Measured with `cargo bench --bench upload`: the multi-threaded runtime costs less CPU
    // per record than a single thread, which wakes up for every batch the reader hands over.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn schema(connections: bool) -> Exit {
    let schema = if connections {
        config::schema::connections_schema()
    } else {
        config::schema::pipeline_schema()
    };
    let text = serde_json::to_string_pretty(schema).expect("a schema serializes");
    outln!("{text}");
    Exit::Success
}

fn print_diagnostics(diagnostics: &[Diagnostic]) {
    let mut stderr = terminal::stderr();
    for diagnostic in diagnostics {
        let _ = writeln!(stderr, "{diagnostic}");
    }
}

/// Loads pipelines and checks their sources; the pipelines, or the exit code for errors.
fn load_all(paths: &[PathBuf], credentials: Credentials) -> Result<Vec<Pipeline>, (Exit, usize)> {
    let files = match config::discover(paths) {
        Ok(files) => files,
        Err(diagnostic) => {
            print_diagnostics(&[diagnostic]);
            return Err((Exit::Usage, 1));
        }
    };
    if files.is_empty() {
        errln!(
            "error: no pipeline files (*.yaml) in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Err((Exit::Usage, 1));
    }
    let mut pipelines = Vec::new();
    let mut errors = 0;
    // Several pipelines share connections.yaml: say each of its problems once.
    let mut reported = std::collections::HashSet::new();
    for file in &files {
        let loaded = config::load_pipeline(file, credentials);
        let mut diagnostics = loaded.diagnostics;
        diagnostics.extend(preflight::check_source(file, &loaded.parts));
        diagnostics.sort_by(|a, b| {
            (&a.file, a.position.map(|p| (p.line, p.col)))
                .cmp(&(&b.file, b.position.map(|p| (p.line, p.col))))
        });
        diagnostics.retain(|diagnostic| reported.insert(diagnostic.to_string()));
        print_diagnostics(&diagnostics);
        let file_errors = diagnostics.iter().filter(|d| d.is_error()).count();
        errors += file_errors;
        if file_errors == 0 {
            pipelines.extend(loaded.pipeline);
        }
    }
    if errors > 0 {
        Err((Exit::Usage, errors))
    } else {
        Ok(pipelines)
    }
}

fn validate(paths: &[PathBuf]) -> Exit {
    match load_all(paths, Credentials::Resolve) {
        Ok(pipelines) => {
            for pipeline in &pipelines {
                outln!("ok  {} ({})", pipeline.file.display(), describe(pipeline));
            }
            Exit::Success
        }
        Err((exit, errors)) => {
            errln!("{errors} error{} found", if errors == 1 { "" } else { "s" });
            exit
        }
    }
}

fn describe(pipeline: &Pipeline) -> String {
    let schedule = pipeline
        .schedule
        .as_ref()
        .map_or("on demand".to_string(), |s| {
            format!("cron `{}` {}", s.expression, s.timezone)
        });
    format!(
        "{} → {} via `{}`, {schedule}",
        pipeline.source.path.display(),
        pipeline.target.noun(),
        pipeline.connection.name
    )
}

fn run(args: &RunArgs) -> Exit {
    let credentials = if args.sandbox || args.dry_run {
        Credentials::Ignore
    } else {
        Credentials::Resolve
    };
    let pipelines = match load_all(&args.pipelines, credentials) {
        Ok(pipelines) => pipelines,
        Err((exit, _)) => return exit,
    };
    runtime().block_on(run_pipelines(pipelines, args))
}

async fn run_pipelines(pipelines: Vec<Pipeline>, args: &RunArgs) -> Exit {
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let sandbox = if args.sandbox {
        match Sandbox::start(
            SandboxConfig::default(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        {
            Ok(sandbox) => Some(sandbox),
            Err(error) => {
                errln!("error: cannot start the sandbox: {error}");
                return Exit::Failed;
            }
        }
    } else {
        None
    };
    let mut exit = Exit::Success;
    for mut pipeline in pipelines.into_iter().flat_map(one_per_file) {
        if let Some(sandbox) = &sandbox {
            let (account_id, passcode) = sandbox.credentials();
            pipeline.connection.account_id = account_id.to_string();
            pipeline.connection.passcode = Secret::new(passcode);
            pipeline.connection.base_url = sandbox.base_url();
        }
        let request = |delivery| {
            let state_dir =
                runner::state_dir(args.state.state_dir.as_deref(), folder_of(&pipeline.file));
            let mut request =
                runner::Request::manual(delivery, state_dir, args.state.history_days);
            if args.fresh {
                request.resume = Resume::Fresh;
            }
            if args.force {
                request.delivered_before = DeliveredBefore::SendAgain;
            }
            // A throwaway sandbox has nothing to resume and nothing to protect from duplicates.
            if args.dry_run || args.sandbox {
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
            Err(exit) => exit,
        };
        exit = exit.max(outcome);
        if cancel.is_cancelled() {
            break;
        }
    }
    if let Some(sandbox) = sandbox {
        if !args.json {
            print_sandbox(&sandbox);
        }
        sandbox.stop().await;
    }
    exit
}

/// A `file_arrival` pipeline whose source is a pattern runs once per matching file, oldest
/// first (files already delivered are then up to date); any other pipeline runs as it is.
fn one_per_file(pipeline: Pipeline) -> Vec<Pipeline> {
    if !source::arrival::is_pattern(&pipeline.source.path) {
        return vec![pipeline];
    }
    match source::arrival::matching(&pipeline.source.path) {
        Ok(files) => {
            if files.is_empty() {
                outln!(
                    "{}: no file matches `{}`; nothing to send",
                    pipeline.name,
                    pipeline.source.path.display()
                );
            }
            files
                .into_iter()
                .map(|file| {
                    let mut one = pipeline.clone();
                    one.source.path = file.path;
                    one
                })
                .collect()
        }
        Err(error) => {
            errln!(
                "error: {}: cannot list `{}`: {error}",
                pipeline.name,
                pipeline.source.path.display()
            );
            Vec::new()
        }
    }
}

/// Where a pipeline's batches go: CleverTap through a client, or nowhere in a dry run.
fn delivery(pipeline: &Pipeline, dry_run: bool) -> Result<Delivery, Exit> {
    if dry_run {
        return Ok(Delivery::DryRun);
    }
    Client::new(&pipeline.connection)
        .map(Delivery::Send)
        .map_err(|error| {
            errln!("error: {}: {error}", pipeline.name);
            Exit::Usage
        })
}

/// The folder a pipeline file is in.
fn folder_of(file: &Path) -> &Path {
    file.parent().unwrap_or(Path::new("."))
}

/// Runs one pipeline and prints its summary; returns its exit code.
async fn execute(
    pipeline: &Pipeline,
    request: &runner::Request,
    json: bool,
    sandbox: Option<&Sandbox>,
    cancel: &CancellationToken,
) -> Exit {
    let mut progress = Progress::new(&pipeline.name, !json);
    let result = runner::run(pipeline, request, &mut progress, cancel.clone()).await;
    progress.finish();
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            if json {
                outln!(
                    "{}",
                    json!({"pipeline": pipeline.name, "status": "failed", "error": error.to_string()})
                );
            } else {
                errln!("error: {}: {error}", pipeline.name);
            }
            return Exit::Failed;
        }
    };
    if json {
        let mut line = summary_json(&summary);
        if let Some(sandbox) = sandbox {
            line["sandbox"] = sandbox_json(sandbox);
        }
        outln!("{line}");
    } else {
        print_summary(&summary, pipeline);
    }
    if summary.succeeded() {
        Exit::Success
    } else {
        Exit::Failed
    }
}

/// Loads the pipeline a rejects file belongs to and sends the file's records through it.
fn replay(args: &ReplayArgs) -> Exit {
    if !args.rejects_file.is_file() {
        errln!(
            "error: `{}` is not a file; give the path of a rejects file (`tapline history --run ID` shows it)",
            args.rejects_file.display()
        );
        return Exit::Usage;
    }
    let pipeline_file = match &args.pipeline {
        Some(file) => file.clone(),
        None => {
            match history::pipeline_of_rejects(&args.rejects_file, args.state.state_dir.as_deref())
            {
                Ok(file) => file,
                Err(message) => {
                    errln!("error: {message}");
                    return Exit::Usage;
                }
            }
        }
    };
    let pipelines = match load_all(std::slice::from_ref(&pipeline_file), Credentials::Resolve) {
        Ok(pipelines) => pipelines,
        Err((exit, _)) => return exit,
    };
    let Some(pipeline) = pipelines.into_iter().next() else {
        return Exit::Usage;
    };
    let delivery = match delivery(&pipeline, false) {
        Ok(delivery) => delivery,
        Err(exit) => return exit,
    };
    let request = runner::Request::replay(
        args.rejects_file.clone(),
        delivery,
        runner::state_dir(args.state.state_dir.as_deref(), folder_of(&pipeline.file)),
        args.state.history_days,
    );
    runtime().block_on(async {
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        execute(&pipeline, &request, args.json, None, &cancel).await
    })
}

/// Ctrl-C and SIGTERM stop new requests; requests in flight finish.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut terminate =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(signal) => signal,
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        errln!("stopping: requests in flight will finish; no new ones are sent");
        cancel.cancel();
    });
}

fn summary_json(summary: &RunSummary) -> Value {
    let mut line = json!({
        "pipeline": summary.pipeline,
        "run_id": summary.run_id,
        "status": summary.status(),
        "records": summary.counts,
        "requests": summary.requests,
        "retries": summary.retries,
        "duration_ms": summary.duration.as_millis() as u64,
        "rejects_file": summary.rejects_file.as_ref().map(|path| path.display().to_string()),
        "stop_reason": summary.stop.as_ref().map(ToString::to_string),
        "segment_id": summary.segment_id,
        "warnings": summary.warnings,
        "resumed_from": summary.resumed_from,
        "rows_resumed": summary.rows_resumed,
        "up_to_date": summary.up_to_date,
    });
    if let Some(dry_run) = &summary.dry_run {
        line["dry_run"] = serde_json::to_value(dry_run).unwrap_or(Value::Null);
    }
    line
}

fn print_summary(summary: &RunSummary, pipeline: &Pipeline) {
    let counts = &summary.counts;
    let seconds = summary.duration.as_secs_f64();
    let mut out = terminal::stdout();
    if let Some(dry_run) = &summary.dry_run {
        let _ = writeln!(
            out,
            "{}: dry run, nothing was sent ({seconds:.2} s)",
            summary.pipeline
        );
        let _ = writeln!(
            out,
            "  records   {} read · {} would be sent · {} skipped · {} failed",
            counts.read, dry_run.records, counts.skipped, counts.failed
        );
        let path = mapping::endpoint(pipeline.target).path;
        let _ = writeln!(
            out,
            "  requests  {} to {path} of connection `{}`",
            dry_run.requests, pipeline.connection.name
        );
        if let Some(sample) = &dry_run.sample {
            let _ = writeln!(out, "  first record  {sample}");
        }
        if !dry_run.affected.is_empty() {
            let _ = writeln!(
                out,
                "  would affect these {} (CleverTap cannot undo this):",
                dry_run.affected.len()
            );
            for identity in &dry_run.affected {
                let _ = writeln!(out, "    {identity}");
            }
        }
    } else if let Some(delivered_by) = &summary.up_to_date {
        let _ = writeln!(
            out,
            "{}: up to date, nothing sent: run {delivered_by} already delivered this file in full (`--force` sends it again)",
            summary.pipeline
        );
    } else {
        let _ = writeln!(
            out,
            "{}: {} in {seconds:.2} s",
            summary.pipeline,
            summary.status()
        );
        if let Some(resumed_from) = &summary.resumed_from {
            let _ = writeln!(
                out,
                "  resumed   run {resumed_from}: {} rows it had settled were not sent again (`--fresh` starts over)",
                summary.rows_resumed
            );
        }
        let _ = writeln!(
            out,
            "  records   {} read · {} accepted · {} skipped · {} rejected · {} failed",
            counts.read, counts.accepted, counts.skipped, counts.rejected, counts.failed
        );
        let rate = if seconds > 0.0 {
            counts.accepted as f64 / seconds
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "  requests  {} ({} retries) · {rate:.0} records/s",
            summary.requests, summary.retries
        );
    }
    if let Some(segment_id) = summary.segment_id {
        let _ = writeln!(out, "  segment   {segment_id}");
    }
    if let Some(path) = &summary.rejects_file {
        let _ = writeln!(out, "  rejects   {}", path.display());
    }
    if let Some(stop) = &summary.stop {
        let _ = writeln!(out, "  {stop}");
    }
    for warning in &summary.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
}

/// What the sandbox has received so far in this invocation, in counts.
fn sandbox_json(sandbox: &Sandbox) -> Value {
    let seen = sandbox.inspect();
    json!({
        "requests": seen.requests,
        "profiles": seen.profiles,
        "distinct_profiles": seen.distinct_profiles,
        "events": seen.events,
        "tokens": seen.tokens,
        "demerged": seen.demerged.len(),
        "subscriptions": seen.subscriptions.len(),
        "disassociated": seen.disassociated.len(),
        "deleted": seen.deleted.len(),
        "segments": seen.segments.iter().map(|(name, segment)| (name.clone(), json!({"id": segment.id, "identities": segment.identities}))).collect::<serde_json::Map<_, _>>(),
        "rejected": seen.rejected,
        "max_in_flight": seen.max_in_flight_by_api,
    })
}

fn print_sandbox(sandbox: &Sandbox) {
    let seen = sandbox.inspect();
    let mut accepted = Vec::new();
    for (count, what) in [
        (
            seen.profiles as usize,
            format!(
                "{} profiles ({} distinct)",
                seen.profiles, seen.distinct_profiles
            ),
        ),
        (seen.events as usize, format!("{} events", seen.events)),
        (
            seen.tokens as usize,
            format!("{} device tokens", seen.tokens),
        ),
        (
            seen.demerged.len(),
            format!("{} demerges", seen.demerged.len()),
        ),
        (
            seen.subscriptions.len(),
            format!("{} subscription changes", seen.subscriptions.len()),
        ),
        (
            seen.disassociated.len(),
            format!("{} phone disassociations", seen.disassociated.len()),
        ),
        (
            seen.deleted.len(),
            format!(
                "{} profile deletions ({} of profiles it held)",
                seen.deleted.len(),
                seen.deleted.iter().filter(|deleted| deleted.found).count()
            ),
        ),
    ] {
        if count > 0 {
            accepted.push(what);
        }
    }
    let accepted = if accepted.is_empty() {
        "nothing".to_string()
    } else {
        accepted.join(", ")
    };
    let most_in_flight = seen
        .max_in_flight_by_api
        .values()
        .max()
        .copied()
        .unwrap_or(0);
    let mut out = terminal::stdout();
    let _ = writeln!(
        out,
        "sandbox received {} requests and accepted {accepted}; {} records rejected; at most {most_in_flight} requests in flight",
        seen.requests, seen.rejected
    );
    for record in seen.sample.iter().take(2) {
        let _ = writeln!(out, "  sample  {record}");
    }
}

/// A progress line on a terminal; nothing otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(pipeline: &str, enabled: bool) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(pipeline.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar: Some(bar) }
    }

    fn show(&self, counts: &Counts) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{} read · {} accepted · {} skipped · {} rejected · {} failed",
                counts.read, counts.accepted, counts.skipped, counts.rejected, counts.failed
            ));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn batch_settled(
        &mut self,
        _report: &engine::BatchReport,
        counts: &Counts,
    ) -> Result<(), String> {
        self.show(counts);
        Ok(())
    }

    fn record_skipped(&mut self, _settled: &Settled, counts: &Counts) {
        self.show(counts);
    }
}

fn serve_sandbox(args: SandboxArgs) -> Exit {
    if !(0.0..=1.0).contains(&args.fault_rate) {
        errln!("error: --fault-rate must be between 0.0 and 1.0");
        return Exit::Usage;
    }
    let config = SandboxConfig {
        account_id: args.account_id,
        passcode: args.passcode,
        latency: Duration::from_millis(args.latency_ms),
        max_concurrent: args.max_concurrent,
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
        let sandbox = match Sandbox::start(config, args.listen).await {
            Ok(sandbox) => sandbox,
            Err(error) => {
                errln!("error: cannot listen on {}: {error}", args.listen);
                return Exit::Failed;
            }
        };
        let (account_id, passcode) = sandbox.credentials();
        // The default passcode is in the documentation; one given with --passcode is a
        // secret of whoever gave it, and stays out of the terminal and its logs.
        let passcode = if passcode == sandbox::DEFAULT_PASSCODE {
            format!("`{passcode}`")
        } else {
            "as given with --passcode".to_string()
        };
        outln!("{}", sandbox.base_url());
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
        Exit::Success
    })
}
