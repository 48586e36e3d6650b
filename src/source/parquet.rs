//! Parquet files: typed columns read one row group at a time (page by page within it),
//! only the columns the run needs, each value as the JSON CleverTap wants: numbers,
//! booleans, strings, `$D_<epoch>` dates and times, lists as arrays.
//!
//! A row's "line" is its number in the file, counted from 1.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::TimeZone;
use parquet::data_type::Decimal;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::{Field, List};
use serde_json::Value;

use super::{OpenError, ReadProgress, Row, RowError, RowStream};

/// Rows a column reader decodes at a time.
const BATCH_ROWS: usize = 1024;

pub(super) struct ParquetStream {
    rows: RowIter<'static>,
    columns: Vec<Arc<str>>,
    /// Per column: whether it holds nanosecond timestamps (which the row reader gives as
    /// plain integers).
    nanos: Vec<bool>,
    row: u64,
    total_rows: u64,
    zone: chrono_tz::Tz,
    progress: ReadProgress,
}

impl ParquetStream {
    /// Opens a file, reading only `projection`'s columns when given (those the file has).
    pub(super) fn open(
        path: &Path,
        projection: Option<&[String]>,
        zone: chrono_tz::Tz,
    ) -> Result<(Self, ReadProgress), OpenError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|error| OpenError::Io {
            path: shown.clone(),
            error,
        })?;
        let size = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
        let reader = SerializedFileReader::new(file).map_err(|error| OpenError::BadHeader {
            path: shown.clone(),
            problem: format!("is not a Parquet file: {error}"),
        })?;
        let metadata = reader.metadata().file_metadata();
        let total_rows = u64::try_from(metadata.num_rows()).unwrap_or(0);
        let root = metadata.schema();
        let fields: Vec<_> = root
            .get_fields()
            .iter()
            .filter(|field| {
                projection.is_none_or(|wanted| wanted.iter().any(|name| name == field.name()))
            })
            .cloned()
            .collect();
        let columns = fields.iter().map(|field| Arc::from(field.name())).collect();
        let nanos = fields
            .iter()
            .map(|field| {
                matches!(
                    field.get_basic_info().logical_type_ref(),
                    Some(parquet::basic::LogicalType::Timestamp(timestamp))
                        if timestamp.unit == parquet::basic::TimeUnit::NANOS
                )
            })
            .collect();
        let projected = parquet::schema::types::Type::group_type_builder(root.name())
            .with_fields(fields)
            .build()
            .map_err(|error| OpenError::BadHeader {
                path: shown.clone(),
                problem: format!("has a schema tapline cannot read: {error}"),
            })?;
        let rows = RowIter::from_file_into(Box::new(reader))
            .project(Some(projected))
            .map_err(|error| OpenError::BadHeader {
                path: shown,
                problem: format!("has columns tapline cannot read: {error}"),
            })?
            .with_batch_size(BATCH_ROWS);
        let progress = ReadProgress {
            read: Arc::default(),
            total: size,
        };
        let stream = ParquetStream {
            rows,
            columns,
            nanos,
            row: 0,
            total_rows,
            zone,
            progress: progress.clone(),
        };
        Ok((stream, progress))
    }
}

impl RowStream for ParquetStream {
    fn columns(&self) -> Option<&[Arc<str>]> {
        Some(&self.columns)
    }

    fn read_row(&mut self, row: &mut Row) -> Option<Result<(), RowError>> {
        let read = match self.rows.next()? {
            Ok(read) => read,
            Err(error) => {
                return Some(Err(RowError::Fatal(format!(
                    "row {}: {error}",
                    self.row + 1
                ))));
            }
        };
        self.row += 1;
        if self.row.is_multiple_of(BATCH_ROWS as u64) && self.total_rows > 0 {
            let share = self.progress.total as f64 * self.row as f64 / self.total_rows as f64;
            self.progress.read.store(share as u64, Ordering::Relaxed);
        }
        row.line = self.row;
        row.record = None;
        row.fields.clear();
        let columns = self.columns.iter().zip(&self.nanos);
        for ((_, field), (name, &nanos)) in read.into_columns().into_iter().zip(columns) {
            let value = match field {
                Field::Long(nanoseconds) if nanos => {
                    Value::String(format!("$D_{}", nanoseconds.div_euclid(1_000_000_000)))
                }
                field => value_of(field, self.zone),
            };
            row.fields.push((Arc::clone(name), value));
        }
        Some(Ok(()))
    }
}

