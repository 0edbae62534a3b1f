//! The room: who is in it, under which nick, and which line goes to whom.
//!
//! [`Room`] does no IO. Each of its operations appends what should be sent
//! to an [`Outbox`], which the handler delivers after releasing the room.
//! That keeps the room testable without a reactor, and means no borrow of
//! the shared room is ever held across a [`crate::Context`] call.
//!
//! Always true:
//! - nicks are unique among members, and a member keeps its nick from its
//!   welcome to its leave;
//! - a member leaves at most once, and its leave is announced to the others
//!   exactly once (`* NICK left`); only [`Room::close`], which empties the
//!   whole room at shutdown, removes members without a notice;
//! - a line for several members is encoded once, into one `Rc<[u8]>` that
//!   every delivery shares;
//! - every line the room produces is one line: it ends in `\n` and holds no
//!   other `\n`, whatever members send.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use log::debug;

use super::command::{self, Command};
use super::ChatConfig;
use crate::{Addr, Key};

/// Who a member is, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemberId {
    /// A stream connection, by its key.
    Stream(Key),
    /// A datagram peer, reached through the socket `socket`.
    Datagram {
        /// The datagram socket's key.
        socket: Key,
        /// The peer's address.
        addr: Addr,
    },
}

/// One line for one member: `line` ends in `\n`. A stream member gets the
/// bytes as they are; a datagram member gets them without the `\n`, as one
/// datagram.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The member it is for.
    pub to: MemberId,
    /// The encoded line, shared with every other delivery of the same line.
    pub line: Rc<[u8]>,
}

/// What a room operation wants sent, in order.
pub type Outbox = Vec<Delivery>;

/// What a line leads to for the member who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The member stays.
    Stay,
    /// The member is out of the room (it quit, or its line was too long):
    /// it was told why, the others were told it left; close it.
    Left,
}

/// A join refused: the room holds `max_clients` members, or it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomFull;

impl fmt::Display for RoomFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("room is full")
    }
}

impl std::error::Error for RoomFull {}

/// The notice a refused member gets, with its newline.
pub const ROOM_FULL: &[u8] = b"* error: room is full\n";

/// One member's entry.
#[derive(Debug)]
struct Member {
    nick: String,
    /// Join order, for `/who`.
    seq: u64,
}

/// One chat room: its members, their nicks, its limits.
///
/// Handlers share one room through `Rc<RefCell<Room>>`; see
/// [`super::Chat`].
#[derive(Debug)]
pub struct Room {
    config: ChatConfig,
    members: HashMap<MemberId, Member>,
    nicks: HashMap<String, MemberId>,
    next_seq: u64,
    closed: bool,
}

impl Room {
    /// An empty, open room.
    pub fn new(config: ChatConfig) -> Room {
        Room {
            config,
            members: HashMap::new(),
            nicks: HashMap::new(),
            next_seq: 0,
            closed: false,
        }
    }

    /// The room's limits.
    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    /// How many members there are, stream and datagram.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the room has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether a join would be refused: `max_clients` members, or closed.
    pub fn is_full(&self) -> bool {
        self.closed || self.members.len() >= self.config.max_clients
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &MemberId) -> bool {
        self.members.contains_key(id)
    }

    /// The nick of member `id`.
    pub fn nick(&self, id: &MemberId) -> Option<&str> {
        self.members.get(id).map(|m| m.nick.as_str())
    }

