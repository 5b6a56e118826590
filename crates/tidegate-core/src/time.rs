//! The one time type of the core: milliseconds since the Unix epoch, passed in by the host.

/// Milliseconds since 1970-01-01T00:00:00Z, as observed by the host.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMs(pub u64);

impl UnixMs {
    /// The same instant in nanoseconds (saturating), the unit counters are kept in.
    pub fn as_nanos(self) -> u64 {
        self.0.saturating_mul(1_000_000)
    }

    /// This instant plus `ms` milliseconds (saturating).
    pub fn plus_ms(self, ms: u64) -> UnixMs {
        UnixMs(self.0.saturating_add(ms))
    }

    /// Whole seconds since the epoch.
    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// The UTC calendar month of this instant as `YYYY-MM`: the budget period key.
    pub fn month_key(self) -> String {
        let (y, m, _) = civil_from_days((self.0 / 86_400_000) as i64);
        format!("{y:04}-{m:02}")
    }

    /// Milliseconds from this instant to the first instant of the next UTC month.
    pub fn ms_until_next_month(self) -> u64 {
        let (y, m, _) = civil_from_days((self.0 / 86_400_000) as i64);
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        let start = days_from_civil(ny, nm, 1).max(0) as u64 * 86_400_000;
        start.saturating_sub(self.0)
    }
}

/// Seconds, rounded up, needed to cover `nanos` nanoseconds. Used for `Retry-After` and `t`.
pub fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

// Howard Hinnant's civil calendar algorithms (public domain description), days since epoch.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an HTTP `Retry-After` value: delay-seconds or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`). Returns the delay in whole seconds from `now`
/// (0 for a date in the past), or `None` when the value is neither form.
pub fn parse_retry_after(value: &str, now: UnixMs) -> Option<u64> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok();
    }
    let at = parse_imf_fixdate(v)?;
    Some(at.saturating_sub(now.0).div_ceil(1000))
}

fn parse_imf_fixdate(v: &str) -> Option<u64> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let rest = v.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let mi: u64 = hms.next()?.parse().ok()?;
    let s: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if days < 0 {
        return None;
    }
    Some(((days as u64 * 86_400) + h * 3600 + mi * 60 + s) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_key_and_rollover() {
        // 2026-12-03T16:49:00Z
        let t = UnixMs(1_796_316_540_000);
        assert_eq!(t.month_key(), "2026-12");
        let next = t.plus_ms(t.ms_until_next_month());
        assert_eq!(next.month_key(), "2027-01");
        assert!(
            !UnixMs(u64::MAX).month_key().is_empty(),
            "no panic at the far end"
        );
        assert_eq!(UnixMs(0).month_key(), "1970-01");
    }

    #[test]
    fn retry_after_both_forms() {
        let now = UnixMs(784_111_777_000); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(120));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(120)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now),
            Some(0)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}
