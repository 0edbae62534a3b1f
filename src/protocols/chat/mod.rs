//! Chat: one room whose members are stream connections (TCP, Unix) and,
//! optionally, datagram peers (UDP), all in one reactor, with no locks.
//!
//! Lines end in `\n` (a trailing `\r` is dropped); bytes that are not UTF-8
//! are replaced, never fatal. Lines from the room that start with `* ` are
//! notices. In relayed text and in nicks every control character but tab,
//! and U+2028 and U+2029, become U+FFFD ([`crate::text`]), so no member can
//! forge a notice or drive another's terminal. Commands: `/nick NAME`
//! (unique without regard to ASCII case), `/who`, `/quit`; anything else is
//! said to the other members as `NICK: TEXT`. A datagram stranger is only
//! greeted by its first datagram and joins with its second
//! ([`ChatDatagram`]). The wire format, notices and limits are in
//! `docs/protocols.md`.
//!
//! How it fits together: [`Chat`] holds the [`Room`] in an `Rc<RefCell<_>>`
//! and is the listener's factory; each connection gets a [`ChatMember`], and
//! each datagram socket a [`ChatDatagram`], all sharing the room. The room
//! does no IO: its operations fill an [`Outbox`], which the handler delivers
//! after releasing the room, so no borrow of it is ever held across a
//! [`Context`] call. A line for many members is encoded once into an
//! `Rc<[u8]>` that every stream member's write queue shares
//! ([`SourceRef::send_shared`](crate::SourceRef::send_shared)); a datagram member gets the same bytes
//! without the `\n`, one datagram per line.
//!
//! A stream member's state ([`ChatMember`]):
//!
//! ```text
//!  Connecting --open, room has space-------------> Active { idle }  welcomed; others: "* NICK joined"
//!  Connecting --open, room full-------------------> Refused         sent "* error: room is full"; closing
//!  Active     --bytes in--------------------------> Active          each line handled; a whole line pushes the idle timer back
//!  Active     --its join or /nick claimed---------> Active          (a room over servers) reading paused until the wider room answers
//!  Active     --/quit-----------------------------> Left            sent "* bye"; others: "* NICK left"; closing
//!  Active     --line over max_line----------------> Left            sent "* error: line too long"; others told; closing
//!  Active     --idle timer fired------------------> Left            others told; closing
//!  Active     --peer FIN--------------------------> Left            others told; closing after the flush
//!  Active     --reset, output cap, drain timeout--> Left            (on_close) others told
//!  Active     --reactor shutdown------------------> Left            room closed as a whole, nobody told; closing after the flush
//!  Refused, Left --anything-----------------------> same            input discarded; on_close does nothing
//! ```
//!
//! Always true:
//! - a member's leave is announced to the others exactly once, whatever the
//!   reason, because only the `Active -> Left` transition leaves the room
//!   and the room ignores a second leave;
//! - every member has one idle timer, pushed back in O(1) by each whole
//!   line it sends: bytes of an unfinished line are not activity, so a
//!   client that trickles a line a byte at a time (slowloris) is cut after
//!   the idle timeout like a silent one, and holds at most `max_line` bytes
//!   meanwhile;
//! - a member whose unsent output passes `max_outbuf` is cut by the
//!   reactor ([`OverflowPolicy::Close`]); the room goes on without it;
//! - at shutdown the room empties at once, without `left` notices to
//!   members that are themselves leaving; output already queued is flushed.
//!
//! **One room over several shards** ([`crate::shard`], [`Chat::sharded`]).
//! Each shard keeps its own members (the connections its listeners
//! accepted, the peers of its datagram sockets) in its own [`Room`], and
//! delivers to them itself. What must be one for the whole room, the nick
//! registry (unique without regard to ASCII case), the member count
//! against `max_clients` (and the datagram members' half of it) and the
//! join order `/who` lists, lives in one [`SharedRoom`] behind a short
//! `std::sync::Mutex`: a join, a `/nick` or a `/who` is answered in the
//! same callback as with one reactor, where a registry owned by one shard
//! would make every join and rename wait for that shard's turn and keep
//! half-done requests in the handlers. Nothing under the lock does IO or
//! fans out; the longest critical section is `/who`'s copy of the nicks.
//!
//! A line a member's shard broadcasts (a said line, a join, a leave, a
//! rename) is delivered by that shard to its own members and sent *once*
//! to each other shard ([`Shards::send`]) as an `Arc<[u8]>` (converted
//! once from the room's `Rc<[u8]>`); there it becomes one `Rc<[u8]>`
//! again, shared by the write queues of that shard's members
//! ([`Room::relay`]). A line costs each other shard one message. The
//! lines of one callback leave for each other shard as one batch at once
//! ([`Shards::flush`]), not at the end of the turn, so that the other
//! shards write a line to their members while this one writes it to its
//! own: the last member of the room gets it after about one shard's
//! fan-out, not two. Batches that reach a shard before it wakes cost it
//! one wakeup together. Messages from one shard to another run in the
//! order sent, so each sender's lines arrive in order everywhere. A shard
//! so far behind that its queue from this one is full
//! ([`SendError::Full`]) misses the lines sent meanwhile: they are dropped
//! for it alone, never waited for, and a warning is logged once per such
//! episode (`tests/chat_lagging_shard.rs`). With one shard
//! ([`Chat::new`], or [`Chat::sharded`] with one shard) nothing is shared
//! and nothing is sent: the room is exactly the single-reactor room.
//!
//! **One room over several servers** ([`Chat::over_redis`]). Each server's
//! part ([`Room::wide`]) keeps its own members and tells the other servers
//! what they do through a Redis channel, batched once per turn; nicks are
//! claimed in Redis, and the other servers' members are known from their
//! messages and their presence. How, and what holds while Redis is away:
//! `over_redis.rs`.

