//! A row as an event: its name, `ts`, identity and properties, and a Charged event's
//! `Items` (from a list column or from `Items.N.field` columns).

use std::sync::Arc;

use chrono_tz::Tz;
use serde_json::Value;

use crate::clevertap::rules;
use crate::config::model::AccountLimits;
use crate::source::Row;

use super::record::RecordText;
use super::{
    Column, Invalid, checked_identity, is_blank, json, missing_identity, parse_ts, put_identity,
};

/// Checks a row as an event and writes it into `text`.
pub(super) fn event_record(
    row: &Row,
    columns: &[(Arc<str>, Column)],
    text: &mut RecordText,
    known_event_name: &mut Option<String>,
    (limits, zone): (AccountLimits, Tz),
) -> Result<Option<i64>, Invalid> {
    text.clear();
    let mut ts = None;
    let mut event_name = None;
    let mut items_column = None;
    // `Items[i].Field` values: (i, the field's JSON key, the value), in column order.
    let mut items: Vec<(usize, &[u8], &Value)> = Vec::new();
    let mut object_id = None;
    let mut identity = false;
    for ((name, value), (_, column)) in row.fields.iter().zip(columns) {
        if is_blank(value) {
            continue;
        }
        match column {
            // Held back: an event with an identity is the identity's (below).
            Column::Identity("objectId") => object_id = Some(checked_identity("objectId", value)?),
            Column::Identity(field) => {
                identity |= *field == "identity";
                put_identity(text, field, value)?;
            }
            Column::Timestamp => ts = Some(parse_ts(value, zone)?),
            Column::EventName => {
                event_name = Some(match (value, &*known_event_name) {
                    (Value::String(name), Some(known)) if name == known => value,
                    _ => checked_event_name(value, known_event_name)?,
                });
            }
            Column::Item { index, key } => {
                check_event_scalar(name, value)?;
                items.push((*index, key, value));
            }
            Column::Items => items_column = Some(charged_items(value)?),
            Column::Property(property) => {
                check_event_scalar(name, value)?;
                text.push_property(&property.key, value);
            }
            Column::BadName(invalid) => return Err(invalid.clone()),
        }
    }
    let Some(event_name) = event_name else {
        return Err(Invalid::breaks(
            &rules::EVENT_NAME,
            "the row has no `evtName` value; every event needs a name",
        ));
    };
    // One of `identity` and `objectId` identifies an event's user ([DOC] upload-events-api):
    // the identity when the row has both, as RudderStack sends a known user's events.
    if let Some(object_id) = object_id
        && !identity
    {
        text.push_identity("objectId", object_id);
    }
    if text.identity.is_empty() {
        return Err(missing_identity());
    }
    let has_items = check_items(items_column.is_some(), &mut items, event_name)?;
    let properties = text.properties + usize::from(has_items);
    if properties > limits.event_properties {
        return Err(Invalid::breaks(
            &rules::EVENT_PROPERTIES,
            format!(
                "{properties} event properties; this account keeps at most {} (set `limits: {{event_properties: N}}` in the connection if CleverTap raised it for the account)",
                limits.event_properties
            ),
        ));
    }
    if let Some(items) = items_column {
        text.push_property(br#""Items":"#, &items);
    } else if !items.is_empty() {
        text.push_raw_property(br#""Items":"#, |out| write_items(out, &items));
    }
    if let Some(ts) = ts {
        text.push_header("ts", &Value::from(ts));
    }
    text.push_header("evtName", event_name);
    Ok(ts)
}

/// Checks a row's items (`in_one_column`: an `Items` column; `items`: `Items[i].Field`
/// values, sorted here by `i`): not both, at most [`rules::MAX_CHARGED_ITEMS`], and only on
/// the Charged event. Whether the event has items.
fn check_items(
    in_one_column: bool,
    items: &mut [(usize, &[u8], &Value)],
    event_name: &Value,
) -> Result<bool, Invalid> {
    if !items.is_empty() {
        if in_one_column {
            return Err(Invalid::breaks(
                &rules::EVENT_STRUCTURE,
                "the row has both an `Items` column and `Items[i].Field` columns",
            ));
        }
        // Items in index order, each item's fields in column order.
        items.sort_by_key(|(index, _, _)| *index);
        let count = 1 + items
            .windows(2)
            .filter(|pair| pair[0].0 != pair[1].0)
            .count();
        if count > rules::MAX_CHARGED_ITEMS {
            return Err(Invalid::breaks(
                &rules::EVENT_STRUCTURE,
                format!(
                    "{count} items; a Charged event holds at most {}",
                    rules::MAX_CHARGED_ITEMS
                ),
            ));
        }
    }
    let has_items = in_one_column || !items.is_empty();
    // [DOC] platform-considerations: `Items` is the Charged event's alone.
    if has_items && !is_charged(event_name) {
        return Err(Invalid::breaks(
            &rules::EVENT_STRUCTURE,
            format!(
                "`Items` belongs only to the Charged event, not to {event_name}; send the items as a Charged event, or leave out the `Items` columns"
            ),
        ));
    }
    Ok(has_items)
}

/// `[{"Name":…,"Price":…},…]`: `Items[i].Field` values sorted by `i`, as JSON text.
fn write_items(out: &mut Vec<u8>, items: &[(usize, &[u8], &Value)]) {
    out.push(b'[');
    for (position, (index, key, value)) in items.iter().enumerate() {
        match position.checked_sub(1).map(|before| items[before].0) {
            None => out.push(b'{'),
            Some(before) if before == *index => out.push(b','),
            Some(_) => out.extend_from_slice(b"},{"),
        }
        out.extend_from_slice(key);
        json::write_value(out, value);
    }
    out.extend_from_slice(b"}]");
}

/// Checks an `evtName` value: a string, not a system event, a valid name. The last name
/// that passed is kept in `known`: an export's events nearly always share a few names, so
/// most rows are checked with one comparison.
fn checked_event_name<'a>(
    value: &'a Value,
    known: &mut Option<String>,
) -> Result<&'a Value, Invalid> {
    let Value::String(name) = value else {
        return Err(Invalid::breaks(
            &rules::EVENT_NAME,
            format!("`evtName` must be a string, found {value}"),
        ));
    };
    if rules::is_reserved_event(name) {
        return Err(Invalid::breaks(
            &rules::SYSTEM_EVENT,
            format!("`{name}` is a CleverTap system event; uploads cannot raise it"),
        ));
    }
    rules::check_event_name(name)
        .map_err(|v| Invalid::from(v.rule.broken(format!("event name: {}", v.message))))?;
    *known = Some(name.clone());
    Ok(value)
}

