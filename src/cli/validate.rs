//! `tapline validate`: every pipeline checked offline, each problem located and hinted.

use std::path::PathBuf;

use super::terminal::{errln, outln};
use super::{Exit, Warnings, load_checked, printed};
use crate::config::{Credentials, Pipeline};
use crate::preflight::Queries;

pub(super) fn validate(paths: &[PathBuf], warnings: Warnings) -> Exit {
    // Without the secrets a run needs (a CI job checking pipeline files), their absence is a
    // warning; `--strict` makes it an error.
    match load_checked(paths, Credentials::Check, warnings, Queries::Describe) {
        Ok(pipelines) => {
            let written = pipelines.iter().try_for_each(|pipeline| {
                outln!("ok  {} ({})", pipeline.file.display(), describe(pipeline))
            });
            printed(written, Exit::Success)
        }
        Err((exit, errors)) => {
            errln!("{errors} error{} found", if errors == 1 { "" } else { "s" });
            exit
        }
    }
}

pub(super) fn describe(pipeline: &Pipeline) -> String {
    let schedule = pipeline
        .schedule
        .as_ref()
        .map_or("on demand".to_string(), |s| {
            format!("cron `{}` {}", s.expression, s.timezone)
        });
    format!(
        "{} → {} via `{}`, {schedule}",
        pipeline.source.describe(),
        pipeline.target.noun(),
        pipeline.connection.name
    )
}
