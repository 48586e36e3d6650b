//! A local CleverTap: the same write APIs (`/1/upload`, demerge, subscribe, disassociate,
//! profile deletion, custom lists),
//! headers, limits and per-record error codes, with knobs for latency and injected faults,
//! and an inspection endpoint that shows what it accepted.
//!
//! Tests and `tapline run --sandbox` send to it exactly as they would to CleverTap; the
//! engine never calls it directly. What it does where CleverTap's behaviour is not
//! documented (the answer to more than 1000 records, for one) is chosen to be strict.
//!
//! Here: the configuration, the server and its shared state; `apis.rs` each write API,
//! `custom_lists.rs` the custom-list flow and its S3 emulation, `faults.rs` injected faults,
//! `profiles.rs` the profile store, `inspection.rs` what tests and people read back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::clevertap::rules;
use crate::clevertap::wire::{CUSTOM_LIST_COMPLETED_PATH, Endpoint};

mod apis;
mod custom_lists;
mod faults;
mod inspection;
mod profiles;

use apis::*;
use custom_lists::*;
use faults::*;
use inspection::*;
use profiles::*;

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
    /// What each upload in flight adds to an upload's response time: a server that slows
    /// down under load.
    pub latency_per_request: Duration,
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
    /// The first this many uploads get 429 "Too many concurrent requests" however few are
    /// in flight: an account other clients were busy on, then left.
    pub throttled_uploads: u64,
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
            latency_per_request: Duration::ZERO,
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
            throttled_uploads: 0,
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
    /// Uploads that arrived, for `throttled_uploads`.
    uploads_arrived: AtomicU64,
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
            uploads_arrived: AtomicU64::new(0),
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

/// What an API does with a well-formed, authorized request: CleverTap's answer, or a refusal.
type Handler = fn(&Shared, &Value) -> Result<Value, Refusal>;

/// A request refused as a whole, answered `{"status":"fail","error":…,"code":…}`.
struct Refusal {
    status: StatusCode,
    message: String,
}
