//! Key-value server: GET, SET and DEL over a length-prefixed protocol, one
//! map shared by every connection, on one thread. `docs/tutorial.md` builds
//! this file step by step.
//!
//! ```text
//! kv [--tcp ADDR]... [--unix PATH]... [--idle-timeout SECS] [--max-frame BYTES]
//!    [--shutdown-timeout SECS]
//! ```
//! With no listener flag: `--tcp 127.0.0.1:7400`.
//!
//! # The protocol
//!
//! Every message, both ways, is a frame: a 4-byte big-endian length `N`,
//! then `N` bytes of body ([`evloop::codec::length`]).
//!
//! A request body is one command byte, a 2-byte big-endian key length `K`,
//! the `K` bytes of the key, and for SET the value: every byte left in the
//! body. SETX is SET with a time to live: 4 big-endian bytes of
//! milliseconds between the key and the value. Keys and values are any
//! bytes; the empty key is a key.
//!
//! | request | body |
//! |---|---|
//! | GET | `G`, `K`, key |
//! | SET | `S`, `K`, key, value |
//! | SETX | `X`, `K`, key, milliseconds (`u32`), value |
//! | DEL | `D`, `K`, key |
//!
//! A key set by SETX is gone once its time is up: no request sees it
//! after that. A SET or SETX of the key replaces its expiry; a DEL
//! removes it.
//!
//! A reply body is one status byte, then what that status carries:
//!
//! | reply | body | answers |
//! |---|---|---|
//! | OK | `O` | a SET or SETX; a DEL of a key that was there |
//! | VALUE | `V`, the value | a GET of a key that is there |
//! | NOT_FOUND | `N` | a GET or a DEL of a key that is not there |
//! | ERR | `E`, a message (UTF-8) | a request that breaks the rules below |
//!
//! Every request gets exactly one reply, and replies come in the order of
//! the requests, so a client may send many requests before reading
//! (pipelining).
//!
//! # Limits and errors
//!
//! - A body is at most `--max-frame` bytes (default 1 MiB). A length over
//!   that gets `ERR` and the connection is closed: the server will not
//!   read the body, so it cannot tell where the next frame starts.
//! - A request that is framed well but malformed (empty, an unknown
//!   command, a key running past the body, bytes after a GET or DEL key)
//!   gets `ERR` and the connection goes on: the frame's length says where
//!   the next request starts.
//! - A connection that sends no complete request for `--idle-timeout`
//!   seconds (default 60; 0 turns it off) is closed. Half a frame is not
//!   activity.
//! - No input makes the server panic; every length is checked before it
//!   is used.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use evloop::codec::{frames, HEADER_LEN};
use evloop::{Addr, CloseReason, Context, ListenerOptions, StreamFactory, StreamHandler, TimerId};
use log::debug;

// --- The protocol -----------------------------------------------------------

