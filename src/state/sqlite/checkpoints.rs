//! Checkpoints and deliveries in the embedded store: the statements of
//! [`Checkpoints`](crate::state::Checkpoints) for SQLite.

use std::time::Instant;

use rusqlite::{OptionalExtension, params};

use super::super::checkpoint::LastDelivery;
use super::super::{
    Accepted, Checkpoint, Delivered, Fingerprint, SettingsDigest, StateError, now_ms,
};
use super::SqliteStore;
use crate::outcome::{Counts, SettledLines};

impl SqliteStore {
    /// The checkpoint of `pipeline` for `destination`, if a run left one.
    pub fn checkpoint(
        &self,
        pipeline: &str,
        destination: &str,
    ) -> Result<Option<Checkpoint>, StateError> {
        let head = self
            .connection
            .query_row(
                "SELECT run_id, size, modified_ns, sha256, settings FROM checkpoints
                 WHERE pipeline = ?1 AND destination = ?2",
                params![pipeline, destination],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        Fingerprint {
                            size: row.get::<_, i64>(1)? as u64,
                            modified_ns: row.get(2)?,
                            content: row.get(3)?,
                        },
                        SettingsDigest(row.get(4)?),
                    ))
                },
            )
            .optional()
            .map_err(|error| self.error(error))?;
        let Some((run_id, fingerprint, settings)) = head else {
            return Ok(None);
        };
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT first_line, last_line FROM settled_lines
                 WHERE pipeline = ?1 AND destination = ?2",
            )
            .map_err(|error| self.error(error))?;
        let ranges = statement
            .query_map(params![pipeline, destination], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|error| self.error(error))?;
        Ok(Some(Checkpoint {
            run_id,
            fingerprint,
            settings,
            settled: SettledLines::from_ranges(ranges),
        }))
    }

    /// Makes `run_id` the owner of the checkpoint for this file, keeping `settled` (empty for
    /// a fresh start). The lines are rewritten merged, so the table stays small.
    pub fn begin_checkpoint(
        &mut self,
        pipeline: &str,
        destination: &str,
        run_id: &str,
        (fingerprint, settings): (&Fingerprint, &SettingsDigest),
        settled: &SettledLines,
    ) -> Result<(), StateError> {
        let result = (|| {
            let transaction = self.connection.transaction()?;
            transaction.execute(
                "DELETE FROM settled_lines WHERE pipeline = ?1 AND destination = ?2",
                params![pipeline, destination],
            )?;
            // A run that starts sending makes the last delivery no longer what CleverTap
            // holds: whatever it sends, a later run of the delivered content sends again.
            transaction.execute(
                "DELETE FROM deliveries WHERE pipeline = ?1 AND destination = ?2",
                params![pipeline, destination],
            )?;
            transaction.execute(
                "INSERT OR REPLACE INTO checkpoints
                 (pipeline, destination, run_id, size, modified_ns, sha256, settings)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    pipeline,
                    destination,
                    run_id,
                    fingerprint.size as i64,
                    fingerprint.modified_ns,
                    fingerprint.content,
                    settings.0
                ],
            )?;
            insert_ranges(&transaction, pipeline, destination, settled.ranges())?;
            transaction.commit()
        })();
        result.map_err(|error| self.error(error))
    }

    /// Records lines as settled and the run's counts so far, in one transaction that
    /// survives the process being killed; it is synced to disk at most
    /// [`CHECKPOINT_SYNC_INTERVAL`](super::super::CHECKPOINT_SYNC_INTERVAL) after the last sync.
    pub fn settle_lines(
        &mut self,
        scope: (&str, &str),
        ranges: &[(u64, u64)],
        accepted: Accepted<'_>,
        progress: (&str, &Counts),
    ) -> Result<(), StateError> {
        let sync = self.checkpoint_synced.elapsed() >= super::super::CHECKPOINT_SYNC_INTERVAL;
        let settled = Settlement {
            scope,
            ranges,
            accepted,
        };
        let result = if sync {
            write_settled(&mut self.connection, &settled, progress)
        } else {
            // Not synced to disk this time; every other write stays synced at once, so FULL
            // comes back whether or not the write went through.
            let connection = &mut self.connection;
            let written = connection
                .pragma_update(None, "synchronous", "NORMAL")
                .and_then(|()| write_settled(connection, &settled, progress));
            let restored = connection.pragma_update(None, "synchronous", "FULL");
            restored.and(written)
        };
        if sync && result.is_ok() {
            self.checkpoint_synced = Instant::now();
        }
        match result.map_err(|error| self.error(error))? {
            true => Ok(()),
            false => Err(StateError::TakenOver {
                pipeline: scope.0.to_string(),
                run_id: progress.0.to_string(),
            }),
        }
    }

    /// The file is delivered in full: drop the checkpoint, remember the file and what was
    /// done with it.
    pub fn finish_delivery(
        &mut self,
        pipeline: &str,
        destination: &str,
        run_id: &str,
        (fingerprint, settings): (&Fingerprint, &SettingsDigest),
    ) -> Result<(), StateError> {
        let result = (|| {
            let transaction = self.connection.transaction()?;
            delete_checkpoint(&transaction, pipeline, destination)?;
            // Only the last delivery says what CleverTap holds.
            transaction.execute(
                "DELETE FROM deliveries WHERE pipeline = ?1 AND destination = ?2",
                params![pipeline, destination],
            )?;
            transaction.execute(
                "INSERT OR REPLACE INTO deliveries
                 (pipeline, destination, sha256, size, run_id, delivered_at, settings)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    pipeline,
                    destination,
                    fingerprint.content,
                    fingerprint.size as i64,
                    run_id,
                    now_ms(),
                    settings.0
                ],
            )?;
            transaction.commit()
        })();
        result.map_err(|error| self.error(error))
    }

    /// Which run delivered this content in full with the same settings, if the last
    /// delivery of `pipeline` to `destination` was this content: an earlier delivery of it
    /// does not count once other content was sent since (gold, silver, gold: the third run
    /// sends gold again). A delivery recorded before settings were (an older tapline) counts
    /// whatever the settings, so an upgrade does not send every delivered file again.
    pub fn delivered(
        &self,
        pipeline: &str,
        destination: &str,
        (fingerprint, settings): (&Fingerprint, &SettingsDigest),
    ) -> Result<Option<Delivered>, StateError> {
        let last = self
            .connection
            .query_row(
                // Stores written before only the last delivery was kept may hold several.
                "SELECT run_id, sha256, size, settings FROM deliveries
                 WHERE pipeline = ?1 AND destination = ?2
                 ORDER BY delivered_at DESC, rowid DESC LIMIT 1",
                params![pipeline, destination],
                |row| {
                    Ok(LastDelivery {
                        run_id: row.get(0)?,
                        content: row.get(1)?,
                        size: row.get::<_, i64>(2)? as u64,
                        settings: SettingsDigest(row.get(3)?),
                    })
                },
            )
            .optional()
            .map_err(|error| self.error(error))?;
        Ok(last.and_then(|last| last.of(fingerprint, settings)))
    }
}

