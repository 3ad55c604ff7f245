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
        if let Some(ms) = utc_millis(b) {
            return Some(ms);
        }
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

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the form nearly every log writes, read
/// without chrono's general parser (the time of every event is parsed, so
/// this is on the hot path). Anything else (an offset, a lower-case `t` or
/// `z`, a leap second, a fraction past nanoseconds) is `None` and is left to
/// chrono; what this reads, chrono reads to the same instant (tested).
fn utc_millis(b: &[u8]) -> Option<i64> {
    let digit = |i: usize| {
        let d = b[i].wrapping_sub(b'0');
        (d < 10).then_some(i64::from(d))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    if b.len() < 20 || b[b.len() - 1] != b'Z' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (two(0)? * 100 + two(2)?, two(5)?, two(8)?);
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    let fraction = &b[19..b.len() - 1];
    let ms = match fraction {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) => {
            // Milliseconds truncated, as chrono's `timestamp_millis` does.
            (0..3).fold(0, |ms, i| ms * 10 + digits.get(i).map_or(0, |d| i64::from(d - b'0')))
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[month as usize - 1] {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * DAY_MS + ((hour * 60 + minute) * 60 + second) * 1000 + ms)
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

/// The first and last day whose every instant fits in a nanosecond
/// timestamp (what DataFusion's date functions cast to): a day outside them
/// makes any query over it fail, so detection skips such days.
pub const NS_SAFE_FIRST_DAY: &str = "1677-09-22";
pub const NS_SAFE_LAST_DAY: &str = "2262-04-10";

/// The event times ingest accepts, `[from, until)` in ms since the epoch. A
/// log line from year 9999 or 0000 is a poisoned or broken value, not an
/// event: outside the window it is quarantined with the reason instead of
/// landing in the lake (where it would also fall outside what detection's
/// nanosecond arithmetic can hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsWindow {
    pub from_ms: i64,
    pub until_ms: i64,
}

/// The default window, as the `--ts-window` flag writes it.
pub const DEFAULT_TS_WINDOW: &str = "2000-01-01..2100-01-01";

impl Default for TsWindow {
    fn default() -> Self {
        DEFAULT_TS_WINDOW.parse().expect("the default window parses")
    }
}

impl TsWindow {
    pub fn contains(&self, ms: i64) -> bool {
        (self.from_ms..self.until_ms).contains(&ms)
    }
}

impl std::fmt::Display for TsWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", format_ms(self.from_ms), format_ms(self.until_ms))
    }
}

impl std::str::FromStr for TsWindow {
    type Err = String;

    /// `FROM..UNTIL`, each `YYYY-MM-DD` or RFC 3339, FROM before UNTIL, both
    /// within the days detection can compute on.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) =
            s.split_once("..").ok_or_else(|| format!("{s:?} is not FROM..UNTIL (e.g. {DEFAULT_TS_WINDOW})"))?;
        let bound = |x: &str| {
            let ms = parse_date_or_ts(x).ok_or_else(|| format!("{x:?} is not a date (YYYY-MM-DD) or RFC 3339 time"))?;
            let day = day_of(ms);
            if !(NS_SAFE_FIRST_DAY..=NS_SAFE_LAST_DAY).contains(&day.as_str()) {
                return Err(format!(
                    "{x:?} is outside {NS_SAFE_FIRST_DAY}..{NS_SAFE_LAST_DAY}, the days detection can handle"
                ));
            }
            Ok(ms)
        };
        let w = TsWindow { from_ms: bound(a)?, until_ms: bound(b)? };
        if w.from_ms >= w.until_ms {
            return Err(format!("{s:?}: FROM must be before UNTIL"));
        }
        Ok(w)
    }
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

    #[test]
    fn ts_window_parses_checks_and_contains() {
        let w = TsWindow::default();
        assert!(w.contains(parse_ts("2026-11-02T14:03:07Z").unwrap()));
        assert!(w.contains(parse_ts("2000-01-01T00:00:00Z").unwrap()));
        for s in ["9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "2100-01-01T00:00:00Z", "1999-12-31T23:59:59Z"] {
            assert!(!w.contains(parse_ts(s).unwrap()), "{s}");
        }
        let narrow: TsWindow = "2026-11-01..2026-11-03T12:00:00Z".parse().unwrap();
        assert!(narrow.contains(parse_ts("2026-11-03T11:59:59Z").unwrap()));
        assert!(!narrow.contains(parse_ts("2026-11-03T12:00:00Z").unwrap()));
        assert_eq!(w.to_string().parse::<TsWindow>(), Ok(w));
        for (bad, needle) in [
            ("2000-01-01", "FROM..UNTIL"),
            ("2100-01-01..2000-01-01", "before"),
            ("2000-01-01..soon", "not a date"),
            ("2000-01-01..9999-01-01", "outside"),
        ] {
            let e = bad.parse::<TsWindow>().unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn the_common_utc_form_reads_as_chrono_reads_it() {
        let chrono = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|d| d.timestamp_millis());
        for s in [
            "2026-11-02T14:03:07.123Z",
            "2026-11-02T14:03:07Z",
            "2026-11-02T14:03:07.1Z",
            "2026-11-02T14:03:07.123456789Z",
            "1969-12-31T23:59:59.999Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
            "2024-02-29T00:00:00Z",
            "2000-02-29T12:00:00Z",
        ] {
            assert_eq!(utc_millis(s.as_bytes()), chrono(s), "{s}");
            assert!(utc_millis(s.as_bytes()).is_some(), "{s}");
        }
        // Not the common form, or not a date: left to chrono, which decides.
        for s in [
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-02T24:00:00Z",
            "2026-11-02T23:59:60Z",
            "2026-11-02t14:03:07Z",
            "2026-11-02T14:03:07.Z",
            "2026-11-02T14:03:07.1234567891Z",
            "2026-11-02T14:03:07+00:00",
            "2026-11-02T14:03:0xZ",
        ] {
            assert_eq!(utc_millis(s.as_bytes()), None, "{s}");
        }
        assert_eq!(parse_ts("2026-11-02T23:59:60Z"), chrono("2026-11-02T23:59:60Z"));
    }

    proptest::proptest! {
        /// Whatever the fast path reads, chrono reads to the same instant.
        #[test]
        fn the_fast_path_never_disagrees_with_chrono(
            s in "[0-9]{4}-[01][0-9]-[0-3][0-9][T ][012][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,11})?[Zz]?"
        ) {
            let chrono = DateTime::parse_from_rfc3339(&s).ok().map(|d| d.timestamp_millis());
            if let Some(ms) = utc_millis(s.as_bytes()) {
                proptest::prop_assert_eq!(Some(ms), chrono, "{}", s);
            }
            if chrono.is_some() {
                proptest::prop_assert_eq!(parse_ts(&s), chrono, "{}", s);
            }
        }
    }
}
