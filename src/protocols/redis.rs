//! A Redis client on the reactor: commands pipelined on one connection,
//! pub/sub messages on a second (Redis gives a subscribed connection to
//! subscriptions alone), a connect timeout, and reconnection with capped,
//! jittered backoff. RESP is parsed and encoded by the `redis-protocol`
//! crate (RESP2, which every Redis from 2.0 on speaks).
//!
//! [`Redis::start`] opens the link from a reactor; the program hears of it
//! through its [`RedisEvents`]: [`on_up`](RedisEvents::on_up) once both
//! connections are open and every channel is subscribed,
//! [`on_message`](RedisEvents::on_message) for each message published on
//! them, [`on_down`](RedisEvents::on_down) once per outage. While it is up,
//! [`Redis::command`] queues a command and the closure that gets its
//! reply.
//!
//! ```text
//!  Waiting    --backoff timer--------------------------> Connecting   both connects started (each with the timeout)
//!  Connecting --both open, every SUBSCRIBE confirmed---> Up           on_up
//!  Connecting --a connect failed or timed out, or-----> Waiting      on_down (once per outage); next delay doubled, capped, jittered
//!               no SUBSCRIBE confirmed in that time
//!  Up         --either connection closed or misspoke,--> Waiting      the other closed; replies owed fail with RedisError::Down; on_down
//!               or a reply overdue (reply_timeout)
//!  any        --reactor shutdown-----------------------> Closed       on_shutdown first (last commands still go out); nothing reopens
//! ```
//!
//! Always true:
//! - replies come in the order commands were queued, each to its own
//!   closure, exactly once: with the reply, or with [`RedisError::Down`]
//!   if the link went down first;
//! - the commands queued during a turn leave together, as one write, at
//!   the end of that turn (a reactor turn-end hook): a turn's commands
//!   cost one `write(2)`, however many there are;
//! - a connection attempt belongs to one generation: a late event from
//!   the connections of an attempt given up on is ignored, so one outage
//!   is one `on_down`, and one return one `on_up`;
//! - nothing here panics on what Redis (or whatever answers at its
//!   address) sends: a reply that is not RESP ends the link like a reset.
//!
//! The delay before attempt `n` after an outage is drawn at random from
//! the upper half of `min(backoff_max, backoff_min * 2^n)`: servers that
//! lost Redis together do not all come back at the same instant.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, info};
use redis_protocol::resp2::decode::{decode, decode_range};
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame, RangeFrame};

use crate::{CloseReason, ConnectOptions, ConnectionOptions, Context, Key, Reactor, StreamHandler};

/// How the link connects and reconnects.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// A connect not done within this is given up (and retried).
    pub connect_timeout: Duration,
    /// The delay before the first retry (before jitter).
    pub backoff_min: Duration,
    /// The longest delay between two attempts (before jitter).
    pub backoff_max: Duration,
    /// The largest reply or message taken, in bytes; a bigger one ends the
    /// link.
    pub max_reply: usize,
    /// A reply owed for longer than this ends the link (a Redis that is
    /// stopped, or a network that dropped the connection silently), and
    /// the link is made again. Checked every second.
    pub reply_timeout: Duration,
}

impl Default for RedisOptions {
    /// A 2 s connect timeout; retries from 100 ms, doubling to 2 s; replies
    /// up to 64 MiB, each within 5 s.
    fn default() -> Self {
        RedisOptions {
            connect_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            max_reply: 64 << 20,
            reply_timeout: Duration::from_secs(5),
        }
    }
}

/// A reply from Redis (RESP2), or a message's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A status, such as `OK`.
    Status(Vec<u8>),
    /// An error reply, such as `ERR unknown command`.
    Error(String),
    /// An integer.
    Integer(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// An array of replies.
    Array(Vec<Reply>),
    /// The null reply (a missing key; a `SET ... NX` that did not set).
    Nil,
}

impl Reply {
    /// The bytes of a status or bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Status(b) | Reply::Bulk(b) => Some(b),
            _ => None,
        }
    }

    fn from_frame(frame: OwnedFrame) -> Reply {
        match frame {
            OwnedFrame::SimpleString(s) => Reply::Status(s),
            OwnedFrame::Error(e) => Reply::Error(e),
            OwnedFrame::Integer(i) => Reply::Integer(i),
            OwnedFrame::BulkString(b) => Reply::Bulk(b),
            OwnedFrame::Array(items) => Reply::Array(items.into_iter().map(Reply::from_frame).collect()),
            OwnedFrame::Null => Reply::Nil,
        }
    }
}

