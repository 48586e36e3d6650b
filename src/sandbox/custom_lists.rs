//! Custom lists: the pre-signed URL, the S3 emulation that receives the CSV (with S3's
//! refusals of chunked or unsized bodies), and the segment's registration.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::clevertap::wire::{CustomListCompleted, Endpoint, PASSCODE_HEADER};

use super::{
    KEPT_LIST_LINES, PresignedUpload, Refusal, Segment, Shared, UploadedList, bad_request, serve,
};

pub(super) async fn custom_list_url(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let asked = shared.presigned_asked.fetch_add(1, Ordering::SeqCst);
    if asked < shared.config.url_not_generated {
        shared.requests.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::OK,
            [("content-type", "text/plain")],
            "URL not generated, Please come back later",
        )
            .into_response();
    }
    serve(
        &shared,
        Endpoint::CUSTOM_LIST,
        &headers,
        &body,
        issue_presigned_url,
    )
    .await
}

pub(super) async fn custom_list_completed(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let asked = shared.registrations_asked.fetch_add(1, Ordering::SeqCst);
    let answer = serve(
        &shared,
        Endpoint::CUSTOM_LIST,
        &headers,
        &body,
        register_segment,
    )
    .await;
    if asked < shared.config.slow_registrations {
        tokio::time::sleep(shared.config.slow_response).await;
    }
    answer
}

pub(super) fn issue_presigned_url(shared: &Shared, _payload: &Value) -> Result<Value, Refusal> {
    let token = format!("{:016x}", rand::random::<u64>());
    shared.store().presigned.insert(token.clone(), None);
    Ok(json!({
        "presignedS3URL": format!("http://{}/_sandbox/presigned/{token}", shared.address),
        "expiry": "in 24 hours",
        "status": "success",
    }))
}

/// The pre-signed URL: takes a CSV of any size as a stream, keeping counts and a few lines.
/// A pre-signed URL, as S3 answers one (docs/clevertap-api.md, Corrections 1): no chunked
/// upload (`501 NotImplemented`), a `Content-Length` (`411 MissingContentLength`), all of
/// the bytes it announces (`400 IncompleteBody`), and a URL it issued and that was not used
/// yet (`403 AccessDenied`). Refusals come with S3's XML error body.
pub(super) async fn presigned_upload(
    State(shared): State<Arc<Shared>>,
    UrlPath(token): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if headers.contains_key(PASSCODE_HEADER) {
        shared.store().inspection.presigned_with_passcode += 1;
    }
    let mut seen = PresignedUpload {
        headers: headers
            .iter()
            .map(|(name, value)| {
                let shown = if name.as_str().eq_ignore_ascii_case(PASSCODE_HEADER) {
                    "***".to_string()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name.as_str().to_ascii_lowercase(), shown)
            })
            .collect(),
        ..PresignedUpload::default()
    };
    let (list, refusal) = receive_list(&shared, &token, &headers, body, &mut seen).await;
    let response = match refusal {
        None => {
            seen.status = 200;
            shared.store().presigned.insert(token, Some(list));
            StatusCode::OK.into_response()
        }
        Some((status, code, message, extra)) => {
            seen.status = status.as_u16();
            seen.error_code = Some(code.to_string());
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>{extra}<RequestId>TAPLINESANDBOX</RequestId></Error>"
            );
            (status, [("content-type", "application/xml")], body).into_response()
        }
    };
    shared.store().inspection.presigned_uploads.push(seen);
    response
}

/// An S3 refusal: status, error code, message, and any more XML elements.
pub(super) type S3Refusal = (StatusCode, &'static str, &'static str, String);

