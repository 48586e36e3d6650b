//! The shared state store: the same tables as the embedded store, in a PostgreSQL database
//! that every tapline process of a deployment uses (CronJobs on any node, Airflow tasks,
//! several daemons), plus what only processes on many machines need: leases instead of file
//! locks, fires and arrivals claimed once, and request slots per CleverTap account.
//!
//! [`StateStore`] is synchronous; tokio-postgres is not. The connections live on one small
//! runtime of their own (one thread, [`runtime`]), and each method waits for its statements
//! with [`block_on`], which needs no runtime: the runner's threads wait as they do on SQLite.
//! A lost connection (PostgreSQL restarted) is made again and the method retried for as long
//! as a lease lasts (`--lease-seconds`; longer would be in vain: by then another process may
//! hold this one's leases): every write is safe to repeat, so a retried write whose first
//! attempt did commit changes nothing. After that the method fails, and a run stops with its
//! checkpoint as last written.

mod coordinator;
mod fingerprints;
mod runs;
mod slots;

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use coordinator::Coordinator;
pub(super) use coordinator::Lease;

use super::checkpoint::LastDelivery;
use super::{
    Accepted, Checkpoint, CheckpointKey, Checkpoints, Delivered, Fingerprint, History, LockWait,
    Locks, PipelineLock, RecordFingerprints, RunEntry, RunFinish, RunStart, SettingsDigest,
    SharedSettings, StateError, Triggers, Watermarks, now_ms,
};
use crate::changes::KnownFingerprints;
use crate::engine::SharedSlots;
use crate::outcome::{Counts, SettledLines};
use crate::pg;
use crate::source::arrival::Arrival;

/// The pause between two attempts to reconnect.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// Migrations, in order: the schema version (in `tapline_schema`) is the number applied.
/// The tables are those of the embedded store (see `state::MIGRATIONS` for what each holds),
/// with leases and request slots.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE runs (
        run_id        text PRIMARY KEY,
        pipeline      text NOT NULL,
        pipeline_file text NOT NULL,
        trigger       text NOT NULL,
        started_at    bigint NOT NULL,
        finished_at   bigint,
        status        text NOT NULL,
        read          bigint NOT NULL DEFAULT 0,
        accepted      bigint NOT NULL DEFAULT 0,
        skipped       bigint NOT NULL DEFAULT 0,
        rejected      bigint NOT NULL DEFAULT 0,
        failed        bigint NOT NULL DEFAULT 0,
        requests      bigint NOT NULL DEFAULT 0,
        retries       bigint NOT NULL DEFAULT 0,
        resumed_from  text,
        rows_resumed  bigint NOT NULL DEFAULT 0,
        rejects_file  text,
        stop_reason   text,
        first_errors  text NOT NULL DEFAULT '[]',
        warnings      text NOT NULL DEFAULT '[]',
        unchanged     bigint NOT NULL DEFAULT 0,
        scheduled_for bigint,
        runner        text
    );
    CREATE INDEX runs_by_pipeline ON runs (pipeline, started_at);
    CREATE TABLE checkpoints (
        pipeline      text NOT NULL,
        destination   text NOT NULL,
        run_id        text NOT NULL,
        size          bigint NOT NULL,
        modified_ns   bigint NOT NULL,
        sha256        text NOT NULL,
        settings      text NOT NULL DEFAULT '',
        PRIMARY KEY (pipeline, destination)
    );
    CREATE TABLE settled_lines (
        pipeline      text NOT NULL,
        destination   text NOT NULL,
        first_line    bigint NOT NULL,
        last_line     bigint NOT NULL
    );
    CREATE INDEX settled_lines_by_checkpoint ON settled_lines (pipeline, destination);
    CREATE TABLE deliveries (
        pipeline      text NOT NULL,
        destination   text NOT NULL,
        sha256        text NOT NULL,
        size          bigint NOT NULL,
        run_id        text NOT NULL,
        delivered_at  bigint NOT NULL,
        settings      text NOT NULL DEFAULT '',
        PRIMARY KEY (pipeline, destination, sha256)
    );
    CREATE TABLE fires (
        pipeline      text PRIMARY KEY,
        fired_at      bigint NOT NULL
    );
    CREATE TABLE arrivals (
        pipeline      text NOT NULL,
        path          text NOT NULL,
        size          bigint NOT NULL,
        modified_ns   bigint NOT NULL,
        seen_at       bigint NOT NULL,
        PRIMARY KEY (pipeline, path, size, modified_ns)
    );
    CREATE TABLE fingerprint_journal (
        id            bigserial PRIMARY KEY,
        scope         bigint NOT NULL,
        entries       bytea NOT NULL
    );
    CREATE INDEX fingerprint_journal_by_scope ON fingerprint_journal (scope, id);
    CREATE TABLE record_fingerprints (
        key           bigint PRIMARY KEY,
        scope         bigint NOT NULL,
        content       bigint NOT NULL,
        expires_at    bigint
    );
    CREATE INDEX record_fingerprints_by_scope ON record_fingerprints (scope, key);
    CREATE TABLE fingerprint_scopes (
        scope         bigint PRIMARY KEY,
        pipeline      text NOT NULL,
        destination   text NOT NULL
    );
    CREATE TABLE watermarks (
        pipeline      text NOT NULL,
        destination   text NOT NULL,
        value         text NOT NULL,
        run_id        text NOT NULL,
        updated_at    bigint NOT NULL,
        PRIMARY KEY (pipeline, destination)
    );
    -- One run of a pipeline at a time: the process (`holder`) that renews the lease.
    CREATE TABLE leases (
        pipeline      text PRIMARY KEY,
        holder        text NOT NULL,
        acquired_at   timestamptz NOT NULL,
        renewed_at    timestamptz NOT NULL,
        expires_at    timestamptz NOT NULL
    );
    -- A CleverTap account's requests in flight, counted across processes: one row per
    -- slot; a request holds a free (or expired) one.
    CREATE TABLE request_slots (
        account       text NOT NULL,
        api           text NOT NULL,
        slot          integer NOT NULL,
        holder        text,
        expires_at    timestamptz,
        PRIMARY KEY (account, api, slot)
    );