mod command;
mod datagram;
mod over_redis;
mod room;
mod shared;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};

pub use command::{is_valid_nick, parse, Command, MAX_NICK};
pub use datagram::{ChatDatagram, GREETING_TIMEOUT};
pub use over_redis::{decode_message, encode_message, is_valid_room, KEY_TTL, REFRESH, SILENCE};
pub use room::{
    Claim, ClaimAnswer, ClaimKind, Delivery, MemberId, Outbox, Outcome, Remote, Room, RoomEvent, RoomFull,
    MAX_WHO_DATAGRAM, ROOM_FULL,
};
pub use shared::SharedRoom;

use crate::codec::line::{decode_line, LineStatus};
use crate::shard::{SendError, Shards};
use crate::{
    Addr, CloseReason, ConnectionOptions, Context, ListenerOptions, OverflowPolicy, Reactor, StreamFactory,
    StreamHandler, TimerId,
};

/// The room's limits.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Longest line, in bytes without its line end; a longer one gets
    /// `* error: line too long` and its member is disconnected.
    pub max_line: usize,
    /// Most unsent output held for a stream member; past it the member is
    /// disconnected, and the room goes on.
    pub max_outbuf: usize,
    /// Most members, stream and datagram together; one more gets
    /// `* error: room is full`. Datagram members, greeted ones included,
    /// hold at most half of it ([`Room::max_datagram_members`]).
    pub max_clients: usize,
    /// A member that sends nothing for this long is disconnected. A greeted
    /// datagram peer gets the shorter of this and [`GREETING_TIMEOUT`] to
    /// send its second datagram.
    pub idle_timeout: Duration,
}

