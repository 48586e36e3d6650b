//! The checked pipeline: what the rest of tapline works from. It cannot hold an invalid value.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use super::file::{
    ArrayOperation, CatchUp, ColumnType, NotifyOn, Overlap, Rerun, SegmentMode, SmtpSecurity,
    SourceFormat, TriggerKind,
};
use crate::template::Template;

/// A pipeline that passed every check `config` can make without touching the network.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file stem of the pipeline file.
    pub name: String,
    /// The pipeline file.
    pub file: PathBuf,
    /// Free text from the file.
    pub description: Option<String>,
    /// Where to send.
    pub connection: Connection,
    /// What to read.
    pub source: Source,
    /// What to send it as.
    pub target: Target,
    /// Requests in flight: a fixed number, or adapted to CleverTap's answers.
    pub thread_count: ThreadCount,
    /// What to do with a record that breaks CleverTap's rules.
    pub on_invalid_record: OnInvalidRecord,
    /// When the daemon runs it (with `TriggerKind::Schedule`).
    pub schedule: Option<Schedule>,
    /// What starts it in the daemon.
    pub trigger: TriggerKind,
    /// Which columns are sent, renamed, converted or computed; `None` sends every column as is.
    pub output: Option<OutputMapping>,
    /// Segment and audience names for templates.
    pub metadata: Metadata,
    /// For `custom_list`: the segment.
    pub custom_list: Option<CustomList>,
    /// With `OnInvalidRecord::Skip`: invalid records allowed before the run stops.
    pub max_invalid_records: Option<u64>,
    /// With `OnInvalidRecord::Skip`: share of invalid records allowed before the run stops.
    pub max_invalid_ratio: Option<f64>,
    /// Whether a file delivered in full is sent again.
    pub rerun: Rerun,
    /// Which records a run sends.
    pub send: Send,
    /// Who hears about finished runs.
    pub notifications: Vec<Notification>,
}

/// A notification of finished runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Which runs.
    pub on: NotifyOn,
    /// Where to.
    pub channel: Channel,
}

/// Where a notification goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Channel {
    /// An email.
    Email(Email),
    /// An HTTP POST.
    Webhook(Webhook),
}

/// An email notification, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    /// SMTP host.
    pub host: String,
    /// SMTP port.
    pub port: u16,
    /// How the connection is protected.
    pub security: SmtpSecurity,
    /// User and password, when the server wants a login.
    pub login: Option<(String, Secret)>,
    /// The sender mailbox, e.g. `tapline <tapline@example.com>`.
    pub from: String,
    /// 1 to 20 recipient mailboxes.
    pub to: Vec<String>,
}

/// A webhook notification, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// An http(s) URL.
    pub url: String,
    /// The HMAC-SHA256 key that signs the body.
    pub secret: Option<Secret>,
}

/// A custom-list segment to create or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomList {
    /// The segment's name.
    pub name: String,
    /// A CleverTap admin's email.
    pub uploader_email: String,
    /// Whether it makes a new segment or replaces an existing one's list.
    pub mode: SegmentMode,
}

/// The output mapping, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputMapping {
    /// Send the source columns not listed in `columns` too.
    pub export_all_columns: bool,
    /// Renamed, converted or picked columns.
    pub columns: Vec<ColumnMapping>,
    /// Computed columns.
    pub strings: Vec<StringColumn>,
}

/// One mapped column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    /// The source column.
    pub source: String,
    /// The name it is sent under.
    pub name: String,
    /// The conversion of its text, if any.
    pub kind: Option<ColumnType>,
    /// Its own list operation, if any.
    pub array_operation: Option<ArrayOperation>,
}

/// A computed column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringColumn {
    /// The column name.
    pub name: String,
    /// Its template.
    pub template: Template,
}

/// Names from the pipeline's `segment:` and `audience:` blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// `segment.id`.
    pub segment_id: Option<String>,
    /// `segment.name`.
    pub segment_name: Option<String>,
    /// `audience.id`.
    pub audience_id: Option<String>,
}

/// A resolved CleverTap connection.
#[derive(Clone)]
pub struct Connection {
    /// The connection's name in `connections.yaml`, or `inline`.
    pub name: String,
    /// The CleverTap account (Project ID).
    pub account_id: String,
    /// The account passcode.
    pub passcode: Secret,
    /// The API base URL without a trailing slash, e.g. `https://in1.api.clevertap.com`.
    pub base_url: String,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// The account's limits on records.
    pub limits: AccountLimits,
}

