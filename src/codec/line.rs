//! The line framer: newline-terminated frames, with an optional `\r` before
//! the `\n`.
//!
//! This file owns [`decode_line`], the [`Lines`] iterator built on it and
//! [`encode_line`]. What is always true:
//!
//! - A line ends at the first `\n`. Exactly one `\r` directly before that
//!   `\n` is dropped; any other `\r` is part of the line.
//! - The limit counts content bytes only (no `\n`, no dropped `\r`): a line
//!   of exactly `max_len` bytes is accepted, one byte more is [`LineTooLong`].
//! - At most `max_len + 2` bytes of the input are ever looked at, so a huge
//!   buffer without a newline costs no more than a short one.
//! - A returned line borrows from the input; nothing is copied or allocated.
//!
//! A decoded line is the `line` field of [`LineStatus::Complete`]; there is
//! no separate line type.
//!
//! A `\r\n` split across two reads, as `on_data` sees it: the first call
//! consumes nothing, the second gets the same bytes with the new ones
//! appended.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use evloop::codec::{decode_line, encode_line, LineStatus};
//!
//! let first_read = b"PING\r";
//! assert_eq!(decode_line(first_read, 64)?, LineStatus::Partial);
//!
//! let pending = [&first_read[..], b"\nECHO hi\n"].concat();
//! assert_eq!(
//!     decode_line(&pending, 64)?,
//!     LineStatus::Complete { line: b"PING", consumed: 6 }
//! );
//! assert_eq!(
//!     decode_line(&pending[6..], 64)?,
//!     LineStatus::Complete { line: b"ECHO hi", consumed: 8 }
//! );
//!
//! let mut reply = Vec::new();
//! encode_line(&mut reply, b"PONG");
//! assert_eq!(reply, b"PONG\n");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::iter::FusedIterator;

/// The outcome of looking for one line at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum LineStatus<'a> {
    /// A whole line is at the front of the buffer.
    Complete {
        /// The line's bytes without the `\n` and without one `\r` just
        /// before it.
        line: &'a [u8],
        /// How many bytes of the input the line used, terminator included.
        consumed: usize,
    },
    /// No terminator yet and not over the limit: wait for more bytes.
    Partial,
}

/// A line longer than the limit: the peer sent more than `max` content bytes
/// without a newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong {
    /// The limit that was exceeded, in content bytes.
    pub max: usize,
}

impl fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line longer than {} bytes", self.max)
    }
}

impl std::error::Error for LineTooLong {}

/// Looks for one line at the front of `buf`, whose content may be at most
/// `max_len` bytes.
///
/// Returns [`LineStatus::Partial`] while the line may still turn out to fit
/// (this includes `max_len` bytes followed by a lone `\r`, which may be the
/// start of `\r\n`), and [`LineTooLong`] as soon as it cannot.
///
/// ```
/// use evloop::codec::{decode_line, LineStatus, LineTooLong};
///
/// assert_eq!(
///     decode_line(b"PING\r\nrest", 16),
///     Ok(LineStatus::Complete { line: b"PING", consumed: 6 })
/// );
/// assert_eq!(decode_line(b"PIN", 16), Ok(LineStatus::Partial));
/// assert_eq!(decode_line(b"PING PONG", 4), Err(LineTooLong { max: 4 }));
/// ```
pub fn decode_line(buf: &[u8], max_len: usize) -> Result<LineStatus<'_>, LineTooLong> {
    let too_long = LineTooLong { max: max_len };
    let window = &buf[..buf.len().min(max_len.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = strip_cr(&window[..end]);
            if line.len() > max_len {
                return Err(too_long);
            }
            Ok(LineStatus::Complete {
                line,
                consumed: end + 1,
            })
        }
        None if may_still_fit(window, max_len) => Ok(LineStatus::Partial),
        None => Err(too_long),
    }
}

/// Drops one `\r` from the end of `line`, if there is one.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether `window`, which holds no `\n`, can still become a line of at most
/// `max_len` content bytes: it is within the limit, or one byte over with
/// that byte a `\r` that may start `\r\n`.
fn may_still_fit(window: &[u8], max_len: usize) -> bool {
    window.len() <= max_len || (window.len() == max_len.saturating_add(1) && window.ends_with(b"\r"))
}

/// Every complete line at the front of a buffer, in order; made by [`lines`].
///
/// Yields `Ok(line)` for each complete line, then stops at the first partial
/// line, or yields one `Err(LineTooLong)` and stops. [`Lines::consumed`]
/// tells how many bytes the lines returned so far used: the number a handler
/// returns from `on_data`.
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    rest: &'a [u8],
    max_len: usize,
    consumed: usize,
    done: bool,
}

