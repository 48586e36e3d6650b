//! What the console shows, gathered: each pipeline of the folder with its next fires and last
//! run, and the reasons a run's records were refused, read from its rejects file. The pages
//! and the JSON API both render these; nothing here knows HTML.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::live::{DaemonLink, LiveProgress};
use crate::config::model::{Source, TriggerKind};
use crate::config::{self, Credentials, Pipeline};
use crate::outcome::RunStatus;
use crate::state::{History, RunEntry, RunFilter, StateError};

/// A pipeline file as the console lists it: loaded, or why it does not load.
#[derive(Debug, Serialize)]
pub struct PipelineView {
    /// The pipeline's name (its file's stem).
    pub name: String,
    /// Its file.
    pub file: PathBuf,
    /// Its description.
    pub description: Option<String>,
    /// What it sends: `profiles`, `events`, ...; none when the file does not load.
    pub target: Option<&'static str>,
    /// What it reads: a file's path, or the query of a named database.
    pub source: Option<String>,
    /// What starts it in the daemon.
    pub starts: Starts,
    /// Its next fires, when it has a schedule.
    pub next_fires: Vec<Fire>,
    /// Its newest run in the history.
    pub last_run: Option<RunEntry>,
    /// The problems `tapline validate` prints for it, when it does not load.
    pub errors: Vec<String>,
}

/// What starts a pipeline in the daemon.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Starts {
    /// A cron schedule, read in its time zone.
    Schedule {
        /// The cron expression as written.
        cron: String,
        /// The same in words, for the common shapes ("every day at 03:00").
        words: Option<String>,
        /// The zone it is read in.
        timezone: String,
    },
    /// A file arriving where `source.path` matches.
    FileArrival {
        /// The pattern.
        pattern: String,
    },
    /// Nothing: it runs only with `tapline run`.
    Manual,
    /// Unknown: the file does not load.
    Unknown,
    /// Unknown: the pipeline is known from the history only, and its file is not on this
    /// machine.
    NotHere,
}

/// One fire of a schedule, in the pipeline's zone (with its offset) and in UTC.
#[derive(Debug, Serialize)]
pub struct Fire {
    /// `2026-12-05 03:00:00 IST (+05:30)`.
    pub local: String,
    /// The same instant in UTC, RFC 3339.
    pub utc: String,
    /// The same instant, milliseconds since the Unix epoch (as the history's times).
    pub at_ms: i64,
}

impl Fire {
    fn at(schedule: &crate::scheduler::Schedule, at: DateTime<Utc>) -> Fire {
        Fire {
            local: crate::scheduler::in_zone(schedule, at),
            utc: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            at_ms: at.timestamp_millis(),
        }
    }
}

/// Every pipeline file of `dir`, in name order, each with its newest run. Without the folder
/// (`tapline ui` on a machine that only has the state store), every pipeline the history
/// names, from the file its last run read when this machine has it.
pub fn pipelines(dir: &Path, history: &dyn History, fires: usize) -> Vec<PipelineView> {
    if !dir.is_dir() {
        return from_history(history, fires);
    }
    let (files, problems) = config::discover(&[dir.to_path_buf()]);
    let mut views: Vec<PipelineView> = problems
        .iter()
        .map(|problem| broken(dir, problem.to_string()))
        .collect();
    for file in files {
        let loaded = config::load_pipeline(&file, Credentials::Ignore);
        let mut view = match loaded.pipeline {
            Some(pipeline) => loaded_view(&pipeline, fires),
            None => {
                let errors = loaded
                    .diagnostics
                    .iter()
                    .filter(|diagnostic| diagnostic.is_error())
                    .map(ToString::to_string)
                    .collect();
                PipelineView {
                    errors,
                    ..broken(&file, String::new())
                }
            }
        };
        view.last_run = history
            .runs(&RunFilter::newest(Some(&view.name), 1))
            .ok()
            .and_then(|runs| runs.into_iter().next());
        views.push(view);
    }
    views
}

/// Every pipeline the history names, with its last run; its settings from the file that run
/// read, when it is on this machine and loads.
fn from_history(history: &dyn History, fires: usize) -> Vec<PipelineView> {
    let names = history.pipeline_names().unwrap_or_else(|error| {
        tracing::warn!(%error, "the console cannot list the history's pipelines");
        Vec::new()
    });
    names
        .into_iter()
        .map(|name| {
            let last_run = history
                .runs(&RunFilter::newest(Some(&name), 1))
                .ok()
                .and_then(|runs| runs.into_iter().next());
            let loaded = last_run
                .as_ref()
                .filter(|run| run.pipeline_file.is_file())
                .and_then(|run| {
                    config::load_pipeline(&run.pipeline_file, Credentials::Ignore).pipeline
                })
                .filter(|pipeline| pipeline.name == name);
            let mut view = match &loaded {
                Some(pipeline) => loaded_view(pipeline, fires),
                None => PipelineView {
                    name: name.clone(),
                    starts: Starts::NotHere,
                    ..broken(
                        last_run
                            .as_ref()
                            .map_or(Path::new(""), |run| run.pipeline_file.as_path()),
                        String::new(),
                    )
                },
            };
            view.last_run = last_run;
            view
        })
        .collect()
}

