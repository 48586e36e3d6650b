//! The requests in flight a CleverTap account allows, shared by every pipeline that sends to
//! it: one budget per account and API, which the engine asks before each request.
//!
//! CleverTap counts concurrent requests per account (15 for uploads, fewer for other APIs),
//! not per pipeline. A daemon running several pipelines against one account hands each run
//! the same [`AccountBudgets`], so their sum stays within the account's limit. With the
//! shared state store, each request also takes one of the account's [`SharedSlots`], which
//! every process using that store counts against.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::clevertap::wire::Endpoint;

/// Request slots of each account counted across processes (the shared state store's): the
/// engine takes one for each request, after one of its own process.
pub trait SharedSlots: Send + Sync {
    /// Waits for a free slot of `api` of `account`, `size` of them in all; the slot is given
    /// back when the returned guard is dropped.
    fn take<'a>(
        &'a self,
        account: &'a str,
        api: &'static str,
        size: usize,
    ) -> Pin<Box<dyn Future<Output = SharedSlot> + Send + 'a>>;
}

/// A slot taken from [`SharedSlots`]; dropping it gives it back.
pub type SharedSlot = Box<dyn Send + Sync>;

/// The budgets of every account, by account and API. Cheap to clone; clones share.
#[derive(Clone, Default)]
pub struct AccountBudgets {
    budgets: Arc<Mutex<HashMap<(String, &'static str), AccountBudget>>>,
    shared: Option<Arc<dyn SharedSlots>>,
}

impl AccountBudgets {
    /// Budgets that also count against slots other processes share (`None`: this
    /// process's only).
    pub fn new(shared: Option<Arc<dyn SharedSlots>>) -> Self {
        AccountBudgets {
            budgets: Arc::default(),
            shared,
        }
    }

    /// The budget of one API of one account (`account` names the account and its host):
    /// `size` requests in flight at once (the API's limit, or the connection's lower
    /// `limits.concurrency`), as the first run on the account made it.
    pub fn for_api(&self, account: &str, endpoint: &Endpoint, size: usize) -> AccountBudget {
        let mut budgets = self
            .budgets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let size = size.clamp(1, endpoint.max_in_flight.max(1));
        budgets
            .entry((account.to_string(), endpoint.path))
            .or_insert_with(|| AccountBudget {
                slots: Arc::new(Semaphore::new(size)),
                size,
                limits: Arc::default(),
                account: Arc::from(account),
                api: endpoint.path,
                shared: self.shared.clone(),
            })
            .clone()
    }

    /// Requests in flight now, by account and API, for metrics and the console.
    pub fn in_flight(&self) -> Vec<BudgetUse> {
        let budgets = self
            .budgets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut in_flight: Vec<BudgetUse> = budgets
            .iter()
            .map(|((account, api), budget)| BudgetUse {
                account: account.clone(),
                api,
                in_flight: budget.size - budget.slots.available_permits(),
                limit: budget.limits.load(Ordering::Relaxed).min(budget.size),
                size: budget.size,
            })
            .collect();
        in_flight.sort_by(|a, b| (&a.account, a.api).cmp(&(&b.account, b.api)));
        in_flight
    }
}

/// How much of one API's budget of one account is in use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BudgetUse {
    /// The account and its host (`ACCOUNT@https://host`).
    pub account: String,
    /// The API's path (`/1/upload`).
    pub api: &'static str,
    /// Requests in flight now.
    pub in_flight: usize,
    /// The limits of the runs sending to it now, added up (each run's `thread_count`, or
    /// where `auto` has it), at most `size`.
    pub limit: usize,
    /// The most the account allows at once.
    pub size: usize,
}

/// One API's budget of one account.
#[derive(Clone)]
pub struct AccountBudget {
    slots: Arc<Semaphore>,
    size: usize,
    /// The limits of the runs using it, added up.
    limits: Arc<AtomicUsize>,
    account: Arc<str>,
    api: &'static str,
    shared: Option<Arc<dyn SharedSlots>>,
}

/// A request's place in its account's budget: held while the request is in flight.
pub struct Slot {
    _own: OwnedSemaphorePermit,
    _shared: Option<SharedSlot>,
}

impl AccountBudget {
    /// A run's limit went from `old` to `new` (from 0 as it starts, to 0 as it ends).
    pub fn limit_changed(&self, old: usize, new: usize) {
        if new >= old {
            self.limits.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.limits.fetch_sub(old - new, Ordering::Relaxed);
        }
    }

    /// Waits for a slot of this process, then for one shared with other processes (when
    /// the state store shares them); the request holds it until the slot is dropped.
    pub async fn slot(&self) -> Slot {
        let own = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("a budget's semaphore is never closed");
        let shared = match &self.shared {
            Some(shared) => Some(shared.take(&self.account, self.api, self.size).await),
            None => None,
        };
        Slot {
            _own: own,
            _shared: shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clevertap::wire::Endpoint;

    #[tokio::test]
    async fn pipelines_of_one_account_share_its_budget() {
        let budgets = AccountBudgets::default();
        let size = Endpoint::UPLOAD.max_in_flight;
        let first = budgets.for_api("acct@host", &Endpoint::UPLOAD, size);
        let second = budgets.for_api("acct@host", &Endpoint::UPLOAD, size);
        let other = budgets.for_api("other@host", &Endpoint::UPLOAD, size);
        let mut held = Vec::new();
        for _ in 0..Endpoint::UPLOAD.max_in_flight {
            held.push(first.slot().await);
        }
        // The account is full for the second pipeline too...
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), second.slot());
        assert!(waiting.await.is_err());
        // ...but not for another account.
        drop(other.slot().await);
        let in_use: Vec<(String, usize)> = budgets
            .in_flight()
            .into_iter()
            .map(|budget| {
                (
                    format!("{} {}", budget.account, budget.api),
                    budget.in_flight,
                )
            })
            .collect();
        assert_eq!(
            in_use,
            [
                (
                    "acct@host /1/upload".to_string(),
                    Endpoint::UPLOAD.max_in_flight
                ),
                ("other@host /1/upload".to_string(), 0)
            ]
        );
        held.pop();
        drop(second.slot().await);
    }
}
