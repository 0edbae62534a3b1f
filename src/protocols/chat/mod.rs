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
mod datagram;
mod room;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

pub use command::{is_valid_nick, parse, Command, MAX_NICK};
pub use datagram::{ChatDatagram, GREETING_TIMEOUT};
pub use room::{Delivery, MemberId, Outbox, Outcome, Room, RoomFull, MAX_WHO_DATAGRAM, ROOM_FULL};

use crate::codec::line::{decode_line, LineStatus};
use crate::{
    Addr, CloseReason, ConnectionOptions, Context, ListenerOptions, OverflowPolicy, StreamFactory,
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
            ..ListenerOptions::default()
        }
    }

    /// A handler that makes a datagram socket's peers members of this room.
    pub fn datagram_handler(&self) -> ChatDatagram {
        ChatDatagram::new(Rc::clone(&self.room))
    }

    /// How many slots of the room are held: its members, and the datagram
    /// peers greeted but not yet joined.
    pub fn member_count(&self) -> usize {
        self.room.borrow().len()
    }

    /// Every member's nick, in the order they joined (as `/who` lists them:
    /// greeted datagram peers are not members yet).
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

/// Sends what the room asked for, emptying `out`: a stream member's queue
/// takes a reference to the shared line; a datagram member gets it as one
/// datagram without the newline. A member that is gone, or whose queue is
/// over its cap, just misses it (the reactor cuts the latter).
fn deliver(cx: &mut Context<'_>, out: &mut Outbox) {
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
