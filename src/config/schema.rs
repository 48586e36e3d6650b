//! The JSON Schema of pipeline and connections files, and checking a parsed file against it.
//!
//! The schema is generated from the types in [`super::file`], so it cannot drift from what
//! loads. Checking against it first reports every shape problem at once (unknown keys, wrong
//! types, values out of range), each at the line and column [`super::yaml`] recorded.

use std::path::Path;
use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::Value;

use super::diagnostic::{did_you_mean, Diagnostic};
use super::file::{ConnectionFile, ConnectionsFile, PipelineFile};
use super::yaml::Node;

/// The draft-07 JSON Schema of a type, as editors' YAML extensions understand it.
fn schema_of<T: JsonSchema>() -> Value {
    let schema = SchemaSettings::draft07().into_generator().into_root_schema_for::<T>();
    serde_json::to_value(schema).expect("a generated schema is valid JSON")
}

/// The JSON Schema of a pipeline file (`tapline schema`).
pub fn pipeline_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(schema_of::<PipelineFile>)
}

/// The JSON Schema of `connections.yaml` (`tapline schema --connections`).
pub fn connections_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(schema_of::<ConnectionsFile>)
}

fn connection_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(schema_of::<ConnectionFile>)
}

fn compiled(schema: &'static Value, cell: &'static OnceLock<Validator>) -> &'static Validator {
    cell.get_or_init(|| jsonschema::validator_for(schema).expect("the generated schema compiles"))
}

/// Which file kind a tree is checked as.
#[derive(Debug, Clone, Copy)]
pub enum FileKind {
    /// A pipeline file.
    Pipeline,
    /// `connections.yaml`.
    Connections,
}

/// Checks a parsed file against its schema; one diagnostic per problem.
pub fn check(file: &Path, root: &Node, kind: FileKind) -> Vec<Diagnostic> {
    static PIPELINE: OnceLock<Validator> = OnceLock::new();
    static CONNECTIONS: OnceLock<Validator> = OnceLock::new();
    let (schema, validator) = match kind {
        FileKind::Pipeline => (pipeline_schema(), compiled(pipeline_schema(), &PIPELINE)),
        FileKind::Connections => (connections_schema(), compiled(connections_schema(), &CONNECTIONS)),
    };
    let instance = root.to_json();
    if instance.is_null() {
        let what = match kind {
            FileKind::Pipeline => "the pipeline file is empty",
            FileKind::Connections => "connections.yaml is empty",
        };
        return vec![Diagnostic::error(file, Some(root.position), what)
            .with_hint("see the examples in `pipelines/` or run `tapline schema`")];
    }
    let mut diagnostics = Vec::new();
    for error in validator.iter_errors(&instance) {
        diagnostics.extend(describe(file, root, schema, "", &error));
    }
    diagnostics
}

/// Turns one schema error into diagnostics with a position and a hint.
fn describe(
    file: &Path,
    root: &Node,
    schema: &Value,
    prefix: &str,
    error: &jsonschema::ValidationError<'_>,
) -> Vec<Diagnostic> {
    let pointer = format!("{prefix}{}", error.instance_path().as_str());
    let field = field_name(&pointer);
    let position = Some(root.locate(&pointer));
    let instance = error.instance();
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = allowed_properties(schema, error.schema_path().as_str());
            unexpected
                .iter()
                .map(|name| {
                    let mut diagnostic = Diagnostic::error(
                        file,
                        Some(root.locate_key(&pointer, name)),
                        format!("unknown field `{}`", join_field(&field, name)),
                    );
                    diagnostic = match did_you_mean(name, allowed.iter().map(String::as_str)) {
                        Some(suggestion) => diagnostic.with_hint(format!("did you mean `{suggestion}`?")),
                        None => diagnostic.with_hint(format!("expected one of {}", list(&allowed))),
                    };
                    diagnostic
                })
                .collect()
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            vec![Diagnostic::error(file, position, format!("missing field `{}`", join_field(&field, name)))
                .with_hint("run `tapline schema` to see every field with its description")]
        }
        ValidationErrorKind::Enum { options } => {
            let choices: Vec<String> = options
                .as_array()
                .map(|values| values.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default();
            let written = display_value(instance);
            let mut diagnostic = Diagnostic::error(
                file,
                position,
                format!("`{field}` cannot be {written}; expected one of {}", list(&choices)),
            );
            if let Some(suggestion) =
                instance.as_str().and_then(|text| did_you_mean(text, choices.iter().map(String::as_str)))
            {
                diagnostic = diagnostic.with_hint(format!("did you mean `{suggestion}`?"));
            }
            vec![diagnostic]
        }
        ValidationErrorKind::Type { kind } => {
            let expected = format!("{kind:?}").to_lowercase().replace("single(", "").replace(')', "");
            vec![Diagnostic::error(
                file,
                position,
                format!("`{field}` must be {}, found {}", type_phrase(&expected), display_value(instance)),
            )]
        }
        ValidationErrorKind::Minimum { limit } | ValidationErrorKind::ExclusiveMinimum { limit } => {
            vec![Diagnostic::error(file, position, format!("`{field}` is {instance}, below the minimum {limit}"))]
        }
        ValidationErrorKind::Maximum { limit } | ValidationErrorKind::ExclusiveMaximum { limit } => {
            vec![Diagnostic::error(file, position, format!("`{field}` is {instance}, above the maximum {limit}"))]
        }
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. }
            if instance.is_object() =>
        {
            // An inline connection: check it against the connection schema for precise errors.
            static CONNECTION: OnceLock<Validator> = OnceLock::new();
            let validator = compiled(connection_schema(), &CONNECTION);
            validator
                .iter_errors(instance)
                .flat_map(|inner| describe(file, root, connection_schema(), &pointer, &inner))
                .collect()
        }
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => vec![Diagnostic::error(
            file,
            position,
            format!("`{field}` must be a connection name or a mapping, found {}", display_value(instance)),
        )
        .with_hint("write `connection: prod` to use `prod` from connections.yaml, or a mapping with `account_id` and `passcode`")],
        _ => vec![Diagnostic::error(file, position, format!("`{field}`: {error}"))],
    }
}

/// The property names the object schema at `schema_path` (ending in `/additionalProperties`) allows.
fn allowed_properties(schema: &Value, schema_path: &str) -> Vec<String> {
    let object_path = schema_path.strip_suffix("/additionalProperties").unwrap_or(schema_path);
    schema
        .pointer(object_path)
        .and_then(|object| object.get("properties"))
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

fn field_name(pointer: &str) -> String {
    let dotted = pointer.trim_start_matches('/').replace('/', ".");
    if dotted.is_empty() { "(top level)".into() } else { dotted }
}

fn join_field(parent: &str, name: &str) -> String {
    if parent == "(top level)" { name.to_string() } else { format!("{parent}.{name}") }
}

fn list(items: &[String]) -> String {
    items.iter().map(|item| format!("`{item}`")).collect::<Vec<_>>().join(", ")
}

fn type_phrase(kind: &str) -> String {
    match kind {
        "integer" => "a whole number".into(),
        "boolean" => "`true` or `false`".into(),
        "string" => "a string".into(),
        "object" => "a mapping".into(),
        "array" => "a list".into(),
        other => other.to_string(),
    }
}

fn display_value(value: &Value) -> String {
    match value {
        Value::String(text) => format!("`{text}`"),
        Value::Object(_) => "a mapping".into(),
        Value::Array(_) => "a list".into(),
        Value::Null => "empty".into(),
        other => format!("`{other}`"),
    }
}