/// A request, parsed: it borrows its key and value from the input, so
/// parsing copies nothing.
#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    /// `G`: the value of `key`.
    Get { key: &'a [u8] },
    /// `S`: store `value` under `key`, replacing what was there.
    Set { key: &'a [u8], value: &'a [u8] },
    /// `X`: store `value` under `key` for `ttl`, then forget it.
    SetFor {
        key: &'a [u8],
        ttl: Duration,
        value: &'a [u8],
    },
    /// `D`: remove `key`.
    Del { key: &'a [u8] },
}

impl<'a> Request<'a> {
    /// Parses a request body (a frame's payload). The error is the message
    /// of the `ERR` reply.
    fn from_body(body: &'a [u8]) -> Result<Request<'a>, &'static str> {
        let (&command, rest) = body.split_first().ok_or("empty request")?;
        if !matches!(command, b'G' | b'S' | b'X' | b'D') {
            return Err("unknown command");
        }
        // `get` rather than indexing: a short body is an error, not a panic.
        let Some(&[high, low]) = rest.get(..2) else {
            return Err("no key length");
        };
        let rest = &rest[2..];
        let key_len = usize::from(u16::from_be_bytes([high, low]));
        let Some(key) = rest.get(..key_len) else {
            return Err("key runs past the end of the request");
        };
        let tail = &rest[key_len..];
        match (command, tail.is_empty()) {
            (b'G', true) => Ok(Request::Get { key }),
            (b'D', true) => Ok(Request::Del { key }),
            (b'S', _) => Ok(Request::Set { key, value: tail }),
            (b'X', _) => {
                let Some(&[a, b, c, d]) = tail.get(..4) else {
                    return Err("no time to live");
                };
                let ttl = Duration::from_millis(u64::from(u32::from_be_bytes([a, b, c, d])));
                Ok(Request::SetFor {
                    key,
                    ttl,
                    value: &tail[4..],
                })
            }
            _ => Err("bytes after the key"),
        }
    }
}

/// A reply, before it is encoded. A value borrows from the map, so a GET
/// copies the value once: into the output.
#[derive(Debug, PartialEq, Eq)]
enum Reply<'a> {
    /// `O`
    Ok,
    /// `V` and the value.
    Value(&'a [u8]),
    /// `N`
    NotFound,
    /// `E` and a message.
    Err(&'a str),
}

impl Reply<'_> {
    /// Appends the reply, as one frame, to `out`.
    ///
    /// `evloop::codec::encode_frame` takes the payload as one slice; this
    /// payload is two (the status byte, then the value), so the header is
    /// written here, the same 4 big-endian bytes the framer writes.
    fn encode(&self, out: &mut Vec<u8>) {
        let (status, rest): (u8, &[u8]) = match self {
            Reply::Ok => (b'O', b""),
            Reply::Value(value) => (b'V', value),
            Reply::NotFound => (b'N', b""),
            Reply::Err(message) => (b'E', message.as_bytes()),
        };
        let len = u32::try_from(1 + rest.len()).expect("a value is shorter than the request that set it");
        out.reserve(HEADER_LEN + 1 + rest.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.push(status);
        out.extend_from_slice(rest);
    }
}

// --- The store --------------------------------------------------------------

/// The map every connection shares. The reactor runs every handler on one
/// thread, one callback at a time, so `Rc<RefCell<..>>` is enough: no lock,
/// and a borrow never meets another (none is held across a callback).
type Store = Rc<RefCell<Map>>;

/// The keys and their values, and when the keys set by SETX expire.
#[derive(Default)]
struct Map {
    values: HashMap<Vec<u8>, Value>,
    /// The keys that expire, soonest first, under `(deadline, n)`: `n`
    /// tells apart keys that expire at the same instant.
    expiries: BTreeMap<(Instant, u64), Vec<u8>>,
    /// The last `n` given out.
    last: u64,
}

/// A value, and its place in [`Map::expiries`] if it expires.
struct Value {
    bytes: Vec<u8>,
    expiry: Option<(Instant, u64)>,
}

impl Map {
    /// Stores `value` under `key` until `expires` (`None`: for ever),
    /// replacing what was there and its expiry.
    fn set(&mut self, key: &[u8], value: &[u8], expires: Option<Instant>) {
        let expiry = expires.map(|deadline| {
            self.last += 1;
            (deadline, self.last)
        });
        if let Some(place) = expiry {
            self.expiries.insert(place, key.to_vec());
        }
        // Overwriting reuses the key and the value's buffer.
        match self.values.get_mut(key) {
            Some(old) => {
                if let Some(place) = std::mem::replace(&mut old.expiry, expiry) {
                    self.expiries.remove(&place);
                }
                old.bytes.clear();
                old.bytes.extend_from_slice(value);
            }
            None => {
                let bytes = value.to_vec();
                self.values.insert(key.to_vec(), Value { bytes, expiry });
            }
        }
    }

    /// Removes `key`. Returns whether it was there.
    fn remove(&mut self, key: &[u8]) -> bool {
        let Some(value) = self.values.remove(key) else {
            return false;
        };
        if let Some(place) = value.expiry {
            self.expiries.remove(&place);
        }
        true
    }

    /// Removes every key whose time is up at `now`, soonest first: the
    /// cost is the keys removed, not the size of the map.
    fn expire(&mut self, now: Instant) {
        while let Some(soonest) = self.expiries.first_entry() {
            if soonest.key().0 > now {
                break;
            }
            self.values.remove(&soonest.remove());
        }
    }
}

/// Runs one request against the map at `now` and says what to answer.
fn execute<'s>(map: &'s mut Map, request: Request<'_>, now: Instant) -> Reply<'s> {
    // Whatever expired since the last sweep goes before any request sees it.
    map.expire(now);
    match request {
        Request::Get { key } => map
            .values
            .get(key)
            .map_or(Reply::NotFound, |value| Reply::Value(&value.bytes)),
        Request::Set { key, value } => {
            map.set(key, value, None);
            Reply::Ok
        }
        Request::SetFor { key, ttl, value } => {
            map.set(key, value, Some(now + ttl));
            Reply::Ok
        }
        Request::Del { key } => match map.remove(key) {
            true => Reply::Ok,
            false => Reply::NotFound,
        },
    }
}

// --- One connection ---------------------------------------------------------

/// Replies gathered while answering a batch of requests are sent once they
/// reach this many bytes (and at the end of the batch): many pipelined
/// requests cost one write, not one each.
const SEND_AT: usize = 64 * 1024;

/// The limits every connection gets.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// The longest request body, in bytes.
    max_frame: usize,
    /// How long a connection may go without a complete request; `None`:
    /// for ever.
    idle_timeout: Option<Duration>,
}

/// Where a connection stands.
///
/// ```text
/// Serving --on_open--------------------------> Serving { idle }   idle timer set
/// Serving --complete request-----------------> Serving            answered; idle timer pushed back
/// Serving --length over --max-frame----------> Closing            ERR sent, closed after the flush
/// Serving --idle timer fired-----------------> Closing            closed after the flush
/// ```
/// The peer's FIN, a reset and a server shutdown close the connection
/// through evloop's defaults; `on_close` is the last call in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Answering requests. `idle` is the idle timer: `None` before
    /// `on_open`, with the timeout off, or if the timer table was full.
    Serving { idle: Option<TimerId> },
    /// Closed by the server: queued replies are flushed, then the socket
    /// is closed. Input is ignored.
    Closing,
}

