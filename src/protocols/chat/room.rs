//! The room: who is in it, under which nick, and how a line reaches them.
//!
//! Always true:
//! - nicks are unique among members;
//! - a member is in the room from its welcome to its leave, and its leave
//!   is announced to the others exactly once, whatever the reason, except
//!   once the room is closing (the reactor shuts down): then everyone is
//!   leaving and no one is told;
//! - a line for several members is encoded once, into one `Rc<[u8]>` that
//!   every stream member's queue shares; datagram members get the same
//!   bytes without the newline, one datagram each.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use log::info;

use super::command::{self, Command};
use super::ChatConfig;
use crate::{Addr, Context, Key};

/// Who a member is, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemberId {
    /// A stream connection.
    Stream(Key),
    /// A datagram peer, reached through the socket `socket`.
    Datagram {
        /// The datagram socket's key.
        socket: Key,
        /// The peer's address.
        addr: Addr,
    },
}

#[derive(Debug)]
struct Member {
    nick: String,
    /// Join order, for `/who`.
    seq: u64,
}

/// What a line leads to for the member who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The member stays.
    Stay,
    /// The member quit (it was told `* bye` and has left the room).
    Quit,
}

/// One chat room.
#[derive(Debug)]
pub struct Room {
    pub(super) config: ChatConfig,
    members: HashMap<MemberId, Member>,
    nicks: HashSet<String>,
    next_seq: u64,
    /// The reactor is shutting down: everyone leaves at once, unannounced.
    closing: bool,
}

impl Room {
    pub(super) fn new(config: ChatConfig) -> Room {
        Room {
            config,
            members: HashMap::new(),
            nicks: HashSet::new(),
            next_seq: 0,
            closing: false,
        }
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the room is empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether a new member would pass `max_clients`, or the room is
    /// closing and takes no one.
    pub fn is_full(&self) -> bool {
        self.closing || self.members.len() >= self.config.max_clients
    }

    /// The reactor is shutting down: from now on members leave without a
    /// `* NICK left` to the others, who are all leaving too, and no one
    /// joins.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Whether [`Room::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &MemberId) -> bool {
        self.members.contains_key(id)
    }

    /// Adds a member under `nick`: it is welcomed, the others told.
    ///
    /// The nick is made unique if it is taken: a TCP and a UDP peer may
    /// share an `ip:port`, and unnamed Unix peers share no name at all.
    pub fn join(&mut self, cx: &mut Context<'_>, id: MemberId, nick: String) {
        self.next_seq += 1;
        let nick = if self.nicks.contains(&nick) {
            format!("{nick}#{}", self.next_seq)
        } else {
            nick
        };
        info!("chat: {nick} joined");
        self.nicks.insert(nick.clone());
        send_to(cx, &id, &encode(&format!("* welcome {nick}")));
        self.broadcast(cx, &format!("* {nick} joined"), Some(&id));
        self.members.insert(
            id,
            Member {
                nick,
                seq: self.next_seq,
            },
        );
    }

    /// Removes a member and tells the others; does nothing if it already
    /// left. Returns whether it was a member.
    pub fn leave(&mut self, cx: &mut Context<'_>, id: &MemberId) -> bool {
        let Some(member) = self.members.remove(id) else {
            return false;
        };
        self.nicks.remove(&member.nick);
        info!("chat: {} left", member.nick);
        if !self.closing {
            self.broadcast(cx, &format!("* {} left", member.nick), None);
        }
        true
    }

    /// Removes every datagram member reached through `socket`.
    pub fn leave_socket(&mut self, cx: &mut Context<'_>, socket: Key) {
        let gone: Vec<MemberId> = self
            .members
            .keys()
            .filter(|id| matches!(id, MemberId::Datagram { socket: s, .. } if *s == socket))
            .cloned()
            .collect();
        for id in gone {
            self.leave(cx, &id);
        }
    }

    /// Sends one notice (`* TEXT`) to one member.
    pub fn notice(&self, cx: &mut Context<'_>, id: &MemberId, text: &str) {
        send_to(cx, id, &encode(&format!("* {text}")));
    }

    /// Acts on one line from member `id` (its bytes without the line end).
    pub fn handle_line(&mut self, cx: &mut Context<'_>, id: &MemberId, line: &[u8]) -> Outcome {
        let Some(nick) = self.members.get(id).map(|m| m.nick.clone()) else {
            return Outcome::Stay;
        };
        let text = String::from_utf8_lossy(line);
        match command::parse(&text) {
            Command::Say("") => {}
            Command::Say(said) => self.broadcast(cx, &format!("{nick}: {said}"), Some(id)),
            Command::Who => {
                let mut members: Vec<&Member> = self.members.values().collect();
                members.sort_by_key(|m| m.seq);
                let names: Vec<&str> = members.iter().map(|m| m.nick.as_str()).collect();
                self.notice(cx, id, &format!("online: {}", names.join(" ")));
            }
            Command::Nick(new) => self.rename(cx, id, &nick, new),
            Command::Quit => {
                self.notice(cx, id, "bye");
                self.leave(cx, id);
                return Outcome::Quit;
            }
            Command::Unknown(word) => self.notice(cx, id, &format!("error: unknown command /{word}")),
        }
        Outcome::Stay
    }

    fn rename(&mut self, cx: &mut Context<'_>, id: &MemberId, old: &str, new: &str) {
        if !command::is_valid_nick(new) {
            let rule = "a nick is 1 to 32 of A-Z a-z 0-9 _ -";
            return self.notice(cx, id, &format!("error: invalid nick: {rule}"));
        }
        if self.nicks.contains(new) {
            return self.notice(cx, id, &format!("error: nick {new} is taken"));
        }
        self.nicks.remove(old);
        self.nicks.insert(new.to_string());
        if let Some(member) = self.members.get_mut(id) {
            member.nick = new.to_string();
        }
        info!("chat: {old} is now {new}");
        self.broadcast(cx, &format!("* {old} is now {new}"), None);
    }

    /// Sends one line to every member but `except`, encoded once.
    fn broadcast(&self, cx: &mut Context<'_>, line: &str, except: Option<&MemberId>) {
        let payload = encode(line);
        for id in self.members.keys() {
            if Some(id) != except {
                send_to(cx, id, &payload);
            }
        }
    }
}

/// A line with its newline, ready to share.
fn encode(line: &str) -> Rc<[u8]> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    Rc::from(bytes)
}

/// Sends an encoded line to one member: shared for a stream, one datagram
/// without the newline for a datagram peer.
fn send_to(cx: &mut Context<'_>, id: &MemberId, payload: &Rc<[u8]>) {
    match id {
        MemberId::Stream(key) => {
            cx.send_shared_to(*key, payload);
        }
        MemberId::Datagram { socket, addr } => {
            let line = payload.strip_suffix(b"\n").unwrap_or(payload);
            cx.send_datagram_via(*socket, addr, line);
        }
    }
}
