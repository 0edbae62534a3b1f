//! The line framer (`evloop::codec::line`) against its module docs.
//!
//! Input: byte 0 picks `max_len`, byte 1 picks how the stream is split into
//! reads, the rest is the stream. Checked for every input:
//! - `decode_line` agrees with a model written from the docs (a line ends at
//!   the first `\n`, one `\r` before it is dropped, the limit counts content
//!   bytes, a lone trailing `\r` after `max_len` bytes is still `Partial`);
//! - a complete line has no `\n`, is at most `max_len` bytes, borrows from the
//!   input, and `consumed` stays inside the input;
//! - at most `max_len + 2` bytes are looked at: cutting the input there gives
//!   the same answer;
//! - `lines` yields what repeated `decode_line` calls yield, `consumed()` never
//!   exceeds the input, and the iterator stays fused;
//! - feeding the stream in arbitrary reads, the way the reactor does, yields
//!   the same lines (and error) as feeding it whole;
//! - `encode_line` then decoding gives the lines back (less one trailing
//!   `\r`, which the docs say the decoder drops).
#![no_main]

use evloop::codec::line::{decode_line, encode_line, lines, LineStatus, LineTooLong};
use evloop_fuzz::split;
use libfuzzer_sys::fuzz_target;

type Decoded = Vec<Result<Vec<u8>, LineTooLong>>;

fuzz_target!(|data: &[u8]| {
    let (max_len, seed, stream) = match data {
        [m, s, rest @ ..] => (pick_max(*m), *s, rest),
        _ => return,
    };
    check_decode_line(stream, max_len);
    check_lines(stream, max_len);
    assert_eq!(
        feed(&split(stream, seed), max_len),
        decode_all(stream, max_len),
        "split feed differs from whole feed"
    );
    check_round_trip(stream);
});

/// Small limits (so that inputs reach them), plus 1000 and `usize::MAX`.
fn pick_max(b: u8) -> usize {
    match b {
        0xFF => usize::MAX,
        0xF0..=0xFE => 1000,
        n => usize::from(n & 0x3F),
    }
}

/// What the docs say `decode_line` returns: `Ok(Some((line, consumed)))`
/// for a complete line, `Ok(None)` for partial.
fn model(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, LineTooLong> {
    let too_long = Err(LineTooLong { max });
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let raw = &buf[..end];
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line.len() > max {
                too_long
            } else {
                Ok(Some((line, end + 1)))
            }
        }
        None => {
            // A trailing `\r` may be the start of `\r\n`: not content yet.
            let content = buf.len() - usize::from(buf.ends_with(b"\r"));
            if content <= max {
                Ok(None)
            } else {
                too_long
            }
        }
    }
}

fn check_decode_line(buf: &[u8], max: usize) {
    let got = decode_line(buf, max);
    let expected = model(buf, max);
    match (&got, &expected) {
        (Ok(LineStatus::Complete { line, consumed }), Ok(Some((want, want_consumed)))) => {
            assert_eq!((*line, *consumed), (*want, *want_consumed));
            assert!(*consumed >= 1 && *consumed <= buf.len(), "consumed out of bounds");
            assert_eq!(buf[*consumed - 1], b'\n', "a line ends with its newline");
            assert!(!line.contains(&b'\n'), "a line holds no newline");
            assert!(line.len() <= max, "a line is within the limit");
            assert_eq!(line.as_ptr(), buf.as_ptr(), "the line borrows from the input");
        }
        (Ok(LineStatus::Partial), Ok(None)) => {}
        (Err(err), Err(want)) => assert_eq!(err, want),
        _ => panic!("decode_line gave {got:?}, the docs say {expected:?}"),
    }
    // At most `max_len + 2` bytes are looked at.
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    assert_eq!(
        decode_line(window, max),
        got,
        "answer depends on bytes past max_len + 2"
    );
}

fn check_lines(buf: &[u8], max: usize) {
    let mut it = lines(buf, max);
    let mut used = 0;
    loop {
        let step = decode_line(&buf[used..], max);
        let item = it.next();
        match step {
            Ok(LineStatus::Complete { line, consumed }) => {
                assert_eq!(item, Some(Ok(line)));
                used += consumed;
            }
            Ok(LineStatus::Partial) => {
                assert_eq!(item, None);
                break;
            }
            Err(err) => {
                assert_eq!(item, Some(Err(err)));
                break;
            }
        }
        assert_eq!(it.consumed(), used);
    }
    assert_eq!(it.consumed(), used, "an error or a partial line adds nothing");
    assert!(it.consumed() <= buf.len(), "consumed() past the input");
    assert_eq!(it.next(), None, "fused");
    assert_eq!(it.next(), None, "fused");
    assert_eq!(it.consumed(), used);
}

fn decode_all(buf: &[u8], max: usize) -> Decoded {
    lines(buf, max).map(|r| r.map(<[u8]>::to_vec)).collect()
}

/// Feeds `chunks` the way the reactor does: keeps the unconsumed bytes and
/// appends the next chunk to them. Stops at the first error.
fn feed(chunks: &[&[u8]], max: usize) -> Decoded {
    let mut pending = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        pending.extend_from_slice(chunk);
        let mut it = lines(&pending, max);
        out.extend(it.by_ref().map(|r| r.map(<[u8]>::to_vec)));
        let used = it.consumed();
        assert!(used <= pending.len(), "consumed() past the input");
        if out.last().is_some_and(Result::is_err) {
            return out;
        }
        pending.drain(..used);
    }
    out
}

/// The pieces of `stream` between newlines, encoded as lines, decode to
/// themselves (less one trailing `\r`).
fn check_round_trip(stream: &[u8]) {
    let pieces: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let mut out = Vec::new();
    for piece in &pieces {
        let before = out.len();
        encode_line(&mut out, piece);
        assert_eq!(&out[before..before + piece.len()], *piece);
        assert_eq!(out.len(), before + piece.len() + 1);
        assert_eq!(out.last(), Some(&b'\n'));
    }
    let expected: Decoded = pieces
        .iter()
        .map(|p| Ok(p.strip_suffix(b"\r").unwrap_or(p).to_vec()))
        .collect();
    let longest = pieces.iter().map(|p| p.len()).max().unwrap_or(0);
    let mut it = lines(&out, longest);
    let got: Decoded = it.by_ref().map(|r| r.map(<[u8]>::to_vec)).collect();
    assert_eq!(got, expected, "encode then decode does not round-trip");
    assert_eq!(it.consumed(), out.len());
}
