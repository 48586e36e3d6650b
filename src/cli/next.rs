//! `tapline next`: the next fire times of each pipeline of a folder.

use std::io::Write;
use std::path::Path;

use super::error::Outcome;
use super::{Exit, load_all, pipelines_folder, printed, terminal};
use crate::config::{Credentials, Pipeline};

pub(super) fn next(dir: &Path, count: usize) -> Outcome {
    pipelines_folder(dir)?;
    let pipelines = match load_all(&[dir.to_path_buf()], Credentials::Ignore) {
        Ok(pipelines) => pipelines,
        // Their diagnostics are printed.
        Err((exit, _)) => return Ok(exit),
    };
    Ok(printed(
        print_fires(&mut terminal::stdout(), &pipelines, count),
        Exit::Success,
    ))
}

/// Each pipeline's next `count` fire times, or what starts it instead.
fn print_fires(out: &mut dyn Write, pipelines: &[Pipeline], count: usize) -> std::io::Result<()> {
    let now = chrono::Utc::now();
    for pipeline in pipelines {
        if pipeline.trigger == crate::config::model::TriggerKind::FileArrival {
            writeln!(
                out,
                "{}: runs when a file matching {} arrives",
                pipeline.name,
                pipeline.source.describe()
            )?;
            continue;
        }
        let Some(schedule) = &pipeline.schedule else {
            writeln!(
                out,
                "{}: no schedule (runs only with `tapline run`)",
                pipeline.name
            )?;
            continue;
        };
        writeln!(
            out,
            "{}: `{}` in {}",
            pipeline.name, schedule.expression, schedule.timezone
        )?;
        let fires = crate::scheduler::upcoming(schedule, now, count);
        if fires.is_empty() {
            writeln!(out, "  never (no date matches)")?;
        }
        for fire in fires {
            writeln!(out, "  {}", crate::scheduler::in_zone(schedule, fire))?;
        }
    }
    Ok(())
}