",
    "
    -- An event's fingerprint is forgotten `changes.event_days` after the run that sent it, no
    -- longer after its `ts`: the ones kept before are kept as if sent now, for 90 days.
    UPDATE record_fingerprints
    SET expires_at = greatest(expires_at, extract(epoch FROM now())::int8 + 90 * 86400)
    WHERE expires_at IS NOT NULL;
",
    "
    -- Where each run sent: the account ID and host, or `sandbox`.
    ALTER TABLE runs ADD COLUMN destination text;
",
];

/// A checkpoint write, as one statement (one transaction, two round trips): the lines, the
/// fingerprints of the records CleverTap accepted among them, the run's counts. It writes
/// nothing when the run no longer owns the checkpoint (another run took it over after this
/// one's lease expired), and returns how many checkpoints it owned (1 or 0).
const SETTLE_LINES: &str = "
    WITH owned AS (
        SELECT 1 FROM checkpoints
        WHERE pipeline = $1 AND destination = $2 AND run_id = $3 FOR UPDATE
    ), lines AS (
        INSERT INTO settled_lines (pipeline, destination, first_line, last_line)
        SELECT $1, $2, first_line, last_line
        FROM unnest($4::int8[], $5::int8[]) AS settled (first_line, last_line)
        WHERE EXISTS (SELECT 1 FROM owned)
    ), scope AS (
        INSERT INTO fingerprint_scopes (scope, pipeline, destination)
        SELECT $6, $9, $2 WHERE $7::bytea IS NOT NULL AND EXISTS (SELECT 1 FROM owned)
        ON CONFLICT DO NOTHING
    ), journal AS (
        INSERT INTO fingerprint_journal (scope, entries)
        SELECT $6, $7 WHERE $7::bytea IS NOT NULL AND EXISTS (SELECT 1 FROM owned)
    ), counts AS (
        UPDATE runs SET read = ($8::int8[])[1], accepted = ($8::int8[])[2],
            skipped = ($8::int8[])[3], rejected = ($8::int8[])[4], failed = ($8::int8[])[5],
            unchanged = ($8::int8[])[6]
        WHERE run_id = $3 AND EXISTS (SELECT 1 FROM owned)
    )
    SELECT count(*) FROM owned";

/// How many migrations there are: the schema version this tapline writes.
#[cfg(test)]
pub(super) const MIGRATION_COUNT: usize = MIGRATIONS.len();

/// The advisory lock that makes processes starting at once migrate one after the other.
const MIGRATION_LOCK: i64 = 0x7461_706c_696e_6531;

