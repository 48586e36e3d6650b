//! `tapline validate`: every pipeline checked offline, each problem located and hinted.

use std::path::PathBuf;

use super::terminal::{errln, outln};
use super::{Exit, load_all, printed};
use crate::config::{Credentials, Pipeline};

pub(super) fn validate(paths: &[PathBuf]) -> Exit {
    match load_all(paths, Credentials::Resolve) {
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
        pipeline.source.path.display(),
        pipeline.target.noun(),
        pipeline.connection.name
    )
}
