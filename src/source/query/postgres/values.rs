//! PostgreSQL's binary values as CleverTap wants them: which column types tapline sends,
//! and each one's decoding (integers, floats and exact numerics, dates and times in the
//! source's zone, JSON, text arrays), or its refusal by name.

use std::fmt::Write as _;

use chrono::NaiveDate;
use serde_json::Value;
use tokio_postgres::types::Type;

use crate::source::exact;
use crate::source::snapshot::Cells;

use super::POSTGRES_EPOCH_SECONDS;

/// The column types tapline sends, by how their binary form is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Date,
    Timestamp,
    Timestamptz,
    Json,
    Jsonb,
    Uuid,
    TextArray,
}

impl Kind {
    pub(super) fn of(ty: &Type) -> Option<Kind> {
        Some(match *ty {
            Type::BOOL => Kind::Bool,
            Type::INT2 => Kind::Int2,
            Type::INT4 => Kind::Int4,
            Type::INT8 => Kind::Int8,
            Type::FLOAT4 => Kind::Float4,
            Type::FLOAT8 => Kind::Float8,
            Type::NUMERIC => Kind::Numeric,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => Kind::Text,
            Type::DATE => Kind::Date,
            Type::TIMESTAMP => Kind::Timestamp,
            Type::TIMESTAMPTZ => Kind::Timestamptz,
            Type::JSON => Kind::Json,
            Type::JSONB => Kind::Jsonb,
            Type::UUID => Kind::Uuid,
            Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => Kind::TextArray,
            // citext and other text-like extension types have no fixed OID.
            _ if ty.name() == "citext" => Kind::Text,
            _ => return None,
        })
    }

    /// Whether its values have an order, so it can be an incremental column.
    pub(super) fn orders(self) -> bool {
        !matches!(
            self,
            Kind::Bool | Kind::Json | Kind::Jsonb | Kind::TextArray
        )
    }

    /// Whether its values can be of any length (a numeric's are at most 131,072 digits).
    pub(super) fn unbounded(self) -> bool {
        matches!(
            self,
            Kind::Text | Kind::Json | Kind::Jsonb | Kind::TextArray
        )
    }

