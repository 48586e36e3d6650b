//! Checks of a loaded pipeline against its source: the file exists, can be read, and has
//! the columns its target needs; a query's result columns (asked of the database without
//! running the query, when it can be reached) have types tapline can send and the columns
//! the target needs. `validate` and `run` both make them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::diagnostic::did_you_mean;
use crate::config::model::{
    FileSource, OutputMapping, QuerySource, Send, Source, SourceFormat, Target,
};
use crate::config::{Diagnostic, Parts};
use crate::mapping::required_columns;
use crate::source::object::Location;
use crate::source::{self, OpenError, arrival};

/// How long `validate` waits for a database to describe a query.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether a query source's columns are checked against the database now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queries {
    /// Ask the database to describe the query (`tapline validate`).
    Describe,
    /// Leave it to the run, which reports a query it cannot read in its summary, history
    /// and notifications (`tapline run`, the daemon).
    LeaveToTheRun,
}

/// A source's columns, and how to speak of them.
struct Columns {
    /// The names, in order.
    names: Vec<String>,
    /// The source in messages: `` `data/users.csv` `` or `the query on `warehouse``.
    shown: String,
    /// Whether every row has these columns (not so for JSON Lines, whose first record
    /// stands for the others).
    fixed: bool,
    /// The file whose first line holds the names (CSV, TSV, JSON Lines), where a refused
    /// name is reported.
    header: Option<PathBuf>,
}

/// Every problem with a pipeline's source, as diagnostics at `source` in the pipeline file
/// `file`: the file or query, its columns, the output mapping's source columns, and the
/// columns the target needs (after the output mapping). Without a target, only the source
/// is checked.
pub fn check_source(file: &Path, parts: &Parts, queries: Queries) -> Vec<Diagnostic> {
    let columns = match (&parts.source, queries) {
        (None, _) | (Some(Source::Query(_)), Queries::LeaveToTheRun) => return Vec::new(),
        (Some(Source::File(source)), _) => file_columns(file, parts, source),
        (Some(Source::Query(query)), Queries::Describe) => query_columns(file, parts, query),
    };
    match columns {
        Ok(Some(columns)) => check_columns(file, parts, &columns),
        Ok(None) => Vec::new(),
        Err(diagnostics) => diagnostics,
    }
}

/// The columns of a file source: its header, or the first JSON Lines record's keys.
/// `Ok(None)`: nothing to check yet (no file arrived for a pattern).
fn file_columns(
    file: &Path,
    parts: &Parts,
    source: &FileSource,
) -> Result<Option<Columns>, Vec<Diagnostic>> {
    let (target, at) = (parts.target, parts.source_position);
    let newest;
    let source = if arrival::is_pattern(&source.path) {
        match newest_arrival(file, parts, source)? {
            Some(arrived) => {
                newest = arrived;
                &newest
            }
            None => return Ok(None),
        }
    } else {
        source
    };
    let path = &source.path;
    let object = Location::is_object(path);
    if !object && let Some(diagnostic) = not_a_file(file, parts, path) {
        return Err(vec![diagnostic]);
    }
    let names = match source::columns(source) {
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
            return Err(vec![diagnostic]);
        }
        // An object this machine cannot reach (no credentials here, say) is checked by the run.
        Err(OpenError::Object(error)) => {
            return Err(vec![
                Diagnostic::warning(
                    file,
                    at,
                    format!("the source's columns could not be checked: {error}"),
                )
                .with_hint(
                    "validate checks them when it can read the object; `tapline run` will need it",
                ),
            ]);
        }
        Err(error) => return Err(vec![Diagnostic::error(file, at, error.to_string())]),
    };
    if names.is_empty() {
        return Err(vec![Diagnostic::warning(
            file,
            at,
            format!("source file `{}` has no records", path.display()),
        )]);
    }
    let header = matches!(
        source.format,
        SourceFormat::Csv | SourceFormat::Tsv | SourceFormat::Jsonl
    );
    Ok(Some(Columns {
        names,
        shown: format!("`{}`", path.display()),
        fixed: source.format != SourceFormat::Jsonl,
        // Diagnostics point into a local file's header; an object's are told in the pipeline.
        header: (header && !object).then(|| path.clone()),
    }))
}

