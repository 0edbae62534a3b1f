//! One chat room over several servers, through Redis
//! ([`Chat::over_redis`](super::Chat::over_redis)).
//!
//! Each server keeps its own members in its part of the room
//! ([`Room::wide`]) and tells the others what they do through the room's
//! pub/sub channel; what is one for the whole room lives in Redis, under
//! keys that expire unless their server refreshes them:
//!
//! | key (room `R`, server `S`) | what | kept how |
//! |---|---|---|
//! | channel `evloop:chat:R` | what members do, batched per turn per server | `PUBLISH` at the end of each turn that has something |
//! | `evloop:chat:R:nick:NICK` (lowercased) | who holds a nick: `S` | `SET ... NX PX` to claim; refreshed every second, expires after 10 s; let go of by compare-and-delete |
//! | `evloop:chat:R:server:S` | `S`'s members, one per line, in join order | written every second, expires after 10 s |
//! | `evloop:chat:R:servers` | the servers that wrote one | `SADD`; a member whose key is gone is removed by whoever reads it |
//!
//! A message on the channel is a RESP array of byte strings: the format
//! (`evloop-chat/1`), the sender `S`, then records: `S LINE` (a member
//! said `LINE`, which is `NICK: TEXT`), `J NICK` (joined), `L NICK` (left),
//! `N OLD NEW` (renamed), `P COUNT NICK...` (every member of `S` now, sent
//! each second and on joining), `Q` (`S` is leaving the room). A server
//! skips its own messages: nothing is delivered twice. Redis delivers one
//! connection's messages in the order published, so each sender's lines
//! arrive in order everywhere.
//!
//! The server's part of the room:
//!
//! ```text
//!  Apart  --link up (on_up)------------> Joined  nicks claimed again (a lost one: notice, fresh nick), presence
//!                                                written and published, the others' presence read
//!  Joined --link down (on_down)---------> Apart   one warning; the other servers' members forgotten, silently
//!  Joined --a server silent for 5 s----> Joined  its members leave ("* NICK left" here)
//!  Joined --Q from a server------------> Joined  its members leave
//!  Joined --reactor shutdown-----------> Apart   Q published, nicks and presence deleted
//! ```
//!
//! Always true:
//! - a stream member is welcomed once its nick is the room's (or Redis is
//!   out of reach, and it is this part's); a `/nick` is done once Redis
//!   said the name is free, so of two servers claiming one name at once
//!   exactly one wins; the member's next lines wait meanwhile, unread;
//! - while apart, the part is a room of its own: its members see each
//!   other, nothing is kept for the other servers, and nothing is replayed
//!   once it is back;
//! - a server that dies vanishes from the others' `/who` at most 6 s after
//!   its last presence (5 s of silence, found by a check each second).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::room::{Claim, ClaimAnswer, Outbox, Remote, Room, RoomEvent};
use super::{deliver, deliver_from, MemberId};
use crate::protocols::redis::{self, Redis, RedisEvents, RedisOptions, Reply};
use crate::text::sanitize_lossy;
use crate::{Context, Reactor};

/// The format a channel message starts with.
const FORMAT: &[u8] = b"evloop-chat/1";

/// How often a server refreshes its keys and publishes its presence.
pub const REFRESH: Duration = Duration::from_secs(1);

/// How long a server's keys (its nicks, its presence) live unrefreshed.
pub const KEY_TTL: Duration = Duration::from_secs(10);

/// How long a server may be silent on the channel before its members are
/// taken for gone.
pub const SILENCE: Duration = Duration::from_secs(5);

/// Frees the nicks in KEYS still held by the server ARGV[1].
const RELEASE: &str = "for _, k in ipairs(KEYS) do \
     if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end end return 0";

/// Pushes back the expiry (ARGV[2] ms) of the nicks in KEYS still held by
/// the server ARGV[1].
const REFRESH_NICKS: &str = "for _, k in ipairs(KEYS) do \
     if redis.call('GET', k) == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) end end return 0";

