//! MySQL's and MariaDB's result types as CleverTap wants them: integers and decimals as
//! numbers (a decimal JSON would change as its exact text), `TINYINT(1)`/`BOOL` as booleans,
//! `DATE`/`DATETIME` read in the source's time zone and `TIMESTAMP` in UTC (the session's zone)
//! as `$D_` dates, `JSON` as the value it holds (an array a multi-value property), text as
//! text. Binary strings, `TIME`, `BIT` and spatial types are refused by name.

use chrono::NaiveDate;
use mysql_async::Value;
use mysql_async::consts::{ColumnFlags, ColumnType};

use crate::source::exact;
use crate::source::snapshot::Cells;

/// The binary collation's number: a column in it holds bytes, not text.
const BINARY_CHARSET: u16 = 63;

/// What a result column holds, as tapline sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Integer,
    Float,
    Decimal,
    Text,
    Date,
    /// `DATETIME`: a wall-clock time, read in the source's zone.
    DateTime,
    /// `TIMESTAMP`: a point in time, sent in UTC (the session's zone).
    Timestamp,
    Json,
    /// `NULL` as a column (`SELECT NULL AS x`).
    Null,
}

impl Kind {
    pub(super) fn of(column: &mysql_async::Column) -> Option<Kind> {
        let binary = column.character_set() == BINARY_CHARSET;
        Some(match column.column_type() {
            ColumnType::MYSQL_TYPE_TINY if column.column_length() == 1 => Kind::Bool,
            ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_LONGLONG
            | ColumnType::MYSQL_TYPE_YEAR => Kind::Integer,
            ColumnType::MYSQL_TYPE_FLOAT | ColumnType::MYSQL_TYPE_DOUBLE => Kind::Float,
            ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => Kind::Decimal,
            ColumnType::MYSQL_TYPE_VARCHAR
            | ColumnType::MYSQL_TYPE_VAR_STRING
            | ColumnType::MYSQL_TYPE_STRING
            | ColumnType::MYSQL_TYPE_ENUM
            | ColumnType::MYSQL_TYPE_SET
            | ColumnType::MYSQL_TYPE_TINY_BLOB
            | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
            | ColumnType::MYSQL_TYPE_LONG_BLOB
            | ColumnType::MYSQL_TYPE_BLOB
                if !binary =>
            {
                Kind::Text
            }
            ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => Kind::Date,
            ColumnType::MYSQL_TYPE_DATETIME | ColumnType::MYSQL_TYPE_DATETIME2 => Kind::DateTime,
            ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp,
            ColumnType::MYSQL_TYPE_JSON => Kind::Json,
            ColumnType::MYSQL_TYPE_NULL => Kind::Null,
            _ => return None,
        })
    }

