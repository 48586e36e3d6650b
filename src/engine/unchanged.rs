//! The reading side's change filter (`send: changes`): each record, once encoded, is
//! fingerprinted; one CleverTap already has is taken back out of its batch and its line
//! noted as unchanged, the others keep their fingerprint with them to the answer, so only
//! accepted ones are recorded.

use std::sync::{Mutex, PoisonError};

use crate::changes::{self, KnownFingerprints, RecordFingerprint};
use crate::config::model::Target;

/// How a run detects changes.
pub struct ChangeDetection {
    /// When the fingerprints of the events this run sends may be forgotten (seconds since
    /// the epoch): `changes.event_days` after the run started.
    events_expire_at: i64,
    /// What CleverTap accepted before; `None` sends everything and records it anew
    /// (`tapline run --full`). In a mutex only so that run options can be shared between
    /// tasks: the reading thread takes it out once.
    known: Option<Mutex<Box<dyn KnownFingerprints>>>,
}

impl ChangeDetection {
    /// Detection against `known` (`None`: send everything, record it anew); the events
    /// sent are remembered for `event_days` from now.
    pub fn new(event_days: u32, known: Option<Box<dyn KnownFingerprints>>) -> Self {
        ChangeDetection {
            events_expire_at: changes::events_expire_at(chrono::Utc::now().timestamp(), event_days),
            known: known.map(Mutex::new),
        }
    }

    /// Whether CleverTap last accepted `content` under `key` (a whole custom list); a store
    /// that cannot be read knows nothing (the list is sent).
    pub(super) fn holds(&self, key: u64, content: u64) -> bool {
        let Some(known) = &self.known else {
            return false;
        };
        let mut known = known.lock().unwrap_or_else(PoisonError::into_inner);
        known.holds(key, content).unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot read the fingerprints of earlier runs; the list is sent");
            false
        })
    }
}

/// Unchanged lines handed to the sending side at most this many ranges at a time, so memory
/// stays bounded when nothing in a long file changed.
const MAX_PENDING_RANGES: usize = 4096;

/// The filter on the reading side.
pub(crate) struct ChangeFilter {
    target: Target,
    events_expire_at: i64,
    known: Option<Box<dyn KnownFingerprints>>,
    /// Unchanged lines not yet handed over, as inclusive ranges.
    pending: Vec<(u64, u64)>,
    /// Whether a lookup failed already (said once; the records are sent).
    lookup_failed: bool,
}

/// What the filter made of a record.
pub(super) enum Judgement {
    /// Send it; record this fingerprint (if any) once CleverTap accepts it.
    Send(Option<RecordFingerprint>),
    /// CleverTap has it.
    Unchanged,
}

impl ChangeFilter {
    pub(super) fn new(target: Target, detection: ChangeDetection) -> Self {
        ChangeFilter {
            target,
            events_expire_at: detection.events_expire_at,
            known: detection
                .known
                .map(|known| known.into_inner().unwrap_or_else(PoisonError::into_inner)),
            pending: Vec::new(),
            lookup_failed: false,
        }
    }

    /// Judges an encoded record (its JSON text; `listed_under` the key of a body by key).
    pub(super) fn judge(&mut self, record: &[u8], listed_under: Option<&str>) -> Judgement {
        let Some(fingerprint) =
            changes::fingerprint(self.target, record, listed_under, self.events_expire_at)
        else {
            return Judgement::Send(None);
        };
        let Some(known) = &mut self.known else {
            return Judgement::Send(Some(fingerprint));
        };
        match known.holds(fingerprint.key, fingerprint.content) {
            Ok(true) => Judgement::Unchanged,
            Ok(false) => Judgement::Send(Some(fingerprint)),
            Err(error) => {
                if !std::mem::replace(&mut self.lookup_failed, true) {
                    tracing::warn!(%error, "cannot read the fingerprints of earlier runs; records are sent as changed");
                }
                Judgement::Send(Some(fingerprint))
            }
        }
    }

    /// Notes an unchanged line; `true` when enough are pending to hand them over.
    pub(super) fn note_unchanged(&mut self, line: u64) -> bool {
        match self.pending.last_mut() {
            Some((_, last)) if *last + 1 == line => *last = line,
            _ => self.pending.push((line, line)),
        }
        self.pending.len() >= MAX_PENDING_RANGES
    }

    /// The unchanged lines noted since the last call.
    pub(super) fn take_unchanged(&mut self) -> Option<Vec<(u64, u64)>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}
