//! Change detection for `send: changes`: each record gets a fingerprint — a key saying which
//! thing it is about (a profile's identity, a subscription's address, a whole event) and a
//! hash of the record exactly as it would be sent — and a record whose key CleverTap already
//! accepted with the same content is not sent again.
//!
//! Fingerprints are 64-bit xxh3 hashes (not secrets; collisions are as likely as one in
//! 2^64 per pair). They are written only for records CleverTap accepted, by the state store, in
//! the checkpoint's transaction; this module only computes them (pure).

use serde::Deserialize;
use std::borrow::Cow;

use crate::config::model::Target;

/// What the state store keeps of one record CleverTap accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordFingerprint {
    /// Which thing the record is about: the same key, sent again, replaces the thing.
    pub key: u64,
    /// The record as sent.
    pub content: u64,
    /// When the fingerprint may be forgotten (seconds since the epoch): events only, `ts`
    /// plus `changes.event_days`.
    pub expires_at: Option<i64>,
}

/// The fingerprints CleverTap accepted in earlier runs of a pipeline to a destination.
pub trait KnownFingerprints: Send {
    /// Whether the content last accepted under `key` is `content`: CleverTap has this very
    /// record.
    fn holds(&mut self, key: u64, content: u64) -> Result<bool, String>;
}

/// Seconds in a day.
const DAY: i64 = 86_400;

/// The fingerprint of a record as sent (`record` is its JSON text; for a body by key, such as
/// profile deletion, `listed_under` is that key and `record` the value listed). `None` for a
/// record that cannot be told apart from a later identical one (an event without `ts`): it
/// is always sent.
pub fn fingerprint(
    target: Target,
    record: &[u8],
    listed_under: Option<&str>,
    event_days: u32,
) -> Option<RecordFingerprint> {
    let content = xxhash_rust::xxh3::xxh3_64(record);
    let whole = |expires_at| {
        Some(RecordFingerprint {
            key: keyed(&[listed_under.unwrap_or_default().as_bytes(), record]),
            content,
            expires_at,
        })
    };
    match target {
        Target::Profiles { .. } => {
            let keys: ProfileKeys<'_> = serde_json::from_slice(record).ok()?;
            let (name, value) = [
                ("identity", keys.identity),
                ("objectId", keys.object_id),
                ("FBID", keys.fbid),
                ("GPID", keys.gpid),
            ]
            .into_iter()
            .find_map(|(name, value)| Some((name, value?)))?;
            Some(RecordFingerprint {
                key: keyed(&[name.as_bytes(), value.as_bytes()]),
                content,
                expires_at: None,
            })
        }
        // The whole event is its key: a repeated event is the same event.
        Target::Events => {
            let event: EventKeys = serde_json::from_slice(record).ok()?;
            let ts = event.ts?;
            whole(Some(ts.saturating_add(i64::from(event_days) * DAY)))
        }
        Target::DeviceTokens => {
            let token: TokenKeys<'_> = serde_json::from_slice(record).ok()?;
            Some(RecordFingerprint {
                key: keyed(&[token.object_id.as_bytes(), token.token_data.id.as_bytes()]),
                content,
                expires_at: None,
            })
        }
        Target::Subscriptions => {
            let subscription: SubscriptionKeys<'_> = serde_json::from_slice(record).ok()?;
            Some(RecordFingerprint {
                key: keyed(&[subscription.kind.as_bytes(), subscription.value.as_bytes()]),
                content,
                expires_at: None,
            })
        }
        // Done once, done: the record is its own key.
        _ => whole(None),
    }
}

/// The key of a whole custom list (one per segment name): its content is the list's CSV.
pub fn custom_list_key(segment: &str) -> u64 {
    keyed(&[b"custom_list", segment.as_bytes()])
}

/// One hash of several parts, each ended by a byte no JSON text or UTF-8 name holds alone.
fn keyed(parts: &[&[u8]]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(part);
        hasher.update(&[0xff]);
    }
    hasher.digest()
}

