//! Checkpoints (which source lines of an unfinished run are settled) and delivered files.
//!
//! A checkpoint belongs to a pipeline and a destination (account and URL) and holds the
//! fingerprint of the file it applies to. Lines are stored as inclusive ranges, one per
//! settled batch or skipped row, and merged when read.

use std::time::Instant;

use rusqlite::{OptionalExtension, params};

use super::{Fingerprint, SettingsDigest, SqliteStore, StateError, now_ms};
use crate::changes::RecordFingerprint;
use crate::outcome::{Counts, SettledLines};

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
                            sha256: row.get(3)?,
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
                    fingerprint.sha256,
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
    /// [`CHECKPOINT_SYNC_INTERVAL`](super::CHECKPOINT_SYNC_INTERVAL) after the last sync.
    pub fn settle_lines(
        &mut self,
        scope: (&str, &str),
        ranges: &[(u64, u64)],
        fingerprints: &[RecordFingerprint],
        progress: (&str, &Counts),
    ) -> Result<(), StateError> {
        let sync = self.checkpoint_synced.elapsed() >= super::CHECKPOINT_SYNC_INTERVAL;
        let settled = Settlement {
            scope,
            ranges,
            fingerprints,
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
            written.and(restored)
        };
        if sync && result.is_ok() {
            self.checkpoint_synced = Instant::now();
        }
        result.map_err(|error| self.error(error))
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
            transaction.execute(
                "INSERT OR REPLACE INTO deliveries
                 (pipeline, destination, sha256, size, run_id, delivered_at, settings)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    pipeline,
                    destination,
                    fingerprint.sha256,
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

    /// Which run delivered this content in full before with the same settings, if one did.
    /// A delivery recorded before settings were (an older tapline) counts whatever the
    /// settings, so an upgrade does not send every delivered file again.
    pub fn delivered(
        &self,
        pipeline: &str,
        destination: &str,
        (fingerprint, settings): (&Fingerprint, &SettingsDigest),
    ) -> Result<Option<Delivered>, StateError> {
        self.connection
            .query_row(
                "SELECT run_id FROM deliveries
                 WHERE pipeline = ?1 AND destination = ?2 AND sha256 = ?3 AND size = ?4
                   AND settings IN (?5, '')",
                params![
                    pipeline,
                    destination,
                    fingerprint.sha256,
                    fingerprint.size as i64,
                    settings.0
                ],
                |row| {
                    Ok(Delivered {
                        run_id: row.get(0)?,
                    })
                },
            )
            .optional()
            .map_err(|error| self.error(error))
    }
}

/// The transaction of [`SqliteStore::settle_lines`].
/// What one checkpoint write records: lines of a pipeline at a destination, and the
/// fingerprints of the records among them CleverTap accepted.
struct Settlement<'a> {
    scope: (&'a str, &'a str),
    ranges: &'a [(u64, u64)],
    fingerprints: &'a [RecordFingerprint],
}