    /// The column's type as MySQL names it, for messages and `validate`.
    pub(super) fn type_name(column: &mysql_async::Column) -> String {
        let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
        let binary = column.character_set() == BINARY_CHARSET;
        let name = match column.column_type() {
            ColumnType::MYSQL_TYPE_TINY if column.column_length() == 1 => "tinyint(1)",
            ColumnType::MYSQL_TYPE_TINY => "tinyint",
            ColumnType::MYSQL_TYPE_SHORT => "smallint",
            ColumnType::MYSQL_TYPE_INT24 => "mediumint",
            ColumnType::MYSQL_TYPE_LONG => "int",
            ColumnType::MYSQL_TYPE_LONGLONG => "bigint",
            ColumnType::MYSQL_TYPE_YEAR => "year",
            ColumnType::MYSQL_TYPE_FLOAT => "float",
            ColumnType::MYSQL_TYPE_DOUBLE => "double",
            ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => "decimal",
            ColumnType::MYSQL_TYPE_VARCHAR | ColumnType::MYSQL_TYPE_VAR_STRING if binary => {
                "varbinary"
            }
            ColumnType::MYSQL_TYPE_VARCHAR | ColumnType::MYSQL_TYPE_VAR_STRING => "varchar",
            ColumnType::MYSQL_TYPE_STRING if binary => "binary",
            ColumnType::MYSQL_TYPE_STRING => "char",
            ColumnType::MYSQL_TYPE_ENUM => "enum",
            ColumnType::MYSQL_TYPE_SET => "set",
            ColumnType::MYSQL_TYPE_TINY_BLOB
            | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
            | ColumnType::MYSQL_TYPE_LONG_BLOB
            | ColumnType::MYSQL_TYPE_BLOB
                if binary =>
            {
                "blob"
            }
            ColumnType::MYSQL_TYPE_TINY_BLOB
            | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
            | ColumnType::MYSQL_TYPE_LONG_BLOB
            | ColumnType::MYSQL_TYPE_BLOB => "text",
            ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => "date",
            ColumnType::MYSQL_TYPE_DATETIME | ColumnType::MYSQL_TYPE_DATETIME2 => "datetime",
            ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2 => "timestamp",
            ColumnType::MYSQL_TYPE_TIME | ColumnType::MYSQL_TYPE_TIME2 => "time",
            ColumnType::MYSQL_TYPE_JSON => "json",
            ColumnType::MYSQL_TYPE_BIT => "bit",
            ColumnType::MYSQL_TYPE_GEOMETRY => "geometry",
            ColumnType::MYSQL_TYPE_NULL => "null",
            _ => "unknown",
        };
        if unsigned {
            format!("{name} unsigned")
        } else {
            name.to_string()
        }
    }

    /// Whether its values have an order, so it can be an incremental column.
    pub(super) fn orders(self) -> bool {
        !matches!(self, Kind::Bool | Kind::Json | Kind::Null)
    }

    /// Writes a value as the cell CleverTap wants, exactly; a value tapline cannot send as
    /// it is (a zero date, a number JSON would change) is refused, naming its type.
    pub(super) fn write(self, value: &Value, zone: chrono_tz::Tz, cells: &mut Cells<'_>) {
        match (self, value) {
            (_, Value::NULL) | (Kind::Null, _) => cells.null(),
            (Kind::Bool, Value::Int(number)) => cells.bool(*number != 0),
            (Kind::Bool, Value::UInt(number)) => cells.bool(*number != 0),
            (Kind::Integer, Value::Int(number)) => cells.integer(*number),
            (Kind::Integer, Value::UInt(number)) => match i64::try_from(*number) {
                Ok(number) => cells.integer(number),
                Err(_) => decimal(&number.to_string(), cells),
            },
            (Kind::Float, Value::Float(number)) => cells.float(f64::from(*number)),
            (Kind::Float, Value::Double(number)) => cells.float(*number),
            (Kind::Decimal, Value::Bytes(bytes)) => match std::str::from_utf8(bytes) {
                Ok(text) => decimal(text, cells),
                Err(_) => unreadable(cells, "decimal"),
            },
            (Kind::Text, Value::Bytes(bytes)) if bytes.len() > exact::MAX_VALUE_BYTES => {
                cells.refused(&exact::too_long(bytes.len()));
            }
            (Kind::Text, Value::Bytes(bytes)) => match std::str::from_utf8(bytes) {
                Ok(text) => cells.text(text),
                Err(_) => unreadable(cells, "text"),
            },
            (Kind::Json, Value::Bytes(bytes)) => match std::str::from_utf8(bytes) {
                Ok(text) => super::super::json_cell(text, "json", cells),
                Err(_) => unreadable(cells, "json"),
            },
            (Kind::Date, Value::Date(year, month, day, ..)) => {
                match local(*year, *month, *day, (0, 0, 0))
                    .and_then(|midnight| super::super::zone_epoch(midnight, zone))
                {
                    Some(epoch) => cells.text(&format!("$D_{epoch}")),
                    None => cells.refused(ZERO_DATE),
                }
            }
            (Kind::DateTime, Value::Date(year, month, day, hour, minute, second, _)) => {
                match local(*year, *month, *day, (*hour, *minute, *second))
                    .and_then(|time| super::super::zone_epoch(time, zone))
                {
                    Some(epoch) => cells.text(&format!("$D_{epoch}")),
                    None => cells.refused(ZERO_DATE),
                }
            }
            (Kind::Timestamp, Value::Date(year, month, day, hour, minute, second, _)) => {
                match local(*year, *month, *day, (*hour, *minute, *second)) {
                    Some(time) => cells.text(&format!("$D_{}", time.and_utc().timestamp())),
                    None => cells.refused(ZERO_DATE),
                }
            }
            (kind, other) => cells.refused(&format!(
                "a {kind:?} column gave a value tapline cannot read ({})",
                value_shape(other)
            )),
        }
    }

