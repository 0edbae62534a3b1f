//! What one chat room spread over several shards must hold as one: the
//! nick registry, the member count and the join order. [`SharedRoom`] keeps
//! them behind one short [`Mutex`]; each shard's [`Room`](super::Room)
//! keeps its own members and reaches the registry only to join, confirm,
//! rename, leave and answer `/who`.
//!
//! Always true:
//! - every critical section is a few hash or tree operations (or, for
//!   `/who`, one copy of the nick list): no IO, no fan-out, no allocation
//!   per member of the room but `/who`'s copy, and no other lock taken
//!   while it is held;
//! - a nick is held by one member of the whole room at a time, without
//!   regard to ASCII case; the check and the claim are one critical
//!   section, so of two shards claiming one nick at once exactly one wins;
//! - members of the whole room hold at most `max_clients` slots, and
//!   datagram members at most half, greeted ones included: the check and
//!   the count are one critical section too.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::room::{nick_key, unique_nick, RoomFull};

/// The part of one chat room that all its shards share: the nicks, the
/// count of members against `max_clients`, and the order `/who` lists.
/// `Send + Sync`; clones share it. Made once, before the shards start, and
/// given to [`Chat::sharded`](super::Chat::sharded) on each shard.
///
/// Why a lock and not a shard that owns it: a join, a `/nick` and a `/who`
/// are answered in the same callback, as with one reactor, so no member
/// waits for another shard's turn and no handler keeps half-done requests;
/// the lock is held for a few map operations, so shards rarely meet on it.
#[derive(Clone)]
pub struct SharedRoom {
    id: u64,
    registry: Arc<Mutex<Registry>>,
    /// The last join number given: the room's clock. A line broadcast is
    /// stamped with it, and relayed on another shard only to the members
    /// that joined by then, so that nobody is told of a join (or given a
    /// line) from before its own join.
    clock: Arc<AtomicU64>,
}

/// The registry itself.
#[derive(Debug, Default)]
struct Registry {
    /// Every member's nick, ASCII-lowercased, greeted ones included.
    nicks: HashSet<String>,
    /// Every present member's nick by its join number: `/who`'s order.
    present: BTreeMap<u64, String>,
    /// Slots held, greeted members included.
    members: usize,
    /// Slots held by datagram members.
    datagram_members: usize,
    next_seq: u64,
}

/// Numbers rooms, so that a shard's message finds its part of the room.
static NEXT_ROOM: AtomicU64 = AtomicU64::new(1);

impl SharedRoom {
    /// An empty registry for one room.
    pub fn new() -> SharedRoom {
        SharedRoom {
            id: NEXT_ROOM.fetch_add(1, Ordering::Relaxed),
            registry: Arc::new(Mutex::new(Registry::default())),
            clock: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The room's number, unique in the process.
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// The last join number given.
    pub(super) fn clock(&self) -> u64 {
        self.clock.load(Ordering::Acquire)
    }

    /// Members of the whole room, greeted datagram peers included.
    pub fn member_count(&self) -> usize {
        self.lock().members
    }

    /// Every present member's nick, over all shards, in the order they
    /// joined (as `/who` lists them).
    pub fn nicks(&self) -> Vec<String> {
        self.lock().present.values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a stream member's join would be refused.
    pub(super) fn is_full(&self, max_clients: usize) -> bool {
        self.lock().members >= max_clients
    }

    /// Claims a slot and a unique nick (made unique as
    /// [`Room::join`](super::Room::join) says); returns the nick and its
    /// join number.
    pub(super) fn add(
        &self,
        nick: String,
        datagram: bool,
        present: bool,
        max_clients: usize,
    ) -> Result<(String, u64), RoomFull> {
        let mut registry = self.lock();
        let registry = &mut *registry;
        if registry.members >= max_clients || (datagram && registry.datagram_members >= max_clients / 2) {
            return Err(RoomFull);
        }
        registry.next_seq += 1;
        self.clock.store(registry.next_seq, Ordering::Release);
        let nick = unique_nick(nick, registry.next_seq, |key| registry.nicks.contains(key));
        registry.nicks.insert(nick_key(&nick));
        registry.members += 1;
        if datagram {
            registry.datagram_members += 1;
        }
        let seq = registry.next_seq;
        if present {
            registry.present.insert(seq, nick.clone());
        }
        Ok((nick, seq))
    }

    /// A greeted member joins: its new join number.
    pub(super) fn confirm(&self, nick: &str) -> u64 {
        let mut registry = self.lock();
        registry.next_seq += 1;
        let seq = registry.next_seq;
        self.clock.store(seq, Ordering::Release);
        registry.present.insert(seq, nick.to_owned());
        seq
    }

    /// Renames the member `old` (present, with join number `seq`) to `new`;
    /// `None` if `new` is held by another member, in any case; else the
    /// clock when it was renamed.
    pub(super) fn rename(&self, old: &str, new: &str, seq: Option<u64>) -> Option<u64> {
        let (old_key, new_key) = (nick_key(old), nick_key(new));
        let mut registry = self.lock();
        if old_key != new_key {
            if registry.nicks.contains(&new_key) {
                return None;
            }
            registry.nicks.remove(&old_key);
            registry.nicks.insert(new_key);
        }
        if let Some(entry) = seq.and_then(|seq| registry.present.get_mut(&seq)) {
            new.clone_into(entry);
        }
        Some(registry.next_seq)
    }

    /// Frees the members' slots and nicks: each is its nick, whether it is
    /// a datagram member, and its join number if it is present. Returns
    /// the clock when they left.
    pub(super) fn remove<'a>(&self, members: impl IntoIterator<Item = (&'a str, bool, Option<u64>)>) -> u64 {
        let mut registry = self.lock();
        for (nick, datagram, seq) in members {
            registry.nicks.remove(&nick_key(nick));
            registry.members -= 1;
            if datagram {
                registry.datagram_members -= 1;
            }
            if let Some(seq) = seq {
                registry.present.remove(&seq);
            }
        }
        registry.next_seq
    }
}

impl Default for SharedRoom {
    fn default() -> Self {
        SharedRoom::new()
    }
}

impl fmt::Debug for SharedRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRoom")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