/// A profile's identity fields, read without copying the rest of the record.
#[derive(Deserialize)]
struct ProfileKeys<'a> {
    #[serde(borrow, default)]
    identity: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "objectId")]
    object_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "FBID")]
    fbid: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "GPID")]
    gpid: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct EventKeys {
    #[serde(default)]
    ts: Option<i64>,
}

#[derive(Deserialize)]
struct TokenKeys<'a> {
    #[serde(borrow, rename = "objectId")]
    object_id: Cow<'a, str>,
    #[serde(rename = "tokenData")]
    token_data: TokenId<'a>,
}

#[derive(Deserialize)]
struct TokenId<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct SubscriptionKeys<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    value: Cow<'a, str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::ArrayOperation;

    const PROFILES: Target = Target::Profiles {
        array_operation: ArrayOperation::Replace,
    };

    #[test]
    fn a_profile_is_keyed_by_its_identity_and_hashed_as_sent() {
        let first = fingerprint(
            PROFILES,
            br#"{"type":"profile","identity":"u1","profileData":{"Plan":"gold"}}"#,
            None,
            90,
        )
        .unwrap();
        let changed = fingerprint(
            PROFILES,
            br#"{"type":"profile","identity":"u1","profileData":{"Plan":"silver"}}"#,
            None,
            90,
        )
        .unwrap();
        let other = fingerprint(
            PROFILES,
            br#"{"type":"profile","identity":"u2","profileData":{"Plan":"gold"}}"#,
            None,
            90,
        )
        .unwrap();
        assert_eq!(first.key, changed.key);
        assert_ne!(first.content, changed.content);
        assert_ne!(first.key, other.key);
        // The same value under another identity field is another profile.
        let by_object = fingerprint(
            PROFILES,
            br#"{"type":"profile","objectId":"u1","profileData":{}}"#,
            None,
            90,
        )
        .unwrap();
        assert_ne!(first.key, by_object.key);
        assert_eq!(first.expires_at, None);
    }

    #[test]
    fn an_event_is_its_own_key_and_expires_after_its_days() {
        let event =
            br#"{"type":"event","identity":"u1","ts":1000,"evtName":"Viewed","evtData":{}}"#;
        let print = fingerprint(Target::Events, event, None, 2).unwrap();
        assert_eq!(print.key, keyed(&[b"", event]));
        assert_eq!(print.expires_at, Some(1000 + 2 * DAY));
        let no_ts = br#"{"type":"event","identity":"u1","evtName":"Viewed","evtData":{}}"#;
        assert_eq!(fingerprint(Target::Events, no_ts, None, 90), None);
    }

    #[test]
    fn a_subscription_is_keyed_by_its_address_and_a_token_by_its_device() {
        let unsubscribe = br#"{"type":"email","value":"a@b.co","status":"Unsubscribe"}"#;
        let resubscribe = br#"{"type":"email","value":"a@b.co","status":"Resubscribe"}"#;
        let one = fingerprint(Target::Subscriptions, unsubscribe, None, 90).unwrap();
        let two = fingerprint(Target::Subscriptions, resubscribe, None, 90).unwrap();
        assert_eq!(one.key, two.key);
        assert_ne!(one.content, two.content);
        let token = |data: &str| {
            format!(
                r#"{{"type":"token","objectId":"o1","tokenData":{{"id":"t1","type":"fcm"{data}}}}}"#
            )
        };
        let plain = fingerprint(Target::DeviceTokens, token("").as_bytes(), None, 90).unwrap();
        let keys = fingerprint(
            Target::DeviceTokens,
            token(r#","keys":{"auth":"x"}"#).as_bytes(),
            None,
            90,
        )
        .unwrap();
        assert_eq!(plain.key, keys.key);
        assert_ne!(plain.content, keys.content);
    }

    #[test]
    fn a_value_listed_under_a_key_is_told_apart_by_its_key() {
        let by_identity = fingerprint(Target::DeleteProfiles, br#""u1""#, Some("identity"), 90);
        let by_guid = fingerprint(Target::DeleteProfiles, br#""u1""#, Some("guid"), 90);
        assert_ne!(by_identity.unwrap().key, by_guid.unwrap().key);
    }
}
