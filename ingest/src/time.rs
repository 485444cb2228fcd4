//! Timestamps: microseconds since the Unix epoch (UTC), read from and written as RFC 3339.

use ::time::OffsetDateTime;
use ::time::format_description::well_known::Rfc3339;

/// Earliest timestamp accepted (1970-01-01T00:00:00Z): plant data before the epoch is an
/// error in the source's clock, not history.
pub const MIN_US: i64 = 0;
/// Latest timestamp accepted (9999-12-31T23:59:59.999999Z).
pub const MAX_US: i64 = 253_402_300_799_999_999;

/// Parses an RFC 3339 timestamp with a `Z` or `+hh:mm` offset, e.g.
/// `2026-12-01T10:15:00Z` or `2026-12-01T11:15:00.250+01:00`, to microseconds (UTC).
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).map_err(|e| {
        format!("{s:?} is not an RFC 3339 timestamp such as 2026-12-01T10:15:00Z ({e})")
    })?;
    let us = t.unix_timestamp_nanos() / 1_000;
    i64::try_from(us)
        .ok()
        .filter(|us| (MIN_US..=MAX_US).contains(us))
        .ok_or_else(|| format!("{s:?} is before 1970-01-01T00:00:00Z"))
}

/// Formats microseconds since the epoch as RFC 3339 in UTC with microseconds, e.g.
/// `2026-12-01T10:15:00.000000Z`; out-of-range values are clamped to the accepted range.
pub fn format_us(us: i64) -> String {
    let us = us.clamp(MIN_US, MAX_US);
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1_000)
        .map(|t| {
            let (y, mo, d) = (t.year(), t.month() as u8, t.day());
            let (h, mi, s, u) = (t.hour(), t.minute(), t.second(), t.microsecond());
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{u:06}Z")
        })
        .unwrap_or_else(|_| "invalid".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_fractions_parse_to_utc_micros() {
        // 2026-12-01T10:15:00Z, worked out: 20,788 days after the epoch.
        let base = 20_788 * 86_400_000_000 + (10 * 3600 + 15 * 60) * 1_000_000;
        assert_eq!(parse_rfc3339("2026-12-01T10:15:00Z"), Ok(base));
        assert_eq!(parse_rfc3339("2026-12-01T11:15:00+01:00"), Ok(base));
        assert_eq!(parse_rfc3339("2026-12-01T10:15:00.25Z"), Ok(base + 250_000));
        assert_eq!(format_us(base + 250_000), "2026-12-01T10:15:00.250000Z");
        assert_eq!(parse_rfc3339(&format_us(base + 7)), Ok(base + 7));
    }

    #[test]
    fn bad_timestamps_are_refused_with_the_text() {
        for bad in ["2026-13-01T00:00:00Z", "2026-12-01 10:15", "yesterday", ""] {
            let e = parse_rfc3339(bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
        let e = parse_rfc3339("1969-12-31T23:59:59Z").unwrap_err();
        assert!(e.contains("before 1970"), "{e}");
    }
}
