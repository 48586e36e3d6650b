//! `tapline history`: past runs as a table, one run in detail, or JSON; and finding the
//! pipeline a rejects file came from, for `tapline replay`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{Error, Outcome};
use super::terminal::{self, errln, outln};
use super::{Exit, HistoryArgs, StoreArgs, printed};
use crate::state::{Location, RunEntry, RunFilter};

/// Prints the history the arguments ask for.
pub(super) fn show(args: &HistoryArgs) -> Outcome {
    let location = args.store.places(&args.dir).map_err(Error::usage)?.store;
    if !location.may_exist() {
        let exit = if args.run.is_some() {
            Exit::Usage
        } else {
            Exit::Success
        };
        if args.json {
            return Ok(printed(outln!("[]"), exit));
        }
        // On stderr: a script reading stdout sees no runs, a person sees where to look.
        errln!(
            "no runs recorded: there is no state store {}\n  hint: runs are recorded in `.tapline/` beside the pipeline files (`--dir`), in `--state-dir`, or in the database `--state` names",
            location.shown()
        );
        return Ok(exit);
    }
    let store = crate::state::open_history(&location).map_err(Error::usage)?;
    let mut out = terminal::stdout();
    if let Some(run_id) = &args.run {
        let run = store.run(run_id).map_err(Error::failed)?.ok_or_else(|| {
            Error::usage(format!(
                "no run `{run_id}` in {}; `tapline history` lists the runs",
                location.shown()
            ))
        })?;
        let written = if args.json {
            writeln!(out, "{}", serde_json::to_string(&run).unwrap_or_default())
        } else {
            print_run(&mut out, &run)
        };
        return Ok(printed(written, Exit::Success));
    }
    let runs = store
        .runs(&RunFilter::newest(args.pipeline.as_deref(), args.limit))
        .map_err(Error::failed)?;
    let written = if args.json {
        writeln!(out, "{}", serde_json::to_string(&runs).unwrap_or_default())
    } else {
        print_table(&mut out, &runs)
    };
    Ok(printed(written, Exit::Success))
}

