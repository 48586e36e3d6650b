//! Source rows → CleverTap records, checked against CleverTap's rules before anything is sent.
//!
//! Pure functions of their input: no IO, no clock. A row that breaks a rule becomes an
//! [`Invalid`] naming the column, the value and CleverTap's error code for it.

mod json;
mod operations;
pub use operations::custom_list_line;
pub mod output;
mod record;
pub mod replay;
mod time;

use std::sync::Arc;

use serde_json::{Map, Value};

pub use record::{Record, UploadRecord};
use record::{RecordKind, RecordText};
pub use time::{parse_date, parse_timestamp};

use crate::clevertap::rules::{self, Rule, StandardKey, Violation};
use crate::clevertap::wire::{DELETE_KEYS, Endpoint};
use crate::config::model::{AccountLimits, ArrayOperation, Target};
use crate::outcome::Code;
use crate::source::Row;
use chrono_tz::Tz;

/// Why a row cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// CleverTap's error code for the same problem (`515`), or `invalid_record`.
    pub code: Code,
    /// What is wrong, naming the column and value.
    pub reason: String,
}

impl Invalid {
    pub(crate) fn new(code: Code, reason: impl Into<String>) -> Self {
        Invalid {
            code,
            reason: reason.into(),
        }
    }
}

impl Invalid {
    /// A record that breaks one of CleverTap's rules.
    pub(crate) fn breaks(rule: &'static Rule, reason: impl Into<String>) -> Self {
        Invalid::from(rule.broken(reason))
    }
}

impl From<Violation> for Invalid {
    fn from(violation: Violation) -> Self {
        Invalid {
            code: Code::of_rule(violation.code),
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
        Target::DeleteProfiles => RequiredColumns {
            all_of: &[],
            one_of: &DELETE_KEYS,
        },
        Target::CustomList => RequiredColumns {
            all_of: &["identity"],
            one_of: &[],
        },
    }
}

/// Maps the rows of one source to records for one target.
///
/// What each column is (an identity, `ts`, a property and its rules) depends only on its
/// name, so the mapper works it out once per header and keeps it: per row, only the values
/// are checked. Rows whose columns differ (JSON Lines) are worked out as they come.
pub struct Mapper {
    target: Target,
    /// The account's limits on records.
    limits: AccountLimits,
    /// The zone of the source's dates and times that have none.
    zone: Tz,
    /// The role of each column by position, with the name it was worked out for.
    columns: Vec<(Arc<str>, Column)>,
    /// The record being built, as JSON text (profiles and events).
    text: RecordText,
    /// The last event name that passed CleverTap's rules.
    known_event_name: Option<String>,
    /// The `ts` of the last event mapped, to see whether the source is in time order.
    last_ts: Option<i64>,
    /// What the run should be told of the records mapped.
    notes: Notes,
}

/// What the mapper noticed of the records it mapped that the run's summary should say:
/// things CleverTap asks for that are not errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    /// Events whose `ts` is earlier than the event before them: CleverTap asks that events
    /// be uploaded oldest first (import FAQs).
    pub events_out_of_order: u64,
    /// Device tokens of types the upload-device-tokens doc does not list, by type.
    pub undocumented_token_types: std::collections::BTreeMap<String, u64>,
}

impl Notes {
    /// The warnings a run summary gives for them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.events_out_of_order > 0 {
            warnings.push(format!(
                "{} events came earlier in time than the event before them: CleverTap asks that events be uploaded oldest first (import FAQs), so sort the source by `ts`",
                self.events_out_of_order
            ));
        }
        for (kind, count) in &self.undocumented_token_types {
            warnings.push(format!(
                "{count} device tokens of type `{kind}` were sent: CleverTap's upload-device-tokens doc lists only apns, fcm and gcm for the API (`{kind}` comes from RudderStack's transformer); CleverTap may refuse them with code 534"
            ));
        }
        warnings
    }
}