/// The view of a pipeline that loaded.
fn loaded_view(pipeline: &Pipeline, fires: usize) -> PipelineView {
    let (starts, next_fires) = match (&pipeline.trigger, &pipeline.schedule) {
        (TriggerKind::FileArrival, _) => (
            Starts::FileArrival {
                pattern: pipeline.source.describe(),
            },
            Vec::new(),
        ),
        (TriggerKind::Schedule, Some(schedule)) => (
            Starts::Schedule {
                cron: schedule.expression.clone(),
                words: crate::scheduler::in_words(&schedule.expression),
                timezone: schedule.timezone.to_string(),
            },
            crate::scheduler::upcoming(schedule, Utc::now(), fires)
                .into_iter()
                .map(|at| Fire::at(schedule, at))
                .collect(),
        ),
        (TriggerKind::Schedule, None) => (Starts::Manual, Vec::new()),
    };
    PipelineView {
        name: pipeline.name.clone(),
        file: pipeline.file.clone(),
        description: pipeline.description.clone(),
        target: Some(pipeline.target.noun()),
        source: Some(match &pipeline.source {
            Source::File(file) => file.path.display().to_string(),
            Source::Query(query) => format!("query on `{}`", query.database.name),
        }),
        starts,
        next_fires,
        last_run: None,
        errors: Vec::new(),
    }
}

/// The view of a file that does not load.
fn broken(file: &Path, error: String) -> PipelineView {
    PipelineView {
        name: stem(file),
        file: file.to_path_buf(),
        description: None,
        target: None,
        source: None,
        starts: Starts::Unknown,
        next_fires: Vec::new(),
        last_run: None,
        errors: Some(error)
            .filter(|error| !error.is_empty())
            .into_iter()
            .collect(),
    }
}

/// One pipeline's settings as the checked model sees them, as name and value pairs for a
/// person (secrets never: the passcode is `***`, a database is named, not its URL).
pub fn settings(pipeline: &Pipeline) -> Vec<(&'static str, String)> {
    let connection = &pipeline.connection;
    let mut settings = vec![
        ("file", pipeline.file.display().to_string()),
        ("source", pipeline.source.describe()),
        ("target", pipeline.target.noun().to_string()),
        (
            "connection",
            format!(
                "`{}`: account {} at {} (passcode ***)",
                connection.name, connection.account_id, connection.base_url
            ),
        ),
        ("thread_count", pipeline.thread_count.to_string()),
        (
            "invalid records",
            format!("{:?}", pipeline.on_invalid_record),
        ),
        ("send", format!("{:?}", pipeline.send)),
        ("rerun", format!("{:?}", pipeline.rerun)),
    ];
    if let Some(list) = &pipeline.custom_list {
        settings.push(("custom list", format!("`{}` ({:?})", list.name, list.mode)));
    }
    if let Some(output) = &pipeline.output {
        settings.push((
            "output mapping",
            format!("{} columns", output.columns.len()),
        ));
    }
    if let Some(limit) = pipeline.max_invalid_records {
        settings.push(("max_invalid_records", limit.to_string()));
    }
    if let Some(ratio) = pipeline.max_invalid_ratio {
        settings.push(("max_invalid_ratio", ratio.to_string()));
    }
    settings.push(("notifications", pipeline.notifications.len().to_string()));
    settings
}

/// The next `count` fires of a pipeline with a schedule.
pub fn next_fires(pipeline: &Pipeline, count: usize) -> Vec<Fire> {
    pipeline
        .schedule
        .as_ref()
        .map_or_else(Vec::new, |schedule| {
            crate::scheduler::upcoming(schedule, Utc::now(), count)
                .into_iter()
                .map(|at| Fire::at(schedule, at))
                .collect()
        })
}

/// Loads one pipeline by name, for its page: the file of that name in `dir`, or else the file
/// its last run read; `None` when neither loads.
pub fn pipeline(dir: &Path, name: &str, history: &dyn History) -> Option<Pipeline> {
    let (files, _) = config::discover(&[dir.to_path_buf()]);
    let in_folder = files.into_iter().find(|file| stem(file) == name);
    let file = in_folder.or_else(|| {
        let runs = history.runs(&RunFilter::newest(Some(name), 1)).ok()?;
        Some(runs.into_iter().next()?.pipeline_file)
    })?;
    config::load_pipeline(&file, Credentials::Ignore)
        .pipeline
        .filter(|pipeline| pipeline.name == name)
}

