//! A local CleverTap: the same write APIs (`/1/upload`, demerge, subscribe, disassociate,
//! profile deletion, custom lists),
//! headers, limits and per-record error codes, with knobs for latency and injected faults,
//! and an inspection endpoint that shows what it accepted.
//!
//! Tests and `tapline run --sandbox` send to it exactly as they would to CleverTap; the
//! engine never calls it directly. What it does where CleverTap's behaviour is not
//! documented (the answer to more than 1000 records, for one) is chosen to be strict.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Path as UrlPath;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clevertap::records::{self, RecordKind};
use crate::clevertap::rules;
use crate::clevertap::wire::{ACCOUNT_HEADER, PASSCODE_HEADER};
use crate::clevertap::wire::{
    CUSTOM_LIST_COMPLETED_PATH, CustomListCompleted, DELETE_KEYS, Endpoint, Envelope,
};

/// The account the sandbox accepts unless told otherwise.
pub const DEFAULT_ACCOUNT_ID: &str = "TAPLINE-SANDBOX";
/// The passcode the sandbox accepts unless told otherwise.
pub const DEFAULT_PASSCODE: &str = "sandbox-passcode";
/// The admin email the sandbox accepts for custom lists unless told otherwise.
pub const DEFAULT_ADMIN_EMAIL: &str = "admin@example.com";
/// Lines of each uploaded custom list kept for inspection.
const KEPT_LIST_LINES: usize = 1000;
/// CleverTap's limit on uploads in flight per account.
pub const DEFAULT_MAX_CONCURRENT: usize = 15;

/// A failure the sandbox can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 429 "Too many concurrent requests".
    TooMany,
    /// HTTP 500.
    ServerError,
    /// HTTP 503.
    Unavailable,
    /// HTTP 503 with `Retry-After: 0`: a service that is down and tells clients to try again
    /// at once, so a client spends its retries in moments (tests of giving up use it).
    Outage,
    /// The connection breaks before the answer is complete (nothing is stored).
    Drop,
    /// The answer comes after `slow_response` (the records are stored).
    Slow,
}

/// How the sandbox behaves.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The account ID it accepts.
    pub account_id: String,
    /// The passcode it accepts.
    pub passcode: String,
    /// Every answer's response time: from the request's arrival to its answer, the
    /// sandbox's own work included (an answer that takes longer to work out comes later).
    pub latency: Duration,
    /// Uploads in flight above this get 429.
    pub max_concurrent: usize,
    /// The share of uploads (0.0–1.0) that get a fault.
    pub fault_rate: f64,
    /// Which faults to pick from, uniformly.
    pub faults: Vec<Fault>,
    /// How long a `slow` fault waits.
    pub slow_response: Duration,
    /// How many accepted records to keep for inspection (counts are always kept).
    pub keep_records: usize,
    /// Event names discarded in the dashboard: raising one gives 528.
    pub discarded_events: Vec<String>,
    /// Emails of the account's admins; a custom list names one of them.
    pub admin_emails: Vec<String>,
    /// Seeds the fault draws, so a test sees the same faults every run; `None` draws afresh.
    pub seed: Option<u64>,
    /// Properties one event may carry (CleverTap's default 100; accounts can have more).
    pub event_properties: usize,
    /// The first this many requests for a custom list's pre-signed URL get CleverTap's
    /// documented plain-text failure, "URL not generated, Please come back later".
    pub url_not_generated: u64,
    /// The first this many custom-list registrations (step 3) register the segment, then
    /// answer `slow_response` late: a client that timed out tries again and meets the
    /// segment its first attempt made.
    pub slow_registrations: u64,
    /// Subscription and disassociation values (an email or a phone number) the account
    /// refuses, each with a per-record error in the answer, echoing the record without a
    /// record number as those APIs do: what a test needs to see such answers matched.
    pub refused_values: Vec<String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            account_id: DEFAULT_ACCOUNT_ID.into(),
            passcode: DEFAULT_PASSCODE.into(),
            latency: Duration::ZERO,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            fault_rate: 0.0,
            faults: vec![
                Fault::TooMany,
                Fault::ServerError,
                Fault::Unavailable,
                Fault::Drop,
            ],
            slow_response: Duration::from_secs(5),
            keep_records: 1_000_000,
            discarded_events: Vec::new(),
            admin_emails: vec![DEFAULT_ADMIN_EMAIL.into()],
            seed: None,
            event_properties: rules::DEFAULT_EVENT_PROPERTIES,
            url_not_generated: 0,
            slow_registrations: 0,
            refused_values: Vec::new(),
        }
    }
}