fn print_table(out: &mut impl Write, runs: &[RunEntry]) -> std::io::Result<()> {
    if runs.is_empty() {
        return writeln!(out, "no runs recorded yet");
    }
    writeln!(
        out,
        "{:<22} {:<20} {:<8} {:<19} {:>9} {:<11} {:>9} {:>9} {:>8} {:>8} {:>7} {:>9}  SENT TO",
        "RUN",
        "PIPELINE",
        "TRIGGER",
        "STARTED (UTC)",
        "DURATION",
        "STATUS",
        "READ",
        "ACCEPTED",
        "SKIPPED",
        "REJECTED",
        "FAILED",
        "UNCHANGED",
    )?;
    for run in runs {
        let records = &run.end.records;
        writeln!(
            out,
            "{:<22} {:<20} {:<8} {:<19} {:>9} {:<11} {:>9} {:>9} {:>8} {:>8} {:>7} {:>9}  {}",
            run.run_id,
            run.pipeline,
            run.trigger,
            time(run.started_at_ms),
            duration(run),
            run.end.status.as_str(),
            records.read,
            records.accepted,
            records.skipped,
            records.rejected,
            records.failed,
            records.unchanged,
            run.destination.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

fn print_run(out: &mut impl Write, entry: &RunEntry) -> std::io::Result<()> {
    let run = &entry.end;
    let records = &run.records;
    writeln!(out, "run       {}", entry.run_id)?;
    writeln!(
        out,
        "pipeline  {} ({})",
        entry.pipeline,
        entry.pipeline_file.display()
    )?;
    match entry.scheduled_for_ms {
        Some(fire) => writeln!(
            out,
            "trigger   {}, the fire of {} UTC",
            entry.trigger,
            time(fire)
        )?,
        None => writeln!(out, "trigger   {}", entry.trigger)?,
    }
    if let Some(runner) = &entry.runner {
        writeln!(out, "ran in    {runner} (host:pid)")?;
    }
    if let Some(destination) = &entry.destination {
        writeln!(out, "sent to   {destination}")?;
    }
    writeln!(out, "status    {}", run.status.as_str())?;
    writeln!(
        out,
        "started   {} UTC, took {}",
        time(entry.started_at_ms),
        duration(entry)
    )?;
    writeln!(
        out,
        "records   {} read · {} accepted · {} unchanged · {} skipped · {} rejected · {} failed",
        records.read,
        records.accepted,
        records.unchanged,
        records.skipped,
        records.rejected,
        records.failed
    )?;
    writeln!(out, "requests  {} ({} retries)", run.requests, run.retries)?;
    if let Some(concurrency) = &run.concurrency {
        writeln!(out, "in flight {concurrency}")?;
    }
    if let Some(resumed_from) = &run.resumed_from {
        writeln!(
            out,
            "resumed   run {resumed_from} ({} rows already settled)",
            run.rows_resumed
        )?;
    }
    if let Some(reason) = &run.stop_reason {
        writeln!(out, "stopped   {reason}")?;
    }
    if !run.first_errors.is_empty() {
        writeln!(out, "first errors")?;
        for error in &run.first_errors {
            writeln!(
                out,
                "  line {}: [{}] {}",
                error.line, error.code, error.reason
            )?;
        }
    }
    if let Some(path) = &run.rejects_file {
        writeln!(out, "rejects   {}", path.display())?;
        writeln!(
            out,
            "          (fix them, then: tapline replay {})",
            path.display()
        )?;
    }
    for warning in &run.warnings {
        writeln!(out, "warning   {warning}")?;
    }
    Ok(())
}

fn time(ms: i64) -> String {
    crate::state::utc_time(ms)
}

fn duration(run: &RunEntry) -> String {
    run.took().unwrap_or_else(|| "-".into())
}

/// The pipeline file of the run that wrote a rejects file: the file is
/// `<state dir>/rejects/<pipeline>-<run id>.jsonl`, and the history knows the run.
pub(super) fn pipeline_of_rejects(rejects: &Path, store: &StoreArgs) -> Result<PathBuf, String> {
    let unknown = || {
        format!(
            "cannot tell which pipeline wrote `{}`; name it with --pipeline PIPELINE.yaml",
            rejects.display()
        )
    };
    let stem = rejects
        .file_stem()
        .and_then(|stem| stem.to_str())
        .ok_or_else(unknown)?;
    // `<pipeline>-<YYYYmmddTHHMMSSZ>-<xxxx>`; the pipeline's name may hold dashes.
    let mut parts = stem.rsplitn(3, '-');
    let (Some(suffix), Some(time), Some(_pipeline)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(unknown());
    };
    let run_id = format!("{time}-{suffix}");
    let Some(store) = store_of_rejects(rejects, store)? else {
        return Err(unknown());
    };
    match store.run(&run_id).map_err(|error| error.to_string())? {
        Some(run) => Ok(run.pipeline_file),
        None => Err(unknown()),
    }
}

/// The file of the pipeline named `name` (`tapline replay --pipeline NAME`): the file its
/// newest run in the state store came from.
pub(super) fn pipeline_named(
    name: &str,
    rejects: &Path,
    store: &StoreArgs,
) -> Result<PathBuf, String> {
    let unknown = || {
        format!(
            "no runs of a pipeline `{name}` are recorded; give its file instead: --pipeline pipelines/{name}.yaml"
        )
    };
    if let Some(store) = store_of_rejects(rejects, store)?
        && let Some(run) = store
            .runs(&RunFilter::newest(Some(name), 1))
            .map_err(|error| error.to_string())?
            .into_iter()
            .next()
    {
        return Ok(run.pipeline_file);
    }
    // A rejects file kept elsewhere: the pipeline by its file name, where pipelines usually are.
    [
        PathBuf::from("pipelines").join(format!("{name}.yaml")),
        PathBuf::from(format!("{name}.yaml")),
    ]
    .into_iter()
    .find(|file| file.is_file())
    .ok_or_else(unknown)
}

/// The state store a rejects file belongs to: the shared store `--state` names, else
/// `--state-dir`, else the folder its `rejects/` folder is in; `None` when there is none.
fn store_of_rejects(
    rejects: &Path,
    store: &StoreArgs,
) -> Result<Option<Box<dyn crate::state::History + Send>>, String> {
    let location = match (store.shared_url()?, &store.state_dir) {
        (Some(_), _) => store.places(Path::new("."))?.store,
        (None, Some(dir)) => Location::Folder(dir.clone()),
        (None, None) => match rejects.parent().and_then(Path::parent) {
            Some(dir) => Location::Folder(dir.to_path_buf()),
            None => return Ok(None),
        },
    };
    if !location.may_exist() {
        return Ok(None);
    }
    crate::state::open_history(&location)
        .map(Some)
        .map_err(|error| error.to_string())
}
