//! The command line as clap reads it: every subcommand, its arguments and their help (which
//! `--help`, the man page and the shell completions are written from).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::init;
use super::logging::{ColorChoice, LogFormat};
use crate::config::Secret;
use crate::runner;
use crate::sandbox::Fault;

/// Move customer data from files into CleverTap.
#[derive(Debug, Parser)]
#[command(
    name = "tapline",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TAPLINE_COMMIT"), ")"),
    about,
    long_about = None
)]
pub(super) struct Cli {
    /// Log lines as text, json (for log shippers) or journald (native journal entries)
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        hide_possible_values = true,
        hide_default_value = true
    )]
    pub(super) log_format: LogFormat,
    /// When log lines are coloured: auto (on a terminal, unless NO_COLOR is set), always, never
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        hide_possible_values = true,
        hide_default_value = true
    )]
    pub(super) color: ColorChoice,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
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
    /// Serve the web console over a state store: every pipeline, its next fires, every run
    /// and why records were refused (for runs started by cron, CI or several daemons).
    Ui(UiArgs),
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
pub(super) enum StateCommand {
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
pub(super) struct DaemonArgs {
    /// The folder of pipeline files to schedule and watch.
    #[arg(long, default_value = "pipelines")]
    pub(super) dir: PathBuf,
    /// A pipeline file given by mistake: the daemon runs a folder (`--dir`).
    #[arg(hide = true)]
    pub(super) file: Option<PathBuf>,
    /// Send every pipeline to a built-in CleverTap sandbox on loopback instead of its
    /// connection (no secrets needed): try schedules locally.
    #[arg(long)]
    pub(super) sandbox: bool,
    /// Seconds SIGTERM waits for running uploads before it interrupts them.
    #[arg(long, default_value_t = 30)]
    pub(super) shutdown_timeout: u64,
    /// Serve the web console (`/`, `/api/`), Prometheus `/metrics` and `/health` on this
    /// address, e.g. 127.0.0.1:9464. On an address other than loopback the console needs
    /// --token-file, and the daemon refuses to start without it.
    #[arg(long, value_parser = listen_address, value_name = "ADDR")]
    pub(super) listen: Option<SocketAddr>,
    /// The old name of --listen. On an address other than loopback without --token-file, it
    /// serves `/metrics` and `/health` only, as it always did.
    #[arg(long, value_parser = listen_address, conflicts_with = "listen", value_name = "ADDR")]
    pub(super) metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub(super) console: ConsoleArgs,
    #[command(flatten)]
    pub(super) state: StateArgs,
}

/// The console's token.
#[derive(Debug, Args)]
pub(super) struct ConsoleArgs {
    /// A file holding the token every console page, API call and download then needs
    /// (`Authorization: Bearer TOKEN`, or HTTP Basic with the token as password). Default:
    /// the systemd credential `console-token` when there is one.
    #[arg(long, value_name = "FILE")]
    pub(super) token_file: Option<PathBuf>,
}

/// `tapline ui`: the console over a state store.
#[derive(Debug, Args)]
pub(super) struct UiArgs {
    /// The address to serve on. On an address other than loopback, --token-file is needed.
    #[arg(long, value_parser = listen_address, default_value = "127.0.0.1:9464", value_name = "ADDR")]
    pub(super) listen: SocketAddr,
    /// The folder of pipeline files the overview lists (its `.tapline/` holds the state when
    /// neither --state-dir nor --state is given). Where it does not exist, the overview lists
    /// the pipelines the history names.
    #[arg(long, default_value = "pipelines")]
    pub(super) dir: PathBuf,
    #[command(flatten)]
    pub(super) console: ConsoleArgs,
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

/// Where the state lives and how long history is kept.
#[derive(Debug, Args)]
pub(super) struct StateArgs {
    #[command(flatten)]
    pub(super) store: StoreArgs,
    /// Runs older than this many days are pruned from the history with their rejects files.
    #[arg(long, default_value_t = 90)]
    pub(super) history_days: u32,
}

/// Where the state store is: the embedded one in a folder, or a shared PostgreSQL database.
#[derive(Debug, Args)]
pub(super) struct StoreArgs {
    /// Folder of the embedded state store (run history, checkpoints, rejects files). Default:
    /// $STATE_DIRECTORY, else `.tapline/` in the pipeline's folder. With --state it keeps
    /// only the snapshots of query sources.
    #[arg(long)]
    pub(super) state_dir: Option<PathBuf>,
    /// The shared state store, for runs on several machines: a PostgreSQL URL,
    /// `postgres://tapline@db:5432/tapline`.
    #[arg(
        long,
        env = "TAPLINE_STATE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(super) state: Option<String>,
    /// A file holding the shared state store's URL, such as a mounted secret.
    #[arg(
        long,
        env = "TAPLINE_STATE_FILE",
        conflicts_with = "state",
        value_name = "FILE"
    )]
    pub(super) state_file: Option<PathBuf>,
    /// Folder of rejects files. Default: `rejects/` in the state folder; with --state,
    /// `tapline-rejects/` in the working directory.
    #[arg(long)]
    pub(super) rejects_dir: Option<PathBuf>,
    /// With --state: a process that stops renewing its leases (killed, its machine gone)
    /// loses them after this many seconds, and other processes take its pipelines and
    /// request slots over.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub(super) lease_seconds: u64,
}