    /// Writes a value as the cell CleverTap wants, exactly; a value tapline cannot send as
    /// it is (an infinite date, a two-dimensional array, a number JSON would change) is
    /// refused, naming its type, and the row becomes an invalid record.
    pub(super) fn write(self, raw: &[u8], zone: chrono_tz::Tz, cells: &mut Cells<'_>) {
        if raw.len() > exact::MAX_VALUE_BYTES {
            return cells.refused(&exact::too_long(raw.len()));
        }
        let unreadable = |cells: &mut Cells<'_>, type_name: &str| {
            cells.refused(&format!("a `{type_name}` value tapline cannot read"));
        };
        match self {
            Kind::Bool => cells.bool(raw.first().is_some_and(|&b| b != 0)),
            Kind::Int2 | Kind::Int4 | Kind::Int8 => match integer(raw) {
                Some(value) => cells.integer(value),
                None => unreadable(cells, "integer"),
            },
            Kind::Float4 | Kind::Float8 => match float(raw) {
                Some(value) if value.is_finite() => cells.float(value),
                Some(value) => cells.refused(&format!(
                    "the `float` value {value} has no JSON form (filter it out, or map it to NULL in the query)"
                )),
                None => unreadable(cells, "float"),
            },
            Kind::Numeric => match numeric(raw) {
                // A number when JSON carries it exactly; else its exact text.
                Some(text) => match exact::decimal(&text) {
                    Value::String(text) => cells.text(&text),
                    _ => cells.json(&text),
                },
                None => cells.refused(
                    "the `numeric` value is NaN or infinite, which has no JSON form (filter it out, or map it to NULL in the query)",
                ),
            },
            Kind::Text => match std::str::from_utf8(raw) {
                Ok(text) => cells.text(text),
                Err(_) => unreadable(cells, "text"),
            },
            Kind::Date => match date(raw) {
                Some(day) => match midnight_epoch(day, zone) {
                    Some(epoch) => cells.text(&format!("$D_{epoch}")),
                    None => cells.refused("the `date` is out of the range CleverTap's dates hold"),
                },
                None => cells.refused(INFINITE),
            },
            Kind::Timestamp => match micros(raw) {
                Some(m) => match local_epoch(m, zone) {
                    Some(epoch) => cells.text(&format!("$D_{epoch}")),
                    None => cells.refused("the `timestamp` is out of the range CleverTap's dates hold"),
                },
                None => cells.refused(INFINITE),
            },
            Kind::Timestamptz => match micros(raw) {
                Some(m) => cells.text(&format!(
                    "$D_{}",
                    m.div_euclid(1_000_000) + POSTGRES_EPOCH_SECONDS
                )),
                None => cells.refused(INFINITE),
            },
            Kind::Json => match std::str::from_utf8(raw) {
                Ok(text) => super::super::json_cell(text, "json", cells),
                Err(_) => unreadable(cells, "json"),
            },
            // jsonb's binary form is a version byte (1) and the JSON text.
            Kind::Jsonb => match raw.split_first() {
                Some((1, text)) => match std::str::from_utf8(text) {
                    Ok(text) => super::super::json_cell(text, "jsonb", cells),
                    Err(_) => unreadable(cells, "jsonb"),
                },
                _ => unreadable(cells, "jsonb"),
            },
            Kind::Uuid => match <[u8; 16]>::try_from(raw) {
                Ok(bytes) => cells.text(&crate::source::hyphenated_uuid(bytes)),
                Err(_) => unreadable(cells, "uuid"),
            },
            Kind::TextArray => match text_array(raw) {
                Ok(values) => cells.json(&serde_json::Value::from(values).to_string()),
                Err(reason) => cells.refused(&reason),
            },
        }
    }

    /// The value's place in the column's order and its text as `$1`; `None` for NULL-like
    /// values (infinity).
    pub(super) fn order(self, raw: &[u8]) -> Option<(Order, String)> {
        Some(match self {
            Kind::Int2 | Kind::Int4 | Kind::Int8 => {
                let value = integer(raw)?;
                (Order::Integer(value), value.to_string())
            }
            Kind::Float4 | Kind::Float8 => {
                let value = float(raw).filter(|f| f.is_finite())?;
                (Order::Float(value), value.to_string())
            }
            Kind::Numeric => {
                let text = numeric(raw)?;
                (Order::Float(text.parse().ok()?), text)
            }
            Kind::Date => {
                let day = date(raw)?;
                let text = day_of(day)?.format("%Y-%m-%d").to_string();
                (Order::Integer(i64::from(day)), text)
            }
            Kind::Timestamp => {
                let m = micros(raw)?;
                let text = time_of(m)?.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
                (Order::Integer(m), text)
            }
            Kind::Timestamptz => {
                let m = micros(raw)?;
                let text = time_of(m)?.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
                (Order::Integer(m), text)
            }
            Kind::Text => {
                let text = std::str::from_utf8(raw).ok()?.to_string();
                (Order::Text(text.clone()), text)
            }
            Kind::Uuid => {
                let text = crate::source::hyphenated_uuid(<[u8; 16]>::try_from(raw).ok()?);
                (Order::Text(text.clone()), text)
            }
            Kind::Bool | Kind::Json | Kind::Jsonb | Kind::TextArray => return None,
        })
    }
}

/// A value's place in its column's order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Order {
    Integer(i64),
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

fn integer(raw: &[u8]) -> Option<i64> {
    Some(match raw.len() {
        2 => i64::from(i16::from_be_bytes(raw.try_into().ok()?)),
        4 => i64::from(i32::from_be_bytes(raw.try_into().ok()?)),
        8 => i64::from_be_bytes(raw.try_into().ok()?),
        _ => return None,
    })
}

