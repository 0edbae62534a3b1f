//! Chat: one room whose members are stream connections (TCP, Unix) and,
//! optionally, datagram peers (UDP), all in one reactor, with no locks.
//!
//! Lines end in `\n` (a trailing `\r` is dropped); bytes that are not UTF-8
//! are replaced, never fatal. Lines from the room that start with `* ` are
//! notices. Commands: `/nick NAME`, `/who`, `/quit`; anything else is said
//! to the other members as `NICK: TEXT`. The wire format, notices and limits
//! are in `docs/protocols.md`.
//!
//! How it fits together: [`Chat`] holds the [`Room`] in an `Rc<RefCell<_>>`
//! and is the listener's factory; each connection gets a [`ChatMember`], and
//! each datagram socket a [`ChatDatagram`], all sharing the room. The room
//! does no IO: its operations fill an [`Outbox`], which the handler delivers
//! after releasing the room, so no borrow of it is ever held across a
//! [`Context`] call. A line for many members is encoded once into an
//! `Rc<[u8]>` that every stream member's write queue shares
//! ([`Context::send_shared_to`]); a datagram member gets the same bytes
//! without the `\n`, one datagram per line.
//!
//! A stream member's state ([`ChatMember`]):
//!
//! ```text
//!  Connecting --open, room has space-------------> Active { idle }  welcomed; others: "* NICK joined"
//!  Connecting --open, room full-------------------> Refused         sent "* error: room is full"; closing
//!  Active     --bytes in--------------------------> Active          each line handled; a whole line pushes the idle timer back
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

mod command;
mod room;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

pub use command::{is_valid_nick, parse, Command, MAX_NICK};
pub use room::{Delivery, MemberId, Outbox, Outcome, Room, RoomFull, ROOM_FULL};

use crate::codec::line::{decode_line, LineStatus};
use crate::{
    Addr, CloseReason, ConnectionOptions, Context, DatagramHandler, ListenerOptions, OverflowPolicy,
    StreamFactory, StreamHandler, TimerId,
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
    /// `* error: room is full`.
    pub max_clients: usize,
    /// A member that sends nothing for this long is disconnected.
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
}

impl Chat {
    /// An empty room with these limits.
    pub fn new(config: ChatConfig) -> Chat {
        Chat {
            room: Rc::new(RefCell::new(Room::new(config))),
        }
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
        }
    }

    /// A handler that makes a datagram socket's peers members of this room.
    pub fn datagram_handler(&self) -> ChatDatagram {
        ChatDatagram {
            room: Rc::clone(&self.room),
            peers: HashMap::new(),
            timers: HashMap::new(),
        }
    }

    /// How many members the room has.
    pub fn member_count(&self) -> usize {
        self.room.borrow().len()
    }

    /// Every member's nick, in the order they joined.
    pub fn nicks(&self) -> Vec<String> {
        self.room
            .borrow()
            .nicks()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
}