impl Default for ChatConfig {
    /// The contract's defaults: 4096-byte lines, 1 MiB of output, 10,000
    /// members, 600 s of silence.
    fn default() -> Self {
        ChatConfig {
            max_line: 4096,
            max_outbuf: 1024 * 1024,
            max_clients: 10_000,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// A chat room, and the factory of its stream members.
///
/// Clones share the room: pass one clone per listener, and
/// [`Chat::datagram_handler`] per datagram socket.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use evloop::{Reactor, protocols::chat::{Chat, ChatConfig}};
/// let mut reactor = Reactor::new()?;
/// let chat = Chat::new(ChatConfig::default());
/// reactor.listen_tcp_with("127.0.0.1:7100".parse()?, chat.listener_options(), chat.clone())?;
/// reactor.bind_udp("127.0.0.1:7100".parse()?, chat.datagram_handler())?;
/// reactor.run()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Chat {
    room: Rc<RefCell<Room>>,
    link: Option<Rc<Link>>,
}

impl Chat {
    /// An empty room with these limits.
    pub fn new(config: ChatConfig) -> Chat {
        Chat {
            room: Rc::new(RefCell::new(Room::new(config))),
            link: None,
        }
    }

    /// This shard's part of a room spread over every shard of `shards`:
    /// call it in each shard's setup with the same `shared` (made once,
    /// before [`shard::run`](crate::shard::run)) and the same `config`.
    /// The room is then one room (see the module docs): notices, `/who`,
    /// unique nicks and `max_clients` cover every shard. With one shard it
    /// is [`Chat::new`]: `shared` is not used.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use evloop::protocols::chat::{Chat, ChatConfig, SharedRoom};
    /// use evloop::shard::{self, ShardOptions};
    /// use evloop::ListenerOptions;
    ///
    /// let shared = SharedRoom::new();
    /// let options = ShardOptions { threads: 2, ..ShardOptions::default() };
    /// shard::run(options, |reactor, shards| {
    ///     let chat = Chat::sharded(ChatConfig::default(), shards, &shared);
    ///     let listener = ListenerOptions { reuse_port: true, ..chat.listener_options() };
    ///     reactor.listen_tcp_with("127.0.0.1:7100".parse().expect("addr"), listener, chat)?;
    ///     Ok(())
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn sharded(config: ChatConfig, shards: &Shards, shared: &SharedRoom) -> Chat {
        if shards.count() <= 1 {
            return Chat::new(config);
        }
        let room = Rc::new(RefCell::new(Room::sharded(config, shared.clone())));
        PARTS.with(|parts| {
            let mut parts = parts.borrow_mut();
            parts.retain(|_, part| part.strong_count() > 0);
            parts.insert(shared.id(), Rc::downgrade(&room));
        });
        let link = Link {
            shards: shards.clone(),
            room: shared.id(),
            lagging: (0..shards.count()).map(|_| Cell::new(0)).collect(),
        };
        Chat {
            room,
            link: Some(Rc::new(link)),
        }
    }

    /// This server's part of the room `room` spread over every chat server
    /// that shares the Redis server at `addr` ([`is_valid_room`] names
    /// allowed): joins, leaves, renames and lines cross to the other
    /// servers' members, `/who` lists them all, and a nick is unique in
    /// the whole room. The link is opened from `reactor` at once, and kept
    /// open: while Redis is out of reach the room goes on with this
    /// server's members alone, and rejoins once it is back. How it is
    /// kept in Redis: `src/protocols/chat/over_redis.rs`; the whole
    /// picture: `docs/scaling.md`.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use evloop::{Reactor, protocols::chat::{Chat, ChatConfig}};
    /// let mut reactor = Reactor::new()?;
    /// let redis = "127.0.0.1:6379".parse()?;
    /// let chat = Chat::over_redis(&mut reactor, ChatConfig::default(), redis, "lobby");
    /// reactor.listen_tcp_with("127.0.0.1:7100".parse()?, chat.listener_options(), chat.clone())?;
    /// reactor.run()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn over_redis(
        reactor: &mut Reactor,
        config: ChatConfig,
        addr: std::net::SocketAddr,
        room: &str,
    ) -> Chat {
        let chat = Chat {
            room: Rc::new(RefCell::new(Room::wide(config))),
            link: None,
        };
        over_redis::Federation::start(reactor, Rc::clone(&chat.room), addr, room);
        chat
    }

    /// The options its listeners need: the output cap (`max_outbuf`, a
    /// member over it is cut), and room for a partial line of `max_line`.
    ///
    /// The room itself turns away members past `max_clients`, counting
    /// datagram members too. The listener's cap, twice that, only bounds
    /// the connections still on their way out or being turned away.
    pub fn listener_options(&self) -> ListenerOptions {
        let room = self.room.borrow();
        let config = room.config();
        let defaults = ConnectionOptions::default();
        ListenerOptions {
            max_connections: config.max_clients.saturating_mul(2).max(64),
            connection: ConnectionOptions {
                max_queued: config.max_outbuf,
                overflow: OverflowPolicy::Close,
                high_water: defaults.high_water.min(config.max_outbuf),
                low_water: defaults.low_water.min(config.max_outbuf / 4),
                // A partial line is at most max_line bytes and a `\r`.
                max_pending_input: config.max_line.saturating_add(2),
                ..defaults
            },
            ..ListenerOptions::default()
        }
    }

    /// A handler that makes a datagram socket's peers members of this room.
    pub fn datagram_handler(&self) -> ChatDatagram {
        ChatDatagram::new(Rc::clone(&self.room), self.link.clone())
    }

    /// How many slots of the room are held: its members, and the datagram
    /// peers greeted but not yet joined (over every shard, for a sharded
    /// room).
    pub fn member_count(&self) -> usize {
        let room = self.room.borrow();
        match room.shared() {
            None => room.len(),
            Some(shared) => shared.member_count(),
        }
    }

    /// Every member's nick, in the order they joined (as `/who` lists them:
    /// greeted datagram peers are not members yet).
    pub fn nicks(&self) -> Vec<String> {
        self.room.borrow().all_nicks()
    }
}

impl StreamFactory for Chat {
    fn new_handler(&mut self, _peer: &Addr) -> Box<dyn StreamHandler> {
        Box::new(ChatMember {
            room: Rc::clone(&self.room),
            link: self.link.clone(),
            phase: Phase::Connecting,
        })
    }