/// A Parquet value as CleverTap wants it.
fn value_of(field: Field, zone: chrono_tz::Tz) -> Value {
    match field {
        Field::Null => Value::Null,
        Field::Bool(value) => Value::Bool(value),
        Field::Byte(value) => Value::from(value),
        Field::Short(value) => Value::from(value),
        Field::Int(value) => Value::from(value),
        Field::Long(value) => Value::from(value),
        Field::UByte(value) => Value::from(value),
        Field::UShort(value) => Value::from(value),
        Field::UInt(value) => Value::from(value),
        Field::ULong(value) => Value::from(value),
        Field::Float16(value) => number(f64::from(value)),
        Field::Float(value) => number(f64::from(value)),
        Field::Double(value) => number(value),
        Field::Decimal(decimal) => decimal_value(&decimal),
        Field::Str(text) => Value::String(text),
        Field::Bytes(bytes) => match std::str::from_utf8(bytes.data()) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => Value::Null,
        },
        Field::Date(days) => {
            let midnight = chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
                .map(|time| time.naive_utc());
            match midnight.and_then(|time| zone.from_local_datetime(&time).earliest()) {
                Some(local) => Value::String(format!("$D_{}", local.timestamp())),
                None => Value::Null,
            }
        }
        Field::TimestampMillis(millis) => Value::String(format!("$D_{}", millis.div_euclid(1000))),
        Field::TimestampMicros(micros) => {
            Value::String(format!("$D_{}", micros.div_euclid(1_000_000)))
        }
        Field::ListInternal(list) => list_value(list, zone),
        other => Value::String(other.to_string()),
    }
}

fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// A list: its elements as values, NULLs left out (a multi-value property of strings).
fn list_value(list: List, zone: chrono_tz::Tz) -> Value {
    Value::Array(
        list.elements()
            .iter()
            .cloned()
            .map(|element| value_of(element, zone))
            .filter(|value| !value.is_null())
            .collect(),
    )
}

/// A decimal as a JSON number (`12.50` → 12.5); one past what JSON numbers hold, as text.
fn decimal_value(decimal: &Decimal) -> Value {
    let bytes = decimal.data();
    if bytes.is_empty() || bytes.len() > 16 {
        return Value::Null;
    }
    // Big-endian two's complement, sign-extended to 128 bits.
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut wide = [fill; 16];
    wide[16 - bytes.len()..].copy_from_slice(bytes);
    let unscaled = i128::from_be_bytes(wide);
    let scale = decimal.scale().max(0) as usize;
    let digits = unscaled.unsigned_abs().to_string();
    let text = if scale == 0 {
        digits
    } else {
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        format!("{whole}.{fraction}")
    };
    let text = if unscaled < 0 {
        format!("-{text}")
    } else {
        text
    };
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() => {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
        _ => Value::String(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_their_scale_and_sign() {
        let decimal = |value: i64, scale: i32| Decimal::Int64 {
            value: value.to_be_bytes(),
            precision: 18,
            scale,
        };
        assert_eq!(decimal_value(&decimal(1250, 2)), serde_json::json!(12.5));
        assert_eq!(decimal_value(&decimal(-5, 3)), serde_json::json!(-0.005));
        assert_eq!(decimal_value(&decimal(42, 0)), serde_json::json!(42));
    }

    #[test]
    fn dates_are_midnight_in_the_source_zone() {
        let kolkata: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
        // 2024-05-01 is day 19844 after 1970-01-01.
        assert_eq!(
            value_of(Field::Date(19844), chrono_tz::Tz::UTC),
            "$D_1714521600"
        );
        assert_eq!(value_of(Field::Date(19844), kolkata), "$D_1714501800");
        assert_eq!(
            value_of(Field::TimestampMillis(1_714_557_600_250), kolkata),
            "$D_1714557600"
        );
    }
}
