//! How many requests a run keeps in flight: a fixed number (`thread_count: 1`–`10`), or one
//! that adapts to CleverTap's answers (`thread_count: auto`), never above the API's limit.
//!
//! A request takes a [`Permit`] from the run's [`Limiter`] and tells it how each attempt
//! went. With `auto`, the [`Controller`] (a pure function of those observations) moves the
//! limit, as Vector's adaptive request concurrency does, better informed: CleverTap's only
//! rate limit is concurrency (15 uploads in flight per account), so a 429 means "too many at
//! once", not "too fast".
//!
//! - **Slow start**: from [`INITIAL`], +1 for each quick answer to a request sent with the
//!   limit full, so the limit doubles every round trip, until the first back-off or the cap.
//! - **Then additive**: +1 per round trip (`limit` quick answers with the limit full).
//! - **Back-off**: ×0.9 (at least −1) on a 429, a retryable failure, or a round trip over
//!   twice the average, at most once per round trip.
//! - **Probing a shared account**: after a 429 at some level, going back up to that level
//!   takes [`PROBE_ROUNDS`] round trips instead of one, so an account that other clients
//!   share sees a 429 now and then, not every round trip; once the limit passes it without a
//!   429, it grows as before.
//!
//! The account's budget (one daemon) and the shared slots (processes on the PostgreSQL
//! store) stay the hard ceiling: the limiter takes them per attempt, after a permit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::budget::{AccountBudget, Slot};
use crate::config::model::ThreadCount;
pub use crate::outcome::Concurrency;

/// Where `auto` starts: low enough for an account others use, high enough that slow start
/// reaches 15 in two round trips.
pub const INITIAL: usize = 4;

/// Round trips it takes to go back up to the level of the last 429.
pub const PROBE_ROUNDS: usize = 8;

/// A round trip this many times the average counts as congestion.
const SLOW_RATIO: f64 = 2.0;

/// Weight of a new round trip in the average.
const AVERAGE_WEIGHT: f64 = 0.1;

/// How one attempt went, as the controller hears it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attempt {
    /// CleverTap answered (whatever it said of the records), after `latency`; `full`: it
    /// was sent while the limit was reached (only then does a quick answer say more would
    /// be taken).
    Answered {
        /// The round trip.
        latency: Duration,
        /// Sent with the limit reached.
        full: bool,
    },
    /// 429: too many requests in flight on the account.
    Throttled,
    /// A failure worth retrying (5xx, a timeout, a dropped connection).
    Failed,
    /// Says nothing of the load (400, 401: the request, not the account, is the problem).
    Neutral,
}

/// The adaptive limit, moved by each attempt's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Controller {
    limit: usize,
    cap: usize,
    slow_start: bool,
    /// The average round trip of answered attempts, in seconds.
    average: Option<f64>,
    /// Quick full answers since the limit last grew.
    credit: usize,
    /// Outcomes since the last back-off: another waits a round trip (`limit` of them).
    since_back_off: usize,
    /// The level at which CleverTap last answered 429.
    throttled_at: Option<usize>,
}

