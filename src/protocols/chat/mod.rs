//! Chat broadcast: one room, members over TCP (or Unix) streams and over
//! datagrams, in one reactor with no locks.
//!
//! Lines end in `\n` (a trailing `\r` is dropped); bytes that are not
//! UTF-8 are replaced. Lines starting with `* ` are notices. Commands:
//! `/nick NAME`, `/who`, `/quit`. See `docs/protocols.md` for the wire
//! format. The room is shared by every handler through `Rc<RefCell<_>>`:
//! handlers run one at a time on the reactor's thread, and a context call
//! never runs another handler, so a borrow never meets another.
//!
//! A stream member's life:
//!
//! ```text
//!  Connecting --on_open, room full---------------> Refused  (sent "* error: room is full", closing)
//!  Connecting --on_open, room has space----------> Active   (welcomed, others told "joined")
//!  Active     --line-----------------------------> Active   (idle timer pushed back)
//!  Active     --/quit, line too long, idle-------> Left     (others told "left", closing)
//!  Active     --peer closed, error, output cap---> Left     (others told "left")
//! ```
//!
//! A datagram peer's life:
//!
//! ```text
//!  Stranger --datagram, room full----------> Stranger (sent "* error: room is full")
//!  Stranger --datagram, room has space-----> Member   (welcomed, others told; then its line)
//!  Member   --datagram---------------------> Member   (idle timer pushed back)
//!  Member   --/quit, line too long, idle---> Stranger (others told "left")
//!  Member   --socket closed----------------> Stranger (others told "left")
//! ```
//!
//! Always true: a member's leave is announced to the others exactly once;
//! a line for several members is encoded once and shared; the room holds
//! only members whose connection (or socket) is still there, so it never
//! sends to one that is gone. On a reactor shutdown the room closes: each
//! stream member is closed after its queued output is flushed, members
//! leave without notices (all are leaving), and no one joins.

mod command;
mod room;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

pub use command::{is_valid_nick, parse, Command, MAX_NICK};
pub use room::{MemberId, Outcome, Room};

use crate::codec::line::{decode_line, LineStatus};
use crate::{
    Addr, CloseReason, ConnectionOptions, Context, DatagramHandler, ListenerOptions, OverflowPolicy,
    StreamFactory, StreamHandler, TimerId,
};

/// The room's limits.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Longest line, in bytes; a longer one gets `* error: line too long`
    /// and the member is disconnected.
    pub max_line: usize,
    /// Most unsent output for a stream member; past it the member is
    /// disconnected, and the room goes on.
    pub max_outbuf: usize,
    /// Most members; one more gets `* error: room is full`.
    pub max_clients: usize,
    /// A member silent this long is disconnected.
    pub idle_timeout: Duration,
}

impl Default for ChatConfig {
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
    /// An empty room.
    pub fn new(config: ChatConfig) -> Chat {
        Chat {
            room: Rc::new(RefCell::new(Room::new(config))),
        }
    }

    /// Listener options that enforce `max_outbuf`: a member that does not
    /// read is disconnected when its queue passes it.
    pub fn listener_options(&self) -> ListenerOptions {
        let max_outbuf = self.room.borrow().config.max_outbuf;
        let defaults = ConnectionOptions::default();
        ListenerOptions {
            // The room enforces max_clients itself, counting datagram members.
            max_connections: usize::MAX,
            connection: ConnectionOptions {
                max_queued: max_outbuf,
                overflow: OverflowPolicy::Close,
                high_water: defaults.high_water.min(max_outbuf),
                low_water: defaults.low_water.min(max_outbuf / 4),
                ..defaults
            },
        }
    }

    /// A handler that brings a datagram socket's peers into this room.
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
}

impl StreamFactory for Chat {
    fn new_handler(&mut self, _peer: &Addr) -> Box<dyn StreamHandler> {
        Box::new(ChatMember {
            room: Rc::clone(&self.room),
            phase: Phase::Connecting,
        })
    }
}

/// Where a stream member stands. Every change of phase is in one of the
/// `StreamHandler` callbacks below, named beside each variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted, not yet opened. Leaves in `on_open`: to `Refused` if the
    /// room is full, else to `Active`.
    Connecting,
    /// Turned away: the room was full. It was sent `* error: room is full`
    /// and is closing; it never was a member, so its close tells no one.
    Refused,
    /// In the room; the timer is its idle timeout, pushed back by `on_data`.
    /// Leaves to `Left` on `/quit` or a line too long (`on_data`), on the
    /// idle timer (`on_timer`), or on any close (`on_close`).
    Active { idle: Option<TimerId> },
    /// Out of the room, its leave announced; the connection is closing or
    /// closed. Final.
    Left,
}

/// One stream member of a [`Chat`] room.
#[derive(Debug)]
pub struct ChatMember {
    room: Rc<RefCell<Room>>,
    phase: Phase,
}

