//! A Parquet value as the JSON CleverTap wants, exactly, or the reason it cannot be sent:
//! integers and dates by their column's plan, decimals of any width at full precision
//! (a number when JSON carries it exactly), text, lists, structs and maps.

use chrono::TimeZone;
use parquet::record::{Field, List};
use serde_json::Value;

use super::Plan;
use crate::source::exact;

/// Writes `text` into `slot`, reusing the string it holds.
pub(super) fn set_str(slot: &mut Value, text: &str) {
    match slot {
        Value::String(reused) => {
            reused.clear();
            reused.push_str(text);
        }
        _ => *slot = Value::String(text.to_string()),
    }
}

/// Writes formatted text into `slot`, reusing the string it holds.
pub(super) fn set_text(slot: &mut Value, text: impl std::fmt::Display) {
    use std::fmt::Write as _;
    match slot {
        Value::String(reused) => {
            reused.clear();
            let _ = write!(reused, "{text}");
        }
        _ => *slot = Value::String(text.to_string()),
    }
}

/// An INT32 or INT64 value by its plan (`unsigned` is the same bits read without a sign).
pub(super) fn set_integer(
    slot: &mut Value,
    value: i64,
    plan: Plan,
    zone: chrono_tz::Tz,
    unsigned: u64,
) -> Result<(), String> {
    match plan {
        Plan::Date => *slot = date_value(value, zone)?,
        Plan::Millis => set_text(slot, format_args!("$D_{}", value.div_euclid(1000))),
        Plan::Micros => set_text(slot, format_args!("$D_{}", value.div_euclid(1_000_000))),
        Plan::Nanos => set_text(slot, format_args!("$D_{}", value.div_euclid(1_000_000_000))),
        Plan::Decimal { scale } => *slot = decimal_from(&value.to_be_bytes(), scale)?,
        Plan::Unsigned => *slot = Value::from(unsigned),
        _ => *slot = Value::from(value),
    }
    Ok(())
}

/// A BYTE_ARRAY or FIXED_LEN_BYTE_ARRAY value by its plan; bytes that are not text are
/// refused, and so is a value past [`exact::MAX_VALUE_BYTES`], before it is copied.
pub(super) fn set_bytes(slot: &mut Value, bytes: &[u8], plan: Plan) -> Result<(), String> {
    if bytes.len() > exact::MAX_VALUE_BYTES {
        return Err(exact::too_long(bytes.len()));
    }
    match plan {
        Plan::Decimal { scale } => *slot = decimal_from(bytes, scale)?,
        Plan::Uuid => match <[u8; 16]>::try_from(bytes) {
            Ok(bytes) => set_str(slot, &crate::source::hyphenated_uuid(bytes)),
            Err(_) => return Err(format!("a `uuid` of {} bytes, not 16", bytes.len())),
        },
        _ => match std::str::from_utf8(bytes) {
            Ok(text) => set_str(slot, text),
            Err(_) => return Err(NOT_TEXT.into()),
        },
    }
    Ok(())
}

/// Why binary bytes are refused.
pub(super) const NOT_TEXT: &str = "a binary value that is not UTF-8 text; CleverTap's values are text, numbers and booleans (convert it in the export, to base64 or hex say)";

/// Days since 1970-01-01 as `$D_` of its midnight in `zone`.
pub(super) fn date_value(days: i64, zone: chrono_tz::Tz) -> Result<Value, String> {
    let midnight = chrono::DateTime::from_timestamp(days.saturating_mul(86_400), 0)
        .map(|time| time.naive_utc());
    match midnight.and_then(|time| zone.from_local_datetime(&time).earliest()) {
        Some(local) => Ok(Value::String(format!("$D_{}", local.timestamp()))),
        None => Err(format!(
            "the `date` {days} days from 1970 is out of the range CleverTap's dates hold"
        )),
    }
}

/// A Parquet value as CleverTap wants it, exactly; why it cannot be sent as it is.
pub(super) fn value_of(field: Field, zone: chrono_tz::Tz) -> Result<Value, String> {
    Ok(match field {
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
        Field::Float16(value) => number(f64::from(value))?,
        Field::Float(value) => number(f64::from(value))?,
        Field::Double(value) => number(value)?,
        Field::Decimal(decimal) => decimal_from(decimal.data(), decimal.scale())?,
        Field::Str(text) if text.len() > exact::MAX_VALUE_BYTES => {
            return Err(exact::too_long(text.len()));
        }
        Field::Str(text) => Value::String(text),
        Field::Bytes(bytes) if bytes.len() > exact::MAX_VALUE_BYTES => {
            return Err(exact::too_long(bytes.len()));
        }
        Field::Bytes(bytes) => match std::str::from_utf8(bytes.data()) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => return Err(NOT_TEXT.into()),
        },
        Field::Date(days) => date_value(i64::from(days), zone)?,
        Field::TimestampMillis(millis) => Value::String(format!("$D_{}", millis.div_euclid(1000))),
        Field::TimestampMicros(micros) => {
            Value::String(format!("$D_{}", micros.div_euclid(1_000_000)))
        }
        // A time of day is text (`10:30:00.000`): it is no point in time.
        field @ (Field::TimeMillis(_) | Field::TimeMicros(_)) => Value::String(field.to_string()),
        Field::ListInternal(list) => list_value(list, zone)?,
        // A struct is an object (a Charged event's `Items` are a list of them); CleverTap's
        // rules say where an object may go.
        Field::Group(group) => {
            let mut object = serde_json::Map::new();
            for (name, field) in group.get_column_iter() {
                let value = value_of(field.clone(), zone)?;
                if !value.is_null() {
                    object.insert(name.clone(), value);
                }
            }
            Value::Object(object)
        }
        Field::MapInternal(map) => {
            let mut object = serde_json::Map::new();
            for (key, value) in map.entries() {
                let Field::Str(key) = key else {
                    return Err(format!(
                        "a map whose keys are not text (a key is `{key}`); CleverTap's objects are keyed by text"
                    ));
                };
                let value = value_of(value.clone(), zone)?;
                if !value.is_null() {
                    object.insert(key.clone(), value);
                }
            }
            Value::Object(object)
        }
    })
}

