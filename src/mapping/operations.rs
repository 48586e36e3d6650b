//! Rows → records of the profile operations other than uploads: device tokens, demerge,
//! subscriptions, phone disassociation (docs/clevertap-api.md §3–§6) and profile deletion
//! (Corrections 6).

use crate::outcome::Code;
use serde_json::{Map, Value, json};

use super::{Invalid, Record, is_blank};
use crate::clevertap::rules::{self, Rule};
use crate::source::Row;

/// The text of a column exactly as the source has it, `None` when the column is missing or
/// blank. Identities (and addresses, tokens, keys) are never trimmed, here as in uploads:
/// CleverTap documents no normalisation of identity values (upload-user-profiles-api,
/// delete-user-profile-api, demerge-user-profile-api), so `" alice"` and `alice` are two
/// profiles, and a deletion must name the one the upload made.
fn text(row: &Row, column: &str) -> Result<Option<String>, Invalid> {
    let Some((_, value)) = row.fields.iter().find(|(name, _)| &**name == column) else {
        return Ok(None);
    };
    match value {
        value if is_blank(value) => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        Value::Number(number) => Ok(Some(number.to_string())),
        other => Err(Invalid::new(
            Code::InvalidRecord,
            format!("`{column}` must be text, found {other}"),
        )),
    }
}

/// A column that holds one of a few words (`type`, `status`), trimmed: what is sent is the
/// word it names, never this text.
fn word(row: &Row, column: &str) -> Result<Option<String>, Invalid> {
    Ok(text(row, column)?.map(|text| text.trim().to_string()))
}

/// The text of a column the rule asks for.
fn required(row: &Row, column: &str, rule: &'static Rule) -> Result<String, Invalid> {
    text(row, column)?
        .ok_or_else(|| Invalid::breaks(rule, format!("the row has no `{column}` value")))
}

/// `{"type":"token","objectId":…,"tokenData":{"id","type","keys"?}}`.
pub(super) fn token_record(row: &Row) -> Result<Value, Invalid> {
    let object_id = required(row, "objectId", &rules::TOKEN_OBJECT_ID)?;
    rules::check_identity("objectId", &object_id)
        .map_err(|v| Invalid::breaks(&rules::TOKEN_OBJECT_ID, v.message))?;
    let id = required(row, "id", &rules::TOKEN_ID)?;
    let token_type = word(row, "type")?
        .ok_or_else(|| Invalid::breaks(&rules::TOKEN_TYPE, "the row has no `type` value"))?
        .to_lowercase();
    // The documented types, and those RudderStack sends (the run warns of these).
    if !rules::TOKEN_TYPES.contains(&token_type.as_str())
        && !rules::UNDOCUMENTED_TOKEN_TYPES.contains(&token_type.as_str())
    {
        return Err(Invalid::breaks(
            &rules::TOKEN_TYPE_KNOWN,
            format!(
                "token `type` `{token_type}` is not one of {} (the API's), nor {}",
                rules::TOKEN_TYPES.join(", "),
                rules::UNDOCUMENTED_TOKEN_TYPES.join(", ")
            ),
        ));
    }
    let mut token = Map::new();
    token.insert("id".into(), Value::from(id));
    token.insert("type".into(), Value::from(token_type.clone()));
    let (p256dh, auth) = (text(row, "p256dh")?, text(row, "auth")?);
    match (token_type.as_str(), p256dh, auth) {
        ("chrome", Some(p256dh), Some(auth)) => {
            token.insert("keys".into(), json!({"p256dh": p256dh, "auth": auth}));
        }
        ("chrome", _, _) => {
            return Err(Invalid::breaks(
                &rules::TOKEN_KEYS,
                "a chrome token needs both `p256dh` and `auth` (its web push keys)",
            ));
        }
        (_, None, None) => {}
        (other, _, _) => {
            return Err(Invalid::breaks(
                &rules::TOKEN_KEYS,
                format!("`p256dh` and `auth` apply only to chrome tokens, not `{other}`"),
            ));
        }
    }
    Ok(json!({"type": "token", "objectId": object_id, "tokenData": token}))
}

/// The identity to demerge, as a string.
pub(super) fn demerge_identity(row: &Row) -> Result<Value, Invalid> {
    let identity = required(row, "identity", &rules::IDENTITY)?;
    rules::check_identity("identity", &identity)?;
    Ok(Value::from(identity))
}