/// The shared state store: a PostgreSQL database.
pub struct PgStore {
    config: pg::Settings,
    /// The URL with its password masked, for messages.
    shown: String,
    /// The connection this store's methods use (one transaction at a time).
    client: Mutex<Option<Client>>,
    /// How long a method tries again after the connection was lost: the lease time.
    retry_for: Duration,
    /// This process's leases and request slots, shared by its stores.
    coordinator: Arc<Coordinator>,
}

impl PgStore {
    /// Connects, and brings the schema up to date.
    pub fn open(settings: &SharedSettings) -> Result<Self, StateError> {
        let shown = crate::config::model::redacted_database_url(settings.url.expose());
        let failed = |reason: String| StateError::Postgres {
            url: shown.clone(),
            reason,
        };
        let config = pg::settings(settings.url.expose()).map_err(failed)?;
        let mut client = connect(&config, &shown).map_err(|reason| {
            failed(format!(
                "{reason}; check the URL given with --state (or TAPLINE_STATE, --state-file) and that the database accepts connections from this machine"
            ))
        })?;
        block_on(migrate(&mut client))
            .map_err(|error| failed(pg::explain(&error)))?
            .map_err(failed)?;
        let coordinator = Coordinator::of(&config, &shown, settings.lease);
        Ok(PgStore {
            config,
            shown,
            client: Mutex::new(Some(client)),
            retry_for: settings.lease,
            coordinator,
        })
    }

    fn error(&self, reason: String) -> StateError {
        StateError::Postgres {
            url: self.shown.clone(),
            reason,
        }
    }

    /// Runs `operation` on the store's connection, connecting again and retrying it for the
    /// lease time when the connection is lost.
    fn with_client<T>(
        &self,
        operation: impl AsyncFn(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StateError> {
        let mut held = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        let deadline = Instant::now() + self.retry_for;
        let mut warned = false;
        loop {
            let unreachable = if held.as_ref().is_none_or(Client::is_closed) {
                *held = None;
                connect(&self.config, &self.shown)
                    .map(|client| *held = Some(client))
                    .err()
            } else {
                None
            };
            let reason = match unreachable {
                Some(reason) => reason,
                None => match block_on(operation(held.as_mut().expect("connected above"))) {
                    Ok(value) => return Ok(value),
                    Err(error) if connection_lost(&error) => {
                        *held = None;
                        pg::explain(&error)
                    }
                    Err(error) => return Err(self.error(pg::explain(&error))),
                },
            };
            if Instant::now() >= deadline {
                return Err(self.error(reason));
            }
            if !warned {
                tracing::warn!(store = %self.shown, %reason, retry_for = ?self.retry_for, "lost the state store's connection; trying again");
                warned = true;
            }
            std::thread::sleep(RECONNECT_PAUSE);
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // A run's requests gave their slots back as they ended; the process may end next.
        self.coordinator.finish_releases();
    }
}

/// Whether an error means the connection is gone (or the server is going away), not that
/// the statement was refused.
fn connection_lost(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        // Connection exceptions, and the server shutting down or starting up.
        Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
        None => {
            std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>())
        }
    }
}

/// Applies the migrations the database lacks, in one transaction under an advisory lock:
/// processes starting at once migrate one after the other, and all but the first find the
/// schema up to date.
async fn migrate(client: &mut Client) -> Result<Result<(), String>, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // Without the notice that the table exists, on every start.
    transaction
        .batch_execute(
            "SET LOCAL client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS tapline_schema (version integer NOT NULL)",
        )
        .await?;
    let found: i32 = match transaction
        .query_opt("SELECT version FROM tapline_schema", &[])
        .await?
    {
        Some(row) => row.get(0),
        None => {
            transaction
                .execute("INSERT INTO tapline_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    let known = MIGRATIONS.len() as i32;
    if found > known {
        return Ok(Err(format!(
            "it has schema version {found}, but this tapline knows only up to {known}; upgrade tapline"
        )));
    }
    for sql in &MIGRATIONS[found as usize..] {
        transaction.batch_execute(sql).await?;
    }
    transaction
        .execute("UPDATE tapline_schema SET version = $1", &[&known])
        .await?;
    transaction.commit().await?;
    Ok(Ok(()))
}

/// The runtime the shared store's connections live on: one thread, for the whole process.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tapline-state")
            .enable_all()
            .build()
            .expect("the state store's runtime starts")
    })
}

/// Connects, the connection driven on [`runtime`].
fn connect(config: &pg::Settings, shown: &str) -> Result<Client, String> {
    block_on(connect_async(config, shown))
}

