//! [`Connection`]: one stream connection, and its IO steps: writing what is
//! queued, queuing output, the cap and the watermarks, the ready list, its
//! deadlines. Each step takes the connection and the loop's [`Services`],
//! calls no handler, and returns what the core must do next (the core, in
//! `core/stream.rs`, is what calls handlers). Its state machine is data, in
//! [`crate::conn_state`]; the socket and its system calls are
//! [`crate::sys::Stream`].
//!
//! Always true:
//! - every change of state is a move of [`crate::conn_state::next`], made by
//!   `Core::apply`, the one place that performs the moves' actions; it
//!   logs each change at debug level with the key and the peer;
//! - the socket is registered once, for READABLE and WRITABLE, edge-triggered,
//!   and never re-registered: an edge fires only when readiness changes, so
//!   WRITABLE costs nothing while the queue is empty, and toggling it would
//!   cost an `epoll_ctl` per transition;
//! - reads go on until `WouldBlock`, a short read (the socket had less than
//!   the scratch buffer: it is empty now, and new data brings a new edge), or
//!   the per-wakeup read budget; a connection stopped by the budget is put on
//!   the ready list and read again next turn without waiting for an event;
//! - a read of 0 bytes is the peer's FIN: the read half is closed, the write
//!   half stays open until the handler closes it;
//! - a socket error (a reset) closes the connection even when nothing
//!   reads or writes it (read half closed or paused, queue empty): an
//!   error event checks the socket's pending error last;
//! - input the handler did not consume is kept in `pending`, which is freed
//!   as soon as it is empty: an idle connection holds no read buffer;
//! - every handler call is guarded: a handler that panics is dropped and its
//!   connection reset, without `on_close` (see `handler.rs`).

use std::io;
use std::rc::Rc;
use std::time::Duration;

use log::{debug, trace};

use crate::conn_state::{Action, State};
use crate::services::{Deferred, Notice, Services, TimerTask};
use crate::sys::Stream;
use crate::write_queue::{Chunk, Flush, WriteQueue};
use crate::{Addr, CloseReason, Key, StreamHandler, TimerId};

/// Limits and thresholds of one connection. Set per listener through
/// [`crate::ListenerOptions`], or for outbound connections through
/// [`crate::Reactor::set_connection_defaults`].
///
/// A handler that waits for a newline holds back what comes before it; with
/// `max_pending_input` at 64 bytes, a client that sends 100 without one is
/// cut off:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::cell::Cell;
/// use std::io::Write;
/// use std::net::{Shutdown, TcpStream};
/// use std::rc::Rc;
/// use evloop::{Addr, CloseReason, ConnectionOptions, Context, ListenerOptions, Reactor, StreamHandler};
///
/// struct WholeLines(Rc<Cell<bool>>);
///
/// impl StreamHandler for WholeLines {
///     fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
///         data.iter().rposition(|&b| b == b'\n').map_or(0, |end| end + 1)
///     }
///
///     fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
///         self.0.set(matches!(reason, CloseReason::InputOverflow));
///         cx.stop();
///     }
/// }
///
/// let options = ListenerOptions {
///     connection: ConnectionOptions { max_pending_input: 64, ..ConnectionOptions::default() },
///     ..ListenerOptions::default()
/// };
/// let overflowed = Rc::new(Cell::new(false));
/// let flag = Rc::clone(&overflowed);
/// let mut reactor = Reactor::new()?;
/// let factory = move |_: &Addr| WholeLines(Rc::clone(&flag));
/// let key = reactor.listen_tcp_with("127.0.0.1:0".parse()?, options, factory)?;
/// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
///
/// let mut client = TcpStream::connect(addr)?;
/// client.write_all(&[b'x'; 100])?;
/// client.shutdown(Shutdown::Write)?; // without the limit, this FIN would close it
/// reactor.run()?; // until `on_close` stops it
/// assert!(overflowed.get());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ConnectionOptions {
    /// Queued output above which the handler gets `on_high_water`.
    pub high_water: usize,
    /// Queued output at or below which, after the high watermark was
    /// passed, the handler gets `on_drain`.
    pub low_water: usize,
    /// Hard cap on output held in memory (file regions do not count: they
    /// cost no memory). Passing it triggers [`ConnectionOptions::overflow`].
    pub max_queued: usize,
    /// What passing `max_queued` does.
    pub overflow: OverflowPolicy,
    /// Cap on input received but not consumed by the handler; past it the
    /// connection is closed with [`CloseReason::InputOverflow`](crate::CloseReason::InputOverflow).
    pub max_pending_input: usize,
    /// A connection closing after flushing is cut (reset) when the peer has
    /// taken no bytes for this long.
    pub drain_timeout: Duration,
    /// After a close, once our FIN is sent, how long to keep reading and
    /// discarding what the peer still sends before closing the socket. A
    /// socket closed with unread input sends a reset, which can destroy the
    /// last bytes we sent before the peer reads them.
    pub linger: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            high_water: 256 * 1024,
            low_water: 64 * 1024,
            max_queued: 16 * 1024 * 1024,
            overflow: OverflowPolicy::Close,
            max_pending_input: 1024 * 1024,
            drain_timeout: Duration::from_secs(30),
            linger: Duration::from_secs(2),
        }
    }
}