fn float(raw: &[u8]) -> Option<f64> {
    Some(match raw.len() {
        4 => f64::from(f32::from_be_bytes(raw.try_into().ok()?)),
        8 => f64::from_be_bytes(raw.try_into().ok()?),
        _ => return None,
    })
}

/// Days since 2000-01-01; `None` for `infinity`.
fn date(raw: &[u8]) -> Option<i32> {
    let day = i32::from_be_bytes(raw.try_into().ok()?);
    (day != i32::MAX && day != i32::MIN).then_some(day)
}

/// Microseconds since 2000-01-01 00:00:00; `None` for `infinity`.
fn micros(raw: &[u8]) -> Option<i64> {
    let m = i64::from_be_bytes(raw.try_into().ok()?);
    (m != i64::MAX && m != i64::MIN).then_some(m)
}

fn day_of(day: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(2000, 1, 1)?.checked_add_signed(chrono::Duration::days(day.into()))
}

fn time_of(m: i64) -> Option<chrono::NaiveDateTime> {
    let seconds = m.div_euclid(1_000_000) + POSTGRES_EPOCH_SECONDS;
    let nanos = (m.rem_euclid(1_000_000) * 1000) as u32;
    chrono::DateTime::from_timestamp(seconds, nanos).map(|time| time.naive_utc())
}

/// A date's midnight in `zone`, in epoch seconds (the first midnight when a clock change
/// repeats it; the hour after when one skips it).
fn midnight_epoch(day: i32, zone: chrono_tz::Tz) -> Option<i64> {
    let midnight = day_of(day)?.and_hms_opt(0, 0, 0)?;
    super::super::zone_epoch(midnight, zone)
}

/// A timestamp without a zone, read in `zone`, in epoch seconds.
fn local_epoch(m: i64, zone: chrono_tz::Tz) -> Option<i64> {
    super::super::zone_epoch(time_of(m)?, zone)
}

/// A `numeric` as decimal text: `-12.50`; `None` for NaN and infinities.
fn numeric(raw: &[u8]) -> Option<String> {
    let word = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(raw.get(at..at + 2)?.try_into().ok()?))
    };
    let count = usize::from(word(0)?);
    let weight = i32::from(word(2)? as i16);
    let sign = word(4)?;
    let scale = usize::from(word(6)?);
    if sign != 0x0000 && sign != 0x4000 {
        return None;
    }
    let digits: Vec<u16> = (0..count)
        .map(|index| word(8 + index * 2))
        .collect::<Option<_>>()?;
    let group = |index: i32| -> u16 {
        usize::try_from(index)
            .ok()
            .and_then(|index| digits.get(index).copied())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for index in 0..=weight {
            if index == 0 {
                let _ = write!(text, "{}", group(index));
            } else {
                let _ = write!(text, "{:04}", group(index));
            }
        }
    }
    if scale > 0 {
        text.push('.');
        let mut fraction = String::new();
        let mut index = weight + 1;
        while fraction.len() < scale {
            let _ = write!(fraction, "{:04}", group(index));
            index += 1;
        }
        fraction.truncate(scale);
        text.push_str(&fraction);
    }
    Some(text)
}

/// Why an infinite date or timestamp is refused.
const INFINITE: &str = "the date is `infinity`, which is no point in time CleverTap can hold (filter it out, or map it to NULL in the query)";

