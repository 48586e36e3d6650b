//! Offline checks of a loaded pipeline against its source file: the file exists, can be
//! read, and has the columns its target needs. `validate` and `run` both make them.

use std::path::Path;

use crate::config::diagnostic::did_you_mean;
use crate::config::model::{OutputMapping, Send, Source, SourceFormat, Target};
use crate::config::{Diagnostic, Parts};
use crate::mapping::required_columns;
use crate::source::{self, OpenError, arrival};

/// Every problem with a pipeline's source, as diagnostics at `source.path` in the pipeline
/// file `file`: the file, its header, the output mapping's source columns, and the columns
/// the target needs (after the output mapping). Without a target, only the file is checked.
pub fn check_source(file: &Path, parts: &Parts) -> Vec<Diagnostic> {
    let Some(source) = &parts.source else {
        return Vec::new();
    };
    let (target, at) = (parts.target, parts.source_position);
    // A `file_arrival` pattern: its folder must exist; the newest matching file, if any,
    // stands for the files to come.
    let newest;
    let source = if arrival::is_pattern(&source.path) {
        match arrival::matching(&source.path) {
            Ok(files) => match files.last() {
                Some(file) => {
                    newest = Source {
                        path: file.path.clone(),
                        ..source.clone()
                    };
                    &newest
                }
                None => return Vec::new(),
            },
            Err(error) => {
                return vec![Diagnostic::error(
                    file,
                    at,
                    format!(
                        "cannot list the folder of `{}`: {error}",
                        source.path.display()
                    ),
                )];
            }
        }
    } else {
        source
    };
    let path = &source.path;
    let folder = file
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Some(kind) = crate::config::files::not_a_regular_file(path) {
        return vec![
            Diagnostic::error(
                file,
                at,
                format!("source `{}` is {kind}, not a file", path.display()),
            )
            .with_hint("give the path of a CSV, TSV or JSON Lines file (gzip or zstd allowed)"),
        ];
    }
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
    let mut diagnostics = Vec::new();
    let source_columns = columns.clone();
    let columns = match &parts.output {
        Some((output, positions)) => {
            // JSONL has no header, only a first record: its keys may vary, so only CSV and TSV
            // sources are held to it.
            if source.format != SourceFormat::Jsonl {
                for (column, position) in output.columns.iter().zip(positions) {
                    if !columns.contains(&column.source) {
                        let mut diagnostic = Diagnostic::error(
                            file,
                            Some(*position),
                            format!(
                                "`{}` is not a column of `{}`",
                                column.source,
                                path.display()
                            ),
                        );
                        diagnostic = match did_you_mean(
                            &column.source,
                            columns.iter().map(String::as_str),
                        ) {
                            Some(suggestion) => {
                                diagnostic.with_hint(format!("did you mean `{suggestion}`?"))
                            }
                            None => diagnostic
                                .with_hint(format!("the columns are {}", quoted(&columns))),
                        };
                        diagnostics.push(diagnostic);
                    }
                }
            }
            if source.format != SourceFormat::Jsonl {
                let template_positions = positions.get(output.columns.len()..).unwrap_or_default();
                let templates = output.strings.iter().zip(template_positions);
                for (string, position) in templates {
                    for name in string.template.columns() {
                        if columns.iter().any(|column| column == name) {
                            continue;
                        }
                        let diagnostic = Diagnostic::error(
                            file,
                            Some(*position),
                            format!(
                                "`{{column:{name}}}` in the template of `{}`: `{}` has no column `{name}`",
                                string.name,
                                path.display()
                            ),
                        );
                        diagnostics.push(
                            match did_you_mean(name, columns.iter().map(String::as_str)) {
                                Some(suggestion) => {
                                    diagnostic.with_hint(format!("did you mean `{suggestion}`?"))
                                }
                                None => diagnostic
                                    .with_hint(format!("the columns are {}", quoted(&columns))),
                            },
                        );
                    }
                }
            }
            output_columns(output, &columns)
        }
        None => columns,
    };
    let Some(target) = target else {
        return diagnostics;
    };
    diagnostics.extend(refused_names(file, parts, source, &source_columns, target));
    let required = required_columns(target);
    let has = |name: &str| {
        columns
            .iter()
            .any(|column| column == name || (name == "objectId" && column == "objectid"))
    };
    if target == Target::Events
        && let Some((Send::Changes { .. }, send_at)) = parts.send
        && !has("ts")
    {
        diagnostics.push(
            Diagnostic::warning(
                file,
                Some(send_at),
                format!(
                    "`send: changes` cannot tell an event without `ts` from a later identical one, and `{}` has no `ts` column: every event will be sent on every run",
                    path.display()
                ),
            )
            .with_hint("add a `ts` column (when each event happened), or use `send: all`"),
        );
    }
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

/// The header columns sent as they are whose names CleverTap refuses as property names, at
/// their place in the header.
fn refused_names(
    file: &Path,
    parts: &Parts,
    source: &Source,
    header: &[String],
    target: crate::config::model::Target,
) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    // The names an output mapping gives are checked where they are written (validate).
    let sent_as_is: Vec<&String> = match &parts.output {
        None => header.iter().collect(),
        Some((output, _)) => header
            .iter()
            .filter(|column| {
                output.export_all_columns
                    && !output
                        .columns
                        .iter()
                        .any(|mapped| &mapped.source == *column)
            })
            .collect(),
    };
    // The header's first line; a JSON Lines "header" is the first record's keys.
    let jsonl = source.format == SourceFormat::Jsonl;
    let mut col = 1;
    for name in header {
        if sent_as_is.contains(&name)
            && let Some(problem) = crate::mapping::column_problem(target, name)
        {
            let what = if jsonl { "key" } else { "column" };
            diagnostics.push(
                Diagnostic::error(
                    &source.path,
                    Some(crate::config::yaml::Position {
                        line: 1,
                        col: if jsonl { 1 } else { col },
                    }),
                    format!("{what} `{name}`: {}", problem.reason),
                )
                .with_hint(format!(
                    "every row with a value there would be skipped: rename the column in the file, or send it under another name with `output.columns: [{{source: \"{name}\", name: ...}}]` in `{}`",
                    file.display()
                )),
            );
        }
        // The name and its one-character delimiter (quoted names are rare in headers).
        col += name.chars().count() + 1;
    }
    diagnostics
}

/// The columns a row has after the output mapping.
fn output_columns(output: &OutputMapping, source_columns: &[String]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    if output.export_all_columns {
        let mapped = |column: &String| {
            output
                .columns
                .iter()
                .any(|mapping| &mapping.source == column)
        };
        columns.extend(
            source_columns
                .iter()
                .filter(|column| !mapped(column))
                .cloned(),
        );
    }
    columns.extend(output.columns.iter().map(|mapping| mapping.name.clone()));
    columns.extend(output.strings.iter().map(|string| string.name.clone()));
    columns
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
