//! `send: changes` in the shared store: the journal written with each checkpoint (by
//! `SETTLE_LINES`), merged into
//! `record_fingerprints` when a run ends, and read back into the same in-memory snapshot the
//! embedded store's reader builds (`state::records`).

use futures_util::{StreamExt, pin_mut};
use tokio_postgres::{Client, Transaction};

use super::super::records::{
    IN_MEMORY_FINGERPRINTS, JournalEntry, MERGE_CHUNK, Snapshot, row_key, scope,
};
use super::{block_on, connect};
use crate::changes::KnownFingerprints;
use crate::pg;

/// Rows one upsert statement writes at most.
const UPSERT_ROWS: usize = 10_000;
/// Journal rows (one checkpoint's fingerprints each) fetched at a time while merging.
const JOURNAL_ROWS_PER_FETCH: i32 = 16;

/// Moves a scope's journal into the table, in key order, the last written winning for a
/// key, in one transaction; returns how many fingerprints it moved.
pub(super) async fn merge(
    client: &mut Client,
    (pipeline, destination): (&str, &str),
) -> Result<u64, tokio_postgres::Error> {
    let scope = scope(pipeline, destination);
    let transaction = client.transaction().await?;
    let journal = transaction
        .bind(
            "SELECT entries FROM fingerprint_journal WHERE scope = $1 ORDER BY id",
            &[&scope],
        )
        .await?;
    let mut merged = 0;
    let mut entries = Vec::new();
    loop {
        let rows = transaction
            .query_portal(&journal, JOURNAL_ROWS_PER_FETCH)
            .await?;
        for row in &rows {
            for entry in JournalEntry::read_all(row.get(0)) {
                entries.push(entry);
                merged += 1;
            }
            if entries.len() >= MERGE_CHUNK {
                upsert_sorted(&transaction, scope, &mut entries).await?;
            }
        }
        if rows.len() < JOURNAL_ROWS_PER_FETCH as usize {
            break;
        }
    }
    upsert_sorted(&transaction, scope, &mut entries).await?;
    transaction
        .execute(
            "DELETE FROM fingerprint_journal WHERE scope = $1",
            &[&scope],
        )
        .await?;
    transaction.commit().await?;
    Ok(merged)
}

/// Writes entries into the table in key order; of a key written twice, the later wins (one
/// statement may not change a row twice, so only the later is sent).
async fn upsert_sorted(
    transaction: &Transaction<'_>,
    scope: i64,
    entries: &mut Vec<JournalEntry>,
) -> Result<(), tokio_postgres::Error> {
    // Stable: entries of one key keep the order they were written in.
    entries.sort_by_key(|entry| entry.key);
    let mut latest: Vec<JournalEntry> = Vec::with_capacity(entries.len());
    for entry in entries.drain(..) {
        match latest.last_mut() {
            Some(last) if last.key == entry.key => *last = entry,
            _ => latest.push(entry),
        }
    }
    for chunk in latest.chunks(UPSERT_ROWS) {
        let keys: Vec<i64> = chunk.iter().map(|entry| entry.key).collect();
        let contents: Vec<i64> = chunk.iter().map(|entry| entry.content).collect();
        let expiries: Vec<Option<i64>> = chunk.iter().map(|entry| entry.expires_at).collect();
        transaction
            .execute(
                "INSERT INTO record_fingerprints (key, scope, content, expires_at)
                 SELECT key, $1, content, expires_at
                 FROM unnest($2::int8[], $3::int8[], $4::int8[]) AS t (key, content, expires_at)
                 ON CONFLICT (key) DO UPDATE SET scope = excluded.scope,
                    content = excluded.content, expires_at = excluded.expires_at",
                &[&scope, &keys, &contents, &expiries],
            )
            .await?;
    }
    Ok(())
}

