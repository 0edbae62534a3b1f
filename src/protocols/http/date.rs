//! HTTP dates (RFC 9110 §5.6.7): `Date` and `Last-Modified` values out,
//! `If-Modified-Since` values in, through the `httpdate` crate (the one
//! hyper uses).
//!
//! [`format_http_date`] writes the preferred IMF-fixdate form,
//! `Sun, 06 Nov 1994 08:49:37 GMT`. [`parse_http_date`] reads it and the two
//! obsolete forms every recipient must accept (RFC 9110 §5.6.7): RFC 850
//! (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
//!
//! Always true:
//! - formatting gives exactly 29 ASCII bytes in IMF-fixdate form; times are
//!   truncated to whole seconds (rounded down) and clamped to
//!   1970-01-01T00:00:00Z through 9999-12-31T23:59:59Z, the range an HTTP
//!   date can name here: a file last modified before 1970 is shown as
//!   modified at the epoch;
//! - parsing never panics and accepts only the grammar: names are
//!   case-sensitive (`GMT`, `Nov`, as RFC 9110 §5.6.7 says), fields have
//!   their fixed widths, the day must exist in its month (leap years follow
//!   the Gregorian rules), hours run to 23, minutes and seconds to 59, years
//!   from 1970 to 9999, and the day name must be the date's. Leading and
//!   trailing whitespace is ignored; anything else, including bytes that
//!   are not ASCII, is refused with None.
//!
//! Where this is stricter than the grammar, a field is refused rather than
//! read a second way, and RFC 9110 §13.1 has the server ignore a condition
//! whose date does not parse, so the file is sent in full:
//! - a leap second (`23:59:60`) is refused;
//! - a day name that is not the date's (`Mon, 06 Nov 1994`) is refused;
//! - an RFC 850 two-digit year is put in 1970–2069 (`70` to `99` are
//!   19xx, `00` to `69` are 20xx), a fixed window rather than RFC 9110's
//!   window of 50 years around the current year. They differ only for an
//!   obsolete form naming a date more than 43 years ahead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z, the latest time formatted.
const LATEST: Duration = Duration::from_secs(253_402_300_799);

/// `t` as an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`: 29 bytes,
/// whole seconds, clamped to 1970 through 9999.
pub fn format_http_date(t: SystemTime) -> String {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    httpdate::fmt_http_date(UNIX_EPOCH + since_epoch.min(LATEST))
}

/// The time an HTTP date names, in any of the three forms of RFC 9110
/// §5.6.7; None for anything else. See the module docs for what is accepted.
pub fn parse_http_date(s: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(s).ok()?;
    httpdate::parse_http_date(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn parse(s: &str) -> Option<SystemTime> {
        parse_http_date(s.as_bytes())
    }

    /// Known vectors, checked against `date -u -d @SECS`.
    const VECTORS: [(u64, &str); 10] = [
        (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (2_147_483_647, "Tue, 19 Jan 2038 03:14:07 GMT"),
        (2_147_483_648, "Tue, 19 Jan 2038 03:14:08 GMT"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
        (1_709_164_800, "Thu, 29 Feb 2024 00:00:00 GMT"),
        (1_483_228_800, "Sun, 01 Jan 2017 00:00:00 GMT"),
        (4_102_444_800, "Fri, 01 Jan 2100 00:00:00 GMT"),
        (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
        (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
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
    }

    #[test]
    fn formatting_truncates_to_whole_seconds_downwards() {
        assert_eq!(
            format_http_date(at(10) + Duration::from_millis(999)),
            format_http_date(at(10))
        );
        assert_eq!(format_http_date(UNIX_EPOCH).len(), 29);
    }

    #[test]
    fn formatting_clamps_to_the_epoch_and_year_9999_without_panicking() {
        assert_eq!(
            format_http_date(at(1_000_000_000_000)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
        assert_eq!(
            format_http_date(at(253_402_300_800)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
        for before in [1, 500, 2_208_988_800] {
            assert_eq!(
                format_http_date(UNIX_EPOCH - Duration::from_millis(before)),
                "Thu, 01 Jan 1970 00:00:00 GMT",
                "{before} ms before the epoch"
            );
        }
    }

    #[test]
    fn leap_days_exist_only_in_gregorian_leap_years() {
        assert!(parse("Tue, 29 Feb 2000 00:00:00 GMT").is_some());
        assert!(parse("Thu, 29 Feb 2024 12:00:00 GMT").is_some());
        assert!(parse("Tue, 29 Feb 2400 00:00:00 GMT").is_some());
        assert_eq!(parse("Thu, 29 Feb 2001 00:00:00 GMT"), None);
        assert_eq!(parse("Mon, 29 Feb 2100 00:00:00 GMT"), None);
        assert_eq!(parse("Sun Feb 29 00:00:00 2100"), None);
        assert_eq!(
            format_http_date(at(951_782_400 + 86_400)),
            "Wed, 01 Mar 2000 00:00:00 GMT"
        );
    }

    #[test]
    fn dates_after_2038_work_and_dates_before_1970_are_refused() {
        assert_eq!(parse("Tue, 19 Jan 2038 03:14:08 GMT"), Some(at(1 << 31)));
        assert_eq!(parse("Sun, 07 Feb 2106 06:28:16 GMT"), Some(at(1 << 32)));
        assert_eq!(format_http_date(at(1 << 32)), "Sun, 07 Feb 2106 06:28:16 GMT");
        assert_eq!(parse("Mon, 01 Jan 1900 00:00:00 GMT"), None);
        assert_eq!(parse("Wed, 31 Dec 1969 23:59:59 GMT"), None);
    }

    #[test]
    fn format_and_parse_round_trip() {
        let mut state = 0x853c_49e6_748f_ea9b_u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let secs = state % (LATEST.as_secs() + 1);
            let text = format_http_date(at(secs));
            assert_eq!(text.len(), 29, "{text}");
            assert_eq!(parse(&text), Some(at(secs)), "{text}");
        }
    }

    #[test]
    fn rfc850_two_digit_years_fall_in_1970_to_2069() {
        let t = |s: &str| parse(s).expect(s);
        assert_eq!(t("Sunday, 06-Nov-94 08:49:37 GMT"), at(784_111_777));
        assert_eq!(t("Thursday, 01-Jan-70 00:00:00 GMT"), at(0));
        assert_eq!(
            format_http_date(t("Tuesday, 31-Dec-69 23:59:59 GMT")),
            "Tue, 31 Dec 2069 23:59:59 GMT"
        );
        assert_eq!(
            format_http_date(t("Saturday, 01-Jan-00 00:00:00 GMT")),
            "Sat, 01 Jan 2000 00:00:00 GMT"
        );
    }

    #[test]
    fn a_leap_second_and_a_wrong_day_name_are_refused() {
        assert_eq!(parse("Sat, 31 Dec 2016 23:59:60 GMT"), None);
        assert_eq!(parse("Mon, 06 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse("Monday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse("Mon Nov  6 08:49:37 1994"), None);
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
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GM\xff"), None);
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
            let _ = parse_http_date(buf.get(start..(start + len).min(buf.len())).unwrap_or_default());
        }
    }
}
