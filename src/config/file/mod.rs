//! The pipeline and connections files as written: serde types that mirror the YAML.
//!
//! Their `///` docs become the JSON Schema (`tapline schema`) that editors show, so they are
//! written for the person editing a pipeline. Nothing here is validated beyond its shape;
//! [`super::validate`] turns these into the checked model in [`super::model`].
//!
//! The pipeline file is kept in one file though it is long: it is the file format, read top
//! to bottom as `docs/pipeline-reference.md` is, and most of it is documentation. The
//! connections (inline in a pipeline, or `connections.yaml`) are in `connections.rs`.

use schemars::JsonSchema;
use serde::Deserialize;

// CleverTap's regions are the API's, and a schedule's options the scheduler's; the files
// name them, so they are read here.
pub use crate::clevertap::wire::Region;
pub use crate::scheduler::{CatchUp, Overlap};

mod connections;
pub use connections::{ConnectionFile, ConnectionRef, ConnectionsFile};

/// A tapline pipeline: one source file delivered to one CleverTap target.
///
/// The pipeline's name is the file name without `.yaml`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "tapline pipeline")]
#[expect(
    dead_code,
    reason = "the JSON Schema of a whole pipeline file: validate reads its sections one by one, each as its own type"
)]
pub struct PipelineFile {
    /// Free text that says what this pipeline is for; shown in run summaries.
    ///
    /// Example: `Nightly VIP profile sync`.
    #[serde(default)]
    pub description: Option<String>,

    /// The CleverTap account to send to: the name of a connection in `connections.yaml` in the
    /// same folder (for example `prod`), or a connection written out here.
    pub connection: ConnectionRef,

    /// What to read: a file (`path`) or the result of a SQL query on a PostgreSQL database
    /// (`database` and `query`).
    pub source: SourceFile,

    /// What to create or change in CleverTap.
    pub target: TargetFile,

    /// How many requests may be in flight to CleverTap at once: a number from 1 to 10
    /// (default 5), or `auto`.
    ///
    /// CleverTap answers HTTP 429 above 15 concurrent uploads per account, so keep the sum
    /// over pipelines that run at the same time at or below 15. `auto` starts at 4 and
    /// adapts to CleverTap's answers: it grows while answers come back quickly, up to the
    /// API's limit (15 for uploads, 3 for the other APIs), and backs off on a 429, a
    /// retryable failure or round trips well above their average. The best choice where
    /// tapline is the account's only bulk writer, and safe where others share it.
    #[serde(default)]
    pub thread_count: Option<ThreadCountFile>,

    /// What to do with a record that breaks CleverTap's rules (a missing identity, a bad
    /// email, an unknown event name, a value over 512 bytes...).
    ///
    /// `false` (default): stop the run at the first one. `true`: skip it, write it with the
    /// reason to the rejects file, and go on.
    #[serde(default)]
    pub skip_invalid_records: Option<bool>,

    /// When `tapline daemon` runs this pipeline. Leave it out to run only on demand.
    #[serde(default)]
    pub schedule: Option<ScheduleFile>,

    /// What starts this pipeline in `tapline daemon`: `schedule` (default: its `schedule`)
    /// or `file_arrival` (each new file that matches `source.path`, which may then hold `*`
    /// and `?` in the file name, e.g. `exports/vip_*.csv`; each file is sent once).
    #[serde(default)]
    pub trigger: Option<TriggerKind>,

    /// Which columns are sent, under which names and types, plus computed columns
    /// (Treasure Data's Output Mapping and String Builder). Leave it out to send every
    /// column unchanged.
    #[serde(default)]
    pub output: Option<OutputFile>,

    /// The segment this data belongs to, for `{segment_id}` and `{segment_name}` in
    /// `output.strings`. Example: `{ id: "1234", name: VIP }`.
    #[serde(default)]
    pub segment: Option<SegmentFile>,

    /// The audience (parent segment) this data belongs to, for `{audience_id}` in
    /// `output.strings`. Example: `{ id: "42" }`.
    #[serde(default)]
    pub audience: Option<AudienceFile>,

    /// With `skip_invalid_records: true`: stop the run, and fail it, once more than this many
    /// records are invalid (skipped, or rejected by CleverTap). Leave it out for no limit.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_invalid_records: Option<i64>,

