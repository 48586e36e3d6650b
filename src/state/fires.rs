//! The daemon's last fire of each pipeline: what lets it catch up after downtime.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{StateError, StateStore};

impl StateStore {
    /// When the daemon last fired `pipeline`, if ever.
    pub fn last_fire(&self, pipeline: &str) -> Result<Option<DateTime<Utc>>, StateError> {
        let fired: Option<i64> = self
            .connection
            .query_row(
                "SELECT fired_at FROM fires WHERE pipeline = ?1",
                params![pipeline],
                |row| row.get(0),
            )
            .optional()
            .map_err(|error| self.error(error))?;
        Ok(fired.and_then(DateTime::from_timestamp_millis))
    }

    /// Records a fire of `pipeline`.
    pub fn record_fire(&self, pipeline: &str, at: DateTime<Utc>) -> Result<(), StateError> {
        self.connection
            .execute(
                "INSERT INTO fires (pipeline, fired_at) VALUES (?1, ?2)
                 ON CONFLICT (pipeline) DO UPDATE SET fired_at = excluded.fired_at",
                params![pipeline, at.timestamp_millis()],
            )
            .map(drop)
            .map_err(|error| self.error(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_fire_per_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.last_fire("vip").unwrap(), None);
        let first = DateTime::from_timestamp_millis(1_764_300_000_000).unwrap();
        let second = DateTime::from_timestamp_millis(1_764_300_060_000).unwrap();
        store.record_fire("vip", first).unwrap();
        store.record_fire("vip", second).unwrap();
        assert_eq!(store.last_fire("vip").unwrap(), Some(second));
        assert_eq!(store.last_fire("events").unwrap(), None);
    }
}
