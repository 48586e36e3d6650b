//! When a pipeline runs: its cron schedule or `trigger: file_arrival`.

use super::Sections;
use super::source::time_zone;
use crate::config::diagnostic::Diagnostic;
use crate::config::file::{CatchUp, Overlap, ScheduleFile, SourceFile, TriggerKind};
use crate::config::model::Schedule;
use crate::config::yaml::Node;
use std::path::Path;

/// A `file_arrival` pipeline has no cron schedule; only it may have wildcards in its source.
pub(super) fn check_trigger(
    file: &Path,
    root: &Node,
    trigger: TriggerKind,
    sections: &Sections,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let source = sections.get::<SourceFile>("source");
    let path = source
        .as_ref()
        .and_then(|source| source.path.clone())
        .unwrap_or_default();
    if trigger == TriggerKind::FileArrival
        && source
            .as_ref()
            .is_some_and(|source| source.database.is_some())
    {
        diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate("/trigger")),
                "`trigger: file_arrival` watches files, and this pipeline reads a query",
            )
            .with_hint("give the query a `schedule` instead"),
        );
        return;
    }
    let wildcards = crate::config::model::is_pattern(Path::new(&path));
    match trigger {
        TriggerKind::FileArrival => {
            if sections.json.get("schedule").is_some() {
                diagnostics.push(
                    Diagnostic::error(
                        file,
                        Some(root.locate_key("", "schedule")),
                        "a `trigger: file_arrival` pipeline runs when files arrive, not on a schedule",
                    )
                    .with_hint("remove `schedule`, or remove `trigger: file_arrival`"),
                );
            }
            let folder = Path::new(&path)
                .parent()
                .map(|folder| folder.to_string_lossy().into_owned());
            if folder.is_some_and(|folder| folder.contains(['*', '?'])) {
                diagnostics.push(
                    Diagnostic::error(
                        file,
                        Some(root.locate("/source/path")),
                        format!("`{path}`: only the file name may hold `*` or `?`, not the folder"),
                    )
                    .with_hint("write the folder out, e.g. `exports/vip_*.csv`"),
                );
            }
        }
        TriggerKind::Schedule
            if source
                .as_ref()
                .is_some_and(|source| source.poll_seconds.is_some()) =>
        {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    Some(root.locate_key("/source", "poll_seconds")),
                    "`poll_seconds` says how often files are looked for, and this pipeline runs on a schedule",
                )
                .with_hint("remove it, or add `trigger: file_arrival`"),
            );
        }
        TriggerKind::Schedule if wildcards => diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate("/source/path")),
                format!("`{path}` has wildcards, but the pipeline reads one file"),
            )
            .with_hint("add `trigger: file_arrival` to send each new matching file once"),
        ),
        TriggerKind::Schedule => {}
    }
}

pub(super) fn build_schedule(
    file: &Path,
    root: &Node,
    spec: &ScheduleFile,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Schedule> {
    let cron = match croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(spec.cron.trim())
    {
        Ok(cron) => Some(cron),
        Err(error) => {
            let fields = spec.cron.split_whitespace().count();
            let message = if spec.cron.trim().starts_with('@') || (5..=6).contains(&fields) {
                format!("invalid cron expression `{}`: {error}", spec.cron)
            } else {
                format!(
                    "invalid cron expression `{}`: it has {fields} fields, and a cron expression has five, or six with seconds first",
                    spec.cron
                )
            };
            diagnostics.push(
                Diagnostic::error(file, Some(root.locate("/schedule/cron")), message)
                    .with_hint("write `minute hour day-of-month month day-of-week`, e.g. `0 3 * * *` (03:00 every day), or `@daily`"),
            );
            None
        }
    };
    let zone_name = spec.timezone.as_deref().unwrap_or("UTC");
    let timezone = time_zone(file, root, "/schedule/timezone", zone_name, diagnostics);
    let schedule = Schedule {
        expression: spec.cron.clone(),
        cron: cron?,
        timezone: timezone?,
        overlap: spec.overlap.unwrap_or(Overlap::Skip),
        catch_up: spec.catch_up.unwrap_or(CatchUp::Skip),
    };
    if crate::scheduler::next_fire(&schedule, chrono::Utc::now()).is_none() {
        diagnostics.push(
            Diagnostic::warning(
                file,
                Some(root.locate("/schedule/cron")),
                format!("cron expression `{}` never fires", spec.cron),
            )
            .with_hint("a date that does not exist (such as 31 February) never comes; check the day and month fields"),
        );
    }
    Some(schedule)
}
