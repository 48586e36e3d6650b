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
    /// When the fingerprint may be forgotten (seconds since the epoch): events only,
    /// `changes.event_days` after the run that sent it (sent again, it is kept longer).
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
/// profile deletion, `listed_under` is that key and `record` the value listed). An event's
/// fingerprint may be forgotten at `events_expire_at` (seconds since the epoch: the run's
/// start plus `changes.event_days`), whatever its `ts`, so a backfill of old events is
/// deduplicated as well as today's. `None` for a record that cannot be told apart from a
/// later identical one (an event without `ts`): it is always sent.
pub fn fingerprint(
    target: Target,
    record: &[u8],
    listed_under: Option<&str>,
    events_expire_at: i64,
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
                key: keyed(&[name.as_bytes(), value.0.as_bytes()]),
                content,
                expires_at: None,
            })
        }
        // The whole event is its key: a repeated event is the same event.
        Target::Events => {
            let event: EventKeys = serde_json::from_slice(record).ok()?;
            event.ts?;
            whole(Some(events_expire_at))
        }
        Target::DeviceTokens => {
            let token: TokenKeys<'_> = serde_json::from_slice(record).ok()?;
            Some(RecordFingerprint {
                key: keyed(&[
                    token.object_id.0.as_bytes(),
                    token.token_data.id.0.as_bytes(),
                ]),
                content,
                expires_at: None,
            })
        }
        Target::Subscriptions => {
            let subscription: SubscriptionKeys<'_> = serde_json::from_slice(record).ok()?;
            Some(RecordFingerprint {
                key: keyed(&[
                    subscription.kind.0.as_bytes(),
                    subscription.value.0.as_bytes(),
                ]),
                content,
                expires_at: None,
            })
        }
        // Done once, done: the record is its own key.
        _ => whole(None),
    }
}

/// When the fingerprints of the events a run sends may be forgotten: `event_days` after
/// `sent_at` (seconds since the epoch).
pub fn events_expire_at(sent_at: i64, event_days: u32) -> i64 {
    sent_at.saturating_add(i64::from(event_days) * DAY)
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

/// A value that names a thing (an identity, an address, a token): text, or a number as
/// JSON writes it (an identity read from JSON Lines or a query may be one), read without
/// copying text that needs no unescaping.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(text.to_string())))
            }
            fn visit_i64<E>(self, number: i64) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(number.to_string())))
            }
            fn visit_u64<E>(self, number: u64) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(number.to_string())))
            }
            fn visit_f64<E>(self, number: f64) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(number.to_string())))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A profile's identity fields, read without copying the rest of the record.
#[derive(Deserialize)]
struct ProfileKeys<'a> {
    #[serde(borrow, default)]
    identity: Option<Name<'a>>,
    #[serde(borrow, default, rename = "objectId")]
    object_id: Option<Name<'a>>,
    #[serde(borrow, default, rename = "FBID")]
    fbid: Option<Name<'a>>,
    #[serde(borrow, default, rename = "GPID")]
    gpid: Option<Name<'a>>,
}

#[derive(Deserialize)]
struct EventKeys {
    #[serde(default)]
    ts: Option<i64>,
}

#[derive(Deserialize)]
struct TokenKeys<'a> {
    #[serde(borrow, rename = "objectId")]
    object_id: Name<'a>,
    #[serde(borrow, rename = "tokenData")]
    token_data: TokenId<'a>,
}

#[derive(Deserialize)]
struct TokenId<'a> {
    #[serde(borrow)]
    id: Name<'a>,
}

