//! The write APIs as CleverTap answers them: each request's credentials, size, concurrency
//! limit and injected fault (`serve`), then each API's rules and what it stores.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::clevertap::records::RecordKind;
use crate::clevertap::wire::{ACCOUNT_HEADER, DELETE_KEYS, Endpoint, Envelope, PASSCODE_HEADER};
use crate::clevertap::{records, rules};

use super::{
    DeletedProfile, Fault, Handler, InFlight, Refusal, Shared, Store, clevertap_id,
    dropped_connection, identity_key, merge_profile, pick_fault,
};

pub(super) fn fail(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"status": "fail", "error": message, "code": status.as_u16()})),
    )
        .into_response()
}

pub(super) fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

pub(super) async fn upload(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&shared, Endpoint::UPLOAD, &headers, &body, accept_upload).await
}

pub(super) async fn demerge(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&shared, Endpoint::DEMERGE, &headers, &body, accept_demerge).await
}

pub(super) async fn subscribe(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(
        &shared,
        Endpoint::SUBSCRIBE,
        &headers,
        &body,
        accept_subscriptions,
    )
    .await
}

pub(super) async fn disassociate(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(
        &shared,
        Endpoint::DISASSOCIATE,
        &headers,
        &body,
        accept_disassociations,
    )
    .await
}

pub(super) async fn delete_profiles(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(
        &shared,
        Endpoint::DELETE_PROFILES,
        &headers,
        &body,
        accept_deletions,
    )
    .await
}

/// What every API does before its own work: concurrency limit, credentials, injected
/// faults, latency, and a JSON body. Whole on purpose: the order of these checks is what
/// a client sees (a 429 before a 401, a fault before the body is read), read top to bottom.
pub(super) async fn serve(
    shared: &Shared,
    api: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
    handler: Handler,
) -> Response {
    // The answer comes `latency` after the request arrived, the work included, as a
    // client measures a server's response time.
    let answer_at = tokio::time::Instant::now() + shared.config.latency;
    shared.requests.fetch_add(1, Ordering::SeqCst);
    *shared
        .store()
        .inspection
        .requests_by_api
        .entry(api.name.to_string())
        .or_default() += 1;
    let Some(limiter) = shared.limiters.get(api.name) else {
        return fail(StatusCode::NOT_FOUND, "Unknown API");
    };
    let limit = if api == Endpoint::UPLOAD {
        shared.config.max_concurrent
    } else {
        api.max_in_flight
    };
    let (_guard, now) = InFlight::enter(limiter);
    let answer_at = if api == Endpoint::UPLOAD {
        answer_at + shared.config.latency_per_request * u32::try_from(now).unwrap_or(u32::MAX)
    } else {
        answer_at
    };
    let busy = api == Endpoint::UPLOAD
        && shared.uploads_arrived.fetch_add(1, Ordering::SeqCst) < shared.config.throttled_uploads;
    if now > limit || busy {
        shared.store().inspection.throttled += 1;
        return fail(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many concurrent requests",
        );
    }
    limiter.max_seen.fetch_max(now, Ordering::SeqCst);

    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    };
    if header(ACCOUNT_HEADER) != shared.config.account_id {
        shared.store().inspection.unauthorized += 1;
        return fail(StatusCode::UNAUTHORIZED, "Account ID is not valid");
    }
    if header(PASSCODE_HEADER) != shared.config.passcode {
        shared.store().inspection.unauthorized += 1;
        return fail(StatusCode::UNAUTHORIZED, "Invalid Credentials");
    }

    let fault = pick_fault(shared);
    if fault.is_some() {
        shared.store().inspection.faults += 1;
        tokio::time::sleep_until(answer_at).await;
    }
    match fault {
        Some(Fault::TooMany) => {
            return fail(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many concurrent requests",
            );
        }
        Some(Fault::ServerError) => {
            return fail(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
        }
        Some(Fault::Unavailable) => {
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable, try again later",
            );
        }
        Some(Fault::Outage) => {
            let mut response = fail(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, 0.into());
            return response;
        }
        Some(Fault::Drop) => return dropped_connection(),
        // Below: the records are stored, then the answer comes late, as from a server that
        // is slow to answer (a client that times out sends them again: a duplicate).
        Some(Fault::Slow) | None => {}
    }

    let Ok(payload) = serde_json::from_slice::<Value>(body) else {
        return fail(StatusCode::BAD_REQUEST, "Malformed request");
    };
    shared
        .store()
        .inspection
        .first_bodies
        .entry(api.name.to_string())
        .or_insert_with(|| payload.clone());
    let answer = handler(shared, &payload);
    tokio::time::sleep_until(answer_at).await;
    if fault == Some(Fault::Slow) {
        tokio::time::sleep(shared.config.slow_response).await;
    }
    match answer {
        Ok(answer) => Json(answer).into_response(),
        Err(refusal) => fail(refusal.status, &refusal.message),
    }
}

