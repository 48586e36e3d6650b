//! What the processes sharing a store agree on through it: which process runs each pipeline
//! (a lease), and how many requests each CleverTap account has in flight (request slots,
//! taken and given back in `slots`).
//!
//! Each process has one [`Coordinator`] per store, with a name (`host:pid:random`), one
//! connection, and a heartbeat that renews its leases and slots every third of the lease
//! time. A process that dies, or stops (paused, cut off from the database), stops renewing
//! them; after the lease time other processes take them over. A lease this process finds
//! taken over at a heartbeat, or could not renew for the lease time, is lost: the run holding
//! it is told to stop (and its checkpoint writes are refused by then, see `settle_lines`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::super::{LockWait, StateError, this_process};
use super::{block_on, connect_async, runtime};
use crate::pg;

/// An account and one of its APIs, whose request slots are counted together.
pub(super) type SlotKey = (String, &'static str);

/// One process's leases and request slots in one store.
pub(in crate::state) struct Coordinator {
    config: pg::Settings,
    pub(super) shown: String,
    /// This process, as the `holder` of its leases and slots.
    pub(super) holder: String,
    lease: Duration,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    /// The pipelines whose lease this process holds, with what to cancel when one is lost.
    leases: Mutex<HashMap<String, HeldLease>>,
    /// Numbers the leases this process takes.
    next_lease: std::sync::atomic::AtomicU64,
    /// The request slots this process holds (in use or idle), by the token written as
    /// their holder: the heartbeat renews them.
    pub(super) slots: Mutex<HashSet<String>>,
    /// Slots held but not in use, by account and API, for the next request (see `slots`).
    pub(super) idle: Mutex<HashMap<SlotKey, Vec<String>>>,
    /// The (account, API, size) whose slot rows exist.
    pub(super) slot_rows: Mutex<HashSet<(SlotKey, usize)>>,
    /// Numbers the slots this process takes.
    pub(super) next_slot: std::sync::atomic::AtomicU64,
    /// Idle slots waiting to be given back (tasks on the store's runtime).
    pub(super) releasing: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(super) me: Weak<Coordinator>,
}

/// A lease this process holds: which taking of it (a lease given back and taken again is
/// another), and the run to stop if it is lost.
struct HeldLease {
    serial: u64,
    on_loss: CancellationToken,
}

/// The coordinators of this process, by store and lease time: the stores a daemon opens for
/// its runs share one name, one connection and one heartbeat.
static COORDINATORS: Mutex<Vec<Weak<Coordinator>>> = Mutex::new(Vec::new());

impl Coordinator {
    /// The process's coordinator for a store, started (with its heartbeat) if it has none.
    pub(super) fn of(config: &pg::Settings, shown: &str, lease: Duration) -> Arc<Coordinator> {
        let mut all = COORDINATORS.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|coordinator| coordinator.strong_count() > 0);
        if let Some(found) = all
            .iter()
            .filter_map(Weak::upgrade)
            .find(|found| found.shown == shown && found.lease == lease && found.config == *config)
        {
            return found;
        }
        let coordinator = Arc::new_cyclic(|me| Coordinator {
            config: config.clone(),
            shown: shown.to_string(),
            holder: format!("{}:{:04x}", this_process(), rand::random::<u16>()),
            lease,
            client: tokio::sync::Mutex::new(None),
            leases: Mutex::default(),
            next_lease: std::sync::atomic::AtomicU64::new(0),
            slots: Mutex::default(),
            idle: Mutex::default(),
            slot_rows: Mutex::default(),
            next_slot: std::sync::atomic::AtomicU64::new(0),
            releasing: Mutex::default(),
            me: me.clone(),
        });
        all.push(Arc::downgrade(&coordinator));
        runtime().spawn(heartbeat(Arc::downgrade(&coordinator), lease / 3));
        coordinator
    }

    fn error(&self, reason: String) -> StateError {
        StateError::Postgres {
            url: self.shown.clone(),
            reason,
        }
    }

    /// The coordinator's connection, made again when it was lost.
    pub(super) async fn client(&self) -> Result<Arc<Client>, String> {
        let mut held = self.client.lock().await;
        if let Some(client) = held.as_ref().filter(|client| !client.is_closed()) {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(connect_async(&self.config, &self.shown).await?);
        *held = Some(Arc::clone(&client));
        Ok(client)
    }

    pub(super) fn millis(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Takes `pipeline`'s lease: at once when it is free or expired; when another process
    /// holds it, waits as [`LockWait`] says.
    pub(super) async fn acquire(
        &self,
        pipeline: &str,
        wait: LockWait,
        on_loss: CancellationToken,
    ) -> Result<Lease, StateError> {
        let failed = |error: &tokio_postgres::Error| self.error(pg::explain(error));
        let mut renewal_seen: Option<String> = None;
        loop {
            let client = self.client().await.map_err(|reason| self.error(reason))?;
            let taken = client
                .query_opt(
                    "INSERT INTO leases (pipeline, holder, acquired_at, renewed_at, expires_at)
                     VALUES ($1, $2, now(), now(), now() + $3::int8 * interval '1 millisecond')
                     ON CONFLICT (pipeline) DO UPDATE SET holder = excluded.holder,
                        acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at,
                        expires_at = excluded.expires_at
                     WHERE leases.expires_at < now()
                     RETURNING 1",
                    &[&pipeline, &self.holder, &self.millis()],
                )
                .await
                .map_err(|error| failed(&error))?;
            if taken.is_some() {
                let serial = self
                    .next_lease
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.leases
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(pipeline.to_string(), HeldLease { serial, on_loss });
                return Ok(Lease {
                    coordinator: self.me.upgrade().expect("a coordinator lives while used"),
                    pipeline: pipeline.to_string(),
                    serial,
                });
            }
            let Some(held) = client
                .query_opt(
                    "SELECT holder, renewed_at::text,
                        greatest(extract(epoch from expires_at - now()), 0)::float8
                     FROM leases WHERE pipeline = $1",
                    &[&pipeline],
                )
                .await
                .map_err(|error| failed(&error))?
            else {
                // Released in between: take it now.
                continue;
            };
            let (holder, renewed, expires_in): (String, String, f64) =
                (held.get(0), held.get(1), held.get(2));
            let holder_shown = holder
                .rsplit_once(':')
                .map_or(holder.as_str(), |(process, _)| process);
            let alive = renewal_seen.as_ref().is_some_and(|seen| *seen != renewed);
            if wait == LockWait::No || alive {
                return Err(StateError::Leased {
                    pipeline: pipeline.to_string(),
                    holder: holder_shown.to_string(),
                });
            }
            if renewal_seen.is_none() {
                tracing::info!(
                    pipeline,
                    holder = holder_shown,
                    expires_in_s = expires_in,
                    "another process holds the pipeline's lease; waiting to see whether it is alive"
                );
            }
            renewal_seen = Some(renewed);
            let pause =
                Duration::from_secs_f64(expires_in.clamp(0.0, 1.0)) + Duration::from_millis(50);
            tokio::time::sleep(pause).await;
        }
    }

    /// Gives a lease back.
    fn release(&self, pipeline: &str, serial: u64) {
        self.forget_lease(pipeline, serial);
        let released = block_on(async {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM leases WHERE pipeline = $1 AND holder = $2",
                    &[&pipeline, &self.holder],
                )
                .await
                .map_err(|error| pg::explain(&error))
        });
        if let Err(reason) = released {
            tracing::warn!(pipeline, %reason, "cannot give the pipeline's lease back; it expires by itself");
        }
    }

    /// The leases this process holds: pipeline and serial.
    fn held_leases(&self) -> Vec<(String, u64)> {
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(pipeline, held)| (pipeline.clone(), held.serial))
            .collect()
    }

    /// Forgets this taking of a lease (not a later one of the same pipeline); returns it.
    fn forget_lease(&self, pipeline: &str, serial: u64) -> Option<HeldLease> {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        match leases.get(pipeline) {
            Some(held) if held.serial == serial => leases.remove(pipeline),
            _ => None,
        }
    }

    /// Renews this process's leases and slots; cancels the runs of leases another process
    /// took over.
    async fn renew(&self) -> Result<(), String> {
        let held = self.held_leases();
        let slots: Vec<String> = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        let client = self.client().await?;
        let explain = |error: tokio_postgres::Error| pg::explain(&error);
        let renewed: HashSet<String> = client
            .query(
                "UPDATE leases SET renewed_at = now(),
                    expires_at = now() + $2::int8 * interval '1 millisecond'
                 WHERE holder = $1 RETURNING pipeline",
                &[&self.holder, &self.millis()],
            )
            .await
            .map_err(explain)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if !slots.is_empty() {
            client
                .execute(
                    "UPDATE request_slots
                     SET expires_at = now() + $2::int8 * interval '1 millisecond'
                     WHERE holder = ANY($1)",
                    &[&slots, &self.millis()],
                )
                .await
                .map_err(explain)?;
        }
        // Only leases held before the renewal: one taken since is not in it yet.
        for (pipeline, serial) in held
            .iter()
            .filter(|(pipeline, _)| !renewed.contains(pipeline))
        {
            self.lose(
                pipeline,
                *serial,
                "another process took the pipeline's lease over",
            );
        }
        Ok(())
    }

    /// A lease is lost: its run stops.
    fn lose(&self, pipeline: &str, serial: u64, why: &str) {
        if let Some(lost) = self.forget_lease(pipeline, serial) {
            tracing::error!(pipeline, "{why}; its run stops sending");
            lost.on_loss.cancel();
        }
    }
}

/// A pipeline's lease; dropping it gives it back.
pub(in crate::state) struct Lease {
    coordinator: Arc<Coordinator>,
    pipeline: String,
    serial: u64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("pipeline", &self.pipeline)
            .field("holder", &self.coordinator.holder)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.coordinator.release(&self.pipeline, self.serial);
    }
}

/// Renews the coordinator's leases and slots every `every` while it lives. Leases it could
/// not renew for the lease time are lost: another process may hold them by now.
async fn heartbeat(coordinator: Weak<Coordinator>, every: Duration) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let Some(coordinator) = coordinator.upgrade() else {
            return;
        };
        match coordinator.renew().await {
            Ok(()) => renewed = Instant::now(),
            Err(reason) => {
                tracing::warn!(store = %coordinator.shown, %reason, "cannot renew this process's leases");
                if renewed.elapsed() >= coordinator.lease {
                    for (pipeline, serial) in coordinator.held_leases() {
                        coordinator.lose(
                            &pipeline,
                            serial,
                            "the pipeline's lease could not be renewed for the lease time",
                        );
                    }
                }
            }
        }
    }
}
