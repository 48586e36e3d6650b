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

mod checkpoints;
mod coordinator;
mod fingerprints;
mod migrations;
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
use migrations::MIGRATIONS;

use super::{
    CheckpointKey, History, LockWait, Locks, PipelineLock, RecordFingerprints, RunEntry, RunFilter,
    RunFinish, RunStart, SharedSettings, StateError, Triggers, Watermarks, now_ms,
};
use crate::changes::KnownFingerprints;
use crate::engine::SharedSlots;
use crate::pg;
use crate::source::arrival::Arrival;

/// The pause between two attempts to reconnect.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

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
    fn runs(&self, filter: &RunFilter) -> Result<Vec<RunEntry>, StateError> {
        self.with_client(async |client| runs::list(client, filter).await)
    }
    fn run(&self, run_id: &str) -> Result<Option<RunEntry>, StateError> {
        self.with_client(async |client| runs::one(client, run_id).await)
    }
    fn pipeline_names(&self) -> Result<Vec<String>, StateError> {
        self.with_client(async |client| runs::pipeline_names(client).await)
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
                     WHERE pipeline = $1 AND path = $2 AND size = $3 AND modified_ns = $4
                       AND version = $5",
                    &[
                        &pipeline,
                        &path,
                        &(arrival.size as i64),
                        &super::triggers::modified_ns(arrival),
                        &arrival.version,
                    ],
                )
                .await?
                .is_some())
        })
    }
    fn arrivals(&self, pipeline: &str, each: &mut dyn FnMut(Arrival)) -> Result<(), StateError> {
        let rows = self.with_client(async |client| {
            client
                .query(
                    "SELECT path, size, modified_ns, version FROM arrivals WHERE pipeline = $1",
                    &[&pipeline],
                )
                .await
        })?;
        for row in rows {
            each(super::triggers::arrival_of(
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
            ));
        }
        Ok(())
    }
    fn record_arrival(&self, pipeline: &str, arrival: &Arrival) -> Result<(), StateError> {
        let path = arrival.path.display().to_string();
        self.with_client(async |client| {
            client
                .execute(
                    "INSERT INTO arrivals (pipeline, path, size, modified_ns, version, seen_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    &[
                        &pipeline,
                        &path,
                        &(arrival.size as i64),
                        &super::triggers::modified_ns(arrival),
                        &arrival.version,
                        &now_ms(),
                    ],
                )
                .await
                .map(drop)
        })
    }
}