#[derive(Deserialize)]
struct SubscriptionKeys<'a> {
    #[serde(borrow, rename = "type")]
    kind: Name<'a>,
    #[serde(borrow)]
    value: Name<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::ArrayOperation;

    const PROFILES: Target = Target::Profiles {
        array_operation: ArrayOperation::Replace,
    };
    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_numeric_identity_is_a_key_like_its_text() {
        let numeric = fingerprint(
            PROFILES,
            br#"{"type":"profile","identity":12345,"profileData":{"Plan":"gold"}}"#,
            None,
            NOW,
        )
        .expect("a profile with a numeric identity has a fingerprint");
        let text = fingerprint(
            PROFILES,
            br#"{"type":"profile","identity":"12345","profileData":{"Plan":"gold"}}"#,
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(numeric.key, text.key);
        let token = fingerprint(
            Target::DeviceTokens,
            br#"{"type":"token","objectId":77,"tokenData":{"id":"t1","type":"fcm"}}"#,
            None,
            NOW,
        );
        assert!(token.is_some(), "a numeric objectId is a key too");
        let subscription = fingerprint(
            Target::Subscriptions,
            br#"{"type":"phone","value":14155550100,"status":"Unsubscribe"}"#,
            None,
            NOW,
        );
        assert!(subscription.is_some(), "a numeric phone is a key too");
    }

    #[test]
    fn a_profile_is_keyed_by_its_identity_and_hashed_as_sent() {
        let first = fingerprint(
            PROFILES,
            br#"{"type":"profile","identity":"u1","profileData":{"Plan":"gold"}}"#,
            None,
            NOW,
        )
        .unwrap();
        let changed = fingerprint(
            PROFILES,
            br#"{"type":"profile","identity":"u1","profileData":{"Plan":"silver"}}"#,
            None,
            NOW,
        )
        .unwrap();
        let other = fingerprint(
            PROFILES,
            br#"{"type":"profile","identity":"u2","profileData":{"Plan":"gold"}}"#,
            None,
            NOW,
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
            NOW,
        )
        .unwrap();
        assert_ne!(first.key, by_object.key);
        assert_eq!(first.expires_at, None);
    }

    #[test]
    fn an_event_is_its_own_key_and_expires_its_days_after_it_was_sent() {
        let event =
            br#"{"type":"event","identity":"u1","ts":1000,"evtName":"Viewed","evtData":{}}"#;
        // Sent now, a year after its `ts`: kept for its days from now.
        let sent_at = 1000 + 365 * DAY;
        let print = fingerprint(Target::Events, event, None, events_expire_at(sent_at, 2)).unwrap();
        assert_eq!(print.key, keyed(&[b"", event]));
        assert_eq!(print.expires_at, Some(sent_at + 2 * DAY));
        let no_ts = br#"{"type":"event","identity":"u1","evtName":"Viewed","evtData":{}}"#;
        assert_eq!(fingerprint(Target::Events, no_ts, None, NOW), None);
    }

    #[test]
    fn a_subscription_is_keyed_by_its_address_and_a_token_by_its_device() {
        let unsubscribe = br#"{"type":"email","value":"a@b.co","status":"Unsubscribe"}"#;
        let resubscribe = br#"{"type":"email","value":"a@b.co","status":"Resubscribe"}"#;
        let one = fingerprint(Target::Subscriptions, unsubscribe, None, NOW).unwrap();
        let two = fingerprint(Target::Subscriptions, resubscribe, None, NOW).unwrap();
        assert_eq!(one.key, two.key);
        assert_ne!(one.content, two.content);
        let token = |data: &str| {
            format!(
                r#"{{"type":"token","objectId":"o1","tokenData":{{"id":"t1","type":"fcm"{data}}}}}"#
            )
        };
        let plain = fingerprint(Target::DeviceTokens, token("").as_bytes(), None, NOW).unwrap();
        let keys = fingerprint(
            Target::DeviceTokens,
            token(r#","keys":{"auth":"x"}"#).as_bytes(),
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(plain.key, keys.key);
        assert_ne!(plain.content, keys.content);
    }

    #[test]
    fn a_value_listed_under_a_key_is_told_apart_by_its_key() {
        let by_identity = fingerprint(Target::DeleteProfiles, br#""u1""#, Some("identity"), NOW);
        let by_guid = fingerprint(Target::DeleteProfiles, br#""u1""#, Some("guid"), NOW);
        assert_ne!(by_identity.unwrap().key, by_guid.unwrap().key);
    }
}