/// Why a command got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// The link went down before the reply came (or was down when the
    /// command was queued).
    Down,
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the link to Redis is down")
    }
}

impl std::error::Error for RedisError {}

/// The closure a command's reply goes to.
type ReplyFn = Box<dyn FnOnce(&mut Context<'_>, Result<Reply, RedisError>)>;

/// What a program hears from its link. Each call gets the context of the
/// connection that heard it (to reach the program's other connections)
/// and the link itself (to queue commands).
pub trait RedisEvents {
    /// Both connections are open and every channel is subscribed: commands
    /// can be queued. After an outage, this is where a program puts back
    /// what Redis lost (keys that expired meanwhile, a server that
    /// restarted empty).
    fn on_up(&mut self, cx: &mut Context<'_>, redis: &Redis) {
        let _ = (cx, redis);
    }

    /// The link is down (it was up and a connection closed, or an attempt
    /// failed): called once per outage, whatever the retries meanwhile.
    /// `why` says what happened first. Replies owed have already failed.
    fn on_down(&mut self, cx: &mut Context<'_>, redis: &Redis, why: &str) {
        let _ = (cx, redis, why);
    }

    /// A message published on a subscribed channel.
    fn on_message(&mut self, cx: &mut Context<'_>, redis: &Redis, channel: &[u8], payload: &[u8]);

    /// The reactor is shutting down and the link is about to close:
    /// commands queued now still go out (if it is up) before it does.
    fn on_shutdown(&mut self, cx: &mut Context<'_>, redis: &Redis) {
        let _ = (cx, redis);
    }
}

/// Where the link stands (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Down; a reconnect is due (`timer_set`: its timer is running).
    Waiting,
    /// Both connects started; not yet up.
    Connecting,
    /// Open and subscribed.
    Up,
    /// Shut down; never reopens.
    Closed,
}

/// The link's state, apart from the program's events.
struct Inner {
    addr: SocketAddr,
    options: RedisOptions,
    channels: Vec<Vec<u8>>,
    phase: Phase,
    /// The attempt the connections belong to.
    generation: u64,
    /// The command connection, once its connect is started.
    cmd: Option<Key>,
    /// The subscriber connection, once its connect is started.
    sub: Option<Key>,
    cmd_open: bool,
    /// Channels whose subscription Redis confirmed, this attempt.
    subscribed: usize,
    /// Encoded commands not yet written.
    out: Vec<u8>,
    /// Reply closures, oldest first, each with when its command was
    /// queued: of commands written or in `out`.
    owed: VecDeque<(Instant, ReplyFn)>,
    /// Attempts since the link was last up.
    attempts: u32,
    /// Whether this outage was reported (`on_down`).
    reported: bool,
    /// A reconnect timer is running.
    timer_set: bool,
    rng: u64,
}

struct Shared {
    inner: RefCell<Inner>,
    events: RefCell<Box<dyn RedisEvents>>,
}

/// A link to one Redis server: clones share it.
#[derive(Clone)]
pub struct Redis {
    shared: Rc<Shared>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.inner.borrow();
        f.debug_struct("Redis")
            .field("addr", &inner.addr)
            .field("phase", &inner.phase)
            .field("owed", &inner.owed.len())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Opens a link to the Redis server at `addr` from `reactor`,
    /// subscribed to `channels`; `events` hears of it. The first attempt
    /// starts at once; nothing blocks.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use evloop::protocols::redis::{Redis, RedisEvents, RedisOptions, Reply};
    /// use evloop::{Context, Reactor};
    ///
    /// struct Printer;
    ///
    /// impl RedisEvents for Printer {
    ///     fn on_up(&mut self, _: &mut Context<'_>, redis: &Redis) {
    ///         redis.command(&["INCR", "visits"], |_, reply| {
    ///             if let Ok(Reply::Integer(n)) = reply {
    ///                 println!("visit {n}");
    ///             }
    ///         });
    ///     }
    ///
    ///     fn on_message(&mut self, _: &mut Context<'_>, _: &Redis, channel: &[u8], payload: &[u8]) {
    ///         println!("{}: {}", String::from_utf8_lossy(channel), String::from_utf8_lossy(payload));
    ///     }
    /// }
    ///
    /// let mut reactor = Reactor::new()?;
    /// let addr = "127.0.0.1:6379".parse()?;
    /// Redis::start(&mut reactor, addr, RedisOptions::default(), &[&b"news"[..]], Printer);
    /// reactor.run()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(
        reactor: &mut Reactor,
        addr: SocketAddr,
        options: RedisOptions,
        channels: &[&[u8]],
        events: impl RedisEvents + 'static,
    ) -> Redis {
        let seed = u64::from(std::process::id())
            ^ u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0),
            );
        let mut inner = Inner::new(addr, options, seed);
        inner.channels = channels.iter().map(|c| c.to_vec()).collect();
        let redis = Redis {
            shared: Rc::new(Shared {
                inner: RefCell::new(inner),
                events: RefCell::new(Box::new(events)),
            }),
        };
        let hook = redis.clone();
        reactor.on_turn_end(move |reactor| hook.turn_end(reactor));
        redis.connect(reactor);
        redis
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.inner.borrow().addr
    }

    /// Whether the link is up: commands queued now are sent.
    pub fn is_up(&self) -> bool {
        self.shared.inner.borrow().phase == Phase::Up
    }

    /// Queues a command (its arguments, the name first) to leave at the
    /// end of this turn with the turn's other commands; `reply` gets its
    /// reply, or [`RedisError::Down`] if the link goes down first. Returns
    /// `false`, and drops `reply` uncalled, if the link is not up.
    pub fn command<A: AsRef<[u8]>>(
        &self,
        args: &[A],
        reply: impl FnOnce(&mut Context<'_>, Result<Reply, RedisError>) + 'static,
    ) -> bool {
        let mut inner = self.shared.inner.borrow_mut();
        if inner.phase != Phase::Up {
            return false;
        }
        encode_command(&mut inner.out, args);
        inner.owed.push_back((Instant::now(), Box::new(reply)));
        true
    }

    /// Publishes `payload` on `channel`; the reply (how many subscribers
    /// got it) is not wanted. Returns `false` if the link is not up.
    pub fn publish(&self, channel: &[u8], payload: &[u8]) -> bool {
        self.command(&[&b"PUBLISH"[..], channel, payload], |_, _| {})
    }

    /// Writes the commands queued so far now, in one send, rather than at
    /// the end of the turn: for a turn-end hook of the program's own that
    /// queues commands after the link's hook has run.
    pub fn flush(&self, reactor: &mut Reactor) {
        let (key, mut out) = {
            let mut inner = self.shared.inner.borrow_mut();
            if inner.out.is_empty() {
                return;
            }
            (inner.cmd, std::mem::take(&mut inner.out))
        };
        if let Some(key) = key {
            reactor.send_to(key, &out);
        }
        let mut inner = self.shared.inner.borrow_mut();
        if inner.out.is_empty() {
            // The buffer keeps its capacity for the next turn.
            out.clear();
            inner.out = out;
        }
    }

    /// Step 10: writes the turn's commands in one send, and starts the
    /// reconnect timer of a link that went down.
    fn turn_end(&self, reactor: &mut Reactor) {
        self.flush(reactor);
        self.schedule(reactor);
    }

    /// Starts the reconnect timer of a link that is down, once.
    fn schedule(&self, reactor: &mut Reactor) {
        let delay = {
            let mut inner = self.shared.inner.borrow_mut();
            if inner.phase != Phase::Waiting || inner.timer_set || reactor.is_shutting_down() {
                return;
            }
            inner.timer_set = true;
            inner.next_delay()
        };
        let redis = self.clone();
        let set = reactor.set_timer(delay, move |reactor| {
            redis.shared.inner.borrow_mut().timer_set = false;
            redis.connect(reactor);
        });
        if set.is_err() {
            // The timer table is full: the next turn tries again.
            self.shared.inner.borrow_mut().timer_set = false;
        }
    }

    /// Starts both connects of a new attempt.
    fn connect(&self, reactor: &mut Reactor) {
        let (addr, options, generation) = {
            let mut inner = self.shared.inner.borrow_mut();
            if inner.phase != Phase::Waiting || reactor.is_shutting_down() {
                return;
            }
            inner.generation += 1;
            inner.attempts = inner.attempts.saturating_add(1);
            inner.phase = Phase::Connecting;
            inner.cmd_open = false;
            inner.subscribed = 0;
            (inner.addr, inner.options.clone(), inner.generation)
        };
        debug!("redis: connecting to {addr} (attempt {generation})");
        let connect = ConnectOptions::new()
            .timeout(options.connect_timeout)
            .connection(ConnectionOptions {
                max_pending_input: options.max_reply,
                ..ConnectionOptions::default()
            });
        let conn = |role| Conn {
            redis: self.clone(),
            role,
            generation,
        };
        let cmd = reactor.connect_tcp_with(addr, &connect, conn(Role::Command));
        let sub = reactor.connect_tcp_with(addr, &connect, conn(Role::Subscriber));
        match (cmd, sub) {
            (Ok(cmd), Ok(sub)) => {
                let mut inner = self.shared.inner.borrow_mut();
                inner.cmd = Some(cmd);
                inner.sub = Some(sub);
            }
            (cmd, sub) => {
                debug!("redis: cannot start a connect to {addr}");
                for key in [cmd.ok(), sub.ok()].into_iter().flatten() {
                    reactor.close(key);
                }
                let mut inner = self.shared.inner.borrow_mut();
                inner.phase = Phase::Waiting;
                inner.cmd = None;
                inner.sub = None;
            }
        }
    }

    /// One connection of this attempt closed, or misspoke: the link goes
    /// down (the other connection closed, replies owed failed, the program
    /// told once per outage), and a reconnect is due.
    fn down(&self, cx: &mut Context<'_>, generation: u64, why: &str) {
        let (owed, other, report) = {
            let mut inner = self.shared.inner.borrow_mut();
            if inner.generation != generation || !matches!(inner.phase, Phase::Up | Phase::Connecting) {
                return;
            }
            inner.phase = Phase::Waiting;
            inner.out.clear();
            let other = [inner.cmd.take(), inner.sub.take()];
            let report = !std::mem::replace(&mut inner.reported, true);
            (std::mem::take(&mut inner.owed), other, report)
        };
        let me = cx.key();
        for key in other.into_iter().flatten().filter(|&k| k != me) {
            cx.source(key).abort();
        }
        for (_, reply) in owed {
            reply(cx, Err(RedisError::Down));
        }
        if report {
            self.with_events(|events, redis| events.on_down(cx, redis, why));
        }
    }

    /// Both connections open, every channel subscribed: up.
    fn maybe_up(&self, cx: &mut Context<'_>) {
        {
            let mut inner = self.shared.inner.borrow_mut();
            if inner.phase != Phase::Connecting || !inner.cmd_open || inner.subscribed < inner.channels.len()
            {
                return;
            }
            inner.phase = Phase::Up;
            inner.attempts = 0;
            inner.reported = false;
            info!("redis: up at {}", inner.addr);
        }
        self.with_events(|events, redis| events.on_up(cx, redis));
    }

    /// Calls the program's events, unless a call is already running (an
    /// event caused from inside another is dropped, not nested).
    fn with_events(&self, f: impl FnOnce(&mut dyn RedisEvents, &Redis)) {
        match self.shared.events.try_borrow_mut() {
            Ok(mut events) => f(&mut **events, self),
            Err(_) => debug!("redis: event dropped: another is running"),
        }
    }
}