/// The transaction of [`SqliteStore::settle_lines`].
/// What one checkpoint write records: lines of a pipeline at a destination, and the
/// fingerprints of the records among them CleverTap accepted.
struct Settlement<'a> {
    scope: (&'a str, &'a str),
    ranges: &'a [(u64, u64)],
    accepted: Accepted<'a>,
}

/// One transaction: a crash never keeps a fingerprint of a record whose line is not
/// settled, nor settles a line whose accepted record's fingerprint is lost. Writes nothing
/// and returns `false` when another run took the checkpoint over.
fn write_settled(
    connection: &mut rusqlite::Connection,
    settled: &Settlement<'_>,
    (run_id, counts): (&str, &Counts),
) -> rusqlite::Result<bool> {
    let (pipeline, destination) = settled.scope;
    let transaction = connection.transaction()?;
    let owned = transaction
        .prepare_cached(
            "SELECT 1 FROM checkpoints WHERE pipeline = ?1 AND destination = ?2 AND run_id = ?3",
        )?
        .exists(params![pipeline, destination, run_id])?;
    if !owned {
        return Ok(false);
    }
    insert_ranges(&transaction, pipeline, destination, settled.ranges)?;
    super::fingerprints::insert(
        &transaction,
        (settled.accepted.pipeline, destination),
        settled.accepted.fingerprints,
    )?;
    transaction
        .prepare_cached(
            "UPDATE runs SET read = ?2, accepted = ?3, skipped = ?4, rejected = ?5, failed = ?6,
             unchanged = ?7
             WHERE run_id = ?1",
        )?
        .execute(params![
            run_id,
            counts.read as i64,
            counts.accepted as i64,
            counts.skipped as i64,
            counts.rejected as i64,
            counts.failed as i64,
            counts.unchanged as i64
        ])?;
    transaction.commit().map(|()| true)
}

fn insert_ranges(
    transaction: &rusqlite::Transaction<'_>,
    pipeline: &str,
    destination: &str,
    ranges: &[(u64, u64)],
) -> rusqlite::Result<()> {
    let mut insert = transaction.prepare_cached(
        "INSERT INTO settled_lines (pipeline, destination, first_line, last_line)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for &(first, last) in ranges {
        insert.execute(params![pipeline, destination, first as i64, last as i64])?;
    }
    Ok(())
}

fn delete_checkpoint(
    transaction: &rusqlite::Transaction<'_>,
    pipeline: &str,
    destination: &str,
) -> rusqlite::Result<()> {
    transaction.execute(
        "DELETE FROM settled_lines WHERE pipeline = ?1 AND destination = ?2",
        params![pipeline, destination],
    )?;
    transaction.execute(
        "DELETE FROM checkpoints WHERE pipeline = ?1 AND destination = ?2",
        params![pipeline, destination],
    )?;
    Ok(())
}
