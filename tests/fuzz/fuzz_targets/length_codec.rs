//! The length-prefixed framer (`evloop::codec::length`) against its module
//! docs.
//!
//! Input: byte 0 picks `max_len`, byte 1 picks how the stream is split into
//! reads, the rest is the stream. Checked for every input:
//! - `decode_frame` agrees with the docs: `Partial` until the 4-byte header
//!   and the whole payload are in, `FrameTooLong` as soon as the header
//!   announces more than `max_len` (before any payload), and a frame uses
//!   exactly `HEADER_LEN + N` bytes;
//! - a payload borrows from the input and `consumed` stays inside it;
//! - `frames` yields what repeated `decode_frame` calls yield, `consumed()`
//!   never exceeds the input, and the iterator stays fused;
//! - feeding the stream in arbitrary reads yields the same frames (and
//!   error) as feeding it whole;
//! - payloads cut from the input, encoded with `encode_frame`, decode to
//!   themselves; with a limit one below the longest, decoding stops with
//!   `FrameTooLong` at the first payload over it.
#![no_main]

use evloop::codec::length::{decode_frame, encode_frame, frames, FrameStatus, FrameTooLong, HEADER_LEN};
use evloop_fuzz::split;
use libfuzzer_sys::fuzz_target;

type Decoded = Vec<Result<Vec<u8>, FrameTooLong>>;

fuzz_target!(|data: &[u8]| {
    let (max_len, seed, stream) = match data {
        [m, s, rest @ ..] => (pick_max(*m), *s, rest),
        _ => return,
    };
    check_decode_frame(stream, max_len);
    check_frames(stream, max_len);
    assert_eq!(
        feed(&split(stream, seed), max_len),
        decode_all(stream, max_len),
        "split feed differs from whole feed"
    );
    check_round_trip(stream);
});

/// Small limits (so that inputs reach them and go past them), the largest
/// length a header can say, and `usize::MAX`.
fn pick_max(b: u8) -> usize {
    match b {
        0xFF => usize::MAX,
        0xFE => u32::MAX as usize,
        0xF0..=0xFD => 1000,
        n => usize::from(n & 0x3F),
    }
}

fn check_decode_frame(buf: &[u8], max: usize) {
    let got = decode_frame(buf, max);
    let Some(header) = buf.get(..HEADER_LEN) else {
        assert_eq!(got, Ok(FrameStatus::Partial), "no whole header yet");
        return;
    };
    let announced = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
    if announced > max {
        // Rejected on the header alone, however much payload is in.
        assert_eq!(got, Err(FrameTooLong { len: announced, max }));
        assert_eq!(decode_frame(header, max), got, "rejection waits for the payload");
        return;
    }
    match got {
        Ok(FrameStatus::Complete { payload, consumed }) => {
            assert_eq!(
                consumed,
                HEADER_LEN + announced,
                "a frame uses HEADER_LEN + N bytes"
            );
            assert!(consumed <= buf.len(), "consumed past the input");
            assert_eq!(payload, &buf[HEADER_LEN..consumed]);
            assert_eq!(
                payload.as_ptr(),
                buf[HEADER_LEN..].as_ptr(),
                "payload borrows from the input"
            );
            assert!(payload.len() <= max);
            // Bytes after the frame make no difference.
            assert_eq!(
                decode_frame(&buf[..consumed], max),
                Ok(FrameStatus::Complete { payload, consumed })
            );
        }
        Ok(FrameStatus::Partial) => {
            assert!(
                buf.len() < HEADER_LEN + announced,
                "partial although the payload is in"
            );
        }
        Err(err) => panic!("{err:?} for a length within the limit"),
    }
}

fn check_frames(buf: &[u8], max: usize) {
    let mut it = frames(buf, max);
    let mut used = 0;
    loop {
        let step = decode_frame(&buf[used..], max);
        let item = it.next();
        match step {
            Ok(FrameStatus::Complete { payload, consumed }) => {
                assert_eq!(item, Some(Ok(payload)));
                used += consumed;
            }
            Ok(FrameStatus::Partial) => {
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
    assert_eq!(it.consumed(), used, "an error or a partial frame adds nothing");
    assert!(it.consumed() <= buf.len(), "consumed() past the input");
    assert_eq!(it.next(), None, "fused");
    assert_eq!(it.next(), None, "fused");
    assert_eq!(it.consumed(), used);
}

fn decode_all(buf: &[u8], max: usize) -> Decoded {
    frames(buf, max).map(|r| r.map(<[u8]>::to_vec)).collect()
}

/// Feeds `chunks` the way the reactor does: keeps the unconsumed bytes and
/// appends the next chunk to them. Stops at the first error.
fn feed(chunks: &[&[u8]], max: usize) -> Decoded {
    let mut pending = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        pending.extend_from_slice(chunk);
        let mut it = frames(&pending, max);
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

/// Cuts payloads from `stream`: a length byte (mod 64), then that many bytes
/// (or what is left).
fn payloads(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = stream;
    while let Some((&n, tail)) = rest.split_first() {
        let (payload, tail) = tail.split_at(usize::from(n & 0x3F).min(tail.len()));
        out.push(payload);
        rest = tail;
    }
    out
}

fn check_round_trip(stream: &[u8]) {
    let payloads = payloads(stream);
    let mut out = Vec::new();
    for payload in &payloads {
        let before = out.len();
        encode_frame(&mut out, payload).expect("a small payload encodes");
        assert_eq!(out.len(), before + HEADER_LEN + payload.len());
        assert_eq!(
            &out[before..before + HEADER_LEN],
            &(payload.len() as u32).to_be_bytes()
        );
        assert_eq!(&out[before + HEADER_LEN..], *payload);
    }
    let longest = payloads.iter().map(|p| p.len()).max().unwrap_or(0);
    let expected: Decoded = payloads.iter().map(|p| Ok(p.to_vec())).collect();

    // Whole frames, then part of a header: only the whole ones are used.
    let encoded_len = out.len();
    out.extend_from_slice(&[0, 0, 0]);
    let mut it = frames(&out, longest);
    let got: Decoded = it.by_ref().map(|r| r.map(<[u8]>::to_vec)).collect();
    assert_eq!(got, expected, "encode then decode does not round-trip");
    assert_eq!(it.consumed(), encoded_len);

    // A limit one below the longest payload: stops at the first one over it.
    if let Some(max) = longest.checked_sub(1) {
        let over = payloads
            .iter()
            .position(|p| p.len() > max)
            .expect("the longest is over");
        let mut want: Decoded = expected[..over].to_vec();
        want.push(Err(FrameTooLong { len: longest, max }));
        let mut it = frames(&out, max);
        let got: Decoded = it.by_ref().map(|r| r.map(<[u8]>::to_vec)).collect();
        assert_eq!(got, want);
        let used: usize = payloads[..over].iter().map(|p| HEADER_LEN + p.len()).sum();
        assert_eq!(it.consumed(), used);
    }
}
