//! The room: who is in it, under which nick, and which line goes to whom.
//!
//! [`Room`] does no IO. Each of its operations appends what should be sent
//! to an [`Outbox`], which the handler delivers after releasing the room.
//! That keeps the room testable without a reactor, and means no borrow of
//! the shared room is ever held across a [`crate::Context`] call.
//!
//! A member is either *present* (joined: the others know of it) or only
//! *greeted* (a datagram peer that sent one datagram: it holds a slot and
//! its nick, and got `* welcome NICK`, but nobody else knows of it):
//!
//! ```text
//!  (none)  --join, room has space----------> Present  welcomed; others: "* NICK joined"
//!  (none)  --greet, room has space---------> Greeted  welcomed; nobody else told
//!  (none)  --join or greet, room full------> (none)   Err(RoomFull); nothing sent
//!  Greeted --confirm-----------------------> Present  others: "* NICK joined"
//!  Greeted --leave-------------------------> (none)   silently: nobody saw it join
//!  (none)  --join, wide room linked--------> Claiming a stream member: nothing sent; its nick claimed in the wider room
//!  Claiming --claim won, or unknown--------> Present  welcomed; others: "* NICK joined"
//!  Claiming --claim lost-------------------> Claiming its nick gets a `#N` suffix, claimed again
//!  Claiming --leave------------------------> (none)   silently
//!  Present --leave, /quit, line too long---> (none)   others: "* NICK left"
//!  any     --close (shutdown)--------------> (none)   silently
//! ```
//!
//! Always true:
//! - nicks are unique among members, greeted ones included, without regard
//!   to ASCII case, and a member keeps its nick from its welcome to its
//!   leave unless it renames itself;
//! - a greeted member gets nothing but its welcome: no broadcast, and its
//!   lines are not run; it is not listed by `/who`;
//! - a member leaves at most once, and a present member's leave is
//!   announced to the others exactly once (`* NICK left`); only
//!   [`Room::close`], which empties the whole room at shutdown, removes
//!   present members without a notice;
//! - members hold at most `max_clients` slots, and datagram members at most
//!   half of them, greeted ones included;
//! - a line for several members is encoded once, into one `Rc<[u8]>` that
//!   every delivery shares;
//! - every line the room produces is one line: it ends in `\n` and holds no
//!   other `\n`; text and nicks from members hold no control character but
//!   tab, and no U+2028 or U+2029 ([`crate::text`]).
//!
//! A room made with [`Room::sharded`] is one shard's part of a room spread
//! over several shards: it keeps this shard's members, while the nicks,
//! the count against `max_clients` and the join order live in the
//! [`SharedRoom`] all parts share. Each line it broadcasts is also kept,
//! once, for the other shards ([`Room::take_forwarded`]), and a line from
//! another shard reaches this part's members through [`Room::relay`].
//!
//! A room made with [`Room::wide`] is one server's part of a room spread
//! over several servers (through Redis: [`super::Chat::over_redis`]). It
//! keeps this server's members and the other servers' nicks (for `/who`);
//! a stream member's nick and each `/nick` are claimed in the wider room
//! before they are given ([`Room::take_claims`], [`Room::claimed`]), and
//! what its members do is kept for the other servers
//! ([`Room::take_events`]). What the other servers' members do comes in
//! through [`Room::remote`].

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use log::debug;

use super::command::{self, Command};
use super::shared::SharedRoom;
use super::ChatConfig;
use crate::text::{is_unsafe_char, sanitize, sanitize_lossy};
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

/// A join refused: the room holds `max_clients` members, or datagram
/// members hold half of that and the newcomer is one, or it is closed.
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

/// The longest `* online: ...` line a datagram member gets, in bytes (no
/// newline: a datagram carries none). A longer list is split over several
/// such lines, one datagram each, so none is lost to fragmentation or to
/// the 64 KiB datagram limit. No nick comes near it: the longest is a Unix
/// peer's path (at most 108 bytes, each at most a 3-byte U+FFFD) with a
/// `#N` suffix.
pub const MAX_WHO_DATAGRAM: usize = 1200;

/// Whether the others know of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// Welcomed, nobody else told: it holds a slot and its nick only.
    Greeted,
    /// Joined: it gets the room's lines and is listed.
    Present,
    /// A stream member of a room spread over servers whose nick is being
    /// claimed in the wider room: it holds a slot and its nick here, gets
    /// nothing, and is welcomed once the claim is answered.
    Claiming,
}

/// One member's entry.
#[derive(Debug)]
struct Member {
    nick: String,
    /// Join order, for `/who`: set again when a greeted member joins.
    seq: u64,
    presence: Presence,
    /// In a room spread over servers: the nick being claimed for it in the
    /// wider room (held here meanwhile), if a claim is out.
    claiming: Option<(String, ClaimKind)>,
}

/// One chat room: its members, their nicks, its limits.
///
/// Handlers share one room through `Rc<RefCell<Room>>`; see
/// [`super::Chat`].
#[derive(Debug)]
pub struct Room {
    config: ChatConfig,
    members: HashMap<MemberId, Member>,
    /// Every member's nick, ASCII-lowercased, to its holder (unused when
    /// `shared`: the registry holds them).
    nicks: HashMap<String, MemberId>,
    /// How many members are datagram peers, greeted or present (this
    /// part's, when `shared`).
    datagram_members: usize,
    next_seq: u64,
    closed: bool,
    /// The registry of a room spread over shards, if it is.
    shared: Option<SharedRoom>,
    /// Lines broadcast here, for the other shards (only when `shared`),
    /// each with the room's clock when it was said.
    forwarded: Vec<(Rc<[u8]>, u64)>,
    /// The clock a sharded room's next broadcast is stamped with, if the
    /// operation that makes it knows better than the clock's value then.
    stamp: Option<u64>,
    /// The wider room, if this room is one server's part of a room spread
    /// over servers ([`Room::wide`]).
    wide: Option<Wide>,
}

/// Why a nick is claimed in the wider room ([`Claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// A stream member's first nick: it is welcomed once the claim is won.
    Join,
    /// `/nick NAME`: the rename is done (or refused) once it is answered.
    Rename,
    /// A nick the member already goes by here (a datagram member's, or
    /// every member's again when the wider room comes back): nothing
    /// changes if it is won; if it is lost, the member is given a fresh
    /// nick.
    Keep,
}

/// A nick to claim in the wider room for one member: the room asks, the
/// program claims it atomically (in Redis, `SET ... NX`), and gives the
/// answer back with [`Room::claimed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Whose claim it is.
    pub member: MemberId,
    /// The nick claimed, as the member will be called.
    pub nick: String,
    /// Why.
    pub kind: ClaimKind,
}

