//! The JSON Schema of pipeline and connections files, and checking a parsed file against it.
//!
//! The schema is generated from the types in [`super::file`], so it cannot drift from what
//! loads. Checking against it first reports every shape problem at once (unknown keys, wrong
//! types, values out of range), each at the line and column [`super::yaml`] recorded.

use std::path::Path;
use std::sync::OnceLock;

use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::diagnostic::{Diagnostic, did_you_mean};
use super::file::{ConnectionsFile, PipelineFile};
use super::yaml::Node;

/// The draft-07 JSON Schema of a type, as editors' YAML extensions understand it.
fn schema_of<T: JsonSchema>() -> Value {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>();
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

/// A shape problem: the JSON pointer of the value it concerns, and the diagnostic.
#[derive(Debug, Clone)]
pub struct ShapeError {
    /// The value concerned, e.g. `/target/entity` (for an unknown key, the key's own path).
    pub pointer: String,
    /// What to tell the user.
    pub diagnostic: Diagnostic,
}

/// Checks a parsed file against its schema; one error per problem.
pub fn check(file: &Path, root: &Node, kind: FileKind) -> Vec<ShapeError> {
    static PIPELINE: OnceLock<Validator> = OnceLock::new();
    static CONNECTIONS: OnceLock<Validator> = OnceLock::new();
    let (schema, validator) = match kind {
        FileKind::Pipeline => (pipeline_schema(), compiled(pipeline_schema(), &PIPELINE)),
        FileKind::Connections => (
            connections_schema(),
            compiled(connections_schema(), &CONNECTIONS),
        ),
    };
    let instance = root.to_json();
    if instance.is_null() {
        let what = match kind {
            FileKind::Pipeline => "the pipeline file is empty",
            FileKind::Connections => "connections.yaml is empty",
        };
        let diagnostic = Diagnostic::error(file, Some(root.position), what)
            .with_hint("see the examples in `pipelines/` or run `tapline schema`");
        return vec![ShapeError {
            pointer: String::new(),
            diagnostic,
        }];
    }
    let mut errors = Vec::new();
    for error in validator.iter_errors(&instance) {
        let pointer = error.instance_path().as_str().to_string();
        let named = match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => unexpected.first().cloned(),
            ValidationErrorKind::Required { property } => property.as_str().map(String::from),
            _ => None,
        };
        let pointer = match named {
            Some(name) => format!("{pointer}/{name}"),
            None => pointer,
        };
        errors.extend(
            describe(file, root, schema, "", &error)
                .into_iter()
                .map(|diagnostic| ShapeError {
                    pointer: pointer.clone(),
                    diagnostic,
                }),
        );
    }
    errors
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
            let at = |name: &str| Some(root.locate_key(&pointer, name));
            unexpected
                .iter()
                .map(|name| unknown_field(file, at(name), &field, name, &allowed))
                .collect()
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            vec![
                Diagnostic::error(
                    file,
                    position,
                    format!("missing field `{}`", join_field(&field, name)),
                )
                .with_hint(required_hint(name)),
            ]
        }
        ValidationErrorKind::Enum { options } => {
            let choices: Vec<String> = options
                .as_array()
                .map(|values| {
                    values
                        .iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            vec![not_one_of(file, position, &field, instance, &choices)]
        }
        ValidationErrorKind::Type { .. } => {
            let expected = expected_types(schema, error.schema_path().as_str());
            vec![Diagnostic::error(
                file,
                position,
                format!(
                    "`{field}` must be {expected}, found {}",
                    display_value(instance)
                ),
            )]
        }
        ValidationErrorKind::Minimum { limit }
        | ValidationErrorKind::ExclusiveMinimum { limit } => {
            vec![Diagnostic::error(
                file,
                position,
                format!("`{field}` is {instance}, below the minimum {limit}"),
            )]
        }
        ValidationErrorKind::Maximum { limit }
        | ValidationErrorKind::ExclusiveMaximum { limit } => {
            vec![Diagnostic::error(
                file,
                position,
                format!("`{field}` is {instance}, above the maximum {limit}"),
            )]
        }
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
            no_alternative_matched(file, root, schema, &pointer, error)
        }
        _ => vec![Diagnostic::error(
            file,
            position,
            format!("`{field}`: {error}"),
        )],
    }
}

/// A field the schema does not know, with the one it most likely meant or the ones it knows.
fn unknown_field(
    file: &Path,
    position: Option<super::yaml::Position>,
    field: &str,
    name: &str,
    allowed: &[String],
) -> Diagnostic {
    let diagnostic = Diagnostic::error(
        file,
        position,
        format!("unknown field `{}`", join_field(field, name)),
    );
    match did_you_mean(name, allowed.iter().map(String::as_str)) {
        Some(suggestion) => diagnostic.with_hint(format!("did you mean `{suggestion}`?")),
        None => diagnostic.with_hint(format!("expected one of {}", list(allowed))),
    }
}

