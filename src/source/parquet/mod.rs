//! Parquet files: typed columns read one row group at a time (page by page within it),
//! only the columns the run needs, each value as the JSON CleverTap wants: numbers,
//! booleans, strings, `$D_<epoch>` dates and times, lists as arrays.
//!
//! Files whose columns are all flat (no lists or groups) are decoded column by column, a
//! batch of values at a time, straight into JSON values ([`FlatColumns`]); others go through
//! the parquet crate's row reader, which assembles nested values at a higher cost per row.
//! A row's "line" is its number in the file, counted from 1. A file in a bucket is read by
//! ranges where the reader asks ([`Input`]): the footer, then only the wanted columns.

mod input;
mod values;

use input::Input;

use values::{number, set_bytes, set_integer, value_of};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parquet::basic::{ConvertedType, LogicalType, TimeUnit, Type as PhysicalType};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, DoubleType, FixedLenByteArray, FixedLenByteArrayType,
    FloatType, Int32Type, Int64Type,
};
use parquet::file::reader::{FileReader, Length, SerializedFileReader};
use parquet::record::Field;
use parquet::record::reader::RowIter;
use parquet::schema::types::ColumnDescriptor;
use serde_json::Value;

use super::exact;
use super::{OpenError, ReadProgress, Row, RowError, RowStream};

/// Rows a column reader decodes at a time.
const BATCH_ROWS: usize = 1024;

pub(super) struct ParquetStream {
    values: Values,
    columns: Vec<Arc<str>>,
    row: u64,
    total_rows: u64,
    progress: ReadProgress,
}

/// Where a row's values come from.
enum Values {
    /// Flat columns, decoded a batch at a time.
    Flat(FlatColumns),
    /// The parquet crate's row reader, for nested columns and rare types.
    Rows {
        rows: RowIter<'static>,
        /// Per column: whether it holds nanosecond timestamps (which the row reader gives
        /// as plain integers).
        nanos: Vec<bool>,
        zone: chrono_tz::Tz,
    },
}

impl ParquetStream {
    /// Opens a file, reading only `projection`'s columns when given (those the file has).
    pub(super) fn open(
        path: &Path,
        projection: Option<&[String]>,
        zone: chrono_tz::Tz,
    ) -> Result<(Self, ReadProgress), OpenError> {
        let shown = path.display().to_string();
        let input = Input::open(path)?;
        let size = input.len();
        let reader = SerializedFileReader::new(input).map_err(|error| OpenError::BadHeader {
            path: shown.clone(),
            problem: format!("is not a Parquet file: {error}"),
        })?;
        let metadata = reader.metadata().file_metadata();
        let total_rows = u64::try_from(metadata.num_rows()).unwrap_or(0);
        let root = metadata.schema();
        let root_name = root.name().to_string();
        // A record has one value per name: a column given twice would collapse into one.
        let names: Vec<&str> = root.get_fields().iter().map(|field| field.name()).collect();
        if let Some(twice) = names
            .iter()
            .enumerate()
            .find(|(at, name)| names[..*at].contains(name))
            .map(|(_, name)| name)
        {
            return Err(OpenError::BadHeader {
                path: shown,
                problem: format!(
                    "has the column `{twice}` more than once; give each column a name of its own where the file is written"
                ),
            });
        }
        let fields: Vec<_> = root
            .get_fields()
            .iter()
            .filter(|field| {
                projection.is_none_or(|wanted| wanted.iter().any(|name| name == field.name()))
            })
            .cloned()
            .collect();
        if let Some(problem) = oversized_values(&reader, &fields) {
            return Err(OpenError::BadHeader {
                path: shown,
                problem,
            });
        }
        let columns = fields.iter().map(|field| Arc::from(field.name())).collect();
        let progress = ReadProgress {
            read: Arc::default(),
            total: size,
        };
        let values = match FlatColumns::plan(&reader, &fields) {
            Some(leaves) => Values::Flat(FlatColumns::new(reader, leaves, zone)),
            None => Values::rows(reader, &root_name, fields, zone, &shown)?,
        };
        let stream = ParquetStream {
            values,
            columns,
            row: 0,
            total_rows,
            progress: progress.clone(),
        };
        Ok((stream, progress))
    }
}