/// Whether an event name is CleverTap's Charged event (compared as CleverTap compares names).
fn is_charged(event_name: &Value) -> bool {
    event_name
        .as_str()
        .is_some_and(|name| rules::same_event_name(name, "charged"))
}

/// `Items[3].Name` → `(3, "Name")`.
pub(super) fn item_column(column: &str) -> Option<(usize, &str)> {
    let rest = column.strip_prefix("Items[")?;
    let (index, field) = rest.split_once("].")?;
    Some((index.parse().ok()?, field))
}

fn check_event_scalar(column: &str, value: &Value) -> Result<(), Invalid> {
    match value {
        Value::Array(_) | Value::Object(_) => Err(Invalid::breaks(
            &rules::EVENT_STRUCTURE,
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
        return Err(Invalid::breaks(
            &rules::EVENT_STRUCTURE,
            "`Items` must be a list of objects",
        ));
    };
    if items.len() > rules::MAX_CHARGED_ITEMS {
        return Err(Invalid::breaks(
            &rules::EVENT_STRUCTURE,
            format!(
                "{} items; a Charged event holds at most {}",
                items.len(),
                rules::MAX_CHARGED_ITEMS
            ),
        ));
    }
    for item in items {
        let Value::Object(fields) = item else {
            return Err(Invalid::breaks(
                &rules::EVENT_STRUCTURE,
                "`Items` must be a list of objects",
            ));
        };
        for (key, field) in fields {
            rules::check_event_key(key)?;
            check_event_scalar(&format!("Items.{key}"), field)?;
        }
    }
    Ok(value.clone())
}