/// Whether `name` can name a room: 1 to 64 of `A-Z a-z 0-9 _ - . :`.
pub fn is_valid_room(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// One server's link to the wider room.
pub(super) struct Federation {
    room: Rc<RefCell<Room>>,
    name: String,
    /// This server's id in the room: random, new each start.
    server: String,
    channel: Vec<u8>,
    /// `evloop:chat:R:`.
    prefix: String,
    redis: RefCell<Option<Redis>>,
    /// When each other server was last heard on the channel.
    heard: RefCell<HashMap<String, Instant>>,
    /// The link came up and the room's presence is due.
    sync_due: Cell<bool>,
}

impl Federation {
    /// Links `room` (made with [`Room::wide`]) to the room `name` of the
    /// Redis server at `addr`, from `reactor`.
    pub(super) fn start(reactor: &mut Reactor, room: Rc<RefCell<Room>>, addr: SocketAddr, name: &str) {
        let fed = Rc::new(Federation {
            room,
            name: name.to_owned(),
            server: server_id(),
            channel: format!("evloop:chat:{name}").into_bytes(),
            prefix: format!("evloop:chat:{name}:"),
            redis: RefCell::new(None),
            heard: RefCell::new(HashMap::new()),
            sync_due: Cell::new(false),
        });
        let channel = fed.channel.clone();
        let redis = Redis::start(
            reactor,
            addr,
            RedisOptions::default(),
            &[&channel[..]],
            Events(Rc::clone(&fed)),
        );
        *fed.redis.borrow_mut() = Some(redis);
        let hook = Rc::clone(&fed);
        reactor.on_turn_end(move |reactor| hook.turn_end(reactor));
        let tick = Rc::clone(&fed);
        if reactor
            .set_repeating(REFRESH, move |reactor| tick.refresh(reactor))
            .is_err()
        {
            warn!("chat: no timer for the room's presence (the timer table is full)");
        }
    }

    fn redis(&self) -> Option<Redis> {
        self.redis.borrow().clone()
    }

    fn nick_key(&self, nick: &str) -> Vec<u8> {
        format!("{}nick:{}", self.prefix, nick.to_ascii_lowercase()).into_bytes()
    }

    fn server_key(&self, server: &str) -> Vec<u8> {
        format!("{}server:{server}", self.prefix).into_bytes()
    }

    fn servers_key(&self) -> Vec<u8> {
        format!("{}servers", self.prefix).into_bytes()
    }

    /// Each turn's end: the claims, releases and events of the turn go to
    /// Redis, the events as one message.
    fn turn_end(self: &Rc<Self>, reactor: &mut Reactor) {
        let (claims, releases, events) = {
            let mut room = self.room.borrow_mut();
            (room.take_claims(), room.take_releases(), room.take_events())
        };
        let sync = self.sync_due.get();
        if claims.is_empty() && releases.is_empty() && events.is_empty() && !sync {
            return;
        }
        let Some(redis) = self.redis().filter(Redis::is_up) else {
            // Out of reach: each nick asked for is this part's alone.
            let mut out = Outbox::new();
            let mut resume = Vec::new();
            for claim in claims {
                resume.push(claim.member.clone());
                self.room
                    .borrow_mut()
                    .claimed(claim, ClaimAnswer::Unknown, &mut out);
            }
            deliver_from(reactor, &mut out);
            self.resume(reactor, resume);
            return;
        };
        for claim in claims {
            self.send_claim(&redis, claim);
        }
        self.release(&redis, &releases);
        if !events.is_empty() {
            let payload = encode_message(&self.server, &events);
            redis.publish(&self.channel, &payload);
        }
        if self.sync_due.replace(false) {
            self.sync(&redis);
        }
        redis.flush(reactor);
    }

    /// Claims `claim.nick` for its member with `SET NX`; if it is held,
    /// `GET` says whether by this server (a claim again after a short
    /// outage that Redis kept the keys through). The answer goes to the
    /// room, and a member no longer waiting reads again.
    fn send_claim(self: &Rc<Self>, redis: &Redis, claim: Claim) {
        let key = self.nick_key(&claim.nick);
        let ttl = KEY_TTL.as_millis().to_string();
        let fed = Rc::clone(self);
        let args: [&[u8]; 6] = [
            b"SET",
            &key.clone(),
            self.server.as_bytes(),
            b"NX",
            b"PX",
            ttl.as_bytes(),
        ];
        redis.command(&args, move |cx, reply| match reply {
            Ok(Reply::Status(_)) => fed.answer(cx, claim, ClaimAnswer::Won),
            Ok(Reply::Nil) => {
                let Some(redis) = fed.redis() else {
                    return fed.answer(cx, claim, ClaimAnswer::Unknown);
                };
                let asker = Rc::clone(&fed);
                redis.command(&[&b"GET"[..], &key], move |cx, reply| {
                    let answer = match reply {
                        Ok(Reply::Bulk(holder)) if holder == asker.server.as_bytes() => ClaimAnswer::Won,
                        Ok(_) => ClaimAnswer::Lost,
                        Err(_) => ClaimAnswer::Unknown,
                    };
                    asker.answer(cx, claim, answer);
                });
            }
            Ok(other) => {
                debug!("chat: Redis answered a claim with {other:?}");
                fed.answer(cx, claim, ClaimAnswer::Unknown);
            }
            Err(_) => fed.answer(cx, claim, ClaimAnswer::Unknown),
        });
    }

    /// Gives a claim's answer to the room; its member, no longer waiting,
    /// reads again.
    fn answer(&self, cx: &mut Context<'_>, claim: Claim, answer: ClaimAnswer) {
        let member = claim.member.clone();
        let mut out = Outbox::new();
        self.room.borrow_mut().claimed(claim, answer, &mut out);
        deliver(cx, &mut out);
        if let MemberId::Stream(key) = member {
            if !self.room.borrow().is_waiting(&member) {
                cx.source(key).resume_reading();
            }
        }
    }

    /// Runs `script` (one of the compare-and-act scripts) over the keys of
    /// `nicks`, with this server's id and `extra` as its arguments, in one
    /// `EVAL`; the reply is not wanted.
    fn eval_nicks(&self, redis: &Redis, script: &str, nicks: &[String], extra: &[&[u8]]) {
        if nicks.is_empty() {
            return;
        }
        let count = nicks.len().to_string();
        let keys: Vec<Vec<u8>> = nicks.iter().map(|n| self.nick_key(n)).collect();
        let mut args: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), count.as_bytes()];
        args.extend(keys.iter().map(Vec::as_slice));
        args.push(self.server.as_bytes());
        args.extend_from_slice(extra);
        redis.command(&args, |_, _| {});
    }

    /// Lets go of `nicks` in Redis, where this server still holds them.
    fn release(&self, redis: &Redis, nicks: &[String]) {
        self.eval_nicks(redis, RELEASE, nicks, &[]);
    }

    /// Members whose claims were answered while out of reach read again.
    fn resume(&self, reactor: &mut Reactor, members: Vec<MemberId>) {
        for member in members {
            if let MemberId::Stream(key) = member {
                if !self.room.borrow().is_waiting(&member) {
                    reactor.resume_reading(key);
                }
            }
        }
    }

    /// The presence message: every present member here, in join order.
    fn presence(&self) -> (Vec<u8>, Vec<u8>) {
        let nicks: Vec<String> = self
            .room
            .borrow()
            .nicks()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let count = nicks.len().to_string();
        let mut parts: Vec<&[u8]> = vec![FORMAT, self.server.as_bytes(), b"P", count.as_bytes()];
        parts.extend(nicks.iter().map(String::as_bytes));
        let mut payload = Vec::new();
        redis::encode_command(&mut payload, &parts);
        (payload, nicks.join("\n").into_bytes())
    }

    /// Writes and publishes this server's presence, refreshes its nicks.
    fn publish_presence(&self, redis: &Redis) {
        let (message, list) = self.presence();
        let ttl = KEY_TTL.as_millis().to_string();
        let server_key = self.server_key(&self.server);
        redis.command(
            &[&b"SET"[..], &server_key, &list, b"PX", ttl.as_bytes()],
            |_, _| {},
        );
        redis.command(
            &[&b"SADD"[..], &self.servers_key(), self.server.as_bytes()],
            |_, _| {},
        );
        redis.publish(&self.channel, &message);
        let nicks = self.room.borrow().held_nicks();
        self.eval_nicks(redis, REFRESH_NICKS, &nicks, &[ttl.as_bytes()]);
    }

    /// Joining the room: presence written and published, and the other
    /// servers' presence read (`SMEMBERS`, then their keys), for those not
    /// heard from on the channel meanwhile.
    fn sync(self: &Rc<Self>, redis: &Redis) {
        self.publish_presence(redis);
        let fed = Rc::clone(self);
        redis.command(&[&b"SMEMBERS"[..], &self.servers_key()], move |_, reply| {
            let Ok(Reply::Array(servers)) = reply else {
                return;
            };
            let servers: Vec<String> = servers
                .iter()
                .filter_map(Reply::as_bytes)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .filter(|s| *s != fed.server)
                .collect();
            let Some(redis) = fed.redis() else {
                return;
            };
            if servers.is_empty() {
                return;
            }
            let keys: Vec<Vec<u8>> = servers.iter().map(|s| fed.server_key(s)).collect();
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(keys.iter().map(Vec::as_slice));
            let read = Rc::clone(&fed);
            redis.command(&args, move |cx, reply| {
                let Ok(Reply::Array(lists)) = reply else {
                    return;
                };
                let mut gone = Vec::new();
                let mut out = Outbox::new();
                for (server, list) in servers.iter().zip(lists) {
                    match list.as_bytes() {
                        Some(list) => {
                            let nicks = split_nicks(list);
                            read.room
                                .borrow_mut()
                                .remote(server, Remote::Known(nicks), &mut out);
                            read.heard
                                .borrow_mut()
                                .entry(server.clone())
                                .or_insert_with(Instant::now);
                        }
                        None => gone.push(server.as_bytes()),
                    }
                }
                deliver(cx, &mut out);
                if let Some(redis) = read.redis().filter(|_| !gone.is_empty()) {
                    let key = read.servers_key();
                    let mut args: Vec<&[u8]> = vec![b"SREM", &key];
                    args.extend(gone);
                    redis.command(&args, |_, _| {});
                }
            });
        });
    }

    /// Every second: presence refreshed and published; a server silent
    /// for [`SILENCE`] is taken for gone.
    fn refresh(self: &Rc<Self>, reactor: &mut Reactor) {
        let Some(redis) = self.redis().filter(Redis::is_up) else {
            return;
        };
        if !self.room.borrow().is_linked() {
            return;
        }
        self.publish_presence(&redis);
        let now = Instant::now();
        let mut out = Outbox::new();
        let servers = self.room.borrow().remote_servers();
        for server in servers {
            let heard = self.heard.borrow().get(&server).copied();
            if heard.map_or(true, |at| now.saturating_duration_since(at) >= SILENCE) {
                info!(
                    "chat: server {server} of room {} is silent; its members left",
                    self.name
                );
                self.heard.borrow_mut().remove(&server);
                self.room.borrow_mut().remote(&server, Remote::Gone, &mut out);
            }
        }
        deliver_from(reactor, &mut out);
        redis.flush(reactor);
    }

    /// A channel message: its records, unless it is this server's own.
    fn message(&self, cx: &mut Context<'_>, payload: &[u8]) {
        let Some((server, records)) = decode_message(payload) else {
            debug!("chat: a message on the room's channel that is not the room's; ignored");
            return;
        };
        if server == self.server {
            return;
        }
        if records.contains(&Remote::Gone) {
            self.heard.borrow_mut().remove(&server);
        } else {
            self.heard.borrow_mut().insert(server.clone(), Instant::now());
        }
        let mut out = Outbox::new();
        for record in records {
            self.room.borrow_mut().remote(&server, record, &mut out);
            // One record's deliveries at a time, as with a member's lines.
            deliver(cx, &mut out);
        }
    }
}