impl Values {
    /// Values read row by row, for a file with nested columns ([`FlatColumns`] reads the
    /// rest): the `fields` chosen, projected out of the file's schema.
    fn rows(
        reader: SerializedFileReader<Input>,
        root_name: &str,
        fields: Vec<parquet::schema::types::TypePtr>,
        zone: chrono_tz::Tz,
        shown: &str,
    ) -> Result<Values, OpenError> {
        let nanos = fields
            .iter()
            .map(|field| {
                matches!(
                    field.get_basic_info().logical_type_ref(),
                    Some(LogicalType::Timestamp(timestamp))
                        if timestamp.unit == TimeUnit::NANOS
                )
            })
            .collect();
        let projected = parquet::schema::types::Type::group_type_builder(root_name)
            .with_fields(fields)
            .build()
            .map_err(|error| OpenError::BadHeader {
                path: shown.to_string(),
                problem: format!("has a schema tapline cannot read: {error}"),
            })?;
        let rows = RowIter::from_file_into(Box::new(reader))
            .project(Some(projected))
            .map_err(|error| OpenError::BadHeader {
                path: shown.to_string(),
                problem: format!("has columns tapline cannot read: {error}"),
            })?
            .with_batch_size(BATCH_ROWS);
        Ok(Values::Rows { rows, nanos, zone })
    }
}

impl RowStream for ParquetStream {
    fn columns(&self) -> Option<&[Arc<str>]> {
        Some(&self.columns)
    }

    fn read_row(&mut self, row: &mut Row) -> Option<Result<(), RowError>> {
        let fatal = |row: u64, error: parquet::errors::ParquetError| {
            Some(Err(RowError::Fatal(format!("row {}: {error}", row + 1))))
        };
        let refused = match &mut self.values {
            Values::Flat(flat) => match flat.next_row(&self.columns, row) {
                Ok(Some(refused)) => refused,
                Ok(None) => return None,
                Err(error) => return fatal(self.row, error),
            },
            Values::Rows { rows, nanos, zone } => {
                let read = match rows.next()? {
                    Ok(read) => read,
                    Err(error) => return fatal(self.row, error),
                };
                row.fields.clear();
                let mut refused = None;
                let columns = self.columns.iter().zip(nanos.iter());
                for ((_, field), (name, &nanos)) in read.into_columns().into_iter().zip(columns) {
                    let value = match field {
                        Field::Long(nanoseconds) if nanos => Ok(Value::String(format!(
                            "$D_{}",
                            nanoseconds.div_euclid(1_000_000_000)
                        ))),
                        field => value_of(field, *zone),
                    };
                    let value = value.unwrap_or_else(|reason| {
                        refused.get_or_insert_with(|| format!("column `{name}`: {reason}"));
                        Value::Null
                    });
                    row.fields.push((Arc::clone(name), value));
                }
                refused
            }
        };
        self.row += 1;
        if self.row.is_multiple_of(BATCH_ROWS as u64) && self.total_rows > 0 {
            let share = self.progress.total as f64 * self.row as f64 / self.total_rows as f64;
            self.progress.read.store(share as u64, Ordering::Relaxed);
        }
        row.line = self.row;
        row.record = None;
        match refused {
            None => Some(Ok(())),
            Some(reason) => Some(Err(RowError::Invalid {
                line: self.row,
                reason,
                raw: row.to_json().to_string(),
            })),
        }
    }
}

/// A row group whose values of a read column are, on average, longer than a value may be
/// ([`exact::MAX_VALUE_BYTES`]): reading it would decompress pages far larger than any row
/// tapline sends (a few KiB of file can hold a value of hundreds of MiB). Such a file is
/// refused before any page is read, naming the row group, the column and the limit, as a CSV
/// row over the limit is.
fn oversized_values(
    file: &SerializedFileReader<Input>,
    fields: &[parquet::schema::types::TypePtr],
) -> Option<String> {
    let metadata = file.metadata();
    for (number, group) in metadata.row_groups().iter().enumerate() {
        let rows = u64::try_from(group.num_rows()).unwrap_or(0).max(1);
        for column in group.columns() {
            let top = column
                .column_path()
                .parts()
                .first()
                .cloned()
                .unwrap_or_default();
            if !fields.iter().any(|field| field.name() == top) {
                continue;
            }
            let bytes = u64::try_from(column.uncompressed_size()).unwrap_or(0);
            if bytes / rows > exact::MAX_VALUE_BYTES as u64 {
                return Some(format!(
                    "says that row group {} (rows {} to {}) holds values of column `{top}` of {} MiB on average, over the {} MiB a value may be: no row of it is read (tapline would have to decompress them whole)",
                    number + 1,
                    metadata.row_groups()[..number]
                        .iter()
                        .map(|g| g.num_rows())
                        .sum::<i64>()
                        + 1,
                    metadata.row_groups()[..=number]
                        .iter()
                        .map(|g| g.num_rows())
                        .sum::<i64>(),
                    bytes / rows / (1024 * 1024),
                    exact::MAX_VALUE_BYTES / (1024 * 1024)
                ));
            }
        }
    }
    None
}