    /// Every member's nick, in the order they joined.
    pub fn nicks(&self) -> Vec<&str> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_unstable_by_key(|m| m.seq);
        members.into_iter().map(|m| m.nick.as_str()).collect()
    }

    /// Adds member `id` as `nick` (its peer address, by the protocol): it
    /// gets `* welcome NICK`, every other member `* NICK joined`. A nick
    /// already in use gets a `#N` suffix, N being its join number: a TCP
    /// and a UDP peer may share an `ip:port`, and unnamed Unix peers share
    /// no name at all. No `/nick` can take such a nick (`#` is not allowed),
    /// and join numbers are never reused, so it is unique.
    ///
    /// # Errors
    ///
    /// [`RoomFull`] past `max_clients` or after [`Room::close`]; nothing is
    /// sent, and the caller sends [`ROOM_FULL`].
    pub fn join(&mut self, id: MemberId, nick: String, out: &mut Outbox) -> Result<(), RoomFull> {
        if self.is_full() {
            return Err(RoomFull);
        }
        if self.members.contains_key(&id) {
            return Ok(());
        }
        self.next_seq += 1;
        let nick = if self.nicks.contains_key(&nick) {
            format!("{nick}#{}", self.next_seq)
        } else {
            nick
        };
        debug!("chat: {nick} joined");
        self.tell(&id, &format!("* welcome {nick}"), out);
        self.broadcast(&format!("* {nick} joined"), Some(&id), out);
        self.nicks.insert(nick.clone(), id.clone());
        self.members.insert(
            id,
            Member {
                nick,
                seq: self.next_seq,
            },
        );
        Ok(())
    }

    /// Removes member `id`; the others get `* NICK left`. Returns whether it
    /// was a member (a second leave does nothing).
    pub fn leave(&mut self, id: &MemberId, out: &mut Outbox) -> bool {
        let Some(member) = self.members.remove(id) else {
            return false;
        };
        self.nicks.remove(&member.nick);
        debug!("chat: {} left", member.nick);
        self.broadcast(&format!("* {} left", member.nick), None, out);
        true
    }

    /// Acts on one line from member `id`: its bytes without the line end,
    /// not necessarily UTF-8 (invalid bytes are replaced). A line from a
    /// non-member does nothing.
    pub fn handle_line(&mut self, id: &MemberId, line: &[u8], out: &mut Outbox) -> Outcome {
        let Some(nick) = self.nick(id).map(str::to_owned) else {
            return Outcome::Stay;
        };
        let text = one_line(String::from_utf8_lossy(line));
        match command::parse(&text) {
            // An empty line says nothing worth a broadcast.
            Command::Say("") => {}
            Command::Say(said) => self.broadcast(&format!("{nick}: {said}"), Some(id), out),
            Command::Nick(new) => self.rename(id, &nick, new, out),
            Command::Who => self.tell(id, &format!("* online: {}", self.nicks().join(" ")), out),
            Command::Quit => {
                self.tell(id, "* bye", out);
                self.leave(id, out);
                return Outcome::Left;
            }
            Command::Unknown(word) => {
                let text = format!("* error: unknown command /{word} (try /nick NAME, /who, /quit)");
                self.tell(id, &text, out);
            }
        }
        Outcome::Stay
    }

    /// Member `id` sent a line longer than `max_line`: it gets
    /// `* error: line too long` and leaves.
    pub fn line_too_long(&mut self, id: &MemberId, out: &mut Outbox) -> Outcome {
        if self.contains(id) {
            self.tell(id, "* error: line too long", out);
            self.leave(id, out);
        }
        Outcome::Left
    }

    /// Empties the room at once and refuses joins from now on, telling
    /// nobody: at shutdown every member is leaving, and a `left` notice to
    /// each of the others would be n² lines for members on their way out.
    pub fn close(&mut self) {
        if !self.closed {
            debug!("chat: room closed with {} members", self.members.len());
        }
        self.closed = true;
        self.members.clear();
        self.nicks.clear();
    }

    /// Whether [`Room::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closed
    }

    /// Renames `id` from `old` to `new`, or tells it why not.
    fn rename(&mut self, id: &MemberId, old: &str, new: &str, out: &mut Outbox) {
        if !command::is_valid_nick(new) {
            let text = "* error: invalid nick: a nick is 1 to 32 of A-Z a-z 0-9 _ -";
            return self.tell(id, text, out);
        }
        if new == old {
            return self.tell(id, &format!("* error: you are already {new}"), out);
        }
        if self.nicks.contains_key(new) {
            return self.tell(id, &format!("* error: nick {new} is taken"), out);
        }
        self.nicks.remove(old);
        self.nicks.insert(new.to_owned(), id.clone());
        if let Some(member) = self.members.get_mut(id) {
            member.nick = new.to_owned();
        }
        debug!("chat: {old} is now {new}");
        self.broadcast(&format!("* {old} is now {new}"), None, out);
    }

    /// One line for one member.
    fn tell(&self, id: &MemberId, line: &str, out: &mut Outbox) {
        out.push(Delivery {
            to: id.clone(),
            line: encode(line),
        });
    }

    /// One line for every member but `except`, encoded once.
    fn broadcast(&self, line: &str, except: Option<&MemberId>, out: &mut Outbox) {
        let line = encode(line);
        out.reserve(self.members.len());
        for id in self.members.keys().filter(|id| Some(*id) != except) {
            out.push(Delivery {
                to: id.clone(),
                line: Rc::clone(&line),
            });
        }
    }
}

/// `line` and its `\n`, ready to share.
fn encode(line: &str) -> Rc<[u8]> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    crate::codec::line::encode_line(&mut bytes, line.as_bytes());
    Rc::from(bytes)
}

