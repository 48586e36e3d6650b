//! Request slots of CleverTap accounts, counted across every process sharing the store.
//!
//! An account's API has one row per slot in `request_slots`; a request holds a free (or
//! expired) one, its `holder` a token of this process that the heartbeat renews. A slot
//! whose request ended stays with the process for [`LINGER`], and its next request to the
//! account takes it without asking the database: a busy run asks once per slot, not once
//! per request. A slot not taken again within that time is given back.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::coordinator::{Coordinator, SlotKey};
use super::{block_on, runtime};
use crate::engine::{SharedSlot, SharedSlots};
use crate::pg;

/// How often a process waiting for a request slot asks again while the account is full.
const SLOT_POLL: Duration = Duration::from_millis(20);
/// How long a slot whose request ended is kept for the process's next request.
const LINGER: Duration = Duration::from_millis(50);
/// How long giving slots back is tried when the database cannot be reached.
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);

impl Coordinator {
    /// A slot this process holds idle, if it has one for the account.
    fn take_idle(&self, key: &SlotKey) -> Option<String> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(key)
            .and_then(Vec::pop)
    }

    /// Takes a free slot in the database, if the account has one.
    async fn take_free(&self, key: &SlotKey, size: usize) -> Result<Option<String>, String> {
        let client = self.client().await?;
        let explain = |error: tokio_postgres::Error| pg::explain(&error);
        let (account, api) = (key.0.as_str(), key.1);
        let rows = (key.clone(), size);
        let ready = self
            .slot_rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&rows);
        if !ready {
            client
                .execute(
                    "INSERT INTO request_slots (account, api, slot)
                     SELECT $1, $2, generate_series(0, $3::int4 - 1) ON CONFLICT DO NOTHING",
                    &[&account, &api, &(size as i32)],
                )
                .await
                .map_err(explain)?;
            self.slot_rows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(rows);
        }
        let token = format!(
            "{}#{}",
            self.holder,
            self.next_slot.fetch_add(1, Ordering::Relaxed)
        );
        let taken = client
            .query_opt(
                "UPDATE request_slots
                 SET holder = $4, expires_at = now() + $5::int8 * interval '1 millisecond'
                 WHERE (account, api, slot) = (
                    SELECT account, api, slot FROM request_slots
                    WHERE account = $1 AND api = $2 AND slot < $3
                      AND (holder IS NULL OR expires_at < now())
                    LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING slot",
                &[&account, &api, &(size as i32), &token, &self.millis()],
            )
            .await
            .map_err(explain)?;
        if taken.is_none() {
            return Ok(None);
        }
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone());
        Ok(Some(token))
    }

    /// A request ended: its slot waits [`LINGER`] for the next request, then goes back.
    fn put_back(self: &Arc<Self>, key: SlotKey, token: String) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .push(token.clone());
        let coordinator = Arc::clone(self);
        let release = runtime().spawn(async move {
            tokio::time::sleep(LINGER).await;
            let still_idle = {
                let mut idle = coordinator
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let tokens = idle.entry(key).or_default();
                let before = tokens.len();
                tokens.retain(|idle| *idle != token);
                tokens.len() < before
            };
            if still_idle {
                coordinator.give_back(vec![token]).await;
            }
        });
        let mut releasing = self
            .releasing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        releasing.retain(|release| !release.is_finished());
        releasing.push(release);
    }

    /// Frees slots in the database, trying again for a few seconds when it cannot be
    /// reached (a restart); after that they expire by themselves, as the heartbeat renews
    /// them no more.
    async fn give_back(&self, tokens: Vec<String>) {
        {
            let mut held = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            for token in &tokens {
                held.remove(token);
            }
        }
        let deadline = tokio::time::Instant::now() + RELEASE_PATIENCE;
        loop {
            let released = match self.client().await {
                Ok(client) => client
                    .execute(
                        "UPDATE request_slots SET holder = NULL, expires_at = NULL
                         WHERE holder = ANY($1)",
                        &[&tokens],
                    )
                    .await
                    .map(drop)
                    .map_err(|error| pg::explain(&error)),
                Err(reason) => Err(reason),
            };
            match released {
                Ok(()) => return,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(reason) => {
                    tracing::warn!(%reason, "cannot give request slots back; they expire by themselves");
                    return;
                }
            }
        }
    }

    /// Gives back every idle slot now, and waits for those being given back: a process that
    /// ends right after its run leaves none taken.
    pub(super) fn finish_releases(&self) {
        let idle: Vec<String> = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .flat_map(|(_, tokens)| tokens)
            .collect();
        let releasing = std::mem::take(
            &mut *self
                .releasing
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        block_on(async {
            if !idle.is_empty() {
                self.give_back(idle).await;
            }
            // Those still waiting find their slot gone from `idle` and end.
            let all = async {
                for release in releasing {
                    let _ = release.await;
                }
            };
            let _ = tokio::time::timeout(RELEASE_PATIENCE, all).await;
        });
    }
}

impl SharedSlots for Coordinator {
    fn take<'a>(
        &'a self,
        account: &'a str,
        api: &'static str,
        size: usize,
    ) -> Pin<Box<dyn Future<Output = SharedSlot> + Send + 'a>> {
        Box::pin(async move {
            let key = (account.to_string(), api);
            let coordinator = self.me.upgrade().expect("a coordinator lives while used");
            let mut warned = false;
            loop {
                let taken = match self.take_idle(&key) {
                    Some(token) => Ok(Some(token)),
                    None => self.take_free(&key, size).await,
                };
                match taken {
                    Ok(Some(token)) => {
                        return Box::new(Slot {
                            coordinator,
                            key,
                            token,
                        }) as SharedSlot;
                    }
                    Ok(None) => {
                        let jitter = Duration::from_millis(rand::random::<u64>() % 10);
                        tokio::time::sleep(SLOT_POLL + jitter).await;
                    }
                    Err(reason) => {
                        if !warned {
                            tracing::warn!(store = %self.shown, %reason, "cannot take a request slot in the shared state store; trying again every second");
                            warned = true;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    }
}

/// A request's slot; dropping it hands it to the process's next request, or back.
struct Slot {
    coordinator: Arc<Coordinator>,
    key: SlotKey,
    token: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let key = std::mem::take(&mut self.key);
        self.coordinator
            .put_back(key, std::mem::take(&mut self.token));
    }
}