    /// A value's place in its column's order, and its text as the next run binds it.
    pub(super) fn order(self, value: &Value) -> Option<(Order, String)> {
        Some(match value {
            Value::Int(number) => (Order::Integer(i128::from(*number)), number.to_string()),
            Value::UInt(number) => (Order::Integer(i128::from(*number)), number.to_string()),
            Value::Double(number) => (Order::Float(*number), number.to_string()),
            Value::Float(number) => (Order::Float(f64::from(*number)), number.to_string()),
            Value::Bytes(bytes) if self == Kind::Decimal => {
                let text = std::str::from_utf8(bytes).ok()?;
                (Order::Float(text.parse().ok()?), text.to_string())
            }
            Value::Bytes(bytes) => {
                let text = std::str::from_utf8(bytes).ok()?.to_string();
                (Order::Text(text.clone()), text)
            }
            Value::Date(year, month, day, hour, minute, second, micros) => {
                let time = local(*year, *month, *day, (*hour, *minute, *second))?
                    .checked_add_signed(chrono::Duration::microseconds(i64::from(*micros)))?;
                let micros_since = time.and_utc().timestamp_micros();
                let text = if self == Kind::Date {
                    time.format("%Y-%m-%d").to_string()
                } else {
                    time.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
                };
                (Order::Integer(i128::from(micros_since)), text)
            }
            _ => return None,
        })
    }
}

/// A value's place in its column's order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Order {
    Integer(i128),
    Float(f64),
    Text(String),
}

impl Order {
    pub(super) fn above(&self, other: &Order) -> bool {
        match (self, other) {
            (Order::Integer(a), Order::Integer(b)) => a > b,
            (Order::Float(a), Order::Float(b)) => a > b,
            (Order::Text(a), Order::Text(b)) => a > b,
            _ => false,
        }
    }
}

const ZERO_DATE: &str = "the date is MySQL's zero date (`0000-00-00`) or not a day of the calendar, which CleverTap cannot hold (filter it out, or map it to NULL in the query)";

/// A decimal as a number when JSON carries it exactly, else as its exact text.
fn decimal(text: &str, cells: &mut Cells<'_>) {
    match exact::decimal(text) {
        serde_json::Value::String(text) => cells.text(&text),
        _ => cells.json(text),
    }
}

fn unreadable(cells: &mut Cells<'_>, type_name: &str) {
    cells.refused(&format!("a `{type_name}` value tapline cannot read"));
}

/// A date and time of the calendar; `None` for MySQL's zero date and other impossible days.
fn local(
    year: u16,
    month: u8,
    day: u8,
    (hour, minute, second): (u8, u8, u8),
) -> Option<chrono::NaiveDateTime> {
    NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day))?.and_hms_opt(
        u32::from(hour),
        u32::from(minute),
        u32::from(second),
    )
}

/// What kind of value the driver gave, for a message.
fn value_shape(value: &Value) -> &'static str {
    match value {
        Value::NULL => "NULL",
        Value::Bytes(_) => "bytes",
        Value::Int(_) | Value::UInt(_) => "an integer",
        Value::Float(_) | Value::Double(_) => "a float",
        Value::Date(..) => "a date",
        Value::Time(..) => "a time",
    }
}