async fn connect_async(config: &pg::Settings, shown: &str) -> Result<Client, String> {
    let (config, label) = (config.clone(), format!("state store {shown}"));
    runtime()
        .spawn(async move { pg::connect(&config, &label).await })
        .await
        .map_err(|error| format!("cannot connect: {error}"))?
        .map_err(|reason| format!("cannot connect: {reason}"))
}

/// Waits for a future on the calling thread. The store's futures wait for messages from the
/// connection's task on [`runtime`] (and for its timers), not for a runtime of their own,
/// so the caller may be a thread of another runtime (as it is when it calls SQLite).
fn block_on<F: Future>(future: F) -> F::Output {
    let _timers = runtime().enter();
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

impl Locks for PgStore {
    fn lock(
        &self,
        pipeline: &str,
        wait: LockWait,
        on_loss: CancellationToken,
    ) -> Result<PipelineLock, StateError> {
        block_on(self.coordinator.acquire(pipeline, wait, on_loss)).map(PipelineLock::lease)
    }
    fn shared_slots(&self) -> Option<Arc<dyn SharedSlots>> {
        Some(Arc::clone(&self.coordinator) as Arc<dyn SharedSlots>)
    }
}

impl Checkpoints for PgStore {
    fn checkpoint(&self, key: CheckpointKey<'_>) -> Result<Option<Checkpoint>, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        self.with_client(async |client| {
            let Some(head) = client
                .query_opt(
                    "SELECT run_id, size, modified_ns, sha256, settings FROM checkpoints
                     WHERE pipeline = $1 AND destination = $2",
                    &[&pipeline, &destination],
                )
                .await?
            else {
                return Ok(None);
            };
            let ranges = client
                .query(
                    "SELECT first_line, last_line FROM settled_lines
                     WHERE pipeline = $1 AND destination = $2",
                    &[&pipeline, &destination],
                )
                .await?
                .iter()
                .map(|row| (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
                .collect();
            Ok(Some(Checkpoint {
                run_id: head.get(0),
                fingerprint: Fingerprint {
                    size: head.get::<_, i64>(1) as u64,
                    modified_ns: head.get(2),
                    sha256: head.get(3),
                },
                settings: SettingsDigest(head.get(4)),
                settled: SettledLines::from_ranges(ranges),
            }))
        })
    }
    fn begin_checkpoint(
        &mut self,
        key: CheckpointKey<'_>,
        run_id: &str,
        (fingerprint, settings): (&Fingerprint, &SettingsDigest),
        settled: &SettledLines,
    ) -> Result<(), StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        self.with_client(async |client| {
            let transaction = client.transaction().await?;
            // A run that starts sending makes the last delivery no longer what CleverTap
            // holds (see `SqliteStore::begin_checkpoint`).
            for table in ["settled_lines", "deliveries"] {
                transaction
                    .execute(
                        &format!("DELETE FROM {table} WHERE pipeline = $1 AND destination = $2"),
                        &[&pipeline, &destination],
                    )
                    .await?;
            }
            transaction
                .execute(
                    "INSERT INTO checkpoints
                     (pipeline, destination, run_id, size, modified_ns, sha256, settings)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (pipeline, destination) DO UPDATE SET
                        run_id = excluded.run_id, size = excluded.size,
                        modified_ns = excluded.modified_ns, sha256 = excluded.sha256,
                        settings = excluded.settings",
                    &[
                        &pipeline,
                        &destination,
                        &run_id,
                        &(fingerprint.size as i64),
                        &fingerprint.modified_ns,
                        &fingerprint.sha256,
                        &settings.0,
                    ],
                )
                .await?;
            insert_ranges(&transaction, (pipeline, destination), settled.ranges()).await?;
            transaction.commit().await
        })
    }
    fn settle_lines(
        &mut self,
        key: CheckpointKey<'_>,
        ranges: &[(u64, u64)],
        accepted: Accepted<'_>,
        (run_id, counts): (&str, &Counts),
    ) -> Result<(), StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        let (first, last): (Vec<i64>, Vec<i64>) = ranges
            .iter()
            .map(|&(first, last)| (first as i64, last as i64))
            .unzip();
        let scope = super::records::scope(accepted.pipeline, destination);
        let journal = (!accepted.fingerprints.is_empty())
            .then(|| super::records::JournalEntry::pack(scope, accepted.fingerprints));
        let counts = [
            counts.read,
            counts.accepted,
            counts.skipped,
            counts.rejected,
            counts.failed,
            counts.unchanged,
        ]
        .map(|count| count as i64);
        let written = self.with_client(async |client| {
            let owned: i64 = client
                .query_one(
                    SETTLE_LINES,
                    &[
                        &pipeline,
                        &destination,
                        &run_id,
                        &first,
                        &last,
                        &scope,
                        &journal,
                        &counts.as_slice(),
                        &accepted.pipeline,
                    ],
                )
                .await?
                .get(0);
            Ok((owned > 0).then_some(()))
        })?;
        written.ok_or_else(|| StateError::TakenOver {
            pipeline: pipeline.to_string(),
            run_id: run_id.to_string(),
        })
    }
    fn finish_delivery(
        &mut self,
        key: CheckpointKey<'_>,
        run_id: &str,
        (fingerprint, settings): (&Fingerprint, &SettingsDigest),
    ) -> Result<(), StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        self.with_client(async |client| {
            let transaction = client.transaction().await?;
            // Only the last delivery says what CleverTap holds.
            for table in ["settled_lines", "checkpoints", "deliveries"] {
                transaction
                    .execute(
                        &format!("DELETE FROM {table} WHERE pipeline = $1 AND destination = $2"),
                        &[&pipeline, &destination],
                    )
                    .await?;
            }
            transaction
                .execute(
                    "INSERT INTO deliveries
                     (pipeline, destination, sha256, size, run_id, delivered_at, settings)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (pipeline, destination, sha256) DO UPDATE SET
                        size = excluded.size, run_id = excluded.run_id,
                        delivered_at = excluded.delivered_at, settings = excluded.settings",
                    &[
                        &pipeline,
                        &destination,
                        &fingerprint.sha256,
                        &(fingerprint.size as i64),
                        &run_id,
                        &now_ms(),
                        &settings.0,
                    ],
                )
                .await?;
            transaction.commit().await
        })
    }
    fn delivered(
        &self,
        key: CheckpointKey<'_>,
        (fingerprint, settings): (&Fingerprint, &SettingsDigest),
    ) -> Result<Option<Delivered>, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        let last = self.with_client(async |client| {
            Ok(client
                .query_opt(
                    "SELECT run_id, sha256, size, settings FROM deliveries
                     WHERE pipeline = $1 AND destination = $2
                     ORDER BY delivered_at DESC LIMIT 1",
                    &[&pipeline, &destination],
                )
                .await?
                .map(|row| LastDelivery {
                    run_id: row.get(0),
                    sha256: row.get(1),
                    size: row.get::<_, i64>(2) as u64,
                    settings: SettingsDigest(row.get(3)),
                }))
        })?;
        Ok(last.and_then(|last| last.of(fingerprint, settings)))
    }
}