/// The profile to delete: `{"identity": …}` or `{"guid": …}` (its CleverTap ID), from a row
/// that fills one of the two columns.
pub(super) fn profile_to_delete(row: &Row) -> Result<Record<'static>, Invalid> {
    let (key, value) = match (text(row, "identity")?, text(row, "guid")?) {
        (Some(identity), None) => ("identity", identity),
        (None, Some(guid)) => ("guid", guid),
        (Some(_), Some(_)) => {
            return Err(Invalid::breaks(
                &rules::DELETION,
                "the row has both `identity` and `guid`; CleverTap deletes by one of them, so leave the other empty",
            ));
        }
        (None, None) => {
            return Err(Invalid::breaks(
                &rules::IDENTITY,
                "the row has no `identity` or `guid` value",
            ));
        }
    };
    rules::check_identity(key, &value)?;
    Ok(Record::Keyed {
        key,
        value: Value::from(value),
    })
}

/// `{"type":"email"|"phone","value":…,"status":"Unsubscribe"|"Resubscribe"}`.
pub(super) fn subscription_record(row: &Row) -> Result<Value, Invalid> {
    let kind = word(row, "type")?
        .ok_or_else(|| Invalid::breaks(&rules::SUBSCRIPTION, "the row has no `type` value"))?
        .to_lowercase();
    let value = required(row, "value", &rules::SUBSCRIPTION)?;
    let status = match word(row, "status")?
        .ok_or_else(|| Invalid::breaks(&rules::SUBSCRIPTION, "the row has no `status` value"))?
        .to_lowercase()
        .as_str()
    {
        "unsubscribe" => "Unsubscribe",
        "resubscribe" => "Resubscribe",
        other => {
            return Err(Invalid::breaks(
                &rules::SUBSCRIPTION,
                format!("`status` `{other}` must be `Unsubscribe` or `Resubscribe`"),
            ));
        }
    };
    match kind.as_str() {
        "email" if !rules::is_email(&value) => {
            return Err(Invalid::breaks(
                &rules::EMAIL,
                format!("`{value}` is not a valid email address"),
            ));
        }
        "phone" if !rules::is_e164(&value) => return Err(phone_invalid(&value)),
        "email" | "phone" => {}
        other => {
            return Err(Invalid::breaks(
                &rules::SUBSCRIPTION,
                format!("`type` `{other}` must be `email` or `phone`"),
            ));
        }
    }
    Ok(json!({"type": kind, "value": value, "status": status}))
}

/// `{"type":"phone","value":…}`.
pub(super) fn disassociate_record(row: &Row) -> Result<Value, Invalid> {
    let value = required(row, "value", &rules::DISASSOCIATION)?;
    if !rules::is_e164(&value) {
        return Err(phone_invalid(&value));
    }
    Ok(json!({"type": "phone", "value": value}))
}

fn phone_invalid(value: &str) -> Invalid {
    Invalid::breaks(
        &rules::PHONE,
        format!(
            "`{value}` is not a valid phone number; use E.164: `+` then country code and number"
        ),
    )
}

/// A custom-list entry: `{"type": "i"|"g", "identity": …}`. A row without an identity is an
/// `empty_row`, which a custom list skips whatever `skip_invalid_records` says. The CSV line
/// is made by [`custom_list_line`].
pub(super) fn custom_list_entry(row: &Row) -> Result<Value, Invalid> {
    let identity = text(row, "identity")?
        .ok_or_else(|| Invalid::new(Code::EmptyRow, "the row has no `identity` value"))?;
    let kind = match word(row, "type")?
        .map(|kind| kind.to_lowercase())
        .as_deref()
    {
        None | Some("i") => "i",
        Some("g") => "g",
        Some(other) => {
            return Err(Invalid::new(
                Code::InvalidRecord,
                format!("`type` `{other}` must be `i` (identity) or `g` (CleverTap ID)"),
            ));
        }
    };
    if identity.contains(['\n', '\r']) {
        return Err(Invalid::new(
            Code::InvalidRecord,
            "an identity cannot span lines",
        ));
    }
    Ok(json!({"type": kind, "identity": identity}))
}

/// The `Type,Identity` CSV line of a custom-list entry, quoted where needed.
pub fn custom_list_line(entry: &Value) -> String {
    let kind = entry["type"].as_str().unwrap_or("i");
    let identity = entry["identity"].as_str().unwrap_or_default();
    // Quoted too when its edges are spaces, so no CSV reader trims them.
    if identity.contains([',', '"']) || identity.trim() != identity {
        format!("{kind},\"{}\"\n", identity.replace('"', "\"\""))
    } else {
        format!("{kind},{identity}\n")
    }
}
