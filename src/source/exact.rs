//! Values sent as the source has them, or refused by name: numbers that a JSON number carries
//! exactly (a 64-bit integer, or a decimal whose shortest double is the same decimal) go as
//! numbers, the others as their exact text; a value a source cannot send at all is refused
//! with a reason that names its type, and the row becomes an invalid record naming the column.

use serde_json::Value;

/// The longest value a source sends, as the CSV reader's row limit: a longer one is refused
/// before it is copied, so one hostile cell cannot take memory without bound.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// A decimal's text (`-12.50`, `123456789012345678901234`) as the JSON value that carries it
/// exactly: a number when a 64-bit integer or a double holds it without loss, else the text
/// itself (CleverTap takes a numeric string as it takes a number).
pub fn decimal(text: &str) -> Value {
    if let Ok(whole) = text.parse::<i64>() {
        return Value::from(whole);
    }
    if let Ok(whole) = text.parse::<u64>() {
        return Value::from(whole);
    }
    if carries_exactly(text)
        && let Some(number) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
    {
        return Value::Number(number);
    }
    Value::String(text.to_string())
}

/// Whether a JSON number (a 64-bit integer, else a double) is exactly the decimal `text`.
fn carries_exactly(text: &str) -> bool {
    if text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok() {
        return true;
    }
    let Ok(double) = text.parse::<f64>() else {
        return false;
    };
    double.is_finite() && canonical(&double.to_string()) == canonical(text)
}

/// A decimal's text without what does not change its value: a `+`, leading zeros, trailing
/// zeros of its fraction, an exponent (applied), and the sign of zero.
fn canonical(text: &str) -> String {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i64>().unwrap_or(0)),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = format!("{whole}{fraction}");
    // The decimal point sits after `point` digits.
    let point = whole.len() as i64 + exponent;
    let first = digits.find(|c: char| c != '0');
    let Some(first) = first else {
        return "0".into();
    };
    let last = digits.rfind(|c: char| c != '0').unwrap_or(first);
    let significant = &digits[first..=last];
    // Position of the point relative to the first significant digit.
    let point = point - first as i64;
    let sign = if negative { "-" } else { "" };
    format!("{sign}{significant}e{point}")
}

/// The first number in a JSON text that a JSON number cannot carry exactly (an integer past
/// 64 bits, a decimal with more digits than a double holds), if any: such JSON would arrive
/// changed.
pub fn inexact_number(json: &str) -> Option<&str> {
    let bytes = json.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                at += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                while at < bytes.len()
                    && matches!(bytes[at], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    at += 1;
                }
                let number = &json[start..at];
                if !carries_exactly(number) {
                    return Some(number);
                }
            }
            _ => at += 1,
        }
    }
    None
}

/// The reason a value past [`MAX_VALUE_BYTES`] is refused.
pub fn too_long(bytes: usize) -> String {
    format!(
        "a value of {bytes} bytes is longer than the {} bytes tapline sends (CleverTap's own limits are far lower: 512 bytes a property value)",
        MAX_VALUE_BYTES
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_go_as_numbers_only_when_they_arrive_unchanged() {
        for (text, sent) in [
            ("12", json!(12)),
            ("-12.50", json!(-12.5)),
            ("0.0005", json!(0.0005)),
            ("9007199254740993", json!(9_007_199_254_740_993_i64)),
            ("18446744073709551615", json!(u64::MAX)),
            (
                "123456789012345678901234",
                json!("123456789012345678901234"),
            ),
            (
                "0.1000000000000000055511151231257827",
                json!("0.1000000000000000055511151231257827"),
            ),
            ("3.14159265358979323846", json!("3.14159265358979323846")),
            ("1e400", json!("1e400")),
            ("100.000", json!(100.0)),
        ] {
            assert_eq!(decimal(text), sent, "{text}");
        }
    }

    #[test]
    fn json_with_a_number_that_would_change_is_found() {
        assert_eq!(inexact_number(r#"{"a": 1, "b": [2.5, -3e2]}"#), None);
        assert_eq!(
            inexact_number(r#"{"id": 123456789012345678901234, "x": "99999999999999999999999"}"#),
            Some("123456789012345678901234")
        );
        // Digits inside strings are text.
        assert_eq!(inexact_number(r#"["\"123456789012345678901234"]"#), None);
    }
}