impl Inner {
    /// A link not yet tried, subscribed to nothing; `seed` starts the
    /// jitter.
    fn new(addr: SocketAddr, options: RedisOptions, seed: u64) -> Inner {
        Inner {
            addr,
            options,
            channels: Vec::new(),
            phase: Phase::Waiting,
            generation: 0,
            cmd: None,
            sub: None,
            cmd_open: false,
            subscribed: 0,
            out: Vec::new(),
            owed: VecDeque::new(),
            attempts: 0,
            reported: false,
            timer_set: false,
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt: the upper half of the doubled,
    /// capped delay, at random.
    fn next_delay(&mut self) -> Duration {
        let exp = self.attempts.min(16);
        let base = self
            .options
            .backoff_min
            .saturating_mul(1 << exp)
            .min(self.options.backoff_max)
            .max(Duration::from_millis(1));
        // xorshift64: jitter, not secrecy.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = base / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_nanos(self.rng % nanos)
    }
}

/// Encodes one command (or any list of byte strings) as a RESP array of
/// bulk strings onto `out`.
pub(crate) fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    let parts: Vec<BorrowedFrame<'_>> = args
        .iter()
        .map(|a| BorrowedFrame::BulkString(a.as_ref()))
        .collect();
    let frame = BorrowedFrame::Array(&parts);
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    // The buffer is exactly the encoded length, so this cannot fail.
    let written = encode_borrowed(&mut out[start..], &frame, false).unwrap_or(0);
    out.truncate(start + written);
}

/// Decodes a RESP array of bulk strings, the whole of `bytes`, into
/// slices of it; `None` if it is anything else.
pub(crate) fn decode_strings(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    match decode_range(bytes) {
        Ok(Some((RangeFrame::Array(items), n))) if n == bytes.len() => items
            .iter()
            .map(|item| match item {
                RangeFrame::BulkString((start, end)) => bytes.get(*start..*end),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Which of the two connections a handler serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Commands and their replies.
    Command,
    /// SUBSCRIBE, then messages.
    Subscriber,
}

/// The handler of either connection of one attempt.
struct Conn {
    redis: Redis,
    role: Role,
    generation: u64,
}

impl Conn {
    fn current(&self) -> bool {
        self.redis.shared.inner.borrow().generation == self.generation
    }

    /// Decodes one frame from the front of `data` and hands it on: a reply
    /// to its closure, a message to the program (its channel and payload
    /// borrowed from `data`, not copied). The bytes it took; `Ok(0)` if
    /// the frame is not all there yet.
    fn frame(&self, cx: &mut Context<'_>, data: &[u8]) -> Result<usize, String> {
        let not_resp = |e: redis_protocol::error::RedisProtocolError| {
            format!("Redis's reply is not RESP: {}", e.details())
        };
        match self.role {
            Role::Command => {
                let Some((frame, n)) = decode(data).map_err(not_resp)? else {
                    return Ok(0);
                };
                let reply = self.redis.shared.inner.borrow_mut().owed.pop_front();
                let (_, reply) = reply.ok_or("Redis sent a reply to nothing asked")?;
                reply(cx, Ok(Reply::from_frame(frame)));
                Ok(n)
            }
            Role::Subscriber => {
                let Some((frame, n)) = decode_range(data).map_err(not_resp)? else {
                    return Ok(0);
                };
                let RangeFrame::Array(items) = &frame else {
                    return Err("Redis sent a push that is not an array".to_owned());
                };
                let bulk = |item: Option<&RangeFrame>| match item {
                    Some(RangeFrame::BulkString((start, end))) => data.get(*start..*end),
                    _ => None,
                };
                let kind = bulk(items.first()).ok_or("Redis sent a push of no kind")?;
                if kind.eq_ignore_ascii_case(b"message") {
                    let (channel, payload) = bulk(items.get(1))
                        .zip(bulk(items.get(2)))
                        .ok_or("Redis sent a message without its channel or payload")?;
                    self.redis
                        .with_events(|events, redis| events.on_message(cx, redis, channel, payload));
                } else if kind.eq_ignore_ascii_case(b"subscribe") {
                    self.redis.shared.inner.borrow_mut().subscribed += 1;
                    self.redis.maybe_up(cx);
                }
                Ok(n)
            }
        }
    }
}

impl StreamHandler for Conn {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        if !self.current() {
            cx.abort();
            return;
        }
        // Redis must answer within the connect timeout (the subscriber's
        // confirmations): whatever else took the port does not hold the
        // link in Connecting. Once up, the command connection checks every
        // second that no reply is owed for too long.
        let timeout = self.redis.shared.inner.borrow().options.connect_timeout;
        match self.role {
            Role::Command => {
                cx.set_repeating(timeout.min(Duration::from_secs(1)));
                self.redis.shared.inner.borrow_mut().cmd_open = true;
            }
            Role::Subscriber => {
                cx.set_timer(timeout);
                let inner = self.redis.shared.inner.borrow();
                if !inner.channels.is_empty() {
                    let mut subscribe = Vec::new();
                    let args =
                        std::iter::once(&b"SUBSCRIBE"[..]).chain(inner.channels.iter().map(Vec::as_slice));
                    encode_command(&mut subscribe, &args.collect::<Vec<_>>());
                    cx.send_vec(subscribe);
                }
            }
        }
        self.redis.maybe_up(cx);
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let mut used = 0;
        while used < data.len() && self.current() {
            match self.frame(cx, &data[used..]) {
                Ok(0) => return used,
                Ok(n) => used += n,
                Err(why) => {
                    self.redis.down(cx, self.generation, &why);
                    cx.abort();
                    break;
                }
            }
        }
        data.len()
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _timer: crate::TimerId) {
        let late = {
            let inner = self.redis.shared.inner.borrow();
            let now = Instant::now();
            let owed_too_long = inner.owed.front().is_some_and(|(since, _)| {
                now.saturating_duration_since(*since) > inner.options.reply_timeout
            });
            match (self.role, inner.phase) {
                (Role::Subscriber, Phase::Connecting) => Some("no answer from Redis in time"),
                (Role::Command, Phase::Up) if owed_too_long => Some("a reply from Redis is overdue"),
                _ => None,
            }
        };
        if let Some(why) = late.filter(|_| self.current()) {
            self.redis.down(cx, self.generation, why);
            cx.abort();
        }
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        self.redis
            .down(cx, self.generation, "Redis closed the connection");
        cx.close();
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        // The first of the two to hear of it closes the link: the last
        // commands go out on the command connection, then both close
        // after flushing. The link is Closed first, so neither close
        // counts as an outage.
        if self.current() && self.redis.shared.inner.borrow().phase != Phase::Closed {
            if self.redis.is_up() {
                self.redis
                    .with_events(|events, redis| events.on_shutdown(cx, redis));
            }
            let (out, cmd, sub) = {
                let mut inner = self.redis.shared.inner.borrow_mut();
                let up = inner.phase == Phase::Up;
                inner.phase = Phase::Closed;
                let out = std::mem::take(&mut inner.out);
                (up.then_some(out), inner.cmd, inner.sub)
            };
            if let (Some(out), Some(cmd)) = (out, cmd) {
                cx.source(cmd).send(&out);
            }
            for key in [cmd, sub].into_iter().flatten() {
                cx.source(key).close();
            }
        }
        cx.close();
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let why = match reason {
            CloseReason::ConnectFailed(e) => format!("cannot connect: {e}"),
            CloseReason::Error(e) => format!("connection lost: {e}"),
            CloseReason::PeerClosed => "Redis closed the connection".to_owned(),
            other => format!("connection closed: {other:?}"),
        };
        self.redis.down(cx, self.generation, &why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings_and_decode_back() {
        let mut out = Vec::new();
        encode_command(&mut out, &[&b"SET"[..], b"k", b"a\r\nb"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
        assert_eq!(decode_strings(&out), Some(vec![&b"SET"[..], b"k", b"a\r\nb"]));
        assert_eq!(decode_strings(b"*1\r\n:1\r\n"), None, "not all strings");
        assert_eq!(decode_strings(&out[..out.len() - 1]), None, "cut short");
        assert_eq!(decode_strings(b"+OK\r\n"), None);
    }

    #[test]
    fn replies_convert_from_frames() {
        let frame = OwnedFrame::Array(vec![
            OwnedFrame::SimpleString(b"OK".to_vec()),
            OwnedFrame::Null,
            OwnedFrame::Integer(-2),
            OwnedFrame::Error("ERR no".into()),
        ]);
        assert_eq!(
            Reply::from_frame(frame),
            Reply::Array(vec![
                Reply::Status(b"OK".to_vec()),
                Reply::Nil,
                Reply::Integer(-2),
                Reply::Error("ERR no".into()),
            ])
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_in_the_upper_half_of_each_step() {
        let mut inner = Inner::new(
            "127.0.0.1:1".parse().expect("addr"),
            RedisOptions::default(),
            12345,
        );
        let mut delays = Vec::new();
        for attempts in 0..40 {
            inner.attempts = attempts;
            let base = Duration::from_millis(100)
                .saturating_mul(1 << attempts.min(16))
                .min(Duration::from_secs(2));
            let delay = inner.next_delay();
            assert!(
                delay >= base / 2 && delay <= base,
                "attempt {attempts}: {delay:?} for {base:?}"
            );
            delays.push(delay);
        }
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 30, "jittered: {delays:?}");
    }
}
