//! A pipeline's connection as written: a CleverTap account (inline, or by name from
//! `connections.yaml` beside it) or, in `connections.yaml`, a PostgreSQL database that sources
//! read from. Their `///` docs become the JSON Schema, as the rest of the file format's.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Region;

/// A connection given by name or written inline.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ConnectionRef {
    /// The name of a connection in `connections.yaml` beside this file.
    Named(String),
    /// A connection written out in the pipeline.
    Inline(Box<ConnectionFile>),
}

/// A CleverTap account: its credentials and where its API lives. In `connections.yaml`, an
/// entry may instead be a database that sources read from: PostgreSQL (`postgres` or
/// `postgres_file`) or MySQL/MariaDB (`mysql` or `mysql_file`), nothing else.
///
/// Any value may hold `${VAR}`, which is read from the environment when the pipeline loads.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionFile {
    /// The Project ID (CleverTap dashboard: Settings → Project), for example
    /// `${CLEVERTAP_ACCOUNT_ID}`. Every CleverTap connection has one.
    #[serde(default)]
    pub account_id: Option<String>,

    /// For a database entry: its URL, `postgres://user:password@host:5432/db?sslmode=require`,
    /// or libpq's `key=value` string. `sslmode` as libpq means it: `disable`, `allow`,
    /// `prefer` (default) and `require` do not check the server's certificate (`require` with
    /// `sslrootcert` does); `verify-ca` and `verify-full` check it against `sslrootcert=FILE`
    /// (or `system`). Write `${WAREHOUSE_URL}` or use `postgres_file`, so the password stays
    /// out of version control.
    #[serde(default)]
    pub postgres: Option<String>,

    /// For a database entry: a file holding its URL, for example
    /// `/run/credentials/tapline.service/warehouse`.
    #[serde(default)]
    pub postgres_file: Option<String>,

    /// For a MySQL or MariaDB database entry: its URL,
    /// `mysql://user:password@host:3306/db?ssl-mode=REQUIRED`. `ssl-mode` as MySQL clients
    /// name it: `DISABLED`, `PREFERRED` (default: encrypted when the server offers it, not
    /// verified), `REQUIRED` (encrypted, not verified), `VERIFY_CA` and `VERIFY_IDENTITY`
    /// (checked against `ssl-ca=FILE`, or the system's roots). Write `${APP_DB_URL}` or use
    /// `mysql_file`, so the password stays out of version control.
    #[serde(default)]
    pub mysql: Option<String>,

    /// For a MySQL or MariaDB database entry: a file holding its URL.
    #[serde(default)]
    pub mysql_file: Option<String>,

    /// The account passcode. Prefer `${CLEVERTAP_PASSCODE}` or `passcode_file`: a passcode
    /// written in the file ends up in version control.
    #[serde(default)]
    pub passcode: Option<String>,

    /// A file holding the passcode (surrounding whitespace is ignored), for example
    /// `/run/credentials/tapline.service/passcode` under systemd's `LoadCredential=`.
    /// A relative path is relative to the file that names it.
    #[serde(default)]
    pub passcode_file: Option<String>,

    /// The data centre of the account (Settings → Project): `eu1` (default), `in1`, `sg1`,
    /// `us1`, `aps3` or `mec1`. A wrong region answers 401, like a wrong passcode.
    #[serde(default)]
    pub region: Option<Region>,

    /// A base URL that replaces the region's host, for a proxy or a test server, for example
    /// `http://127.0.0.1:9000`.
    #[serde(default)]
    pub endpoint: Option<String>,

    /// Seconds to wait for one request before it counts as timed out and is retried
    /// (default 60).
    #[serde(default)]
    #[schemars(range(min = 1, max = 600))]
    pub request_timeout_seconds: Option<i64>,

    /// Limits of this account where it differs from CleverTap's defaults (some accounts
    /// have more event properties, for example). Raise one only to what CleverTap's support
    /// confirmed for your account: records past the real limit are refused by CleverTap.
    #[serde(default)]
    pub limits: Option<LimitsFile>,
}

/// Per-account limits, e.g. `limits: { event_properties: 256 }`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// How many properties one event may carry: CleverTap's default is 100, and accounts can
    /// have it raised (tapline checks each event against it before sending). 1 to 1024.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub event_properties: Option<i64>,
    /// Uploads this account lets tapline have in flight at once, below CleverTap's 15: for
    /// an account other clients (an SDK backend, another team's job) also upload to. Every
    /// pipeline on the connection keeps within it, `thread_count: auto` included. 1 to 15.
    #[serde(default)]
    #[schemars(range(min = 1, max = 15))]
    pub concurrency: Option<i64>,
}

/// `connections.yaml`: named CleverTap connections (and PostgreSQL databases) that pipelines in the same folder use.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(title = "tapline connections")]
pub struct ConnectionsFile(pub BTreeMap<String, ConnectionFile>);
