//! What starts the daemon's runs: the last cron fire of each pipeline (to catch up after
//! downtime) and the files that arrived for `trigger: file_arrival` (each version once).

use crate::source::arrival::Arrival;

/// A fire is claimed by moving the pipeline's last fire forward to it, which only one of
/// several processes claiming the same fire at once can do (both SQLite and PostgreSQL take
/// a row lock for an upsert): the statement changes one row for it, none for the others.
pub(super) const CLAIM_FIRE: &str = "INSERT INTO fires (pipeline, fired_at) VALUES ($1, $2)
     ON CONFLICT (pipeline) DO UPDATE SET fired_at = excluded.fired_at
     WHERE fires.fired_at < excluded.fired_at";

/// When an arrived file was last written, as the stores keep it: nanoseconds since the
/// Unix epoch.
pub(super) fn modified_ns(arrival: &Arrival) -> i64 {
    arrival
        .modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i64)
}

/// An arrival as the stores keep it: path, size, modification time (ns) and version.
pub(super) fn arrival_of(path: String, size: i64, modified_ns: i64, version: String) -> Arrival {
    Arrival {
        path: path.into(),
        size: u64::try_from(size).unwrap_or(0),
        modified: std::time::UNIX_EPOCH
            + std::time::Duration::from_nanos(u64::try_from(modified_ns).unwrap_or(0)),
        version,
    }
}