/// A value that is none of a field's alternatives (`anyOf`/`oneOf`): the choices when they
/// are words, a number's precise bound or the words and ranges it may be (`thread_count`), the
/// precise errors of the one mapping alternative when the value is a mapping.
fn no_alternative_matched(
    file: &Path,
    root: &Node,
    schema: &Value,
    pointer: &str,
    error: &jsonschema::ValidationError<'_>,
) -> Vec<Diagnostic> {
    let field = field_name(pointer);
    let position = Some(root.locate(pointer));
    let instance = error.instance();
    let alternatives: &[Value] = schema
        .pointer(error.schema_path().as_str())
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let against =
        |alternative: &Value| check_against(file, root, schema, alternative, pointer, instance);
    // An enum with documented variants, or an optional one, is a list of alternatives.
    let mut choices = Vec::new();
    let mut ranges = Vec::new();
    for alternative in alternatives {
        collect_choices(schema, alternative, &mut choices);
        collect_ranges(schema, alternative, &mut ranges);
    }
    if instance.is_number()
        && let Some(number) = the_number_alternative(schema, alternatives)
    {
        // `thread_count: 11` beside `auto`: the bound it breaks.
        let inner = against(&number);
        if !inner.is_empty() {
            return inner;
        }
    }
    if !ranges.is_empty() {
        // A number or a word (`thread_count: 5` or `auto`): both kinds, in one message.
        let words = choices.iter().map(|choice| format!("`{choice}`"));
        let expected: Vec<String> = ranges.into_iter().chain(words).collect();
        let message = format!(
            "`{field}` must be {}, found {}",
            expected.join(" or "),
            display_value(instance)
        );
        return vec![Diagnostic::error(file, position, message)];
    }
    if !choices.is_empty() {
        return vec![not_one_of(file, position, &field, instance, &choices)];
    }
    if instance.is_object() {
        // A mapping where a mapping is one of the alternatives (an inline connection,
        // an optional section): check it against that alternative for precise errors.
        let objects: Vec<&Value> = alternatives
            .iter()
            .filter(|alternative| {
                ["$ref", "allOf", "properties"]
                    .iter()
                    .any(|key| alternative.get(*key).is_some())
            })
            .collect();
        if let [alternative] = objects[..] {
            let inner = against(alternative);
            if !inner.is_empty() {
                return inner;
            }
        }
    }
    if pointer == "/connection" {
        return vec![Diagnostic::error(
            file,
            position,
            format!("`connection` must be a connection name or a mapping, found {}", display_value(instance)),
        )
        .with_hint("write `connection: prod` to use `prod` from connections.yaml, or a mapping with `account_id` and `passcode`")];
    }
    let message = format!(
        "`{field}` has an unexpected value {}",
        display_value(instance)
    );
    vec![Diagnostic::error(file, position, message)]
}

/// The one numeric alternative among a field's, references followed, if there is one.
fn the_number_alternative(schema: &Value, alternatives: &[Value]) -> Option<Value> {
    let mut flat = Vec::new();
    for alternative in alternatives {
        flatten_alternatives(schema, alternative, &mut flat);
    }
    let mut numbers = flat.into_iter().filter(|alternative| {
        matches!(
            alternative.get("type").and_then(Value::as_str),
            Some("integer" | "number")
        )
    });
    match (numbers.next(), numbers.next()) {
        (Some(number), None) => Some(number),
        _ => None,
    }
}

fn not_one_of(
    file: &Path,
    position: Option<super::yaml::Position>,
    field: &str,
    instance: &Value,
    choices: &[String],
) -> Diagnostic {
    let diagnostic = Diagnostic::error(
        file,
        position,
        format!(
            "`{field}` cannot be {}; expected one of {}",
            display_value(instance),
            list(choices)
        ),
    );
    match instance
        .as_str()
        .and_then(|text| did_you_mean(text, choices.iter().map(String::as_str)))
    {
        Some(suggestion) => diagnostic.with_hint(format!("did you mean `{suggestion}`?")),
        None => diagnostic,
    }
}

