//! Balancing a sharded listener's connections by count: a connection one
//! shard accepts goes to the shard holding the fewest connections of that
//! listener, when that one holds fewer by more than the slack.
//!
//! Always true:
//! - each shard's listener publishes how many connections it holds (its
//!   `members`) in its slot of the group, plus the hand-offs sent to it and
//!   not yet run there (a [`Reservation`] per hand-off, given back when
//!   the message runs or is dropped), so a burst of accepts on one shard
//!   does not send them all to the same shard before it has run any;
//! - the counts are read without a lock: a decision may be made on counts
//!   a few connections stale (those admitted or closed meanwhile on other
//!   shards); the next accepts correct it;
//! - the receiving shard takes a handed-off connection as its own listener
//!   would ([`Reactor::adopt_stream`](crate::Reactor::adopt_stream)): it
//!   never hands it on, so a connection moves at most once;
//! - a shard whose listener is not open (not yet bound, closed) is never
//!   chosen; a hand-off the target's queue refuses is served where it was
//!   accepted.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::Key;

/// A balancing group: one listener address served by several shards, each
/// with its own listener, whose new connections are moved to the shard
/// holding the fewest (see [`ListenerOptions::balance`]).
///
/// Made once, before the shards bind, with the number of shards; each
/// shard's listener of that address gets a clone in its
/// [`ListenerOptions`](crate::ListenerOptions). A listener joins the group
/// when it is bound on a shard (inside [`shard::run`](crate::shard::run));
/// anywhere else the option does nothing.
///
/// The cost: each connection handed off is one message to the target shard
/// (batched with the others of the turn) and one more registration there,
/// after the accept and before its handler's `on_open`, so it is served one
/// turn of the target later. It evens the *number* of connections per
/// shard, not their load: a few busy connections on one shard stay there.
///
/// [`ListenerOptions::balance`]: crate::ListenerOptions::balance
#[derive(Clone)]
pub struct Balance {
    group: Arc<Group>,
}

struct Group {
    slots: Box<[Slot]>,
    slack: usize,
}

#[derive(Default)]
struct Slot {
    /// Connections held, plus hand-offs on their way here.
    count: AtomicUsize,
    /// Whether this shard's listener is open.
    open: AtomicBool,
    /// This shard's listener, to name it in a hand-off message.
    key: Mutex<Option<Key>>,
}

impl Balance {
    /// A group for a listener served by `shards` shards, with a slack of 1:
    /// a shard keeps a new connection unless that would leave it holding
    /// more than one connection over the least loaded shard.
    pub fn new(shards: usize) -> Balance {
        Balance {
            group: Arc::new(Group {
                slots: (0..shards).map(|_| Slot::default()).collect(),
                slack: 1,
            }),
        }
    }

    /// The same group with another slack (at least 1): how many more
    /// connections a shard may hold than the least loaded one before it
    /// hands new ones off. Call it before cloning the group into the
    /// shards' options.
    #[must_use]
    pub fn with_slack(self, slack: usize) -> Balance {
        Balance {
            group: Arc::new(Group {
                slots: (0..self.group.slots.len()).map(|_| Slot::default()).collect(),
                slack: slack.max(1),
            }),
        }
    }

    /// Each shard's published count: the connections its listener holds
    /// plus the hand-offs on their way to it (a shard whose listener is not
    /// open counts as it last was).
    pub fn counts(&self) -> Vec<usize> {
        let slots = self.group.slots.iter();
        slots.map(|s| s.count.load(Ordering::Acquire)).collect()
    }

    /// Shard `shard`'s listener `key` is open.
    pub(crate) fn join(&self, shard: usize, key: Key) -> bool {
        let Some(slot) = self.group.slots.get(shard) else {
            log::warn!(
                "balancing group of {} shards: shard {shard} is not one; its connections stay where they are accepted",
                self.group.slots.len()
            );
            return false;
        };
        *slot.key.lock().unwrap_or_else(PoisonError::into_inner) = Some(key);
        slot.open.store(true, Ordering::Release);
        true
    }

    /// Shard `shard`'s listener is closed: it is chosen no more.
    pub(crate) fn leave(&self, shard: usize) {
        if let Some(slot) = self.group.slots.get(shard) {
            slot.open.store(false, Ordering::Release);
            *slot.key.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// Shard `shard` admitted (`+1`) or lost (`-1`) a connection.
    pub(crate) fn add(&self, shard: usize, admitted: bool) {
        if let Some(slot) = self.group.slots.get(shard) {
            if admitted {
                slot.count.fetch_add(1, Ordering::AcqRel);
            } else {
                slot.count.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Where shard `shard` should send the connection it just accepted:
    /// the least loaded open shard and its listener, with the target's
    /// count already raised by one ([`Reservation`]), or `None` to keep it.
    pub(crate) fn target(&self, shard: usize) -> Option<(usize, Key, Reservation)> {
        let slots = &self.group.slots;
        let own = slots.get(shard)?.count.load(Ordering::Acquire);
        let (least, count) = slots
            .iter()
            .enumerate()
            .filter(|&(i, s)| i != shard && s.open.load(Ordering::Acquire))
            .map(|(i, s)| (i, s.count.load(Ordering::Acquire)))
            .min_by_key(|&(_, count)| count)?;
        // Keeping it would leave this shard `own + 1`: more than the slack
        // over the least loaded one?
        if own < count + self.group.slack {
            return None;
        }
        let key = (*slots[least].key.lock().unwrap_or_else(PoisonError::into_inner))?;
        slots[least].count.fetch_add(1, Ordering::AcqRel);
        let reservation = Reservation {
            balance: self.clone(),
            shard: least,
        };
        Some((least, key, reservation))
    }
}

impl fmt::Debug for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("counts", &self.counts())
            .field("slack", &self.group.slack)
            .finish()
    }
}

/// A hand-off counted in its target's slot until it has run there (the
/// target then counts the connection itself, if it admitted it) or was
/// dropped with its message.
pub(crate) struct Reservation {
    balance: Balance,
    shard: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.balance.add(self.shard, false);
    }
}