/// How a flat column's values become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Bool,
    Integer,
    Unsigned,
    Float,
    Date,
    Millis,
    Micros,
    Nanos,
    Decimal { scale: i32 },
    Text,
    Uuid,
}

impl Plan {
    /// The plan for a leaf column; `None` for what only the row reader reads (times of
    /// day, INT96, half floats, intervals).
    fn of(column: &ColumnDescriptor) -> Option<Plan> {
        let logical = column.logical_type_ref();
        let converted = column.converted_type();
        let decimal = match logical {
            Some(LogicalType::Decimal(decimal)) => Some(Plan::Decimal {
                scale: decimal.scale,
            }),
            _ if converted == ConvertedType::DECIMAL => Some(Plan::Decimal {
                scale: column.type_scale(),
            }),
            _ => None,
        };
        let unsigned = matches!(logical, Some(LogicalType::Integer(integer)) if !integer.is_signed)
            || matches!(converted, ConvertedType::UINT_32 | ConvertedType::UINT_64);
        let timeless = matches!(
            logical,
            Some(LogicalType::Time(_)) | Some(LogicalType::Float16)
        ) || matches!(
            converted,
            ConvertedType::TIME_MILLIS | ConvertedType::TIME_MICROS | ConvertedType::INTERVAL
        );
        if timeless {
            return None;
        }
        Some(match column.physical_type() {
            PhysicalType::BOOLEAN => Plan::Bool,
            PhysicalType::FLOAT | PhysicalType::DOUBLE => Plan::Float,
            PhysicalType::INT32 => match logical {
                _ if decimal.is_some() => decimal?,
                Some(LogicalType::Date) => Plan::Date,
                _ if converted == ConvertedType::DATE => Plan::Date,
                _ if unsigned => Plan::Unsigned,
                _ => Plan::Integer,
            },
            PhysicalType::INT64 => match logical {
                _ if decimal.is_some() => decimal?,
                Some(LogicalType::Timestamp(timestamp)) => match timestamp.unit {
                    TimeUnit::MILLIS => Plan::Millis,
                    TimeUnit::MICROS => Plan::Micros,
                    TimeUnit::NANOS => Plan::Nanos,
                },
                _ if converted == ConvertedType::TIMESTAMP_MILLIS => Plan::Millis,
                _ if converted == ConvertedType::TIMESTAMP_MICROS => Plan::Micros,
                _ if unsigned => Plan::Unsigned,
                _ => Plan::Integer,
            },
            PhysicalType::BYTE_ARRAY => decimal.unwrap_or(Plan::Text),
            PhysicalType::FIXED_LEN_BYTE_ARRAY => match logical {
                _ if decimal.is_some() => decimal?,
                Some(LogicalType::Uuid) => Plan::Uuid,
                _ => Plan::Text,
            },
            PhysicalType::INT96 => return None,
        })
    }
}

/// One output column of a flat file: its leaf in the file and how it is read.
struct Leaf {
    index: usize,
    plan: Plan,
    max_definition: i16,
}

/// A row group's reader of one column, typed, with the batch of values it decoded last.
enum Column {
    Bool(ColumnReaderImpl<BoolType>, Vec<bool>),
    Int32(ColumnReaderImpl<Int32Type>, Vec<i32>),
    Int64(ColumnReaderImpl<Int64Type>, Vec<i64>),
    Float(ColumnReaderImpl<FloatType>, Vec<f32>),
    Double(ColumnReaderImpl<DoubleType>, Vec<f64>),
    Bytes(ColumnReaderImpl<ByteArrayType>, Vec<ByteArray>),
    Fixed(
        ColumnReaderImpl<FixedLenByteArrayType>,
        Vec<FixedLenByteArray>,
    ),
}

/// A column being read: its leaf, reader and batch, the batch's definition levels, and the
/// next value of the batch (values hold only the rows that are not NULL).
struct FlatColumn {
    leaf: Leaf,
    column: Option<Column>,
    levels: Vec<i16>,
    next_value: usize,
}

/// A file of flat columns, decoded a batch of rows at a time per column (one row group's
/// readers at a time), each value written into the row's own value (its string reused).
struct FlatColumns {
    file: SerializedFileReader<Input>,
    columns: Vec<FlatColumn>,
    zone: chrono_tz::Tz,
    next_group: usize,
    /// Rows of the current row group not yet decoded.
    group_rows_left: usize,
    /// The next row's place in the batch, and the batch's rows.
    at: usize,
    batch_rows: usize,
}

