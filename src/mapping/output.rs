//! The output mapping: which source columns are sent, under which names and types, and the
//! computed columns of the String Builder. Runs on a row before it becomes a record.

use crate::outcome::Code;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Invalid, parse_date};
use crate::config::model::{ArrayOperation, ColumnMapping, ColumnType, OutputMapping};
use crate::source::Row;
use crate::template::{RunContext, Template};

/// An output mapping made ready for one run: the names it sends under are shared by every
/// row (so the mapper recognises them by pointer), its templates are rendered but for their
/// `{column:NAME}`s, and where each source column sits is worked out once per header.
pub struct OutputPlan {
    mapping: Arc<OutputMapping>,
    /// The name of each of `mapping.columns`.
    names: Vec<Arc<str>>,
    /// Each computed column: its name and its template for this run.
    strings: Vec<(Arc<str>, Template)>,
    context: RunContext,
    /// Where the columns are in rows with the header it was worked out for.
    layout: Layout,
}

/// Positions in a row, for one header.
#[derive(Default)]
struct Layout {
    /// The header (the rows' column names, compared by pointer).
    header: Vec<Arc<str>>,
    /// The positions of the columns sent as they are (`export_all_columns`).
    exported: Vec<usize>,
    /// The position of each mapped column's source, if the row has it.
    sources: Vec<Option<usize>>,
}

impl Layout {
    fn of(mapping: &OutputMapping, row: &Row) -> Layout {
        let position = |name: &str| row.fields.iter().position(|(column, _)| &**column == name);
        Layout {
            header: row
                .fields
                .iter()
                .map(|(name, _)| Arc::clone(name))
                .collect(),
            exported: if mapping.export_all_columns {
                (0..row.fields.len())
                    .filter(|&index| {
                        let column = &*row.fields[index].0;
                        !mapping.columns.iter().any(|mapped| mapped.source == column)
                    })
                    .collect()
            } else {
                Vec::new()
            },
            sources: mapping
                .columns
                .iter()
                .map(|column| position(&column.source))
                .collect(),
        }
    }

    /// Whether `row` has the header this layout was worked out for.
    fn fits(&self, row: &Row) -> bool {
        self.header.len() == row.fields.len()
            && self
                .header
                .iter()
                .zip(&row.fields)
                .all(|(known, (name, _))| Arc::ptr_eq(known, name) || known == name)
    }
}

impl OutputPlan {
    /// The plan of `mapping` for the run `context` describes.
    pub fn new(mapping: Arc<OutputMapping>, context: &RunContext) -> Self {
        OutputPlan {
            names: mapping
                .columns
                .iter()
                .map(|column| Arc::from(column.name.as_str()))
                .collect(),
            strings: mapping
                .strings
                .iter()
                .map(|string| {
                    (
                        Arc::from(string.name.as_str()),
                        string.template.for_run(context),
                    )
                })
                .collect(),
            mapping,
            context: context.clone(),
            layout: Layout::default(),
        }
    }

    /// Writes into `into` the row as the output mapping says to send it.
    pub fn apply(&mut self, row: &Row, into: &mut Row) -> Result<(), Invalid> {
        if !self.layout.fits(row) {
            self.layout = Layout::of(&self.mapping, row);
        }
        let (mapping, layout) = (&*self.mapping, &self.layout);
        into.line = row.line;
        into.record = None;
        into.fields.clear();
        for &index in &layout.exported {
            let (column, value) = &row.fields[index];
            into.fields.push((Arc::clone(column), value.clone()));
        }
        for ((column, name), source) in mapping.columns.iter().zip(&self.names).zip(&layout.sources)
        {
            let Some(index) = *source else {
                continue;
            };
            let value = &row.fields[index].1;
            let converted = convert(column, value, self.context.timezone).map_err(|reason| {
                Invalid::new(
                    Code::InvalidRecord,
                    format!(
                        "line {}, column `{}`, value {value}: {reason}",
                        row.line, column.source
                    ),
                )
            })?;
            into.fields.push((Arc::clone(name), converted));
        }
        let value_of = |name: &str| {
            row.fields
                .iter()
                .find(|(column, _)| &**column == name)
                .and_then(|(_, value)| value.as_str())
        };
        for (name, template) in &self.strings {
            let rendered = template.render(&self.context, value_of);
            into.fields
                .push((Arc::clone(name), Value::String(rendered)));
        }
        Ok(())
    }
}

