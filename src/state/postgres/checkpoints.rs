//! Checkpoints and deliveries in the shared store: the statements of
//! [`Checkpoints`](crate::state::Checkpoints) for PostgreSQL, a checkpoint write being one
//! statement that only the run owning the checkpoint can make.

use crate::outcome::{Counts, SettledLines};

use super::super::checkpoint::LastDelivery;
use super::super::{
    Accepted, Checkpoint, CheckpointKey, Checkpoints, Delivered, Fingerprint, SettingsDigest,
    StateError, now_ms,
};
use super::PgStore;

/// A checkpoint write, as one statement (one transaction, two round trips): the lines, the
/// fingerprints of the records CleverTap accepted among them, the run's counts. It writes
/// nothing when the run no longer owns the checkpoint (another run took it over after this
/// one's lease expired), and returns how many checkpoints it owned (1 or 0).
const SETTLE_LINES: &str = "
    WITH owned AS (
        SELECT 1 FROM checkpoints
        WHERE pipeline = $1 AND destination = $2 AND run_id = $3 FOR UPDATE
    ), lines AS (
        INSERT INTO settled_lines (pipeline, destination, first_line, last_line)
        SELECT $1, $2, first_line, last_line
        FROM unnest($4::int8[], $5::int8[]) AS settled (first_line, last_line)
        WHERE EXISTS (SELECT 1 FROM owned)
    ), scope AS (
        INSERT INTO fingerprint_scopes (scope, pipeline, destination)
        SELECT $6, $9, $2 WHERE $7::bytea IS NOT NULL AND EXISTS (SELECT 1 FROM owned)
        ON CONFLICT DO NOTHING
    ), journal AS (
        INSERT INTO fingerprint_journal (scope, entries)
        SELECT $6, $7 WHERE $7::bytea IS NOT NULL AND EXISTS (SELECT 1 FROM owned)
    ), counts AS (
        UPDATE runs SET read = ($8::int8[])[1], accepted = ($8::int8[])[2],
            skipped = ($8::int8[])[3], rejected = ($8::int8[])[4], failed = ($8::int8[])[5],
            unchanged = ($8::int8[])[6]
        WHERE run_id = $3 AND EXISTS (SELECT 1 FROM owned)
    )
    SELECT count(*) FROM owned";

