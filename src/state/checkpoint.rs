//! Checkpoints (which source lines of an unfinished run are settled) and delivered files.
//!
//! A checkpoint belongs to a pipeline and a destination (account and URL) and holds the
//! fingerprint of the file it applies to. Lines are stored as inclusive ranges, one per
//! settled batch or skipped row, and merged when read.

use super::{Fingerprint, SettingsDigest};
use crate::outcome::SettledLines;

/// An unfinished run's progress over one source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The run that last worked on it.
    pub run_id: String,
    /// The file it applies to.
    pub fingerprint: Fingerprint,
    /// What the pipeline did with the file then.
    pub settings: SettingsDigest,
    /// What is settled.
    pub settled: SettledLines,
}

/// A file delivered in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The run that finished it.
    pub run_id: String,
}

/// The last delivery of a pipeline to a destination, as the stores read it.
pub(super) struct LastDelivery {
    pub(super) run_id: String,
    pub(super) content: String,
    pub(super) size: u64,
    pub(super) settings: SettingsDigest,
}

impl LastDelivery {
    /// The delivery, if it was of this content with these settings (or settings unknown).
    pub(super) fn of(
        self,
        fingerprint: &Fingerprint,
        settings: &SettingsDigest,
    ) -> Option<Delivered> {
        (self.content == fingerprint.content
            && self.size == fingerprint.size
            && (self.settings == *settings || self.settings.is_unknown()))
        .then_some(Delivered {
            run_id: self.run_id,
        })
    }
}