/// Drops every fingerprint of `pipeline`, at every destination (and the scopes of single
/// arrived files that an older tapline kept, `pipeline/file`); returns how many.
pub(super) async fn forget(
    client: &mut Client,
    pipeline: &str,
) -> Result<u64, tokio_postgres::Error> {
    const SCOPES: &str = "SELECT scope FROM fingerprint_scopes
        WHERE pipeline = $1 OR starts_with(pipeline, $1 || '/')";
    let transaction = client.transaction().await?;
    let forgotten = transaction
        .execute(
            &format!("DELETE FROM record_fingerprints WHERE scope IN ({SCOPES})"),
            &[&pipeline],
        )
        .await?;
    for table in ["fingerprint_journal", "fingerprint_scopes"] {
        transaction
            .execute(
                &format!("DELETE FROM {table} WHERE scope IN ({SCOPES})"),
                &[&pipeline],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok(forgotten)
}

/// Drops a scope's fingerprints that expired by `now` (seconds) and by the database's clock;
/// returns how many.
pub(super) async fn prune(
    client: &Client,
    (pipeline, destination): (&str, &str),
    now: i64,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            // By the earlier of the caller's clock and the database's: a process whose clock
            // runs fast forgets nothing early for the others.
            "DELETE FROM record_fingerprints
             WHERE scope = $1 AND expires_at IS NOT NULL
               AND expires_at < least($2::int8, extract(epoch FROM now())::int8)",
            &[&scope(pipeline, destination), &now],
        )
        .await
}

/// Reads a scope's fingerprints through a connection of its own (the thread reading the
/// source asks while the run writes checkpoints on the store's), loaded at the first lookup.
pub(super) struct Reader {
    config: pg::Settings,
    shown: String,
    scope: i64,
    client: Option<Client>,
    snapshot: Option<Snapshot>,
}

impl Reader {
    pub(super) fn new(
        config: pg::Settings,
        shown: String,
        (pipeline, destination): (&str, &str),
    ) -> Self {
        Reader {
            config,
            shown,
            scope: scope(pipeline, destination),
            client: None,
            snapshot: None,
        }
    }

    /// Streams the scope's (key, content) pairs in key order, up to what memory holds.
    async fn load(client: &Client, scope: i64) -> Result<Snapshot, tokio_postgres::Error> {
        let rows = client
            .query_raw(
                "SELECT key, content FROM record_fingerprints WHERE scope = $1 ORDER BY key",
                [scope],
            )
            .await?;
        pin_mut!(rows);
        let mut pairs = Vec::new();
        let mut last_key = None;
        let mut covers_up_to = None;
        while let Some(row) = rows.next().await {
            let row = row?;
            if pairs.len() == IN_MEMORY_FINGERPRINTS {
                covers_up_to = last_key;
                break;
            }
            let key: i64 = row.get(0);
            pairs.push(super::super::records::pair_hash(
                key,
                row.get::<_, i64>(1) as u64,
            ));
            last_key = Some(key);
        }
        Ok(Snapshot::of(pairs, covers_up_to))
    }
}

impl KnownFingerprints for Reader {
    fn holds(&mut self, key: u64, content: u64) -> Result<bool, String> {
        let explain = |error: tokio_postgres::Error| {
            format!("the state store {}: {}", self.shown, pg::explain(&error))
        };
        if self.client.is_none() {
            self.client = Some(connect(&self.config, &self.shown)?);
        }
        let client = self.client.as_ref().expect("connected above");
        if self.snapshot.is_none() {
            self.snapshot = Some(block_on(Self::load(client, self.scope)).map_err(explain)?);
        }
        let row_key = row_key(self.scope, key);
        if let Some(held) = self
            .snapshot
            .as_ref()
            .expect("loaded above")
            .holds(row_key, content)
        {
            return Ok(held);
        }
        let found = block_on(client.query_opt(
            "SELECT content FROM record_fingerprints WHERE key = $1",
            &[&row_key],
        ))
        .map_err(explain)?;
        Ok(found.is_some_and(|row| row.get::<_, i64>(0) == content as i64))
    }
}