impl StoreArgs {
    /// Where the state of pipelines in `pipeline_folder` is kept.
    pub(super) fn places(&self, pipeline_folder: &Path) -> Result<runner::StatePlaces, String> {
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
    pub(super) fn shared_url(&self) -> Result<Option<String>, String> {
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
pub(super) struct HistoryArgs {
    /// Only this pipeline's runs.
    pub(super) pipeline: Option<String>,
    /// Show one run in detail: its counts, first errors and rejects file.
    #[arg(long, conflicts_with = "pipeline")]
    pub(super) run: Option<String>,
    /// The pipelines folder, whose `.tapline/` holds the state when --state-dir is not given.
    #[arg(long, default_value = "pipelines")]
    pub(super) dir: PathBuf,
    #[command(flatten)]
    pub(super) store: StoreArgs,
    /// Runs to list at most.
    #[arg(long, default_value_t = 50)]
    pub(super) limit: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct ReplayArgs {
    /// A rejects file (`.tapline/rejects/<pipeline>-<run id>.jsonl`), fixed by hand or not.
    pub(super) rejects_file: PathBuf,
    /// The pipeline to send through, by name (as `tapline history` shows it) or file;
    /// default: the one whose run wrote the file.
    #[arg(long)]
    pub(super) pipeline: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(super) json: bool,
    /// Send to a built-in CleverTap sandbox on loopback instead of CleverTap (nothing is
    /// recorded: the sandbox is thrown away).
    #[arg(long)]
    pub(super) sandbox: bool,
    #[command(flatten)]
    pub(super) state: StateArgs,
}

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// Pipeline files or folders of them.
    #[arg(required = true)]
    pub(super) pipelines: Vec<PathBuf>,
    /// Build and check every request, send nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Send to a built-in CleverTap sandbox on loopback instead of CleverTap.
    #[arg(long, conflicts_with = "dry_run")]
    pub(super) sandbox: bool,
    /// Print one JSON object per pipeline instead of text.
    #[arg(long)]
    pub(super) json: bool,
    /// Start from the first row, ignoring the checkpoint of an unfinished run.
    #[arg(long)]
    pub(super) fresh: bool,
    /// Send the file even if it was already delivered in full.
    #[arg(long)]
    pub(super) force: bool,
    /// With `send: changes`: send every record this once, whatever CleverTap has, and record
    /// each accepted one anew (after data was changed in CleverTap's dashboard).
    #[arg(long)]
    pub(super) full: bool,
    #[command(flatten)]
    pub(super) state: StateArgs,
}

#[derive(Debug, Args)]
pub(super) struct SandboxArgs {
    /// Address to listen on, as IP:PORT or HOST:PORT (localhost:9000); port 0 picks a free
    /// port.
    #[arg(long, default_value = "127.0.0.1:9000", value_parser = listen_address)]
    pub(super) listen: SocketAddr,
    /// Account ID the sandbox accepts.
    #[arg(long, default_value = crate::sandbox::DEFAULT_ACCOUNT_ID)]
    pub(super) account_id: String,
    /// Passcode the sandbox accepts.
    #[arg(long, default_value = crate::sandbox::DEFAULT_PASSCODE)]
    pub(super) passcode: String,
    /// Response time in milliseconds: each answer comes this long after its request
    /// arrived, the sandbox's own work included.
    #[arg(long, default_value_t = 0)]
    pub(super) latency_ms: u64,
    /// Milliseconds each upload in flight adds to an upload's response time: a server that
    /// slows down under load (with --latency-ms as the time of a lone request).
    #[arg(long, default_value_t = 0)]
    pub(super) latency_per_request_ms: u64,
    /// Share of uploads (0.0–1.0) that get an injected fault.
    #[arg(long, default_value_t = 0.0)]
    pub(super) fault_rate: f64,
    /// Faults to inject, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "too-many,server-error,unavailable,drop"
    )]
    pub(super) faults: Vec<Fault>,
    /// Milliseconds a `slow` fault waits before answering.
    #[arg(long, default_value_t = 5000)]
    pub(super) slow_ms: u64,
    /// Uploads in flight above this get 429 "Too many concurrent requests", as CleverTap
    /// answers above 15 (lower, to play an account other clients share).
    #[arg(long, alias = "max-concurrent", default_value_t = crate::sandbox::DEFAULT_MAX_CONCURRENT)]
    pub(super) concurrency_limit: usize,
    /// Accepted records kept for inspection (counts are always kept).
    #[arg(long, default_value_t = 1_000_000)]
    pub(super) keep_records: usize,
    /// An event name discarded in the dashboard (528); repeat for more.
    #[arg(long)]
    pub(super) discard_event: Vec<String>,
    /// Seed for the fault draws, to see the same faults on every run.
    #[arg(long)]
    pub(super) seed: Option<u64>,
    /// An admin email that custom lists may name; repeat for more.
    #[arg(long, default_value = crate::sandbox::DEFAULT_ADMIN_EMAIL)]
    pub(super) admin_email: Vec<String>,
}

/// An address to listen on: `IP:PORT`, or `HOST:PORT` with a host name this machine resolves
/// (`localhost:9000` listens on its first address).
pub(super) fn listen_address(given: &str) -> Result<SocketAddr, String> {
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
