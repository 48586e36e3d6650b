//! Cron fire times: a pure function of a schedule and a time, with no IO and no clock.
//!
//! Times are computed in the schedule's IANA zone by croner, which follows the Open Cron
//! Pattern Specification across DST changes: a fixed-time job whose time falls in a
//! spring-forward gap fires once, at the first valid time after the gap; one whose time
//! repeats in a fall-back overlap fires once, at the first; an interval job keeps its pace in
//! elapsed time. The tests below pin that down.

use chrono::{DateTime, TimeZone, Utc};
use schemars::JsonSchema;
use serde::Deserialize;

/// A parsed cron schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as written.
    pub expression: String,
    /// The parsed expression.
    pub cron: croner::Cron,
    /// The zone it is read in.
    pub timezone: chrono_tz::Tz,
    /// What a fire does while the pipeline still runs.
    pub overlap: Overlap,
    /// What the daemon does about fires it missed while down.
    pub catch_up: CatchUp,
}

/// What a fire does while the pipeline still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Drop the fire, and log it.
    Skip,
    /// Run once more when the current run ends.
    Queue,
}

/// What the daemon does at start about fires it missed while down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Nothing: wait for the next fire.
    Skip,
    /// Run once at start when a fire was missed.
    Latest,
}

/// The first fire of `schedule` strictly after `after`, or `None` if there is none (a date
/// that never comes, like 30 February).
pub fn next_fire(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = after.with_timezone(&schedule.timezone);
    let next = schedule.cron.find_next_occurrence(&local, false).ok()?;
    Some(next.with_timezone(&Utc))
}

/// The fires of `schedule` after `after`, for `tapline next`.
pub fn upcoming(schedule: &Schedule, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let mut fires = Vec::with_capacity(count);
    let mut cursor = after;
    while fires.len() < count {
        let Some(fire) = next_fire(schedule, cursor) else {
            break;
        };
        fires.push(fire);
        cursor = fire;
    }
    fires
}

/// The most recent fire at or before `now` that came after `since`: the fire a daemon that
/// was down missed (`catch_up: latest`).
pub fn missed_fire(
    schedule: &Schedule,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let local = now.with_timezone(&schedule.timezone);
    let previous = schedule
        .cron
        .find_previous_occurrence(&local, true)
        .ok()?
        .with_timezone(&Utc);
    (previous > since).then_some(previous)
}

/// A time in the schedule's zone, for display.
pub fn in_zone(schedule: &Schedule, time: DateTime<Utc>) -> String {
    schedule
        .timezone
        .from_utc_datetime(&time.naive_utc())
        .format("%Y-%m-%d %H:%M:%S %Z (%:z)")
        .to_string()
}

/// A cron expression in words, for the common shapes (`0 3 * * *`: "every day at 03:00",
/// `*/15 * * * *`: "every 15 minutes", `30 9 * * 1-5`: "Monday to Friday at 09:30");
/// `None` for the rest, which are shown as written.
pub fn in_words(expression: &str) -> Option<String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let (second, rest) = match fields.len() {
        5 => ("0", &fields[..]),
        6 => (fields[0], &fields[1..]),
        1 => return macro_in_words(fields[0]),
        _ => return None,
    };
    let [minute, hour, day, month, weekday] = rest else {
        return None;
    };
    let every = |field: &str| field.strip_prefix("*/").and_then(|n| n.parse::<u32>().ok());
    let number = |field: &str| field.parse::<u32>().ok();
    let at = |hour: u32, minute: u32| format!("{hour:02}:{minute:02}");
    if second != "0" {
        // Seconds-level schedules: only the plain ones.
        return match (second, [*minute, *hour, *day, *month, *weekday]) {
            ("*", ["*", "*", "*", "*", "*"]) => Some("every second".into()),
            (step, ["*", "*", "*", "*", "*"]) => every(step).map(|n| format!("every {n} seconds")),
            _ => None,
        };
    }
    if *month != "*" {
        return None;
    }
    match (*minute, *hour, *day, *weekday) {
        ("*", "*", "*", "*") => Some("every minute".into()),
        (step, "*", "*", "*") if every(step).is_some() => {
            every(step).map(|n| format!("every {n} minutes"))
        }
        (minute, "*", "*", "*") => number(minute).map(|m| format!("every hour at minute {m}")),
        (minute, step, "*", "*") if every(step).is_some() => {
            let (n, m) = (every(step)?, number(minute)?);
            Some(format!("every {n} hours at minute {m}"))
        }
        (minute, hour, "*", "*") => Some(format!(
            "every day at {}",
            at(number(hour)?, number(minute)?)
        )),
        (minute, hour, day, "*") => Some(format!(
            "on day {} of every month at {}",
            number(day)?,
            at(number(hour)?, number(minute)?)
        )),
        (minute, hour, "*", weekday) => Some(format!(
            "{} at {}",
            weekdays_in_words(weekday)?,
            at(number(hour)?, number(minute)?)
        )),
        _ => None,
    }
}

