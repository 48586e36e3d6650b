//! The `tapline` command line: dispatching a parsed command (`args.rs`) to its module, and
//! the exit codes; each command in a module of its own, printing through [`terminal`],
//! failing with one [`error::Error`] that is printed once.
//!
//! Exit codes come from one place, [`Exit`]: 0 every record delivered (or skipped where
//! allowed), 1 the run failed or stopped, 2 a usage or configuration error.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Credentials, Diagnostic, Pipeline};
use crate::preflight::{self, Queries};

mod args;
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
mod ui;
mod validate;

use args::{
    Cli, Command, ConsoleArgs, DaemonArgs, HistoryArgs, ReplayArgs, RunArgs, SandboxArgs,
    StateCommand, StoreArgs, UiArgs,
};
use error::{Error, Outcome};
use logging::init_logging;
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
    let default_level = if matches!(cli.command, Command::Daemon(_) | Command::Ui(_)) {
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
        Command::Ui(args) => ui::ui(&args),
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
