//! Offline checks of a loaded pipeline against its source file: the file exists, can be
//! read, and has the columns its target needs. `validate` and `run` both make them.

use std::path::Path;

use crate::config::{Diagnostic, Pipeline};
use crate::mapping::required_columns;
use crate::source::{self, OpenError};

/// Every problem with the pipeline's source, as diagnostics at `source.path`.
pub fn check_source(pipeline: &Pipeline) -> Vec<Diagnostic> {
    let file = pipeline.file.as_path();
    let at = pipeline.locations.source_path;
    let path = &pipeline.source.path;
    let folder = pipeline.file.parent().unwrap_or(Path::new("."));
    if !path.is_file() {
        return vec![Diagnostic::error(file, at, format!("source file `{}` does not exist", path.display()))
            .with_hint(format!("paths are relative to the pipeline's folder `{}`", folder.display()))];
    }
    let columns = match source::columns(&pipeline.source) {
        Ok(columns) => columns,
        Err(OpenError::Empty(_)) => {
            let required = required_columns(pipeline.target);
            return vec![Diagnostic::error(file, at, format!("source file `{}` is empty: it has no header row", path.display()))
                .with_hint(format!("a {} source starts with a header naming its columns, e.g. `{}`", pipeline.target.noun(), example_header(&required)))];
        }
        Err(error) => return vec![Diagnostic::error(file, at, error.to_string())],
    };
    if columns.is_empty() {
        return vec![Diagnostic::warning(file, at, format!("source file `{}` has no records", path.display()))];
    }
    let required = required_columns(pipeline.target);
    let mut diagnostics = Vec::new();
    let has = |name: &str| columns.iter().any(|column| column == name || (name == "objectId" && column == "objectid"));
    for name in required.all_of {
        if !has(name) {
            diagnostics.push(
                Diagnostic::error(file, at, format!("source `{}` has no `{name}` column, which {} need", path.display(), pipeline.target.noun()))
                    .with_hint(format!("the columns are {}", quoted(&columns))),
            );
        }
    }
    if !required.one_of.iter().any(|name| has(name)) {
        diagnostics.push(
            Diagnostic::error(file, at, format!("source `{}` has no identity column: {} need one of {}", path.display(), pipeline.target.noun(), quoted(required.one_of)))
                .with_hint(format!("the columns are {}; rename the user id column to `identity`", quoted(&columns))),
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
    names.iter().map(|name| format!("`{}`", name.as_ref())).collect::<Vec<_>>().join(", ")
}