/// One message for the room's channel: what `events` say, from `server`
/// (the format is in the module docs).
pub fn encode_message(server: &str, events: &[RoomEvent]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(2 + events.len() * 3);
    parts.push(FORMAT);
    parts.push(server.as_bytes());
    for event in events {
        match event {
            RoomEvent::Said(line) => {
                parts.push(b"S");
                parts.push(line.strip_suffix(b"\n").unwrap_or(line));
            }
            RoomEvent::Joined(nick) => parts.extend([&b"J"[..], nick.as_bytes()]),
            RoomEvent::Left(nick) => parts.extend([&b"L"[..], nick.as_bytes()]),
            RoomEvent::Renamed(old, new) => parts.extend([&b"N"[..], old.as_bytes(), new.as_bytes()]),
        }
    }
    let mut payload = Vec::new();
    redis::encode_command(&mut payload, &parts);
    payload
}

/// A message from the room's channel: the server that sent it and its
/// records, in order, up to the first one not understood (the rest is
/// dropped). Text and nicks come out made safe to show
/// ([`crate::text::sanitize_lossy`]), whatever the bytes were. `None` if it
/// is not a message of the room's format.
pub fn decode_message(payload: &[u8]) -> Option<(String, Vec<Remote>)> {
    let parts = redis::decode_strings(payload)?;
    let mut parts = parts.into_iter();
    if parts.next() != Some(FORMAT) {
        return None;
    }
    let server = String::from_utf8_lossy(parts.next()?).into_owned();
    let text = |part: Option<&[u8]>| part.map(|p| sanitize_lossy(p).into_owned());
    let mut records = Vec::new();
    while let Some(kind) = parts.next() {
        let record = match kind {
            b"S" => text(parts.next()).map(Remote::Said),
            b"J" => text(parts.next()).map(Remote::Joined),
            b"L" => text(parts.next()).map(Remote::Left),
            b"N" => text(parts.next())
                .zip(text(parts.next()))
                .map(|(old, new)| Remote::Renamed(old, new)),
            b"P" => text(parts.next())
                .and_then(|count| count.parse::<usize>().ok())
                .map(|count| {
                    Remote::Presence(
                        parts
                            .by_ref()
                            .take(count)
                            .map(|n| text(Some(n)).unwrap_or_default())
                            .collect(),
                    )
                }),
            b"Q" => Some(Remote::Gone),
            _ => None,
        };
        let Some(record) = record else {
            debug!("chat: a record of server {server} not understood; the rest of its message ignored");
            break;
        };
        records.push(record);
    }
    Some((server, records))
}