/// What the sandbox has seen, as `GET /_sandbox/inspect` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inspection {
    /// Upload requests received, whatever their answer.
    pub requests: u64,
    /// Requests answered 429 for concurrency.
    pub throttled: u64,
    /// Requests answered 401.
    pub unauthorized: u64,
    /// Faults injected.
    pub faults: u64,
    /// The most uploads that were in flight at once.
    pub max_in_flight: usize,
    /// The most records in one request.
    pub largest_request: usize,
    /// Profile records accepted.
    pub profiles: u64,
    /// Event records accepted.
    pub events: u64,
    /// Token records accepted.
    pub tokens: u64,
    /// Records refused, with their codes.
    pub rejected: u64,
    /// Distinct profiles stored.
    pub distinct_profiles: usize,
    /// The first few accepted records.
    pub sample: Vec<Value>,
    /// Requests per API (`upload`, `demerge`, `subscribe`, `disassociate`).
    pub requests_by_api: BTreeMap<String, u64>,
    /// The most requests in flight at once, per API.
    pub max_in_flight_by_api: BTreeMap<String, usize>,
    /// The first request body each API received, exactly as sent.
    pub first_bodies: BTreeMap<String, Value>,
    /// Identities demerged, in order.
    pub demerged: Vec<String>,
    /// Subscription changes accepted (`{"type","value","status"}`), in order.
    pub subscriptions: Vec<Value>,
    /// Phone numbers disassociated, in order.
    pub disassociated: Vec<String>,
    /// Profiles asked to be deleted, in order, and whether the sandbox held them.
    pub deleted: Vec<DeletedProfile>,
    /// Custom-list segments by name.
    pub segments: BTreeMap<String, Segment>,
    /// Uploads to a pre-signed URL that carried CleverTap's passcode header (should be 0).
    pub presigned_with_passcode: u64,
    /// Every request to a pre-signed URL, in arrival order, with S3's answer.
    pub presigned_uploads: Vec<PresignedUpload>,
}

/// A request to a pre-signed URL as the sandbox's S3 saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PresignedUpload {
    /// Its headers, names lowercase (CleverTap's passcode shown as `***`).
    pub headers: BTreeMap<String, String>,
    /// Bytes of body that arrived.
    pub bytes_received: u64,
    /// The answer's status: 200, or S3's refusal.
    pub status: u16,
    /// S3's error code for a refusal (`NotImplemented`, `MissingContentLength`, ...).
    pub error_code: Option<String>,
}

/// A profile a deletion request named.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeletedProfile {
    /// What named it: `identity` or `guid`.
    pub by: String,
    /// The identity or CleverTap ID.
    pub value: String,
    /// Whether the sandbox held that profile (it is gone now).
    pub found: bool,
}

/// A profile the sandbox holds, as `GET /_sandbox/profiles` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredProfile {
    /// Its identity (or objectId, FBID, GPID: the first the record had).
    pub identity: String,
    /// Its CleverTap ID, as [`clevertap_id`] makes it.
    pub guid: String,
    /// Its properties, with `$add` / `$remove` applied.
    pub properties: serde_json::Map<String, Value>,
}

/// The CleverTap ID the sandbox gives the profile of an identity: `__` and 32 hex digits,
/// the shape of the IDs CleverTap gives profiles created by upload; the same identity always
/// gets the same ID.
pub fn clevertap_id(identity: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(identity.as_bytes());
    format!("__{}", hex::encode(&digest[..16]))
}

/// A custom-list segment the sandbox holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Its ID.
    pub id: i64,
    /// Identities in its latest list (lines after the header).
    pub identities: u64,
    /// The first lines of its latest list, header included.
    pub lines: Vec<String>,
    /// How many lists it was given (1 when created, +1 per replace).
    pub uploads: u64,
    /// The email that registered it last.
    pub email: String,
    /// The creator it was registered with last.
    pub creator: String,
}

/// A list uploaded to a pre-signed URL, waiting to become a segment.
#[derive(Debug, Clone, Default)]
struct UploadedList {
    identities: u64,
    lines: Vec<String>,
}

#[derive(Default)]
struct Store {
    inspection: Inspection,
    /// Profile properties by identity, with `$add` / `$remove` applied.
    profiles: HashMap<String, serde_json::Map<String, Value>>,
    /// The identity of each profile by its CleverTap ID.
    identities_by_guid: HashMap<String, String>,
    /// Accepted records in arrival order (up to `keep_records`).
    records: Vec<Value>,
    /// Pre-signed URL tokens handed out, with the list uploaded to each (once uploaded).
    presigned: HashMap<String, Option<UploadedList>>,
}

