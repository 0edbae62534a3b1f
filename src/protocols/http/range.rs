//! Single byte ranges (RFC 9110 §14): what to send for a `Range` field, and
//! the `Content-Range` values that describe it.
//!
//! [`parse_range`] reads `Range: bytes=...` (RFC 9110 §14.1.1, §14.2) against
//! the length of the file about to be sent and answers one of:
//! - [`RangeOutcome::Partial`]: a 206 with that span (RFC 9110 §15.3.7);
//! - [`RangeOutcome::Unsatisfiable`]: a 416 with `Content-Range: bytes */len`
//!   (RFC 9110 §15.5.17);
//! - [`RangeOutcome::Full`]: ignore the field and send the whole file with 200,
//!   as a server MAY for any `Range` (RFC 9110 §14.2).
//!
//! Always true:
//! - a `Partial` span lies inside the file: `start <= end_inclusive < len`;
//! - never panics; numbers too large for a u64 count as u64::MAX (a position
//!   that far is past any file, and a suffix that long covers it all).
//!
//! The choices:
//! - only a single range is served: a valid range-set of two or more
//!   ranges (`bytes=0-1,5-6`) gets `Full`, as does any syntax error, a unit
//!   other than `bytes` (compared case-insensitively, RFC 9110 §14.1), and an
//!   int-range whose last-pos is below its first-pos (invalid, §14.1.1);
//! - `bytes=a-b` ends at `min(b, len - 1)`; `bytes=a-` runs to the end;
//!   `bytes=-n` is the last `n` bytes, the whole file when `n >= len`
//!   (§14.1.2); `a >= len` and `-0` are unsatisfiable (§14.1.1);
//! - a zero-length file has no satisfiable int-range, so those are
//!   `Unsatisfiable`; a non-zero suffix is satisfiable by the RFC (§14.1.1),
//!   but no byte can be named in a `Content-Range` for it, so it gets `Full`
//!   (200 with an empty body);
//! - whitespace (OWS, RFC 9110 §5.6.3) is allowed around the field value and
//!   around each list element, and empty list elements are skipped (RFC 9110
//!   §5.6.1.2); none is allowed inside a range-spec (`bytes=0 - 5` is `Full`).
//!
//! This grammar is small and its choices are the server's, so it is written
//! here rather than taken from a crate: `http-range-header`, the one in use
//! elsewhere, returns one error type for both a field to ignore (200) and a
//! range to refuse (416), compares the unit case-sensitively, refuses the
//! whitespace and leading zeros RFC 9110 allows, and refuses a suffix longer
//! than the file where the RFC serves the whole file.

/// What to send for a `Range` field, given the file's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No usable range: send the whole file, 200.
    Full,
    /// Send bytes `start..=end_inclusive`, 206, with [`content_range`].
    Partial {
        /// Offset of the first byte sent.
        start: u64,
        /// Offset of the last byte sent; below the file's length.
        end_inclusive: u64,
    },
    /// No byte of the file is in the range: 416, with [`content_range_unsatisfied`].
    Unsatisfiable,
}

impl RangeOutcome {
    /// The `Content-Range` value for this outcome on a file of `len` bytes:
    /// none for `Full`.
    pub fn content_range(&self, len: u64) -> Option<String> {
        match *self {
            RangeOutcome::Full => None,
            RangeOutcome::Partial { start, end_inclusive } => Some(content_range(start, end_inclusive, len)),
            RangeOutcome::Unsatisfiable => Some(content_range_unsatisfied(len)),
        }
    }
}

/// Decides what a `Range` field value `header` asks of a file of `len` bytes;
/// see the module docs.
pub fn parse_range(header: &[u8], len: u64) -> RangeOutcome {
    let value = trim_ows(header);
    let Some(eq) = value.iter().position(|&b| b == b'=') else {
        return RangeOutcome::Full;
    };
    let (unit, set) = value.split_at(eq);
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return RangeOutcome::Full;
    }
    let set = set.get(1..).unwrap_or_default();
    let mut specs = set.split(|&b| b == b',').map(trim_ows).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return RangeOutcome::Full;
    };
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return RangeOutcome::Full;
    };
    let (first, last) = spec.split_at(dash);
    let last = last.get(1..).unwrap_or_default();
    match (first.is_empty(), number(first), number(last)) {
        // suffix-range: the last `n` bytes.
        (true, _, Some(n)) => {
            if n == 0 {
                RangeOutcome::Unsatisfiable
            } else if len == 0 {
                RangeOutcome::Full
            } else {
                RangeOutcome::Partial {
                    start: len.saturating_sub(n),
                    end_inclusive: len - 1,
                }
            }
        }
        // int-range without last-pos: to the end.
        (false, Some(start), None) if last.is_empty() => from(start, u64::MAX, len),
        // int-range with both.
        (false, Some(start), Some(end)) if start <= end => from(start, end, len),
        _ => RangeOutcome::Full,
    }
}

/// A valid int-range `start-end` against a file of `len` bytes.
fn from(start: u64, end: u64, len: u64) -> RangeOutcome {
    if start >= len {
        return RangeOutcome::Unsatisfiable;
    }
    RangeOutcome::Partial {
        start,
        end_inclusive: end.min(len - 1),
    }
}

/// The `Content-Range` value of a 206: `bytes start-end/len` (RFC 9110 §14.4).
pub fn content_range(start: u64, end_inclusive: u64, len: u64) -> String {
    format!("bytes {start}-{end_inclusive}/{len}")
}

/// The `Content-Range` value of a 416: `bytes */len` (RFC 9110 §14.4).
pub fn content_range_unsatisfied(len: u64) -> String {
    format!("bytes */{len}")
}

