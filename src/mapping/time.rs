//! Timestamps in the forms sources write them → Unix epoch seconds.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use serde_json::Value;

/// Epoch seconds above this are taken to be milliseconds written by mistake (year 5138+).
const MAX_EPOCH_SECONDS: i64 = 99_999_999_999;

/// Reads `ts`: epoch seconds (number or digits), ISO-8601 / RFC 3339 with a zone,
/// or `YYYY-MM-DD HH:MM:SS[.fff]` / `YYYY-MM-DDTHH:MM:SS[.fff]` in `zone` (the source's).
pub fn parse_timestamp(value: &Value, zone: Tz) -> Result<i64, String> {
    let seconds = match value {
        Value::Number(number) => match number.as_i64() {
            Some(seconds) => seconds,
            None => number
                .as_f64()
                .map(|f| f as i64)
                .ok_or_else(|| format!("`{number}` is not a timestamp"))?,
        },
        Value::String(text) => parse_text(text.trim(), zone)?,
        other => return Err(format!("{other} is not a timestamp")),
    };
    if seconds <= 0 {
        return Err(format!("must be after 1970-01-01, found {value}"));
    }
    if seconds > MAX_EPOCH_SECONDS {
        return Err(format!(
            "{value} looks like milliseconds; CleverTap wants epoch seconds"
        ));
    }
    Ok(seconds)
}

fn parse_text(text: &str, zone: Tz) -> Result<i64, String> {
    // A CleverTap date (`$D_<epoch seconds>`), as database and Parquet sources give times.
    if let Some(seconds) = text.strip_prefix("$D_")
        && let Ok(seconds) = seconds.parse::<i64>()
    {
        return Ok(seconds);
    }
    if !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        && let Ok(seconds) = text.parse::<i64>()
    {
        return Ok(seconds);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp());
    }
    if let Ok(time) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f UTC") {
        return Ok(time.and_utc().timestamp());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return in_zone(time, zone).ok_or_else(|| {
                format!("`{text}` does not exist in {zone} (a clock change skips it)")
            });
        }
    }
    Err(format!(
        "`{text}` is not a timestamp; use epoch seconds, ISO-8601 (2024-05-01T10:00:00Z) or 2024-05-01 10:00:00 (in the source's `timezone`, default UTC)"
    ))
}

/// A wall-clock time in `zone` as epoch seconds; in a clock change's repeated hour, the
/// first of the two.
fn in_zone(time: NaiveDateTime, zone: Tz) -> Option<i64> {
    zone.from_local_datetime(&time)
        .earliest()
        .map(|local| local.timestamp())
}

/// Reads a date property: a timestamp as for `ts`, or a plain `YYYY-MM-DD` (its first
/// moment in `zone`, the source's).
pub fn parse_date(text: &str, zone: Tz) -> Result<i64, String> {
    let text = text.trim();
    // The common `YYYY-MM-DD` without a format string; other spellings chrono accepts
    // (`2024-3-5`) go through it.
    if let Some(date) =
        plain_date(text).or_else(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
    {
        // A day always has a first moment, if not always midnight (a clock change at 00:00).
        let first = date.and_hms_opt(0, 0, 0).unwrap_or_default();
        return Ok(in_zone(first, zone)
            .or_else(|| in_zone(first + chrono::Duration::hours(1), zone))
            .unwrap_or_else(|| first.and_utc().timestamp()));
    }
    parse_text(text, zone)
}

/// `YYYY-MM-DD`, read without a format string (this runs per row of a `date` column).
fn plain_date(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        bytes[range].iter().try_fold(0u32, |total, &byte| {
            byte.is_ascii_digit()
                .then(|| total * 10 + u32::from(byte - b'0'))
        })
    };
    let year = i32::try_from(number(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_without_a_format_string_read_as_chrono_reads_them() {
        for text in [
            "2024-03-15",
            "1990-05-01",
            "2024-02-29",
            "2023-02-29",
            "2024-13-01",
            "2024-3-5",
            "2024-03-1x",
            "+024-03-15",
            "0001-01-01",
        ] {
            let chrono = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok();
            let fast = plain_date(text);
            assert!(
                fast.is_none() || fast == chrono,
                "{text}: {fast:?} vs {chrono:?}"
            );
            assert_eq!(
                parse_date(text, Tz::UTC).ok(),
                chrono.map(|date| date
                    .and_hms_opt(0, 0, 0)
                    .unwrap_or_default()
                    .and_utc()
                    .timestamp()),
                "{text}"
            );
        }
    }
}