impl RecordFingerprints for PgStore {
    fn known_fingerprints(
        &self,
        key: CheckpointKey<'_>,
    ) -> Result<Box<dyn KnownFingerprints>, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        Ok(Box::new(fingerprints::Reader::new(
            self.config.clone(),
            self.shown.clone(),
            (pipeline, destination),
        )))
    }
    fn merge_fingerprints(&mut self, key: CheckpointKey<'_>) -> Result<u64, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        self.with_client(async |client| fingerprints::merge(client, (pipeline, destination)).await)
    }
    fn forget_fingerprints(&mut self, pipeline: &str) -> Result<u64, StateError> {
        self.with_client(async |client| fingerprints::forget(client, pipeline).await)
    }
    fn prune_fingerprints(&mut self, key: CheckpointKey<'_>, now: i64) -> Result<u64, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        self.with_client(async |client| {
            fingerprints::prune(client, (pipeline, destination), now).await
        })
    }
}

impl Watermarks for PgStore {
    fn watermark(&self, key: CheckpointKey<'_>) -> Result<Option<String>, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        self.with_client(async |client| {
            Ok(client
                .query_opt(
                    "SELECT value FROM watermarks WHERE pipeline = $1 AND destination = $2",
                    &[&pipeline, &destination],
                )
                .await?
                .map(|row| row.get(0)))
        })
    }
    fn set_watermark(
        &self,
        key: CheckpointKey<'_>,
        (value, run_id): (&str, &str),
    ) -> Result<(), StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        self.with_client(async |client| {
            client
                .execute(
                    "INSERT INTO watermarks (pipeline, destination, value, run_id, updated_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (pipeline, destination) DO UPDATE SET
                        value = excluded.value, run_id = excluded.run_id,
                        updated_at = excluded.updated_at",
                    &[&pipeline, &destination, &value, &run_id, &now_ms()],
                )
                .await
                .map(drop)
        })
    }
    fn forget_watermarks(&self, pipeline: &str) -> Result<u64, StateError> {
        self.with_client(async |client| {
            client
                .execute("DELETE FROM watermarks WHERE pipeline = $1", &[&pipeline])
                .await
        })
    }
}