/// A line with any `\n` inside turned into a space, so that one line in
/// (a datagram may hold several) is one line out and cannot pose as a
/// notice.
fn one_line(text: Cow<'_, str>) -> Cow<'_, str> {
    if text.contains('\n') {
        Cow::Owned(text.replace('\n', " "))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{protocols::echo::EchoDatagram, Reactor};

    /// `n` distinct keys: the keys of real sources, the only way to make
    /// one outside the crate's internals.
    fn keys(n: usize) -> Vec<Key> {
        let mut reactor = Reactor::new().expect("reactor");
        let addr = "127.0.0.1:0".parse().expect("addr");
        (0..n)
            .map(|_| reactor.bind_udp(addr, EchoDatagram).expect("bind"))
            .collect()
    }

    fn config(max_clients: usize) -> ChatConfig {
        ChatConfig {
            max_clients,
            ..ChatConfig::default()
        }
    }

    /// What `out` holds, as (member, line without its newline), sorted by
    /// member so broadcasts compare whatever the hash order.
    fn sent(out: &mut Outbox) -> Vec<(MemberId, String)> {
        let mut lines: Vec<(MemberId, String)> = out
            .drain(..)
            .map(|d| {
                assert!(d.line.ends_with(b"\n"), "every line ends in a newline");
                let text = String::from_utf8_lossy(&d.line[..d.line.len() - 1]).into_owned();
                assert!(!text.contains('\n'), "one line: {text:?}");
                (d.to, text)
            })
            .collect();
        lines.sort_by_key(|(to, _)| format!("{to:?}"));
        lines
    }

    /// A room with members `a`, `b`, `c` (as many as `names`), the join
    /// lines already taken out.
    fn room_with(names: &[&str]) -> (Room, Vec<MemberId>, Outbox) {
        let mut room = Room::new(config(10));
        let ids: Vec<MemberId> = keys(names.len()).into_iter().map(MemberId::Stream).collect();
        let mut out = Outbox::new();
        for (id, name) in ids.iter().zip(names) {
            room.join(id.clone(), (*name).to_owned(), &mut out)
                .expect("room has space");
        }
        out.clear();
        (room, ids, out)
    }

    #[test]
    fn join_welcomes_the_member_and_tells_the_others() {
        let (mut room, ids, mut out) = room_with(&["a", "b"]);
        let c = MemberId::Stream(keys(3)[2]);
        room.join(c.clone(), "c".into(), &mut out).expect("space");
        let mut want = vec![
            (ids[0].clone(), "* c joined".to_owned()),
            (ids[1].clone(), "* c joined".to_owned()),
            (c.clone(), "* welcome c".to_owned()),
        ];
        want.sort_by_key(|(to, _)| format!("{to:?}"));
        assert_eq!(sent(&mut out), want);
        assert_eq!(room.nicks(), ["a", "b", "c"]);
    }

    #[test]
    fn broadcast_is_encoded_once_and_skips_the_sender() {
        let (mut room, ids, mut out) = room_with(&["a", "b", "c"]);
        assert_eq!(room.handle_line(&ids[0], b"hello", &mut out), Outcome::Stay);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|d| d.to != ids[0]));
        assert!(Rc::ptr_eq(&out[0].line, &out[1].line), "one encoding, shared");
        assert_eq!(&out[0].line[..], b"a: hello\n");
    }

    #[test]
    fn invalid_utf8_is_replaced_and_inner_newlines_cannot_forge_lines() {
        let (mut room, ids, mut out) = room_with(&["a", "b"]);
        room.handle_line(&ids[0], b"caf\xe9\n* b left", &mut out);
        assert_eq!(
            sent(&mut out),
            [(ids[1].clone(), "a: caf\u{fffd} * b left".to_owned())]
        );
    }

    #[test]
    fn empty_line_sends_nothing() {
        let (mut room, ids, mut out) = room_with(&["a", "b"]);
        room.handle_line(&ids[0], b"", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn rename_tells_everyone_including_the_renamed() {
        let (mut room, ids, mut out) = room_with(&["a", "b"]);
        room.handle_line(&ids[0], b"/nick alice", &mut out);
        let line = "* a is now alice".to_owned();
        let mut want = vec![(ids[0].clone(), line.clone()), (ids[1].clone(), line)];
        want.sort_by_key(|(to, _)| format!("{to:?}"));
        assert_eq!(sent(&mut out), want);
        assert_eq!(room.nick(&ids[0]), Some("alice"));
        // The old nick is free again.
        room.handle_line(&ids[1], b"/nick a", &mut out);
        assert_eq!(room.nicks(), ["alice", "a"]);
    }

    #[test]
    fn bad_or_taken_nick_is_an_error_to_the_sender_alone() {
        let (mut room, ids, mut out) = room_with(&["a", "b"]);
        for line in [
            &b"/nick b"[..],
            b"/nick",
            b"/nick no way",
            b"/nick dot.ted",
            b"/nick a",
        ] {
            room.handle_line(&ids[0], line, &mut out);
            let got = sent(&mut out);
            assert_eq!(got.len(), 1, "{got:?}");
            assert_eq!(got[0].0, ids[0]);
            assert!(got[0].1.starts_with("* error: "), "{got:?}");
        }
        let long = format!("/nick {}", "n".repeat(33));
        room.handle_line(&ids[0], long.as_bytes(), &mut out);
        assert!(sent(&mut out)[0].1.starts_with("* error: "));
        assert_eq!(room.nicks(), ["a", "b"]);
    }

    #[test]
    fn who_lists_every_member_in_join_order_to_the_sender() {
        let (mut room, ids, mut out) = room_with(&["a", "b", "c"]);
        room.handle_line(&ids[1], b"/who", &mut out);
        assert_eq!(sent(&mut out), [(ids[1].clone(), "* online: a b c".to_owned())]);
    }

    #[test]
    fn quit_says_bye_then_left_once() {
        let (mut room, ids, mut out) = room_with(&["a", "b"]);
        assert_eq!(room.handle_line(&ids[0], b"/quit", &mut out), Outcome::Left);
        let got: Vec<_> = out.drain(..).map(|d| (d.to, d.line)).collect();
        assert_eq!(got.len(), 2);
        assert_eq!((&got[0].0, &got[0].1[..]), (&ids[0], &b"* bye\n"[..]));
        assert_eq!((&got[1].0, &got[1].1[..]), (&ids[1], &b"* a left\n"[..]));
        // Whatever comes next for the same member, nobody hears of it again.
        assert!(!room.leave(&ids[0], &mut out));
        assert_eq!(room.handle_line(&ids[0], b"ghost", &mut out), Outcome::Stay);
        assert!(out.is_empty());
    }

    #[test]
    fn line_too_long_errors_then_leaves() {
        let (mut room, ids, mut out) = room_with(&["a", "b"]);
        assert_eq!(room.line_too_long(&ids[1], &mut out), Outcome::Left);
        let got: Vec<_> = out.drain(..).map(|d| (d.to, d.line)).collect();
        assert_eq!(
            (&got[0].0, &got[0].1[..]),
            (&ids[1], &b"* error: line too long\n"[..])
        );
        assert_eq!((&got[1].0, &got[1].1[..]), (&ids[0], &b"* b left\n"[..]));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn full_room_refuses_and_counts_datagram_members() {
        let mut room = Room::new(config(2));
        let k = keys(2);
        let mut out = Outbox::new();
        room.join(MemberId::Stream(k[0]), "s".into(), &mut out)
            .expect("space");
        let udp = MemberId::Datagram {
            socket: k[1],
            addr: Addr::Inet("127.0.0.1:9".parse().expect("addr")),
        };
        room.join(udp.clone(), "u".into(), &mut out).expect("space");
        out.clear();
        let extra = MemberId::Stream(k[1]);
        assert_eq!(room.join(extra.clone(), "x".into(), &mut out), Err(RoomFull));
        assert!(out.is_empty(), "a refused join tells nobody");
        room.leave(&udp, &mut out);
        assert_eq!(room.join(extra, "x".into(), &mut out), Ok(()));
    }

    #[test]
    fn same_address_over_two_sockets_gets_distinct_nicks() {
        let (mut room, ids, mut out) = room_with(&["127.0.0.1:5000"]);
        let udp = MemberId::Datagram {
            socket: keys(2)[1],
            addr: Addr::Inet("127.0.0.1:5000".parse().expect("addr")),
        };
        room.join(udp.clone(), "127.0.0.1:5000".into(), &mut out)
            .expect("space");
        assert_eq!(room.nick(&udp), Some("127.0.0.1:5000#2"));
        room.leave(&udp, &mut out);
        assert_eq!(room.nick(&ids[0]), Some("127.0.0.1:5000"));
    }

    #[test]
    fn closed_room_is_empty_silent_and_refuses_joins() {
        let (mut room, ids, mut out) = room_with(&["a", "b"]);
        room.close();
        assert!(room.is_empty());
        assert!(!room.leave(&ids[0], &mut out));
        assert_eq!(room.join(ids[0].clone(), "a".into(), &mut out), Err(RoomFull));
        assert!(out.is_empty());
    }
}
