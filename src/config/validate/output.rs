//! The output mapping: names, types and every template.

use crate::config::diagnostic::Diagnostic;
use crate::config::file::OutputFile;
use crate::config::model::{ColumnMapping, OutputMapping, StringColumn};
use crate::config::yaml;
use crate::config::yaml::Node;
use crate::template::Template;
use std::path::Path;

/// Checks the output mapping: names, and every template.
/// Output columns become event properties when `events`, profile properties otherwise
/// (where `#` is refused).
pub(super) fn build_output(
    file: &Path,
    root: &Node,
    (output, events): (&OutputFile, bool),
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(OutputMapping, Vec<yaml::Position>)> {
    let mut names = OutputNames {
        events,
        seen: Vec::new(),
    };
    let mut check_name = |name: &str, pointer: String, diagnostics: &mut Vec<Diagnostic>| {
        names.check(name, (file, root.locate(&pointer)), diagnostics);
    };
    let mut columns = Vec::new();
    let mut positions = Vec::new();
    for (index, column) in output.columns.iter().flatten().enumerate() {
        let name = column.name.clone().unwrap_or_else(|| column.source.clone());
        let pointer = if column.name.is_some() {
            format!("/output/columns/{index}/name")
        } else {
            format!("/output/columns/{index}/source")
        };
        check_name(&name, pointer, diagnostics);
        positions.push(root.locate(&format!("/output/columns/{index}/source")));
        columns.push(ColumnMapping {
            source: column.source.clone(),
            name,
            kind: column.kind,
            array_operation: column.array_operation,
        });
    }
    let mut strings = Vec::new();
    for (index, string) in output.strings.iter().flatten().enumerate() {
        check_name(
            &string.name,
            format!("/output/strings/{index}/name"),
            diagnostics,
        );
        match Template::parse(&string.value) {
            Ok(template) => {
                positions.push(root.locate(&format!("/output/strings/{index}/value")));
                strings.push(StringColumn {
                    name: string.name.clone(),
                    template,
                });
            }
            Err(error) => {
                diagnostics.push(Diagnostic::error(
                    file,
                    Some(root.locate(&format!("/output/strings/{index}/value"))),
                    format!(
                        "template `{}`, at character {}: {}",
                        string.value,
                        error.offset + 1,
                        error.message
                    ),
                ));
            }
        }
    }
    // Returned even with errors, so the source's columns are still checked against it; the
    // errors keep the pipeline from loading.
    let mapping = OutputMapping {
        export_all_columns: output.export_all_columns.unwrap_or(true),
        columns,
        strings,
    };
    Some((mapping, positions))
}

/// The names an output sends, checked as they are met: each by CleverTap's rules for a
/// property (or an event's), and none twice.
struct OutputNames {
    events: bool,
    /// Each name with where it first is (`line N`).
    seen: Vec<(String, String)>,
}

impl OutputNames {
    fn check(
        &mut self,
        name: &str,
        (file, at): (&Path, yaml::Position),
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let checked = if self.events {
            crate::clevertap::rules::check_event_key(name)
        } else {
            crate::clevertap::rules::check_key(name)
        };
        if let Err(violation) = checked {
            diagnostics.push(Diagnostic::error(file, Some(at), violation.message));
        }
        if let Some((_, first)) = self.seen.iter().find(|(existing, _)| existing == name) {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    Some(at),
                    format!("the output has two columns named `{name}`"),
                )
                .with_hint(format!("the first is at {first}")),
            );
        }
        self.seen
            .push((name.to_string(), format!("line {}", at.line)));
    }
}
