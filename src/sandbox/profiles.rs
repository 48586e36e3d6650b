//! The profile store: profiles merged as CleverTap merges them, multi-value commands
//! included, for inspection.

use serde_json::Value;

use crate::clevertap::rules;

use super::{Store, clevertap_id};

/// The identity a profile or event record names: the first identity field it has.
pub(super) fn identity_key(record: &Value) -> Option<String> {
    rules::IDENTITY_FIELDS.iter().find_map(|field| {
        record
            .get(*field)
            .map(|value| value.to_string().trim_matches('"').to_string())
    })
}

/// Applies a profile record to the stored profile, as CleverTap does with multi-values.
pub(super) fn merge_profile(store: &mut Store, record: &Value) {
    let Some(key) = identity_key(record) else {
        return;
    };
    if !store.profiles.contains_key(&key) {
        store
            .identities_by_guid
            .insert(clevertap_id(&key), key.clone());
    }
    let profile = store.profiles.entry(key).or_default();
    let Some(data) = record.get("profileData").and_then(Value::as_object) else {
        return;
    };
    for (name, value) in data {
        let command = value.as_object().and_then(|object| object.iter().next());
        match command {
            Some((operation, Value::Array(values)))
                if operation == "$add" || operation == "$remove" =>
            {
                let mut current: Vec<Value> = match profile.get(name) {
                    Some(Value::Array(existing)) => existing.clone(),
                    Some(Value::Null) | None => Vec::new(),
                    Some(scalar) => vec![Value::String(
                        scalar.to_string().trim_matches('"').to_string(),
                    )],
                };
                if operation == "$add" {
                    for value in values {
                        if !current.contains(value) {
                            current.push(value.clone());
                        }
                    }
                } else {
                    current.retain(|existing| !values.contains(existing));
                }
                if current.is_empty() {
                    profile.remove(name);
                } else {
                    profile.insert(name.clone(), Value::Array(current));
                }
            }
            Some((operation, values)) if operation == "$set" => {
                profile.insert(name.clone(), values.clone());
            }
            _ => {
                profile.insert(name.clone(), value.clone());
            }
        }
    }
}