/// `@daily` and its kind in words.
fn macro_in_words(expression: &str) -> Option<String> {
    let words = match expression {
        "@hourly" => "every hour",
        "@daily" | "@midnight" => "every day at 00:00",
        "@weekly" => "every Sunday at 00:00",
        "@monthly" => "on day 1 of every month at 00:00",
        "@yearly" | "@annually" => "on 1 January at 00:00",
        _ => return None,
    };
    Some(words.into())
}

/// A day-of-week field in words: `1` "every Monday", `1-5` "Monday to Friday", `1,3`
/// "Monday and Wednesday".
fn weekdays_in_words(field: &str) -> Option<String> {
    const NAMES: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let day = |text: &str| -> Option<&str> {
        match text.parse::<usize>() {
            Ok(number) => NAMES.get(number % 7).copied(),
            Err(_) => NAMES
                .iter()
                .find(|name| name[..3].eq_ignore_ascii_case(text))
                .copied(),
        }
    };
    if let Some((first, last)) = field.split_once('-') {
        return Some(format!("{} to {}", day(first)?, day(last)?));
    }
    let days: Option<Vec<&str>> = field.split(',').map(day).collect();
    match days?.as_slice() {
        [one] => Some(format!("every {one}")),
        [init @ .., last] => Some(format!("{} and {last}", init.join(", "))),
        [] => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn schedule(cron: &str, zone: &str) -> Schedule {
        Schedule {
            expression: cron.to_string(),
            cron: croner::parser::CronParser::builder()
                .seconds(croner::parser::Seconds::Optional)
                .build()
                .parse(cron)
                .unwrap(),
            timezone: zone.parse().unwrap(),
            overlap: crate::config::model::Overlap::Skip,
            catch_up: crate::config::model::CatchUp::Skip,
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// Every fire in `[from, to)`.
    fn fires(schedule: &Schedule, from: &str, to: &str) -> Vec<DateTime<Utc>> {
        let to = utc(to);
        let mut fires = Vec::new();
        let mut cursor = utc(from) - Duration::seconds(1);
        while let Some(fire) = next_fire(schedule, cursor) {
            if fire >= to {
                break;
            }
            fires.push(fire);
            cursor = fire;
        }
        fires
    }

    #[test]
    fn five_fields_in_a_zone() {
        let daily = schedule("0 3 * * *", "Asia/Kolkata");
        // 03:00 IST is 21:30 UTC the day before.
        assert_eq!(
            next_fire(&daily, utc("2026-11-29T00:00:00Z")),
            Some(utc("2026-11-29T21:30:00Z"))
        );
        // Strictly after: a fire at `after` is not returned again.
        assert_eq!(
            next_fire(&daily, utc("2026-11-29T21:30:00Z")),
            Some(utc("2026-11-30T21:30:00Z"))
        );
    }

    #[test]
    fn seconds_names_and_shorthands() {
        let every_ten = schedule("*/10 * * * * *", "UTC");
        assert_eq!(
            upcoming(&every_ten, utc("2026-11-29T10:00:03Z"), 3),
            [
                utc("2026-11-29T10:00:10Z"),
                utc("2026-11-29T10:00:20Z"),
                utc("2026-11-29T10:00:30Z")
            ]
        );
        let weekdays = schedule("30 9 * * MON-FRI", "UTC");
        // 2026-11-28 is a Saturday: the next is Monday.
        assert_eq!(
            next_fire(&weekdays, utc("2026-11-28T00:00:00Z")),
            Some(utc("2026-11-30T09:30:00Z"))
        );
        let hourly = schedule("@hourly", "UTC");
        assert_eq!(
            next_fire(&hourly, utc("2026-11-29T10:15:00Z")),
            Some(utc("2026-11-29T11:00:00Z"))
        );
        let monthly = schedule("@monthly", "UTC");
        assert_eq!(
            next_fire(&monthly, utc("2026-11-29T10:15:00Z")),
            Some(utc("2026-12-01T00:00:00Z"))
        );
        let weekly = schedule("@weekly", "UTC");
        assert_eq!(
            next_fire(&weekly, utc("2026-11-29T10:15:00Z")),
            Some(utc("2026-12-06T00:00:00Z"))
        );
    }

    #[test]
    fn spring_forward_runs_a_job_in_the_gap_once_after_it() {
        // Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let job = schedule("30 2 * * *", "Europe/Berlin");
        let fired = fires(&job, "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z");
        assert_eq!(
            fired,
            [
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST, the first time after the gap
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST
            ]
        );
    }

    #[test]
    fn fall_back_runs_a_job_in_the_repeated_hour_once() {
        // Europe/Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 comes twice.
        let job = schedule("30 2 * * *", "Europe/Berlin");
        let fired = fires(&job, "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z");
        assert_eq!(
            fired,
            [
                utc("2026-10-24T00:30:00Z"), // 02:30 CEST
                utc("2026-10-25T00:30:00Z"), // 02:30 CEST, the first of the two
                utc("2026-10-26T01:30:00Z"), // 02:30 CET
            ]
        );
    }

    #[test]
    fn interval_jobs_keep_their_pace_across_dst() {
        // Every 30 minutes through the fall-back night in New York: the repeated hour is
        // real time, so it has its fires too (one every 30 minutes of elapsed time).
        let job = schedule("*/30 * * * *", "America/New_York");
        let fired = fires(&job, "2026-11-01T04:00:00Z", "2026-11-01T08:00:00Z");
        assert_eq!(fired.len(), 8, "{fired:?}");
        assert!(
            fired
                .windows(2)
                .all(|pair| pair[1] - pair[0] == Duration::minutes(30))
        );
        // And through the spring-forward night, no fire is doubled or lost beyond the gap.
        let fired = fires(&job, "2026-03-08T05:00:00Z", "2026-03-08T09:00:00Z");
        assert_eq!(fired.len(), 8, "{fired:?}");
        assert!(
            fired
                .windows(2)
                .all(|pair| pair[1] - pair[0] == Duration::minutes(30))
        );
    }

    #[test]
    fn a_date_that_never_comes_has_no_fire() {
        let never = schedule("0 0 30 2 *", "UTC");
        assert_eq!(next_fire(&never, utc("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn the_missed_fire_is_the_latest_one_since_the_daemon_stopped() {
        let daily = schedule("0 3 * * *", "UTC");
        let since = utc("2026-11-26T12:00:00Z");
        assert_eq!(
            missed_fire(&daily, since, utc("2026-11-29T10:00:00Z")),
            Some(utc("2026-11-29T03:00:00Z"))
        );
        // Nothing missed when the last fire is before `since`.
        assert_eq!(
            missed_fire(
                &daily,
                utc("2026-11-29T03:00:00Z"),
                utc("2026-11-29T10:00:00Z")
            ),
            None
        );
    }

    #[test]
    fn shows_times_in_the_schedule_zone() {
        let daily = schedule("0 3 * * *", "Asia/Kolkata");
        assert_eq!(
            in_zone(&daily, utc("2026-11-29T21:30:00Z")),
            "2026-11-30 03:00:00 IST (+05:30)"
        );
    }

    #[test]
    fn common_cron_expressions_read_in_words() {
        for (expression, words) in [
            ("0 3 * * *", Some("every day at 03:00")),
            ("30 9 * * 1-5", Some("Monday to Friday at 09:30")),
            ("0 6 * * 1", Some("every Monday at 06:00")),
            ("0 6 * * MON,WED", Some("Monday and Wednesday at 06:00")),
            ("15 2 1 * *", Some("on day 1 of every month at 02:15")),
            ("*/15 * * * *", Some("every 15 minutes")),
            ("5 * * * *", Some("every hour at minute 5")),
            ("0 */6 * * *", Some("every 6 hours at minute 0")),
            ("* * * * *", Some("every minute")),
            ("* * * * * *", Some("every second")),
            ("*/2 * * * * *", Some("every 2 seconds")),
            ("@daily", Some("every day at 00:00")),
            ("0 3 * 1 *", None),
            ("0 3,15 * * *", None),
            ("0 3 1 * 1", None),
        ] {
            assert_eq!(in_words(expression).as_deref(), words, "{expression}");
        }
    }
}