/// The record list of a body, within the API's limit.
pub(super) fn records_of(payload: &Value, api: Endpoint) -> Result<&Vec<Value>, Refusal> {
    let Envelope::List(key) = api.envelope else {
        return Err(bad_request("Malformed request"));
    };
    let Some(records) = payload.get(key).and_then(Value::as_array) else {
        return Err(bad_request("Malformed request"));
    };
    if records.len() > api.max_records {
        return Err(bad_request(format!(
            "Too many records: at most {} per request",
            api.max_records
        )));
    }
    Ok(records)
}

pub(super) fn accept_upload(shared: &Shared, payload: &Value) -> Result<Value, Refusal> {
    let records = records_of(payload, Endpoint::UPLOAD)?;
    let tokens = records
        .iter()
        .filter(|record| record.get("type").and_then(Value::as_str) == Some("token"))
        .count();
    if tokens > Endpoint::UPLOAD_TOKENS.max_records {
        return Err(bad_request(format!(
            "Too many device tokens: at most {} per request",
            Endpoint::UPLOAD_TOKENS.max_records
        )));
    }
    Ok(accept(shared, records))
}

pub(super) fn accept_demerge(shared: &Shared, payload: &Value) -> Result<Value, Refusal> {
    let identities = records_of(payload, Endpoint::DEMERGE)?;
    let mut names = Vec::with_capacity(identities.len());
    for identity in identities {
        match identity.as_str() {
            Some(name) if !name.trim().is_empty() => names.push(name.to_string()),
            _ => {
                return Err(bad_request("identities must be non-empty strings"));
            }
        }
    }
    shared.store().inspection.demerged.extend(names);
    Ok(json!({"status": "success"}))
}

pub(super) fn accept_subscriptions(shared: &Shared, payload: &Value) -> Result<Value, Refusal> {
    let records = records_of(payload, Endpoint::SUBSCRIBE)?;
    Ok(judge_each(records, |record| {
        let value = record
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let valid_value = match record.get("type").and_then(Value::as_str) {
            Some("email") => rules::is_email(value),
            Some("phone") => rules::is_e164(value),
            _ => return Err("type must be email or phone".into()),
        };
        if !valid_value {
            return Err(format!("value `{value}` is not valid for its type"));
        }
        if shared
            .config
            .refused_values
            .iter()
            .any(|refused| refused == value)
        {
            return Err(format!("value `{value}` was refused by the account"));
        }
        if !matches!(
            record.get("status").and_then(Value::as_str),
            Some("Unsubscribe" | "Resubscribe")
        ) {
            return Err("status must be Unsubscribe or Resubscribe".into());
        }
        shared.store().inspection.subscriptions.push(record.clone());
        Ok(())
    }))
}

pub(super) fn accept_disassociations(shared: &Shared, payload: &Value) -> Result<Value, Refusal> {
    let records = records_of(payload, Endpoint::DISASSOCIATE)?;
    Ok(judge_each(records, |record| {
        let value = record
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if record.get("type").and_then(Value::as_str) != Some("phone") || !rules::is_e164(value) {
            return Err(format!("`{value}` is not an E.164 phone number"));
        }
        if shared
            .config
            .refused_values
            .iter()
            .any(|refused| refused == value)
        {
            return Err(format!("value `{value}` was refused by the account"));
        }
        shared
            .store()
            .inspection
            .disassociated
            .push(value.to_string());
        Ok(())
    }))
}