/// The handler of one connection.
struct KvConnection {
    store: Store,
    limits: Limits,
    phase: Phase,
}

impl KvConnection {
    /// Closes the connection after its replies are flushed; `Serving ->
    /// Closing`.
    fn close(&mut self, cx: &mut Context<'_>) {
        if let Phase::Serving { idle: Some(timer) } = self.phase {
            cx.cancel_timer(timer);
        }
        self.phase = Phase::Closing;
        cx.close();
    }

    /// Moves the idle timer to a whole timeout from now: O(1), however
    /// many timers are set.
    fn push_back_idle(&self, cx: &mut Context<'_>) {
        if let (Phase::Serving { idle: Some(timer) }, Some(after)) = (self.phase, self.limits.idle_timeout) {
            cx.reset_timer(timer, after);
        }
    }

    /// Sends the replies gathered so far. Returns `false`, having paused
    /// reading, when the peer is not keeping up: its queued output is over
    /// the high watermark.
    fn send_replies(cx: &mut Context<'_>, replies: &mut Vec<u8>) -> bool {
        if !replies.is_empty() {
            // Written at once if the socket takes it; queued (without a
            // copy) if not.
            cx.send_vec(std::mem::take(replies));
        }
        if cx.is_above_high_water() {
            // Stop reading: requests wait in the kernel, and TCP flow
            // control slows the client down. `on_drain` resumes.
            cx.pause_reading();
            return false;
        }
        true
    }
}

