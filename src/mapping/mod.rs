//! Source rows → CleverTap records, checked against CleverTap's rules before anything is sent.
//!
//! Pure functions of their input: no IO, no clock. A row that breaks a rule becomes an
//! [`Invalid`] naming the column, the value and CleverTap's error code for it.

mod time;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use time::{parse_date, parse_timestamp};

use crate::clevertap::rules::{self, Violation};
use crate::config::model::{ArrayOperation, Target};
use crate::source::Row;

/// Why a row cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// CleverTap's error code for the same problem (`"515"`), or a name of ours
    /// (`"invalid_record"`, `"malformed_row"`).
    pub code: String,
    /// What is wrong, naming the column and value.
    pub reason: String,
}

impl Invalid {
    fn new(code: &str, reason: impl Into<String>) -> Self {
        Invalid {
            code: code.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<Violation> for Invalid {
    fn from(violation: Violation) -> Self {
        let code = if violation.code == 0 {
            "invalid_record".to_string()
        } else {
            violation.code.to_string()
        };
        Invalid {
            code,
            reason: violation.message,
        }
    }
}

/// The columns a target needs: all of `all_of`, and at least one of `one_of`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredColumns {
    /// Every one of these.
    pub all_of: &'static [&'static str],
    /// At least one of these (the identity columns).
    pub one_of: &'static [&'static str],
}

/// The columns a source must have for a target.
pub fn required_columns(target: Target) -> RequiredColumns {
    match target {
        Target::Profiles { .. } => RequiredColumns {
            all_of: &[],
            one_of: &rules::IDENTITY_FIELDS,
        },
        Target::Events => RequiredColumns {
            all_of: &["evtName"],
            one_of: &rules::IDENTITY_FIELDS,
        },
    }
}

/// Builds the CleverTap record for a row.
pub fn map_row(target: Target, row: &Row) -> Result<Value, Invalid> {
    match target {
        Target::Profiles { array_operation } => profile_record(row, array_operation),
        Target::Events => event_record(row),
    }
}

/// The record field an identity column fills (`objectid` is accepted for `objectId`).
fn identity_field(column: &str) -> Option<&'static str> {
    rules::IDENTITY_FIELDS
        .iter()
        .copied()
        .find(|field| *field == column || (*field == "objectId" && column == "objectid"))
}

/// Null and empty values are left out, as Treasure Data does.
fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        _ => false,
    }
}

/// Copies an identity value into the record after checking it.
fn put_identity(
    record: &mut Map<String, Value>,
    field: &'static str,
    value: &Value,
) -> Result<(), Invalid> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        other => {
            return Err(Invalid::new(
                "523",
                format!("`{field}` must be a string or a number, found {other}"),
            ));
        }
    };
    rules::check_identity(field, &text)?;
    record.insert(field.to_string(), value.clone());
    Ok(())
}

fn put_timestamp(record: &mut Map<String, Value>, value: &Value) -> Result<(), Invalid> {
    let seconds =
        parse_timestamp(value).map_err(|reason| Invalid::new("525", format!("`ts` {reason}")))?;
    record.insert("ts".into(), Value::from(seconds));
    Ok(())
}

fn missing_identity() -> Invalid {
    Invalid::new(
        "523",
        "the row has no `identity`, `objectId`, `FBID` or `GPID` value",
    )
}

fn profile_record(row: &Row, array_operation: ArrayOperation) -> Result<Value, Invalid> {
    let mut record = Map::new();
    record.insert("type".into(), Value::from("profile"));
    let mut profile = Map::new();
    for (column, value) in &row.fields {
        if is_blank(value) {
            continue;
        }
        if let Some(field) = identity_field(column) {
            put_identity(&mut record, field, value)?;
        } else if &**column == "ts" {
            put_timestamp(&mut record, value)?;
        } else {
            rules::check_key(column)?;
            let value = profile_value(column, value, array_operation)?;
            profile.insert(column.to_string(), value);
        }
    }
    if !rules::IDENTITY_FIELDS
        .iter()
        .any(|field| record.contains_key(*field))
    {
        return Err(missing_identity());
    }
    record.insert("profileData".into(), Value::Object(profile));
    Ok(Value::Object(record))
}

/// A profile property value as CleverTap wants it.
fn profile_value(
    key: &str,
    value: &Value,
    array_operation: ArrayOperation,
) -> Result<Value, Invalid> {
    let converted = match value {
        Value::String(text) if text.trim_start().starts_with('[') => {
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(values)) => return multi_value(key, values, array_operation),
                _ => value.clone(),
            }
        }
        Value::Array(values) => return multi_value(key, values.clone(), array_operation),
        Value::Object(_) => {
            return Err(Invalid::new(
                "invalid_record",
                format!(
                    "`{key}` is a JSON object; profile properties must be plain values or lists of strings"
                ),
            ));
        }
        Value::String(text) => standard_text_value(key, text)?,
        other => other.clone(),
    };
    if let Value::String(text) = &converted {
        rules::check_value_length(key, text)?;
    }
    rules::check_standard_profile_key(key, &converted)?;
    Ok(converted)
}

/// CSV text for standard keys that CleverTap wants typed: Age a number, MSG-* booleans,
/// DOB a `$D_` date.
fn standard_text_value(key: &str, text: &str) -> Result<Value, Invalid> {
    Ok(match key {
        "Age" => match text.trim().parse::<i64>() {
            Ok(age) => Value::from(age),
            Err(_) => Value::from(text),
        },
        _ if key.starts_with("MSG-") => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => {
                return Err(Invalid::new(
                    "invalid_record",
                    format!("`{key}` must be `true` or `false`, found `{text}`"),
                ));
            }
        },
        "DOB" if !rules::is_date_value(text) => match parse_date(text) {
            Ok(seconds) => Value::from(format!("$D_{seconds}")),
            Err(_) => Value::from(text),
        },
        _ => Value::from(text),
    })
}

