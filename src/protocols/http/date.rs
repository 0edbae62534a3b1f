//! HTTP dates (RFC 9110 §5.6.7): `Date` and `Last-Modified` values out,
//! `If-Modified-Since` values in.
//!
//! [`format_http_date`] writes the preferred IMF-fixdate form,
//! `Sun, 06 Nov 1994 08:49:37 GMT`. [`parse_http_date`] reads it and the two
//! obsolete forms every recipient must accept (RFC 9110 §5.6.7): RFC 850
//! (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
//!
//! Always true:
//! - formatting gives exactly 29 ASCII bytes in IMF-fixdate form; times are
//!   truncated to whole seconds (rounded down, also before 1970) and clamped to
//!   years 0000 through 9999, the ones a 4-digit year can name;
//! - parsing never panics and accepts only the grammar: names are
//!   case-sensitive (`GMT`, `Nov`, as RFC 9110 §5.6.7 says), fields have their
//!   fixed widths, the day must exist in its month (leap years follow the
//!   Gregorian rules: `29 Feb 1900` and `29 Feb 2100` are refused, `29 Feb
//!   2000` is not), hours run to 23 and minutes to 59. Leading and trailing
//!   whitespace is ignored;
//! - a second of 60 (a leap second, allowed by the grammar) is read as the
//!   first second of the next minute; the day name is not checked against the
//!   date (the RFC does not ask for it);
//! - an RFC 850 two-digit year is put in the century that places it at most 50
//!   years after the current year and less than 50 before it (RFC 9110 §5.6.7).
//!
//! The calendar arithmetic (days since 1970-01-01 to and from a proleptic
//! Gregorian year, month and day) follows Howard Hinnant's `days_from_civil`
//! and `civil_from_days` algorithms: 400-year eras of 146097 days, with years
//! counted from March so that the leap day ends each year.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECS_PER_DAY: i64 = 86_400;
const SHORT_DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const LONG_DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// 0000-01-01T00:00:00Z, the earliest time formatted.
const MIN_SECS: i64 = days_from_civil(0, 1, 1) * SECS_PER_DAY;
/// 9999-12-31T23:59:59Z, the latest time formatted.
const MAX_SECS: i64 = days_from_civil(10_000, 1, 1) * SECS_PER_DAY - 1;