/// A one-dimensional array of text values, NULLs left out; why it cannot be sent otherwise.
fn text_array(raw: &[u8]) -> Result<Vec<String>, String> {
    let broken = || "a `text[]` value tapline cannot read".to_string();
    let int = |at: usize| -> Result<i32, String> {
        raw.get(at..at + 4)
            .and_then(|bytes| bytes.try_into().ok())
            .map(i32::from_be_bytes)
            .ok_or_else(broken)
    };
    let dimensions = int(0)?;
    if dimensions == 0 {
        return Ok(Vec::new());
    }
    if dimensions != 1 {
        return Err(format!(
            "a `text[]` of {dimensions} dimensions; CleverTap's multi-value properties are lists of text (flatten it in the query, or send it as JSON text with `to_json(...)::text`)"
        ));
    }
    let length = usize::try_from(int(12)?).map_err(|_| broken())?;
    let mut at = 20;
    let mut values = Vec::with_capacity(length.min(1024));
    for _ in 0..length {
        let size = int(at)?;
        at += 4;
        if size < 0 {
            continue;
        }
        let size = size as usize;
        let text = raw
            .get(at..at + size)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .ok_or_else(broken)?;
        values.push(text.to_string());
        at += size;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(weight: i16, sign: u16, scale: u16, digits: &[u16]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        raw.extend_from_slice(&weight.to_be_bytes());
        raw.extend_from_slice(&sign.to_be_bytes());
        raw.extend_from_slice(&scale.to_be_bytes());
        for digit in digits {
            raw.extend_from_slice(&digit.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numerics_read_as_postgres_prints_them() {
        assert_eq!(
            numeric(&numeric_bytes(0, 0, 2, &[12, 5000])).unwrap(),
            "12.50"
        );
        assert_eq!(
            numeric(&numeric_bytes(1, 0x4000, 0, &[1, 0])).unwrap(),
            "-10000"
        );
        assert_eq!(numeric(&numeric_bytes(-1, 0, 4, &[5])).unwrap(), "0.0005");
        // 12 × 10000⁻²
        assert_eq!(
            numeric(&numeric_bytes(-2, 0, 8, &[12])).unwrap(),
            "0.00000012"
        );
        assert_eq!(numeric(&numeric_bytes(0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(numeric(&numeric_bytes(0, 0xC000, 0, &[])), None, "NaN");
        assert_eq!(numeric(&[0, 1]), None, "cut short");
    }

    #[test]
    fn dates_and_times_become_epoch_seconds_in_the_source_zone() {
        let kolkata: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
        // 2024-05-01 is day 8887 after 2000-01-01.
        assert_eq!(
            midnight_epoch(8887, chrono_tz::Tz::UTC),
            Some(1_714_521_600)
        );
        assert_eq!(midnight_epoch(8887, kolkata), Some(1_714_521_600 - 19_800));
        let micros = (1_714_557_600 - POSTGRES_EPOCH_SECONDS) * 1_000_000 + 250_000;
        assert_eq!(local_epoch(micros, chrono_tz::Tz::UTC), Some(1_714_557_600));
        assert_eq!(date(&i32::MAX.to_be_bytes()), None, "infinity");
        let (_, text) = Kind::Timestamptz.order(&micros.to_be_bytes()).unwrap();
        assert_eq!(text, "2024-05-01 10:00:00.250000+00");
    }

    #[test]
    fn text_arrays_leave_nulls_out_and_refuse_broken_bytes() {
        let mut raw = Vec::new();
        for int in [1_i32, 1, 25, 3, 1] {
            raw.extend_from_slice(&int.to_be_bytes());
        }
        for value in [Some("a"), None, Some("bé")] {
            match value {
                Some(text) => {
                    raw.extend_from_slice(&(text.len() as i32).to_be_bytes());
                    raw.extend_from_slice(text.as_bytes());
                }
                None => raw.extend_from_slice(&(-1_i32).to_be_bytes()),
            }
        }
        assert_eq!(text_array(&raw).unwrap(), ["a", "bé"]);
        assert!(text_array(&raw[..raw.len() - 1]).is_err());
        let mut two = raw.clone();
        two[..4].copy_from_slice(&2_i32.to_be_bytes());
        assert!(text_array(&two).unwrap_err().contains("2 dimensions"));
        assert_eq!(
            text_array(&0_i32.to_be_bytes().repeat(3)).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn uuids_are_hyphenated() {
        let bytes: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(
            crate::source::hyphenated_uuid(bytes),
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
    }
}
