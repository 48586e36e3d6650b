//! The pipeline reference in Markdown, written from the JSON Schemas (`tapline schema
//! --markdown`): every field of a pipeline file and of `connections.yaml`, its type, its
//! values and its documentation. `docs/pipeline-reference.md` is this text, and a test keeps
//! it current, so the reference says what loads, as the schema does.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write;

use serde_json::Value;

use super::schema::{connections_schema, pipeline_schema};

/// The reference: the pipeline file's fields, then `connections.yaml`'s, each object type in
/// a section of its own.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Pipeline reference\n\n\
         Every field of a pipeline file (`pipelines/<name>.yaml`) and of `connections.yaml`, written\n\
         from the JSON Schema by `tapline schema --markdown` (do not edit by hand: a test compares\n\
         them). The [guide](guide.md) explains how the fields work together; `tapline validate`\n\
         checks a file against all of this and more.\n",
    );
    let mut book = Book::default();
    let pipeline = pipeline_schema();
    book.queue("Pipeline file", pipeline, pipeline);
    book.write_all(&mut out);
    let connections = connections_schema();
    let mut book = Book::default();
    book.queue("connections.yaml", connections, connections);
    book.write_all(&mut out);
    out
}

/// The sections still to write, and the definitions that have one already.
#[derive(Default)]
struct Book<'a> {
    pending: VecDeque<Section<'a>>,
    written: BTreeSet<String>,
}

/// An object type: the heading it is written under, and its schema.
struct Section<'a> {
    title: String,
    schema: &'a Value,
    /// The schema its `$ref`s are resolved in.
    root: &'a Value,
}

impl<'a> Book<'a> {
    fn queue(&mut self, title: &str, schema: &'a Value, root: &'a Value) -> String {
        self.pending.push_back(Section {
            title: title.to_string(),
            schema,
            root,
        });
        anchor(title)
    }

    fn write_all(&mut self, out: &mut String) {
        while let Some(section) = self.pending.pop_front() {
            self.write(out, &section);
        }
    }

    fn write(&mut self, out: &mut String, section: &Section<'a>) {
        let schema = section.schema;
        if section.title.contains(' ') {
            let _ = write!(out, "\n## {}\n\n", section.title);
        } else {
            let _ = write!(out, "\n## `{}`\n\n", section.title);
        }
        if let Some(description) = text(schema, "description") {
            let _ = write!(out, "{}\n\n", paragraphs(description));
        }
        if let Some(entry) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            let kind = self.kind(entry, section.root, "connection");
            let _ = writeln!(out, "Each entry: a name of your choice → {kind}.");
            return;
        }
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        let required: BTreeSet<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str("| field | type | |\n| --- | --- | --- |\n");
        let mut values = String::new();
        for (name, field) in properties {
            let path = format!("{}.{name}", section.title).replace("Pipeline file.", "");
            let kind = self.kind(field, section.root, &path);
            let mut about = text(field, "description")
                .map(paragraphs)
                .unwrap_or_default();
            if required.contains(name.as_str()) {
                about.insert_str(0, "**Required.** ");
            }
            let _ = writeln!(out, "| `{name}` | {kind} | {} |", cell(&about));
            let choices = choices(resolve(field, section.root), section.root);
            if !choices.is_empty() {
                let _ = writeln!(values, "\n`{name}`:\n");
                for (value, about) in choices {
                    let _ = writeln!(
                        values,
                        "- `{value}`: {}",
                        paragraphs(about).replace('\n', " ")
                    );
                }
            }
        }
        out.push_str(&values);
    }

    /// How a field's type reads in the table; an object type gets a section of its own
    /// (once), linked from here.
    fn kind(&mut self, field: &'a Value, root: &'a Value, path: &str) -> String {
        let field = resolve(field, root);
        if let Some(alternatives) = field.get("anyOf").and_then(Value::as_array) {
            let kinds: Vec<String> = alternatives
                .iter()
                .filter(|alternative| !is_null(alternative))
                .map(|alternative| self.kind(alternative, root, path))
                .collect();
            return kinds.join(", or ");
        }
        if !choices(field, root).is_empty() {
            let values: Vec<String> = choices(field, root)
                .into_iter()
                .map(|(value, _)| format!("`{value}`"))
                .collect();
            return match &values[..] {
                [only] => only.clone(),
                _ => format!("one of {}", values.join(", ")),
            };
        }
        let types: Vec<&str> = match field.get("type") {
            Some(Value::String(kind)) => vec![kind.as_str()],
            Some(Value::Array(kinds)) => kinds
                .iter()
                .filter_map(Value::as_str)
                .filter(|kind| *kind != "null")
                .collect(),
            _ => Vec::new(),
        };
        match types.first().copied() {
            Some("array") => {
                let item = field.get("items").map_or_else(
                    || "values".to_string(),
                    |items| self.kind(items, root, &format!("{path}[]")),
                );
                format!("a list of: {item}")
            }
            Some("object") if field.get("properties").is_some() => {
                let key = field.to_string();
                if self.written.insert(key) {
                    let anchor = self.queue(path, field, root);
                    format!("an object ([below](#{anchor}))")
                } else {
                    "an object (as above)".to_string()
                }
            }
            Some("object") => "a map".to_string(),
            Some("integer") => match (field.get("minimum"), field.get("maximum")) {
                (Some(low), Some(high)) => format!("an integer, {low} to {high}"),
                (Some(low), None) => format!("an integer, at least {low}"),
                _ => "an integer".to_string(),
            },
            Some("number") => "a number".to_string(),
            Some("boolean") => "`true` or `false`".to_string(),
            Some("string") => "text".to_string(),
            _ => "any value".to_string(),
        }
    }
}