/// `t` as an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`: 29 bytes,
/// whole seconds, clamped to years 0000–9999.
pub fn format_http_date(t: SystemTime) -> String {
    let secs = unix_seconds(t).clamp(MIN_SECS, MAX_SECS);
    let days = secs.div_euclid(SECS_PER_DAY);
    let of_day = secs.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = SHORT_DAYS
        .get((days + 4).rem_euclid(7) as usize)
        .unwrap_or(&"Sun");
    let month = MONTHS.get(month.saturating_sub(1) as usize).unwrap_or(&"Jan");
    format!(
        "{weekday}, {day:02} {month} {year:04} {:02}:{:02}:{:02} GMT",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The time an HTTP date names, in any of the three forms of RFC 9110
/// §5.6.7; None for anything else. See the module docs for what is accepted.
pub fn parse_http_date(s: &[u8]) -> Option<SystemTime> {
    let now_year = civil_from_days(unix_seconds(SystemTime::now()).div_euclid(SECS_PER_DAY)).0;
    parse_at(s, now_year)
}

/// [`parse_http_date`] with the current year given, for RFC 850 dates.
fn parse_at(s: &[u8], now_year: i64) -> Option<SystemTime> {
    let s = trim_ows(s);
    let fields = imf_fixdate(s)
        .or_else(|| rfc850(s, now_year))
        .or_else(|| asctime(s))?;
    fields.to_system_time()
}

/// The fields of a parsed date, not yet checked.
struct Fields {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Fields {
    fn to_system_time(&self) -> Option<SystemTime> {
        let valid = (1..=12).contains(&self.month)
            && (1..=days_in_month(self.year, self.month)).contains(&self.day)
            && self.hour <= 23
            && self.minute <= 59
            && self.second <= 60;
        if !valid {
            return None;
        }
        let secs = days_from_civil(self.year, self.month, self.day) * SECS_PER_DAY
            + i64::from(self.hour * 3600 + self.minute * 60 + self.second);
        match u64::try_from(secs) {
            Ok(after) => UNIX_EPOCH.checked_add(Duration::from_secs(after)),
            Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs())),
        }
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(s: &[u8]) -> Option<Fields> {
    let mut c = Cursor(s);
    c.one_of(&SHORT_DAYS)?;
    c.lit(b", ")?;
    let day = c.digits(2)?;
    c.lit(b" ")?;
    let month = c.month()?;
    c.lit(b" ")?;
    let year = i64::from(c.digits(4)?);
    c.lit(b" ")?;
    let (hour, minute, second) = c.time()?;
    c.lit(b" GMT")?;
    c.end()?;
    Some(Fields {
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn rfc850(s: &[u8], now_year: i64) -> Option<Fields> {
    let mut c = Cursor(s);
    c.one_of(&LONG_DAYS)?;
    c.lit(b", ")?;
    let day = c.digits(2)?;
    c.lit(b"-")?;
    let month = c.month()?;
    c.lit(b"-")?;
    let yy = i64::from(c.digits(2)?);
    c.lit(b" ")?;
    let (hour, minute, second) = c.time()?;
    c.lit(b" GMT")?;
    c.end()?;
    let mut year = now_year - now_year.rem_euclid(100) + yy;
    if year > now_year + 50 {
        year -= 100;
    } else if year <= now_year - 50 {
        year += 100;
    }
    Some(Fields {
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

/// `Sun Nov  6 08:49:37 1994`
fn asctime(s: &[u8]) -> Option<Fields> {
    let mut c = Cursor(s);
    c.one_of(&SHORT_DAYS)?;
    c.lit(b" ")?;
    let month = c.month()?;
    c.lit(b" ")?;
    let day = if c.lit(b" ").is_some() {
        c.digits(1)?
    } else {
        c.digits(2)?
    };
    c.lit(b" ")?;
    let (hour, minute, second) = c.time()?;
    c.lit(b" ")?;
    let year = i64::from(c.digits(4)?);
    c.end()?;
    Some(Fields {
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

/// Reads a date from the front; every method consumes only on success.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn lit(&mut self, expected: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(expected)?;
        Some(())
    }

    /// Index of the name in `names` that the input starts with.
    fn one_of(&mut self, names: &[&str]) -> Option<usize> {
        let i = names
            .iter()
            .position(|name| self.0.starts_with(name.as_bytes()))?;
        self.lit(names.get(i)?.as_bytes())?;
        Some(i)
    }

    /// Month number, 1 to 12.
    fn month(&mut self) -> Option<u32> {
        let i = self.one_of(&MONTHS)?;
        u32::try_from(i + 1).ok()
    }

    /// Exactly `n` ASCII digits (n at most 4).
    fn digits(&mut self, n: usize) -> Option<u32> {
        let digits = self.0.get(..n)?;
        let value = digits
            .iter()
            .try_fold(0u32, |acc, &b| Some(acc * 10 + char::from(b).to_digit(10)?))?;
        self.0 = self.0.get(n..)?;
        Some(value)
    }

    /// `HH:MM:SS`
    fn time(&mut self) -> Option<(u32, u32, u32)> {
        let hour = self.digits(2)?;
        self.lit(b":")?;
        let minute = self.digits(2)?;
        self.lit(b":")?;
        Some((hour, minute, self.digits(2)?))
    }

    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

/// Seconds since 1970-01-01T00:00:00Z, rounded down, saturating.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let d = before.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -whole - i64::from(d.subsec_nanos() > 0)
        }
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (month 1–12,
/// day 1–31; no overflow for |year| below 10^12).
const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (month as i64, day as i64);
    // Years start on 1 March, so February's leap day is the year's last.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400; // [0, 399]
    let month_from_march = (month + 9) % 12; // March = 0
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1; // [0, 365]
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year; // [0, 146096]
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian (year, month 1–12, day 1–31) of the day `days`
/// after 1970-01-01; the inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097; // [0, 146096]
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1; // [1, 31]
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in small ranges, as noted, so the casts are exact.
    (year, month as u32, day as u32)
}

/// `s` without leading and trailing spaces and tabs (OWS).
fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> SystemTime {
        match u64::try_from(secs) {
            Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
            Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
        }
    }

    fn parse(s: &str) -> Option<SystemTime> {
        parse_at(s.as_bytes(), 2025)
    }

    /// Known vectors, checked against `date -u -d @SECS`.
    const VECTORS: [(i64, &str); 12] = [
        (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (-1, "Wed, 31 Dec 1969 23:59:59 GMT"),
        (2_147_483_647, "Tue, 19 Jan 2038 03:14:07 GMT"),
        (2_147_483_648, "Tue, 19 Jan 2038 03:14:08 GMT"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
        (1_709_164_800, "Thu, 29 Feb 2024 00:00:00 GMT"),
        (1_483_228_800, "Sun, 01 Jan 2017 00:00:00 GMT"),
        (4_102_444_800, "Fri, 01 Jan 2100 00:00:00 GMT"),
        (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
        (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
        (-62_167_219_200, "Sat, 01 Jan 0000 00:00:00 GMT"),
    ];

    #[test]
    fn known_vectors_format_and_parse() {
        for (secs, text) in VECTORS {
            assert_eq!(format_http_date(at(secs)), text, "{secs}");
            assert_eq!(parse(text), Some(at(secs)), "{text}");
        }
    }

    #[test]
    fn the_three_forms_of_the_rfc_example_are_the_same_time() {
        let t = Some(at(784_111_777));
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), t);
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), t);
        assert_eq!(parse("Sun Nov  6 08:49:37 1994"), t);
        assert_eq!(parse("Sun Nov 06 08:49:37 1994"), t);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), t);
    }

    #[test]
    fn formatting_truncates_to_whole_seconds_downwards() {
        assert_eq!(
            format_http_date(at(10) + Duration::from_millis(999)),
            format_http_date(at(10))
        );
        assert_eq!(
            format_http_date(UNIX_EPOCH - Duration::from_millis(500)),
            "Wed, 31 Dec 1969 23:59:59 GMT"
        );
        assert_eq!(format_http_date(UNIX_EPOCH).len(), 29);
    }

    #[test]
    fn formatting_clamps_to_four_digit_years() {
        assert_eq!(
            format_http_date(at(1_000_000_000_000)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
        assert_eq!(
            format_http_date(at(-100_000_000_000)),
            "Sat, 01 Jan 0000 00:00:00 GMT"
        );
    }

    #[test]
    fn leap_days_exist_only_in_gregorian_leap_years() {
        assert!(parse("Tue, 29 Feb 2000 00:00:00 GMT").is_some());
        assert!(parse("Thu, 29 Feb 2024 12:00:00 GMT").is_some());
        assert!(parse("Mon, 29 Feb 2400 00:00:00 GMT").is_some());
        assert_eq!(parse("Thu, 29 Feb 2001 00:00:00 GMT"), None);
        assert_eq!(parse("Thu, 29 Feb 1900 00:00:00 GMT"), None);
        assert_eq!(parse("Mon, 29 Feb 2100 00:00:00 GMT"), None);
        assert_eq!(parse("Sun Feb 29 00:00:00 2100"), None);
        assert_eq!(
            format_http_date(at(951_782_400 + SECS_PER_DAY)),
            "Wed, 01 Mar 2000 00:00:00 GMT"
        );
    }

    #[test]
    fn dates_after_2038_and_before_1970_work() {
        assert_eq!(parse("Tue, 19 Jan 2038 03:14:08 GMT"), Some(at(1 << 31)));
        assert_eq!(parse("Sun, 07 Feb 2106 06:28:16 GMT"), Some(at(1 << 32)));
        assert_eq!(format_http_date(at(1 << 32)), "Sun, 07 Feb 2106 06:28:16 GMT");
        assert_eq!(parse("Mon, 01 Jan 1900 00:00:00 GMT"), Some(at(-2_208_988_800)));
        assert_eq!(
            format_http_date(at(-2_208_988_800)),
            "Mon, 01 Jan 1900 00:00:00 GMT"
        );
    }

    #[test]
    fn format_and_parse_round_trip() {
        let mut state = 0x853c_49e6_748f_ea9b_u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let secs = (state % (MAX_SECS - MIN_SECS + 1) as u64) as i64 + MIN_SECS;
            let text = format_http_date(at(secs));
            assert_eq!(text.len(), 29, "{text}");
            assert_eq!(parse(&text), Some(at(secs)), "{text}");
        }
    }

    #[test]
    fn day_counts_and_dates_are_inverse_and_consecutive() {
        let mut previous = civil_from_days(-800_000);
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!(d <= days_in_month(y, m));
            if days > -800_000 {
                let next_day = (previous.0, previous.1, previous.2 + 1);
                let next_month = (previous.0, previous.1 + 1, 1);
                assert!(
                    [next_day, next_month, (previous.0 + 1, 1, 1)].contains(&(y, m, d)),
                    "{days}"
                );
            }
            previous = (y, m, d);
        }
    }

    #[test]
    fn rfc850_two_digit_years_land_within_fifty_years_of_now() {
        let year_of = |s: &str, now: i64| {
            let secs = unix_seconds(parse_at(s.as_bytes(), now).expect(s));
            civil_from_days(secs.div_euclid(SECS_PER_DAY)).0
        };
        assert_eq!(year_of("Sunday, 06-Nov-94 08:49:37 GMT", 2025), 1994);
        assert_eq!(year_of("Sunday, 06-Nov-30 08:49:37 GMT", 2025), 2030);
        assert_eq!(year_of("Sunday, 06-Nov-75 08:49:37 GMT", 2025), 2075);
        assert_eq!(year_of("Sunday, 06-Nov-76 08:49:37 GMT", 2025), 1976);
        assert_eq!(year_of("Sunday, 06-Nov-10 08:49:37 GMT", 2099), 2110);
        assert_eq!(year_of("Sunday, 06-Nov-50 08:49:37 GMT", 2099), 2050);
        assert_eq!(year_of("Sunday, 06-Nov-49 08:49:37 GMT", 2099), 2149);
    }

    #[test]
    fn a_leap_second_is_the_next_minute() {
        assert_eq!(parse("Sat, 31 Dec 2016 23:59:60 GMT"), Some(at(1_483_228_800)));
        assert_eq!(parse("Sat, 31 Dec 2016 23:59:61 GMT"), None);
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert_eq!(
            parse(" \tSun, 06 Nov 1994 08:49:37 GMT \t"),
            Some(at(784_111_777))
        );
    }

    #[test]
    fn garbage_and_near_misses_are_refused() {
        for text in [
            "",
            "garbage",
            "784111777",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 gmt",
            "Sun, 06 Nov 1994 08:49:37 GMT+1",
            "Sun, 06 Nov 1994 08:49:37",
            "sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "Sun, 06 November 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun,  06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 32 Jan 1994 08:49:37 GMT",
            "Sun, +6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT junk",
            "Sunday, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
            "Sun Nov  6 08:49:37 94",
            "Sun Nov  6 08:49:37 1994 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT\u{0}",
            "Sun, 06 Nov \u{661}994 08:49:37 GMT",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
        assert_eq!(parse_at(b"Sun, 06 Nov 1994 08:49:37 GM\xff", 2025), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let base = b"Sunday, 06-Nov-94 08:49:37 GMT Sun Nov  6 1994";
        for _ in 0..50_000 {
            let mut buf: Vec<u8> = base.to_vec();
            for _ in 0..(next() % 4) {
                let i = (next() % buf.len() as u64) as usize;
                buf[i] = (next() % 256) as u8;
            }
            let start = (next() % buf.len() as u64) as usize;
            let len = (next() % 33) as usize;
            let _ = parse_at(
                buf.get(start..(start + len).min(buf.len())).unwrap_or_default(),
                2025,
            );
        }
    }
}
