//! The length-prefixed framer: a 4-byte big-endian unsigned length `N`,
//! then `N` payload bytes.
//!
//! This file owns [`decode_frame`], the [`Frames`] iterator built on it and
//! [`encode_frame`]. What is always true:
//!
//! - A frame uses exactly [`HEADER_LEN`]` + N` bytes of input.
//! - A length over the limit is [`FrameTooLong`] as soon as the header is
//!   in, before any of the payload: a peer cannot make a handler buffer an
//!   oversize frame.
//! - A returned payload borrows from the input; nothing is copied or
//!   allocated.
//!
//! Two frames whose bytes arrive in two reads, the cut inside the first
//! frame: the first call consumes nothing, the second gets the same bytes
//! with the new ones appended, as `on_data` does.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use evloop::codec::{decode_frame, encode_frame, FrameStatus, HEADER_LEN};
//!
//! let mut wire = Vec::new();
//! encode_frame(&mut wire, b"hello")?;
//! encode_frame(&mut wire, b"world")?;
//! let frame_len = HEADER_LEN + 5;
//! assert_eq!(wire.len(), 2 * frame_len);
//!
//! let (first_read, second_read) = wire.split_at(7);
//! assert_eq!(decode_frame(first_read, 64)?, FrameStatus::Partial);
//!
//! let pending = [first_read, second_read].concat();
//! assert_eq!(
//!     decode_frame(&pending, 64)?,
//!     FrameStatus::Complete { payload: b"hello", consumed: frame_len }
//! );
//! assert_eq!(
//!     decode_frame(&pending[frame_len..], 64)?,
//!     FrameStatus::Complete { payload: b"world", consumed: frame_len }
//! );
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::iter::FusedIterator;

/// Bytes in a frame's length header.
pub const HEADER_LEN: usize = 4;

/// The outcome of looking for one frame at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameStatus<'a> {
    /// A whole frame is at the front of the buffer.
    Complete {
        /// The frame's payload, without the header.
        payload: &'a [u8],
        /// How many bytes of the input the frame used, header included.
        consumed: usize,
    },
    /// The header or part of the payload has not arrived: wait for more
    /// bytes.
    Partial,
}

/// A frame whose length is over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLong {
    /// The payload length the header announced (or the payload given to
    /// [`encode_frame`] had).
    pub len: usize,
    /// The limit it exceeded.
    pub max: usize,
}

impl fmt::Display for FrameTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame of {} bytes longer than {} bytes", self.len, self.max)
    }
}

impl std::error::Error for FrameTooLong {}

/// Looks for one frame at the front of `buf`, whose payload may be at most
/// `max_len` bytes.
///
/// Returns [`FrameStatus::Partial`] until the header and the whole payload
/// are in, and [`FrameTooLong`] as soon as the header announces more than
/// `max_len` bytes.
///
/// ```
/// use evloop::codec::{decode_frame, FrameStatus, FrameTooLong};
///
/// let buf = [0, 0, 0, 2, b'h', b'i', 0];
/// assert_eq!(
///     decode_frame(&buf, 16),
///     Ok(FrameStatus::Complete { payload: b"hi", consumed: 6 })
/// );
/// assert_eq!(decode_frame(&buf[..5], 16), Ok(FrameStatus::Partial));
/// assert_eq!(decode_frame(&[0, 0, 1, 0], 16), Err(FrameTooLong { len: 256, max: 16 }));
/// ```
pub fn decode_frame(buf: &[u8], max_len: usize) -> Result<FrameStatus<'_>, FrameTooLong> {
    if buf.len() < HEADER_LEN {
        return Ok(FrameStatus::Partial);
    }
    let (header, rest) = buf.split_at(HEADER_LEN);
    let len = read_len(header);
    if len > max_len {
        return Err(FrameTooLong { len, max: max_len });
    }
    Ok(match rest.get(..len) {
        Some(payload) => FrameStatus::Complete {
            payload,
            consumed: HEADER_LEN + len,
        },
        None => FrameStatus::Partial,
    })
}

/// The length in a [`HEADER_LEN`]-byte header, saturating at `usize::MAX`
/// where `usize` is narrower than 32 bits.
fn read_len(header: &[u8]) -> usize {
    let mut bytes = [0; HEADER_LEN];
    bytes.copy_from_slice(header);
    usize::try_from(u32::from_be_bytes(bytes)).unwrap_or(usize::MAX)
}