/// The link's events, for the room.
struct Events(Rc<Federation>);

impl RedisEvents for Events {
    fn on_up(&mut self, _cx: &mut Context<'_>, redis: &Redis) {
        let fed = &self.0;
        info!("chat: in room {} over Redis at {}", fed.name, redis.addr());
        fed.heard.borrow_mut().clear();
        fed.room.borrow_mut().set_linked(true);
        fed.sync_due.set(true);
    }

    fn on_down(&mut self, _cx: &mut Context<'_>, redis: &Redis, why: &str) {
        let fed = &self.0;
        warn!(
            "chat: Redis at {} is out of reach ({why}): room {} goes on with this server's members alone; reconnecting",
            redis.addr(),
            fed.name
        );
        fed.room.borrow_mut().set_linked(false);
        fed.heard.borrow_mut().clear();
    }

    fn on_message(&mut self, cx: &mut Context<'_>, _redis: &Redis, _channel: &[u8], payload: &[u8]) {
        self.0.message(cx, payload);
    }

    fn on_shutdown(&mut self, _cx: &mut Context<'_>, redis: &Redis) {
        let fed = &self.0;
        let mut nicks = fed.room.borrow_mut().take_releases();
        nicks.extend(fed.room.borrow().held_nicks());
        fed.release(redis, &nicks);
        let mut payload = Vec::new();
        redis::encode_command(&mut payload, &[FORMAT, fed.server.as_bytes(), b"Q"]);
        redis.publish(&fed.channel, &payload);
        redis.command(&[&b"DEL"[..], &fed.server_key(&fed.server)], |_, _| {});
        redis.command(
            &[&b"SREM"[..], &fed.servers_key(), fed.server.as_bytes()],
            |_, _| {},
        );
        fed.room.borrow_mut().set_linked(false);
    }
}