impl StreamHandler for KvConnection {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        debug!("{}: open, peer {:?}", cx.key(), cx.peer_addr());
        let idle = self.limits.idle_timeout.and_then(|after| cx.set_timer(after));
        self.phase = Phase::Serving { idle };
    }

    /// `data` is every byte not consumed yet: any number of whole requests,
    /// then perhaps part of one. Answer the whole ones and return how many
    /// bytes they used; evloop keeps the rest and hands it back, with what
    /// arrives next appended.
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let Phase::Serving { .. } = self.phase else {
            return data.len(); // closing: nothing more is answered
        };
        let mut replies = Vec::new();
        let mut requests = frames(data, self.limits.max_frame);
        for frame in requests.by_ref() {
            let body = match frame {
                Ok(body) => body,
                Err(too_long) => {
                    // Answered at once, from the header alone: the body is
                    // never buffered.
                    Reply::Err(&too_long.to_string()).encode(&mut replies);
                    cx.send_vec(replies);
                    self.close(cx);
                    return data.len();
                }
            };
            self.push_back_idle(cx);
            match Request::from_body(body) {
                Ok(request) => execute(&mut self.store.borrow_mut(), request, cx.now()).encode(&mut replies),
                Err(message) => Reply::Err(message).encode(&mut replies),
            }
            if replies.len() >= SEND_AT && !Self::send_replies(cx, &mut replies) {
                break; // the rest waits until the client has read
            }
        }
        Self::send_replies(cx, &mut replies);
        // The bytes of the requests answered; a partial frame (or the
        // requests left for after a pause) stays with evloop.
        requests.consumed()
    }

    /// The client read enough of its replies: read its requests again. It
    /// was busy reading, not idle.
    fn on_drain(&mut self, cx: &mut Context<'_>) {
        self.push_back_idle(cx);
        cx.resume_reading();
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if self.phase == (Phase::Serving { idle: Some(timer) }) {
            debug!("{}: idle for {:?}, closing", cx.key(), self.limits.idle_timeout);
            self.phase = Phase::Serving { idle: None }; // a fired timer is gone
            self.close(cx);
        }
    }

    /// The last call, once, however the connection ended. Its timers are
    /// already cancelled and the map holds nothing of its own: there is
    /// nothing to clean up, only to log.
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        debug!("{}: closed: {reason}", cx.key());
    }
}

// --- The listener's factory -------------------------------------------------

/// The server: what each new connection's handler is made from. One per
/// listener, each holding the same store.
#[derive(Clone)]
struct Kv {
    store: Store,
    limits: Limits,
}

impl StreamFactory for Kv {
    fn new_handler(&mut self, _peer: &Addr) -> Box<dyn StreamHandler> {
        Box::new(KvConnection {
            store: Rc::clone(&self.store),
            limits: self.limits,
            phase: Phase::Serving { idle: None },
        })
    }
}

// --- The program ------------------------------------------------------------

/// The largest `--max-frame`.
const MAX_FRAME_LIMIT: u64 = 64 * 1024 * 1024;

/// Bytes evloop reads from a socket at a time (64 KiB).
const READ_SIZE: usize = 64 * 1024;

/// How often expired keys are swept out of the map when no request comes.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Key-value server: GET, SET, SETX and DEL over length-prefixed frames.
#[derive(Parser)]
#[command(name = "kv")]
struct Flags {
    /// TCP address to listen on (repeatable)
    #[arg(long, value_name = "ADDR")]
    tcp: Vec<SocketAddr>,
    /// Unix stream socket path to listen on (repeatable)
    #[arg(long, value_name = "PATH")]
    unix: Vec<PathBuf>,
    /// Seconds a connection may go without a complete request (0: no limit)
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = common::seconds)]
    idle_timeout: Duration,
    /// Longest request body in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=MAX_FRAME_LIMIT))]
    max_frame: u64,
    /// Seconds connections get to flush their replies after SIGINT/SIGTERM
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = common::seconds)]
    shutdown_timeout: Duration,
}

