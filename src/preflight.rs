//! Offline checks of a loaded pipeline against its source file: the file exists, can be
//! read, and has the columns its target needs. `validate` and `run` both make them.

use std::path::Path;

use crate::config::Diagnostic;
use crate::config::model::{Source, Target};
use crate::config::yaml::Position;
use crate::mapping::required_columns;
use crate::source::{self, OpenError};

/// Every problem with a pipeline's source, as diagnostics at `source.path` (`at`) in the
/// pipeline file `file`. Without a target, only the file itself is checked.
pub fn check_source(
    file: &Path,
    source: &Source,
    target: Option<Target>,
    at: Option<Position>,
) -> Vec<Diagnostic> {
    let path = &source.path;
    let folder = file
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !path.is_file() {
        return vec![
            Diagnostic::error(
                file,
                at,
                format!("source file `{}` does not exist", path.display()),
            )
            .with_hint(format!(
                "paths are relative to the pipeline's folder `{}`",
                folder.display()
            )),
        ];
    }
    let columns = match source::columns(source) {
        Ok(columns) => columns,
        Err(OpenError::Empty(_)) => {
            let mut diagnostic = Diagnostic::error(
                file,
                at,
                format!(
                    "source file `{}` is empty: it has no header row",
                    path.display()
                ),
            );
            if let Some(target) = target {
                diagnostic = diagnostic.with_hint(format!(
                    "a {} source starts with a header naming its columns, e.g. `{}`",
                    target.noun(),
                    example_header(&required_columns(target))
                ));
            }
            return vec![diagnostic];
        }
        Err(error) => return vec![Diagnostic::error(file, at, error.to_string())],
    };
    if columns.is_empty() {
        return vec![Diagnostic::warning(
            file,
            at,
            format!("source file `{}` has no records", path.display()),
        )];
    }
    let Some(target) = target else {
        return Vec::new();
    };
    let required = required_columns(target);
    let mut diagnostics = Vec::new();
    let has = |name: &str| {
        columns
            .iter()
            .any(|column| column == name || (name == "objectId" && column == "objectid"))
    };
    for name in required.all_of {
        if !has(name) {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    at,
                    format!(
                        "source `{}` has no `{name}` column, which {} need",
                        path.display(),
                        target.noun()
                    ),
                )
                .with_hint(format!("the columns are {}", quoted(&columns))),
            );
        }
    }
    if !required.one_of.is_empty() && !required.one_of.iter().any(|name| has(name)) {
        diagnostics.push(
            Diagnostic::error(
                file,
                at,
                format!(
                    "source `{}` has no identity column: {} need one of {}",
                    path.display(),
                    target.noun(),
                    quoted(required.one_of)
                ),
            )
            .with_hint(format!(
                "the columns are {}; rename the user id column to `identity`",
                quoted(&columns)
            )),
        );
    }
    diagnostics
}

fn example_header(required: &crate::mapping::RequiredColumns) -> String {
    let mut names: Vec<&str> = required.all_of.to_vec();
    names.extend(required.one_of.first());
    names.join(",")
}

fn quoted<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(|name| format!("`{}`", name.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}
