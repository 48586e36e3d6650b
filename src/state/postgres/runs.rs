//! Run history in the shared store: the statements of `state::history`, for PostgreSQL.

use std::path::PathBuf;

use tokio_postgres::{Client, Row};

use super::super::{RunEntry, RunFilter, RunFinish, RunStart, now_ms, stop_kind, this_process};
use crate::outcome::{Counts, RunStatus, StopKind, Trigger};

const ENTRY_COLUMNS: &str =
    "run_id, pipeline, pipeline_file, trigger, started_at, finished_at, status,
     read, accepted, skipped, rejected, failed, requests, retries, resumed_from, rows_resumed,
     rejects_file, stop_reason, first_errors, warnings, unchanged, scheduled_for, runner,
     destination, stop_kind, concurrency";

fn entry(row: &Row) -> RunEntry {
    let count = |index: usize| row.get::<_, i64>(index) as u64;
    RunEntry {
        run_id: row.get(0),
        pipeline: row.get(1),
        pipeline_file: PathBuf::from(row.get::<_, String>(2)),
        trigger: row.get::<_, String>(3).parse().unwrap_or(Trigger::Manual),
        started_at_ms: row.get(4),
        finished_at_ms: row.get(5),
        scheduled_for_ms: row.get(21),
        runner: row.get(22),
        destination: row.get(23),
        end: RunFinish {
            status: row
                .get::<_, String>(6)
                .parse()
                .unwrap_or(RunStatus::Running),
            records: Counts {
                read: count(7),
                accepted: count(8),
                skipped: count(9),
                rejected: count(10),
                failed: count(11),
                unchanged: count(20),
            },
            requests: count(12),
            retries: count(13),
            resumed_from: row.get(14),
            rows_resumed: count(15),
            rejects_file: row.get::<_, Option<String>>(16).map(PathBuf::from),
            stop_reason: row.get(17),
            stop_kind: stop_kind(row.get::<_, Option<String>>(24)),
            first_errors: serde_json::from_str(row.get(18)).unwrap_or_default(),
            warnings: serde_json::from_str(row.get(19)).unwrap_or_default(),
            concurrency: row
                .get::<_, Option<String>>(25)
                .and_then(|text| serde_json::from_str(&text).ok()),
        },
    }
}

/// Records that a run started (again, harmlessly, when a lost connection made the first
/// attempt's outcome unknown).
pub(super) async fn start(
    client: &Client,
    run: &RunStart<'_>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO runs
             (run_id, pipeline, pipeline_file, trigger, started_at, status, scheduled_for, runner,
              destination)
             VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8) ON CONFLICT (run_id) DO NOTHING",
            &[
                &run.run_id,
                &run.pipeline,
                &run.pipeline_file.display().to_string(),
                &run.trigger.as_str(),
                &now_ms(),
                &run.scheduled_for.map(|at| at.timestamp_millis()),
                &this_process(),
                &run.destination,
            ],
        )
        .await
        .map(drop)
}

/// Records how a run ended.
pub(super) async fn finish(
    client: &Client,
    run_id: &str,
    finish: &RunFinish,
) -> Result<(), tokio_postgres::Error> {
    let counts = finish.records;
    client
        .execute(
            "UPDATE runs SET finished_at = $2, status = $3, read = $4, accepted = $5,
             skipped = $6, rejected = $7, failed = $8, requests = $9, retries = $10,
             resumed_from = $11, rows_resumed = $12, rejects_file = $13, stop_reason = $14,
             first_errors = $15, warnings = $16, unchanged = $17, stop_kind = $18,
             concurrency = $19
             WHERE run_id = $1",
            &[
                &run_id,
                &now_ms(),
                &finish.status.as_str(),
                &(counts.read as i64),
                &(counts.accepted as i64),
                &(counts.skipped as i64),
                &(counts.rejected as i64),
                &(counts.failed as i64),
                &(finish.requests as i64),
                &(finish.retries as i64),
                &finish.resumed_from,
                &(finish.rows_resumed as i64),
                &finish
                    .rejects_file
                    .as_ref()
                    .map(|path| path.display().to_string()),
                &finish.stop_reason,
                &serde_json::to_string(&finish.first_errors).unwrap_or_else(|_| "[]".into()),
                &serde_json::to_string(&finish.warnings).unwrap_or_else(|_| "[]".into()),
                &(counts.unchanged as i64),
                &finish.stop_kind.map(StopKind::as_str),
                &finish
                    .concurrency
                    .and_then(|seen| serde_json::to_string(&seen).ok()),
            ],
        )
        .await
        .map(drop)
}

/// The newest runs, of one pipeline or of all.
pub(super) async fn list(
    client: &Client,
    filter: &RunFilter,
) -> Result<Vec<RunEntry>, tokio_postgres::Error> {
    // Only the conditions asked for, so each query can use its index.
    let status = filter.status.map(RunStatus::as_str);
    let limit = filter.limit.min(i64::MAX as usize) as i64;
    let mut conditions = Vec::new();
    let mut values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&limit];
    if let Some(pipeline) = &filter.pipeline {
        values.push(pipeline);
        conditions.push(format!("pipeline = ${}", values.len()));
    }
    if let Some(status) = &status {
        values.push(status);
        conditions.push(format!("status = ${}", values.len()));
    }
    if let Some(before) = &filter.before {
        values.push(before);
        conditions.push(format!(
            "(started_at, run_id) < (SELECT started_at, run_id FROM runs WHERE run_id = ${})",
            values.len()
        ));
    }
    let filtered = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM runs {filtered} ORDER BY started_at DESC, run_id DESC LIMIT $1"
    );
    Ok(client
        .query(&sql, &values)
        .await?
        .iter()
        .map(entry)
        .collect())
}

/// Every pipeline with a run, in name order.
pub(super) async fn pipeline_names(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client
        .query("SELECT DISTINCT pipeline FROM runs ORDER BY pipeline", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// One run.
pub(super) async fn one(
    client: &Client,
    run_id: &str,
) -> Result<Option<RunEntry>, tokio_postgres::Error> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM runs WHERE run_id = $1");
    Ok(client
        .query_opt(&sql, &[&run_id])
        .await?
        .as_ref()
        .map(entry))
}

/// Deletes runs that started more than `days` days ago by the database's clock (a process
/// whose own clock is off prunes nothing it should not), none still running; returns their
/// rejects files that no run left in the history names.
pub(super) async fn prune(
    client: &Client,
    days: u32,
) -> Result<Vec<PathBuf>, tokio_postgres::Error> {
    // The statement sees the table as it was before its DELETE: the runs kept are those
    // that do not meet the DELETE's condition.
    Ok(client
        .query(
            "WITH cutoff AS (
                SELECT (extract(epoch FROM now()) * 1000)::int8 - $1::int8 * 86400000 AS ms
            ), pruned AS (
                DELETE FROM runs WHERE started_at < (SELECT ms FROM cutoff)
                    AND status != 'running'
                RETURNING rejects_file
            )
            SELECT DISTINCT pruned.rejects_file FROM pruned
            WHERE pruned.rejects_file IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM runs kept WHERE kept.rejects_file = pruned.rejects_file
                    AND (kept.started_at >= (SELECT ms FROM cutoff) OR kept.status = 'running')
            )",
            &[&i64::from(days)],
        )
        .await?
        .iter()
        .map(|row| PathBuf::from(row.get::<_, String>(0)))
        .collect())
}