    /// With `skip_invalid_records: true`: stop the run, and fail it, once more than this share
    /// of the records read (0.0 to 1.0; `0.05` is 5%) are invalid. Judged from the 1000th
    /// record on, and at the end of the file.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_invalid_ratio: Option<f64>,

    /// Whether a later run sends a file that was already delivered in full:
    /// `changed` (default) only when its content changed, so a schedule that re-reads an
    /// unchanged file sends no duplicates; `always` sends the whole file on every run.
    #[serde(default)]
    pub rerun: Option<Rerun>,

    /// Which records a run sends: `all` (default) every record of the source, or `changes`
    /// only what CleverTap does not have yet: new or changed profiles (by identity), events
    /// never accepted before (a repeated event is not sent twice, whichever file or run it
    /// comes from), subscriptions whose status changed. Needs the state store; `tapline run
    /// --full` sends everything once and records it anew.
    #[serde(default)]
    pub send: Option<SendMode>,

    /// Settings of `send: changes`. Example: `changes: { event_days: 30 }`.
    #[serde(default)]
    pub changes: Option<ChangesFile>,

    /// Who hears about finished runs: emails and webhooks, on failure, success or always.
    /// Example: `- { on: failure, webhook: { url: "https://hooks.example.com/tapline" } }`.
    #[serde(default)]
    pub notifications: Option<Vec<NotificationFile>>,
}

/// `thread_count` as written: a number, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ThreadCountFile {
    /// This many requests in flight at most, 1 to 10.
    Fixed(#[schemars(range(min = 1, max = 10))] i64),
    /// As many as CleverTap's answers say, up to the API's limit.
    Adaptive(Auto),
}

/// The word `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Auto {
    /// Adapt to CleverTap's answers.
    Auto,
}

/// What starts a pipeline in the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// The cron `schedule`.
    Schedule,
    /// A new file matching `source.path`.
    FileArrival,
}

/// Which records a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SendMode {
    /// Every record of the source.
    All,
    /// Only records CleverTap does not have yet, as far as earlier runs of this pipeline to
    /// this account know.
    Changes,
}

/// Settings of change detection.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangesFile {
    /// Days an event is remembered after its `ts` (default 90): an event older than that,
    /// found again in a file, is sent as new. Keeps the state store from growing forever.
    #[serde(default)]
    #[schemars(range(min = 1, max = 3650))]
    pub event_days: Option<u32>,
}

/// Whether a delivered file is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rerun {
    /// Only when the file's content changed since it was delivered.
    Changed,
    /// On every run.
    Always,
}

/// One notification: when, and where to.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationFile {
    /// When to notify: `failure` (default: the run failed or stopped), `success`, or `always`.
    #[serde(default)]
    pub on: Option<NotifyOn>,

    /// Send an email through an SMTP server. Give `email` or `webhook`, not both.
    #[serde(default)]
    pub email: Option<EmailFile>,

    /// POST a JSON body (pipeline, run id, status, counts, first errors) to a URL.
    #[serde(default)]
    pub webhook: Option<WebhookFile>,
}

/// Which runs a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// Runs that failed or stopped.
    Failure,
    /// Runs that succeeded.
    Success,
    /// Every run.
    Always,
}

/// An email notification.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailFile {
    /// The SMTP server, e.g. `smtp.example.com`.
    pub smtp_host: String,

    /// Its port (default: 587 with `starttls`, 465 with `tls`, 25 with `none`).
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535))]
    pub smtp_port: Option<i64>,

    /// `starttls` (default), `tls` (TLS from the first byte), or `none` (plain text: only for
    /// a relay on the same machine).
    #[serde(default)]
    pub security: Option<SmtpSecurity>,

    /// The user to log in as; leave it out for a server that needs no login.
    #[serde(default)]
    pub username: Option<String>,

    /// The password, from the environment: `${SMTP_PASSWORD}`. Or use `password_file`.
    #[serde(default)]
    pub password: Option<String>,

    /// A file holding the password (e.g. a systemd credential), relative to this file.
    #[serde(default)]
    pub password_file: Option<String>,

    /// The sender, e.g. `tapline <tapline@example.com>`.
    pub from: String,

    /// Up to 20 recipients.
    #[schemars(length(min = 1, max = 20))]
    pub to: Vec<String>,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587).
    Starttls,
    /// TLS from the start (port 465).
    Tls,
    /// No encryption: only for a local relay.
    None,
}