impl Controller {
    /// A controller that never goes above `cap`.
    pub fn new(cap: usize) -> Controller {
        let cap = cap.max(1);
        Controller {
            limit: INITIAL.min(cap),
            cap,
            slow_start: true,
            average: None,
            credit: 0,
            since_back_off: usize::MAX,
            throttled_at: None,
        }
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Hears how an attempt went; returns the limit after it.
    pub fn observe(&mut self, attempt: Attempt) -> usize {
        self.since_back_off = self.since_back_off.saturating_add(1);
        match attempt {
            Attempt::Answered { latency, full } => {
                let seconds = latency.as_secs_f64();
                let slow = self
                    .average
                    .is_some_and(|average| seconds > average * SLOW_RATIO);
                self.average = Some(match self.average {
                    Some(average) => average + AVERAGE_WEIGHT * (seconds - average),
                    None => seconds,
                });
                if slow {
                    self.back_off();
                } else if full {
                    self.grow();
                }
            }
            Attempt::Throttled => {
                if self.back_off() {
                    self.throttled_at = Some(
                        self.throttled_at
                            .map_or(self.limit + 1, |at| at.min(self.limit + 1)),
                    );
                }
            }
            Attempt::Failed => {
                self.back_off();
            }
            Attempt::Neutral => {}
        }
        self.limit
    }

    fn grow(&mut self) {
        if self.limit >= self.cap {
            return;
        }
        self.credit += 1;
        let near_the_last_429 = self.throttled_at.is_some_and(|at| self.limit + 1 >= at);
        let needed = if self.slow_start {
            1
        } else if near_the_last_429 {
            self.limit * PROBE_ROUNDS
        } else {
            self.limit
        };
        if self.credit >= needed {
            self.credit = 0;
            self.limit += 1;
            if self.throttled_at.is_some_and(|at| self.limit > at) {
                // Past the old level without a 429: the account has room again.
                self.throttled_at = None;
            }
        }
    }

    /// ×0.9, at least −1, once per round trip; whether it backed off.
    fn back_off(&mut self) -> bool {
        self.slow_start = false;
        if self.since_back_off < self.limit {
            return false;
        }
        self.since_back_off = 0;
        self.credit = 0;
        let lower = (self.limit as f64 * 0.9).floor() as usize;
        self.limit = lower.min(self.limit - 1).max(1);
        true
    }
}

/// The one place a run's requests in flight are bounded: a permit per request up to the
/// run's limit, then for each attempt a slot of the account's budget (which takes one of the
/// slots processes sharing the state store count), and how each attempt went.
pub struct Limiter {
    permits: Arc<Semaphore>,
    /// The account's budget, shared with the other runs of a daemon.
    budget: Option<AccountBudget>,
    /// The limit in force, for the progress line.
    current: Arc<AtomicUsize>,
    state: Mutex<LimiterState>,
    /// Attempts on the wire now.
    sending: AtomicUsize,
}

struct LimiterState {
    controller: Option<Controller>,
    /// The limit in force.
    limit: usize,
    /// Permits to take out of circulation as they come back (the limit fell while they
    /// were out).
    debt: usize,
    seen: Concurrency,
}

/// A request's right to be in flight; given back when dropped.
pub struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    limiter: Arc<Limiter>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.limiter.state();
        if state.debt > 0
            && let Some(permit) = self.permit.take()
        {
            state.debt -= 1;
            permit.forget();
        }
    }
}

/// An attempt on the wire, to be told to [`Limiter::ended`]; it holds its slot of the
/// account's budget until then.
pub struct Sending {
    started: tokio::time::Instant,
    full: bool,
    _slot: Option<Slot>,
}

