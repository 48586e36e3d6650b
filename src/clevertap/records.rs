//! How CleverTap judges one uploaded record, with its rules and error codes: the sandbox
//! answers with it, and `tapline replay` checks hand-edited records with it before sending.

use std::collections::HashSet;

use serde_json::Value;

use crate::clevertap::rules::{self, Violation};

/// The kind of a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// `type: profile`.
    Profile,
    /// `type: event`.
    Event,
    /// `type: token`.
    Token,
}

impl RecordKind {
    /// Its `type` in the record.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Profile => "profile",
            RecordKind::Event => "event",
            RecordKind::Token => "token",
        }
    }
}

/// Checks a record as CleverTap would, returning its kind or the violation.
pub fn check_record(
    record: &Value,
    discarded_events: &HashSet<String>,
    max_event_properties: usize,
) -> Result<RecordKind, Violation> {
    let Value::Object(fields) = record else {
        return Err(rules::RECORD_TYPE.broken("Record is neither an event nor a profile"));
    };
    let kind = match fields.get("type").and_then(Value::as_str) {
        Some("profile") => RecordKind::Profile,
        Some("event") => RecordKind::Event,
        Some("token") => RecordKind::Token,
        _ => {
            return Err(rules::RECORD_TYPE.broken("Record type should be either event or profile"));
        }
    };
    check_identity(fields, kind)?;
    if let Some(ts) = fields.get("ts")
        && ts.as_i64().is_none_or(|seconds| seconds <= 0)
    {
        return Err(rules::TIMESTAMP.broken("Timestamp should be present in the Unix Epoch format"));
    }
    match kind {
        RecordKind::Profile => check_profile(fields.get("profileData"))?,
        RecordKind::Event => check_event(
            fields.get("evtName"),
            fields.get("evtData"),
            discarded_events,
            max_event_properties,
        )?,
        RecordKind::Token => check_token(fields.get("tokenData"))?,
    }
    Ok(kind)
}

fn check_identity(
    fields: &serde_json::Map<String, Value>,
    kind: RecordKind,
) -> Result<(), Violation> {
    let missing = "'identity' or 'fbId' or 'gpId' or 'objectId' is necessary under 120 chars to identify the user";
    if kind == RecordKind::Token {
        return match fields.get("objectId").and_then(Value::as_str) {
            Some(id) if !id.trim().is_empty() && id.len() < rules::MAX_IDENTITY_CHARS => Ok(()),
            _ => Err(rules::TOKEN_OBJECT_ID.broken("objectId is invalid")),
        };
    }
    let mut found = false;
    for field in rules::IDENTITY_FIELDS {
        let Some(value) = fields.get(field) else {
            continue;
        };
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            _ => return Err(rules::IDENTITY.broken(missing)),
        };
        if text.trim().is_empty() || text.chars().count() >= rules::MAX_IDENTITY_CHARS {
            return Err(rules::IDENTITY.broken(missing));
        }
        found = true;
    }
    if found {
        Ok(())
    } else {
        Err(rules::IDENTITY.broken(missing))
    }
}

