//! Run history in the embedded store: the statements of [`History`](crate::state::History)
//! for SQLite.

use std::path::PathBuf;

use rusqlite::{OptionalExtension, Row, params};

use super::super::{RunEntry, RunFilter, RunFinish, RunStart, StateError, now_ms, stop_kind};
use super::SqliteStore;
use crate::outcome::{Counts, RunStatus, StopKind, Trigger};

const ENTRY_COLUMNS: &str =
    "run_id, pipeline, pipeline_file, trigger, started_at, finished_at, status,
     read, accepted, skipped, rejected, failed, requests, retries, resumed_from, rows_resumed,
     rejects_file, stop_reason, first_errors, warnings, unchanged, scheduled_for, runner,
     destination, stop_kind, concurrency";

fn entry(row: &Row<'_>) -> rusqlite::Result<RunEntry> {
    let count = |index: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(index)? as u64) };
    Ok(RunEntry {
        run_id: row.get(0)?,
        pipeline: row.get(1)?,
        pipeline_file: PathBuf::from(row.get::<_, String>(2)?),
        trigger: row.get::<_, String>(3)?.parse().unwrap_or(Trigger::Manual),
        started_at_ms: row.get(4)?,
        finished_at_ms: row.get(5)?,
        scheduled_for_ms: row.get(21)?,
        runner: row.get(22)?,
        destination: row.get(23)?,
        end: RunFinish {
            status: row
                .get::<_, String>(6)?
                .parse()
                .unwrap_or(RunStatus::Running),
            records: Counts {
                read: count(7)?,
                accepted: count(8)?,
                skipped: count(9)?,
                rejected: count(10)?,
                failed: count(11)?,
                unchanged: count(20)?,
            },
            requests: count(12)?,
            retries: count(13)?,
            resumed_from: row.get(14)?,
            rows_resumed: count(15)?,
            rejects_file: row.get::<_, Option<String>>(16)?.map(PathBuf::from),
            stop_reason: row.get(17)?,
            stop_kind: stop_kind(row.get::<_, Option<String>>(24)?),
            first_errors: serde_json::from_str(&row.get::<_, String>(18)?).unwrap_or_default(),
            warnings: serde_json::from_str(&row.get::<_, String>(19)?).unwrap_or_default(),
            concurrency: row
                .get::<_, Option<String>>(25)?
                .and_then(|text| serde_json::from_str(&text).ok()),
        },
    })
}