impl FlatColumns {
    /// The leaves of `fields` when every one is a flat column the batch decoder reads.
    fn plan(
        file: &SerializedFileReader<Input>,
        fields: &[parquet::schema::types::TypePtr],
    ) -> Option<Vec<Leaf>> {
        let schema = file.metadata().file_metadata().schema_descr();
        fields
            .iter()
            .map(|field| {
                if !field.is_primitive() {
                    return None;
                }
                let index = (0..schema.num_columns()).find(|&index| {
                    let path = schema.column(index).path().parts().to_vec();
                    path.len() == 1 && path[0] == field.name()
                })?;
                let column = schema.column(index);
                if column.max_rep_level() > 0 {
                    return None;
                }
                Some(Leaf {
                    index,
                    plan: Plan::of(&column)?,
                    max_definition: column.max_def_level(),
                })
            })
            .collect()
    }

    fn new(file: SerializedFileReader<Input>, leaves: Vec<Leaf>, zone: chrono_tz::Tz) -> Self {
        FlatColumns {
            file,
            columns: leaves
                .into_iter()
                .map(|leaf| FlatColumn {
                    leaf,
                    column: None,
                    levels: Vec::new(),
                    next_value: 0,
                })
                .collect(),
            zone,
            next_group: 0,
            group_rows_left: 0,
            at: 0,
            batch_rows: 0,
        }
    }

    /// Reads the next row into `row`: `Ok(None)` at the end of the file, else why the row is
    /// refused (a value tapline cannot send as it is, naming its column), if it is.
    fn next_row(
        &mut self,
        names: &[Arc<str>],
        row: &mut Row,
    ) -> parquet::errors::Result<Option<Option<String>>> {
        if self.at == self.batch_rows && !self.decode_batch()? {
            return Ok(None);
        }
        let at = self.at;
        self.at += 1;
        row.fields
            .resize_with(names.len(), || (Arc::from(""), Value::Null));
        let zone = self.zone;
        let mut refused = None;
        for ((name, slot), (column, want)) in row
            .fields
            .iter_mut()
            .zip(self.columns.iter_mut().zip(names))
        {
            if !Arc::ptr_eq(name, want) {
                *name = Arc::clone(want);
            }
            if let Err(reason) = column.value_into(at, slot, zone) {
                *slot = Value::Null;
                refused.get_or_insert_with(|| format!("column `{want}`: {reason}"));
            }
        }
        Ok(Some(refused))
    }

    /// Decodes the next batch of rows of every column; `false` when no rows are left.
    fn decode_batch(&mut self) -> parquet::errors::Result<bool> {
        while self.group_rows_left == 0 {
            if self.next_group >= self.file.num_row_groups() {
                return Ok(false);
            }
            let group = self.file.get_row_group(self.next_group)?;
            self.next_group += 1;
            self.group_rows_left = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
            for column in &mut self.columns {
                column.column = Some(match group.get_column_reader(column.leaf.index)? {
                    ColumnReader::BoolColumnReader(reader) => Column::Bool(reader, Vec::new()),
                    ColumnReader::Int32ColumnReader(reader) => Column::Int32(reader, Vec::new()),
                    ColumnReader::Int64ColumnReader(reader) => Column::Int64(reader, Vec::new()),
                    ColumnReader::FloatColumnReader(reader) => Column::Float(reader, Vec::new()),
                    ColumnReader::DoubleColumnReader(reader) => Column::Double(reader, Vec::new()),
                    ColumnReader::ByteArrayColumnReader(reader) => {
                        Column::Bytes(reader, Vec::new())
                    }
                    ColumnReader::FixedLenByteArrayColumnReader(reader) => {
                        Column::Fixed(reader, Vec::new())
                    }
                    ColumnReader::Int96ColumnReader(_) => {
                        return Err(parquet::errors::ParquetError::General(
                            "an INT96 column in a flat read".into(),
                        ));
                    }
                });
            }
        }
        let rows = self.group_rows_left.min(BATCH_ROWS);
        for column in &mut self.columns {
            column.decode(rows)?;
        }
        self.group_rows_left -= rows;
        self.at = 0;
        self.batch_rows = rows;
        Ok(true)
    }
}

