//! The MySQL and MariaDB dialect of query sources: connecting (`crate::mysql`, the session in
//! UTC so a `TIMESTAMP` reads as the point in time it is), preparing the query (with
//! `incremental`, every `?` bound to the watermark), and reading its rows in the binary
//! protocol as they come off the socket, each value becoming the JSON CleverTap wants, or
//! refused by name ([`values`]). Nothing of the result is held beyond the row being written.

mod values;

use std::path::Path;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Statement, Value};
use tokio_util::sync::CancellationToken;
use values::{Kind, Order};

use super::{QueryError, ResultColumn, snapshot_error, unsupported_type};
use crate::config::model::{Database, Dialect, QuerySource};
use crate::mysql::{self, explain};
use crate::source::snapshot::{SnapshotMeta, SnapshotWriter};

/// Connects and asks the database for the query's result columns, without running it.
pub(super) async fn describe(source: &QuerySource) -> Result<Vec<ResultColumn>, QueryError> {
    let mut conn = connect(&source.database).await?;
    let statement = prepare(&mut conn, source).await?;
    Ok(statement
        .columns()
        .iter()
        .map(|column| ResultColumn {
            name: column.name_str().into_owned(),
            type_name: Kind::type_name(column),
            supported: Kind::of(column).is_some(),
        })
        .collect())
}

/// Runs the query and writes every row of its result to a snapshot at `path`; `bound` is
/// the value bound to each `?` of an incremental source (NULL when `None`). Returns the
/// snapshot's meta, with the highest value of the incremental column.
pub(super) async fn snapshot(
    source: &QuerySource,
    bound: Option<String>,
    path: &Path,
    cancel: &CancellationToken,
) -> Result<SnapshotMeta, QueryError> {
    let name = &source.database.name;
    let mut conn = connect(&source.database).await?;
    let statement = prepare(&mut conn, source).await?;
    let columns = statement.columns();
    let kinds = column_kinds(&columns, name)?;
    let incremental = match &source.incremental {
        Some(column) => Some(incremental_index(&columns, column, name)?),
        None => None,
    };
    let failed = |rows: u64, reason: String| QueryError::Failed {
        name: name.clone(),
        rows,
        reason,
    };
    let names: Vec<String> = columns
        .iter()
        .map(|column| column.name_str().into_owned())
        .collect();
    let mut writer =
        SnapshotWriter::create(path, &names).map_err(|error| failed(0, snapshot_error(&error)))?;
    let parameters = if statement.num_params() == 0 {
        Params::Empty
    } else {
        let value = bound.map_or(Value::NULL, |text| Value::Bytes(text.into_bytes()));
        Params::Positional(vec![value; usize::from(statement.num_params())])
    };
    let mut result = match conn.exec_iter(&statement, parameters).await {
        Ok(result) => result,
        Err(error) => {
            writer.abandon();
            return Err(QueryError::Query {
                name: name.clone(),
                reason: format!("failed: {}", explain(&error)),
            });
        }
    };
    let zone = source.timezone;
    let mut highest: Option<(Order, String)> = None;
    loop {
        let row = tokio::select! {
            row = result.next() => row,
            () = cancel.cancelled() => {
                writer.abandon();
                return Err(QueryError::Interrupted);
            }
        };
        let row = match row {
            Ok(None) => break,
            Ok(Some(row)) => row,
            Err(error) => {
                let read = writer.rows();
                writer.abandon();
                return Err(failed(read, explain(&error)));
            }
        };
        let mut cells = writer.row();
        for (index, kind) in kinds.iter().enumerate() {
            match row.as_ref(index) {
                Some(value) => kind.write(value, zone, &mut cells),
                None => cells.null(),
            }
        }
        if let Err(error) = cells.end() {
            let read = writer.rows();
            writer.abandon();
            return Err(failed(read, snapshot_error(&error)));
        }
        if let Some((index, kind)) = incremental
            && let Some(value) = row.as_ref(index)
            && let Some((order, text)) = kind.order(value)
            && highest.as_ref().is_none_or(|(top, _)| order.above(top))
        {
            highest = Some((order, text));
        }
    }
    let read = writer.rows();
    writer
        .finish(highest.map(|(_, text)| text))
        .map_err(|error| failed(read, snapshot_error(&error)))
}

/// The kind of each result column, or the first column of a type tapline cannot send.
fn column_kinds(columns: &[mysql_async::Column], name: &str) -> Result<Vec<Kind>, QueryError> {
    columns
        .iter()
        .map(|column| {
            Kind::of(column).ok_or_else(|| QueryError::Query {
                name: name.to_string(),
                reason: unsupported_type(
                    Dialect::Mysql,
                    &column.name_str(),
                    &Kind::type_name(column),
                ),
            })
        })
        .collect()
}

/// Connects, the session's time zone UTC.
async fn connect(database: &Database) -> Result<Conn, QueryError> {
    let refused = |reason: String| QueryError::Connect {
        name: database.name.clone(),
        url: database.shown(),
        reason,
    };
    if database.url.expose().is_empty() {
        return Err(refused(
            "its URL is not known here (an environment variable it names is not set)".into(),
        ));
    }
    let settings = mysql::settings(database.url.expose()).map_err(refused)?;
    let mut conn = mysql::connect(&settings).await.map_err(refused)?;
    conn.query_drop("SET time_zone = '+00:00'")
        .await
        .map_err(|error| refused(explain(&error)))?;
    Ok(conn)
}

async fn prepare(conn: &mut Conn, source: &QuerySource) -> Result<Statement, QueryError> {
    let name = &source.database.name;
    let statement = conn
        .prep(source.query.as_str())
        .await
        .map_err(|error| QueryError::Query {
            name: name.clone(),
            reason: format!("is not valid: {}", explain(&error)),
        })?;
    if statement.num_params() > 0 && source.incremental.is_none() {
        return Err(QueryError::Query {
            name: name.clone(),
            reason: "uses `?`, which only an `incremental` source binds".into(),
        });
    }
    let columns = statement.columns();
    let names: Vec<std::borrow::Cow<'_, str>> = columns.iter().map(|c| c.name_str()).collect();
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    if let Some(twice) = super::named_twice(&names) {
        return Err(super::column_named_twice(name, twice));
    }
    Ok(statement)
}

/// The index and kind of the incremental column in the result.
fn incremental_index(
    columns: &[mysql_async::Column],
    column: &str,
    name: &str,
) -> Result<(usize, Kind), QueryError> {
    let found = columns
        .iter()
        .enumerate()
        .find(|(_, c)| c.name_str() == column);
    let Some((index, found)) = found else {
        return Err(super::incremental_missing(name, column));
    };
    match Kind::of(found).filter(|kind| kind.orders()) {
        Some(kind) => Ok((index, kind)),
        None => Err(super::incremental_unordered(
            name,
            column,
            &Kind::type_name(found),
            "a number, a date, a datetime or text",
        )),
    }
}
