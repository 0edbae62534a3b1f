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
//!  (accepted) --room full---------------------> Refused  (sent "* error: room is full", closing)
//!  (accepted) --room has space----------------> Active   (welcomed, others told "joined")
//!  Active     --line--------------------------> Active   (idle timer pushed back)
//!  Active     --/quit, line too long, idle----> Left     (others told "left", closing)
//!  Active     --peer closed, error, output cap-> Left    (others told "left")
//! ```
//!
//! A datagram member joins with its first datagram and leaves on `/quit`, a
//! line too long, or `idle_timeout` of silence.

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
            idle: HashMap::new(),
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

/// Where a stream member stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted, not yet opened.
    Connecting,
    /// Turned away: the room was full.
    Refused,
    /// In the room; the timer is its idle timeout.
    Active { idle: Option<TimerId> },
    /// Out of the room; the connection is closing or closed.
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
        let nick = cx
            .peer_addr()
            .map(ToString::to_string)
            .unwrap_or_else(|| cx.key().to_string());
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
#[derive(Debug)]
pub struct ChatDatagram {
    room: Rc<RefCell<Room>>,
    /// Each datagram member's idle timer.
    idle: HashMap<Addr, TimerId>,
}

impl DatagramHandler for ChatDatagram {
    fn on_datagram(&mut self, cx: &mut Context<'_>, data: &[u8], from: &Addr) {
        let id = MemberId::Datagram {
            socket: cx.key(),
            addr: from.clone(),
        };
        let line = data.strip_suffix(b"\n").unwrap_or(data);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut room = self.room.borrow_mut();
        let idle_timeout = room.config.idle_timeout;
        if !room.contains(&id) {
            if room.is_full() {
                cx.send_datagram(from, b"* error: room is full");
                return;
            }
            room.join(cx, id.clone(), from.to_string());
            if let Some(timer) = cx.set_timer(idle_timeout) {
                self.idle.insert(from.clone(), timer);
            }
        } else if let Some(&timer) = self.idle.get(from) {
            cx.reset_timer(timer, idle_timeout);
        }
        let outcome = if line.len() > room.config.max_line {
            room.notice(cx, &id, "error: line too long");
            room.leave(cx, &id);
            Outcome::Quit
        } else {
            room.handle_line(cx, &id, line)
        };
        if outcome == Outcome::Quit {
            if let Some(timer) = self.idle.remove(from) {
                cx.cancel_timer(timer);
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let Some(addr) = self
            .idle
            .iter()
            .find(|(_, t)| **t == timer)
            .map(|(a, _)| a.clone())
        else {
            return;
        };
        self.idle.remove(&addr);
        let id = MemberId::Datagram {
            socket: cx.key(),
            addr,
        };
        self.room.borrow_mut().leave(cx, &id);
    }

    fn on_close(&mut self, cx: &mut Context<'_>, _reason: &CloseReason) {
        self.room.borrow_mut().leave_socket(cx, cx.key());
        self.idle.clear();
    }
}
