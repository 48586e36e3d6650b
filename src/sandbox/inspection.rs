//! What the sandbox saw, for tests and people: counts, records, profiles, and a reset.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::clevertap::records::RecordKind;
use crate::clevertap::wire::Endpoint;

use super::{Inspection, Shared, Store, StoredProfile, clevertap_id};

pub(super) fn snapshot(shared: &Shared) -> Inspection {
    let store = shared.store();
    let mut inspection = store.inspection.clone();
    inspection.requests = shared.requests.load(Ordering::SeqCst);
    inspection.max_in_flight_by_api = shared
        .limiters
        .iter()
        .map(|(name, limiter)| (name.to_string(), limiter.max_seen.load(Ordering::SeqCst)))
        .collect();
    inspection.max_in_flight = inspection
        .max_in_flight_by_api
        .get(Endpoint::UPLOAD.name)
        .copied()
        .unwrap_or(0);
    inspection.distinct_profiles = store.profiles.len();
    inspection
}

pub(super) async fn inspect(State(shared): State<Arc<Shared>>) -> Json<Inspection> {
    Json(snapshot(&shared))
}

#[derive(Deserialize)]
pub(super) struct RecordsQuery {
    /// `?type=profile`, `event` or `token` (anything else is refused).
    #[serde(rename = "type")]
    kind: Option<RecordKind>,
}

pub(super) async fn records(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<RecordsQuery>,
) -> Json<Vec<Value>> {
    let store = shared.store();
    let wanted = query.kind.map(RecordKind::name);
    Json(
        store
            .records
            .iter()
            .filter(|record| {
                wanted.is_none() || record.get("type").and_then(Value::as_str) == wanted
            })
            .cloned()
            .collect(),
    )
}

#[derive(Deserialize)]
pub(super) struct ProfilesQuery {
    identity: Option<String>,
}

/// The stored profiles (or the one of `?identity=`), with their CleverTap IDs.
pub(super) async fn profiles(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<ProfilesQuery>,
) -> Json<Vec<StoredProfile>> {
    let store = shared.store();
    let stored =
        |(identity, properties): (&String, &serde_json::Map<String, Value>)| StoredProfile {
            identity: identity.clone(),
            guid: clevertap_id(identity),
            properties: properties.clone(),
        };
    Json(match &query.identity {
        Some(identity) => store
            .profiles
            .get_key_value(identity)
            .map(stored)
            .into_iter()
            .collect(),
        None => store.profiles.iter().map(stored).collect(),
    })
}

pub(super) async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    *shared.store() = Store::default();
    shared.requests.store(0, Ordering::SeqCst);
    for limiter in shared.limiters.values() {
        limiter.max_seen.store(0, Ordering::SeqCst);
    }
    StatusCode::NO_CONTENT
}
