//! A local CleverTap: the same `/1/upload` endpoint, headers, limits and per-record error
//! codes, with knobs for latency and injected faults, and an inspection endpoint that shows
//! what it accepted.
//!
//! Tests and `tapline run --sandbox` send to it exactly as they would to CleverTap; the
//! engine never calls it directly. What it does where CleverTap's behaviour is not
//! documented (the answer to more than 1000 records, for one) is chosen to be strict.

pub mod validate;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clevertap::rules::{self, MAX_UPLOAD_RECORDS};
use crate::clevertap::wire::{ACCOUNT_HEADER, PASSCODE_HEADER};
use validate::RecordKind;

/// The account the sandbox accepts unless told otherwise.
pub const DEFAULT_ACCOUNT_ID: &str = "TAPLINE-SANDBOX";
/// The passcode the sandbox accepts unless told otherwise.
pub const DEFAULT_PASSCODE: &str = "sandbox-passcode";
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
    /// Added to every upload while it counts as in flight.
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
}

#[derive(Default)]
struct Store {
    inspection: Inspection,
    /// Profile properties by identity, with `$add` / `$remove` applied.
    profiles: HashMap<String, serde_json::Map<String, Value>>,
    /// Accepted records in arrival order (up to `keep_records`).
    records: Vec<Value>,
}

struct Shared {
    config: SandboxConfig,
    discarded: HashSet<String>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: AtomicU64,
    store: Mutex<Store>,
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
        let shared = Arc::new(Shared {
            config,
            discarded,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            store: Mutex::new(Store::default()),
        });
        let app = Router::new()
            .route("/1/upload", post(upload))
            .route("/_sandbox/inspect", get(inspect))
            .route("/_sandbox/records", get(records))
            .route("/_sandbox/reset", post(reset))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
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
    inspection.max_in_flight = shared.max_in_flight.load(Ordering::SeqCst);
    inspection.distinct_profiles = store.profiles.len();
    inspection
}

/// Counts a request as in flight for as long as it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> (Self, usize) {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        (InFlight(shared), now)
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

async fn upload(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let (_guard, now) = InFlight::enter(&shared);
    if now > shared.config.max_concurrent {
        shared.store().inspection.throttled += 1;
        return fail(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many concurrent requests",
        );
    }
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);

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

    let fault = pick_fault(&shared.config);
    if fault.is_some() {
        shared.store().inspection.faults += 1;
    }
    if !shared.config.latency.is_zero() {
        tokio::time::sleep(shared.config.latency).await;
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
        Some(Fault::Drop) => return dropped_connection(),
        Some(Fault::Slow) => tokio::time::sleep(shared.config.slow_response).await,
        None => {}
    }

    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return fail(StatusCode::BAD_REQUEST, "Malformed request");
    };
    let Some(records) = payload.get("d").and_then(Value::as_array) else {
        return fail(StatusCode::BAD_REQUEST, "Malformed request");
    };
    if records.len() > MAX_UPLOAD_RECORDS {
        return fail(
            StatusCode::BAD_REQUEST,
            &format!("Too many records: at most {MAX_UPLOAD_RECORDS} per request"),
        );
    }
    Json(accept(&shared, records)).into_response()
}

fn pick_fault(config: &SandboxConfig) -> Option<Fault> {
    if config.faults.is_empty()
        || config.fault_rate <= 0.0
        || rand::random::<f64>() >= config.fault_rate
    {
        return None;
    }
    let index = rand::random_range(0..config.faults.len());
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
        match validate::check_record(record, &shared.discarded) {
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

/// Applies a profile record to the stored profile, as CleverTap does with multi-values.
fn merge_profile(store: &mut Store, record: &Value) {
    let Some(key) = rules::IDENTITY_FIELDS.iter().find_map(|field| {
        record
            .get(*field)
            .map(|value| value.to_string().trim_matches('"').to_string())
    }) else {
        return;
    };
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

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    *shared.store() = Store::default();
    shared.requests.store(0, Ordering::SeqCst);
    shared.max_in_flight.store(0, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}