/// One transaction: a crash never keeps a fingerprint of a record whose line is not
/// settled, nor settles a line whose accepted record's fingerprint is lost.
fn write_settled(
    connection: &mut rusqlite::Connection,
    settled: &Settlement<'_>,
    (run_id, counts): (&str, &Counts),
) -> rusqlite::Result<()> {
    let (pipeline, destination) = settled.scope;
    let transaction = connection.transaction()?;
    insert_ranges(&transaction, pipeline, destination, settled.ranges)?;
    super::records::insert(&transaction, settled.scope, settled.fingerprints)?;
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
    transaction.commit()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(sha256: &str) -> Fingerprint {
        Fingerprint {
            size: 10,
            modified_ns: 1,
            sha256: sha256.into(),
        }
    }

    #[test]
    fn a_checkpoint_keeps_its_lines_until_the_file_is_delivered() {
        let settings = SettingsDigest::of("profiles");
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let file = fingerprint("aa");
        assert_eq!(store.checkpoint("vip", "acct@url").unwrap(), None);
        store
            .begin_checkpoint(
                "vip",
                "acct@url",
                "run-1",
                (&file, &settings),
                &SettledLines::default(),
            )
            .unwrap();
        let accepted = crate::changes::RecordFingerprint {
            key: 7,
            content: u64::MAX,
            expires_at: Some(100),
        };
        store
            .settle_lines(
                ("vip", "acct@url"),
                &[(2, 1001)],
                &[accepted],
                ("run-1", &Counts::default()),
            )
            .unwrap();
        store
            .settle_lines(
                ("vip", "acct@url"),
                &[(1003, 1003)],
                &[],
                ("run-1", &Counts::default()),
            )
            .unwrap();
        // The fingerprint came with its lines, into the journal; merged, lookups see it. It
        // is the destination's and the pipeline's.
        assert!(
            !store
                .known_fingerprints("vip", "acct@url")
                .unwrap()
                .holds(7, u64::MAX)
                .unwrap()
        );
        assert_eq!(store.merge_fingerprints("vip", "acct@url").unwrap(), 1);
        assert_eq!(store.merge_fingerprints("vip", "acct@url").unwrap(), 0);
        let mut known = store.known_fingerprints("vip", "acct@url").unwrap();
        assert!(known.holds(7, u64::MAX).unwrap());
        assert!(!known.holds(7, 0).unwrap());
        assert!(!known.holds(8, u64::MAX).unwrap());
        let mut elsewhere = store.known_fingerprints("vip", "other@url").unwrap();
        assert!(!elsewhere.holds(7, u64::MAX).unwrap());
        // Expired events are pruned; `state forget` drops the rest.
        assert_eq!(store.prune_fingerprints("vip", "acct@url", 99).unwrap(), 0);
        assert_eq!(store.prune_fingerprints("vip", "acct@url", 101).unwrap(), 1);
        // A reader keeps the snapshot of its first lookup; a new one sees the prune.
        assert!(known.holds(7, u64::MAX).unwrap());
        let mut known = store.known_fingerprints("vip", "acct@url").unwrap();
        assert!(!known.holds(7, u64::MAX).unwrap());
        assert_eq!(store.forget_fingerprints("vip").unwrap(), 0);
        // Another destination has its own.
        assert_eq!(store.checkpoint("vip", "other@url").unwrap(), None);

        let reopened = SqliteStore::open(dir.path()).unwrap();
        let checkpoint = reopened.checkpoint("vip", "acct@url").unwrap().unwrap();
        assert_eq!(checkpoint.run_id, "run-1");
        assert_eq!(checkpoint.fingerprint, file);
        assert_eq!(checkpoint.settings, settings);
        assert_eq!(checkpoint.settled.ranges(), &[(2, 1001), (1003, 1003)]);

        store
            .begin_checkpoint(
                "vip",
                "acct@url",
                "run-2",
                (&file, &settings),
                &checkpoint.settled,
            )
            .unwrap();
        let resumed = store.checkpoint("vip", "acct@url").unwrap().unwrap();
        assert_eq!(
            (resumed.run_id.as_str(), resumed.settled.len()),
            ("run-2", 1001)
        );

        let delivered = |store: &SqliteStore, file: &Fingerprint, settings: &SettingsDigest| {
            store
                .delivered("vip", "acct@url", (file, settings))
                .unwrap()
                .map(|delivered| delivered.run_id)
        };
        assert_eq!(delivered(&store, &file, &settings), None);
        store
            .finish_delivery("vip", "acct@url", "run-2", (&file, &settings))
            .unwrap();
        assert_eq!(store.checkpoint("vip", "acct@url").unwrap(), None);
        assert_eq!(
            delivered(&store, &file, &settings).as_deref(),
            Some("run-2")
        );
        assert_eq!(delivered(&store, &fingerprint("bb"), &settings), None);
        // The same file sent as something else is another delivery.
        let events = SettingsDigest::of("events");
        assert_eq!(delivered(&store, &file, &events), None);
        // One recorded before settings were counts for any.
        store
            .connection
            .execute("UPDATE deliveries SET settings = ''", [])
            .unwrap();
        assert_eq!(delivered(&store, &file, &events).as_deref(), Some("run-2"));
    }
}