/// A `file_arrival` pattern's newest matching file, which stands for the files to come
/// (`None` when none has arrived); its folder must exist.
fn newest_arrival(
    file: &Path,
    parts: &Parts,
    source: &FileSource,
) -> Result<Option<FileSource>, Vec<Diagnostic>> {
    match arrival::matching(&source.path, &mut |_| false, arrival::Wanted::Newest) {
        Ok(files) => Ok(files.last().map(|newest| FileSource {
            path: newest.path.clone(),
            ..source.clone()
        })),
        Err(error) => Err(vec![Diagnostic::error(file, parts.source_position, error)]),
    }
}

/// Why the source's `path` cannot be read as a file: it is something else (a folder, a
/// FIFO), or nothing; paths are relative to the pipeline's folder.
fn not_a_file(file: &Path, parts: &Parts, path: &Path) -> Option<Diagnostic> {
    let at = parts.source_position;
    if let Some(kind) = crate::config::files::not_a_regular_file(path) {
        return Some(
            Diagnostic::error(
                file,
                at,
                format!("source `{}` is {kind}, not a file", path.display()),
            )
            .with_hint(
                "give the path of a CSV, TSV, JSON Lines (gzip or zstd allowed) or Parquet file",
            ),
        );
    }
    let folder = file
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    (!path.is_file()).then(|| {
        Diagnostic::error(
            file,
            at,
            format!("source file `{}` does not exist", path.display()),
        )
        .with_hint(format!(
            "paths are relative to the pipeline's folder `{}`",
            folder.display()
        ))
    })
}

/// The result columns of a query, as the database describes them without running it. A
/// database that cannot be reached is a warning: the check waits for the run.
fn query_columns(
    file: &Path,
    parts: &Parts,
    query: &QuerySource,
) -> Result<Option<Columns>, Vec<Diagnostic>> {
    let at = parts.source_position;
    let described = describe(query);
    let columns = match described {
        Ok(columns) => columns,
        Err(crate::source::query::QueryError::Query { name, reason }) => {
            return Err(vec![
                Diagnostic::error(file, at, format!("the query on database `{name}` {reason}"))
                    .with_hint("try the query in psql against the same database"),
            ]);
        }
        Err(error) => {
            return Err(vec![Diagnostic::warning(
                file,
                at,
                format!("the query's columns could not be checked: {error}"),
            )
            .with_hint("validate checks them when it can reach the database; `tapline run` will need it")]);
        }
    };
    let mut problems: Vec<Diagnostic> = columns
        .iter()
        .filter(|column| !column.supported)
        .map(|column| {
            Diagnostic::error(
                file,
                at,
                format!(
                    "the query on database `{}` {}",
                    query.database.name,
                    crate::source::query::unsupported_type(
                        query.database.dialect,
                        &column.name,
                        &column.type_name
                    )
                ),
            )
            .with_hint(crate::source::query::sendable_types(query.database.dialect))
        })
        .collect();
    if let Some(incremental) = &query.incremental
        && !columns.iter().any(|column| &column.name == incremental)
    {
        problems.push(
            Diagnostic::error(
                file,
                at,
                format!(
                    "the query on database `{}` does not return the incremental column `{incremental}`",
                    query.database.name
                ),
            )
            .with_hint("add it to the SELECT list"),
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Some(Columns {
        names: columns.into_iter().map(|column| column.name).collect(),
        shown: format!("the query on `{}`", query.database.name),
        fixed: true,
        header: None,
    }))
}

/// Asks the database for a query's result columns, on a thread and runtime of its own (the
/// caller may be inside a runtime, or not).
fn describe(
    query: &QuerySource,
) -> Result<Vec<crate::source::query::ResultColumn>, crate::source::query::QueryError> {
    let gave_up = |reason: String| crate::source::query::QueryError::Connect {
        name: query.database.name.clone(),
        url: query.database.shown(),
        reason,
    };
    let owned = query.clone();
    let result = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?;
        runtime.block_on(async {
            tokio::time::timeout(DESCRIBE_TIMEOUT, crate::source::query::describe(&owned))
                .await
                .map_err(|_| format!("no answer within {} s", DESCRIBE_TIMEOUT.as_secs()))
        })
    })
    .join();
    match result {
        Ok(Ok(described)) => described,
        Ok(Err(reason)) => Err(gave_up(reason)),
        Err(_) => Err(gave_up("the check ended early".into())),
    }
}