/// A double as a JSON number; NaN and the infinities have none.
pub(super) fn number(value: f64) -> Result<Value, String> {
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .ok_or_else(|| format!("the floating-point value {value} has no JSON form"))
}

/// A list: its elements as values, NULLs left out (a multi-value property of strings).
pub(super) fn list_value(list: List, zone: chrono_tz::Tz) -> Result<Value, String> {
    let mut values = Vec::with_capacity(list.elements().len());
    for element in list.elements() {
        let value = value_of(element.clone(), zone)?;
        if !value.is_null() {
            values.push(value);
        }
    }
    Ok(Value::Array(values))
}

/// A decimal (big-endian two's complement of any width, `scale` digits after the point) as
/// the JSON value that carries it exactly: a number (`12.50` → 12.5) when one does, else its
/// text (a `decimal(38)` past 2^53, a `decimal256`).
pub(super) fn decimal_from(bytes: &[u8], scale: i32) -> Result<Value, String> {
    if bytes.is_empty() {
        return Err("an empty `decimal`".into());
    }
    let negative = bytes[0] & 0x80 != 0;
    // The magnitude: the two's complement negated when negative.
    let mut magnitude = bytes.to_vec();
    if negative {
        let mut carry = true;
        for byte in magnitude.iter_mut().rev() {
            *byte = !*byte;
            if carry {
                let (sum, overflow) = byte.overflowing_add(1);
                *byte = sum;
                carry = overflow;
            }
        }
    }
    let digits = decimal_digits(&magnitude);
    let scale = scale.max(0) as usize;
    let text = if scale == 0 {
        digits
    } else {
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        format!("{whole}.{fraction}")
    };
    let text = if negative { format!("-{text}") } else { text };
    Ok(exact::decimal(&text))
}

/// The decimal digits of a big-endian unsigned integer of any width.
pub(super) fn decimal_digits(big_endian: &[u8]) -> String {
    let mut number: Vec<u8> = big_endian.to_vec();
    let mut digits = Vec::new();
    while number.iter().any(|&byte| byte != 0) {
        // Divide by 10, most significant byte first.
        let mut remainder = 0_u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 10) as u8;
            remainder = value % 10;
        }
        digits.push(b'0' + remainder as u8);
    }
    if digits.is_empty() {
        return "0".into();
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::data_type::Decimal;

    #[test]
    fn decimals_keep_their_scale_and_sign() {
        let decimal = |value: i64, scale: i32| Decimal::Int64 {
            value: value.to_be_bytes(),
            precision: 18,
            scale,
        };
        let value = |decimal: Decimal| decimal_from(decimal.data(), decimal.scale()).unwrap();
        assert_eq!(value(decimal(1250, 2)), serde_json::json!(12.5));
        assert_eq!(value(decimal(-5, 3)), serde_json::json!(-0.005));
        assert_eq!(value(decimal(42, 0)), serde_json::json!(42));
        // Past what a double holds, and wider than 128 bits: exact, as text.
        let wide = |value: i128, width: usize| {
            let fill = if value < 0 { 0xff } else { 0 };
            let mut bytes = vec![fill; width - 16];
            bytes.extend_from_slice(&value.to_be_bytes());
            decimal_from(&bytes, 2).unwrap()
        };
        assert_eq!(
            wide(123_456_789_012_345_678_901_234, 16),
            serde_json::json!("1234567890123456789012.34")
        );
        assert_eq!(wide(-100, 32), serde_json::json!(-1.0));
        assert_eq!(
            wide(-123_456_789_012_345_678_901_234_567, 32),
            serde_json::json!("-1234567890123456789012345.67")
        );
    }

    #[test]
    fn dates_are_midnight_in_the_source_zone() {
        let kolkata: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
        // 2024-05-01 is day 19844 after 1970-01-01.
        assert_eq!(
            value_of(Field::Date(19844), chrono_tz::Tz::UTC).unwrap(),
            "$D_1714521600"
        );
        assert_eq!(
            value_of(Field::Date(19844), kolkata).unwrap(),
            "$D_1714501800"
        );
        assert_eq!(
            value_of(Field::TimestampMillis(1_714_557_600_250), kolkata).unwrap(),
            "$D_1714557600"
        );
    }
}