/// Converts one value per its column's type and list operation.
fn convert(column: &ColumnMapping, value: &Value, zone: chrono_tz::Tz) -> Result<Value, String> {
    let text = match value {
        Value::String(text) => Some(text.trim()),
        _ => None,
    };
    if text == Some("") || value.is_null() {
        return Ok(Value::Null);
    }
    let converted = match (column.kind, text) {
        (None | Some(ColumnType::String), _) => value.clone(),
        (Some(ColumnType::Integer), Some(text)) => Value::from(
            text.parse::<i64>()
                .map_err(|_| "is not a whole number".to_string())?,
        ),
        (Some(ColumnType::Integer), None) if value.is_i64() || value.is_u64() => value.clone(),
        (Some(ColumnType::Number), Some(text)) => match text.parse::<i64>() {
            Ok(whole) => Value::from(whole),
            Err(_) => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or("is not a number")?,
        },
        (Some(ColumnType::Number), None) if value.is_number() => value.clone(),
        (Some(ColumnType::Boolean), Some(text)) => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" => Value::Bool(true),
            "false" | "0" | "no" | "n" => Value::Bool(false),
            _ => return Err("is not a boolean (true/false, 1/0, yes/no)".into()),
        },
        (Some(ColumnType::Boolean), None) if value.is_boolean() => value.clone(),
        (Some(ColumnType::Date), Some(text)) => {
            Value::from(format!("$D_{}", parse_date(text, zone)?))
        }
        (Some(ColumnType::Date), None) if value.is_i64() => Value::from(format!("$D_{value}")),
        (Some(ColumnType::Array), Some(text)) if text.starts_with('[') => {
            match serde_json::from_str::<Value>(text) {
                Ok(list @ Value::Array(_)) => list,
                _ => return Err("is not a JSON list".into()),
            }
        }
        (Some(ColumnType::Array), Some(text)) => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(Value::from)
                .collect(),
        ),
        (Some(ColumnType::Array), None) if value.is_array() => value.clone(),
        (Some(ColumnType::Json), Some(text)) => {
            serde_json::from_str(text).map_err(|error| format!("is not JSON ({error})"))?
        }
        (Some(ColumnType::Json), None) => value.clone(),
        (Some(kind), None) => return Err(format!("cannot be converted to {kind:?}").to_lowercase()),
    };
    Ok(match (column.array_operation, converted) {
        (Some(operation), Value::Array(list)) => command(operation, list),
        (_, converted) => converted,
    })
}

/// A list with its own operation: the list itself, `{"$add": …}` or `{"$remove": …}`.
fn command(operation: ArrayOperation, list: Vec<Value>) -> Value {
    match operation {
        ArrayOperation::Replace => {
            Value::Object(Map::from_iter([("$set".to_string(), Value::Array(list))]))
        }
        ArrayOperation::Append => {
            Value::Object(Map::from_iter([("$add".to_string(), Value::Array(list))]))
        }
        ArrayOperation::Remove => Value::Object(Map::from_iter([(
            "$remove".to_string(),
            Value::Array(list),
        )])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn column(kind: Option<ColumnType>, array_operation: Option<ArrayOperation>) -> ColumnMapping {
        ColumnMapping {
            source: "c".into(),
            name: "c".into(),
            kind,
            array_operation,
        }
    }

    #[test]
    fn converts_every_type() {
        use ColumnType::*;
        for (kind, input, expected) in [
            (String, json!("  as is "), Ok(json!("  as is "))),
            (Integer, json!("42"), Ok(json!(42))),
            (Integer, json!(" -7 "), Ok(json!(-7))),
            (Integer, json!("4.5"), Err(())),
            (Integer, json!(42), Ok(json!(42))),
            (Number, json!("310"), Ok(json!(310))),
            (Number, json!("1520.75"), Ok(json!(1520.75))),
            (Number, json!("lots"), Err(())),
            (Boolean, json!("Yes"), Ok(json!(true))),
            (Boolean, json!("0"), Ok(json!(false))),
            (Boolean, json!("maybe"), Err(())),
            (Boolean, json!(true), Ok(json!(true))),
            (Date, json!("2024-03-15"), Ok(json!("$D_1710460800"))),
            (
                Date,
                json!("2024-03-15T00:00:00Z"),
                Ok(json!("$D_1710460800")),
            ),
            (
                Date,
                json!("2024-03-15 00:00:00"),
                Ok(json!("$D_1710460800")),
            ),
            (Date, json!("1710460800"), Ok(json!("$D_1710460800"))),
            (Date, json!(1710460800), Ok(json!("$D_1710460800"))),
            (Date, json!("someday"), Err(())),
            (Array, json!("a, b,,c"), Ok(json!(["a", "b", "c"]))),
            (Array, json!("[\"a\",\"b\"]"), Ok(json!(["a", "b"]))),
            (Array, json!("[broken"), Err(())),
            (Json, json!("{\"a\":1}"), Ok(json!({"a": 1}))),
            (Json, json!("{oops"), Err(())),
            (Integer, json!(""), Ok(Value::Null)),
        ] {
            let result =
                convert(&column(Some(kind), None), &input, chrono_tz::Tz::UTC).map_err(|_| ());
            assert_eq!(result, expected, "{kind:?} {input}");
        }
    }

    #[test]
    fn a_column_may_have_its_own_list_operation() {
        let append = column(Some(ColumnType::Array), Some(ArrayOperation::Append));
        assert_eq!(
            convert(&append, &json!("a,b"), chrono_tz::Tz::UTC),
            Ok(json!({"$add": ["a", "b"]}))
        );
        let remove = column(None, Some(ArrayOperation::Remove));
        assert_eq!(
            convert(&remove, &json!(["x"]), chrono_tz::Tz::UTC),
            Ok(json!({"$remove": ["x"]}))
        );
        let replace = column(Some(ColumnType::Array), Some(ArrayOperation::Replace));
        assert_eq!(
            convert(&replace, &json!("x"), chrono_tz::Tz::UTC),
            Ok(json!({"$set": ["x"]}))
        );
        // A value that is not a list keeps its value.
        assert_eq!(
            convert(&remove, &json!("x"), chrono_tz::Tz::UTC),
            Ok(json!("x"))
        );
    }
}