/// The answer to a [`Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimAnswer {
    /// The nick is the member's in the whole room.
    Won,
    /// Another server's member holds it.
    Lost,
    /// The wider room could not be asked (it is out of reach): the nick is
    /// the member's here, and is claimed again when the wider room is back.
    Unknown,
}

/// What this part of a wider room did that the other servers must hear
/// of, in order ([`Room::take_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A member said a line (the encoded `NICK: TEXT\n`).
    Said(Rc<[u8]>),
    /// A member joined.
    Joined(String),
    /// A member left.
    Left(String),
    /// A member renamed itself, or was renamed.
    Renamed(String, String),
}

/// What another server of the wider room says happened ([`Room::remote`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// One of its members said a line (`NICK: TEXT`, without the newline).
    Said(String),
    /// A member joined it.
    Joined(String),
    /// A member left it.
    Left(String),
    /// A member of it was renamed.
    Renamed(String, String),
    /// Its members now, in join order (sent now and then, and on joining
    /// the wider room).
    Presence(Vec<String>),
    /// Its members as last written down in the wider room, read on
    /// joining it: taken only for a server not heard from yet.
    Known(Vec<String>),
    /// It left the wider room, or was not heard from for too long.
    Gone,
}

/// The state of a room spread over servers, kept by each server's part.
#[derive(Debug, Default)]
struct Wide {
    /// The other servers are in reach: events are kept for them, and their
    /// members are listed.
    linked: bool,
    events: Vec<RoomEvent>,
    claims: Vec<Claim>,
    /// Nicks this part held in the wider room and let go of.
    releases: Vec<String>,
    /// The other servers' members, by server, each in join order.
    remote: std::collections::BTreeMap<String, Vec<String>>,
    /// Numbers the fresh nicks given when a claim is lost.
    fresh: u64,
}

impl Room {
    /// An empty, open room.
    pub fn new(config: ChatConfig) -> Room {
        Room {
            config,
            members: HashMap::new(),
            nicks: HashMap::new(),
            datagram_members: 0,
            next_seq: 0,
            closed: false,
            shared: None,
            forwarded: Vec::new(),
            stamp: None,
            wide: None,
        }
    }

    /// One server's part of a room spread over several servers (joined
    /// through Redis by [`super::Chat::over_redis`]): this server's members are
    /// kept here, with the other servers' nicks for `/who`. A stream
    /// member's nick, and each `/nick`, is claimed in the wider room before
    /// it is given ([`Room::take_claims`], [`Room::claimed`]); what the
    /// members do is kept for the other servers ([`Room::take_events`]);
    /// what the other servers' members do comes in through
    /// [`Room::remote`]. Until [`Room::set_linked`] says the wider room is
    /// in reach, it is a room of its own.
    pub fn wide(config: ChatConfig) -> Room {
        Room {
            wide: Some(Wide::default()),
            ..Room::new(config)
        }
    }

    /// Whether the wider room is in reach ([`Room::set_linked`]).
    pub fn is_linked(&self) -> bool {
        self.wide.as_ref().is_some_and(|w| w.linked)
    }

    /// Says whether the wider room is in reach. Out of reach, the other
    /// servers' members are forgotten (silently: they did not leave, the
    /// room is apart) and nothing is kept for them; claims not yet taken
    /// stay, to be answered [`ClaimAnswer::Unknown`]. Back in reach, every
    /// nick held here is claimed again ([`ClaimKind::Keep`]); the other
    /// servers' members come back with their presence ([`Room::remote`]).
    pub fn set_linked(&mut self, linked: bool) {
        let Some(wide) = &mut self.wide else {
            return;
        };
        if wide.linked == linked {
            return;
        }
        wide.linked = linked;
        wide.events.clear();
        wide.remote.clear();
        if linked {
            let unclaimed: Vec<(MemberId, String)> = self
                .members
                .iter()
                .filter(|(_, m)| m.claiming.is_none())
                .map(|(id, m)| (id.clone(), m.nick.clone()))
                .collect();
            for (id, nick) in unclaimed {
                self.claim(&id, nick, ClaimKind::Keep);
            }
        } else {
            // Claims not yet sent stay: they are answered as unknown (the
            // nick is this part's) by whoever drives the room.
            wide.releases.clear();
        }
    }

    /// Takes what this part's members did since the last call, in order,
    /// for the other servers (empty unless the wider room is in reach).
    pub fn take_events(&mut self) -> Vec<RoomEvent> {
        self.wide
            .as_mut()
            .map(|w| std::mem::take(&mut w.events))
            .unwrap_or_default()
    }

    /// Takes the nicks to claim in the wider room since the last call; each
    /// is answered with [`Room::claimed`].
    pub fn take_claims(&mut self) -> Vec<Claim> {
        self.wide
            .as_mut()
            .map(|w| std::mem::take(&mut w.claims))
            .unwrap_or_default()
    }

    /// Takes the nicks this part let go of since the last call, to free in
    /// the wider room.
    pub fn take_releases(&mut self) -> Vec<String> {
        self.wide
            .as_mut()
            .map(|w| std::mem::take(&mut w.releases))
            .unwrap_or_default()
    }

    /// Every nick this part holds, claimed or being claimed.
    pub fn held_nicks(&self) -> Vec<String> {
        let mut nicks: Vec<String> = self.members.values().map(|m| m.nick.clone()).collect();
        nicks.extend(
            self.members
                .values()
                .filter_map(|m| m.claiming.as_ref())
                .filter(|(_, kind)| *kind == ClaimKind::Rename)
                .map(|(nick, _)| nick.clone()),
        );
        nicks
    }

    /// Whether member `id` waits for an answer from the wider room (its
    /// join's or its rename's claim): its next lines wait too.
    pub fn is_waiting(&self, id: &MemberId) -> bool {
        self.members.get(id).is_some_and(|m| {
            m.presence == Presence::Claiming || matches!(m.claiming, Some((_, ClaimKind::Rename)))
        })
    }

