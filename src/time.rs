//! Timestamp parsing for the styles real exports use.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// How a source writes its time field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// RFC 3339, `YYYY-MM-DD HH:MM:SS[.fraction]` (UTC), or an epoch number
    /// whose magnitude tells seconds from milliseconds.
    #[default]
    Auto,
    Rfc3339,
    EpochS,
    EpochMs,
    EpochUs,
    /// A chrono `strftime` pattern; without a zone the time is taken as UTC.
    #[serde(untagged)]
    Pattern(String),
}

/// Parses `s` as [`TimeFormat::Auto`] into milliseconds since the epoch.
pub fn parse_ts(s: &str) -> Option<i64> {
    parse_with(s, &TimeFormat::Auto)
}

pub fn parse_with(s: &str, format: &TimeFormat) -> Option<i64> {
    let s = s.trim();
    match format {
        TimeFormat::Auto => parse_auto(s),
        TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(s).ok().map(|d| d.timestamp_millis()),
        TimeFormat::EpochS => epoch(s, 1000.0),
        TimeFormat::EpochMs => epoch(s, 1.0),
        TimeFormat::EpochUs => epoch(s, 0.001),
        TimeFormat::Pattern(p) => DateTime::parse_from_str(s, p)
            .map(|d| d.timestamp_millis())
            .or_else(|_| NaiveDateTime::parse_from_str(s, p).map(|n| n.and_utc().timestamp_millis()))
            .or_else(|_| {
                NaiveDate::parse_from_str(s, p).map(|d| d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis())
            })
            .ok(),
    }
}

/// Epoch numbers from JSON (a number rather than a string).
pub fn from_epoch_number(n: f64, format: &TimeFormat) -> Option<i64> {
    let ms = match format {
        TimeFormat::EpochS => n * 1000.0,
        TimeFormat::EpochMs => n,
        TimeFormat::EpochUs => n / 1000.0,
        TimeFormat::Auto => auto_epoch_scale(n),
        _ => return None,
    };
    ms.is_finite().then_some(ms.round() as i64)
}

/// Seconds until 2286 are < 1e10; milliseconds since 1970-04 are > 1e10.
fn auto_epoch_scale(n: f64) -> f64 {
    if n.abs() < 1e11 {
        n * 1000.0
    } else if n.abs() < 1e14 {
        n
    } else {
        n / 1000.0
    }
}

fn epoch(s: &str, to_ms: f64) -> Option<i64> {
    let n: f64 = s.parse().ok()?;
    let ms = n * to_ms;
    ms.is_finite().then_some(ms.round() as i64)
}

fn parse_auto(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // A date-time always starts `YYYY-MM-DD`; anything else may be an epoch number.
    if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' {
        if let Ok(d) = DateTime::parse_from_rfc3339(s) {
            return Some(d.timestamp_millis());
        }
        // `YYYY-MM-DD HH:MM:SS[.fraction]` or `...T...` without a zone: UTC by convention
        // of data-lake exports.
        for p in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
            if let Ok(n) = NaiveDateTime::parse_from_str(s, p) {
                return Some(n.and_utc().timestamp_millis());
            }
        }
        for p in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f %Z"] {
            if let Ok(d) = DateTime::parse_from_str(s, p) {
                return Some(d.timestamp_millis());
            }
        }
        return None;
    }
    let n: f64 = s.parse().ok()?;
    from_epoch_number(n, &TimeFormat::Auto)
}

/// Formats milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_ms(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(d) => d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// The `YYYY-MM-DD` (UTC) day of a timestamp: the lake's partition key.
pub fn day_of(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(d) => d.format("%Y-%m-%d").to_string(),
        None => "invalid".to_string(),
    }
}

/// Parses a `YYYY-MM-DD` day (the lake's partition key).
pub fn parse_day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// Parses `YYYY-MM-DD` or RFC 3339 (for command-line and inventory dates).
pub fn parse_date_or_ts(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    parse_auto(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_cloudtrail_styles_parse_to_the_same_instant() {
        let a = parse_ts("2018-07-30T22:14:06Z").unwrap();
        let b = parse_ts("2018-07-30 22:14:06").unwrap();
        assert_eq!(a, b);
        assert_eq!(parse_ts("2018-07-30 22:14:06.123456789").unwrap(), a + 123);
        assert_eq!(parse_ts("2018-07-30T23:14:06+01:00").unwrap(), a);
        assert_eq!(format_ms(a), "2018-07-30T22:14:06.000Z");
    }

    #[test]
    fn placeholders_do_not_parse() {
        for s in ["redacted", "...", "", "2018-13-45T00:00:00Z", "yesterday"] {
            assert_eq!(parse_ts(s), None, "{s:?}");
        }
    }

    #[test]
    fn epochs_by_magnitude_and_by_format() {
        assert_eq!(parse_ts("1702857600"), Some(1_702_857_600_000));
        assert_eq!(parse_ts("1702857600123"), Some(1_702_857_600_123));
        assert_eq!(parse_with("1702857600", &TimeFormat::EpochS), Some(1_702_857_600_000));
        assert_eq!(from_epoch_number(1702857600.5, &TimeFormat::EpochS), Some(1_702_857_600_500));
        let p = TimeFormat::Pattern("%d/%m/%Y %H:%M".into());
        assert_eq!(parse_with("30/07/2018 22:14", &p), parse_ts("2018-07-30T22:14:00Z"));
        assert_eq!(day_of(parse_ts("2018-07-30T23:59:59.999Z").unwrap()), "2018-07-30");
    }
}