    fn farewell(&mut self, _peer: &Addr) -> Option<Vec<u8>> {
        Some(ROOM_FULL.to_vec())
    }
}

/// Where a stream member stands; the transitions are in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted; `on_open` has not run yet.
    Connecting,
    /// Turned away because the room was full; closing.
    Refused,
    /// In the room. `idle` is its idle timer (`None` only if the timer
    /// table was full).
    Active { idle: Option<TimerId> },
    /// Out of the room; closing or closed.
    Left,
}

/// One stream member of a [`Chat`] room: a connection's handler.
#[derive(Debug)]
pub struct ChatMember {
    room: Rc<RefCell<Room>>,
    /// The other shards, for a sharded room.
    link: Option<Rc<Link>>,
    phase: Phase,
}

impl ChatMember {
    /// `Active -> Left`: out of the room (the others told, if it was still
    /// in), the connection closed after flushing. The idle timer goes with
    /// the connection.
    fn leave(&mut self, cx: &mut Context<'_>) {
        if let Phase::Active { idle } = self.phase {
            if let Some(timer) = idle {
                cx.cancel_timer(timer);
            }
            let mut out = Outbox::new();
            self.room
                .borrow_mut()
                .leave(&MemberId::Stream(cx.key()), &mut out);
            send_out(cx, &mut out, &self.room, self.link.as_deref());
        }
        self.phase = Phase::Left;
        cx.close();
    }
}