    /// The answer to `claim` ([`Room::take_claims`]). A join claim won (or
    /// unknown) welcomes the member and tells everyone; lost, the member's
    /// nick gets a `#N` suffix and is claimed again. A rename won (or
    /// unknown) is done and told to everyone; lost, the member alone is
    /// told the nick is taken. A kept nick lost gives the member a fresh
    /// nick, claimed in turn: it is told why, and everyone is told of the
    /// rename. A claim for a member that left meanwhile, if won, is let
    /// go of.
    pub fn claimed(&mut self, claim: Claim, answer: ClaimAnswer, out: &mut Outbox) {
        let current = self
            .members
            .get(&claim.member)
            .is_some_and(|m| m.claiming.as_ref() == Some(&(claim.nick.clone(), claim.kind)));
        if !current {
            if answer == ClaimAnswer::Won && !self.is_held_here(&claim.nick) {
                if let Some(wide) = &mut self.wide {
                    wide.releases.push(claim.nick);
                }
            }
            return;
        }
        let id = claim.member;
        let lost = answer == ClaimAnswer::Lost;
        match (claim.kind, lost) {
            (ClaimKind::Join, false) => {
                let Some(member) = self.members.get_mut(&id) else {
                    return;
                };
                member.claiming = None;
                member.presence = Presence::Present;
                let nick = member.nick.clone();
                debug!("chat: {nick} joined");
                self.tell(&id, &format!("* welcome {nick}"), out);
                self.broadcast(&format!("* {nick} joined"), Some(&id), out);
                self.record(RoomEvent::Joined(nick));
            }
            (ClaimKind::Join | ClaimKind::Keep, true) => {
                let fresh = self.fresh_nick(&claim.nick);
                let Some(member) = self.members.get_mut(&id) else {
                    return;
                };
                member.claiming = Some((fresh.clone(), claim.kind));
                if claim.nick != member.nick {
                    // A fresh nick lost in turn: not held here any more.
                    self.nicks.remove(&nick_key(&claim.nick));
                }
                if claim.kind == ClaimKind::Join {
                    // Not yet known to anyone: its nick just changes.
                    self.nicks.remove(&nick_key(&member.nick));
                    member.nick = fresh.clone();
                }
                self.nicks.insert(nick_key(&fresh), id.clone());
                if let Some(wide) = &mut self.wide {
                    wide.claims.push(Claim {
                        member: id,
                        nick: fresh,
                        kind: claim.kind,
                    });
                }
            }
            (ClaimKind::Keep, false) => {
                let Some(member) = self.members.get_mut(&id) else {
                    return;
                };
                member.claiming = None;
                let old = std::mem::replace(&mut member.nick, claim.nick.clone());
                let present = member.presence == Presence::Present;
                if old != claim.nick {
                    // A fresh nick, given for one that was lost.
                    self.nicks.remove(&nick_key(&old));
                    let text = format!(
                        "* nick {old} is held by another member of the room; you are now {}",
                        claim.nick
                    );
                    self.tell(&id, &text, out);
                    if present {
                        self.renamed(&old, &claim.nick, out);
                    }
                }
            }
            (ClaimKind::Rename, false) => {
                let Some(member) = self.members.get_mut(&id) else {
                    return;
                };
                member.claiming = None;
                let old = std::mem::replace(&mut member.nick, claim.nick.clone());
                if nick_key(&old) != nick_key(&claim.nick) {
                    self.nicks.remove(&nick_key(&old));
                    if answer == ClaimAnswer::Won {
                        if let Some(wide) = &mut self.wide {
                            wide.releases.push(old.clone());
                        }
                    }
                }
                self.renamed(&old, &claim.nick, out);
            }
            (ClaimKind::Rename, true) => {
                if let Some(member) = self.members.get_mut(&id) {
                    member.claiming = None;
                    if nick_key(&member.nick) != nick_key(&claim.nick) {
                        self.nicks.remove(&nick_key(&claim.nick));
                    }
                }
                self.tell(&id, &format!("* error: nick {} is taken", claim.nick), out);
            }
        }
    }

    /// Whether a member here holds or claims `nick` (in any case).
    fn is_held_here(&self, nick: &str) -> bool {
        self.nicks.contains_key(&nick_key(nick))
    }

    /// A nick for a member whose claim of `nick` was lost: `nick#N` (the
    /// suffix replaced, if it had one), free here.
    fn fresh_nick(&mut self, nick: &str) -> String {
        let base = nick.split_once('#').map_or(nick, |(base, _)| base).to_owned();
        loop {
            let n = match &mut self.wide {
                Some(wide) => {
                    wide.fresh += 1;
                    wide.fresh
                }
                None => 1,
            };
            let candidate = format!("{base}#{}", n + self.next_seq);
            if !self.is_held_here(&candidate) {
                return candidate;
            }
        }
    }

    /// Everyone here is told of a rename, and so are the other servers.
    fn renamed(&mut self, old: &str, new: &str, out: &mut Outbox) {
        debug!("chat: {old} is now {new}");
        self.broadcast(&format!("* {old} is now {new}"), None, out);
        self.record(RoomEvent::Renamed(old.to_owned(), new.to_owned()));
    }

    /// Keeps `event` for the other servers, if they are in reach.
    fn record(&mut self, event: RoomEvent) {
        if let Some(wide) = self.wide.as_mut().filter(|w| w.linked) {
            wide.events.push(event);
        }
    }

    /// What the other server `server` said happened in the wider room: this
    /// part's present members hear of it, and `/who` follows it. A
    /// server's presence ([`Remote::Presence`]) replaces what was known of
    /// its members, silently; its end ([`Remote::Gone`]) tells everyone
    /// here that each of its members left. Ignored while the wider room is
    /// out of reach.
    pub fn remote(&mut self, server: &str, event: Remote, out: &mut Outbox) {
        let Some(wide) = self.wide.as_mut().filter(|w| w.linked) else {
            return;
        };
        let line = match event {
            Remote::Said(line) => line,
            Remote::Joined(nick) => {
                let line = format!("* {nick} joined");
                wide.remote.entry(server.to_owned()).or_default().push(nick);
                line
            }
            Remote::Left(nick) => {
                if let Some(nicks) = wide.remote.get_mut(server) {
                    nicks.retain(|n| *n != nick);
                }
                format!("* {nick} left")
            }
            Remote::Renamed(old, new) => {
                let line = format!("* {old} is now {new}");
                if let Some(n) = wide
                    .remote
                    .get_mut(server)
                    .and_then(|n| n.iter_mut().find(|n| **n == old))
                {
                    *n = new;
                }
                line
            }
            Remote::Presence(nicks) => {
                wide.remote.insert(server.to_owned(), nicks);
                return;
            }
            Remote::Known(nicks) => {
                wide.remote.entry(server.to_owned()).or_insert(nicks);
                return;
            }
            Remote::Gone => {
                for nick in wide.remote.remove(server).unwrap_or_default() {
                    self.broadcast_here(&format!("* {nick} left"), out);
                }
                return;
            }
        };
        self.broadcast_here(&line, out);
    }

    /// One line for every present member here, encoded once; not kept for
    /// anyone else.
    fn broadcast_here(&self, line: &str, out: &mut Outbox) {
        let line = encode(line);
        out.reserve(self.members.len());
        for (id, _) in self
            .members
            .iter()
            .filter(|(_, m)| m.presence == Presence::Present)
        {
            out.push(Delivery {
                to: id.clone(),
                line: Rc::clone(&line),
            });
        }
    }