/// Appends a frame holding `payload` to `out`.
///
/// A payload longer than `u32::MAX` bytes cannot be described by the header:
/// it is [`FrameTooLong`] with `max` of `u32::MAX`, and `out` is unchanged.
///
/// ```
/// use evloop::codec::encode_frame;
///
/// let mut out = Vec::new();
/// encode_frame(&mut out, b"hi")?;
/// assert_eq!(out, [0, 0, 0, 2, b'h', b'i']);
/// # Ok::<(), evloop::codec::FrameTooLong>(())
/// ```
pub fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), FrameTooLong> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameTooLong {
        len: payload.len(),
        max: u32::MAX as usize,
    })?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Every complete frame at the front of a buffer, in order; made by
/// [`frames`].
///
/// Yields `Ok(payload)` for each complete frame, then stops at the first
/// partial frame, or yields one `Err(FrameTooLong)` and stops.
/// [`Frames::consumed`] tells how many bytes the frames returned so far
/// used: the number a handler returns from `on_data`.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
    max_len: usize,
    consumed: usize,
    done: bool,
}

/// Iterates over the complete frames at the front of `buf`, each with a
/// payload of at most `max_len` bytes.
///
/// ```
/// use evloop::codec::frames;
///
/// let buf = [0, 0, 0, 1, b'a', 0, 0, 0, 0, 0, 0];
/// let mut it = frames(&buf, 64);
/// assert_eq!(it.next(), Some(Ok(&b"a"[..])));
/// assert_eq!(it.next(), Some(Ok(&b""[..])));
/// assert_eq!(it.next(), None); // two bytes of the next header so far
/// assert_eq!(it.consumed(), 9);
/// ```
pub fn frames(buf: &[u8], max_len: usize) -> Frames<'_> {
    Frames {
        rest: buf,
        max_len,
        consumed: 0,
        done: false,
    }
}