/// The APIs the sandbox serves; each has its own limit of requests in flight.
const APIS: [Endpoint; 6] = [
    Endpoint::UPLOAD,
    Endpoint::DEMERGE,
    Endpoint::SUBSCRIBE,
    Endpoint::DISASSOCIATE,
    Endpoint::DELETE_PROFILES,
    Endpoint::CUSTOM_LIST,
];

/// Counts one API's requests in flight.
#[derive(Default)]
struct Limiter {
    in_flight: AtomicUsize,
    max_seen: AtomicUsize,
}

struct Shared {
    config: SandboxConfig,
    /// Where it listens, for the pre-signed URLs it hands out.
    address: SocketAddr,
    discarded: HashSet<String>,
    limiters: HashMap<&'static str, Limiter>,
    requests: AtomicU64,
    /// Requests for a pre-signed URL so far.
    presigned_asked: AtomicU64,
    /// Custom-list registrations asked for so far.
    registrations_asked: AtomicU64,
    store: Mutex<Store>,
    rng: Mutex<StdRng>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running sandbox. Dropping it does not stop it; call [`Sandbox::stop`].
pub struct Sandbox {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// Starts a sandbox on `listen` (port 0 picks a free port).
    pub async fn start(config: SandboxConfig, listen: SocketAddr) -> std::io::Result<Sandbox> {
        let discarded = config
            .discarded_events
            .iter()
            .map(|name| rules::normalize_event_name(name))
            .collect();
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            address,
            discarded,
            limiters: APIS
                .iter()
                .map(|api| (api.name, Limiter::default()))
                .collect(),
            requests: AtomicU64::new(0),
            presigned_asked: AtomicU64::new(0),
            registrations_asked: AtomicU64::new(0),
            store: Mutex::new(Store::default()),
            rng: Mutex::new(rng),
        });
        let app = Router::new()
            .route(Endpoint::UPLOAD.path, post(upload))
            .route(Endpoint::DEMERGE.path, post(demerge))
            .route(Endpoint::SUBSCRIBE.path, post(subscribe))
            .route(Endpoint::DISASSOCIATE.path, post(disassociate))
            .route(Endpoint::DELETE_PROFILES.path, post(delete_profiles))
            .route(Endpoint::CUSTOM_LIST.path, post(custom_list_url))
            .route(CUSTOM_LIST_COMPLETED_PATH, post(custom_list_completed))
            .route("/_sandbox/presigned/{token}", put(presigned_upload))
            .route("/_sandbox/inspect", get(inspect))
            .route("/_sandbox/records", get(records))
            .route("/_sandbox/profiles", get(profiles))
            .route("/_sandbox/reset", post(reset))
            .with_state(Arc::clone(&shared));
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(signal.cancelled_owned());
            if let Err(error) = serve.await {
                tracing::error!(%error, "the sandbox stopped");
            }
        });
        Ok(Sandbox {
            address,
            shared,
            shutdown,
            server,
        })
    }

    /// The base URL to use as a connection's `endpoint`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The account and passcode it accepts.
    pub fn credentials(&self) -> (&str, &str) {
        (&self.shared.config.account_id, &self.shared.config.passcode)
    }

    /// What it has seen so far.
    pub fn inspect(&self) -> Inspection {
        snapshot(&self.shared)
    }

    /// The accepted records of one kind (`profile`, `event`, `token`), in arrival order.
    pub fn records(&self, kind: &str) -> Vec<Value> {
        let store = self.shared.store();
        store
            .records
            .iter()
            .filter(|record| record.get("type").and_then(Value::as_str) == Some(kind))
            .cloned()
            .collect()
    }

    /// The stored properties of a profile, by identity or objectId.
    pub fn profile(&self, identity: &str) -> Option<serde_json::Map<String, Value>> {
        self.shared.store().profiles.get(identity).cloned()
    }

    /// Stops serving and waits for the server to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
    }
}

fn snapshot(shared: &Shared) -> Inspection {
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

/// Counts a request as in flight for as long as it lives.
struct InFlight<'a>(&'a Limiter);

impl<'a> InFlight<'a> {
    fn enter(limiter: &'a Limiter) -> (Self, usize) {
        let now = limiter.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        (InFlight(limiter), now)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn fail(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"status": "fail", "error": message, "code": status.as_u16()})),
    )
        .into_response()
}

/// What an API does with a well-formed, authorized request: CleverTap's answer, or a refusal.
type Handler = fn(&Shared, &Value) -> Result<Value, Refusal>;