impl StreamHandler for ChatMember {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        // An unnamed Unix peer has no address to go by; the room makes the
        // nick unique.
        let nick = match cx.peer_addr() {
            Some(Addr::Unix(None)) | None => "unix".to_owned(),
            Some(addr) => addr.to_string(),
        };
        let mut out = Outbox::new();
        let (joined, idle_timeout) = {
            let mut room = self.room.borrow_mut();
            let joined = room.join(MemberId::Stream(cx.key()), nick, &mut out);
            (joined, room.config().idle_timeout)
        };
        match joined {
            Ok(()) => {
                self.phase = Phase::Active {
                    idle: cx.set_timer(idle_timeout),
                };
                send_out(cx, &mut out, &self.room, self.link.as_deref());
                if self.room.borrow().is_waiting(&MemberId::Stream(cx.key())) {
                    // Its nick is being claimed in the wider room: its
                    // lines wait, unread, for the welcome.
                    cx.pause_reading();
                }
            }
            Err(RoomFull) => {
                self.phase = Phase::Refused;
                cx.send(ROOM_FULL);
                cx.close();
            }
        }
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let Phase::Active { idle } = self.phase else {
            return data.len();
        };
        let (max_line, idle_timeout) = {
            let room = self.room.borrow();
            (room.config().max_line, room.config().idle_timeout)
        };
        let id = MemberId::Stream(cx.key());
        let mut out = Outbox::new();
        let mut used = 0;
        loop {
            // Cut meanwhile (its own output over the cap): its on_close
            // comes next and takes it out of the room; say nothing more.
            if !cx.source(cx.key()).is_open() {
                return data.len();
            }
            let outcome = {
                let mut room = self.room.borrow_mut();
                match decode_line(&data[used..], max_line) {
                    Ok(LineStatus::Complete { line, consumed }) => {
                        used += consumed;
                        if let Some(timer) = idle {
                            cx.reset_timer(timer, idle_timeout);
                        }
                        room.handle_line(&id, line, &mut out)
                    }
                    Ok(LineStatus::Partial) => return used,
                    Err(_) => room.line_too_long(&id, &mut out),
                }
            };
            // One line at a time: a chunk of many lines for many members
            // never holds more than one line's deliveries.
            send_out(cx, &mut out, &self.room, self.link.as_deref());
            if outcome == Outcome::Left {
                self.phase = Phase::Left;
                cx.close();
                return data.len();
            }
            if self.room.borrow().is_waiting(&id) {
                // A rename waits for the wider room's answer, and so do
                // the lines after it: they are read once it is in.
                cx.pause_reading();
                return used;
            }
        }
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        // The peer will say nothing more: it leaves now, not after the flush.
        self.leave(cx);
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if self.phase == (Phase::Active { idle: Some(timer) }) {
            self.phase = Phase::Active { idle: None };
            self.leave(cx);
        }
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        self.room.borrow_mut().close();
        self.phase = Phase::Left;
        cx.close();
    }

    fn on_close(&mut self, cx: &mut Context<'_>, _reason: &CloseReason) {
        if let Phase::Active { .. } = self.phase {
            let mut out = Outbox::new();
            self.room
                .borrow_mut()
                .leave(&MemberId::Stream(cx.key()), &mut out);
            send_out(cx, &mut out, &self.room, self.link.as_deref());
        }
        self.phase = Phase::Left;
    }
}

/// Sends what the room asked for ([`deliver`]), then, for a sharded room,
/// the lines it broadcast to the other shards ([`Link::forward`]).
fn send_out(cx: &mut Context<'_>, out: &mut Outbox, room: &RefCell<Room>, link: Option<&Link>) {
    deliver(cx, out);
    if let Some(link) = link {
        link.forward(room);
    }
}

/// Sends what the room asked for, emptying `out`: a stream member's queue
/// takes a reference to the shared line; a datagram member gets it as one
/// datagram without the newline. A member that is gone, or whose queue is
/// over its cap, just misses it (the reactor cuts the latter).
pub(super) fn deliver(cx: &mut Context<'_>, out: &mut Outbox) {
    for Delivery { to, line } in out.drain(..) {
        match to {
            MemberId::Stream(key) => {
                cx.source(key).send_shared(&line);
            }
            MemberId::Datagram { socket, addr } => {
                let bare = line.strip_suffix(b"\n").unwrap_or(&line);
                cx.source(socket).send_datagram(&addr, bare);
            }
        }
    }
}