impl Frames<'_> {
    /// Bytes used by the complete frames returned so far, headers included.
    /// An error or a partial frame adds nothing.
    pub fn consumed(&self) -> usize {
        self.consumed
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<&'a [u8], FrameTooLong>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match decode_frame(self.rest, self.max_len) {
            Ok(FrameStatus::Complete { payload, consumed }) => {
                self.rest = self.rest.get(consumed..).unwrap_or_default();
                self.consumed += consumed;
                Some(Ok(payload))
            }
            Ok(FrameStatus::Partial) => {
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

impl FusedIterator for Frames<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected outcome for a complete frame.
    fn complete(payload: &[u8], consumed: usize) -> Result<FrameStatus<'_>, FrameTooLong> {
        Ok(FrameStatus::Complete { payload, consumed })
    }

    type Decoded = Vec<Result<Vec<u8>, FrameTooLong>>;

    fn encode_all(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            encode_frame(&mut out, payload).expect("small payload");
        }
        out
    }

    fn ok(payloads: &[&[u8]]) -> Decoded {
        payloads.iter().map(|p| Ok(p.to_vec())).collect()
    }

    fn decode_all(buf: &[u8], max: usize) -> Decoded {
        frames(buf, max).map(|r| r.map(<[u8]>::to_vec)).collect()
    }

    /// Feeds `chunks` the way the reactor does: keeps the unconsumed bytes
    /// and appends the next chunk to them. Stops at the first error.
    fn feed(chunks: &[&[u8]], max: usize) -> Decoded {
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            pending.extend_from_slice(chunk);
            let mut it = frames(&pending, max);
            out.extend(it.by_ref().map(|r| r.map(<[u8]>::to_vec)));
            let used = it.consumed();
            if out.last().is_some_and(Result::is_err) {
                return out;
            }
            pending.drain(..used);
        }
        out
    }

    #[test]
    fn empty_input_is_partial() {
        assert_eq!(decode_frame(b"", 10), Ok(FrameStatus::Partial));
        assert!(decode_all(b"", 10).is_empty());
    }

    #[test]
    fn single_complete_frame() {
        let got = decode_frame(&[0, 0, 0, 3, b'a', b'b', b'c'], 10);
        assert_eq!(got, complete(b"abc", 7));
    }

    #[test]
    fn zero_length_frame_is_complete_and_empty() {
        let got = decode_frame(&[0, 0, 0, 0], 0);
        assert_eq!(got, complete(b"", 4));
    }

    #[test]
    fn coalesced_frames_come_out_in_order_and_partial_tail_is_kept() {
        let mut buf = encode_all(&[b"one", b"", b"three"]);
        buf.extend_from_slice(&[0, 0, 0, 9, b'x']);
        let mut it = frames(&buf, 10);
        let got: Vec<_> = it.by_ref().collect();
        assert_eq!(got, vec![Ok(&b"one"[..]), Ok(&b""[..]), Ok(&b"three"[..])]);
        assert_eq!(it.consumed(), 3 * HEADER_LEN + 8);
        assert_eq!(it.next(), None);
    }

    #[test]
    fn frame_split_across_two_buffers() {
        let buf = encode_all(&[b"hello", b"world"]);
        let (a, b) = buf.split_at(7);
        assert_eq!(feed(&[a, b], 10), ok(&[b"hello", b"world"]));
    }

    #[test]
    fn header_split_across_buffers() {
        let buf = encode_all(&[b"hi"]);
        assert_eq!(decode_frame(&buf[..2], 10), Ok(FrameStatus::Partial));
        assert_eq!(feed(&[&buf[..2], &buf[2..3], &buf[3..]], 10), ok(&[b"hi"]));
    }

    #[test]
    fn byte_by_byte_feed_matches_whole_feed() {
        let buf = encode_all(&[b"a", b"", b"longer payload", b"\n\r\0"]);
        let whole = decode_all(&buf, 32);
        assert_eq!(whole, ok(&[b"a", b"", b"longer payload", b"\n\r\0"]));
        let chunks: Vec<&[u8]> = buf.chunks(1).collect();
        assert_eq!(feed(&chunks, 32), whole);
    }

    #[test]
    fn frame_of_exactly_max_is_accepted_and_one_over_is_rejected() {
        let exact = encode_all(&[b"abcd"]);
        let got = decode_frame(&exact, 4);
        assert_eq!(got, complete(b"abcd", 8));
        let over = encode_all(&[b"abcde"]);
        assert_eq!(decode_frame(&over, 4), Err(FrameTooLong { len: 5, max: 4 }));
    }

    #[test]
    fn oversize_header_rejected_before_payload_arrives() {
        let header = [0xFF, 0xFF, 0xFF, 0xFF];
        let err = FrameTooLong {
            len: u32::MAX as usize,
            max: 1024,
        };
        assert_eq!(decode_frame(&header, 1024), Err(err));
        let got = feed(&[&encode_all(&[b"ok"]), &header[..3], &header[3..]], 1024);
        assert_eq!(got, vec![Ok(b"ok".to_vec()), Err(err)]);
    }

    #[test]
    fn iterator_stops_after_the_first_error() {
        let mut buf = encode_all(&[b"too long"]);
        buf.extend(encode_all(&[b"ok"]));
        let mut it = frames(&buf, 4);
        assert_eq!(it.next(), Some(Err(FrameTooLong { len: 8, max: 4 })));
        assert_eq!(it.next(), None);
        assert_eq!(it.consumed(), 0);
    }

    #[test]
    fn encode_writes_big_endian_header_then_payload() {
        let mut out = vec![7];
        encode_frame(&mut out, &[1; 258]).expect("small payload");
        assert_eq!(&out[..5], &[7, 0, 0, 1, 2]);
        assert_eq!(out.len(), 1 + HEADER_LEN + 258);
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let payloads: [&[u8]; 3] = [b"alpha", b"", &[0, 0, 0, 4]];
        assert_eq!(decode_all(&encode_all(&payloads), 8), ok(&payloads));
    }

    #[test]
    fn error_displays_length_and_limit() {
        let err = FrameTooLong { len: 9, max: 4 };
        assert_eq!(err.to_string(), "frame of 9 bytes longer than 4 bytes");
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

    #[test]
    fn random_stream_split_at_random_points_decodes_to_what_was_encoded() {
        const MAX: usize = 300;
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let payloads: Vec<Vec<u8>> = (0..300)
            .map(|_| (0..rng.below(MAX + 1)).map(|_| rng.below(256) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let stream = encode_all(&refs);
        let mut chunks = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at((1 + rng.below(2 * MAX)).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        assert_eq!(feed(&chunks, MAX), ok(&refs));
        assert_eq!(decode_all(&stream, MAX), ok(&refs));
    }
}