/// What happens when a send would pass [`ConnectionOptions::max_queued`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Abort the connection ([`CloseReason::Overflow`](crate::CloseReason::Overflow)): a consumer that
    /// does not read loses its connection, not everyone else their memory.
    /// Checked once the socket took what it would: after a send written at
    /// once, and for sends queued for the end of the turn, after that
    /// turn's flush.
    Close,
    /// Drop the newest sends until the queue fits, and keep the
    /// connection; whole messages are lost, never parts of one, and never
    /// the oldest, which the socket may have started to take. Checked at
    /// the same point as [`OverflowPolicy::Close`]: after the socket took
    /// what it would, so only what it did not take counts. A send written
    /// at once ([`crate::Context::send`]) that is dropped returns `false`;
    /// a send queued for the end of the turn
    /// ([`crate::SourceRef::send_shared`] to another connection, a
    /// broadcast) returned `true` and is dropped, if it must be, after that
    /// turn's flush.
    Drop,
}

/// One stream connection: the socket, its handler, its queues and its state.
pub(crate) struct Connection {
    pub(crate) stream: Stream,
    /// Taken out while one of its callbacks runs.
    pub(crate) handler: Option<Box<dyn StreamHandler>>,
    /// Where the connection stands, with the timer of the deadline it
    /// waits for, if any.
    pub(crate) state: State,
    pub(crate) queue: WriteQueue,
    /// Input the handler has not consumed yet.
    pub(crate) pending: Vec<u8>,
    pub(crate) peer: Addr,
    /// The listener that accepted it, and its place in that listener's list.
    pub(crate) listener: Option<(Key, u32)>,
    pub(crate) options: Rc<ConnectionOptions>,
    /// User timers, cancelled when the connection goes.
    pub(crate) timers: Vec<TimerId>,
    pub(crate) read_paused: bool,
    pub(crate) above_high_water: bool,
    /// The deadline of an outbound connect ([`crate::ConnectOptions::timeout`]),
    /// also in `timers`; cancelled once connected.
    pub(crate) connect_timer: Option<TimerId>,
    /// Handlers of other connections told of this one's watermarks
    /// ([`crate::SourceRef::watch_output`]).
    pub(crate) watchers: Vec<Key>,
    /// On the core's list of connections to flush at the end of the turn.
    pub(crate) flush_pending: bool,
    /// Why the connection is on the ready list ([`Revisit`] bits); zero
    /// when it is not on it, so it is never listed twice.
    pub(crate) revisit: u8,
    /// Accepted with TLS, handshake not done: the handler has not been
    /// opened, and is not told of the connection unless it completes.
    pub(crate) opening: bool,
    /// When it was registered, in whole seconds from the reactor's start
    /// (for its age on the admin page).
    pub(crate) born: u32,
}

/// Why a connection is on the core's ready list.
pub(crate) struct Revisit;

impl Revisit {
    /// Input may be waiting: a read budget was spent, reading resumed, or
    /// a FIN may have arrived while lingering.
    pub(crate) const READ: u8 = 1;
    /// Output is waiting: the file budget was spent with the socket still
    /// taking bytes. No event will come for it, and nothing needs reading.
    pub(crate) const WRITE: u8 = 2;
}

