//! The `tapline` command line: argument parsing, logging, and exit codes; each command in a
//! module of its own, printing through [`terminal`] and reporting write errors with [`printed`].
//!
//! Exit codes come from one place, [`Exit`]: 0 every record delivered (or skipped where
//! allowed), 1 the run failed or stopped, 2 a usage or configuration error.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Credentials, Diagnostic, Pipeline, Secret};
use crate::preflight::{self, Queries};
use crate::runner;
use crate::sandbox::Fault;

mod daemon;
mod error;
mod history;
mod init;
mod logging;
mod manual;
mod next;
mod replay;
mod rules;
mod run;
mod sandbox;
mod state;
mod summary;
pub(crate) mod terminal;
mod validate;

use error::{Error, Outcome};
use logging::{ColorChoice, LogFormat, init_logging};
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
#[command(
    name = "tapline",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TAPLINE_COMMIT"), ")"),
    about,
    long_about = None
)]
struct Cli {
    /// Log lines as text, json (for log shippers) or journald (native journal entries)
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        hide_possible_values = true,
        hide_default_value = true
    )]
    log_format: LogFormat,
    /// When log lines are coloured: auto (on a terminal, unless NO_COLOR is set), always, never
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        hide_possible_values = true,
        hide_default_value = true
    )]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check pipeline files offline and report every problem as file:line:col.
    Validate {
        /// Pipeline files or folders of them.
        #[arg(default_value = "pipelines")]
        paths: Vec<PathBuf>,
        /// Treat warnings as errors: unset `${VAR}`s and missing secret files too (for a check
        /// on the production host).
        #[arg(long)]
        strict: bool,
    },
    /// Run pipelines once and print what happened to every record.
    Run(RunArgs),
    /// Print the JSON Schema of pipeline files (or of connections.yaml), or the pipeline
    /// reference written from it.
    Schema {
        /// Print the schema of connections.yaml instead.
        #[arg(long, conflicts_with = "markdown")]
        connections: bool,
        /// Print the reference of every field of pipeline files and connections.yaml, in
        /// Markdown (docs/pipeline-reference.md).
        #[arg(long)]
        markdown: bool,
    },
    /// Print CleverTap's record rules that tapline checks, each with CleverTap's error code
    /// and the page that documents it.
    Rules,
    /// Serve the local CleverTap sandbox until Ctrl-C.
    Sandbox(SandboxArgs),
    /// Show past runs, or one run in detail.
    History(HistoryArgs),
    /// Send the records of a rejects file again, through the pipeline that wrote it.
    Replay(ReplayArgs),
    /// Run a folder of pipelines on their schedules until SIGTERM; reload on changes.
    Daemon(DaemonArgs),
    /// Write a first pipeline to start from: a commented pipeline file, a connections.yaml
    /// reading the environment, JSON Schemas for editors and a tiny sample data file.
    Init {
        /// The folder to write into (made when missing).
        #[arg(default_value = "pipelines")]
        dir: PathBuf,
        /// What the pipeline writes to.
        #[arg(long, value_enum, default_value = "user-profiles")]
        entity: init::Starter,
        /// The pipeline's name (its file name); default: profiles, events or audience.
        #[arg(long)]
        name: Option<String>,
    },
    /// Print a shell completion script: `tapline completions bash > /etc/bash_completion.d/tapline`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `tapline man > tapline.1; man ./tapline.1`.
    Man,
    /// Inspect or change what the state store keeps.
    #[command(subcommand)]
    State(StateCommand),
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

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// Drop a pipeline's record fingerprints (`send: changes`): its next run sends every
    /// record again, as the first did.
    Forget {
        /// The pipeline's name, as `tapline history` shows it.
        pipeline: String,
        /// The pipelines folder, whose `.tapline/` holds the state when --state-dir is not
        /// given.
        #[arg(long, default_value = "pipelines")]
        dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
struct DaemonArgs {
    /// The folder of pipeline files to schedule and watch.
    #[arg(long, default_value = "pipelines")]
    dir: PathBuf,
    /// A pipeline file given by mistake: the daemon runs a folder (`--dir`).
    #[arg(hide = true)]
    file: Option<PathBuf>,
    /// Send every pipeline to a built-in CleverTap sandbox on loopback instead of its
    /// connection (no secrets needed): try schedules locally.
    #[arg(long)]
    sandbox: bool,
    /// Seconds SIGTERM waits for running uploads before it interrupts them.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,
    /// Serve Prometheus `/metrics` and `/health` on this address, e.g. 127.0.0.1:9464 or
    /// localhost:9464.
    #[arg(long, value_parser = listen_address)]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    state: StateArgs,
}

/// Where the state lives and how long history is kept.
#[derive(Debug, Args)]
struct StateArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Runs older than this many days are pruned from the history with their rejects files.
    #[arg(long, default_value_t = 90)]
    history_days: u32,
}