impl SqliteStore {
    /// Records that a run started.
    pub fn start_run(&self, run: &RunStart<'_>) -> Result<(), StateError> {
        self.connection
            .execute(
                "INSERT INTO runs
                 (run_id, pipeline, pipeline_file, trigger, started_at, status, scheduled_for,
                  runner, destination)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8)",
                params![
                    run.run_id,
                    run.pipeline,
                    run.pipeline_file.display().to_string(),
                    run.trigger.as_str(),
                    now_ms(),
                    run.scheduled_for.map(|at| at.timestamp_millis()),
                    super::super::this_process(),
                    run.destination
                ],
            )
            .map(drop)
            .map_err(|error| self.error(error))
    }

    /// Records how a run ended.
    pub fn finish_run(&self, run_id: &str, finish: &RunFinish) -> Result<(), StateError> {
        let counts = finish.records;
        self.connection
            .execute(
                "UPDATE runs SET finished_at = ?2, status = ?3, read = ?4, accepted = ?5,
                 skipped = ?6, rejected = ?7, failed = ?8, requests = ?9, retries = ?10,
                 resumed_from = ?11, rows_resumed = ?12, rejects_file = ?13, stop_reason = ?14,
                 first_errors = ?15, warnings = ?16, unchanged = ?17, stop_kind = ?18,
                 concurrency = ?19
                 WHERE run_id = ?1",
                params![
                    run_id,
                    now_ms(),
                    finish.status.as_str(),
                    counts.read as i64,
                    counts.accepted as i64,
                    counts.skipped as i64,
                    counts.rejected as i64,
                    counts.failed as i64,
                    finish.requests as i64,
                    finish.retries as i64,
                    finish.resumed_from,
                    finish.rows_resumed as i64,
                    finish
                        .rejects_file
                        .as_ref()
                        .map(|path| path.display().to_string()),
                    finish.stop_reason,
                    serde_json::to_string(&finish.first_errors).unwrap_or_else(|_| "[]".into()),
                    serde_json::to_string(&finish.warnings).unwrap_or_else(|_| "[]".into()),
                    counts.unchanged as i64,
                    finish.stop_kind.map(StopKind::as_str),
                    finish
                        .concurrency
                        .and_then(|seen| serde_json::to_string(&seen).ok()),
                ],
            )
            .map(drop)
            .map_err(|error| self.error(error))
    }

    /// Marks runs of `pipeline` still `running` as abandoned. Call it holding the pipeline's
    /// lock: no live process runs them. Returns how many there were.
    pub fn abandon_running(&self, pipeline: &str) -> Result<usize, StateError> {
        self.connection
            .execute(
                "UPDATE runs SET status = 'abandoned' WHERE pipeline = ?1 AND status = 'running'",
                params![pipeline],
            )
            .map_err(|error| self.error(error))
    }

    /// The runs `filter` asks for, newest first.
    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<RunEntry>, StateError> {
        // Only the conditions asked for, so each query can use its index: a condition such
        // as `(?1 IS NULL OR pipeline = ?1)` makes SQLite read every run.
        let status = filter.status.map(RunStatus::as_str);
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let mut conditions = Vec::new();
        let mut values: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":limit", &limit)];
        if let Some(pipeline) = &filter.pipeline {
            conditions.push("pipeline = :pipeline");
            values.push((":pipeline", pipeline));
        }
        if let Some(status) = &status {
            conditions.push("status = :status");
            values.push((":status", status));
        }
        if let Some(before) = &filter.before {
            conditions.push(
                "(started_at, run_id) < (SELECT started_at, run_id FROM runs WHERE run_id = :before)",
            );
            values.push((":before", before));
        }
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM runs {} ORDER BY started_at DESC, run_id DESC LIMIT :limit",
            where_clause(&conditions)
        );
        let result = (|| {
            let mut statement = self.connection.prepare(&sql)?;
            statement
                .query_map(values.as_slice(), entry)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })();
        result.map_err(|error| self.error(error))
    }

    /// Every pipeline with a run, in name order (read from the index by pipeline).
    pub fn pipeline_names(&self) -> Result<Vec<String>, StateError> {
        let result = (|| {
            let mut statement = self
                .connection
                .prepare("SELECT DISTINCT pipeline FROM runs ORDER BY pipeline")?;
            statement
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })();
        result.map_err(|error| self.error(error))
    }

    /// One run by its ID.
    pub fn run(&self, run_id: &str) -> Result<Option<RunEntry>, StateError> {
        self.connection
            .query_row(
                &format!("SELECT {ENTRY_COLUMNS} FROM runs WHERE run_id = ?1"),
                params![run_id],
                entry,
            )
            .optional()
            .map_err(|error| self.error(error))
    }

    /// Deletes runs that started more than `days` days ago, none still running; returns
    /// their rejects files that no run left in the history names, for the caller to delete.
    pub fn prune(&self, days: u32) -> Result<Vec<PathBuf>, StateError> {
        let cutoff = now_ms() - i64::from(days) * 86_400_000;
        let result = (|| {
            let transaction = self.connection.unchecked_transaction()?;
            let pruned = transaction
                .prepare(
                    "DELETE FROM runs WHERE started_at < ?1 AND status != 'running'
                     RETURNING rejects_file",
                )?
                .query_map(params![cutoff], |row| row.get::<_, Option<String>>(0))?
                .filter_map(Result::transpose)
                .collect::<rusqlite::Result<std::collections::BTreeSet<String>>>()?;
            let mut named = transaction.prepare("SELECT 1 FROM runs WHERE rejects_file = ?1")?;
            let mut files = Vec::new();
            for file in pruned {
                if !named.exists(params![file])? {
                    files.push(PathBuf::from(file));
                }
            }
            drop(named);
            transaction.commit()?;
            Ok(files)
        })();
        result.map_err(|error| self.error(error))
    }
}

/// `WHERE a AND b`, or nothing without conditions.
fn where_clause(conditions: &[&str]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}