fn check_profile(data: Option<&Value>) -> Result<(), Violation> {
    let Some(Value::Object(data)) = data else {
        return Err(
            rules::RECORD_TYPE.broken("Profile data is incorrect. profileData must be an object")
        );
    };
    for (key, value) in data {
        if let Err(violation) = rules::check_standard_profile_key(key, value)
            && violation.code != 0
        {
            return Err(violation
                .rule
                .broken(format!("Profile data is incorrect. {}", violation.message)));
        }
        if let Value::Object(command) = value {
            let known = command.len() == 1
                && command.iter().all(|(name, values)| {
                    matches!(name.as_str(), "$add" | "$remove" | "$set")
                        && values
                            .as_array()
                            .is_some_and(|v| v.iter().all(Value::is_string))
                        || matches!(name.as_str(), "$incr" | "$decr") && values.is_number()
                });
            if !known {
                return Err(rules::PROFILE_COMMAND.broken(format!(
                        "Profile data is incorrect. `{key}` holds an object that is not a property command"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_event(
    name: Option<&Value>,
    data: Option<&Value>,
    discarded: &HashSet<String>,
    max_properties: usize,
) -> Result<(), Violation> {
    let name = match name.and_then(Value::as_str) {
        Some(name) if !name.trim().is_empty() => name,
        _ => {
            return Err(rules::EVENT_NAME
                .broken("Event Name is incorrect. ErrorCode: 509 - Event name is mandatory"));
        }
    };
    rules::check_event_name(name).map_err(|violation| {
        violation
            .rule
            .broken(format!("Invalid event name: {}", violation.message))
    })?;
    if rules::is_reserved_event(name) {
        return Err(rules::SYSTEM_EVENT.broken(
            "Event Name is incorrect. ErrorCode: 513 - Trying to raise a restricted system event",
        ));
    }
    if discarded.contains(&rules::normalize_event_name(name)) {
        return Err(rules::DISCARDED_EVENT
            .broken("Event Name is incorrect. ErrorCode: 528 - Discarded event is raised"));
    }
    let Some(data) = data else { return Ok(()) };
    let Value::Object(data) = data else {
        return Err(
            rules::EVENT_STRUCTURE.broken("Invalid event structure: evtData must be an object")
        );
    };
    if data.len() > max_properties {
        return Err(rules::EVENT_PROPERTIES.broken("Too many event properties"));
    }
    let charged = rules::normalize_event_name(name) == "charged";
    for (key, value) in data {
        let allowed = match value {
            // [DOC] platform-considerations: only the Charged event has `Items`.
            Value::Array(items) => {
                charged
                    && key == "Items"
                    && items.len() <= rules::MAX_CHARGED_ITEMS
                    && items.iter().all(Value::is_object)
            }
            Value::Object(_) => false,
            _ => true,
        };
        if !allowed {
            return Err(rules::EVENT_STRUCTURE.broken(format!(
                "Invalid event structure: `{key}` must be a plain value"
            )));
        }
    }
    Ok(())
}

fn check_token(data: Option<&Value>) -> Result<(), Violation> {
    let Some(Value::Object(data)) = data else {
        return Err(rules::TOKEN_DATA.broken("Invalid token data"));
    };
    if data
        .get("id")
        .and_then(Value::as_str)
        .is_none_or(|id| id.is_empty())
    {
        return Err(rules::TOKEN_ID.broken("Token id is missing"));
    }
    let Some(token_type) = data.get("type").and_then(Value::as_str) else {
        return Err(rules::TOKEN_TYPE.broken("Token type is missing"));
    };
    if !rules::TOKEN_TYPES.contains(&token_type)
        && !rules::UNDOCUMENTED_TOKEN_TYPES.contains(&token_type)
    {
        return Err(
            rules::TOKEN_TYPE_KNOWN.broken(format!("Token type `{token_type}` is not valid"))
        );
    }
    if let Some(keys) = data.get("keys") {
        let complete = keys.get("p256dh").and_then(Value::as_str).is_some()
            && keys.get("auth").and_then(Value::as_str).is_some();
        if token_type != "chrome" || !complete {
            return Err(rules::TOKEN_KEYS.broken(
                "Invalid token data: `keys` needs `p256dh` and `auth`, for chrome tokens only",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn judges_records_like_clevertap() {
        let discarded: HashSet<String> = [rules::normalize_event_name("Old Event")].into();
        let cases = [
            (
                json!({"type": "profile", "identity": "u", "profileData": {"Name": "x"}}),
                Ok(RecordKind::Profile),
            ),
            (
                json!({"type": "profile", "identity": "u", "profileData": {"Tags": {"$add": ["a"]}}}),
                Ok(RecordKind::Profile),
            ),
            (
                json!({"type": "profile", "identity": "u", "profileData": {"Tags": {"$weird": 1}}}),
                Err(512),
            ),
            (json!({"type": "profile", "profileData": {}}), Err(523)),
            (
                json!({"type": "profile", "identity": "x".repeat(120), "profileData": {}}),
                Err(523),
            ),
            (
                json!({"type": "profile", "identity": "u", "profileData": {"Email": "$$$"}}),
                Err(515),
            ),
            (
                json!({"type": "profile", "identity": "u", "profileData": {"Gender": "X"}}),
                Err(514),
            ),
            (
                json!({"type": "profile", "identity": "u", "ts": 0, "profileData": {}}),
                Err(525),
            ),
            (json!({"type": "thing", "identity": "u"}), Err(524)),
            (
                json!({"type": "event", "identity": "u", "evtName": "Viewed", "evtData": {}}),
                Ok(RecordKind::Event),
            ),
            (
                json!({"type": "event", "identity": "u", "evtData": {}}),
                Err(509),
            ),
            (
                json!({"type": "event", "identity": "u", "evtName": "App Launched"}),
                Err(513),
            ),
            (
                json!({"type": "event", "identity": "u", "evtName": "old event"}),
                Err(528),
            ),
            (
                json!({"type": "event", "identity": "u", "evtName": "x", "evtData": {"a": [1]}}),
                Err(512),
            ),
            (
                json!({"type": "event", "identity": "u", "evtName": "Charged", "evtData": {"Items": [{"a": 1}]}}),
                Ok(RecordKind::Event),
            ),
            (
                json!({"type": "token", "objectId": "g", "tokenData": {"id": "t", "type": "fcm"}}),
                Ok(RecordKind::Token),
            ),
            (
                json!({"type": "token", "identity": "u", "tokenData": {"id": "t", "type": "fcm"}}),
                Err(530),
            ),
            (
                json!({"type": "token", "objectId": "g", "tokenData": {"type": "fcm"}}),
                Err(532),
            ),
            (
                json!({"type": "token", "objectId": "g", "tokenData": {"id": "t"}}),
                Err(533),
            ),
            (
                json!({"type": "token", "objectId": "g", "tokenData": {"id": "t", "type": "sms"}}),
                Err(534),
            ),
            (
                json!({"type": "token", "objectId": "g", "tokenData": {"id": "t", "type": "fcm", "keys": {"p256dh": "a", "auth": "b"}}}),
                Err(535),
            ),
            (json!("not an object"), Err(524)),
            (
                json!({"type": "event", "identity": "u", "evtName": "a.b"}),
                Err(512),
            ),
            (
                json!({"type": "event", "identity": "u", "evtName": "Order #5"}),
                Ok(RecordKind::Event),
            ),
        ];
        for (record, expected) in cases {
            assert_eq!(
                check_record(&record, &discarded, rules::DEFAULT_EVENT_PROPERTIES)
                    .map_err(|v| v.code),
                expected,
                "{record}"
            );
        }
    }
}
