//! Source rows → CleverTap records, checked against CleverTap's rules before anything is sent.
//!
//! Pure functions of their input: no IO, no clock. A row that breaks a rule becomes an
//! [`Invalid`] naming the column, the value and CleverTap's error code for it.

mod events;
mod json;
mod operations;
pub use operations::custom_list_line;
pub mod output;
mod profiles;
mod record;
pub mod replay;
mod time;

use std::sync::Arc;

use serde_json::Value;

use events::{event_record, item_column};
use profiles::profile_record;
pub use record::{Record, UploadRecord};
use record::{RecordKind, RecordText};
pub use time::{parse_date, parse_timestamp};

use crate::clevertap::rules::{self, Rule, StandardKey, Violation};
use crate::clevertap::wire::{DELETE_KEYS, Endpoint};
use crate::config::model::{AccountLimits, Target};
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

#[cfg(test)]
mod tests;