impl Limiter {
    /// The limiter of a run with `thread_count` against an API that allows `cap` in flight,
    /// within the account's `budget` when runs share one.
    pub fn new(
        thread_count: ThreadCount,
        cap: usize,
        budget: Option<AccountBudget>,
    ) -> Arc<Limiter> {
        let (controller, limit) = match thread_count {
            ThreadCount::Fixed(count) => (None, count.clamp(1, cap.max(1))),
            ThreadCount::Auto => {
                let controller = Controller::new(cap);
                let limit = controller.limit();
                (Some(controller), limit)
            }
        };
        if let Some(budget) = &budget {
            budget.limit_changed(0, limit);
        }
        Arc::new(Limiter {
            permits: Arc::new(Semaphore::new(limit)),
            current: Arc::new(AtomicUsize::new(limit)),
            budget,
            state: Mutex::new(LimiterState {
                seen: Concurrency {
                    adaptive: controller.is_some(),
                    min: limit,
                    max: limit,
                    last: limit,
                },
                controller,
                limit,
                debt: 0,
            }),
            sending: AtomicUsize::new(0),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a permit.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Permit {
            permit: Some(permit),
            limiter: Arc::clone(self),
        }
    }

    /// An attempt goes on the wire, once the account's budget has a slot for it (released
    /// during a back-off, so waiting runs of the account go first).
    pub async fn sending(&self) -> Sending {
        let slot = match &self.budget {
            Some(budget) => Some(budget.slot().await),
            None => None,
        };
        let now = self.sending.fetch_add(1, Ordering::SeqCst) + 1;
        Sending {
            started: tokio::time::Instant::now(),
            full: now >= self.state().limit,
            _slot: slot,
        }
    }

    /// How the attempt went; with `auto`, the limit moves.
    pub fn ended(&self, sending: Sending, outcome: Ended) {
        self.sending.fetch_sub(1, Ordering::SeqCst);
        let attempt = match outcome {
            Ended::Answered => Attempt::Answered {
                latency: sending.started.elapsed(),
                full: sending.full,
            },
            Ended::Throttled => Attempt::Throttled,
            Ended::Failed => Attempt::Failed,
            Ended::Neutral => Attempt::Neutral,
        };
        let mut state = self.state();
        let Some(controller) = &mut state.controller else {
            return;
        };
        let limit = controller.observe(attempt);
        let old = state.limit;
        if limit > old {
            let mut grown = limit - old;
            let paid = grown.min(state.debt);
            state.debt -= paid;
            grown -= paid;
            self.permits.add_permits(grown);
        } else if limit < old {
            let shrink = old - limit;
            let taken = self.permits.forget_permits(shrink);
            state.debt += shrink - taken;
        }
        state.limit = limit;
        self.current.store(limit, Ordering::Relaxed);
        if let Some(budget) = &self.budget {
            budget.limit_changed(old, limit);
        }
        state.seen.min = state.seen.min.min(limit);
        state.seen.max = state.seen.max.max(limit);
        state.seen.last = limit;
        if limit != old {
            tracing::debug!(limit, "requests in flight: limit changed");
        }
    }

    /// The limits the run went through.
    pub fn seen(&self) -> Concurrency {
        self.state().seen
    }

    /// The limit in force, as it changes.
    pub fn current(&self) -> CurrentLimit {
        CurrentLimit {
            limit: Arc::clone(&self.current),
            adaptive: self.state().controller.is_some(),
        }
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.limit_changed(self.current.load(Ordering::Relaxed), 0);
        }
    }
}

/// A run's limit of requests in flight as it changes (the progress line shows it).
#[derive(Debug, Clone, Default)]
pub struct CurrentLimit {
    limit: Arc<AtomicUsize>,
    /// `thread_count: auto`: the limit moves.
    pub adaptive: bool,
}

impl CurrentLimit {
    /// The limit now.
    pub fn get(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }
}

/// How an attempt ended, as the sender knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// CleverTap answered.
    Answered,
    /// 429.
    Throttled,
    /// A failure worth retrying.
    Failed,
    /// A failure that says nothing of the load.
    Neutral,
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Attempt = Attempt::Answered {
        latency: Duration::from_millis(200),
        full: true,
    };

    fn after(controller: &mut Controller, attempts: &[(Attempt, usize)]) -> usize {
        for (attempt, times) in attempts {
            for _ in 0..*times {
                controller.observe(*attempt);
            }
        }
        controller.limit()
    }

    /// A case: its name, the cap, what happened (attempt, how many times), the limit after.
    type Case<'a> = (&'a str, usize, &'a [(Attempt, usize)], usize);