/// `{"identity": [...]}` or `{"guid": [...]}` (a single string is allowed too), never both
/// ([DOC] delete-user-profile-api): deletes each profile named, with its records.
pub(super) fn accept_deletions(shared: &Shared, payload: &Value) -> Result<Value, Refusal> {
    let Some(body) = payload.as_object() else {
        return Err(bad_request("Malformed request"));
    };
    let present: Vec<&str> = DELETE_KEYS
        .into_iter()
        .filter(|key| body.contains_key(*key))
        .collect();
    let by = match present[..] {
        [by] => by,
        [] => return Err(bad_request("Either identity or guid is required")),
        _ => {
            return Err(bad_request(
                "Pass either identity or guid in one request, not both",
            ));
        }
    };
    let values: Vec<&Value> = match &body[by] {
        Value::Array(values) => values.iter().collect(),
        single => vec![single],
    };
    if values.len() > Endpoint::DELETE_PROFILES.max_records {
        return Err(bad_request(format!(
            "Too many values: at most {} {by} values per request",
            Endpoint::DELETE_PROFILES.max_records
        )));
    }
    let mut names = Vec::with_capacity(values.len());
    for value in values {
        match value.as_str() {
            Some(name) if !name.trim().is_empty() => names.push(name),
            _ => {
                return Err(bad_request(format!(
                    "{by} values must be non-empty strings"
                )));
            }
        }
    }
    let mut store = shared.store();
    let mut gone = HashSet::new();
    for name in names {
        let identity = match by {
            "guid" => store.identities_by_guid.get(name).cloned(),
            _ => Some(name.to_string()),
        };
        let found = identity.is_some_and(|identity| {
            let found = store.profiles.remove(&identity).is_some();
            if found {
                store.identities_by_guid.remove(&clevertap_id(&identity));
                gone.insert(identity);
            }
            found
        });
        store.inspection.deleted.push(DeletedProfile {
            by: by.to_string(),
            value: name.to_string(),
            found,
        });
    }
    if !gone.is_empty() {
        store
            .records
            .retain(|record| identity_key(record).is_none_or(|key| !gone.contains(&key)));
    }
    Ok(json!({"status": "success"}))
}

/// Judges records one by one; the answer has CleverTap's `processed` / `unprocessed` shape
/// for the APIs other than `/1/upload`: each entry echoes its record and, unlike
/// `/1/upload`'s, says no record number (docs/clevertap-api.md, second audit, 2). (CleverTap
/// does not document these APIs' per-record codes; the sandbox answers 400.)
pub(super) fn judge_each(
    records: &[Value],
    mut judge: impl FnMut(&Value) -> Result<(), String>,
) -> Value {
    let mut processed = 0;
    let mut unprocessed = Vec::new();
    for record in records {
        match judge(record) {
            Ok(()) => processed += 1,
            Err(message) => unprocessed.push(json!({
                "status": "fail",
                "code": 400,
                "error": message,
                "record": record,
            })),
        }
    }
    let status = match (processed, unprocessed.is_empty()) {
        (_, true) => "success",
        (0, false) => "fail",
        _ => "partial",
    };
    json!({"status": status, "processed": processed, "unprocessed": unprocessed})
}

/// Judges and stores a request's records; returns CleverTap's answer.
pub(super) fn accept(shared: &Shared, records: &[Value]) -> Value {
    let mut unprocessed = Vec::new();
    let mut processed = 0;
    let mut store = shared.store();
    store.inspection.largest_request = store.inspection.largest_request.max(records.len());
    for (index, record) in records.iter().enumerate() {
        match records::check_record(record, &shared.discarded, shared.config.event_properties) {
            Ok(kind) => {
                processed += 1;
                store_record(&mut store, shared.config.keep_records, kind, record);
            }
            Err(violation) => {
                store.inspection.rejected += 1;
                unprocessed.push(json!({
                    "status": "fail",
                    "code": violation.code,
                    "error": format!("{}. Skipped record number : {}", violation.message, index + 1),
                    "record": record,
                }));
            }
        }
    }
    let status = if unprocessed.is_empty() {
        "success"
    } else if processed == 0 {
        "fail"
    } else {
        "partial"
    };
    json!({"status": status, "processed": processed, "unprocessed": unprocessed})
}

pub(super) fn store_record(store: &mut Store, keep: usize, kind: RecordKind, record: &Value) {
    match kind {
        RecordKind::Profile => {
            store.inspection.profiles += 1;
            if keep > 0 {
                merge_profile(store, record);
            }
        }
        RecordKind::Event => store.inspection.events += 1,
        RecordKind::Token => store.inspection.tokens += 1,
    }
    if store.inspection.sample.len() < 3 {
        store.inspection.sample.push(record.clone());
    }
    if store.records.len() < keep {
        store.records.push(record.clone());
    }
}
