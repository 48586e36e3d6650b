//! Source rows → CleverTap records, checked against CleverTap's rules before anything is sent.
//!
//! Pure functions of their input: no IO, no clock. A row that breaks a rule becomes an
//! [`Invalid`] naming the column, the value and CleverTap's error code for it.

mod operations;
pub use operations::custom_list_line;
pub mod output;
mod time;

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

pub use time::{parse_date, parse_timestamp};

use crate::clevertap::rules::{self, Violation};
use crate::clevertap::wire::Endpoint;
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
    pub(crate) fn new(code: &str, reason: impl Into<String>) -> Self {
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

/// The columns a target needs: all of `all_of`, and at least one of `one_of` (when not empty).
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
        Target::DeviceTokens => RequiredColumns {
            all_of: &["objectId", "id", "type"],
            one_of: &[],
        },
        Target::Demerge => RequiredColumns {
            all_of: &["identity"],
            one_of: &[],
        },
        Target::Subscriptions => RequiredColumns {
            all_of: &["type", "value", "status"],
            one_of: &[],
        },
        Target::DisassociatePhone => RequiredColumns {
            all_of: &["value"],
            one_of: &[],
        },
        Target::CustomList => RequiredColumns {
            all_of: &["identity"],
            one_of: &[],
        },
    }
}

/// A CleverTap record, ready to serialize into a request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'row> {
    /// A profile or an event for `/1/upload`, borrowing from its row.
    Upload(UploadRecord<'row>),
    /// A record of another API (tokens, demerge, subscriptions, disassociation).
    Plain(Value),
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Record::Upload(record) => record.serialize(serializer),
            Record::Plain(value) => value.serialize(serializer),
        }
    }
}

impl Record<'_> {
    /// The record as a JSON value (for tests and reports; sending serializes it directly).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A profile or event record, borrowing its values from the row it came from.
///
/// It serializes straight into a request body, so mapping a row allocates little: this is
/// the hot path of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRecord<'row> {
    kind: RecordKind,
    identity: Vec<(&'static str, &'row Value)>,
    ts: Option<i64>,
    event_name: Option<&'row Value>,
    data: Vec<(&'row str, Property<'row>)>,
    items: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordKind {
    Profile,
    Event,
}

/// A property value: the row's own, or one converted from it.
#[derive(Debug, Clone, PartialEq)]
enum Property<'row> {
    Borrowed(&'row Value),
    Owned(Value),
}

impl Serialize for Property<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Property::Borrowed(value) => value.serialize(serializer),
            Property::Owned(value) => value.serialize(serializer),
        }
    }
}

/// The `profileData` / `evtData` object.
struct Data<'a, 'row>(&'a UploadRecord<'row>);

impl Serialize for Data<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = self.0;
        let mut map = serializer.serialize_map(Some(
            record.data.len() + usize::from(record.items.is_some()),
        ))?;
        for (key, value) in &record.data {
            map.serialize_entry(key, value)?;
        }
        if let Some(items) = &record.items {
            map.serialize_entry("Items", items)?;
        }
        map.end()
    }
}

impl Serialize for UploadRecord<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        let (kind, data_key) = match self.kind {
            RecordKind::Profile => ("profile", "profileData"),
            RecordKind::Event => ("event", "evtData"),
        };
        map.serialize_entry("type", kind)?;
        for (field, value) in &self.identity {
            map.serialize_entry(field, value)?;
        }
        if let Some(ts) = self.ts {
            map.serialize_entry("ts", &ts)?;
        }
        if let Some(name) = self.event_name {
            map.serialize_entry("evtName", name)?;
        }
        map.serialize_entry(data_key, &Data(self))?;
        map.end()
    }
}

/// Builds the CleverTap record for a row.
pub fn map_row(target: Target, row: &Row) -> Result<Record<'_>, Invalid> {
    Ok(match target {
        Target::Profiles { array_operation } => {
            Record::Upload(profile_record(row, array_operation)?)
        }
        Target::Events => Record::Upload(event_record(row)?),
        Target::DeviceTokens => Record::Plain(operations::token_record(row)?),
        Target::Demerge => Record::Plain(operations::demerge_identity(row)?),
        Target::Subscriptions => Record::Plain(operations::subscription_record(row)?),
        Target::DisassociatePhone => Record::Plain(operations::disassociate_record(row)?),
        Target::CustomList => Record::Plain(operations::custom_list_entry(row)?),
    })
}

