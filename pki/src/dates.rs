//! Conversions between the caller's `SystemTime`, certificate times and
//! rcgen's `OffsetDateTime`. Certificates hold whole seconds, so every time
//! that goes into one is truncated here first and reported back as written.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use x509_parser::time::ASN1Time;

use crate::error::Error;

/// Seconds since the epoch (negative before it).
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let secs = before.duration().as_secs();
            // Round towards the past so a truncated time never moves later.
            let secs = if before.duration().subsec_nanos() > 0 {
                secs.saturating_add(1)
            } else {
                secs
            };
            i64::try_from(secs).map_or(i64::MIN, |s| -s)
        }
    }
}

fn from_unix_seconds(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// `t` truncated to whole seconds.
pub(crate) fn truncate(t: SystemTime) -> SystemTime {
    from_unix_seconds(unix_seconds(t))
}

/// For rcgen; `t` must already be whole seconds to be reported exactly.
pub(crate) fn to_offset(t: SystemTime) -> Result<OffsetDateTime, Error> {
    OffsetDateTime::from_unix_timestamp(unix_seconds(t)).map_err(Error::issue)
}

pub(crate) fn from_asn1(t: ASN1Time) -> SystemTime {
    from_unix_seconds(t.timestamp())
}

/// RFC 3339 in UTC, for messages.
pub(crate) fn format(t: SystemTime) -> String {
    match OffsetDateTime::from_unix_timestamp(unix_seconds(t)) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => format!("{} seconds after 1970-01-01", unix_seconds(t)),
    }
}

/// The last time X.509 can express, 9999-12-31T23:59:59Z.
pub(crate) fn latest() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

/// `t + d`, or `cap` if that is later than `cap` or out of range.
pub(crate) fn add_capped(t: SystemTime, d: Duration, cap: SystemTime) -> SystemTime {
    t.checked_add(d).map_or(cap, |end| end.min(cap))
}

/// `t - d`, but not before `floor`.
pub(crate) fn sub_floored(t: SystemTime, d: Duration, floor: SystemTime) -> SystemTime {
    t.checked_sub(d).map_or(floor, |start| start.max(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_towards_the_past() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(truncate(t), UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let before = UNIX_EPOCH - Duration::from_millis(1_500);
        assert_eq!(truncate(before), UNIX_EPOCH - Duration::from_secs(2));
    }

    #[test]
    fn formats_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(format(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn capped_arithmetic() {
        let t = UNIX_EPOCH + Duration::from_secs(1000);
        let cap = UNIX_EPOCH + Duration::from_secs(1500);
        assert_eq!(
            add_capped(t, Duration::from_secs(100), cap),
            t + Duration::from_secs(100)
        );
        assert_eq!(add_capped(t, Duration::from_secs(900), cap), cap);
        assert_eq!(add_capped(t, Duration::MAX, cap), cap);
        let floor = UNIX_EPOCH + Duration::from_secs(950);
        assert_eq!(
            sub_floored(t, Duration::from_secs(10), floor),
            t - Duration::from_secs(10)
        );
        assert_eq!(sub_floored(t, Duration::from_secs(3600), floor), floor);
    }
}