/// A webhook notification.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// The URL to POST to (http or https).
    pub url: String,

    /// A key to sign the body with HMAC-SHA256, from the environment: `${WEBHOOK_SECRET}`.
    /// The signature goes in the `X-Tapline-Signature: sha256=<hex>` header.
    #[serde(default)]
    pub secret: Option<String>,

    /// A file holding the signing key, relative to this file.
    #[serde(default)]
    pub secret_file: Option<String>,
}

/// The output mapping.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputFile {
    /// `true` (default): send every source column, with `columns` renaming or typing some.
    /// `false`: send only the columns listed in `columns` and `strings`.
    #[serde(default)]
    pub export_all_columns: Option<bool>,

    /// Columns to rename, convert, or (with `export_all_columns: false`) pick.
    /// Example: `- { source: email_address, name: Email }`.
    #[serde(default)]
    pub columns: Option<Vec<OutputColumnFile>>,

    /// Computed columns built from a template (the String Builder). Example:
    /// `- { name: Campaign, value: "vip-{timestamp:%Y%m%d}-{segment_name}" }`.
    #[serde(default)]
    pub strings: Option<Vec<StringColumnFile>>,
}

/// One mapped column.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputColumnFile {
    /// The source column to read.
    pub source: String,

    /// The name to send it under (default: the source name), e.g. `Email`.
    #[serde(default)]
    pub name: Option<String>,

    /// Convert the CSV text to this type before sending: `string`, `integer`, `number`,
    /// `boolean`, `date` (sent as `$D_<epoch seconds>`), `array` (a JSON list, or
    /// comma-separated text) or `json`. A value that does not convert is an invalid record.
    #[serde(default, rename = "type")]
    pub kind: Option<ColumnType>,

    /// For `upload_profiles`, this column's own list operation, overriding
    /// `target.array_operation`: `replace`, `append` or `remove`.
    #[serde(default)]
    pub array_operation: Option<ArrayOperation>,
}

/// The type a mapped column is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// Text, unchanged.
    String,
    /// A whole number.
    Integer,
    /// A number.
    Number,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    Boolean,
    /// A date or time (epoch seconds, ISO-8601, `YYYY-MM-DD[ HH:MM:SS]`), sent as `$D_<epoch seconds>`.
    Date,
    /// A list of strings: a JSON list, or comma-separated text.
    Array,
    /// Any JSON value, parsed from the text.
    Json,
}

/// A computed column.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StringColumnFile {
    /// The column name to send.
    pub name: String,

    /// The template: literal text with `{timestamp}` (run start, UTC; `{timestamp:%Y-%m-%d}`
    /// for a format), `{segment_id}`, `{segment_name}`, `{audience_id}`, `{pipeline}`,
    /// `{run_id}` and `{column:NAME}` (another column's value). `{{` and `}}` are braces.
    pub value: String,
}

/// Segment metadata.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentFile {
    /// The segment ID, for `{segment_id}`.
    #[serde(default)]
    pub id: Option<String>,
    /// The segment name, for `{segment_name}`.
    #[serde(default)]
    pub name: Option<String>,
}

/// Audience metadata.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AudienceFile {
    /// The audience (parent segment) ID, for `{audience_id}`.
    #[serde(default)]
    pub id: Option<String>,
}