/// The schema a field stands for: through `$ref`, a single `allOf`, and an `anyOf` whose
/// only other alternative is `null` (an optional field).
fn resolve<'a>(field: &'a Value, root: &'a Value) -> &'a Value {
    if let Some(alternatives) = field.get("anyOf").and_then(Value::as_array) {
        let mut given = alternatives
            .iter()
            .filter(|alternative| !is_null(alternative));
        if let (Some(only), None) = (given.next(), given.next()) {
            return resolve(only, root);
        }
    }
    if let Some(reference) = field.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or_default();
        if let Some(target) = root.get("definitions").and_then(|defs| defs.get(name)) {
            return resolve(target, root);
        }
    }
    if let Some([only]) = field
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        return resolve(only, root);
    }
    field
}

/// The values of an enumeration (`oneOf` of constants), with their documentation.
fn choices<'a>(field: &'a Value, root: &'a Value) -> Vec<(String, &'a str)> {
    let field = resolve(field, root);
    let Some(alternatives) = field.get("oneOf").and_then(Value::as_array) else {
        return Vec::new();
    };
    alternatives
        .iter()
        .filter_map(|alternative| {
            let value = alternative.get("const")?;
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            Some((shown, text(alternative, "description").unwrap_or_default()))
        })
        .collect()
}

fn is_null(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

fn text<'a>(schema: &'a Value, key: &str) -> Option<&'a str> {
    schema.get(key).and_then(Value::as_str)
}

/// Doc-comment text as Markdown: the lines of a paragraph joined.
fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split('\n').collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Text fit for a table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace("\n\n", "<br><br>")
}

/// The anchor GitHub gives a heading (`## \`output.columns[]\`` → `outputcolumns`).
pub fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_the_schema_is_in_the_reference() {
        let reference = markdown();
        for field in [
            "`connection`",
            "`thread_count` | an integer, 1 to 10, or `auto`",
            "## `source`",
            "`incremental`",
            "## `schedule`",
            "`cron`",
            "## `output.columns[]`",
            "## `connections.yaml`",
            "`passcode_file`",
        ] {
            assert!(reference.contains(field), "{field} missing:\n{reference}");
        }
        // Enumerations list their values with their documentation.
        assert!(
            reference.contains("- `user_events`: User events."),
            "{reference}"
        );
    }

    #[test]
    fn anchors_are_github_s() {
        assert_eq!(anchor("`output.columns[]`"), "outputcolumns");
        assert_eq!(anchor("Pipeline file"), "pipeline-file");
        assert_eq!(
            anchor("`tapline run PIPELINE... [--dry-run]`"),
            "tapline-run-pipeline---dry-run"
        );
    }
}