impl Connection {
    pub(crate) fn new(
        stream: Stream,
        handler: Box<dyn StreamHandler>,
        peer: Addr,
        state: State,
        options: Rc<ConnectionOptions>,
    ) -> Self {
        Connection {
            stream,
            handler: Some(handler),
            state,
            queue: WriteQueue::default(),
            pending: Vec::new(),
            peer,
            listener: None,
            options,
            timers: Vec::new(),
            read_paused: false,
            above_high_water: false,
            connect_timer: None,
            watchers: Vec::new(),
            flush_pending: false,
            revisit: 0,
            opening: false,
            born: 0,
        }
    }

    /// Takes the state a move of the machine gave; logs a change of the
    /// state a handler sees.
    pub(crate) fn set_state(&mut self, key: Key, state: State) {
        if self.state.public() != state.public() {
            debug!(
                "{key} {}: state={}=>{}",
                self.peer,
                self.state.public(),
                state.public()
            );
        }
        self.state = state;
    }
}

/// What the queue holds after output changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Output waits, within the cap.
    Queued,
    /// Memory held is over `max_queued` with [`OverflowPolicy::Close`]: the
    /// connection must be cut.
    OverCap,
    /// Nothing is queued: a pending half-close or close may go on.
    Emptied,
    /// Output waits, within the cap, after the newest sends were dropped
    /// to bring it there ([`OverflowPolicy::Drop`]).
    Dropped,
}

/// What became of a send.
#[derive(Debug)]
pub(crate) enum Sent {
    /// Written or queued: the cap and the watermarks are due now.
    Taken,
    /// Queued for the end of the turn (deferred writes): they are due after
    /// that flush.
    Deferred,
    /// Not taken: the connection takes no output, or the send is over the
    /// cap with [`OverflowPolicy::Drop`].
    Refused,
    /// The write failed: the connection must be cut.
    Failed(io::Error),
}

impl Connection {
    /// Puts the connection on the ready list, once, for `why` (a
    /// [`Revisit`] bit): it is served next turn, after the other sources.
    pub(crate) fn revisit_later(&mut self, key: Key, services: &mut Services, why: u8) {
        if self.revisit == 0 {
            services.ready.push_back(key);
        }
        self.revisit |= why;
    }

    /// Writes what is queued. A flush that spent the turn's file budget
    /// with the socket still taking bytes comes back next turn (no event
    /// would come); progress pushes a drain deadline back (O(1)).
    pub(crate) fn flush(&mut self, key: Key, services: &mut Services) -> io::Result<()> {
        let before = self.queue.level();
        // TLS records from the last write go first: the queue's bytes
        // follow them on the wire.
        self.stream.write_pending()?;
        let flushed = self.queue.flush(&mut self.stream, services.turn);
        services.wrote(key, before.saturating_sub(self.queue.level()));
        let flushed = flushed?;
        if flushed == Flush::Yielded {
            // Budget spent, socket not full: no event will come, so come
            // back next turn after the other sources.
            self.revisit_later(key, services, Revisit::WRITE);
        }
        if self.queue.level() < before {
            if let State::Draining {
                drain: Some(timer), ..
            } = self.state
            {
                services
                    .timers
                    .reset(timer, services.now + self.options.drain_timeout);
            }
        }
        Ok(())
    }

    /// Queues chunks as one unit (all or none), then writes if they are
    /// first in line, unless the connect is still in progress or `defer`
    /// asks for the end of the turn.
    pub(crate) fn queue_chunks<const N: usize>(
        &mut self,
        key: Key,
        chunks: [Chunk; N],
        defer: bool,
        services: &mut Services,
    ) -> Sent {
        if !self.state.takes_output() {
            trace!("{key}: send refused in state {}", self.state.public());
            return Sent::Refused;
        }
        if let State::Connecting { .. } = self.state {
            self.queue.push_unit(chunks);
            return Sent::Taken;
        }
        if defer {
            self.queue.push_unit(chunks);
            services.counters.deferred_writes += 1;
            if !self.flush_pending {
                self.flush_pending = true;
                services.pending_flush.push_back(key);
            }
            // The cap and the watermarks are checked after the flush at the
            // end of the turn, against what the socket did not take, as for
            // a send written at once.
            return Sent::Deferred;
        }
        let before = self.queue.level() + chunks.iter().map(Chunk::len).sum::<u64>();
        let written = self.queue.write_chunks(&mut self.stream, chunks, services.turn);
        services.wrote(key, before.saturating_sub(self.queue.level()));
        match written {
            Ok(Flush::Yielded) => {
                self.revisit_later(key, services, Revisit::WRITE);
                Sent::Taken
            }
            Ok(Flush::Empty | Flush::Blocked) => Sent::Taken,
            Err(err) => Sent::Failed(err),
        }
    }