impl History for PgStore {
    fn start_run(&self, run: &RunStart<'_>) -> Result<(), StateError> {
        self.with_client(async |client| runs::start(client, run).await)
    }
    fn finish_run(&self, run_id: &str, finish: &RunFinish) -> Result<(), StateError> {
        self.with_client(async |client| runs::finish(client, run_id, finish).await)
    }
    fn abandon_running(&self, pipeline: &str) -> Result<usize, StateError> {
        self.with_client(async |client| {
            client
                .execute(
                    "UPDATE runs SET status = 'abandoned' WHERE pipeline = $1 AND status = 'running'",
                    &[&pipeline],
                )
                .await
                .map(|count| count as usize)
        })
    }
    fn runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunEntry>, StateError> {
        self.with_client(async |client| runs::list(client, pipeline, limit).await)
    }
    fn run(&self, run_id: &str) -> Result<Option<RunEntry>, StateError> {
        self.with_client(async |client| runs::one(client, run_id).await)
    }
    fn prune(&self, days: u32) -> Result<Vec<std::path::PathBuf>, StateError> {
        self.with_client(async |client| runs::prune(client, days).await)
    }
}

impl Triggers for PgStore {
    fn last_fire(&self, pipeline: &str) -> Result<Option<DateTime<Utc>>, StateError> {
        self.with_client(async |client| {
            Ok(client
                .query_opt(
                    "SELECT fired_at FROM fires WHERE pipeline = $1",
                    &[&pipeline],
                )
                .await?
                .and_then(|row| DateTime::from_timestamp_millis(row.get(0))))
        })
    }
    fn claim_fire(&self, pipeline: &str, at: DateTime<Utc>) -> Result<bool, StateError> {
        self.with_client(async |client| {
            client
                .execute(
                    super::triggers::CLAIM_FIRE,
                    &[&pipeline, &at.timestamp_millis()],
                )
                .await
                .map(|claimed| claimed == 1)
        })
    }
    fn has_arrived(&self, pipeline: &str, arrival: &Arrival) -> Result<bool, StateError> {
        let path = arrival.path.display().to_string();
        self.with_client(async |client| {
            Ok(client
                .query_opt(
                    "SELECT 1 FROM arrivals
                     WHERE pipeline = $1 AND path = $2 AND size = $3 AND modified_ns = $4",
                    &[
                        &pipeline,
                        &path,
                        &(arrival.size as i64),
                        &super::triggers::modified_ns(arrival),
                    ],
                )
                .await?
                .is_some())
        })
    }
    fn record_arrival(&self, pipeline: &str, arrival: &Arrival) -> Result<(), StateError> {
        let path = arrival.path.display().to_string();
        self.with_client(async |client| {
            client
                .execute(
                    "INSERT INTO arrivals (pipeline, path, size, modified_ns, seen_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[
                        &pipeline,
                        &path,
                        &(arrival.size as i64),
                        &super::triggers::modified_ns(arrival),
                        &now_ms(),
                    ],
                )
                .await
                .map(drop)
        })
    }
}

/// Adds settled line ranges to a checkpoint, in one statement.
async fn insert_ranges(
    transaction: &tokio_postgres::Transaction<'_>,
    (pipeline, destination): (&str, &str),
    ranges: &[(u64, u64)],
) -> Result<(), tokio_postgres::Error> {
    if ranges.is_empty() {
        return Ok(());
    }
    let (first, last): (Vec<i64>, Vec<i64>) = ranges
        .iter()
        .map(|&(first, last)| (first as i64, last as i64))
        .unzip();
    transaction
        .execute(
            "INSERT INTO settled_lines (pipeline, destination, first_line, last_line)
             SELECT $1, $2, * FROM unnest($3::int8[], $4::int8[])",
            &[&pipeline, &destination, &first, &last],
        )
        .await
        .map(drop)
}