/// Where the state store is: the embedded one in a folder, or a shared PostgreSQL database.
#[derive(Debug, Args)]
struct StoreArgs {
    /// Folder of the embedded state store (run history, checkpoints, rejects files). Default:
    /// $STATE_DIRECTORY, else `.tapline/` in the pipeline's folder. With --state it keeps
    /// only the snapshots of query sources.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The shared state store, for runs on several machines: a PostgreSQL URL,
    /// `postgres://tapline@db:5432/tapline`.
    #[arg(
        long,
        env = "TAPLINE_STATE",
        hide_env_values = true,
        value_name = "URL"
    )]
    state: Option<String>,
    /// A file holding the shared state store's URL, such as a mounted secret.
    #[arg(
        long,
        env = "TAPLINE_STATE_FILE",
        conflicts_with = "state",
        value_name = "FILE"
    )]
    state_file: Option<PathBuf>,
    /// Folder of rejects files. Default: `rejects/` in the state folder; with --state,
    /// `tapline-rejects/` in the working directory.
    #[arg(long)]
    rejects_dir: Option<PathBuf>,
    /// With --state: a process that stops renewing its leases (killed, its machine gone)
    /// loses them after this many seconds, and other processes take its pipelines and
    /// request slots over.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_seconds: u64,
}

impl StoreArgs {
    /// Where the state of pipelines in `pipeline_folder` is kept.
    fn places(&self, pipeline_folder: &Path) -> Result<runner::StatePlaces, String> {
        let folder = runner::state_dir(self.state_dir.as_deref(), pipeline_folder);
        let Some(url) = self.shared_url()? else {
            let mut places = runner::StatePlaces::folder(folder);
            if let Some(rejects) = &self.rejects_dir {
                places.rejects_dir.clone_from(rejects);
            }
            return Ok(places);
        };
        Ok(runner::StatePlaces {
            store: crate::state::Location::Postgres(crate::state::SharedSettings {
                url: Secret::new(&url),
                lease: Duration::from_secs(self.lease_seconds),
            }),
            work_dir: folder,
            rejects_dir: self
                .rejects_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("tapline-rejects")),
        })
    }

    /// The shared store's URL, from --state or the file --state-file names.
    fn shared_url(&self) -> Result<Option<String>, String> {
        let url = match (&self.state, &self.state_file) {
            (Some(url), _) => url.trim().to_string(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|error| format!("cannot read --state-file `{}`: {error}", file.display()))?
                .trim()
                .to_string(),
            (None, None) => return Ok(None),
        };
        if url.is_empty() {
            return Ok(None);
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "--state must be a PostgreSQL URL (postgres://user@host:5432/database), not `{}`; the embedded store's folder is --state-dir",
                crate::config::model::redacted_database_url(&url)
            ));
        }
        Ok(Some(url))
    }
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
    #[command(flatten)]
    store: StoreArgs,
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
    /// The pipeline to send through, by name (as `tapline history` shows it) or file;
    /// default: the one whose run wrote the file.
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Send to a built-in CleverTap sandbox on loopback instead of CleverTap (nothing is
    /// recorded: the sandbox is thrown away).
    #[arg(long)]
    sandbox: bool,
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
    /// With `send: changes`: send every record this once, whatever CleverTap has, and record
    /// each accepted one anew (after data was changed in CleverTap's dashboard).
    #[arg(long)]
    full: bool,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, Args)]
struct SandboxArgs {
    /// Address to listen on, as IP:PORT or HOST:PORT (localhost:9000); port 0 picks a free
    /// port.
    #[arg(long, default_value = "127.0.0.1:9000", value_parser = listen_address)]
    listen: SocketAddr,
    /// Account ID the sandbox accepts.
    #[arg(long, default_value = crate::sandbox::DEFAULT_ACCOUNT_ID)]
    account_id: String,
    /// Passcode the sandbox accepts.
    #[arg(long, default_value = crate::sandbox::DEFAULT_PASSCODE)]
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
    #[arg(long, default_value_t = crate::sandbox::DEFAULT_MAX_CONCURRENT)]
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
    #[arg(long, default_value = crate::sandbox::DEFAULT_ADMIN_EMAIL)]
    admin_email: Vec<String>,
}

/// An address to listen on: `IP:PORT`, or `HOST:PORT` with a host name this machine resolves
/// (`localhost:9000` listens on its first address).
fn listen_address(given: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(address) = given.parse() {
        return Ok(address);
    }
    let mut addresses = given.to_socket_addrs().map_err(|error| {
        format!("`{given}` is not HOST:PORT ({error}); for example 127.0.0.1:9000")
    })?;
    addresses
        .next()
        .ok_or_else(|| format!("`{given}` resolves to no address; for example 127.0.0.1:9000"))
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
    let ansi = cli.color.colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    init_logging(cli.log_format, default_level, ansi);
    error::exit_of(command(cli.command)).into()
}