/// `1*DIGIT` as a u64, saturating; None if empty or not all digits.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let digit = char::from(b).to_digit(10)?;
        Some(acc.saturating_mul(10).saturating_add(u64::from(digit)))
    })
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
    use super::RangeOutcome::{Full, Partial, Unsatisfiable};
    use super::*;

    fn range(header: &str, len: u64) -> RangeOutcome {
        parse_range(header.as_bytes(), len)
    }

    fn span(start: u64, end_inclusive: u64) -> RangeOutcome {
        Partial { start, end_inclusive }
    }

    #[test]
    fn first_and_last_pos_give_that_span() {
        assert_eq!(range("bytes=0-0", 10), span(0, 0));
        assert_eq!(range("bytes=2-5", 10), span(2, 5));
        assert_eq!(range("bytes=0-9", 10), span(0, 9));
        assert_eq!(range("bytes=9-9", 10), span(9, 9));
    }

    #[test]
    fn last_pos_past_the_end_is_clamped() {
        assert_eq!(range("bytes=5-10", 10), span(5, 9));
        assert_eq!(range("bytes=0-1000000", 10), span(0, 9));
        assert_eq!(range("bytes=3-99999999999999999999999999", 10), span(3, 9));
    }

    #[test]
    fn open_ended_range_runs_to_the_end() {
        assert_eq!(range("bytes=0-", 10), span(0, 9));
        assert_eq!(range("bytes=7-", 10), span(7, 9));
        assert_eq!(range("bytes=0-", u64::MAX), span(0, u64::MAX - 1));
    }

    #[test]
    fn suffix_range_gives_the_last_bytes_or_the_whole_file() {
        assert_eq!(range("bytes=-1", 10), span(9, 9));
        assert_eq!(range("bytes=-4", 10), span(6, 9));
        assert_eq!(range("bytes=-10", 10), span(0, 9));
        assert_eq!(range("bytes=-11", 10), span(0, 9));
        assert_eq!(range("bytes=-99999999999999999999999999", 10), span(0, 9));
    }

    #[test]
    fn zero_suffix_and_first_pos_at_or_past_the_end_are_unsatisfiable() {
        assert_eq!(range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(range("bytes=10-", 10), Unsatisfiable);
        assert_eq!(range("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(range("bytes=11-11", 10), Unsatisfiable);
        assert_eq!(range("bytes=99999999999999999999999999-", 10), Unsatisfiable);
    }

    #[test]
    fn last_pos_below_first_pos_is_ignored() {
        assert_eq!(range("bytes=5-2", 10), Full);
        assert_eq!(range("bytes=20-15", 10), Full);
    }

    #[test]
    fn zero_length_file_satisfies_no_int_range_and_ignores_a_suffix() {
        assert_eq!(range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(range("bytes=-0", 0), Unsatisfiable);
        assert_eq!(range("bytes=-5", 0), Full);
        assert_eq!(range("bytes=3-1", 0), Full);
        assert_eq!(range("items=0-0", 0), Full);
    }

    #[test]
    fn unit_is_case_insensitive_and_other_units_are_ignored() {
        assert_eq!(range("Bytes=1-2", 10), span(1, 2));
        assert_eq!(range("BYTES=1-2", 10), span(1, 2));
        assert_eq!(range("items=1-2", 10), Full);
        assert_eq!(range("byte=1-2", 10), Full);
        assert_eq!(range("=1-2", 10), Full);
    }

    #[test]
    fn multiple_ranges_are_served_whole() {
        assert_eq!(range("bytes=0-1,5-6", 10), Full);
        assert_eq!(range("bytes=0-1, 5-6", 10), Full);
        assert_eq!(range("bytes=-1,0-0", 10), Full);
        assert_eq!(range("bytes=20-30,40-50", 10), Full);
    }

    #[test]
    fn whitespace_around_the_value_and_list_elements_and_empty_elements_are_tolerated() {
        assert_eq!(range(" \tbytes=1-2 \t", 10), span(1, 2));
        assert_eq!(range("bytes= 1-2 ", 10), span(1, 2));
        assert_eq!(range("bytes=, ,1-2,", 10), span(1, 2));
    }

    #[test]
    fn syntax_errors_are_ignored() {
        for header in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=-",
            "bytes=abc",
            "bytes=1",
            "bytes=1-2-3",
            "bytes=--5",
            "bytes=+1-2",
            "bytes=0x1-2",
            "bytes=1-2a",
            "bytes=0 - 5",
            "bytes =0-5",
            "bytes=\u{661}-2",
        ] {
            assert_eq!(range(header, 10), Full, "{header:?}");
        }
        assert_eq!(parse_range(b"bytes=\xff-1", 10), Full);
    }

    #[test]
    fn content_range_values_are_formatted() {
        assert_eq!(content_range(0, 99, 1000), "bytes 0-99/1000");
        assert_eq!(content_range_unsatisfied(1000), "bytes */1000");
        assert_eq!(span(5, 9).content_range(10).as_deref(), Some("bytes 5-9/10"));
        assert_eq!(Unsatisfiable.content_range(0).as_deref(), Some("bytes */0"));
        assert_eq!(Full.content_range(10), None);
    }

    #[test]
    fn arbitrary_input_never_panics_and_spans_stay_inside_the_file() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"bytes=-0123456789, \tB\xff";
        for _ in 0..50_000 {
            let n = (next() % 16) as usize;
            let header: Vec<u8> = (0..n)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let len = [0, 1, 2, 10, u64::MAX][(next() % 5) as usize];
            if let Partial { start, end_inclusive } = parse_range(&header, len) {
                assert!(start <= end_inclusive && end_inclusive < len, "{header:?} {len}");
            }
        }
    }
}