/// What a column is to a profile or event record.
#[derive(Debug, Clone)]
enum Column {
    /// Fills an identity field (`objectid` fills `objectId`).
    Identity(&'static str),
    /// The record's `ts`.
    Timestamp,
    /// The event's name (events).
    EventName,
    /// `Items[i].Field` of a Charged event, with the field's key written as JSON once.
    Item { index: usize, key: Box<[u8]> },
    /// A JSON list of a Charged event's items.
    Items,
    /// A property, with its key written as JSON once.
    Property(PropertyColumn),
    /// A name CleverTap refuses: a row with a value in this column is invalid.
    BadName(Invalid),
}

#[derive(Debug, Clone)]
struct PropertyColumn {
    /// `"Name":`.
    key: Box<[u8]>,
    /// The standard profile property it is, if any (profiles).
    standard: Option<StandardKey>,
    /// How its text becomes the value CleverTap wants (profiles).
    conversion: Conversion,
}

/// CSV text that CleverTap wants typed, for some standard profile keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conversion {
    /// Kept as it is.
    None,
    /// `Age`: a whole number when the text is one.
    Integer,
    /// `MSG-*` subscription flags: `true` or `false`.
    Flag,
    /// `DOB`: a date in any accepted form becomes `$D_<epoch seconds>`.
    Date,
}

impl Column {
    fn of(target: Target, name: &str) -> Column {
        if let Some(field) = identity_field(name) {
            return Column::Identity(field);
        }
        if name == "ts" {
            return Column::Timestamp;
        }
        let events = target == Target::Events;
        if events && name == "evtName" {
            return Column::EventName;
        }
        if events && name == "Items" {
            return Column::Items;
        }
        if events && let Some((index, field)) = item_column(name) {
            return match rules::check_event_key(field) {
                Ok(()) => Column::Item {
                    index,
                    key: json::encoded_key(field),
                },
                Err(violation) => Column::BadName(violation.into()),
            };
        }
        // `#` is refused only in profile keys.
        let checked = if events {
            rules::check_event_key(name)
        } else {
            rules::check_key(name)
        };
        if let Err(violation) = checked {
            return Column::BadName(violation.into());
        }
        let (standard, conversion) = if events {
            (None, Conversion::None)
        } else {
            let conversion = match name {
                "Age" => Conversion::Integer,
                "DOB" => Conversion::Date,
                _ if name.starts_with("MSG-") => Conversion::Flag,
                _ => Conversion::None,
            };
            (StandardKey::of(name), conversion)
        };
        Column::Property(PropertyColumn {
            key: json::encoded_key(name),
            standard,
            conversion,
        })
    }
}

impl Mapper {
    /// A mapper for `target`'s records, under CleverTap's default limits, reading local
    /// times in UTC.
    pub fn new(target: Target) -> Self {
        Mapper::for_account(target, AccountLimits::default(), Tz::UTC)
    }

    /// A mapper for `target`'s records to an account with these limits, reading dates and
    /// times without a zone in `zone` (the source's).
    pub fn for_account(target: Target, limits: AccountLimits, zone: Tz) -> Self {
        Mapper {
            target,
            limits,
            zone,
            columns: Vec::new(),
            text: RecordText::default(),
            known_event_name: None,
            last_ts: None,
            notes: Notes::default(),
        }
    }

    /// What it noticed of the records mapped so far.
    pub fn notes(&self) -> &Notes {
        &self.notes
    }

    /// Builds the CleverTap record for a row.
    pub fn map<'a>(&'a mut self, row: &'a Row) -> Result<Record<'a>, Invalid> {
        Ok(match self.target {
            Target::Profiles { array_operation } => {
                self.learn_columns(row);
                profile_record(
                    row,
                    &self.columns,
                    &mut self.text,
                    (array_operation, self.zone),
                )?;
                Record::Upload(UploadRecord::new(RecordKind::Profile, &self.text))
            }
            Target::Events => {
                self.learn_columns(row);
                let ts = event_record(
                    row,
                    &self.columns,
                    &mut self.text,
                    &mut self.known_event_name,
                    (self.limits, self.zone),
                )?;
                if let Some(ts) = ts {
                    if self.last_ts.is_some_and(|last| ts < last) {
                        self.notes.events_out_of_order += 1;
                    }
                    self.last_ts = Some(ts);
                }
                Record::Upload(UploadRecord::new(RecordKind::Event, &self.text))
            }
            Target::DeviceTokens => {
                let token = operations::token_record(row)?;
                if let Some(kind) = token["tokenData"]["type"].as_str()
                    && rules::UNDOCUMENTED_TOKEN_TYPES.contains(&kind)
                {
                    *self
                        .notes
                        .undocumented_token_types
                        .entry(kind.to_string())
                        .or_default() += 1;
                }
                Record::Plain(token)
            }
            Target::Demerge => Record::Plain(operations::demerge_identity(row)?),
            Target::Subscriptions => Record::Plain(operations::subscription_record(row)?),
            Target::DisassociatePhone => Record::Plain(operations::disassociate_record(row)?),
            Target::DeleteProfiles => operations::profile_to_delete(row)?,
            Target::CustomList => Record::Plain(operations::custom_list_entry(row)?),
        })
    }

