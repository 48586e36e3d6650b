//! The PostgreSQL dialect of query sources: connecting (`crate::pg`), preparing the query
//! (one parameter at most, `$1` for `incremental`), and reading its rows in PostgreSQL's
//! binary format, one at a time (tokio-postgres reads the socket only as fast as rows are
//! taken), each value becoming the JSON CleverTap wants, or refused by name
//! ([`super::super::exact`]). Nothing of the result is held beyond the row being written.

mod guard;
mod values;

use super::{QueryError, ResultColumn, snapshot_error, unsupported_type};
use std::path::Path;
use values::{Kind, Order};

use futures_util::{StreamExt, pin_mut};
use tokio_postgres::types::{Format, FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Statement};
use tokio_util::sync::CancellationToken;

use crate::config::model::{Database, Dialect, QuerySource};
use crate::pg::{self, explain};
use crate::source::exact;
use crate::source::snapshot::{Cells, SnapshotMeta, SnapshotWriter};

/// Seconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const POSTGRES_EPOCH_SECONDS: i64 = 946_684_800;

/// Connects and asks the database for the query's result columns, without running it.
pub(super) async fn describe(source: &QuerySource) -> Result<Vec<ResultColumn>, QueryError> {
    let client = connect(&source.database).await?;
    let statement = prepare(&client, source).await?;
    Ok(statement
        .columns()
        .iter()
        .map(|column| ResultColumn {
            name: column.name().to_string(),
            type_name: column.type_().name().to_string(),
            supported: Kind::of(column.type_()).is_some(),
        })
        .collect())
}

/// Runs the query and writes every row of its result to a snapshot at `path`; `bound` is
/// the value bound to `$1` for an incremental source (NULL when `None`). Returns the
/// snapshot's meta, with the highest value of the incremental column.
pub(super) async fn snapshot(
    source: &QuerySource,
    bound: Option<String>,
    path: &Path,
    cancel: &CancellationToken,
) -> Result<SnapshotMeta, QueryError> {
    let client = connect(&source.database).await?;
    let statement = prepare(&client, source).await?;
    let name = &source.database.name;
    let kinds = column_kinds(&statement, name)?;
    let incremental = match &source.incremental {
        Some(column) => Some(incremental_index(&statement, column, name)?),
        None => None,
    };
    let failed = |rows: u64, reason: String| QueryError::Failed {
        name: name.clone(),
        rows,
        reason,
    };
    let names: Vec<String> = statement
        .columns()
        .iter()
        .map(|column| column.name().to_string())
        .collect();
    let mut writer =
        SnapshotWriter::create(path, &names).map_err(|error| failed(0, snapshot_error(&error)))?;
    let parameters: Vec<TextParameter> = if statement.params().is_empty() {
        Vec::new()
    } else {
        vec![TextParameter(bound)]
    };
    let (statement, lengths) = guarded(&client, &source.query, statement, &kinds).await;
    let rows = match client.query_raw(&statement, parameters.iter()).await {
        Ok(rows) => rows,
        Err(error) => {
            writer.abandon();
            return Err(QueryError::Query {
                name: name.clone(),
                reason: format!("failed: {}", explain(&error)),
            });
        }
    };
    pin_mut!(rows);
    let zone = source.timezone;
    let mut highest: Option<(Order, String)> = None;
    loop {
        let row = tokio::select! {
            row = rows.next() => row,
            () = cancel.cancelled() => {
                writer.abandon();
                return Err(QueryError::Interrupted);
            }
        };
        let row = match row {
            None => break,
            Some(Ok(row)) => row,
            Some(Err(error)) => {
                let read = writer.rows();
                writer.abandon();
                return Err(failed(read, explain(&error)));
            }
        };
        let mut cells = writer.row();
        if let Err(error) = write_row(&row, &kinds, &lengths, zone, &mut cells) {
            let read = writer.rows();
            writer.abandon();
            return Err(failed(read, explain(&error)));
        }
        if let Err(error) = cells.end() {
            let read = writer.rows();
            writer.abandon();
            return Err(failed(read, snapshot_error(&error)));
        }
        if let Some((index, kind)) = incremental {
            note_highest(&row, index, kind, &mut highest);
        }
    }
    let read = writer.rows();
    writer
        .finish(highest.map(|(_, text)| text))
        .map_err(|error| failed(read, snapshot_error(&error)))
}

/// The kind of each result column, or the first column of a type tapline cannot send.
fn column_kinds(statement: &Statement, name: &str) -> Result<Vec<Kind>, QueryError> {
    statement
        .columns()
        .iter()
        .map(|column| {
            Kind::of(column.type_()).ok_or_else(|| QueryError::Query {
                name: name.to_string(),
                reason: unsupported_type(Dialect::Postgres, column.name(), column.type_().name()),
            })
        })
        .collect()
}