    #[test]
    fn the_limit_ramps_backs_off_probes_and_keeps_to_its_cap() {
        let not_full = Attempt::Answered {
            latency: Duration::from_millis(200),
            full: false,
        };
        let slow = Attempt::Answered {
            latency: Duration::from_millis(900),
            full: true,
        };
        let cases: &[Case] = &[
            ("starts at 4", 15, &[], 4),
            ("a low cap is the start", 3, &[], 3),
            ("slow start: +1 per quick full answer", 15, &[(QUICK, 4)], 8),
            ("slow start stops at the cap", 15, &[(QUICK, 100)], 15),
            ("never above the cap", 3, &[(QUICK, 1000)], 3),
            (
                "answers with room to spare say nothing",
                15,
                &[(not_full, 100)],
                4,
            ),
            (
                "a 429 backs off by at least one",
                15,
                &[(QUICK, 2), (Attempt::Throttled, 1)],
                5,
            ),
            (
                "from 15, ×0.9",
                15,
                &[(QUICK, 11), (Attempt::Throttled, 1)],
                13,
            ),
            (
                "once per round trip: a burst of 429s is one back-off",
                15,
                &[(QUICK, 11), (Attempt::Throttled, 10)],
                13,
            ),
            (
                "the next round trip may back off again",
                15,
                &[
                    (QUICK, 11),
                    (Attempt::Throttled, 13),
                    (Attempt::Throttled, 1),
                ],
                11,
            ),
            (
                "a retryable failure backs off",
                15,
                &[(QUICK, 11), (Attempt::Failed, 1)],
                13,
            ),
            (
                "400s and 401s say nothing",
                15,
                &[(Attempt::Neutral, 50)],
                4,
            ),
            ("never below one", 15, &[(Attempt::Failed, 100)], 1),
            (
                "a round trip over twice the average backs off",
                15,
                &[(QUICK, 11), (slow, 1)],
                13,
            ),
            (
                "after a back-off, +1 per round trip",
                15,
                &[(QUICK, 11), (Attempt::Failed, 1), (QUICK, 13)],
                14,
            ),
            (
                "up to the level of the last 429 takes eight round trips",
                15,
                &[(QUICK, 3), (Attempt::Throttled, 1), (QUICK, 6 * 8 - 1)],
                6,
            ),
            (
                "...and then it probes it",
                15,
                &[(QUICK, 3), (Attempt::Throttled, 1), (QUICK, 6 * 8)],
                7,
            ),
            (
                "past it without a 429, it grows a round trip at a time again",
                15,
                &[
                    (QUICK, 3),
                    (Attempt::Throttled, 1),
                    (QUICK, 6 * 8 + 7 * 8 + 8),
                ],
                9,
            ),
        ];
        for (case, cap, attempts, expected) in cases {
            let mut controller = Controller::new(*cap);
            assert_eq!(after(&mut controller, attempts), *expected, "{case}");
        }
    }

    /// An account another client holds 6 of 15 slots on lets tapline have 9: the limit
    /// settles just under 9, and meets a 429 only when it probes.
    #[test]
    fn on_a_shared_account_the_limit_settles_under_its_room_with_few_429s() {
        let room = 9;
        let mut controller = Controller::new(15);
        let (mut answered, mut throttled) = (0, 0);
        for _ in 0..20_000 {
            // A round of `limit` requests at once: those beyond the room get 429.
            let limit = controller.limit();
            for index in 0..limit {
                if index < room {
                    answered += 1;
                    controller.observe(QUICK);
                } else {
                    throttled += 1;
                    controller.observe(Attempt::Throttled);
                }
            }
        }
        let limit = controller.limit();
        assert!((room - 1..=room + 1).contains(&limit), "{limit}");
        let share = throttled as f64 / (answered + throttled) as f64;
        assert!(share < 0.05, "{share}");
    }

    #[tokio::test]
    async fn the_limiter_takes_permits_out_as_the_limit_falls_and_adds_them_as_it_grows() {
        let limiter = Limiter::new(ThreadCount::Auto, 15, None);
        let held: Vec<Permit> = futures_held(&limiter, 4).await;
        assert_eq!(limiter.permits.available_permits(), 0);
        // A 429 with every permit out: the limit falls to 3, a permit is owed.
        let sending = limiter.sending().await;
        limiter.ended(sending, Ended::Throttled);
        assert_eq!(limiter.seen().last, 3);
        drop(held);
        assert_eq!(limiter.permits.available_permits(), 3);
        let fixed = Limiter::new(ThreadCount::Fixed(10), 3, None);
        assert_eq!(fixed.permits.available_permits(), 3);
        let sending = fixed.sending().await;
        fixed.ended(sending, Ended::Throttled);
        assert_eq!(
            fixed.seen(),
            Concurrency {
                adaptive: false,
                min: 3,
                max: 3,
                last: 3
            }
        );
    }

    async fn futures_held(limiter: &Arc<Limiter>, count: usize) -> Vec<Permit> {
        let mut held = Vec::new();
        for _ in 0..count {
            held.push(limiter.acquire().await);
        }
        held
    }
}