/// What a pipeline reads: a file (`path`), or the result of a SQL query (`database` and
/// `query` or `query_file`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    /// Path to the file, relative to this pipeline file's folder, or an object in S3 or an
    /// S3-compatible store: `s3://bucket/key` (credentials, region and `AWS_ENDPOINT_URL`
    /// from the standard AWS chain). A `.gz` ending means gzip-compressed, `.zst`
    /// zstd-compressed. Example: `data/vip_users.csv`. With `trigger: file_arrival` the
    /// file name may hold `*` and `?`: `exports/vip_*.csv`, `s3://drops/in/*.csv.gz`.
    #[serde(default)]
    pub path: Option<String>,

    /// With `trigger: file_arrival`: how often, in seconds, the daemon lists the files
    /// matching `path` (1 to 86400). Objects in a bucket are found by listing, default
    /// every 60 s; local files are found as they are written, and also by a listing this
    /// often when set (for a network file system that sends no events).
    #[serde(default)]
    #[schemars(range(min = 1, max = 86400))]
    pub poll_seconds: Option<u32>,

    /// `csv`, `tsv`, `jsonl` or `parquet`. Leave it out to go by the file name (`.csv`,
    /// `.tsv`, `.jsonl`/`.ndjson`, each optionally followed by `.gz` or `.zst`; `.parquet`).
    #[serde(default)]
    pub format: Option<SourceFormat>,

    /// The database to query: PostgreSQL (or a warehouse that speaks its protocol: Redshift,
    /// CockroachDB...) or MySQL/MariaDB. The name of an entry in `connections.yaml` with
    /// `postgres` or `mysql`, or one written out here, `{ postgres: ${WAREHOUSE_URL} }`.
    #[serde(default)]
    pub database: Option<DatabaseRef>,

    /// The SQL query whose result rows are the records, with columns named as CleverTap
    /// wants them: `SELECT user_id AS identity, email AS "Email" FROM crm.users`.
    #[serde(default)]
    pub query: Option<String>,

    /// A file holding the query, relative to this pipeline file's folder, instead of `query`.
    #[serde(default)]
    pub query_file: Option<String>,

    /// Read only rows newer than the last fully delivered run: the query returns `column`,
    /// and each run binds the highest value delivered so far as `$1` (MySQL: `?`; NULL on
    /// the first run).
    #[serde(default)]
    pub incremental: Option<IncrementalFile>,

    /// The IANA time zone that dates and times without a zone of their own are read in
    /// (`ts` as `2024-05-01 10:00:00`, `DOB` as `1990-05-01`, a `type: date` column, a
    /// database `date` or `timestamp`), so a date lands on the right day for an account
    /// outside UTC. Epoch numbers and times with an offset are not affected. Default `UTC`;
    /// example: `Asia/Kolkata`.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// A database given by name or written inline.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DatabaseRef {
    /// The name of an entry in `connections.yaml` beside this file that has `postgres` or
    /// `mysql`.
    Named(String),
    /// A database written out in the pipeline.
    Inline(DatabaseFile),
}

/// A database: its URL, inline or in a file; PostgreSQL (`postgres`) or MySQL/MariaDB
/// (`mysql`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseFile {
    /// `postgres://user:password@host:5432/db?sslmode=require` (or libpq's `key=value`
    /// string; `sslmode`, `sslrootcert`, `sslcert` and `sslkey` as libpq means them); write
    /// `${WAREHOUSE_URL}` so the password stays out of version control.
    #[serde(default)]
    pub postgres: Option<String>,

    /// A file holding the URL.
    #[serde(default)]
    pub postgres_file: Option<String>,

    /// A MySQL or MariaDB database: `mysql://user:password@host:3306/db?ssl-mode=REQUIRED`
    /// (`ssl-mode`: `DISABLED`, `PREFERRED` (default), `REQUIRED`, `VERIFY_CA`,
    /// `VERIFY_IDENTITY`, with `ssl-ca=FILE`); write `${APP_DB_URL}` so the password stays out
    /// of version control.
    #[serde(default)]
    pub mysql: Option<String>,

    /// A file holding the MySQL URL.
    #[serde(default)]
    pub mysql_file: Option<String>,
}

/// How a query reads only what is new.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncrementalFile {
    /// A column of the query's result (for example `updated_at`): after a run delivered every
    /// row, its highest value is kept, and the next run binds it as `$1`. Write the query so
    /// that NULL reads everything: `WHERE $1::timestamptz IS NULL OR updated_at > $1`.
    pub column: String,
}

/// How a source file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// Comma-separated values with a header row; values may be quoted with `"`.
    Csv,
    /// Tab-separated values with a header row; no quoting.
    Tsv,
    /// One JSON object per line; JSON types (numbers, booleans, arrays) are kept.
    Jsonl,
    /// Apache Parquet: typed columns, read one row group at a time.
    Parquet,
    /// A tapline rejects file, read back by `tapline replay`; not for pipeline files.
    #[serde(skip)]
    #[schemars(skip)]
    Rejects,
    /// The rows of a query, as a run keeps them to resume from; not for pipeline files.
    #[serde(skip)]
    #[schemars(skip)]
    Snapshot,
}