    /// After the queue changed, once the socket took what it would: the
    /// hard cap (a cut, or the newest sends dropped), then the watermarks
    /// (their notices go to deferred work), then whether the queue is
    /// empty.
    pub(crate) fn output_changed(&mut self, key: Key, services: &mut Services) -> Level {
        let mut dropped = 0;
        if self.queue.buffered() > self.options.max_queued {
            if self.options.overflow == OverflowPolicy::Close {
                debug!(
                    "{key} {}: {} bytes queued, over the cap",
                    self.peer,
                    self.queue.buffered()
                );
                return Level::OverCap;
            }
            dropped = self.queue.drop_newest_over(self.options.max_queued);
            debug!(
                "{key} {}: output over the cap, {dropped} sends dropped",
                self.peer
            );
        }
        let level = self.queue.level();
        if !self.above_high_water && level > self.options.high_water as u64 {
            self.above_high_water = true;
            services
                .deferred
                .push_back(Deferred::Notify(key, Notice::HighWater));
            for &watcher in &self.watchers {
                let notice = Notice::OtherHighWater(key);
                services.deferred.push_back(Deferred::Notify(watcher, notice));
            }
        } else if self.above_high_water && level <= self.options.low_water as u64 {
            self.above_high_water = false;
            services.deferred.push_back(Deferred::Notify(key, Notice::Drain));
            for &watcher in &self.watchers {
                let notice = Notice::OtherDrain(key);
                services.deferred.push_back(Deferred::Notify(watcher, notice));
            }
        }
        if self.queue.is_empty() && !self.stream.has_pending_output() {
            Level::Emptied
        } else if dropped > 0 {
            Level::Dropped
        } else {
            Level::Queued
        }
    }

    /// Pauses or resumes delivery of input to the handler.
    pub(crate) fn set_read_paused(&mut self, key: Key, paused: bool, services: &mut Services) {
        if self.read_paused != paused {
            self.read_paused = paused;
            if !paused {
                // The edge that announced buffered input may be long gone.
                self.revisit_later(key, services, Revisit::READ);
            }
        }
    }

    /// Starts the deadline `arm` asks for ([`Action::ArmDrain`] or
    /// [`Action::ArmLinger`]), replacing any deadline running.
    pub(crate) fn arm_deadline(&mut self, key: Key, arm: Action, services: &mut Services) {
        let (after, task) = match arm {
            Action::ArmLinger => (self.options.linger, TimerTask::Linger(key)),
            _ => (self.options.drain_timeout, TimerTask::Drain(key)),
        };
        if let Some(old) = self.state.timer() {
            services.timers.cancel(old);
        }
        let id = services.timers.set(services.now + after, None, task);
        if !self.state.set_timer(id) {
            if let Some(id) = id {
                services.timers.cancel(id);
            }
        }
    }

    /// The connection is Closed: drops its queue and input, and schedules
    /// its removal (and `on_close`) as deferred work.
    pub(crate) fn closed(&mut self, key: Key, reason: CloseReason, services: &mut Services) {
        match &reason {
            CloseReason::Error(err) => debug!("{key} {}: {err}", self.peer),
            other => trace!("{key} {}: {other}", self.peer),
        }
        if matches!(reason, CloseReason::Closed | CloseReason::PeerClosed) {
            // An orderly end: a TLS peer is told so before the socket
            // closes (it may not have been, if no half-close came first).
            self.stream.close_notify();
        }
        services.counters.closed(&reason);
        services.recorder.record(
            key,
            crate::metrics::What::Closed(crate::metrics::CloseKind::of(&reason)),
        );
        self.queue.clear();
        self.pending = Vec::new();
        services.deferred.push_back(Deferred::Remove(key, reason));
    }
}