fn main() -> ExitCode {
    let mut flags: Flags = common::parse();
    common::init_logging();
    if flags.tcp.is_empty() && flags.unix.is_empty() {
        flags.tcp.push("127.0.0.1:7400".parse().expect("valid default"));
    }
    let max_frame = usize::try_from(flags.max_frame).expect("at most 64 MiB");
    let kv = Kv {
        store: Rc::new(RefCell::new(Map::default())),
        limits: Limits {
            max_frame,
            idle_timeout: Some(flags.idle_timeout).filter(|t| !t.is_zero()),
        },
    };
    // Unconsumed input is at most a partial frame and, after a pause for
    // backpressure, the rest of one read: allow that much.
    let mut options = ListenerOptions::default();
    options.connection.max_pending_input = options
        .connection
        .max_pending_input
        .max(HEADER_LEN + max_frame + READ_SIZE);

    let mut reactor = common::server_reactor(flags.shutdown_timeout);
    // Requests expire keys as they come; this sweep frees the memory of
    // expired keys when none do. One timer for the whole map, owned by the
    // reactor: the map belongs to no connection.
    let store = Rc::clone(&kv.store);
    reactor
        .set_repeating(SWEEP_EVERY, move |_| store.borrow_mut().expire(Instant::now()))
        .expect("a new reactor has room for a timer");
    for addr in flags.tcp {
        let bound = reactor.listen_tcp_with(addr, options.clone(), kv.clone());
        common::bind_or_exit(&mut reactor, "tcp", bound);
    }
    for path in flags.unix {
        let bound = reactor.listen_unix_with(&path, options.clone(), kv.clone());
        common::bind_or_exit(&mut reactor, "unix", bound);
    }
    common::serve(reactor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_malformed_ones_are_errors() {
        assert_eq!(Request::from_body(b"G\0\x01a"), Ok(Request::Get { key: b"a" }));
        assert_eq!(
            Request::from_body(b"S\0\x01ab"),
            Ok(Request::Set {
                key: b"a",
                value: b"b"
            })
        );
        assert_eq!(Request::from_body(b"D\0\0"), Ok(Request::Del { key: b"" }));
        assert_eq!(Request::from_body(b""), Err("empty request"));
        assert_eq!(Request::from_body(b"Q\0\x01a"), Err("unknown command"));
        assert_eq!(Request::from_body(b"G\0"), Err("no key length"));
        assert_eq!(
            Request::from_body(b"G\0\x05ab"),
            Err("key runs past the end of the request")
        );
        assert_eq!(Request::from_body(b"D\0\x01ab"), Err("bytes after the key"));
        assert_eq!(
            Request::from_body(b"X\0\x01a\0\0\x01\0b"),
            Ok(Request::SetFor {
                key: b"a",
                ttl: Duration::from_millis(256),
                value: b"b"
            })
        );
        assert_eq!(Request::from_body(b"X\0\x01a\0\0"), Err("no time to live"));
    }

    #[test]
    fn keys_expire_in_deadline_order_and_a_set_replaces_the_expiry() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut map = Map::default();
        map.set(b"late", b"1", Some(t0 + ms(20)));
        map.set(b"early", b"2", Some(t0 + ms(10)));
        map.set(b"kept", b"3", Some(t0 + ms(10)));
        map.set(b"kept", b"4", None); // a plain SET: no expiry any more
        map.set(b"moved", b"5", Some(t0 + ms(10)));
        map.set(b"moved", b"6", Some(t0 + ms(30)));
        map.expire(t0 + ms(10));
        let mut left: Vec<&[u8]> = map.values.keys().map(Vec::as_slice).collect();
        left.sort();
        assert_eq!(left, [&b"kept"[..], b"late", b"moved"]);
        map.expire(t0 + ms(30));
        assert_eq!(map.values.len(), 1);
        assert_eq!(map.values[&b"kept"[..]].bytes, b"4");
        assert!(map.expiries.is_empty(), "no expiry is left behind");
        assert!(map.remove(b"kept") && !map.remove(b"kept"));
    }

    #[test]
    fn replies_encode_as_one_frame_each() {
        let mut out = Vec::new();
        Reply::Ok.encode(&mut out);
        Reply::Value(b"hi").encode(&mut out);
        assert_eq!(out, b"\0\0\0\x01O\0\0\0\x03Vhi");
    }
}