/// Iterates over the complete lines at the front of `buf`, each at most
/// `max_len` content bytes.
///
/// ```
/// use evloop::codec::lines;
///
/// let mut it = lines(b"one\r\ntwo\nthr", 64);
/// assert_eq!(it.next(), Some(Ok(&b"one"[..])));
/// assert_eq!(it.next(), Some(Ok(&b"two"[..])));
/// assert_eq!(it.next(), None); // "thr" waits for its newline
/// assert_eq!(it.consumed(), 9);
/// ```
pub fn lines(buf: &[u8], max_len: usize) -> Lines<'_> {
    Lines {
        rest: buf,
        max_len,
        consumed: 0,
        done: false,
    }
}

impl Lines<'_> {
    /// Bytes used by the complete lines returned so far, terminators
    /// included. An error or a partial line adds nothing.
    pub fn consumed(&self) -> usize {
        self.consumed
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<&'a [u8], LineTooLong>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match decode_line(self.rest, self.max_len) {
            Ok(LineStatus::Complete { line, consumed }) => {
                self.rest = self.rest.get(consumed..).unwrap_or_default();
                self.consumed += consumed;
                Some(Ok(line))
            }
            Ok(LineStatus::Partial) => {
                self.done = true;
                None
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

impl FusedIterator for Lines<'_> {}

/// Appends `line` and a `\n` to `out`.
///
/// `line` is written as given: if it holds a `\n` the peer will read two
/// lines, and if it ends in `\r` the decoder drops that `\r`.
///
/// ```
/// use evloop::codec::encode_line;
///
/// let mut out = Vec::new();
/// encode_line(&mut out, b"hello");
/// assert_eq!(out, b"hello\n");
/// ```
pub fn encode_line(out: &mut Vec<u8>, line: &[u8]) {
    out.reserve(line.len() + 1);
    out.extend_from_slice(line);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected outcome for a complete line.
    fn complete(line: &[u8], consumed: usize) -> Result<LineStatus<'_>, LineTooLong> {
        Ok(LineStatus::Complete { line, consumed })
    }

    /// Decodes the lines of `buf` whole, with the error (if any) last.
    fn decode_all(buf: &[u8], max: usize) -> Vec<Result<Vec<u8>, LineTooLong>> {
        lines(buf, max).map(|r| r.map(<[u8]>::to_vec)).collect()
    }

    /// Feeds `chunks` the way the reactor does: keeps the unconsumed bytes
    /// and appends the next chunk to them. Stops at the first error.
    fn feed(chunks: &[&[u8]], max: usize) -> Vec<Result<Vec<u8>, LineTooLong>> {
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            pending.extend_from_slice(chunk);
            let mut it = lines(&pending, max);
            out.extend(it.by_ref().map(|r| r.map(<[u8]>::to_vec)));
            let used = it.consumed();
            if out.last().is_some_and(Result::is_err) {
                return out;
            }
            pending.drain(..used);
        }
        out
    }

    fn byte_chunks(buf: &[u8]) -> Vec<&[u8]> {
        buf.chunks(1).collect()
    }

    fn ok(lines: &[&[u8]]) -> Vec<Result<Vec<u8>, LineTooLong>> {
        lines.iter().map(|l| Ok(l.to_vec())).collect()
    }

    #[test]
    fn empty_input_is_partial() {
        assert_eq!(decode_line(b"", 10), Ok(LineStatus::Partial));
        assert_eq!(decode_line(b"", 0), Ok(LineStatus::Partial));
        assert!(decode_all(b"", 10).is_empty());
    }

    #[test]
    fn single_line_with_lf_or_crlf_is_complete() {
        let lf = decode_line(b"abc\n", 10);
        assert_eq!(lf, complete(b"abc", 4));
        let crlf = decode_line(b"abc\r\n", 10);
        assert_eq!(crlf, complete(b"abc", 5));
    }

    #[test]
    fn empty_lines_are_complete_and_empty() {
        assert_eq!(decode_line(b"\n", 0), complete(b"", 1));
        assert_eq!(decode_line(b"\r\n", 0), complete(b"", 2));
    }

    #[test]
    fn coalesced_lines_come_out_in_order_and_partial_tail_is_kept() {
        let mut it = lines(b"a\nbb\r\n\nccc", 10);
        let got: Vec<_> = it.by_ref().collect();
        assert_eq!(got, vec![Ok(&b"a"[..]), Ok(&b"bb"[..]), Ok(&b""[..])]);
        assert_eq!(it.consumed(), 7);
        assert_eq!(it.next(), None);
    }

    #[test]
    fn line_split_across_two_buffers() {
        assert_eq!(feed(&[b"hel", b"lo\nworld\n"], 10), ok(&[b"hello", b"world"]));
    }

    #[test]
    fn byte_by_byte_feed_matches_whole_feed() {
        let stream = b"one\r\ntwo\n\nthree\r\r\n a\rb \n";
        let whole = decode_all(stream, 16);
        assert_eq!(whole, ok(&[b"one", b"two", b"", b"three\r", b" a\rb "]));
        assert_eq!(feed(&byte_chunks(stream), 16), whole);
    }

    #[test]
    fn crlf_split_between_buffers_drops_the_cr() {
        assert_eq!(decode_line(b"abc\r", 3), Ok(LineStatus::Partial));
        assert_eq!(feed(&[b"abc\r", b"\n"], 3), ok(&[b"abc"]));
    }

    #[test]
    fn lone_cr_inside_a_line_is_kept() {
        let got = decode_line(b"a\rb\n", 10);
        assert_eq!(got, complete(b"a\rb", 4));
    }

    #[test]
    fn only_one_cr_before_lf_is_dropped() {
        let got = decode_line(b"a\r\r\n", 2);
        assert_eq!(got, complete(b"a\r", 4));
        assert_eq!(decode_line(b"ab\r\r\n", 2), Err(LineTooLong { max: 2 }));
    }

    #[test]
    fn line_of_exactly_max_is_accepted_with_lf_and_crlf() {
        let lf = decode_line(b"abcd\n", 4);
        assert_eq!(lf, complete(b"abcd", 5));
        let crlf = decode_line(b"abcd\r\n", 4);
        assert_eq!(crlf, complete(b"abcd", 6));
        assert_eq!(decode_line(b"abcd", 4), Ok(LineStatus::Partial));
    }

    #[test]
    fn one_byte_over_max_is_rejected_without_waiting_for_newline() {
        let err = Err(LineTooLong { max: 4 });
        assert_eq!(decode_line(b"abcde", 4), err);
        assert_eq!(decode_line(b"abcde\n", 4), err);
        assert_eq!(decode_line(b"abcde\r\n", 4), err);
        assert_eq!(decode_line(b"abcd\rx", 4), err);
        assert_eq!(decode_line(b"\n", 0), complete(b"", 1));
        assert_eq!(decode_line(b"x", 0), Err(LineTooLong { max: 0 }));
    }

    #[test]
    fn too_long_line_fed_byte_by_byte_errors_once_and_stops() {
        let got = feed(&byte_chunks(b"ok\nabcdefgh\nnever\n"), 4);
        assert_eq!(got, vec![Ok(b"ok".to_vec()), Err(LineTooLong { max: 4 })]);
    }

    #[test]
    fn huge_buffer_is_not_scanned_past_the_limit() {
        let mut buf = vec![b'x'; 1 << 20];
        buf.push(b'\n');
        assert_eq!(decode_line(&buf, 8), Err(LineTooLong { max: 8 }));
    }

    #[test]
    fn unlimited_max_does_not_overflow() {
        assert_eq!(decode_line(b"abc", usize::MAX), Ok(LineStatus::Partial));
        let got = decode_line(b"abc\r\n", usize::MAX);
        assert_eq!(got, complete(b"abc", 5));
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let mut out = Vec::new();
        for line in [&b"alpha"[..], b"", b"a\rb"] {
            encode_line(&mut out, line);
        }
        assert_eq!(out, b"alpha\n\na\rb\n");
        assert_eq!(decode_all(&out, 8), ok(&[b"alpha", b"", b"a\rb"]));
    }

    #[test]
    fn error_displays_the_limit() {
        assert_eq!(LineTooLong { max: 7 }.to_string(), "line longer than 7 bytes");
    }

    /// xorshift64: a small deterministic generator, good enough for tests.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// A random line of at most `max` bytes: letters and a few `\r`, never
    /// a `\n` and never ending in `\r` (which the decoder would drop).
    fn random_line(rng: &mut Rng, max: usize) -> Vec<u8> {
        let mut line: Vec<u8> = (0..rng.below(max + 1))
            .map(|_| match rng.below(10) {
                0 => b'\r',
                n => b'a' + n as u8,
            })
            .collect();
        if let Some(last) = line.last_mut().filter(|b| **b == b'\r') {
            *last = b'z';
        }
        line
    }

    #[test]
    fn random_stream_split_at_random_points_decodes_to_what_was_encoded() {
        const MAX: usize = 40;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..500 {
            let line = random_line(&mut rng, MAX);
            encode_line(&mut stream, &line);
            if rng.below(2) == 0 {
                stream.insert(stream.len() - 1, b'\r');
            }
            expected.push(Ok(line));
        }
        let mut chunks = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at((1 + rng.below(3 * MAX)).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        assert_eq!(feed(&chunks, MAX), expected);
        assert_eq!(decode_all(&stream, MAX), expected);
    }
}
