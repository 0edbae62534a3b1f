//! The datagram side of a chat room: [`ChatDatagram`] makes each peer
//! address of a datagram socket a member, each datagram one line.
//!
//! Always true:
//! - a stranger's first datagram is never run or relayed: it only greets
//!   the stranger (`* welcome NICK`, one small datagram to the address it
//!   claims), so a forged source address gets its victim that line and no
//!   more;
//! - every greeted or member peer has exactly one live timer (its greeting
//!   timer, then the same timer as its idle timer), so no slot is held for
//!   ever; a greeting that cannot be timed is refused;
//! - datagram peers, greeted or members, hold at most half the room's
//!   slots ([`Room::max_datagram_members`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use super::{send_out, Link, MemberId, Outbox, Outcome, Room, RoomFull, ROOM_FULL};
use crate::{Addr, CloseReason, Context, DatagramHandler, TimerId};

/// The datagram side of a [`Chat`](super::Chat) room: each peer address
/// of the socket is a member, each datagram one line.
///
/// A trailing `\n` or `\r\n` is optional. Lines for a datagram member go
/// out one datagram each, without the newline. A stranger's first datagram
/// only greets it: it gets `* welcome NICK` and holds a slot, and the
/// datagram is not run; its second datagram confirms it (the others are
/// told it joined) and is run as its first line. A greeted peer that sends
/// nothing more within [`GREETING_TIMEOUT`] (or the idle timeout, if
/// shorter) is forgotten silently. So a datagram with a forged source
/// address costs its victim one small line, and costs the room one slot
/// for a short while. A peer's life (a peer not in `peers` is a stranger):
///
/// ```text
///  Stranger --datagram, room or datagram half full--> Stranger (sent "* error: room is full")
///  Stranger --datagram, room has space--------------> Greeted  (sent "* welcome NICK" only; datagram dropped)
///  Greeted  --datagram------------------------------> Member   (others told "joined"; then its line)
///  Greeted  --greeting timer fired------------------> Stranger (nobody told)
///  Member   --datagram------------------------------> Member   (idle timer pushed back)
///  Member   --/quit, line too long, idle------------> Stranger (others told "left")
///  Greeted, Member --socket closed------------------> Stranger (members: others told "left")
///  any      --reactor shutdown----------------------> Stranger (room closed, nobody told)
/// ```
#[derive(Debug)]
pub struct ChatDatagram {
    room: Rc<RefCell<Room>>,
    /// The other shards, for a sharded room.
    link: Option<Rc<Link>>,
    /// Each greeted or member peer, by address ...
    peers: HashMap<Addr, PeerPhase>,
    /// ... and the address of each timer, so a firing timer is found in O(1).
    timers: HashMap<TimerId, Addr>,
}

/// Longest a greeted datagram peer keeps its slot without a second
/// datagram (shorter if the idle timeout is).
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(30);

/// Where one known datagram peer stands (a stranger has no entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerPhase {
    /// Welcomed after one datagram, not yet joined; `timer` ends the
    /// greeting.
    Greeted { timer: TimerId },
    /// In the room; `idle` is its idle timer (its greeting timer, pushed
    /// back: a peer is only greeted once its timer is set).
    Member { idle: TimerId },
}

impl ChatDatagram {
    /// A handler with no peers yet, for `room`.
    pub(super) fn new(room: Rc<RefCell<Room>>, link: Option<Rc<Link>>) -> ChatDatagram {
        ChatDatagram {
            room,
            link,
            peers: HashMap::new(),
            timers: HashMap::new(),
        }
    }