/// A request refused as a whole, answered `{"status":"fail","error":…,"code":…}`.
struct Refusal {
    status: StatusCode,
    message: String,
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

async fn upload(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    serve(&shared, Endpoint::UPLOAD, &headers, &body, accept_upload).await
}

async fn demerge(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    serve(&shared, Endpoint::DEMERGE, &headers, &body, accept_demerge).await
}

async fn subscribe(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    serve(
        &shared,
        Endpoint::SUBSCRIBE,
        &headers,
        &body,
        accept_subscriptions,
    )
    .await
}

async fn disassociate(
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

async fn delete_profiles(
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
/// faults, latency, and a JSON body.
async fn serve(
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
    if now > limit {
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

async fn custom_list_url(
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

async fn custom_list_completed(
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

fn issue_presigned_url(shared: &Shared, _payload: &Value) -> Result<Value, Refusal> {
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
async fn presigned_upload(
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
type S3Refusal = (StatusCode, &'static str, &'static str, String);

/// Reads an upload to a pre-signed URL into a list, or says why S3 refuses it.
async fn receive_list(
    shared: &Shared,
    token: &str,
    headers: &HeaderMap,
    body: Body,
    seen: &mut PresignedUpload,
) -> (UploadedList, Option<S3Refusal>) {
    let mut list = UploadedList::default();
    if !matches!(shared.store().presigned.get(token), Some(None)) {
        return (
            list,
            Some((
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Request has expired or the URL was already used",
                String::new(),
            )),
        );
    }
    if headers.contains_key("transfer-encoding") {
        return (
            list,
            Some((
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
                "<Header>Transfer-Encoding</Header>".to_string(),
            )),
        );
    }
    let Some(announced) = headers
        .get("content-length")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
    else {
        return (
            list,
            Some((
                StatusCode::LENGTH_REQUIRED,
                "MissingContentLength",
                "You must provide the Content-Length HTTP header.",
                String::new(),
            )),
        );
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

fn register_segment(shared: &Shared, payload: &Value) -> Result<Value, Refusal> {
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

/// The record list of a body, within the API's limit.
fn records_of(payload: &Value, api: Endpoint) -> Result<&Vec<Value>, Refusal> {
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

fn accept_upload(shared: &Shared, payload: &Value) -> Result<Value, Refusal> {
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

fn accept_demerge(shared: &Shared, payload: &Value) -> Result<Value, Refusal> {
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

fn accept_subscriptions(shared: &Shared, payload: &Value) -> Result<Value, Refusal> {
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

fn accept_disassociations(shared: &Shared, payload: &Value) -> Result<Value, Refusal> {
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
fn accept_deletions(shared: &Shared, payload: &Value) -> Result<Value, Refusal> {
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
fn judge_each(records: &[Value], mut judge: impl FnMut(&Value) -> Result<(), String>) -> Value {
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

/// Draws whether a request gets a fault, and which.
fn pick_fault(shared: &Shared) -> Option<Fault> {
    let config = &shared.config;
    if config.faults.is_empty() || config.fault_rate <= 0.0 {
        return None;
    }
    let mut rng = shared
        .rng
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if rng.random::<f64>() >= config.fault_rate {
        return None;
    }
    let index = rng.random_range(0..config.faults.len());
    config.faults.get(index).copied()
}

/// A 200 whose body breaks off: the client sees the connection drop mid-answer.
fn dropped_connection() -> Response {
    let broken = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox dropped the connection",
        ))
    });
    Response::new(Body::from_stream(broken))
}

/// Judges and stores a request's records; returns CleverTap's answer.
fn accept(shared: &Shared, records: &[Value]) -> Value {
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

fn store_record(store: &mut Store, keep: usize, kind: RecordKind, record: &Value) {
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

/// The identity a profile or event record names: the first identity field it has.
fn identity_key(record: &Value) -> Option<String> {
    rules::IDENTITY_FIELDS.iter().find_map(|field| {
        record
            .get(*field)
            .map(|value| value.to_string().trim_matches('"').to_string())
    })
}

/// Applies a profile record to the stored profile, as CleverTap does with multi-values.
fn merge_profile(store: &mut Store, record: &Value) {
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

async fn inspect(State(shared): State<Arc<Shared>>) -> Json<Inspection> {
    Json(snapshot(&shared))
}

#[derive(Deserialize)]
struct RecordsQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn records(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<RecordsQuery>,
) -> Json<Vec<Value>> {
    let store = shared.store();
    let wanted = query.kind.as_deref();
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
struct ProfilesQuery {
    identity: Option<String>,
}

/// The stored profiles (or the one of `?identity=`), with their CleverTap IDs.
async fn profiles(
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

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    *shared.store() = Store::default();
    shared.requests.store(0, Ordering::SeqCst);
    for limiter in shared.limiters.values() {
        limiter.max_seen.store(0, Ordering::SeqCst);
    }
    StatusCode::NO_CONTENT
}