/// Reads an upload to a pre-signed URL into a list, or says why S3 refuses it.
pub(super) async fn receive_list(
    shared: &Shared,
    token: &str,
    headers: &HeaderMap,
    body: Body,
    seen: &mut PresignedUpload,
) -> (UploadedList, Option<S3Refusal>) {
    let mut list = UploadedList::default();
    let announced = match announced_length(shared, token, headers) {
        Ok(announced) => announced,
        Err(refusal) => return (list, Some(refusal)),
    };
    let mut partial = String::new();
    let mut stream = body.into_data_stream();
    let mut broke = false;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let Ok(chunk) = chunk else {
            broke = true;
            break;
        };
        seen.bytes_received += chunk.len() as u64;
        partial.push_str(&String::from_utf8_lossy(&chunk));
        // Whole lines are counted (and the first few kept); the rest waits for the next chunk.
        let mut consumed = 0;
        while let Some(end) = partial[consumed..].find('\n') {
            let line = &partial[consumed..consumed + end];
            list.identities += 1;
            if list.lines.len() < KEPT_LIST_LINES {
                list.lines.push(line.trim_end().to_string());
            }
            consumed += end + 1;
        }
        partial.drain(..consumed);
    }
    if broke || seen.bytes_received < announced {
        return (
            list,
            Some((
                StatusCode::BAD_REQUEST,
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length HTTP header",
                format!(
                    "<NumberBytesExpected>{announced}</NumberBytesExpected><NumberBytesProvided>{}</NumberBytesProvided>",
                    seen.bytes_received
                ),
            )),
        );
    }
    if !partial.trim().is_empty() {
        list.identities += 1;
        if list.lines.len() < KEPT_LIST_LINES {
            list.lines.push(partial.trim_end().to_string());
        }
    }
    // The first line is the `Type,Identity` header.
    list.identities = list.identities.saturating_sub(1);
    (list, None)
}

/// The length the upload announces, or S3's refusal of its URL or headers: a URL used or
/// expired, a chunked body, no `Content-Length`.
fn announced_length(shared: &Shared, token: &str, headers: &HeaderMap) -> Result<u64, S3Refusal> {
    if !matches!(shared.store().presigned.get(token), Some(None)) {
        return Err((
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Request has expired or the URL was already used",
            String::new(),
        ));
    }
    if headers.contains_key("transfer-encoding") {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "A header you provided implies functionality that is not implemented",
            "<Header>Transfer-Encoding</Header>".to_string(),
        ));
    }
    let Some(announced) = headers
        .get("content-length")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
    else {
        return Err((
            StatusCode::LENGTH_REQUIRED,
            "MissingContentLength",
            "You must provide the Content-Length HTTP header.",
            String::new(),
        ));
    };
    Ok(announced)
}

pub(super) fn register_segment(shared: &Shared, payload: &Value) -> Result<Value, Refusal> {
    let Ok(request) = serde_json::from_value::<CustomListCompleted>(payload.clone()) else {
        return Err(bad_request("Malformed request"));
    };
    if !shared
        .config
        .admin_emails
        .iter()
        .any(|admin| admin.eq_ignore_ascii_case(&request.email))
    {
        return Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            message:
                "Email id is either not in the right format or does not belong to a valid admin"
                    .into(),
        });
    }
    let token = request
        .url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut store = shared.store();
    // The name is judged first: a registration tried again after a lost answer meets the
    // segment its first attempt made.
    match (
        store.inspection.segments.contains_key(&request.name),
        request.replace,
    ) {
        (true, false) => {
            return Err(bad_request(format!(
                "A segment named `{}` already exists (duplicate_name)",
                request.name
            )));
        }
        (false, true) => {
            return Err(bad_request(format!(
                "No segment named `{}` exists to replace",
                request.name
            )));
        }
        _ => {}
    }
    let Some(Some(list)) = store.presigned.get(&token).cloned() else {
        return Err(bad_request("No file was uploaded to this URL"));
    };
    let next_id = 1000 + store.inspection.segments.len() as i64 + 1;
    let segments = &mut store.inspection.segments;
    let segment = match (segments.get_mut(&request.name), request.replace) {
        (Some(segment), _) => segment,
        (None, _) => segments.entry(request.name.clone()).or_insert(Segment {
            id: next_id,
            ..Segment::default()
        }),
    };
    segment.identities = list.identities;
    segment.lines = list.lines;
    segment.uploads += 1;
    segment.email = request.email;
    segment.creator = request.creator;
    let id = segment.id;
    store.presigned.remove(&token);
    Ok(json!({"Segment ID": id, "status": "success", "code": 200}))
}