/// A presence list from a server's key: one nick per line.
fn split_nicks(list: &[u8]) -> Vec<String> {
    list.split(|&b| b == b'\n')
        .filter(|n| !n.is_empty())
        .map(|n| sanitize_lossy(n).into_owned())
        .collect()
}

/// A random id for this server in the room.
fn server_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut x = (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    // splitmix64's finaliser: nearby seeds give unrelated ids.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("{x:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_decode_to_what_was_encoded_and_text_is_made_safe() {
        let events = [
            RoomEvent::Joined("127.0.0.1:5 #2".into()),
            RoomEvent::Said(Rc::from(&b"a: hi there\n"[..])),
            RoomEvent::Renamed("a".into(), "b".into()),
            RoomEvent::Left("b".into()),
        ];
        let payload = encode_message("s1", &events);
        let (server, records) = decode_message(&payload).expect("a room message");
        assert_eq!(server, "s1");
        assert_eq!(
            records,
            [
                Remote::Joined("127.0.0.1:5 #2".into()),
                Remote::Said("a: hi there".into()),
                Remote::Renamed("a".into(), "b".into()),
                Remote::Left("b".into()),
            ]
        );
        // A line with a newline and an escape in it, however it got there,
        // comes out one safe line.
        let mut payload = Vec::new();
        redis::encode_command(
            &mut payload,
            &[FORMAT, b"s2", b"S", b"x: a\n* b left\x1b[2J", b"Z", b"S", b"lost"],
        );
        let (_, records) = decode_message(&payload).expect("a room message");
        assert_eq!(
            records,
            [Remote::Said("x: a\u{fffd}* b left\u{fffd}[2J".into())],
            "up to the unknown record"
        );
        assert_eq!(decode_message(b"*1\r\n$3\r\nabc\r\n"), None, "another format");
        assert_eq!(decode_message(b"garbage"), None);
    }

    #[test]
    fn presence_takes_its_count_of_nicks() {
        let mut payload = Vec::new();
        redis::encode_command(&mut payload, &[FORMAT, b"s", b"P", b"2", b"x", b"y", b"Q"]);
        let (_, records) = decode_message(&payload).expect("a room message");
        assert_eq!(
            records,
            [Remote::Presence(vec!["x".into(), "y".into()]), Remote::Gone]
        );
        let mut payload = Vec::new();
        redis::encode_command(&mut payload, &[FORMAT, b"s", b"P", b"99999999999", b"x"]);
        let (_, records) = decode_message(&payload).expect("a room message");
        assert_eq!(
            records,
            [Remote::Presence(vec!["x".into()])],
            "a count past the end takes what there is"
        );
    }

    #[test]
    fn room_names_are_checked() {
        assert!(is_valid_room("evloop") && is_valid_room("a.b-c_d:9") && is_valid_room(&"r".repeat(64)));
        assert!(
            !is_valid_room("")
                && !is_valid_room(&"r".repeat(65))
                && !is_valid_room("a b")
                && !is_valid_room("a*")
        );
    }
}