/// Keeps the highest value of the `incremental` column (at `index`, of `kind`) seen so far:
/// the watermark the next run starts from.
fn note_highest(
    row: &tokio_postgres::Row,
    index: usize,
    kind: Kind,
    highest: &mut Option<(Order, String)>,
) {
    if let Ok(Some(Raw(bytes))) = row.try_get::<_, Option<Raw<'_>>>(index)
        && let Some((order, text)) = kind.order(bytes)
        && highest.as_ref().is_none_or(|(top, _)| order.above(top))
    {
        *highest = Some((order, text));
    }
}

/// Writes one row's values as cells: each as its kind says, or refused when the database
/// measured it too long to send (`lengths`, from the [`guard`]).
fn write_row(
    row: &tokio_postgres::Row,
    kinds: &[Kind],
    lengths: &[Option<usize>],
    zone: chrono_tz::Tz,
    cells: &mut Cells<'_>,
) -> Result<(), tokio_postgres::Error> {
    for (index, kind) in kinds.iter().enumerate() {
        if let Some(length) = lengths[index]
            && let Ok(Some(length)) = row.try_get::<_, Option<i32>>(length)
        {
            let bytes = usize::try_from(length).unwrap_or(usize::MAX);
            cells.refused(&format!(
                "{} (measured as text by the database, which did not send it)",
                exact::too_long(bytes)
            ));
            continue;
        }
        match row.try_get::<_, Option<Raw<'_>>>(index)? {
            Some(Raw(bytes)) => kind.write(bytes, zone, cells),
            None => cells.null(),
        }
    }
    Ok(())
}

/// The statement that runs, and for each column where its too-long value's length is: the
/// query measured by the server ([`guard`]) when a column can hold long values, else as it
/// is. A query the guard cannot wrap (one that is not a `SELECT`, say) runs as it is: its
/// long values are then refused once read.
async fn guarded(
    client: &Client,
    query: &str,
    statement: Statement,
    kinds: &[Kind],
) -> (Statement, Vec<Option<usize>>) {
    let unguarded = vec![None; kinds.len()];
    let Some(guarded) = guard::guard(query, statement.columns(), kinds) else {
        return (statement, unguarded);
    };
    match client.prepare(&guarded.sql).await {
        Ok(measured) => (measured, guarded.lengths),
        Err(error) => {
            tracing::debug!(error = %explain(&error), "the query runs without its values measured by the server");
            (statement, unguarded)
        }
    }
}

async fn connect(database: &Database) -> Result<Client, QueryError> {
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
    let settings = pg::settings(database.url.expose()).map_err(refused)?;
    pg::connect(&settings, &database.name)
        .await
        .map_err(refused)
}

async fn prepare(client: &Client, source: &QuerySource) -> Result<Statement, QueryError> {
    let statement = client
        .prepare(&source.query)
        .await
        .map_err(|error| QueryError::Query {
            name: source.database.name.clone(),
            reason: format!("is not valid: {}", explain(&error)),
        })?;
    if statement.params().len() > 1 {
        return Err(QueryError::Query {
            name: source.database.name.clone(),
            reason: format!(
                "has {} parameters; it may have one, `$1`, with `incremental`",
                statement.params().len()
            ),
        });
    }
    if !statement.params().is_empty() && source.incremental.is_none() {
        return Err(QueryError::Query {
            name: source.database.name.clone(),
            reason: "uses `$1`, which only an `incremental` source binds".into(),
        });
    }
    let names: Vec<&str> = statement.columns().iter().map(|c| c.name()).collect();
    if let Some(twice) = super::named_twice(&names) {
        return Err(super::column_named_twice(&source.database.name, twice));
    }
    Ok(statement)
}

/// The index and kind of the incremental column in the result.
fn incremental_index(
    statement: &Statement,
    column: &str,
    name: &str,
) -> Result<(usize, Kind), QueryError> {
    let found = statement
        .columns()
        .iter()
        .enumerate()
        .find(|(_, c)| c.name() == column);
    let Some((index, found)) = found else {
        return Err(super::incremental_missing(name, column));
    };
    match Kind::of(found.type_()).filter(|kind| kind.orders()) {
        Some(kind) => Ok((index, kind)),
        None => Err(super::incremental_unordered(
            name,
            column,
            found.type_().name(),
            "a number, a date, a timestamp or text",
        )),
    }
}

/// A value in PostgreSQL's binary format, decoded by [`Kind`].
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// `$1`, sent as text so that the server reads it as whatever type the query gives it.
#[derive(Debug)]
struct TextParameter(Option<String>);

impl ToSql for TextParameter {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}