impl Checkpoints for PgStore {
    fn checkpoint(&self, key: CheckpointKey<'_>) -> Result<Option<Checkpoint>, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        self.with_client(async |client| {
            let Some(head) = client
                .query_opt(
                    "SELECT run_id, size, modified_ns, sha256, settings FROM checkpoints
                     WHERE pipeline = $1 AND destination = $2",
                    &[&pipeline, &destination],
                )
                .await?
            else {
                return Ok(None);
            };
            let ranges = client
                .query(
                    "SELECT first_line, last_line FROM settled_lines
                     WHERE pipeline = $1 AND destination = $2",
                    &[&pipeline, &destination],
                )
                .await?
                .iter()
                .map(|row| (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
                .collect();
            Ok(Some(Checkpoint {
                run_id: head.get(0),
                fingerprint: Fingerprint {
                    size: head.get::<_, i64>(1) as u64,
                    modified_ns: head.get(2),
                    content: head.get(3),
                },
                settings: SettingsDigest(head.get(4)),
                settled: SettledLines::from_ranges(ranges),
            }))
        })
    }
    fn begin_checkpoint(
        &mut self,
        key: CheckpointKey<'_>,
        run_id: &str,
        (fingerprint, settings): (&Fingerprint, &SettingsDigest),
        settled: &SettledLines,
    ) -> Result<(), StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        self.with_client(async |client| {
            let transaction = client.transaction().await?;
            // A run that starts sending makes the last delivery no longer what CleverTap
            // holds (see `SqliteStore::begin_checkpoint`).
            for table in ["settled_lines", "deliveries"] {
                transaction
                    .execute(
                        &format!("DELETE FROM {table} WHERE pipeline = $1 AND destination = $2"),
                        &[&pipeline, &destination],
                    )
                    .await?;
            }
            transaction
                .execute(
                    "INSERT INTO checkpoints
                     (pipeline, destination, run_id, size, modified_ns, sha256, settings)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (pipeline, destination) DO UPDATE SET
                        run_id = excluded.run_id, size = excluded.size,
                        modified_ns = excluded.modified_ns, sha256 = excluded.sha256,
                        settings = excluded.settings",
                    &[
                        &pipeline,
                        &destination,
                        &run_id,
                        &(fingerprint.size as i64),
                        &fingerprint.modified_ns,
                        &fingerprint.content,
                        &settings.0,
                    ],
                )
                .await?;
            insert_ranges(&transaction, (pipeline, destination), settled.ranges()).await?;
            transaction.commit().await
        })
    }
    fn settle_lines(
        &mut self,
        key: CheckpointKey<'_>,
        ranges: &[(u64, u64)],
        accepted: Accepted<'_>,
        (run_id, counts): (&str, &Counts),
    ) -> Result<(), StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        let (first, last): (Vec<i64>, Vec<i64>) = ranges
            .iter()
            .map(|&(first, last)| (first as i64, last as i64))
            .unzip();
        let scope = super::super::records::scope(accepted.pipeline, destination);
        let journal = (!accepted.fingerprints.is_empty())
            .then(|| super::super::records::JournalEntry::pack(scope, accepted.fingerprints));
        let counts = [
            counts.read,
            counts.accepted,
            counts.skipped,
            counts.rejected,
            counts.failed,
            counts.unchanged,
        ]
        .map(|count| count as i64);
        let written = self.with_client(async |client| {
            let owned: i64 = client
                .query_one(
                    SETTLE_LINES,
                    &[
                        &pipeline,
                        &destination,
                        &run_id,
                        &first,
                        &last,
                        &scope,
                        &journal,
                        &counts.as_slice(),
                        &accepted.pipeline,
                    ],
                )
                .await?
                .get(0);
            Ok((owned > 0).then_some(()))
        })?;
        written.ok_or_else(|| StateError::TakenOver {
            pipeline: pipeline.to_string(),
            run_id: run_id.to_string(),
        })
    }
    fn finish_delivery(
        &mut self,
        key: CheckpointKey<'_>,
        run_id: &str,
        (fingerprint, settings): (&Fingerprint, &SettingsDigest),
    ) -> Result<(), StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        self.with_client(async |client| {
            let transaction = client.transaction().await?;
            // Only the last delivery says what CleverTap holds.
            for table in ["settled_lines", "checkpoints", "deliveries"] {
                transaction
                    .execute(
                        &format!("DELETE FROM {table} WHERE pipeline = $1 AND destination = $2"),
                        &[&pipeline, &destination],
                    )
                    .await?;
            }
            transaction
                .execute(
                    "INSERT INTO deliveries
                     (pipeline, destination, sha256, size, run_id, delivered_at, settings)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (pipeline, destination, sha256) DO UPDATE SET
                        size = excluded.size, run_id = excluded.run_id,
                        delivered_at = excluded.delivered_at, settings = excluded.settings",
                    &[
                        &pipeline,
                        &destination,
                        &fingerprint.content,
                        &(fingerprint.size as i64),
                        &run_id,
                        &now_ms(),
                        &settings.0,
                    ],
                )
                .await?;
            transaction.commit().await
        })
    }
    fn delivered(
        &self,
        key: CheckpointKey<'_>,
        (fingerprint, settings): (&Fingerprint, &SettingsDigest),
    ) -> Result<Option<Delivered>, StateError> {
        let CheckpointKey {
            pipeline,
            destination,
        } = key;
        let last = self.with_client(async |client| {
            Ok(client
                .query_opt(
                    "SELECT run_id, sha256, size, settings FROM deliveries
                     WHERE pipeline = $1 AND destination = $2
                     ORDER BY delivered_at DESC LIMIT 1",
                    &[&pipeline, &destination],
                )
                .await?
                .map(|row| LastDelivery {
                    run_id: row.get(0),
                    content: row.get(1),
                    size: row.get::<_, i64>(2) as u64,
                    settings: SettingsDigest(row.get(3)),
                }))
        })?;
        Ok(last.and_then(|last| last.of(fingerprint, settings)))
    }
}

/// Adds settled line ranges to a checkpoint, in one statement.
async fn insert_ranges(
    transaction: &tokio_postgres::Transaction<'_>,
    (pipeline, destination): (&str, &str),
    ranges: &[(u64, u64)],
) -> Result<(), tokio_postgres::Error> {
    if ranges.is_empty() {
        return Ok(());
    }
    let (first, last): (Vec<i64>, Vec<i64>) = ranges
        .iter()
        .map(|&(first, last)| (first as i64, last as i64))
        .unzip();
    transaction
        .execute(
            "INSERT INTO settled_lines (pipeline, destination, first_line, last_line)
             SELECT $1, $2, * FROM unnest($3::int8[], $4::int8[])",
            &[&pipeline, &destination, &first, &last],
        )
        .await
        .map(drop)
}
