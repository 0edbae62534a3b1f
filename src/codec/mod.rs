//! Framers: pure functions that find frames at the front of a byte slice.
//!
//! A stream handler's `on_data` gets `data: &[u8]`, the bytes not yet
//! consumed (possibly several frames, possibly a partial one), and returns
//! how many it consumed; the reactor keeps the rest and hands it back, with
//! new bytes appended, next time. A framer fits that contract: it owns no
//! buffer, only looks at a slice and says what is at its front. Two ship
//! here:
//!
//! | module | frames |
//! |---|---|
//! | [`line`](mod@line) | lines ending in `\n` or `\r\n`: [`decode_line`], [`lines`], [`encode_line`] |
//! | [`length`] | a 4-byte big-endian length, then that many bytes: [`decode_frame`], [`frames`], [`encode_frame`] |
//!
//! What is always true:
//!
//! - **Needing more bytes is a value, not an error.** Like httparse's
//!   `Status::Partial`, an incomplete frame is [`LineStatus::Partial`] or
//!   [`FrameStatus::Partial`]: consume nothing and wait. The only errors
//!   are frames over the caller's limit ([`LineTooLong`], [`FrameTooLong`]),
//!   reported as soon as the limit is sure to be exceeded, so a handler
//!   never buffers more than its limit; the usual answer is to close the
//!   connection.
//! - A decoded frame borrows from the input and says how many bytes it
//!   used; nothing is copied, and no input makes a framer panic.
//! - Decoding is independent of how the stream was split: feeding bytes one
//!   at a time yields the same frames as feeding them all at once.
//!
//! Taking every complete line from a slice and reporting how much was
//! consumed, as an `on_data` would:
//!
//! ```
//! use evloop::codec::{decode_line, LineStatus, LineTooLong};
//!
//! /// Collects the complete lines in `data`; returns the bytes they used.
//! fn take_lines(data: &[u8], out: &mut Vec<String>) -> Result<usize, LineTooLong> {
//!     let mut used = 0;
//!     while let LineStatus::Complete { line, consumed } = decode_line(&data[used..], 1024)? {
//!         out.push(String::from_utf8_lossy(line).into_owned());
//!         used += consumed;
//!     }
//!     Ok(used)
//! }
//!
//! let mut out = Vec::new();
//! assert_eq!(take_lines(b"PING\r\nECHO hi\nPAR", &mut out)?, 14);
//! assert_eq!(out, ["PING", "ECHO hi"]); // "PAR" is kept for next time
//! # Ok::<(), LineTooLong>(())
//! ```
//!
//! The same with the iterator, which tracks the count itself:
//!
//! ```
//! use evloop::codec::lines;
//!
//! let mut it = lines(b"PING\r\nECHO hi\nPAR", 1024);
//! for line in it.by_ref() {
//!     let _line: &[u8] = line?; // on an error, close the connection
//! }
//! assert_eq!(it.consumed(), 14);
//! # Ok::<(), evloop::codec::LineTooLong>(())
//! ```

pub mod length;
pub mod line;

pub use length::{decode_frame, encode_frame, frames, FrameStatus, FrameTooLong, Frames, HEADER_LEN};
pub use line::{decode_line, encode_line, lines, LineStatus, LineTooLong, Lines};