impl Connection {
    /// The account a CleverTap client sends to.
    pub fn account(&self) -> crate::clevertap::Account<'_> {
        crate::clevertap::Account {
            connection: &self.name,
            account_id: &self.account_id,
            passcode: self.passcode.expose(),
            base_url: &self.base_url,
            request_timeout: self.request_timeout,
        }
    }
}

/// Limits of a CleverTap account on records, CleverTap's defaults unless the connection
/// says otherwise (`limits:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountLimits {
    /// Properties one event may carry.
    pub event_properties: usize,
    /// Requests in flight the account lets tapline have, below each API's own limit
    /// (`limits.concurrency`); none: the API's limit.
    pub concurrency: Option<usize>,
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits {
            event_properties: crate::clevertap::rules::DEFAULT_EVENT_PROPERTIES,
            concurrency: None,
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("account_id", &self.account_id)
            .field("passcode", &self.passcode)
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// A secret: a CleverTap passcode, an SMTP password, a webhook signing key. It prints as
/// `***` so it cannot leak through `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A URL as it may be shown or stored: user info (`user:password@`) becomes `***@` and
/// every query value `***`, so a secret written into a URL never reaches a log, an error, a
/// notification or the state store. The rest stays, so the text still says where it points
/// and is the same for the same URL.
pub fn redacted_url(url: &str) -> String {
    let (url, _fragment) = url.split_once('#').unwrap_or((url, ""));
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = match before_query.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, before_query),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once('@') {
        Some((_user_info, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let mut shown = String::new();
    if let Some(scheme) = scheme {
        shown.push_str(scheme);
        shown.push_str("://");
    }
    shown.push_str(&host);
    shown.push_str(path);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _value)) => format!("{key}=***"),
                None => pair.to_string(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

/// How a source file is compressed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain text.
    None,
    /// `.gz` (every member of a multi-member file is read).
    Gzip,
    /// `.zst` (every frame is read).
    Zstd,
}

/// What a pipeline reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file (CSV, TSV, JSON Lines, Parquet).
    File(FileSource),
    /// The result of a SQL query.
    Query(QuerySource),
}

impl Source {
    /// The zone of dates and times without one of their own.
    pub fn timezone(&self) -> chrono_tz::Tz {
        match self {
            Source::File(file) => file.timezone,
            Source::Query(query) => query.timezone,
        }
    }

    /// The file, for a file source.
    pub fn file(&self) -> Option<&FileSource> {
        match self {
            Source::File(file) => Some(file),
            Source::Query(_) => None,
        }
    }

    /// The file's path (or `file_arrival` pattern); `None` for a query.
    pub fn path(&self) -> Option<&Path> {
        self.file().map(|file| file.path.as_path())
    }

    /// How often a `file_arrival` pipeline's files are listed, when they are.
    pub fn poll(&self) -> Option<std::time::Duration> {
        self.file().and_then(|file| file.poll)
    }

    /// Points a file source at one file: an arrived file that matches its pattern.
    pub fn set_path(&mut self, path: PathBuf) {
        if let Source::File(file) = self {
            file.path = path;
        }
    }

    /// What it is, for messages: the file's path, or `the query of database `warehouse``.
    pub fn describe(&self) -> String {
        match self {
            Source::File(file) => format!("`{}`", file.path.display()),
            Source::Query(query) => format!("the query on `{}`", query.database.name),
        }
    }
}

/// A source file and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// Absolute or pipeline-relative-resolved path, or an object's `s3://bucket/key`
    /// ([`crate::config::location::Location`] tells which); with `TriggerKind::FileArrival`, a
    /// pattern whose file name may hold `*` and `?`.
    pub path: PathBuf,
    /// Layout of the rows.
    pub format: SourceFormat,
    /// How the file is compressed.
    pub compression: Compression,
    /// The zone of dates and times without one of their own.
    pub timezone: chrono_tz::Tz,
    /// The only columns a run reads, when the output mapping needs fewer than all: a
    /// Parquet file's other columns are not even decoded. `None`: every column.
    pub projection: Option<Vec<String>>,
    /// With `trigger: file_arrival`, how often the daemon lists what matches `path`
    /// (`None`: a local folder's events only).
    pub poll: Option<std::time::Duration>,
}

/// A SQL query on a PostgreSQL database, whose result rows are the source rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerySource {
    /// Where to run it.
    pub database: Database,
    /// The SQL text.
    pub query: String,
    /// The column whose highest delivered value the next run binds as `$1`.
    pub incremental: Option<String>,
    /// The zone of `date` and `timestamp` values (without a zone of their own).
    pub timezone: chrono_tz::Tz,
}

