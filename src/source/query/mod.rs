//! Query sources: a SQL query's result streamed into a [`snapshot`](super::snapshot) that
//! the run then reads like a file ([`materialize`]). This part knows no dialect: the errors,
//! the result's columns, and running a dialect's reader on a thread of its own;
//! `postgres/` is PostgreSQL's (and the warehouses that speak its protocol), `mysql/` MySQL's
//! and MariaDB's. A new database is a folder beside them.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::snapshot::SnapshotMeta;
use crate::config::model::{Dialect, QuerySource};

mod mysql;
mod postgres;

/// Why a query could not be read.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The database could not be reached or refused the login.
    #[error("cannot connect to database `{name}`{}: {reason}", shown_url(url))]
    Connect {
        /// The database's name in `connections.yaml`.
        name: String,
        /// Its URL, password masked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The query is not valid, or its result cannot be sent as it is.
    #[error("the query on database `{name}` {reason}")]
    Query {
        /// The database's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The query failed while its rows were read, or the snapshot could not be written.
    #[error("the query on database `{name}` failed after {rows} rows: {reason}")]
    Failed {
        /// The database's name.
        name: String,
        /// Rows read before it failed.
        rows: u64,
        /// What went wrong.
        reason: String,
    },
    /// Ctrl-C or SIGTERM while the rows were read.
    #[error("interrupted while the query's rows were read")]
    Interrupted,
}

/// A result column, as the database describes it.
#[derive(Debug, Clone)]
pub struct ResultColumn {
    /// Its name.
    pub name: String,
    /// The database's name of its type (`int8`, `timestamptz`, `_text`; `bigint`,
    /// `datetime`...).
    pub type_name: String,
    /// Whether tapline can send its values.
    pub supported: bool,
}

/// Connects and asks the database for the query's result columns, without running it.
pub async fn describe(source: &QuerySource) -> Result<Vec<ResultColumn>, QueryError> {
    match source.database.dialect {
        Dialect::Postgres => postgres::describe(source).await,
        Dialect::Mysql => mysql::describe(source).await,
    }
}

/// Runs the query into a snapshot at `path` (binding `bound` as its one parameter, NULL when
/// `None`) and returns the snapshot's meta: what the engine then reads, like a file. It runs
/// on a thread of its own: compressing the rows is work the runtime's threads should not
/// wait on.
pub async fn materialize(
    query: &QuerySource,
    bound: Option<String>,
    path: &Path,
    cancel: &CancellationToken,
) -> Result<SnapshotMeta, QueryError> {
    tracing::info!(database = %query.database.name, "reading the query's rows");
    let (query, path, cancel) = (query.clone(), path.to_path_buf(), cancel.clone());
    let runtime = tokio::runtime::Handle::current();
    let name = query.database.name.clone();
    tokio::task::spawn_blocking(move || {
        runtime.block_on(async {
            match query.database.dialect {
                Dialect::Postgres => postgres::snapshot(&query, bound, &path, &cancel).await,
                Dialect::Mysql => mysql::snapshot(&query, bound, &path, &cancel).await,
            }
        })
    })
    .await
    .unwrap_or_else(|error| {
        Err(QueryError::Failed {
            name,
            rows: 0,
            reason: format!("the reading thread ended: {error}"),
        })
    })
}

fn snapshot_error(error: &std::io::Error) -> String {
    format!("cannot write the snapshot of its rows in the state directory: {error}")
}

/// The message of a column whose type tapline cannot send, with the dialect's cast.
pub fn unsupported_type(dialect: Dialect, column: &str, type_name: &str) -> String {
    let cast = match dialect {
        Dialect::Postgres => "to text with `::text`, for example".to_string(),
        Dialect::Mysql => format!("`CAST({column} AS CHAR)`, for example"),
    };
    format!(
        "returns column `{column}` of type `{type_name}`, which tapline cannot send; cast it in the query ({cast})"
    )
}

/// A column the query returns more than once: a record has one value per name, so the
/// second would replace the first.
fn named_twice<'a>(names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .enumerate()
        .find(|(at, name)| names[..*at].contains(name))
        .map(|(_, name)| *name)
}

/// Why a query whose result names a column twice cannot be sent.
fn column_named_twice(database: &str, column: &str) -> QueryError {
    QueryError::Query {
        name: database.to_string(),
        reason: format!(
            "returns the column `{column}` more than once; give each column a name of its own (`... AS other_name`)"
        ),
    }
}

/// Why a query without its incremental column cannot be read incrementally.
fn incremental_missing(database: &str, column: &str) -> QueryError {
    QueryError::Query {
        name: database.to_string(),
        reason: format!("does not return the incremental column `{column}`"),
    }
}

/// Why a column of this type cannot order the rows an incremental query reads.
fn incremental_unordered(database: &str, column: &str, type_name: &str, kinds: &str) -> QueryError {
    QueryError::Query {
        name: database.to_string(),
        reason: format!(
            "returns the incremental column `{column}` as `{type_name}`; it must be {kinds}"
        ),
    }
}

/// What a dialect's query may return, for a hint.
pub fn sendable_types(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => {
            "tapline sends numbers, booleans, text, dates and times, uuid, json, jsonb and text[]"
        }
        Dialect::Mysql => {
            "tapline sends integers, decimals, floats, booleans (tinyint(1)), text, enum, set, date, datetime, timestamp and json"
        }
    }
}

/// A URL in a message, in brackets after the database's name; nothing when it is not known
/// here (an unset variable).
fn shown_url(url: &str) -> String {
    if url.is_empty() {
        String::new()
    } else {
        format!(" ({url})")
    }
}

/// A date and time without a zone, read in `zone`, in epoch seconds; a time a clock change
/// skips is read an hour later, as the clocks then say.
fn zone_epoch(time: chrono::NaiveDateTime, zone: chrono_tz::Tz) -> Option<i64> {
    use chrono::TimeZone;
    match zone.from_local_datetime(&time).earliest() {
        Some(local) => Some(local.timestamp()),
        None => zone
            .from_local_datetime(&(time + chrono::Duration::hours(1)))
            .earliest()
            .map(|local| local.timestamp()),
    }
}

/// A JSON value as its cell, refused when a number in it would arrive changed.
fn json_cell(text: &str, type_name: &str, cells: &mut super::snapshot::Cells<'_>) {
    match super::exact::inexact_number(text) {
        None => cells.json(text),
        Some(number) => cells.refused(&format!(
            "the `{type_name}` value holds the number {number}, which a JSON number cannot carry exactly (cast it to text in the query)"
        )),
    }
}
