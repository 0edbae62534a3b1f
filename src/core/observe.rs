//! What the core tells of itself ([`crate::metrics`]): the turn's
//! counters, the watchdog's timing of each callback, the flight recorder,
//! and the snapshot and connection list read from them.

use std::time::{Duration, Instant};

use crate::metrics::{warn_slow, Culprit, Snapshot, TraceEvent, What};
use crate::source::Source;
use crate::{Addr, ConnState, Key};

use super::Core;

/// One stream connection as the admin page shows it.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// Its key.
    pub key: Key,
    /// Who is at the other end.
    pub peer: Addr,
    /// The listener that accepted it; `None` for an outbound connection.
    pub listener: Option<Key>,
    /// Its state.
    pub state: ConnState,
    /// How long it has been open, to the second.
    pub age: Duration,
    /// Output queued and not yet written (memory and file regions).
    pub queued: u64,
    /// The newest event the flight recorder holds for it, if any.
    pub last: Option<TraceEvent>,
}

/// Seconds since `started`, as a connection stores its birth.
pub(crate) fn seconds_since(started: Instant, now: Instant) -> u32 {
    u32::try_from(now.saturating_duration_since(started).as_secs()).unwrap_or(u32::MAX)
}

impl Core {
    /// Step 2's bookkeeping: a turn began at `now`; the previous ended at
    /// `ended` (the wait in between was the poll's).
    #[inline]
    pub(crate) fn begin_turn(&mut self, now: Instant, ended: Instant) {
        let services = &mut self.services;
        let counters = &mut services.counters;
        counters.turns += 1;
        counters.poll_ns += nanos(now.saturating_duration_since(ended));
        let at = now.saturating_duration_since(counters.started);
        services.recorder.begin_turn(services.turn, at);
    }

    /// The turn that began at `services.now` ended at `ended`.
    #[inline]
    pub(crate) fn end_turn(&mut self, ended: Instant) {
        let took = ended.saturating_duration_since(self.services.now);
        let counters = &mut self.services.counters;
        counters.busy_ns += nanos(took);
        counters.turn_durations.record(took);
    }

    /// Before a callback: the coarse clock, if the watchdog is on.
    #[inline]
    pub(crate) fn callback_start(&self) -> Option<u64> {
        self.services
            .watchdog
            .threshold
            .map(|_| crate::sys::coarse_clock_ns())
    }

    /// After a callback that began at `started` ([`Core::callback_start`]):
    /// counts its time, and calls it slow if it ran past the threshold.
    /// `key` is its source, `None` for the reactor's own timers, commands
    /// and hooks.
    #[inline]
    pub(crate) fn callback_done(&mut self, started: Option<u64>, key: Option<Key>, callback: &'static str) {
        let (Some(started), Some(threshold)) = (started, self.services.watchdog.threshold) else {
            return;
        };
        let now = crate::sys::coarse_clock_ns();
        let took = now.saturating_sub(started);
        self.services.counters.callback_ns += took;
        if took > nanos(threshold) {
            self.slow_callback(key, callback, Duration::from_nanos(took), threshold, now);
        }
    }

    #[cold]
    #[inline(never)]
    fn slow_callback(
        &mut self,
        key: Option<Key>,
        callback: &'static str,
        took: Duration,
        threshold: Duration,
        now: u64,
    ) {
        self.services.counters.slow_callbacks += 1;
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        if let Some(key) = key {
            self.services
                .recorder
                .record(key, What::Slow { callback, micros });
        }
        if self.services.watchdog.slow(key, callback, took, now) {
            warn_slow(&self.culprit(key), callback, took, threshold);
        }
    }

    /// A handler of `key` panicked in `callback`: counted, recorded, and
    /// the flight recorder written to the log (at most once a minute).
    #[cold]
    #[inline(never)]
    pub(crate) fn note_panic(&mut self, key: Option<Key>, callback: &'static str) {
        self.services.counters.panics += 1;
        if let Some(key) = key {
            self.services.recorder.record(key, What::Panicked { callback });
        }
        let now = Instant::now();
        let due = self.services.last_dump.map_or(true, |at| {
            now.saturating_duration_since(at) >= Duration::from_secs(60)
        });
        if due {
            self.services.last_dump = Some(now);
            let who = key.map_or("a reactor timer".to_owned(), |k| k.to_string());
            self.services.recorder.dump(&format!(
                "after a panic of {who} in {callback} (next dump no sooner than a minute)"
            ));
        }
    }

    /// What kind of source `key` is and who is at its other end.
    fn culprit(&self, key: Option<Key>) -> Culprit {
        let source = key.and_then(|k| self.sources.get(k));
        let local = || {
            source
                .and_then(Source::local_addr)
                .map(|a| a.to_string())
                .unwrap_or_default()
        };
        let (kind, peer) = match source {
            None if key.is_none() => ("reactor", String::new()),
            None => ("source (gone)", String::new()),
            Some(Source::Stream(conn)) => ("connection", conn.peer.to_string()),
            Some(Source::Listener(_)) => ("listener", local()),
            Some(Source::Datagram(_)) => ("datagram socket", local()),
            Some(Source::Custom(_)) => ("custom source", String::new()),
        };
        Culprit { key, kind, peer }
    }

    /// A copy of the counters and gauges.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let services = &self.services;
        let c = &services.counters;
        let mut open = 0;
        for (_, source) in self.sources.iter() {
            if let Source::Stream(_) = source {
                open += 1;
            }
        }
        Snapshot {
            shard: crate::shard::Shards::current().map_or(0, |s| s.id()),
            uptime: Instant::now().saturating_duration_since(c.started),
            turns: c.turns,
            events: c.events,
            poll_time: Duration::from_nanos(c.poll_ns),
            busy_time: Duration::from_nanos(c.busy_ns),
            callback_time: Duration::from_nanos(c.callback_ns),
            connections_open: open,
            accepted: c.accepted,
            connected: c.connected,
            closed: c.closed,
            bytes_read: c.bytes_read,
            bytes_written: c.bytes_written,
            datagrams_received: c.datagrams_received,
            datagrams_sent: c.datagrams_sent,
            deferred_writes: c.deferred_writes,
            slow_callbacks: c.slow_callbacks,
            panics: c.panics,
            sources: self.sources.len(),
            ready: services.ready.len(),
            timers: services.timers.len(),
            pending_flushes: services.pending_flush.len(),
            turn_durations: c.turn_durations,
            slow_callback: services.watchdog.threshold,
            trace_capacity: services.recorder.capacity(),
        }
    }

    /// The flight recorder's events, oldest first.
    pub(crate) fn trace_events(&self) -> impl Iterator<Item = &TraceEvent> + '_ {
        self.services.recorder.events()
    }

    /// Calls `f` with each stream connection, in key order.
    pub(crate) fn for_each_connection(&self, mut f: impl FnMut(ConnectionInfo)) {
        // The newest event of each key, from one pass over the ring.
        let mut last = std::collections::HashMap::new();
        for event in self.services.recorder.events() {
            last.insert(event.key, *event);
        }
        let now = Instant::now();
        let age_now = seconds_since(self.services.counters.started, now);
        for (key, source) in self.sources.iter() {
            let Source::Stream(conn) = source else { continue };
            f(ConnectionInfo {
                key,
                peer: conn.peer.clone(),
                listener: conn.listener.map(|(l, _)| l),
                state: conn.state.public(),
                age: Duration::from_secs(u64::from(age_now.saturating_sub(conn.born))),
                queued: conn.queue.level(),
                last: last.get(&key).copied(),
            });
        }
    }
}

/// A duration in nanoseconds, saturating.
#[inline]
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