    /// `Stranger -> Greeted`, or a refusal. A greeting that could not be
    /// timed (the timer table is full) is refused as well: an untimed
    /// greeted slot would be held for ever.
    fn greet(&mut self, cx: &mut Context<'_>, id: MemberId, from: &Addr) {
        let greeting_timeout = {
            let room = self.room.borrow();
            GREETING_TIMEOUT.min(room.config().idle_timeout)
        };
        let mut out = Outbox::new();
        let greeted = self
            .room
            .borrow_mut()
            .greet(id.clone(), from.to_string(), &mut out);
        let timer = match greeted {
            Ok(()) => {
                let timer = cx.set_timer(greeting_timeout);
                if timer.is_none() {
                    // Untimed: out again, before anyone could know of it.
                    self.room.borrow_mut().leave(&id, &mut Outbox::new());
                }
                timer
            }
            Err(RoomFull) => None,
        };
        let Some(timer) = timer else {
            // Told so, and stays a stranger.
            let refusal = ROOM_FULL.strip_suffix(b"\n").unwrap_or(ROOM_FULL);
            cx.send_datagram(from, refusal);
            return;
        };
        self.timers.insert(timer, from.clone());
        self.peers.insert(from.clone(), PeerPhase::Greeted { timer });
        send_out(cx, &mut out, &self.room, self.link.as_deref());
    }

    /// `Greeted -> Member`: the others are told it joined; its greeting
    /// timer becomes its idle timer.
    fn confirm(&mut self, cx: &mut Context<'_>, id: &MemberId, from: &Addr, timer: TimerId) {
        let mut out = Outbox::new();
        let idle_timeout = {
            let mut room = self.room.borrow_mut();
            room.confirm(id, &mut out);
            room.config().idle_timeout
        };
        cx.reset_timer(timer, idle_timeout);
        self.peers.insert(from.clone(), PeerPhase::Member { idle: timer });
        send_out(cx, &mut out, &self.room, self.link.as_deref());
    }

    /// `Greeted, Member -> Stranger`: forgets a peer that left the room,
    /// and its timer.
    fn forget(&mut self, cx: &mut Context<'_>, addr: &Addr) {
        let timer = match self.peers.remove(addr) {
            Some(PeerPhase::Greeted { timer } | PeerPhase::Member { idle: timer }) => timer,
            None => return,
        };
        self.timers.remove(&timer);
        cx.cancel_timer(timer);
    }
}

impl DatagramHandler for ChatDatagram {
    fn on_datagram(&mut self, cx: &mut Context<'_>, data: &[u8], from: &Addr) {
        let id = MemberId::Datagram {
            socket: cx.key(),
            addr: from.clone(),
        };
        let (max_line, idle_timeout) = {
            let room = self.room.borrow();
            (room.config().max_line, room.config().idle_timeout)
        };
        match self.peers.get(from).copied() {
            // A stranger is only greeted; what it sent is not run.
            None => return self.greet(cx, id, from),
            // Its second datagram: it joins, and this is its first line.
            Some(PeerPhase::Greeted { timer }) => self.confirm(cx, &id, from, timer),
            // A member spoke: it is not idle.
            Some(PeerPhase::Member { idle }) => {
                cx.reset_timer(idle, idle_timeout);
            }
        }
        let mut out = Outbox::new();
        let outcome = {
            let mut room = self.room.borrow_mut();
            match datagram_line(data, max_line) {
                Some(line) => room.handle_line(&id, line, &mut out),
                None => room.line_too_long(&id, &mut out),
            }
        };
        send_out(cx, &mut out, &self.room, self.link.as_deref());
        if outcome == Outcome::Left {
            self.forget(cx, from);
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        // A greeting that was never confirmed, or a member silent too long:
        // either way it leaves (silently if it was only greeted).
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
        send_out(cx, &mut out, &self.room, self.link.as_deref());
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        self.room.borrow_mut().close();
        cx.close();
    }

    fn on_close(&mut self, cx: &mut Context<'_>, _reason: &CloseReason) {
        // The socket's timers went with it; its peers leave.
        self.timers.clear();
        let mut out = Outbox::new();
        for (addr, _) in self.peers.drain() {
            let id = MemberId::Datagram {
                socket: cx.key(),
                addr,
            };
            self.room.borrow_mut().leave(&id, &mut out);
            send_out(cx, &mut out, &self.room, self.link.as_deref());
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
}