/// The checks every source's columns get: the output mapping's columns exist, names
/// CleverTap refuses, and the columns the target needs.
fn check_columns(file: &Path, parts: &Parts, described: &Columns) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    let columns = match &parts.output {
        Some((output, positions)) => {
            // JSONL has no header, only a first record: its keys may vary, so only sources
            // whose every row has the same columns are held to them.
            if described.fixed {
                diagnostics.extend(missing_output_columns(file, output, positions, described));
            }
            output_columns(output, &described.names)
        }
        None => described.names.clone(),
    };
    let Some(target) = parts.target else {
        return diagnostics;
    };
    diagnostics.extend(refused_names(
        file,
        parts,
        described,
        &described.names,
        target,
    ));
    diagnostics.extend(missing_target_columns(
        file,
        parts,
        target,
        &columns,
        &described.shown,
    ));
    diagnostics
}

/// The output mapping's source columns, and those its templates name, that the source does
/// not have.
fn missing_output_columns(
    file: &Path,
    output: &OutputMapping,
    positions: &[crate::config::yaml::Position],
    described: &Columns,
) -> Vec<Diagnostic> {
    let (columns, shown) = (&described.names, &described.shown);
    let not_a_column = |diagnostic: Diagnostic, name: &str| match did_you_mean(
        name,
        columns.iter().map(String::as_str),
    ) {
        Some(suggestion) => diagnostic.with_hint(format!("did you mean `{suggestion}`?")),
        None => diagnostic.with_hint(format!("the columns are {}", quoted(columns))),
    };
    let mut diagnostics = Vec::new();
    for (column, position) in output.columns.iter().zip(positions) {
        if !columns.contains(&column.source) {
            let diagnostic = Diagnostic::error(
                file,
                Some(*position),
                format!("`{}` is not a column of {shown}", column.source),
            );
            diagnostics.push(not_a_column(diagnostic, &column.source));
        }
    }
    let template_positions = positions.get(output.columns.len()..).unwrap_or_default();
    for (string, position) in output.strings.iter().zip(template_positions) {
        for name in string.template.columns() {
            if columns.iter().any(|column| column == name) {
                continue;
            }
            let diagnostic = Diagnostic::error(
                file,
                Some(*position),
                format!(
                    "`{{column:{name}}}` in the template of `{}`: {shown} has no column `{name}`",
                    string.name,
                ),
            );
            diagnostics.push(not_a_column(diagnostic, name));
        }
    }
    diagnostics
}

/// The columns `target` needs that the records (`columns`, after the output mapping) lack,
/// and a warning when `send: changes` meets events without `ts`.
fn missing_target_columns(
    file: &Path,
    parts: &Parts,
    target: Target,
    columns: &[String],
    shown: &str,
) -> Vec<Diagnostic> {
    let at = parts.source_position;
    let mut diagnostics = Vec::new();
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
                    "`send: changes` cannot tell an event without `ts` from a later identical one, and {shown} has no `ts` column: every event will be sent on every run",
                ),
            )
            .with_hint("add a `ts` column (when each event happened), or use `send: all`"),
        );
    }
    let required = required_columns(target);
    for name in required.all_of {
        if !has(name) {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    at,
                    format!(
                        "source {shown} has no `{name}` column, which {} need",
                        target.noun()
                    ),
                )
                .with_hint(format!("the columns are {}", quoted(columns))),
            );
        }
    }
    if !required.one_of.is_empty() && !required.one_of.iter().any(|name| has(name)) {
        diagnostics.push(
            Diagnostic::error(
                file,
                at,
                format!(
                    "source {shown} has no identity column: {} need one of {}",
                    target.noun(),
                    quoted(required.one_of)
                ),
            )
            .with_hint(format!(
                "the columns are {}; rename the user id column to `identity`",
                quoted(columns)
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
    described: &Columns,
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
    // The header's first line; a JSON Lines "header" is the first record's keys. A source
    // without a header line (a query, Parquet) is spoken of in the pipeline file.
    let jsonl = !described.fixed;
    let mut col = 1;
    for name in header {
        if sent_as_is.contains(&name)
            && let Some(problem) = crate::mapping::column_problem(target, name)
        {
            let what = if jsonl { "key" } else { "column" };
            let diagnostic = match &described.header {
                Some(header_file) => Diagnostic::error(
                    header_file,
                    Some(crate::config::yaml::Position {
                        line: 1,
                        col: if jsonl { 1 } else { col },
                    }),
                    format!("{what} `{name}`: {}", problem.reason),
                ),
                None => Diagnostic::error(
                    file,
                    parts.source_position,
                    format!("column `{name}` of {}: {}", described.shown, problem.reason),
                ),
            };
            diagnostics.push(diagnostic.with_hint(format!(
                "every row with a value there would be skipped: rename the column in the source, or send it under another name with `output.columns: [{{source: \"{name}\", name: ...}}]` in `{}`",
                file.display()
            )));
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