/// Runs a command: its exit code, or the failure that ended it (printed once, by `main`).
fn command(command: Command) -> Outcome {
    match command {
        Command::Validate { paths, strict } => Ok(validate::validate(
            &paths,
            if strict {
                Warnings::Fail
            } else {
                Warnings::Allowed
            },
        )),
        Command::Schema {
            connections,
            markdown,
        } => Ok(schema(connections, markdown)),
        Command::Rules => Ok(printed(
            rules::print_rules(&mut terminal::stdout()),
            Exit::Success,
        )),
        Command::Run(args) => run::run(&args),
        Command::Sandbox(args) => sandbox::serve_sandbox(args),
        Command::History(args) => history::show(&args),
        Command::Replay(args) => replay::replay(&args),
        Command::Daemon(args) => daemon::daemon(&args),
        Command::Next { dir, count } => next::next(&dir, count),
        Command::State(StateCommand::Forget {
            pipeline,
            dir,
            store,
        }) => state::forget(&pipeline, &dir, &store),
        Command::Init { dir, entity, name } => init::init(&dir, entity, name.as_deref()),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tapline", &mut out);
            Ok(printed(std::io::stdout().write_all(&out), Exit::Success))
        }
        Command::Man => {
            let mut out = Vec::new();
            let written = manual::render(&mut out).and_then(|()| std::io::stdout().write_all(&out));
            Ok(printed(written, Exit::Success))
        }
    }
}

/// The exit code once output is written: a reader that went away (`tapline history | head`)
/// is no error, and the command's own exit code stands; any other failure to write is, and
/// says so on stderr.
pub(super) fn printed(written: std::io::Result<()>, exit: Exit) -> Exit {
    match written {
        Ok(()) => exit,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => exit,
        Err(error) => exit.max(error::report(&Error::failed(format!(
            "cannot write the output: {error}"
        )))),
    }
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    // Measured with `cargo bench --bench upload`: the multi-threaded runtime costs less CPU
    // per record than a single thread, which wakes up for every batch the reader hands over.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn schema(connections: bool, markdown: bool) -> Exit {
    if markdown {
        return printed(
            write!(terminal::stdout(), "{}", config::reference::markdown()),
            Exit::Success,
        );
    }
    let schema = if connections {
        config::schema::connections_schema()
    } else {
        config::schema::pipeline_schema()
    };
    let text = serde_json::to_string_pretty(schema).expect("a schema serializes");
    printed(outln!("{text}"), Exit::Success)
}

pub(super) fn print_diagnostics(diagnostics: &[Diagnostic]) {
    let mut stderr = terminal::stderr();
    for diagnostic in diagnostics {
        let _ = writeln!(stderr, "{diagnostic}");
    }
}

/// Whether warnings fail a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Warnings {
    /// They are printed; only errors fail.
    Allowed,
    /// They are errors (`tapline validate --strict`).
    Fail,
}

/// Loads pipelines and checks their sources, warnings allowed.
pub(super) fn load_all(
    paths: &[PathBuf],
    credentials: Credentials,
) -> Result<Vec<Pipeline>, (Exit, usize)> {
    load_checked(
        paths,
        credentials,
        Warnings::Allowed,
        Queries::LeaveToTheRun,
    )
}

/// Loads pipelines and checks their sources; the pipelines, or the exit code and the number
/// of errors.
pub(super) fn load_checked(
    paths: &[PathBuf],
    credentials: Credentials,
    warnings: Warnings,
    queries: Queries,
) -> Result<Vec<Pipeline>, (Exit, usize)> {
    let (files, problems) = config::discover(paths);
    print_diagnostics(&problems);
    if files.is_empty() && !problems.is_empty() {
        return Err((Exit::Usage, problems.len()));
    }
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
    let mut errors = problems.len();
    // Several pipelines share connections.yaml: say each of its problems once.
    let mut reported = std::collections::HashSet::new();
    for file in &files {
        let loaded = config::load_pipeline(file, credentials);
        let mut diagnostics = loaded.diagnostics;
        diagnostics.extend(preflight::check_source(file, &loaded.parts, queries));
        diagnostics.sort_by(|a, b| {
            (&a.file, a.position.map(|p| (p.line, p.col)))
                .cmp(&(&b.file, b.position.map(|p| (p.line, p.col))))
        });
        diagnostics.retain(|diagnostic| reported.insert(diagnostic.to_string()));
        if warnings == Warnings::Fail {
            for diagnostic in &mut diagnostics {
                diagnostic.severity = config::diagnostic::Severity::Error;
            }
        }
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

/// Checks that `--dir` names a folder, saying once, with a hint, when it does not.
fn pipelines_folder(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    let what = if dir.exists() {
        "is not a folder"
    } else {
        "no such folder"
    };
    Err(Error::usage(format!(
        "`{}`: {what}\n  hint: give the folder of pipeline files with `--dir DIR` (default: `pipelines` in the working directory)",
        dir.display()
    )))
}

/// A path as a user in the working directory would type it: relative when it lies below
/// the working directory, as given otherwise. `run` and `replay` print rejects files so, and
/// replay the pipeline file the history keeps absolute.
pub(super) fn from_working_dir(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}

/// The folder a pipeline file is in.
pub(super) fn folder_of(file: &Path) -> &Path {
    file.parent().unwrap_or(Path::new("."))
}

/// Ctrl-C and SIGTERM stop new requests; requests in flight finish.
pub(super) fn spawn_signal_handler(cancel: CancellationToken) {
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