impl FlatColumn {
    /// Decodes the next `rows` rows of the column.
    fn decode(&mut self, rows: usize) -> parquet::errors::Result<()> {
        let max = self.leaf.max_definition;
        let levels = &mut self.levels;
        self.next_value = 0;
        match &mut self.column {
            Some(Column::Bool(reader, values)) => fill(reader, (rows, max), levels, values),
            Some(Column::Int32(reader, values)) => fill(reader, (rows, max), levels, values),
            Some(Column::Int64(reader, values)) => fill(reader, (rows, max), levels, values),
            Some(Column::Float(reader, values)) => fill(reader, (rows, max), levels, values),
            Some(Column::Double(reader, values)) => fill(reader, (rows, max), levels, values),
            Some(Column::Bytes(reader, values)) => fill(reader, (rows, max), levels, values),
            Some(Column::Fixed(reader, values)) => fill(reader, (rows, max), levels, values),
            None => Ok(()),
        }
    }

    /// Writes the value of the batch's row `at` into `slot`, reusing its string; why a value
    /// cannot be sent as it is.
    fn value_into(
        &mut self,
        at: usize,
        slot: &mut Value,
        zone: chrono_tz::Tz,
    ) -> Result<(), String> {
        let max = self.leaf.max_definition;
        if max > 0 && self.levels.get(at) != Some(&max) {
            *slot = Value::Null;
            return Ok(());
        }
        let index = self.next_value;
        self.next_value += 1;
        let plan = self.leaf.plan;
        match &self.column {
            Some(Column::Bool(_, values)) => *slot = values.get(index).copied().into(),
            Some(Column::Int32(_, values)) => match values.get(index) {
                Some(&value) => {
                    set_integer(slot, i64::from(value), plan, zone, u64::from(value as u32))?
                }
                None => *slot = Value::Null,
            },
            Some(Column::Int64(_, values)) => match values.get(index) {
                Some(&value) => set_integer(slot, value, plan, zone, value as u64)?,
                None => *slot = Value::Null,
            },
            Some(Column::Float(_, values)) => {
                *slot = match values.get(index) {
                    Some(&value) => number(f64::from(value))?,
                    None => Value::Null,
                }
            }
            Some(Column::Double(_, values)) => {
                *slot = match values.get(index) {
                    Some(&value) => number(value)?,
                    None => Value::Null,
                }
            }
            Some(Column::Bytes(_, values)) => match values.get(index) {
                Some(value) => set_bytes(slot, value.data(), plan)?,
                None => *slot = Value::Null,
            },
            Some(Column::Fixed(_, values)) => match values.get(index) {
                Some(value) => set_bytes(slot, value.data(), plan)?,
                None => *slot = Value::Null,
            },
            None => *slot = Value::Null,
        }
        Ok(())
    }
}

/// Decodes `rows` rows of one column: their definition levels (when it can hold NULLs) and
/// the values of those that are not NULL.
fn fill<T: parquet::data_type::DataType>(
    reader: &mut ColumnReaderImpl<T>,
    (rows, max_definition): (usize, i16),
    levels: &mut Vec<i16>,
    values: &mut Vec<T::T>,
) -> parquet::errors::Result<()> {
    levels.clear();
    values.clear();
    let mut records = 0;
    while records < rows {
        let definitions = (max_definition > 0).then_some(&mut *levels);
        let (read, _, _) = reader.read_records(rows - records, definitions, None, values)?;
        if read == 0 {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "a column ends after {records} of its {rows} rows"
            )));
        }
        records += read;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test file has a list column: read whole, it goes through the row reader; without
    /// the list, through the batch decoder. Both give the same values.
    #[test]
    fn the_batch_decoder_reads_what_the_row_reader_reads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/types.parquet"
        ));
        let kolkata: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
        let read_all = |projection: Option<&[String]>| {
            let (mut stream, _) = ParquetStream::open(path, projection, kolkata).ok().unwrap();
            let flat = matches!(stream.values, Values::Flat(_));
            let mut rows = Vec::new();
            while let Some(row) = stream.next_row() {
                rows.push(row.ok().unwrap());
            }
            (flat, rows)
        };
        let (flat, whole) = read_all(None);
        assert!(!flat);
        let flat_columns: Vec<String> = whole[0]
            .fields
            .iter()
            .map(|(name, _)| name.to_string())
            .filter(|name| name != "Interests")
            .collect();
        let (flat, projected) = read_all(Some(&flat_columns));
        assert!(flat);
        assert_eq!(projected.len(), 4);
        for (full, flat) in whole.iter().zip(&projected) {
            assert_eq!(full.line, flat.line);
            let mut expected = full.to_json();
            expected.as_object_mut().unwrap().remove("Interests");
            assert_eq!(flat.to_json(), expected, "row {}", full.line);
        }
        assert_eq!(projected[1].fields[0].1, "p2");
        assert_eq!(projected[2].to_json()["Age"], 45);
        assert_eq!(projected[1].to_json()["Age"], Value::Null);
    }
}
