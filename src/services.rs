//! [`Services`]: what the loop offers every source, beside the sources
//! themselves: the turn's clock, the timers, and the queues of work for
//! later in the turn (deferred work, the ready list, deferred writes), and
//! the per-wakeup read budget. Kept apart from the registry of sources so
//! that code holding one connection can still reach them.

use std::collections::VecDeque;
use std::time::Instant;

use crate::metrics::{Counters, Recorder, Watchdog, DEFAULT_TRACE_CAPACITY};
use crate::timer::Timers;
use crate::{CloseReason, Key};

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TimerTask {
    /// A handler's timer: call its `on_timer`.
    User(Key),
    /// A closing connection made no progress in time: cut it.
    Drain(Key),
    /// A lingering close waited long enough: close the socket.
    Linger(Key),
    /// A listener may try accepting again.
    AcceptBackoff(Key),
    /// A TLS connection's handshake must be done by now.
    Handshake(Key),
    /// An outbound connection must be connected by now.
    Connect(Key),
    /// A timer of the reactor itself ([`crate::Reactor::set_timer`]): its
    /// closure is kept by the reactor under the timer's id, and run there.
    Reactor,
}

/// Work that runs once the current callback has returned.
pub(crate) enum Deferred {
    Notify(Key, Notice),
    Remove(Key, CloseReason),
}

/// A watermark notice for a stream handler: of its own connection, or of
/// another one it watches (named).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Notice {
    HighWater,
    Drain,
    OtherHighWater(Key),
    OtherDrain(Key),
}

/// The loop's services: everything but the sources, the poll and the
/// loop's own bookkeeping.
pub(crate) struct Services {
    pub(crate) timers: Timers<TimerTask>,
    pub(crate) deferred: VecDeque<Deferred>,
    pub(crate) ready: VecDeque<Key>,
    /// Connections given output by other sources' handlers, to flush at
    /// the end of the turn (step 9), oldest first.
    pub(crate) pending_flush: VecDeque<Key>,
    pub(crate) now: Instant,
    /// Turns of the loop so far, from 1: a connection's file budget
    /// ([`crate::write_queue::FILE_BUDGET`]) is per turn.
    pub(crate) turn: u64,
    /// Reads per connection per wakeup.
    pub(crate) read_budget: usize,
    /// What the loop has done so far ([`crate::metrics`]).
    pub(crate) counters: Counters,
    /// The flight recorder: the loop's last events.
    pub(crate) recorder: Recorder,
    /// The slow-callback watchdog.
    pub(crate) watchdog: Watchdog,
    /// When the flight recorder was last written to the log for a panic.
    pub(crate) last_dump: Option<Instant>,
}

impl Services {
    /// `n` bytes of `key`'s output were written.
    #[inline]
    pub(crate) fn wrote(&mut self, key: Key, n: u64) {
        if n > 0 {
            self.counters.bytes_written += n;
            self.recorder.record(key, crate::metrics::What::Wrote(n));
        }
    }

    pub(crate) fn new(read_budget: usize) -> Services {
        Services {
            timers: Timers::new(),
            deferred: VecDeque::new(),
            ready: VecDeque::new(),
            pending_flush: VecDeque::new(),
            now: Instant::now(),
            turn: 1,
            read_budget,
            counters: Counters::new(Instant::now()),
            recorder: Recorder::new(DEFAULT_TRACE_CAPACITY),
            watchdog: Watchdog::new(),
            last_dump: None,
        }
    }
}