/// The CleverTap entity and operation to send records to.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    /// `user_profiles` (one record per row: `identity` or `objectId`, then profile properties),
    /// `user_events` (`evtName`, `identity` or `objectId`, optional `ts`, then event
    /// properties) or `custom_list` (`identity`, and `type`: `i` identity or `g` CleverTap ID).
    pub entity: Entity,

    /// For `user_profiles`: `upload_profiles` (default), `upload_device_tokens`, `demerge`,
    /// `update_subscription`, `disassociate_phone` or `delete_profiles`.
    #[serde(default)]
    pub operation: Option<ProfileOperation>,

    /// Must be `true` for `demerge`, `disassociate_phone` and `delete_profiles`: CleverTap
    /// cannot undo them.
    /// Try the pipeline with `tapline run --dry-run` first: it lists every identity or phone
    /// number that would be affected.
    #[serde(default)]
    pub confirm_destructive: Option<bool>,

    /// For `entity: custom_list`: the segment to create or update.
    #[serde(default)]
    pub custom_list: Option<CustomListFile>,

    /// For `upload_profiles`: what a JSON-array value (`["a","b"]`) does to a multi-value
    /// property. `replace` (default) sets the whole list, `append` adds the values (`$add`),
    /// `remove` takes them out (`$remove`).
    #[serde(default)]
    pub array_operation: Option<ArrayOperation>,
}

/// A CleverTap data entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// User profiles.
    UserProfiles,
    /// User events.
    UserEvents,
    /// A custom-list segment (an audience) from `identity` and `type` columns.
    CustomList,
}

/// A custom-list segment.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomListFile {
    /// The segment's name in CleverTap, e.g. `VIP users`.
    pub name: String,

    /// The email of a CleverTap user with the Admin role; CleverTap mails the processing
    /// result there and refuses other emails.
    pub uploader_email: String,

    /// `create` (default): make a new segment, and fail if one with this name exists.
    /// `update`: replace the list of an existing segment (for scheduled runs).
    #[serde(default)]
    pub segment_mode: Option<SegmentMode>,
}

/// Whether a custom list creates or updates its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SegmentMode {
    /// Create a new segment (`replace: false`).
    Create,
    /// Replace an existing segment's list (`replace: true`).
    Update,
}

/// An operation on user profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProfileOperation {
    /// Create or update profiles through `/1/upload`.
    UploadProfiles,
    /// Attach push tokens to profiles: columns `objectId`, `id`, `type` (apns, fcm or gcm, the
    /// types CleverTap's API documents; chrome, wns and mpns are sent with a warning), and
    /// `p256dh` / `auth` for chrome.
    UploadDeviceTokens,
    /// Split merged profiles apart again: column `identity`. Cannot be undone.
    Demerge,
    /// Unsubscribe or resubscribe an email address or phone number for every profile that
    /// has it: columns `type` (email, phone), `value`, `status` (Unsubscribe, Resubscribe).
    UpdateSubscription,
    /// Detach a recycled phone number from the profile that uses it as identity: column
    /// `value` (E.164). Cannot be undone.
    DisassociatePhone,
    /// Delete profiles and everything CleverTap holds about them (right to erasure): a
    /// column `identity`, or a column `guid` (the CleverTap ID); a row fills one of them.
    /// Cannot be undone.
    DeleteProfiles,
}

/// What a JSON-array value does to a multi-value profile property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArrayOperation {
    /// Set the property to exactly these values.
    #[default]
    Replace,
    /// Add these values to the property (`$add`).
    Append,
    /// Remove these values from the property (`$remove`).
    Remove,
}

/// When the daemon runs a pipeline.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// A cron expression: five fields (`0 3 * * *` = 03:00 every day), an optional sixth
    /// seconds field first, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub cron: String,

    /// The IANA time zone the cron expression is read in, for example `Asia/Kolkata`
    /// (default `UTC`). Abbreviations such as `PST` are not accepted.
    #[serde(default)]
    pub timezone: Option<String>,

    /// A fire that comes while the previous run still goes: `skip` (default: it is logged and
    /// dropped) or `queue` (one run starts as soon as the current one ends).
    #[serde(default)]
    pub overlap: Option<Overlap>,

    /// Fires missed while the daemon was not running: `skip` (default) or `latest` (run once
    /// at start if at least one fire was missed).
    #[serde(default)]
    pub catch_up: Option<CatchUp>,
}