/// Calls `visit` on an alternative and on every one inside it: references followed, `anyOf`,
/// `oneOf` and `allOf` opened.
fn each_nested(schema: &Value, alternative: &Value, visit: &mut dyn FnMut(&Value)) {
    visit(alternative);
    if let Some(reference) = alternative.get("$ref").and_then(Value::as_str)
        && let Some(target) = reference
            .strip_prefix('#')
            .and_then(|pointer| schema.pointer(pointer))
    {
        each_nested(schema, target, visit);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for nested in alternative
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            each_nested(schema, nested, visit);
        }
    }
}

/// The string constants an alternative allows (`const`, `enum`, through `$ref`s).
fn collect_choices(schema: &Value, alternative: &Value, choices: &mut Vec<String>) {
    each_nested(schema, alternative, &mut |nested| {
        if let Some(constant) = nested.get("const").and_then(Value::as_str) {
            choices.push(constant.to_string());
        }
        if let Some(values) = nested.get("enum").and_then(Value::as_array) {
            choices.extend(values.iter().filter_map(Value::as_str).map(String::from));
        }
    });
}

/// The errors of `instance` at `pointer` against one `alternative` of the schema.
fn check_against(
    file: &Path,
    root: &Node,
    schema: &Value,
    alternative: &Value,
    pointer: &str,
    instance: &Value,
) -> Vec<Diagnostic> {
    let mut sub_schema = alternative.clone();
    if let (Some(object), Some(definitions)) =
        (sub_schema.as_object_mut(), schema.get("definitions"))
    {
        object.insert("definitions".into(), definitions.clone());
    }
    match jsonschema::validator_for(&sub_schema) {
        Ok(validator) => validator
            .iter_errors(instance)
            .flat_map(|inner| describe(file, root, &sub_schema, pointer, &inner))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A field's alternatives with references followed and nested `anyOf`/`oneOf` opened.
fn flatten_alternatives(schema: &Value, alternative: &Value, flat: &mut Vec<Value>) {
    let resolved = match alternative.get("$ref").and_then(Value::as_str) {
        Some(reference) => match reference
            .strip_prefix('#')
            .and_then(|pointer| schema.pointer(pointer))
        {
            Some(target) => target,
            None => return,
        },
        None => alternative,
    };
    let nested: Vec<&Value> = ["anyOf", "oneOf"]
        .iter()
        .filter_map(|key| resolved.get(*key).and_then(Value::as_array))
        .flatten()
        .collect();
    if nested.is_empty() {
        flat.push(resolved.clone());
    }
    for inner in nested {
        flatten_alternatives(schema, inner, flat);
    }
}

/// The bounded integers among a field's alternatives, in words: `a number from 1 to 10`.
fn collect_ranges(schema: &Value, alternative: &Value, ranges: &mut Vec<String>) {
    each_nested(schema, alternative, &mut |nested| {
        if nested.get("type").and_then(Value::as_str) == Some("integer")
            && let (Some(min), Some(max)) = (
                nested.get("minimum").and_then(Value::as_i64),
                nested.get("maximum").and_then(Value::as_i64),
            )
        {
            ranges.push(format!("a number from {min} to {max}"));
        }
    });
}

/// The JSON types the schema at `schema_path` (ending in `/type`) allows, in words.
fn expected_types(schema: &Value, schema_path: &str) -> String {
    let types: Vec<String> = match schema.pointer(schema_path) {
        Some(Value::String(kind)) => vec![kind.clone()],
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .filter(|k| *k != "null")
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    };
    if types.is_empty() {
        return "of another type".into();
    }
    types
        .iter()
        .map(|kind| type_phrase(kind))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The property names the object schema at `schema_path` (ending in `/additionalProperties`) allows.
fn allowed_properties(schema: &Value, schema_path: &str) -> Vec<String> {
    let object_path = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or(schema_path);
    schema
        .pointer(object_path)
        .and_then(|object| object.get("properties"))
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

fn field_name(pointer: &str) -> String {
    let dotted = pointer.trim_start_matches('/').replace('/', ".");
    if dotted.is_empty() {
        "(top level)".into()
    } else {
        dotted
    }
}

fn join_field(parent: &str, name: &str) -> String {
    if parent == "(top level)" {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
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

/// The hint of a missing required field: a line to add where one is worth showing.
fn required_hint(name: &str) -> String {
    match name {
        "uploader_email" => "add `uploader_email: admin@example.com` under `custom_list`: an admin of your CleverTap account, whom CleverTap mails the upload's result".into(),
        "name" => "add `name: VIP users` under `custom_list`: the segment's name in CleverTap".into(),
        "entity" => "add `entity: user_profiles` (or user_events, custom_list) under `target`".into(),
        "cron" => "add `cron: \"0 3 * * *\"` (minute hour day-of-month month day-of-week) under `schedule`".into(),
        _ => "run `tapline schema` to see every field with its description".into(),
    }
}