impl StreamFactory for Chat {
    fn new_handler(&mut self, _peer: &Addr) -> Box<dyn StreamHandler> {
        Box::new(ChatMember {
            room: Rc::clone(&self.room),
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
            deliver(cx, &mut out);
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
                deliver(cx, &mut out);
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
            if !cx.is_open(cx.key()) {
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
            deliver(cx, &mut out);
            if outcome == Outcome::Left {
                self.phase = Phase::Left;
                cx.close();
                return data.len();
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
            deliver(cx, &mut out);
        }
        self.phase = Phase::Left;
    }
}

/// The datagram side of a [`Chat`] room: each peer address of the socket
/// is a member, each datagram one line.
///
/// A trailing `\n` or `\r\n` is optional; any other `\n` inside is taken
/// as a space. Lines for a datagram member go out one datagram each,
/// without the newline. A peer's life (a peer not in `peers` is a
/// stranger):
///
/// ```text
///  Stranger --datagram, room full----------> Stranger (sent "* error: room is full")
///  Stranger --datagram, room has space-----> Member   (welcomed, others told; then its line)
///  Member   --datagram---------------------> Member   (idle timer pushed back)
///  Member   --/quit, line too long, idle---> Stranger (others told "left")
///  Member   --socket closed----------------> Stranger (others told "left")
///  any      --reactor shutdown-------------> Stranger (room closed, nobody told)
/// ```
#[derive(Debug)]
pub struct ChatDatagram {
    room: Rc<RefCell<Room>>,
    /// Each member's idle timer, by address ...
    peers: HashMap<Addr, Option<TimerId>>,
    /// ... and the address of each timer, so a firing timer is found in O(1).
    timers: HashMap<TimerId, Addr>,
}

/// Where one datagram peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerPhase {
    /// Not in the room: its next datagram joins it, if there is room.
    Stranger,
    /// In the room; the timer is its idle timeout (`None` if the timer
    /// table was full: then it only leaves by `/quit` or a long line).
    Member { idle: Option<TimerId> },
}

impl ChatDatagram {
    fn phase(&self, addr: &Addr) -> PeerPhase {
        match self.peers.get(addr) {
            Some(&idle) => PeerPhase::Member { idle },
            None => PeerPhase::Stranger,
        }
    }

    /// `Stranger -> Member`: starts the idle timer of a peer that joined.
    fn admit(&mut self, cx: &mut Context<'_>, addr: &Addr, idle_timeout: Duration) {
        let idle = cx.set_timer(idle_timeout);
        if let Some(timer) = idle {
            self.timers.insert(timer, addr.clone());
        }
        self.peers.insert(addr.clone(), idle);
    }

    /// `Member -> Stranger`: forgets a peer that left the room, and its
    /// timer.
    fn forget(&mut self, cx: &mut Context<'_>, addr: &Addr) {
        if let Some(Some(timer)) = self.peers.remove(addr) {
            self.timers.remove(&timer);
            cx.cancel_timer(timer);
        }
    }
}

impl DatagramHandler for ChatDatagram {
    fn on_datagram(&mut self, cx: &mut Context<'_>, data: &[u8], from: &Addr) {
        let id = MemberId::Datagram {
            socket: cx.key(),
            addr: from.clone(),
        };
        let mut out = Outbox::new();
        let (max_line, idle_timeout) = {
            let room = self.room.borrow();
            (room.config().max_line, room.config().idle_timeout)
        };
        match self.phase(from) {
            // A stranger joins; its first datagram is then its first line.
            PeerPhase::Stranger => {
                let joined = self
                    .room
                    .borrow_mut()
                    .join(id.clone(), from.to_string(), &mut out);
                if joined.is_err() {
                    // Told so, and stays a stranger.
                    let refusal = ROOM_FULL.strip_suffix(b"\n").unwrap_or(ROOM_FULL);
                    cx.send_datagram(from, refusal);
                    return;
                }
                self.admit(cx, from, idle_timeout);
            }
            // A member spoke: it is not idle.
            PeerPhase::Member { idle } => {
                if let Some(timer) = idle {
                    cx.reset_timer(timer, idle_timeout);
                }
            }
        }
        let outcome = {
            let mut room = self.room.borrow_mut();
            match datagram_line(data, max_line) {
                Some(line) => room.handle_line(&id, line, &mut out),
                None => room.line_too_long(&id, &mut out),
            }
        };
        deliver(cx, &mut out);
        if outcome == Outcome::Left {
            self.forget(cx, from);
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        // Only idle timers are set here: this member was silent too long.
        let Some(addr) = self.timers.remove(&timer) else {
            return;
        };
        self.peers.remove(&addr);
        let id = MemberId::Datagram {
            socket: cx.key(),
            addr,
        };
        let mut out = Outbox::new();
        self.room.borrow_mut().leave(&id, &mut out);
        deliver(cx, &mut out);
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        self.room.borrow_mut().close();
        cx.close();
    }

    fn on_close(&mut self, cx: &mut Context<'_>, _reason: &CloseReason) {
        // The socket's timers went with it; its members leave.
        self.timers.clear();
        let mut out = Outbox::new();
        for (addr, _) in self.peers.drain() {
            let id = MemberId::Datagram {
                socket: cx.key(),
                addr,
            };
            self.room.borrow_mut().leave(&id, &mut out);
            deliver(cx, &mut out);
        }
    }
}

/// The line a datagram carries: without one trailing `\n` or `\r\n`, or
/// `None` if it is longer than `max_line`.
fn datagram_line(data: &[u8], max_line: usize) -> Option<&[u8]> {
    let line = data.strip_suffix(b"\n").unwrap_or(data);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (line.len() <= max_line).then_some(line)
}

/// Sends what the room asked for, emptying `out`: a stream member's queue
/// takes a reference to the shared line; a datagram member gets it as one
/// datagram without the newline. A member that is gone, or whose queue is
/// over its cap, just misses it (the reactor cuts the latter).
fn deliver(cx: &mut Context<'_>, out: &mut Outbox) {
    for Delivery { to, line } in out.drain(..) {
        match to {
            MemberId::Stream(key) => {
                cx.send_shared_to(key, &line);
            }
            MemberId::Datagram { socket, addr } => {
                let bare = line.strip_suffix(b"\n").unwrap_or(&line);
                cx.send_datagram_via(socket, &addr, bare);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_line_drops_one_line_end_and_checks_the_limit() {
        assert_eq!(datagram_line(b"hi", 4), Some(&b"hi"[..]));
        assert_eq!(datagram_line(b"hi\n", 4), Some(&b"hi"[..]));
        assert_eq!(datagram_line(b"hi\r\n", 4), Some(&b"hi"[..]));
        assert_eq!(datagram_line(b"hi\n\n", 4), Some(&b"hi\n"[..]));
        assert_eq!(datagram_line(b"four\r\n", 4), Some(&b"four"[..]));
        assert_eq!(datagram_line(b"fives", 4), None);
        assert_eq!(datagram_line(b"", 0), Some(&b""[..]));
    }

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