thread_local! {
    /// This thread's part of each sharded room, by the room's number: how a
    /// message from another shard (a `Send` closure, which cannot carry an
    /// `Rc`) finds the members it is for.
    static PARTS: RefCell<HashMap<u64, Weak<RefCell<Room>>>> = RefCell::new(HashMap::new());
}

/// A sharded room's way to the other shards.
struct Link {
    shards: Shards,
    /// The room's number ([`SharedRoom`]).
    room: u64,
    /// Per shard: lines dropped for it since its queue from this shard
    /// filled (0: not lagging).
    lagging: Vec<Cell<u64>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("shards", &self.shards)
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Sends each line the room broadcast since the last call, once, to
    /// each other shard, in order. A shard whose queue from this one is
    /// full misses the line (warned once per episode); a stopped one is
    /// skipped.
    fn forward(&self, room: &RefCell<Room>) {
        let lines = room.borrow_mut().take_forwarded();
        let me = self.shards.id();
        for (line, stamp) in lines {
            let line: Arc<[u8]> = Arc::from(&line[..]);
            for to in (0..self.shards.count()).filter(|&to| to != me) {
                let id = self.room;
                let bytes = Arc::clone(&line);
                match self
                    .shards
                    .send(to, move |reactor| relay(reactor, id, &bytes, stamp))
                {
                    Ok(()) => {
                        let dropped = self.lagging[to].replace(0);
                        if dropped > 0 {
                            info!("chat: shard {to} caught up; {dropped} lines were dropped for its members");
                        }
                    }
                    Err(SendError::Full(_)) => {
                        let dropped = self.lagging[to].get();
                        if dropped == 0 {
                            warn!("chat: shard {to} is too far behind: lines for its members are dropped until it catches up");
                        }
                        self.lagging[to].set(dropped + 1);
                    }
                    Err(SendError::Stopped(_)) => debug!("chat: shard {to} has stopped; line not sent"),
                }
            }
        }
        // The other shards write the lines to their members while this one
        // writes them to its own at step 9, not after.
        self.shards.flush();
    }
}

/// Runs on the shard a line was sent to: its members get it, sharing one
/// copy of it.
fn relay(reactor: &mut Reactor, room: u64, line: &Arc<[u8]>, stamp: u64) {
    let part = PARTS.with(|parts| parts.borrow().get(&room).and_then(Weak::upgrade));
    let Some(part) = part else {
        return;
    };
    let line: Rc<[u8]> = Rc::from(&line[..]);
    let mut out = Outbox::new();
    part.borrow().relay(&line, stamp, &mut out);
    deliver_from(reactor, &mut out);
}

/// [`deliver`], from outside any callback (a shard's message, a hook, a
/// reactor timer): each line is written at the end of the turn with the
/// rest of what its member is sent in it.
pub(super) fn deliver_from(reactor: &mut Reactor, out: &mut Outbox) {
    for Delivery { to, line } in out.drain(..) {
        match to {
            MemberId::Stream(key) => {
                reactor.send_shared_to(key, &line);
            }
            MemberId::Datagram { socket, addr } => {
                let bare = line.strip_suffix(b"\n").unwrap_or(&line);
                reactor.send_datagram_to(socket, &addr, bare);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_options_carry_the_output_cap_and_line_room() {
        let chat = Chat::new(ChatConfig {
            max_line: 64,
            max_outbuf: 65536,
            max_clients: 3,
            idle_timeout: Duration::from_secs(1),
        });
        let options = chat.listener_options();
        assert_eq!(options.connection.max_queued, 65536);
        assert_eq!(options.connection.overflow, OverflowPolicy::Close);
        assert!(options.connection.high_water <= 65536);
        assert!(options.connection.low_water <= options.connection.high_water);
        assert_eq!(options.connection.max_pending_input, 66);
        assert!(options.max_connections >= 3);
    }
}