/// A database, resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct Database {
    /// Its entry's name in `connections.yaml`, or `inline`.
    pub name: String,
    /// What it speaks.
    pub dialect: Dialect,
    /// Its URL with the password; empty when validate could not resolve it (an unset
    /// variable on this machine).
    pub url: Secret,
}

/// The SQL a database speaks, as tapline reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL, and the warehouses that speak its protocol.
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
}

impl Dialect {
    /// The placeholder an incremental query binds the watermark to.
    pub fn placeholder(self) -> &'static str {
        match self {
            Dialect::Postgres => "$1",
            Dialect::Mysql => "?",
        }
    }
}

impl Database {
    /// The URL with its password masked, for messages and logs:
    /// `postgres://tapline:***@db:5432/crm`.
    pub fn shown(&self) -> String {
        redacted_database_url(self.url.expose())
    }
}

/// A database URL with the password (in the user info, or a `password=` parameter) masked;
/// the user, host, database and other parameters stay, so the text says where it points.
pub fn redacted_database_url(url: &str) -> String {
    // libpq's `key=value` form.
    if !url.contains("://") && url.contains('=') {
        return crate::pg::shown_key_values(url);
    }
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = before_query.split_once("://").unwrap_or(("", before_query));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{user_info}@{host}"),
        },
        None => authority.to_string(),
    };
    let mut shown = if scheme.is_empty() {
        format!("{authority}{path}")
    } else {
        format!("{scheme}://{authority}{path}")
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .field("dialect", &self.dialect)
            .field("url", &self.shown())
            .finish()
    }
}

/// What the records become in CleverTap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `user_profiles` / `upload_profiles`.
    Profiles {
        /// What JSON-array values do.
        array_operation: ArrayOperation,
    },
    /// `user_events`.
    Events,
    /// `user_profiles` / `upload_device_tokens`.
    DeviceTokens,
    /// `user_profiles` / `demerge`.
    Demerge,
    /// `user_profiles` / `update_subscription`.
    Subscriptions,
    /// `user_profiles` / `disassociate_phone`.
    DisassociatePhone,
    /// `user_profiles` / `delete_profiles`.
    DeleteProfiles,
    /// `custom_list`: the pipeline's [`CustomList`] says which segment.
    CustomList,
}

impl Target {
    /// A short name for summaries: `profiles`, `events`, ...
    pub fn noun(&self) -> &'static str {
        match self {
            Target::Profiles { .. } => "profiles",
            Target::Events => "events",
            Target::DeviceTokens => "device tokens",
            Target::Demerge => "demerges",
            Target::Subscriptions => "subscription changes",
            Target::DisassociatePhone => "phone disassociations",
            Target::DeleteProfiles => "profile deletions",
            Target::CustomList => "custom-list identities",
        }
    }

    /// Whether CleverTap cannot undo the operation.
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Target::Demerge | Target::DisassociatePhone | Target::DeleteProfiles
        )
    }
}

/// What to do with an invalid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalidRecord {
    /// Stop the run at the first one.
    Stop,
    /// Skip it, report it, go on.
    Skip,
}

pub use crate::scheduler::Schedule;

/// Whether a source path is a pattern (`*`, `?`) rather than one file: config checks that
/// only `file_arrival` pipelines have one; `source::arrival` matches and lists its files.
pub fn is_pattern(path: &std::path::Path) -> bool {
    path.to_string_lossy().contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn urls_lose_their_secrets_and_keep_where_they_point() {
        for (url, shown) in [
            ("https://api.clevertap.com", "https://api.clevertap.com"),
            ("http://127.0.0.1:9000/", "http://127.0.0.1:9000/"),
            ("http://user:PW@proxy:8080", "http://***@proxy:8080"),
            ("https://user@host/path", "https://***@host/path"),
            (
                "https://hooks.example.com/t?token=abc&x=1&flag",
                "https://hooks.example.com/t?token=***&x=***&flag",
            ),
            ("https://a:b@host/p?k=v#frag", "https://***@host/p?k=***"),
            ("https://host/p@q", "https://host/p@q"),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
    }
}

/// Which records a run sends (`send:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    /// Every record of the source.
    All,
    /// Only records whose fingerprint differs from the last one CleverTap accepted.
    Changes {
        /// Days an event's fingerprint is kept after its `ts`.
        event_days: u32,
    },
}

/// How many requests a pipeline keeps in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadCount {
    /// At most this many, 1 to 10 (within the API's limit).
    Fixed(usize),
    /// As many as CleverTap's answers say, up to the API's limit (`thread_count: auto`).
    Auto,
}

impl std::fmt::Display for ThreadCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThreadCount::Fixed(count) => write!(f, "{count}"),
            ThreadCount::Auto => f.write_str("auto"),
        }
    }
}