    /// The other servers known to be in the room.
    pub fn remote_servers(&self) -> Vec<String> {
        self.wide
            .as_ref()
            .map(|w| w.remote.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// One shard's part of a room spread over several shards: this
    /// shard's members are kept here, the nicks, the count against
    /// `max_clients` and the join order in `shared`, which every part of
    /// the room is given.
    pub fn sharded(config: ChatConfig, shared: SharedRoom) -> Room {
        Room {
            shared: Some(shared),
            ..Room::new(config)
        }
    }

    /// The registry, if this room is one shard's part of a room.
    pub fn shared(&self) -> Option<&SharedRoom> {
        self.shared.as_ref()
    }

    /// Takes the lines this part broadcast since the last call, in order,
    /// each with its stamp: each is for the members of every other shard
    /// ([`Room::relay`]). Always empty for a room that is not sharded.
    pub fn take_forwarded(&mut self) -> Vec<(Rc<[u8]>, u64)> {
        std::mem::take(&mut self.forwarded)
    }

    /// A line broadcast on another shard, stamped `stamp`: one delivery
    /// of it to each of this part's present members that had joined by
    /// then (join number at most `stamp`), all sharing `line`. A member
    /// that joined later is not told of what came before its join, as on
    /// one reactor.
    pub fn relay(&self, line: &Rc<[u8]>, stamp: u64, out: &mut Outbox) {
        if self.closed {
            return;
        }
        out.reserve(self.members.len());
        let present = self
            .members
            .iter()
            .filter(|(_, m)| m.presence == Presence::Present && m.seq <= stamp);
        for (id, _) in present {
            out.push(Delivery {
                to: id.clone(),
                line: Rc::clone(line),
            });
        }
    }

    /// The room's limits.
    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    /// How many slots are held: every member, stream and datagram, present
    /// or greeted (of this part, for a sharded room).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the room has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether a stream member's join would be refused: `max_clients`
    /// members (of the whole room, for a sharded room), or closed.
    pub fn is_full(&self) -> bool {
        if self.closed {
            return true;
        }
        match &self.shared {
            None => self.members.len() >= self.config.max_clients,
            Some(shared) => shared.is_full(self.config.max_clients),
        }
    }

    /// Most datagram members, greeted ones included: half of
    /// `max_clients`, rounded down, so strangers can never take the slots
    /// of stream members.
    pub fn max_datagram_members(&self) -> usize {
        self.config.max_clients / 2
    }

    /// Whether `id` is a member, present or greeted.
    pub fn contains(&self, id: &MemberId) -> bool {
        self.members.contains_key(id)
    }

    /// Whether `id` is a member the others know of (not only greeted).
    pub fn is_present(&self, id: &MemberId) -> bool {
        self.members
            .get(id)
            .is_some_and(|m| m.presence == Presence::Present)
    }

    /// The nick of member `id`, present or greeted.
    pub fn nick(&self, id: &MemberId) -> Option<&str> {
        self.members.get(id).map(|m| m.nick.as_str())
    }

    /// Every present member's nick, in the order they joined (greeted
    /// members are not listed); of this part only, for a sharded room (see
    /// [`Room::all_nicks`]).
    pub fn nicks(&self) -> Vec<&str> {
        let mut members: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.presence == Presence::Present)
            .collect();
        members.sort_unstable_by_key(|m| m.seq);
        members.into_iter().map(|m| m.nick.as_str()).collect()
    }

    /// Every present member's nick in the whole room, in the order they
    /// joined: what `/who` lists.
    pub fn all_nicks(&self) -> Vec<String> {
        let mut nicks: Vec<String> = match &self.shared {
            None => self.nicks().into_iter().map(str::to_owned).collect(),
            Some(shared) => shared.nicks(),
        };
        if let Some(wide) = self.wide.as_ref().filter(|w| w.linked) {
            nicks.extend(wide.remote.values().flatten().cloned());
        }
        nicks
    }

    /// Adds member `id` as `nick` (its peer address, by the protocol), and
    /// present at once: it gets `* welcome NICK`, every other member
    /// `* NICK joined`. See [`Room::greet`] for a datagram stranger. A nick
    /// already in use (in any ASCII case) gets a `#N` suffix, N being its
    /// join number: a TCP and a UDP peer may share an `ip:port`, and
    /// unnamed Unix peers share no name at all. No `/nick` can take such a
    /// nick (`#` is not allowed). Unsafe characters in `nick` (a Unix
    /// peer's path may hold any) are replaced ([`crate::text`]).
    ///
    /// # Errors
    ///
    /// [`RoomFull`] past `max_clients`, past [`Room::max_datagram_members`]
    /// for a datagram member, or after [`Room::close`]; nothing is sent,
    /// and the caller sends [`ROOM_FULL`].
    pub fn join(&mut self, id: MemberId, nick: String, out: &mut Outbox) -> Result<(), RoomFull> {
        if self.contains(&id) {
            return Ok(());
        }
        if self.is_linked() && matches!(id, MemberId::Stream(_)) {
            // Welcomed once the wider room says the nick is its own.
            let nick = self.add(id.clone(), nick, Presence::Claiming)?;
            self.claim(&id, nick, ClaimKind::Join);
            return Ok(());
        }
        let nick = self.add(id.clone(), nick, Presence::Present)?;
        self.stamp = self.members.get(&id).map(|m| m.seq);
        debug!("chat: {nick} joined");
        self.tell(&id, &format!("* welcome {nick}"), out);
        self.broadcast(&format!("* {nick} joined"), Some(&id), out);
        if self.is_linked() {
            self.claim(&id, nick.clone(), ClaimKind::Keep);
        }
        self.record(RoomEvent::Joined(nick));
        Ok(())
    }

    /// Adds datagram stranger `id` as a greeted member: it gets
    /// `* welcome NICK` and nothing else, and holds its slot and its nick,
    /// until [`Room::confirm`] (its next datagram) makes it present or
    /// [`Room::leave`] (its greeting timed out) forgets it, silently.
    ///
    /// A greeting costs the room one slot and the sender one small line,
    /// whatever address the datagram claims to come from: a spoofed
    /// stranger's victim gets that line and no more.
    ///
    /// # Errors
    ///
    /// As [`Room::join`].
    pub fn greet(&mut self, id: MemberId, nick: String, out: &mut Outbox) -> Result<(), RoomFull> {
        if self.contains(&id) {
            return Ok(());
        }
        let nick = self.add(id.clone(), nick, Presence::Greeted)?;
        debug!("chat: {nick} greeted");
        self.tell(&id, &format!("* welcome {nick}"), out);
        if self.is_linked() {
            // A datagram cannot be held back: the nick is given now, and
            // changed if the wider room says it is taken.
            self.claim(&id, nick, ClaimKind::Keep);
        }
        Ok(())
    }

    /// Makes greeted member `id` present: every other present member gets
    /// `* NICK joined`. Returns whether it was greeted (a present member,
    /// or a non-member, is left as it is).
    pub fn confirm(&mut self, id: &MemberId, out: &mut Outbox) -> bool {
        let greeted = self
            .members
            .get_mut(id)
            .filter(|m| m.presence == Presence::Greeted);
        let Some(member) = greeted else {
            return false;
        };
        member.presence = Presence::Present;
        member.seq = match &self.shared {
            None => {
                self.next_seq += 1;
                self.next_seq
            }
            Some(shared) => shared.confirm(&member.nick),
        };
        let nick = member.nick.clone();
        self.stamp = Some(member.seq);
        debug!("chat: {nick} joined");
        self.broadcast(&format!("* {nick} joined"), Some(id), out);
        self.record(RoomEvent::Joined(nick));
        true
    }

    /// Removes member `id`; if it was present, the others get
    /// `* NICK left` (a greeted member goes silently: nobody saw it join).
    /// Returns whether it was a member (a second leave does nothing).
    pub fn leave(&mut self, id: &MemberId, out: &mut Outbox) -> bool {
        let Some(member) = self.members.remove(id) else {
            return false;
        };
        let datagram = matches!(id, MemberId::Datagram { .. });
        if let Some((claiming, _)) = &member.claiming {
            if nick_key(claiming) != nick_key(&member.nick) {
                self.nicks.remove(&nick_key(claiming));
            }
        }
        if let Some(wide) = self.wide.as_mut().filter(|w| w.linked) {
            // A claim still out is let go of when it is answered.
            if member.presence != Presence::Claiming {
                wide.releases.push(member.nick.clone());
            }
        }
        match &self.shared {
            None => {
                self.nicks.remove(&nick_key(&member.nick));
            }
            Some(shared) => {
                let seq = (member.presence == Presence::Present).then_some(member.seq);
                let when = shared.remove([(member.nick.as_str(), datagram, seq)]);
                // Only a present member's leave is broadcast.
                self.stamp = seq.map(|_| when);
            }
        }
        if datagram {
            self.datagram_members -= 1;
        }
        match member.presence {
            Presence::Greeted | Presence::Claiming => {
                debug!("chat: {} was greeted, never joined; gone", member.nick);
            }
            Presence::Present => {
                debug!("chat: {} left", member.nick);
                self.broadcast(&format!("* {} left", member.nick), None, out);
                self.record(RoomEvent::Left(member.nick));
            }
        }
        true
    }

    /// Acts on one line from member `id`: its bytes without the line end,
    /// not necessarily UTF-8 (invalid bytes are replaced, and so are
    /// control characters, [`crate::text`]). A line from a non-member or a
    /// greeted one does nothing.
    pub fn handle_line(&mut self, id: &MemberId, line: &[u8], out: &mut Outbox) -> Outcome {
        let present = self.members.get(id).filter(|m| m.presence == Presence::Present);
        let Some(nick) = present.map(|m| m.nick.clone()) else {
            return Outcome::Stay;
        };
        let text = sanitize_lossy(line);
        match command::parse(&text) {
            // An empty line says nothing worth a broadcast.
            Command::Say("") => {}
            Command::Say(said) => {
                let line = self.broadcast(&format!("{nick}: {said}"), Some(id), out);
                self.record(RoomEvent::Said(line));
            }
            Command::Nick(new) => self.rename(id, &nick, new, out),
            Command::Who => self.who(id, out),
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
        if let Some(shared) = &self.shared {
            // This part's members free their slots and nicks, in one
            // critical section; the other shards are not told.
            shared.remove(self.members.iter().map(|(id, m)| {
                let datagram = matches!(id, MemberId::Datagram { .. });
                let seq = (m.presence == Presence::Present).then_some(m.seq);
                (m.nick.as_str(), datagram, seq)
            }));
        }
        if let Some(wide) = self.wide.as_mut().filter(|w| w.linked) {
            // The nicks are let go of in the wider room, if it hears of it
            // before the link closes.
            wide.releases
                .extend(self.members.values().map(|m| m.nick.clone()));
            wide.events.clear();
        }
        self.forwarded.clear();
        self.members.clear();
        self.nicks.clear();
        self.datagram_members = 0;
    }

    /// Whether [`Room::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closed
    }

    /// Takes a slot for `id` under `nick` (made safe, and unique), or says
    /// the room is full; returns the nick given. A sharded room claims the
    /// slot, the nick and the join number in its registry, in one critical
    /// section; a room of its own does it here.
    fn add(&mut self, id: MemberId, nick: String, presence: Presence) -> Result<String, RoomFull> {
        let datagram = matches!(id, MemberId::Datagram { .. });
        let nick = if nick.contains(is_unsafe_char) {
            sanitize(&nick).into_owned()
        } else {
            nick
        };
        let (nick, seq) = if let Some(shared) = &self.shared {
            if self.closed {
                return Err(RoomFull);
            }
            let present = presence == Presence::Present;
            shared.add(nick, datagram, present, self.config.max_clients)?
        } else {
            if self.is_full() || (datagram && self.datagram_members >= self.max_datagram_members()) {
                return Err(RoomFull);
            }
            self.next_seq += 1;
            let nick = self.unique_nick(nick);
            self.nicks.insert(nick_key(&nick), id.clone());
            (nick, self.next_seq)
        };
        if datagram {
            self.datagram_members += 1;
        }
        self.members.insert(
            id,
            Member {
                nick: nick.clone(),
                seq,
                presence,
                claiming: None,
            },
        );
        Ok(nick)
    }

    /// `nick`, or `nick#N` with the first free N from the next join number
    /// on when `nick` is taken in any case.
    fn unique_nick(&self, nick: String) -> String {
        unique_nick(nick, self.next_seq, |key| self.nicks.contains_key(key))
    }

    /// Renames `id` from `old` to `new`, or tells it why not. A member may
    /// change the case of its own nick (`alice` to `Alice`); any other nick
    /// held in any case, greeted members' included, is taken.
    fn rename(&mut self, id: &MemberId, old: &str, new: &str, out: &mut Outbox) {
        if !command::is_valid_nick(new) {
            let text = "* error: invalid nick: a nick is 1 to 32 of A-Z a-z 0-9 _ -";
            return self.tell(id, text, out);
        }
        if new == old {
            return self.tell(id, &format!("* error: you are already {new}"), out);
        }
        if self.is_linked() {
            return self.rename_wide(id, old, new, out);
        }
        match &self.shared {
            None => {
                if self.nicks.get(&nick_key(new)).is_some_and(|holder| holder != id) {
                    return self.tell(id, &format!("* error: nick {new} is taken"), out);
                }
                self.nicks.remove(&nick_key(old));
                self.nicks.insert(nick_key(new), id.clone());
            }
            Some(shared) => {
                let seq = self.members.get(id).map(|m| m.seq);
                let Some(when) = shared.rename(old, new, seq) else {
                    return self.tell(id, &format!("* error: nick {new} is taken"), out);
                };
                self.stamp = Some(when);
            }
        }
        if let Some(member) = self.members.get_mut(id) {
            member.nick = new.to_owned();
        }
        self.renamed(old, new, out);
    }

    /// `/nick NEW` in a room spread over servers: a nick held here or by
    /// another server's member (as far as this part knows) is refused at
    /// once; a change of case is done at once; any other is claimed in
    /// the wider room, and the rename waits for the answer
    /// ([`Room::claimed`]).
    fn rename_wide(&mut self, id: &MemberId, old: &str, new: &str, out: &mut Outbox) {
        let key = nick_key(new);
        let here = self.nicks.get(&key).is_some_and(|holder| holder != id);
        let elsewhere = self
            .wide
            .as_ref()
            .is_some_and(|w| w.remote.values().flatten().any(|n| nick_key(n) == key));
        if here || elsewhere {
            return self.tell(id, &format!("* error: nick {new} is taken"), out);
        }
        if self.members.get(id).is_some_and(|m| m.claiming.is_some()) {
            return self.tell(id, "* error: your nick is being changed; try again", out);
        }
        if key == nick_key(old) {
            if let Some(member) = self.members.get_mut(id) {
                member.nick = new.to_owned();
            }
            return self.renamed(old, new, out);
        }
        self.claim(id, new.to_owned(), ClaimKind::Rename);
    }

    /// The `/who` answer for `id`: one line for a stream member; for a
    /// datagram member, as many lines of at most [`MAX_WHO_DATAGRAM`] bytes
    /// as the list needs, each `* online: ...`.
    fn who(&self, id: &MemberId, out: &mut Outbox) {
        const HEAD: &str = "* online:";
        let limit = match id {
            MemberId::Stream(_) => usize::MAX,
            MemberId::Datagram { .. } => MAX_WHO_DATAGRAM,
        };
        let mut line = String::from(HEAD);
        let all;
        let mut nicks: Vec<&str> = match &self.shared {
            None => self.nicks(),
            Some(shared) => {
                all = shared.nicks();
                all.iter().map(String::as_str).collect()
            }
        };
        if let Some(wide) = self.wide.as_ref().filter(|w| w.linked) {
            nicks.extend(wide.remote.values().flatten().map(String::as_str));
        }
        for nick in nicks {
            if line.len() > HEAD.len() && line.len() + 1 + nick.len() > limit {
                self.tell(id, &line, out);
                line.truncate(HEAD.len());
            }
            line.push(' ');
            line.push_str(nick);
        }
        self.tell(id, &line, out);
    }

    /// One line for one member.
    fn tell(&self, id: &MemberId, line: &str, out: &mut Outbox) {
        out.push(Delivery {
            to: id.clone(),
            line: encode(line),
        });
    }

    /// One line for every present member but `except`, encoded once.
    fn broadcast(&mut self, line: &str, except: Option<&MemberId>, out: &mut Outbox) -> Rc<[u8]> {
        let line = encode(line);
        if let Some(shared) = &self.shared {
            let stamp = self.stamp.take().unwrap_or_else(|| shared.clock());
            self.forwarded.push((Rc::clone(&line), stamp));
        }
        out.reserve(self.members.len());
        let present = self
            .members
            .iter()
            .filter(|(id, m)| m.presence == Presence::Present && Some(*id) != except);
        for (id, _) in present {
            out.push(Delivery {
                to: id.clone(),
                line: Rc::clone(&line),
            });
        }
        line
    }

    /// Asks the wider room for `nick` for member `id`, holding it here
    /// meanwhile.
    fn claim(&mut self, id: &MemberId, nick: String, kind: ClaimKind) {
        let Some(wide) = &mut self.wide else {
            return;
        };
        if let Some(member) = self.members.get_mut(id) {
            member.claiming = Some((nick.clone(), kind));
        }
        self.nicks.insert(nick_key(&nick), id.clone());
        wide.claims.push(Claim {
            member: id.clone(),
            nick,
            kind,
        });
    }
}

/// The key a nick is unique by: its ASCII lowercase.
pub(super) fn nick_key(nick: &str) -> String {
    nick.to_ascii_lowercase()
}

/// `nick`, or `nick#N` with the first free N from `next` on when `nick`
/// is taken in any case (`taken` is asked about nick keys).
pub(super) fn unique_nick(nick: String, next: u64, taken: impl Fn(&str) -> bool) -> String {
    if !taken(&nick_key(&nick)) {
        return nick;
    }
    (next..)
        .map(|n| format!("{nick}#{n}"))
        .find(|candidate| !taken(&nick_key(candidate)))
        .expect("a free suffix: the room holds finitely many nicks")
}

/// `line` and its `\n`, ready to share.
fn encode(line: &str) -> Rc<[u8]> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    crate::codec::line::encode_line(&mut bytes, line.as_bytes());
    Rc::from(bytes)
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
            [(ids[1].clone(), "a: caf\u{fffd}\u{fffd}* b left".to_owned())]
        );
    }

    #[test]
    fn control_characters_in_text_are_replaced_and_the_line_is_shared() {
        let (mut room, ids, mut out) = room_with(&["a", "b", "c"]);
        room.handle_line(
            &ids[0],
            "hi\r* a is now admin\x1b[2J\u{2028}\tx".as_bytes(),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert!(Rc::ptr_eq(&out[0].line, &out[1].line), "one encoding, shared");
        assert_eq!(
            std::str::from_utf8(&out[0].line).expect("utf-8"),
            "a: hi\u{fffd}* a is now admin\u{fffd}[2J\u{fffd}\tx\n"
        );
        // An unknown command's word, echoed back, is made safe as well.
        out.clear();
        room.handle_line(&ids[0], b"/x\x1b[31m", &mut out);
        assert!(sent(&mut out)[0]
            .1
            .starts_with("* error: unknown command /x\u{fffd}[31m"));
    }

    #[test]
    fn a_nick_with_control_characters_is_made_safe_at_join() {
        let (mut room, ids, mut out) = room_with(&["a"]);
        let b = MemberId::Stream(keys(2)[1]);
        room.join(b.clone(), "/tmp/x\r* a left".into(), &mut out)
            .expect("space");
        assert_eq!(room.nick(&b), Some("/tmp/x\u{fffd}* a left"));
        assert_eq!(
            sent(&mut out),
            [
                (ids[0].clone(), "* /tmp/x\u{fffd}* a left joined".to_owned()),
                (b, "* welcome /tmp/x\u{fffd}* a left".to_owned()),
            ]
        );
    }

    #[test]
    fn nicks_are_unique_without_regard_to_ascii_case() {
        let (mut room, ids, mut out) = room_with(&["a", "b"]);
        room.handle_line(&ids[0], b"/nick alice", &mut out);
        out.clear();
        for taken in ["Alice", "ALICE", "alice"] {
            room.handle_line(&ids[1], format!("/nick {taken}").as_bytes(), &mut out);
            assert_eq!(
                sent(&mut out),
                [(ids[1].clone(), format!("* error: nick {taken} is taken"))]
            );
        }
        // Its holder may change its case; the old case is not then free.
        room.handle_line(&ids[0], b"/nick Alice", &mut out);
        assert_eq!(sent(&mut out).len(), 2);
        assert_eq!(room.nick(&ids[0]), Some("Alice"));
        room.handle_line(&ids[1], b"/nick alice", &mut out);
        assert!(sent(&mut out)[0].1.starts_with("* error: nick alice is taken"));
        // At join, a clash in another case gets a suffix too.
        let c = MemberId::Stream(keys(3)[2]);
        room.join(c.clone(), "ALICE".into(), &mut out).expect("space");
        assert_eq!(room.nick(&c), Some("ALICE#3"));
    }

    fn datagram(socket: Key, port: u16) -> MemberId {
        MemberId::Datagram {
            socket,
            addr: Addr::Inet(([127, 0, 0, 1], port).into()),
        }
    }

    #[test]
    fn a_greeted_member_is_welcomed_and_nothing_else_until_confirmed() {
        let (mut room, ids, mut out) = room_with(&["a", "b"]);
        let g = datagram(keys(1)[0], 7);
        room.greet(g.clone(), "127.0.0.1:7".into(), &mut out)
            .expect("space");
        assert_eq!(sent(&mut out), [(g.clone(), "* welcome 127.0.0.1:7".to_owned())]);
        assert!(room.contains(&g) && !room.is_present(&g));
        // Not run, not told, not listed; its nick is held.
        assert_eq!(room.handle_line(&g, b"/who", &mut out), Outcome::Stay);
        room.handle_line(&ids[0], b"hello", &mut out);
        room.handle_line(&ids[0], b"/who", &mut out);
        assert_eq!(
            sent(&mut out),
            [
                (ids[0].clone(), "* online: a b".to_owned()),
                (ids[1].clone(), "a: hello".to_owned()),
            ]
        );
        let same = MemberId::Stream(keys(3)[2]);
        room.join(same.clone(), "127.0.0.1:7".into(), &mut out)
            .expect("space");
        assert_ne!(room.nick(&same), Some("127.0.0.1:7"), "the greeted nick is held");
        room.leave(&same, &mut out);
        out.clear();
        // Confirmed: the others are told, and it is a member like any.
        assert!(room.confirm(&g, &mut out));
        assert!(!room.confirm(&g, &mut out), "once");
        let mut want = vec![
            (ids[0].clone(), "* 127.0.0.1:7 joined".to_owned()),
            (ids[1].clone(), "* 127.0.0.1:7 joined".to_owned()),
        ];
        want.sort_by_key(|(to, _)| format!("{to:?}"));
        assert_eq!(sent(&mut out), want);
        assert_eq!(room.nicks(), ["a", "b", "127.0.0.1:7"]);
    }

    #[test]
    fn a_greeted_member_leaves_silently() {
        let (mut room, _ids, mut out) = room_with(&["a", "b"]);
        let g = datagram(keys(1)[0], 7);
        room.greet(g.clone(), "127.0.0.1:7".into(), &mut out)
            .expect("space");
        out.clear();
        assert!(room.leave(&g, &mut out));
        assert!(out.is_empty(), "nobody saw it join: {out:?}");
        assert_eq!(room.len(), 2);
    }

    #[test]
    fn datagram_members_hold_at_most_half_the_room() {
        let mut room = Room::new(config(5));
        let socket = keys(1)[0];
        let mut out = Outbox::new();
        assert_eq!(room.max_datagram_members(), 2);
        room.greet(datagram(socket, 1), "g1".into(), &mut out)
            .expect("space");
        room.join(datagram(socket, 2), "g2".into(), &mut out)
            .expect("space");
        assert_eq!(
            room.greet(datagram(socket, 3), "g3".into(), &mut out),
            Err(RoomFull)
        );
        assert_eq!(
            room.join(datagram(socket, 3), "g3".into(), &mut out),
            Err(RoomFull)
        );
        // Stream members still have the rest.
        for key in keys(3) {
            room.join(MemberId::Stream(key), key_nick(key), &mut out)
                .expect("space");
        }
        assert!(room.is_full());
        // A greeted slot that goes frees a datagram slot, not more.
        room.leave(&datagram(socket, 1), &mut out);
        room.greet(datagram(socket, 3), "g3".into(), &mut out)
            .expect("space");
    }

    fn key_nick(key: Key) -> String {
        format!("{key:?}").replace(|c: char| !c.is_ascii_alphanumeric(), "")
    }

    #[test]
    fn who_to_a_datagram_member_is_split_into_lines_of_at_most_1200_bytes() {
        let mut room = Room::new(config(1000));
        let mut out = Outbox::new();
        let streams = keys(300);
        let mut want = Vec::new();
        for (i, key) in streams.iter().enumerate() {
            let nick = format!("member-with-a-long-nick-{i:04}");
            want.push(nick.clone());
            room.join(MemberId::Stream(*key), nick, &mut out).expect("space");
        }
        let d = datagram(streams[0], 9);
        room.join(d.clone(), "dgram".into(), &mut out).expect("space");
        want.push("dgram".to_owned());
        out.clear();
        room.handle_line(&d, b"/who", &mut out);
        assert!(out.len() > 1, "{} lines", out.len());
        let mut listed = Vec::new();
        for delivery in out.drain(..) {
            assert_eq!(delivery.to, d);
            let line = std::str::from_utf8(&delivery.line).expect("utf-8");
            let line = line.strip_suffix('\n').expect("one line");
            assert!(line.len() <= MAX_WHO_DATAGRAM, "{} bytes", line.len());
            let nicks = line.strip_prefix("* online: ").expect("an online line");
            listed.extend(nicks.split(' ').map(str::to_owned));
        }
        assert_eq!(listed, want);
        // A stream member still gets the whole list as one line.
        room.handle_line(&MemberId::Stream(streams[0]), b"/who", &mut out);
        assert_eq!(out.len(), 1);
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

    /// A room spread over servers, linked, with members `names` joined
    /// (their claims won), everything sent so far taken out.
    fn wide_with(names: &[&str]) -> (Room, Vec<MemberId>, Outbox) {
        let mut room = Room::wide(config(10));
        room.set_linked(true);
        let ids: Vec<MemberId> = keys(names.len()).into_iter().map(MemberId::Stream).collect();
        let mut out = Outbox::new();
        for (id, name) in ids.iter().zip(names) {
            room.join(id.clone(), (*name).to_owned(), &mut out)
                .expect("space");
            assert!(room.is_waiting(id), "a stream member waits for its claim");
            for claim in room.take_claims() {
                room.claimed(claim, ClaimAnswer::Won, &mut out);
            }
            assert!(!room.is_waiting(id));
        }
        out.clear();
        room.take_events();
        (room, ids, out)
    }

    #[test]
    fn a_wide_join_is_welcomed_once_its_claim_is_won() {
        let (mut room, ids, mut out) = wide_with(&["a"]);
        let b = MemberId::Stream(keys(2)[1]);
        room.join(b.clone(), "b".into(), &mut out).expect("space");
        assert!(out.is_empty(), "nothing before the claim: {out:?}");
        let claims = room.take_claims();
        assert_eq!(
            claims,
            [Claim {
                member: b.clone(),
                nick: "b".into(),
                kind: ClaimKind::Join
            }]
        );
        room.handle_line(&ids[0], b"/who", &mut out);
        assert_eq!(sent(&mut out), [(ids[0].clone(), "* online: a".to_owned())]);
        room.claimed(claims[0].clone(), ClaimAnswer::Won, &mut out);
        let mut want = vec![
            (ids[0].clone(), "* b joined".to_owned()),
            (b, "* welcome b".to_owned()),
        ];
        want.sort_by_key(|(to, _)| format!("{to:?}"));
        assert_eq!(sent(&mut out), want);
        assert_eq!(room.take_events(), [RoomEvent::Joined("b".into())]);
    }

    #[test]
    fn a_wide_join_whose_nick_is_held_elsewhere_gets_a_suffix() {
        let (mut room, _ids, mut out) = wide_with(&["a"]);
        let b = MemberId::Stream(keys(2)[1]);
        room.join(b.clone(), "127.0.0.1:9".into(), &mut out)
            .expect("space");
        let claim = room.take_claims().remove(0);
        room.claimed(claim, ClaimAnswer::Lost, &mut out);
        assert!(out.is_empty() && room.is_waiting(&b));
        let again = room.take_claims().remove(0);
        assert!(again.nick.starts_with("127.0.0.1:9#"), "{again:?}");
        room.claimed(again.clone(), ClaimAnswer::Won, &mut out);
        assert!(sent(&mut out).contains(&(b.clone(), format!("* welcome {}", again.nick))));
        assert_eq!(room.nick(&b), Some(again.nick.as_str()));
    }

    #[test]
    fn a_wide_rename_waits_for_its_claim_and_a_lost_one_is_an_error() {
        let (mut room, ids, mut out) = wide_with(&["a", "b"]);
        room.handle_line(&ids[0], b"/nick alice", &mut out);
        assert!(out.is_empty() && room.is_waiting(&ids[0]));
        // Held here meanwhile: nobody else here may take it.
        room.handle_line(&ids[1], b"/nick ALICE", &mut out);
        assert_eq!(
            sent(&mut out),
            [(ids[1].clone(), "* error: nick ALICE is taken".to_owned())]
        );
        let claim = room.take_claims().remove(0);
        room.claimed(claim, ClaimAnswer::Won, &mut out);
        assert_eq!(sent(&mut out).len(), 2, "everyone is told");
        assert_eq!(room.take_releases(), ["a"], "the old nick is let go of");
        assert_eq!(
            room.take_events(),
            [RoomEvent::Renamed("a".into(), "alice".into())]
        );
        room.handle_line(&ids[1], b"/nick carol", &mut out);
        let claim = room.take_claims().remove(0);
        room.claimed(claim, ClaimAnswer::Lost, &mut out);
        assert_eq!(
            sent(&mut out),
            [(ids[1].clone(), "* error: nick carol is taken".to_owned())]
        );
        assert_eq!(room.nick(&ids[1]), Some("b"));
        // Free again here.
        room.handle_line(&ids[0], b"/nick carol", &mut out);
        assert_eq!(room.take_claims().len(), 1);
    }

    #[test]
    fn a_kept_nick_lost_on_return_gives_a_fresh_one_and_tells_everyone() {
        let (mut room, ids, mut out) = wide_with(&["zed", "b"]);
        room.set_linked(false);
        room.set_linked(true);
        let claims = room.take_claims();
        assert_eq!(claims.len(), 2, "every nick is claimed again");
        for claim in claims {
            let answer = if claim.nick == "zed" {
                ClaimAnswer::Lost
            } else {
                ClaimAnswer::Won
            };
            room.claimed(claim, answer, &mut out);
        }
        assert!(out.is_empty(), "nothing changes until a fresh nick is won");
        let fresh = room.take_claims().remove(0);
        room.claimed(fresh.clone(), ClaimAnswer::Won, &mut out);
        let new = fresh.nick;
        let got = sent(&mut out);
        assert!(got.contains(&(
            ids[0].clone(),
            format!("* nick zed is held by another member of the room; you are now {new}")
        )));
        assert!(got.contains(&(ids[1].clone(), format!("* zed is now {new}"))));
        assert_eq!(room.take_events(), [RoomEvent::Renamed("zed".into(), new)]);
    }

    #[test]
    fn the_other_servers_members_are_listed_and_heard_and_forgotten_when_apart() {
        let (mut room, ids, mut out) = wide_with(&["a"]);
        room.remote("s2", Remote::Presence(vec!["x".into(), "y".into()]), &mut out);
        assert!(out.is_empty(), "presence is silent");
        room.remote("s2", Remote::Said("x: hi".into()), &mut out);
        room.remote("s2", Remote::Joined("z".into()), &mut out);
        room.remote("s2", Remote::Renamed("y".into(), "yy".into()), &mut out);
        room.remote("s2", Remote::Left("x".into()), &mut out);
        let lines: Vec<String> = sent(&mut out).into_iter().map(|(_, l)| l).collect();
        assert_eq!(lines, ["x: hi", "* z joined", "* y is now yy", "* x left"]);
        room.handle_line(&ids[0], b"/who", &mut out);
        assert_eq!(sent(&mut out), [(ids[0].clone(), "* online: a yy z".to_owned())]);
        room.handle_line(&ids[0], b"/nick YY", &mut out);
        assert_eq!(
            sent(&mut out),
            [(ids[0].clone(), "* error: nick YY is taken".to_owned())]
        );
        room.set_linked(false);
        room.handle_line(&ids[0], b"/who", &mut out);
        assert_eq!(sent(&mut out), [(ids[0].clone(), "* online: a".to_owned())]);
        room.remote("s2", Remote::Said("x: lost".into()), &mut out);
        assert!(out.is_empty(), "apart, nothing comes in");
        room.set_linked(true);
        room.remote("s2", Remote::Known(vec!["yy".into()]), &mut out);
        room.remote("s2", Remote::Gone, &mut out);
        assert_eq!(sent(&mut out), [(ids[0].clone(), "* yy left".to_owned())]);
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