impl ChatMember {
    /// Leaves the room (announced once) and closes the connection.
    fn leave(&mut self, cx: &mut Context<'_>) {
        if let Phase::Active { idle } = self.phase {
            if let Some(timer) = idle {
                cx.cancel_timer(timer);
            }
            self.room.borrow_mut().leave(cx, &MemberId::Stream(cx.key()));
        }
        self.phase = Phase::Left;
        cx.close();
    }
}

impl StreamHandler for ChatMember {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let mut room = self.room.borrow_mut();
        if room.is_full() {
            cx.send(b"* error: room is full\n");
            self.phase = Phase::Refused;
            return cx.close();
        }
        // An unnamed Unix peer has no address to go by; the room makes the
        // nick unique.
        let nick = match cx.peer_addr() {
            Some(Addr::Unix(None)) | None => "unix".to_string(),
            Some(addr) => addr.to_string(),
        };
        room.join(cx, MemberId::Stream(cx.key()), nick);
        self.phase = Phase::Active {
            idle: cx.set_timer(room.config.idle_timeout),
        };
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let Phase::Active { idle } = self.phase else {
            return data.len();
        };
        let (max_line, idle_timeout) = {
            let room = self.room.borrow();
            (room.config.max_line, room.config.idle_timeout)
        };
        if let Some(timer) = idle {
            cx.reset_timer(timer, idle_timeout);
        }
        let id = MemberId::Stream(cx.key());
        let mut used = 0;
        loop {
            match decode_line(&data[used..], max_line) {
                Ok(LineStatus::Complete { line, consumed }) => {
                    used += consumed;
                    let outcome = self.room.borrow_mut().handle_line(cx, &id, line);
                    if outcome == Outcome::Quit {
                        self.phase = Phase::Left;
                        cx.close();
                        return data.len();
                    }
                }
                Ok(LineStatus::Partial) => return used,
                Err(_) => {
                    self.room.borrow().notice(cx, &id, "error: line too long");
                    self.leave(cx);
                    return data.len();
                }
            }
        }
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        // Everyone goes now: no more notices. Queued output is flushed
        // before the close; on_close then takes the member out of the room.
        self.room.borrow_mut().close();
        cx.close();
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _timer: TimerId) {
        if let Phase::Active { .. } = self.phase {
            self.phase = Phase::Active { idle: None };
            self.leave(cx);
        }
    }

    fn on_close(&mut self, cx: &mut Context<'_>, _reason: &CloseReason) {
        if let Phase::Active { .. } = self.phase {
            self.room.borrow_mut().leave(cx, &MemberId::Stream(cx.key()));
        }
        self.phase = Phase::Left;
    }
}

/// The datagram side of a [`Chat`] room: each peer address of the socket is
/// a member, each datagram one line.
///
/// A peer's life, as `PeerPhase` (a peer not in `peers` is a stranger):
///
/// ```text
///  Stranger --datagram, room full----------> Stranger (sent "* error: room is full")
///  Stranger --datagram, room has space-----> Member   (welcomed, others told; then its line)
///  Member   --datagram---------------------> Member   (idle timer pushed back)
///  Member   --/quit, line too long, idle---> Stranger (others told "left")
///  Member   --socket closed----------------> Stranger (others told "left")
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

    /// Forgets a peer that left the room, and its timer.
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
        // One datagram is one line; its newline, if sent, is not part of it.
        let line = data.strip_suffix(b"\n").unwrap_or(data);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let idle_timeout = self.room.borrow().config.idle_timeout;
        match self.phase(from) {
            // A stranger with no room: told so, and stays a stranger.
            PeerPhase::Stranger if self.room.borrow().is_full() => {
                cx.send_datagram(from, b"* error: room is full");
                return;
            }
            // A stranger joins; its first datagram is then its first line.
            PeerPhase::Stranger => {
                self.room.borrow_mut().join(cx, id.clone(), from.to_string());
                let idle = cx.set_timer(idle_timeout);
                if let Some(timer) = idle {
                    self.timers.insert(timer, from.clone());
                }
                self.peers.insert(from.clone(), idle);
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
            if line.len() > room.config.max_line {
                room.notice(cx, &id, "error: line too long");
                room.leave(cx, &id);
                Outcome::Quit
            } else {
                room.handle_line(cx, &id, line)
            }
        };
        if outcome == Outcome::Quit {
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
        self.room.borrow_mut().leave(cx, &id);
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        self.room.borrow_mut().close();
        cx.close();
    }

    fn on_close(&mut self, cx: &mut Context<'_>, _reason: &CloseReason) {
        self.room.borrow_mut().leave_socket(cx, cx.key());
        // The socket's timers went with it.
        self.peers.clear();
        self.timers.clear();
    }
}