    /// Makes sure every column of `row` has its role, working out only the new ones.
    fn learn_columns(&mut self, row: &Row) {
        for (index, (name, _)) in row.fields.iter().enumerate() {
            match self.columns.get_mut(index) {
                Some((known, _)) if Arc::ptr_eq(known, name) || known == name => {}
                Some(slot) => *slot = (Arc::clone(name), Column::of(self.target, name)),
                None => self
                    .columns
                    .push((Arc::clone(name), Column::of(self.target, name))),
            }
        }
    }
}

/// Why CleverTap refuses a column of this name as a property of `target`'s records (a
/// forbidden character, too long, ...), if it does: every row with a value there would be
/// invalid. Other targets read only the columns they name.
pub fn column_problem(target: Target, name: &str) -> Option<Invalid> {
    match target {
        Target::Profiles { .. } | Target::Events => match Column::of(target, name) {
            Column::BadName(invalid) => Some(invalid),
            _ => None,
        },
        _ => None,
    }
}

/// Builds the CleverTap record for one row, as JSON (a run maps with a [`Mapper`]).
pub fn map_row(target: Target, row: &Row) -> Result<Value, Invalid> {
    Mapper::new(target).map(row).map(Record::into_json)
}

/// The CleverTap API a target's records go to.
pub fn endpoint(target: Target) -> Endpoint {
    match target {
        Target::Profiles { .. } | Target::Events => Endpoint::UPLOAD,
        Target::DeviceTokens => Endpoint::UPLOAD_TOKENS,
        Target::Demerge => Endpoint::DEMERGE,
        Target::Subscriptions => Endpoint::SUBSCRIBE,
        Target::DisassociatePhone => Endpoint::DISASSOCIATE,
        Target::DeleteProfiles => Endpoint::DELETE_PROFILES,
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
fn put_identity(text: &mut RecordText, field: &'static str, value: &Value) -> Result<(), Invalid> {
    text.push_identity(field, checked_identity(field, value)?);
    Ok(())
}

/// An identity value that meets CleverTap's rules: a string or a number.
fn checked_identity<'a>(field: &str, value: &'a Value) -> Result<&'a Value, Invalid> {
    match value {
        Value::String(identity) => rules::check_identity(field, identity)?,
        Value::Number(number) => rules::check_identity(field, &number.to_string())?,
        other => {
            return Err(Invalid::breaks(
                &rules::IDENTITY,
                format!("`{field}` must be a string or a number, found {other}"),
            ));
        }
    }
    Ok(value)
}

fn parse_ts(value: &Value, zone: Tz) -> Result<i64, Invalid> {
    parse_timestamp(value, zone)
        .map_err(|reason| Invalid::breaks(&rules::TIMESTAMP, format!("`ts` {reason}")))
}

fn missing_identity() -> Invalid {
    Invalid::breaks(
        &rules::IDENTITY,
        "the row has no `identity`, `objectId`, `FBID` or `GPID` value",
    )
}

/// Checks a row as a profile and writes it into `text`.
fn profile_record(
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

/// Checks a row as an event and writes it into `text`.
fn event_record(
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
    if !items.is_empty() {
        if items_column.is_some() {
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
    let has_items = items_column.is_some() || !items.is_empty();
    // [DOC] platform-considerations: `Items` is the Charged event's alone.
    if has_items && !is_charged(event_name) {
        return Err(Invalid::breaks(
            &rules::EVENT_STRUCTURE,
            format!(
                "`Items` belongs only to the Charged event, not to {event_name}; send the items as a Charged event, or leave out the `Items` columns"
            ),
        ));
    }
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
pub fn is_charged(event_name: &Value) -> bool {
    event_name
        .as_str()
        .is_some_and(|name| rules::same_event_name(name, "charged"))
}

/// `Items[3].Name` → `(3, "Name")`.
fn item_column(column: &str) -> Option<(usize, &str)> {
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

#[cfg(test)]
mod tests;