/// A pipeline's name: its file's stem.
fn stem(file: &Path) -> String {
    file.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Why a run's records were refused: one line per reason, with how many records had it and
/// the first of them.
#[derive(Debug, Serialize)]
pub struct Reason {
    /// CleverTap's code, or tapline's word for a record it did not send.
    pub code: String,
    /// The outcome: `rejected`, `skipped` or `failed`.
    pub outcome: String,
    /// The reason as CleverTap (or tapline) said it of the first record (records whose
    /// reasons differ only in numbers, such as the record number CleverTap names, count as one).
    pub reason: String,
    /// How many records.
    pub count: u64,
    /// The first record's source line.
    pub example_line: u64,
    /// The first record as it would have been sent (or the source row).
    pub example: Option<serde_json::Value>,
}

/// Reasons told apart at most; the rest count under the last.
const MAX_REASONS: usize = 50;

/// Lines of a rejects file read at most for its reasons, so a page over a huge file stays quick.
const MAX_LINES_READ: usize = 200_000;

/// The reasons of a rejects file, most frequent first; `None` when it cannot be read.
pub fn reasons(rejects: &Path) -> Option<Vec<Reason>> {
    let file = std::fs::File::open(rejects).ok()?;
    let mut by_reason: BTreeMap<(String, String, String), Reason> = BTreeMap::new();
    for line in std::io::BufReader::new(file)
        .lines()
        .take(MAX_LINES_READ)
        .map_while(Result::ok)
    {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let text = |key: &str| {
            entry
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let key = (
            text("code"),
            text("outcome"),
            without_numbers(&text("reason")),
        );
        if !by_reason.contains_key(&key) && by_reason.len() >= MAX_REASONS {
            continue;
        }
        by_reason
            .entry(key.clone())
            .or_insert_with(|| Reason {
                code: key.0,
                outcome: key.1,
                reason: text("reason"),
                count: 0,
                example_line: entry.get("line").and_then(|v| v.as_u64()).unwrap_or(0),
                example: entry.get("record").or_else(|| entry.get("row")).cloned(),
            })
            .count += 1;
    }
    let mut reasons: Vec<Reason> = by_reason.into_values().collect();
    reasons.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.example_line.cmp(&b.example_line))
    });
    Some(reasons)
}

/// A reason with each run of digits as `#`: CleverTap names the record in its message
/// ("... Skipped record number : 8"), and one reason is one reason whichever record had it.
fn without_numbers(reason: &str) -> String {
    let mut shape = String::with_capacity(reason.len());
    for character in reason.chars() {
        if !character.is_ascii_digit() {
            shape.push(character);
        } else if !shape.ends_with('#') {
            shape.push('#');
        }
    }
    shape
}

/// A run and what its rejects file says.
#[derive(Debug, Serialize)]
pub struct RunView {
    /// The run, as `tapline history --json` has it.
    #[serde(flatten)]
    pub run: RunEntry,
    /// Why its records were refused (empty without a rejects file).
    pub reasons: Vec<Reason>,
}

/// One run with its reasons.
pub fn run(history: &dyn History, run_id: &str) -> Result<Option<RunView>, StateError> {
    Ok(history.run(run_id)?.map(|run| {
        let reasons = run
            .end
            .rejects_file
            .as_deref()
            .and_then(reasons)
            .unwrap_or_default();
        RunView { run, reasons }
    }))
}

/// A run in progress: its history entry (its counts as of its last checkpoint) and, when the
/// daemon serving the console runs it, how far its engine is now.
#[derive(Debug, Serialize)]
pub struct RunningView {
    /// The run, as `tapline history --json` has it.
    #[serde(flatten)]
    pub run: RunEntry,
    /// How far it is now, with the time left; none for a run of another process.
    pub live: Option<LiveProgress>,
}

/// Runs in progress shown at most.
pub const RUNNING_SHOWN: usize = 20;

/// The runs in progress, of every process writing to the history, newest first.
pub fn running(
    history: &dyn History,
    daemon: Option<&DaemonLink>,
) -> Result<Vec<RunningView>, StateError> {
    let runs = history.runs(&RunFilter {
        status: Some(RunStatus::Running),
        limit: RUNNING_SHOWN,
        ..RunFilter::default()
    })?;
    let mut live = daemon.map(DaemonLink::progress).unwrap_or_default();
    Ok(runs
        .into_iter()
        .map(|run| RunningView {
            live: live.remove(&run.run_id),
            run,
        })
        .collect())
}
