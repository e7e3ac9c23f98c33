//! Values of `request:Time` conditions.
//!
//! The `Date*` operators take an instant, as IAM writes them (an ISO 8601
//! date-time with an offset, `2026-12-31T18:00:00Z`; a date, `2026-12-31`,
//! meaning its midnight UTC; or epoch seconds, `1798761600`), or a time of
//! day (`09:00`, `17:30:00`, `22:00+02:00`; UTC unless an offset is given).
//! A time of day compares against the request's time of day at that offset,
//! every day, which gives daily windows: `DateGreaterThan 09:00` and
//! `DateLessThan 17:00` in one rule is "office hours UTC"; a window across
//! midnight is two rules. Comparisons are to the second.

use jiff::Timestamp;

const DAY: i64 = 86_400;

/// A bound that a request time can be before or after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeBound {
    Instant(Timestamp),
    TimeOfDay { seconds: i64, offset_seconds: i64 },
}

impl TimeBound {
    pub(crate) fn parse(value: &str) -> Result<TimeBound, String> {
        let value = value.trim();
        if let Ok(instant) = value.parse::<Timestamp>() {
            return Ok(TimeBound::Instant(instant));
        }
        if let Ok(date) = value.parse::<jiff::civil::Date>()
            && value.len() == 10
            && let Ok(midnight) = date.to_zoned(jiff::tz::TimeZone::UTC)
        {
            return Ok(TimeBound::Instant(midnight.timestamp()));
        }
        if !value.is_empty()
            && value.bytes().all(|b| b.is_ascii_digit())
            && let Ok(seconds) = value.parse::<i64>()
            && let Ok(instant) = Timestamp::from_second(seconds)
        {
            return Ok(TimeBound::Instant(instant));
        }
        parse_time_of_day(value).ok_or_else(|| {
            format!(
                "{value:?} is not a time (expected an instant like 2026-01-31T18:00:00Z, 2026-01-31 or epoch seconds like 1769882400, or a time of day like 09:00, 09:00:30 or 17:30+02:00)"
            )
        })
    }

    /// How `now` compares with this bound, to the second: `Less` when it is
    /// before it.
    pub(crate) fn compare(&self, now: Timestamp) -> std::cmp::Ordering {
        match *self {
            TimeBound::Instant(t) => now.as_second().cmp(&t.as_second()),
            TimeBound::TimeOfDay {
                seconds,
                offset_seconds,
            } => local_seconds(now, offset_seconds).cmp(&seconds),
        }
    }
}

fn local_seconds(now: Timestamp, offset_seconds: i64) -> i64 {
    (now.as_second() + offset_seconds).rem_euclid(DAY)
}

/// `HH:MM[:SS][Z|±HH:MM]`.
fn parse_time_of_day(value: &str) -> Option<TimeBound> {
    let (clock, offset_seconds) = if let Some(clock) = value.strip_suffix('Z') {
        (clock, 0)
    } else if let Some(at) = value.rfind(['+', '-']) {
        let (clock, offset) = value.split_at(at);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (h, m) = offset[1..].split_once(':')?;
        let (h, m) = (two_digits(h)?, two_digits(m)?);
        if h > 23 || m > 59 {
            return None;
        }
        (clock, sign * (h * 3600 + m * 60))
    } else {
        (value, 0)
    };
    let mut parts = clock.split(':');
    let h = two_digits(parts.next()?)?;
    let m = two_digits(parts.next()?)?;
    let s = parts.next().map(two_digits).unwrap_or(Some(0))?;
    if parts.next().is_some() || h > 23 || m > 59 || s > 59 {
        return None;
    }
    Some(TimeBound::TimeOfDay {
        seconds: h * 3600 + m * 60 + s,
        offset_seconds,
    })
}

fn two_digits(s: &str) -> Option<i64> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("valid timestamp")
    }

    #[test]
    fn parses_both_forms() {
        assert_eq!(
            TimeBound::parse("2026-01-31T18:00:00Z"),
            Ok(TimeBound::Instant(at("2026-01-31T18:00:00Z")))
        );
        assert_eq!(
            TimeBound::parse("09:30"),
            Ok(TimeBound::TimeOfDay {
                seconds: 9 * 3600 + 1800,
                offset_seconds: 0
            })
        );
        assert_eq!(
            TimeBound::parse("17:00:05+02:00"),
            Ok(TimeBound::TimeOfDay {
                seconds: 17 * 3600 + 5,
                offset_seconds: 7200
            })
        );
        assert_eq!(
            TimeBound::parse("06:00-05:30"),
            Ok(TimeBound::TimeOfDay {
                seconds: 6 * 3600,
                offset_seconds: -(5 * 3600 + 1800)
            })
        );
        for bad in [
            "tomorrow",
            "24:00",
            "9:00",
            "09:60",
            "09:00:00:00",
            "2026-13-01T00:00:00Z",
            "2026-1-01",
            "-5",
            "09:00+25:00",
            "",
        ] {
            assert!(TimeBound::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn instants_compare_to_the_second() {
        use std::cmp::Ordering::*;
        let bound = TimeBound::parse("2026-06-01T00:00:00Z").expect("valid");
        assert_eq!(bound.compare(at("2026-05-31T23:59:59Z")), Less);
        assert_eq!(bound.compare(at("2026-06-01T00:00:00.700Z")), Equal);
        assert_eq!(bound.compare(at("2026-06-01T00:00:01Z")), Greater);
        // The same instant as IAM also writes it.
        assert_eq!(TimeBound::parse("2026-06-01"), Ok(bound));
        assert_eq!(TimeBound::parse("1780272000"), Ok(bound));
        assert_eq!(TimeBound::parse("2026-06-01T02:00:00+02:00"), Ok(bound));
    }

    #[test]
    fn time_of_day_uses_the_offset() {
        let nine_paris = TimeBound::parse("09:00+01:00").expect("valid");
        use std::cmp::Ordering::*;
        // 08:30 UTC is 09:30 at +01:00: after nine.
        assert_eq!(nine_paris.compare(at("2026-03-02T08:30:00Z")), Greater);
        // 07:30 UTC is 08:30 at +01:00: before nine.
        assert_eq!(nine_paris.compare(at("2026-03-02T07:30:00Z")), Less);
        // Wraps around midnight: 23:30 UTC is 00:30 the next day at +01:00.
        assert_eq!(nine_paris.compare(at("2026-03-02T23:30:00Z")), Less);
        assert_eq!(nine_paris.compare(at("2026-03-02T08:00:00Z")), Equal);
    }
}
