//! The daemon's fires and file arrivals in the embedded store: the statements of
//! [`Triggers`](crate::state::Triggers) for SQLite.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::super::triggers::{CLAIM_FIRE, modified_ns};
use super::super::{StateError, now_ms};
use super::SqliteStore;
use crate::source::arrival::Arrival;

impl SqliteStore {
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

    /// Claims the fire of `pipeline` due `at`: `true` when no process claimed it (or a
    /// later one) before.
    pub fn claim_fire(&self, pipeline: &str, at: DateTime<Utc>) -> Result<bool, StateError> {
        self.connection
            .execute(CLAIM_FIRE, params![pipeline, at.timestamp_millis()])
            .map(|claimed| claimed == 1)
            .map_err(|error| self.error(error))
    }
}

impl SqliteStore {
    /// Whether this version of the file (path, size, modification time, an object's ETag) was handled by a
    /// run of `pipeline` already (delivered, or failed for good).
    pub fn has_arrived(&self, pipeline: &str, arrival: &Arrival) -> Result<bool, StateError> {
        self.connection
            .query_row(
                "SELECT 1 FROM arrivals
                 WHERE pipeline = ?1 AND path = ?2 AND size = ?3 AND modified_ns = ?4
                   AND version = ?5",
                params![
                    pipeline,
                    arrival.path.display().to_string(),
                    arrival.size as i64,
                    modified_ns(arrival),
                    arrival.version
                ],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(|error| self.error(error))
    }

    /// Every arrival of `pipeline` recorded as handled.
    pub fn arrivals(
        &self,
        pipeline: &str,
        each: &mut dyn FnMut(Arrival),
    ) -> Result<(), StateError> {
        let mut statement = self
            .connection
            .prepare("SELECT path, size, modified_ns, version FROM arrivals WHERE pipeline = ?1")
            .map_err(|error| self.error(error))?;
        let mut rows = statement
            .query(params![pipeline])
            .map_err(|error| self.error(error))?;
        while let Some(row) = rows.next().map_err(|error| self.error(error))? {
            let read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<Arrival> {
                Ok(super::super::triggers::arrival_of(
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, String>(3)?,
                ))
            };
            each(read(row).map_err(|error| self.error(error))?);
        }
        Ok(())
    }

    /// Records that a run of `pipeline` handled this version of the file.
    pub fn record_arrival(&self, pipeline: &str, arrival: &Arrival) -> Result<(), StateError> {
        self.connection
            .execute(
                "INSERT OR IGNORE INTO arrivals (pipeline, path, size, modified_ns, version, seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    pipeline,
                    arrival.path.display().to_string(),
                    arrival.size as i64,
                    modified_ns(arrival),
                    arrival.version,
                    now_ms()
                ],
            )
            .map(drop)
            .map_err(|error| self.error(error))
    }
}
