//! A row as a user profile: its identity, each property checked against CleverTap's rules
//! and converted as its column says, multi-value properties as the array operation says.

use std::sync::Arc;

use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::clevertap::rules;
use crate::config::model::ArrayOperation;
use crate::outcome::Code;
use crate::source::Row;

use super::record::RecordText;
use super::time::parse_date;
use super::{
    Column, Conversion, Invalid, PropertyColumn, checked_identity, is_blank, missing_identity,
    parse_ts, put_identity,
};

/// Checks a row as a profile and writes it into `text`.
pub(super) fn profile_record(
    row: &Row,
    columns: &[(Arc<str>, Column)],
    text: &mut RecordText,
    (array_operation, zone): (ArrayOperation, Tz),
) -> Result<(), Invalid> {
    text.clear();
    let mut ts = None;
    let mut identity = None;
    let mut object_id = false;
    for ((name, value), (_, column)) in row.fields.iter().zip(columns) {
        if is_blank(value) {
            continue;
        }
        match column {
            // Held back: where it goes depends on whether the row has an objectId too.
            Column::Identity("identity") => identity = Some(checked_identity("identity", value)?),
            Column::Identity(field) => {
                object_id |= *field == "objectId";
                put_identity(text, field, value)?;
            }
            Column::Timestamp => ts = Some(parse_ts(value, zone)?),
            Column::Property(property) => {
                match profile_value(name, value, property, (array_operation, zone))? {
                    Some(converted) => text.push_property(&property.key, &converted),
                    None => text.push_property(&property.key, value),
                }
            }
            Column::BadName(invalid) => return Err(invalid.clone()),
            Column::EventName | Column::Item { .. } | Column::Items => {
                unreachable!("event columns are worked out for events only")
            }
        }
    }
    // A record is identified by one of `identity` and `objectId` ([DOC]
    // upload-user-profiles-api: "identity, objectId, FBID or GPID, one of them"). With both,
    // the objectId identifies the profile and the identity becomes one of its properties,
    // which attaches it to that profile, as RudderStack does
    // (rudder-transformer `mapIdentifyPayloadWithObjectId`; docs/clevertap-api.md,
    // Corrections 9).
    if let Some(identity) = identity {
        if object_id {
            text.push_property(br#""identity":"#, identity);
        } else {
            text.push_identity("identity", identity);
        }
    }
    if text.identity.is_empty() {
        return Err(missing_identity());
    }
    if let Some(ts) = ts {
        text.push_header("ts", &Value::from(ts));
    }
    Ok(())
}

/// Checks a profile property value; returns the value to send instead when CleverTap
/// wants it converted (a list, a typed standard property), `None` to send it as it is.
fn profile_value(
    key: &str,
    value: &Value,
    column: &PropertyColumn,
    (array_operation, zone): (ArrayOperation, Tz),
) -> Result<Option<Value>, Invalid> {
    let converted = match value {
        Value::String(text) if text.bytes().find(|b| !b.is_ascii_whitespace()) == Some(b'[') => {
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(values)) => {
                    return multi_value(key, values, array_operation).map(Some);
                }
                _ => None,
            }
        }
        Value::Array(values) => {
            return multi_value(key, values.clone(), array_operation).map(Some);
        }
        Value::Object(command) => {
            // A list with its own operation, from the output mapping: `{"$add": [...]}`.
            let list_command = command.len() == 1
                && command.iter().all(|(name, list)| {
                    matches!(name.as_str(), "$add" | "$remove" | "$set") && list.is_array()
                });
            let Some((name, Value::Array(list))) = command.iter().next().filter(|_| list_command)
            else {
                return Err(Invalid::new(
                    Code::InvalidRecord,
                    format!(
                        "`{key}` is a JSON object; profile properties must be plain values or lists of strings"
                    ),
                ));
            };
            let checked = multi_value(key, list.clone(), ArrayOperation::Replace)?;
            // A column's own `replace` is CleverTap's plain list, which overwrites the
            // property ([DOC] upload-user-profiles-api; `$set` is an SDK constant only).
            if name == "$set" {
                return Ok(Some(checked));
            }
            return Ok(Some(Value::Object(Map::from_iter([(
                name.clone(),
                checked,
            )]))));
        }
        Value::String(text) => convert_text(key, text, column.conversion, zone)?,
        _ => None,
    };
    let sent = converted.as_ref().unwrap_or(value);
    if let Value::String(text) = sent {
        rules::check_value_length(key, text)?;
    }
    if let Some(standard) = column.standard {
        standard.check(sent)?;
    }
    Ok(converted)
}

/// CSV text for standard keys that CleverTap wants typed: Age a number, MSG-* booleans,
/// DOB a `$D_` date. `None` keeps the text as it is.
fn convert_text(
    key: &str,
    text: &str,
    conversion: Conversion,
    zone: Tz,
) -> Result<Option<Value>, Invalid> {
    Ok(match conversion {
        Conversion::None => None,
        Conversion::Integer => text.trim().parse::<i64>().ok().map(Value::from),
        Conversion::Flag => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => {
                return Err(Invalid::new(
                    Code::InvalidRecord,
                    format!("`{key}` must be `true` or `false`, found `{text}`"),
                ));
            }
        },
        Conversion::Date if !rules::is_date_value(text) => parse_date(text, zone)
            .ok()
            .map(|seconds| Value::from(format!("$D_{seconds}"))),
        Conversion::Date => None,
    })
}

/// A multi-value property: strings only, at most 100, each at most 512 bytes.
fn multi_value(
    key: &str,
    values: Vec<Value>,
    array_operation: ArrayOperation,
) -> Result<Value, Invalid> {
    if values.len() > rules::MAX_MULTI_VALUES {
        return Err(Invalid::breaks(
            &rules::MULTI_VALUE,
            format!(
                "`{key}` has {} values; a multi-value property holds at most {}",
                values.len(),
                rules::MAX_MULTI_VALUES
            ),
        ));
    }
    for value in &values {
        let Value::String(text) = value else {
            return Err(Invalid::breaks(
                &rules::MULTI_VALUE,
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