/// The CleverTap API a target's records go to.
pub fn endpoint(target: Target) -> Endpoint {
    match target {
        Target::Profiles { .. } | Target::Events => Endpoint::UPLOAD,
        Target::DeviceTokens => Endpoint::UPLOAD_TOKENS,
        Target::Demerge => Endpoint::DEMERGE,
        Target::Subscriptions => Endpoint::SUBSCRIBE,
        Target::DisassociatePhone => Endpoint::DISASSOCIATE,
        Target::CustomList => Endpoint::CUSTOM_LIST,
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

/// Checks an identity value and adds it to the record.
fn put_identity<'row>(
    record: &mut UploadRecord<'row>,
    field: &'static str,
    value: &'row Value,
) -> Result<(), Invalid> {
    match value {
        Value::String(text) => rules::check_identity(field, text)?,
        Value::Number(number) => rules::check_identity(field, &number.to_string())?,
        other => {
            return Err(Invalid::new(
                "523",
                format!("`{field}` must be a string or a number, found {other}"),
            ));
        }
    }
    record.identity.push((field, value));
    Ok(())
}

fn parse_ts(value: &Value) -> Result<i64, Invalid> {
    parse_timestamp(value).map_err(|reason| Invalid::new("525", format!("`ts` {reason}")))
}

fn missing_identity() -> Invalid {
    Invalid::new(
        "523",
        "the row has no `identity`, `objectId`, `FBID` or `GPID` value",
    )
}

fn empty_record<'row>(kind: RecordKind, columns: usize) -> UploadRecord<'row> {
    UploadRecord {
        kind,
        identity: Vec::new(),
        ts: None,
        event_name: None,
        data: Vec::with_capacity(columns),
        items: None,
    }
}

fn profile_record(row: &Row, array_operation: ArrayOperation) -> Result<UploadRecord<'_>, Invalid> {
    let mut record = empty_record(RecordKind::Profile, row.fields.len());
    for (column, value) in &row.fields {
        if is_blank(value) {
            continue;
        }
        if let Some(field) = identity_field(column) {
            put_identity(&mut record, field, value)?;
        } else if &**column == "ts" {
            record.ts = Some(parse_ts(value)?);
        } else {
            rules::check_key(column)?;
            let value = profile_value(column, value, array_operation)?;
            record.data.push((column, value));
        }
    }
    if record.identity.is_empty() {
        return Err(missing_identity());
    }
    Ok(record)
}

/// A profile property value as CleverTap wants it.
fn profile_value<'row>(
    key: &str,
    value: &'row Value,
    array_operation: ArrayOperation,
) -> Result<Property<'row>, Invalid> {
    let converted = match value {
        Value::String(text) if text.bytes().find(|b| !b.is_ascii_whitespace()) == Some(b'[') => {
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(values)) => {
                    return multi_value(key, values, array_operation).map(Property::Owned);
                }
                _ => Property::Borrowed(value),
            }
        }
        Value::Array(values) => {
            return multi_value(key, values.clone(), array_operation).map(Property::Owned);
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
                    "invalid_record",
                    format!(
                        "`{key}` is a JSON object; profile properties must be plain values or lists of strings"
                    ),
                ));
            };
            let checked = multi_value(key, list.clone(), ArrayOperation::Replace)?;
            return Ok(Property::Owned(Value::Object(Map::from_iter([(
                name.clone(),
                checked,
            )]))));
        }
        Value::String(text) => {
            standard_text_value(key, text)?.map_or(Property::Borrowed(value), Property::Owned)
        }
        other => Property::Borrowed(other),
    };
    let plain = match &converted {
        Property::Borrowed(value) => value,
        Property::Owned(value) => value,
    };
    if let Value::String(text) = plain {
        rules::check_value_length(key, text)?;
    }
    rules::check_standard_profile_key(key, plain)?;
    Ok(converted)
}

/// CSV text for standard keys that CleverTap wants typed: Age a number, MSG-* booleans,
/// DOB a `$D_` date. `None` keeps the text as it is.
fn standard_text_value(key: &str, text: &str) -> Result<Option<Value>, Invalid> {
    Ok(match key {
        "Age" => text.trim().parse::<i64>().ok().map(Value::from),
        _ if key.starts_with("MSG-") => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => {
                return Err(Invalid::new(
                    "invalid_record",
                    format!("`{key}` must be `true` or `false`, found `{text}`"),
                ));
            }
        },
        "DOB" if !rules::is_date_value(text) => parse_date(text)
            .ok()
            .map(|seconds| Value::from(format!("$D_{seconds}"))),
        _ => None,
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

fn event_record(row: &Row) -> Result<UploadRecord<'_>, Invalid> {
    let mut record = empty_record(RecordKind::Event, row.fields.len());
    let mut items: BTreeMap<usize, Map<String, Value>> = BTreeMap::new();
    for (column, value) in &row.fields {
        if is_blank(value) {
            continue;
        }
        if let Some(field) = identity_field(column) {
            put_identity(&mut record, field, value)?;
        } else if &**column == "ts" {
            record.ts = Some(parse_ts(value)?);
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
            record.event_name = Some(value);
        } else if let Some((index, field)) = item_column(column) {
            rules::check_key(field)?;
            check_event_scalar(column, value)?;
            items
                .entry(index)
                .or_default()
                .insert(field.to_string(), value.clone());
        } else if &**column == "Items" {
            record.items = Some(charged_items(value)?);
        } else {
            rules::check_key(column)?;
            check_event_scalar(column, value)?;
            record.data.push((column, Property::Borrowed(value)));
        }
    }
    if record.event_name.is_none() {
        return Err(Invalid::new(
            "509",
            "the row has no `evtName` value; every event needs a name",
        ));
    }
    if record.identity.is_empty() {
        return Err(missing_identity());
    }
    if !items.is_empty() {
        if record.items.is_some() {
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
        record.items = Some(Value::Array(
            items.into_values().map(Value::Object).collect(),
        ));
    }
    let properties = record.data.len() + usize::from(record.items.is_some());
    if properties > rules::MAX_EVENT_PROPERTIES {
        return Err(Invalid::new(
            "522",
            format!(
                "{properties} event properties; CleverTap keeps at most {}",
                rules::MAX_EVENT_PROPERTIES
            ),
        ));
    }
    Ok(record)
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