/// A multi-value property: strings only, at most 100, each at most 512 bytes.
fn multi_value(
    key: &str,
    values: Vec<Value>,
    array_operation: ArrayOperation,
) -> Result<Value, Invalid> {
    if values.len() > rules::MAX_MULTI_VALUES {
        return Err(Invalid::new(
            "invalid_record",
            format!(
                "`{key}` has {} values; a multi-value property holds at most {}",
                values.len(),
                rules::MAX_MULTI_VALUES
            ),
        ));
    }
    for value in &values {
        let Value::String(text) = value else {
            return Err(Invalid::new(
                "invalid_record",
                format!("`{key}` holds {value}; multi-value properties hold only strings"),
            ));
        };
        rules::check_value_length(key, text)?;
    }
    let list = Value::Array(values);
    Ok(match array_operation {
        ArrayOperation::Replace => list,
        ArrayOperation::Append => Value::Object(Map::from_iter([("$add".to_string(), list)])),
        ArrayOperation::Remove => Value::Object(Map::from_iter([("$remove".to_string(), list)])),
    })
}

fn event_record(row: &Row) -> Result<Value, Invalid> {
    let mut record = Map::new();
    record.insert("type".into(), Value::from("event"));
    let mut data = Map::new();
    let mut items: BTreeMap<usize, Map<String, Value>> = BTreeMap::new();
    for (column, value) in &row.fields {
        if is_blank(value) {
            continue;
        }
        if let Some(field) = identity_field(column) {
            put_identity(&mut record, field, value)?;
        } else if &**column == "ts" {
            put_timestamp(&mut record, value)?;
        } else if &**column == "evtName" {
            let Value::String(name) = value else {
                return Err(Invalid::new(
                    "509",
                    format!("`evtName` must be a string, found {value}"),
                ));
            };
            if rules::is_reserved_event(name) {
                return Err(Invalid::new(
                    "513",
                    format!("`{name}` is a CleverTap system event; uploads cannot raise it"),
                ));
            }
            rules::check_key(name)
                .map_err(|v| Invalid::new("512", format!("event name: {}", v.message)))?;
            record.insert("evtName".into(), value.clone());
        } else if let Some((index, field)) = item_column(column) {
            rules::check_key(field)?;
            check_event_scalar(column, value)?;
            items
                .entry(index)
                .or_default()
                .insert(field.to_string(), value.clone());
        } else if &**column == "Items" {
            data.insert("Items".into(), charged_items(value)?);
        } else {
            rules::check_key(column)?;
            check_event_scalar(column, value)?;
            data.insert(column.to_string(), value.clone());
        }
    }
    if !record.contains_key("evtName") {
        return Err(Invalid::new(
            "509",
            "the row has no `evtName` value; every event needs a name",
        ));
    }
    if !rules::IDENTITY_FIELDS
        .iter()
        .any(|field| record.contains_key(*field))
    {
        return Err(missing_identity());
    }
    if !items.is_empty() {
        if data.contains_key("Items") {
            return Err(Invalid::new(
                "512",
                "the row has both an `Items` column and `Items[i].Field` columns",
            ));
        }
        if items.len() > rules::MAX_CHARGED_ITEMS {
            return Err(Invalid::new(
                "512",
                format!(
                    "{} items; a Charged event holds at most {}",
                    items.len(),
                    rules::MAX_CHARGED_ITEMS
                ),
            ));
        }
        data.insert(
            "Items".into(),
            Value::Array(items.into_values().map(Value::Object).collect()),
        );
    }
    if data.len() > rules::MAX_EVENT_PROPERTIES {
        return Err(Invalid::new(
            "522",
            format!(
                "{} event properties; CleverTap keeps at most {}",
                data.len(),
                rules::MAX_EVENT_PROPERTIES
            ),
        ));
    }
    record.insert("evtData".into(), Value::Object(data));
    Ok(Value::Object(record))
}

/// `Items[3].Name` → `(3, "Name")`.
fn item_column(column: &str) -> Option<(usize, &str)> {
    let rest = column.strip_prefix("Items[")?;
    let (index, field) = rest.split_once("].")?;
    Some((index.parse().ok()?, field))
}

fn check_event_scalar(column: &str, value: &Value) -> Result<(), Invalid> {
    match value {
        Value::Array(_) | Value::Object(_) => Err(Invalid::new(
            "512",
            format!(
                "`{column}` is a list or object; event properties must be plain values (only a Charged event's `Items` is a list)"
            ),
        )),
        Value::String(text) => Ok(rules::check_value_length(column, text)?),
        _ => Ok(()),
    }
}

/// A JSON `Items` value: a list of objects of plain values.
fn charged_items(value: &Value) -> Result<Value, Invalid> {
    let Value::Array(items) = value else {
        return Err(Invalid::new("512", "`Items` must be a list of objects"));
    };
    if items.len() > rules::MAX_CHARGED_ITEMS {
        return Err(Invalid::new(
            "512",
            format!(
                "{} items; a Charged event holds at most {}",
                items.len(),
                rules::MAX_CHARGED_ITEMS
            ),
        ));
    }
    for item in items {
        let Value::Object(fields) = item else {
            return Err(Invalid::new("512", "`Items` must be a list of objects"));
        };
        for (key, field) in fields {
            rules::check_key(key)?;
            check_event_scalar(&format!("Items.{key}"), field)?;
        }
    }
    Ok(value.clone())
}

#[cfg(test)]
mod tests;
