//! The watermarks of incremental query sources: the highest value of the incremental column
//! that a fully delivered run sent, per pipeline and destination. The next run binds it as
//! `$1`.

use rusqlite::{OptionalExtension, params};

use super::super::{StateError, now_ms};
use super::SqliteStore;

impl SqliteStore {
    /// The watermark of `pipeline` at `destination`, if a run recorded one.
    pub fn watermark(
        &self,
        pipeline: &str,
        destination: &str,
    ) -> Result<Option<String>, StateError> {
        self.connection
            .query_row(
                "SELECT value FROM watermarks WHERE pipeline = ?1 AND destination = ?2",
                params![pipeline, destination],
                |row| row.get(0),
            )
            .optional()
            .map_err(|error| self.error(error))
    }

    /// Records the watermark a fully delivered run reached.
    pub fn set_watermark(
        &self,
        pipeline: &str,
        destination: &str,
        (value, run_id): (&str, &str),
    ) -> Result<(), StateError> {
        self.connection
            .execute(
                "INSERT INTO watermarks (pipeline, destination, value, run_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (pipeline, destination) DO UPDATE SET
                    value = excluded.value, run_id = excluded.run_id,
                    updated_at = excluded.updated_at",
                params![pipeline, destination, value, run_id, now_ms()],
            )
            .map(drop)
            .map_err(|error| self.error(error))
    }

    /// Drops every watermark of `pipeline`; returns how many (`tapline state forget`).
    pub fn forget_watermarks(&self, pipeline: &str) -> Result<u64, StateError> {
        self.connection
            .execute(
                "DELETE FROM watermarks WHERE pipeline = ?1",
                params![pipeline],
            )
            .map(|count| count as u64)
            .map_err(|error| self.error(error))
    }
}
