//! Stream events around a connection's IO steps, and the moves of its state
//! machine ([`crate::conn_state`]) with their actions.

use std::io::{self, Read};
use std::net::Shutdown as NetShutdown;

use log::{debug, trace};

use crate::conn_state::{self, Action, End, Input, State};
use crate::connection::{Connection, Level, Revisit, Sent};
use crate::handler::guarded;
use crate::metrics::What;
use crate::registry::Registry;
use crate::source::Source;
use crate::write_queue::Chunk;
use crate::{CloseReason, Context, Key, StreamHandler, TimerId};

use super::Core;

/// Connections flushed per turn in step 9 (deferred writes). A broadcast
/// to thousands of receivers is written in slices of this many, with a
/// poll between slices, so one fan-out does not keep the loop from its
/// sockets for the whole of it. Measured on loopback chat at 1,000
/// receivers: see docs/benchmarks.md.
pub(crate) const DEFERRED_FLUSH_BUDGET: usize = 128;

/// What the log says happens to a connection whose handler panicked.
const RESET_AFTER_PANIC: &str = "resetting the connection";

/// How far a read pass may trust a short read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadHint {
    /// The event did not report the peer's FIN: a short read means the
    /// socket is empty.
    ShortReadDrains,
    /// Read until `WouldBlock` or 0 (a FIN is pending, or no event told us).
    UntilWouldBlock,
}

/// The connection named by `key`, borrowing only the registry, so the rest
/// of the core stays usable beside it.
pub(crate) fn stream_in(sources: &mut Registry<Source>, key: Key) -> Option<&mut Connection> {
    match sources.get_mut(key) {
        Some(Source::Stream(conn)) => Some(conn),
        _ => None,
    }
}

impl Core {
    pub(crate) fn stream_mut(&mut self, key: Key) -> Option<&mut Connection> {
        stream_in(&mut self.sources, key)
    }

    pub(crate) fn stream_ref(&self, key: Key) -> Option<&Connection> {
        match self.sources.get(key) {
            Some(Source::Stream(conn)) => Some(conn),
            _ => None,
        }
    }

    /// Runs `f` with the connection's handler taken out and a context for
    /// it, then puts the handler back. Does nothing if the connection is gone
    /// or its handler is already out (a callback is running, or it panicked).
    /// `callback` names the call for the log if it panics; the connection is
    /// then reset.
    pub(crate) fn with_stream_handler(
        &mut self,
        key: Key,
        callback: &'static str,
        f: impl FnOnce(&mut dyn StreamHandler, &mut Context<'_>),
    ) {
        let Some(handler) = self.stream_mut(key).and_then(|c| c.handler.take()) else {
            return;
        };
        // The handler moves into the guarded call and comes back out of it,
        // so a panic drops it as it unwinds.
        let started = self.callback_start();
        let back = guarded(key, callback, RESET_AFTER_PANIC, || {
            let mut handler = handler;
            f(handler.as_mut(), &mut Context::new(self, key));
            handler
        });
        self.callback_done(started, Some(key), callback);
        match back {
            Some(handler) => {
                if let Some(conn) = self.stream_mut(key) {
                    conn.handler = Some(handler);
                }
            }
            None => {
                self.note_panic(Some(key), callback);
                self.handler_panicked(key);
            }
        }
    }

    /// One stream event: complete a connect, flush, read.
    pub(crate) fn stream_event(&mut self, key: Key, event: &mio::event::Event, scratch: &mut [u8]) {
        let Some(conn) = self.stream_mut(key) else { return };
        if let State::Connecting { .. } = conn.state {
            self.finish_connect(key);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            let hint = if event.is_read_closed() || event.is_error() {
                ReadHint::UntilWouldBlock
            } else {
                ReadHint::ShortReadDrains
            };
            self.read_stream(key, scratch, hint);
        }
        if event.is_writable() || event.is_error() {
            self.flush_stream(key);
        }
        if event.is_error() {
            self.surface_socket_error(key);
        }
    }

    /// Closes a connection on a socket error (a reset) that the read and
    /// flush of its event did not surface: when the read half is closed or
    /// reading is paused, and nothing is queued, no call would fail, and
    /// the edge-triggered error would never be reported again.
    fn surface_socket_error(&mut self, key: Key) {
        let Some(conn) = self.stream_mut(key) else { return };
        if matches!(conn.state, State::Connecting { .. } | State::Closed) {
            return;
        }
        match conn.stream.take_error() {
            Ok(None) => {}
            Ok(Some(err)) | Err(err) => self.finish_stream(key, CloseReason::Error(err)),
        }
    }

    /// Checks an outbound connect after its socket turned writable (mio's
    /// `TcpStream::connect` steps: a socket error, or a peer address).
    fn finish_connect(&mut self, key: Key) {
        let Some(conn) = self.stream_mut(key) else { return };
        let outcome = match conn.stream.take_error() {
            Ok(Some(err)) | Err(err) => Err(err),
            Ok(None) => conn.stream.peer_addr().and_then(|peer| {
                // A connect to a local port nothing listens on can be given
                // that very port as its own, and TCP's simultaneous open
                // then connects the socket to itself: no server is there.
                if conn.stream.local_addr().is_ok_and(|local| local == peer) {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "connected to itself: nothing listens at the address",
                    ));
                }
                Ok(peer)
            }),
        };
        match outcome {
            Ok(peer) => {
                conn.peer = peer;
                if let Some(timer) = conn.connect_timer.take() {
                    conn.timers.retain(|&t| t != timer);
                    self.services.timers.cancel(timer);
                }
                // A close or shutdown asked for while connecting is done
                // now; `on_open` comes unless the handler closed.
                self.apply(key, Input::Connected, None);
            }
            // Not connected yet: a spurious wakeup.
            Err(err) if err.kind() == io::ErrorKind::NotConnected => {}
            // The peer accepted and then reset before the connect was seen
            // done: the connection was made, and ended in error.
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {
                self.finish_stream(key, CloseReason::Error(err));
            }
            Err(err) => self.finish_stream(key, CloseReason::ConnectFailed(err)),
        }
    }

    /// Reads until the socket is empty, the read budget is spent, or the
    /// handler stops wanting input.
    pub(crate) fn read_stream(&mut self, key: Key, scratch: &mut [u8], hint: ReadHint) {
        let mut reads = 0;
        loop {
            let Some(conn) = stream_in(&mut self.sources, key) else {
                return;
            };
            if !conn.state.reads_socket() || (conn.read_paused && conn.state.may_receive()) {
                return;
            }
            if reads == self.services.read_budget {
                // Fairness: let the other ready sources run; come back next turn.
                return self.revisit_later(key, Revisit::READ);
            }
            reads += 1;
            conn.stream.trust_short_reads(hint == ReadHint::ShortReadDrains);
            // A closing connection lingering for the peer's FIN drops what
            // it reads: over TLS it is not even decrypted.
            conn.stream.discard_tls_input(!conn.state.may_receive());
            let handshaking = conn.stream.is_handshaking();
            let read = conn.stream.read(scratch);
            // A short read says the socket is empty, except on TLS after a
            // `close_notify` or an error record: read on to see it.
            let drained = !conn.stream.is_tls() || conn.stream.tls_drained();
            if handshaking && !conn.stream.is_handshaking() {
                if conn.opening {
                    // The handshake is done: the handler meets the
                    // connection now, before any of its input.
                    conn.opening = false;
                    self.with_stream_handler(key, "on_open", |h, cx| h.on_open(cx));
                    self.run_deferred();
                }
                // What waited for the handshake (a half-close, a close)
                // may go on now.
                self.after_output(key);
            }
            let Some(conn) = stream_in(&mut self.sources, key) else {
                return;
            };
            match read {
                Ok(0) => return self.peer_finished(key),
                Ok(n) => {
                    trace!("{key}: read {n} bytes");
                    self.services.counters.bytes_read += n as u64;
                    self.services.recorder.record(key, What::Read(n as u64));
                    if conn.state.may_receive() {
                        self.deliver(key, &scratch[..n]);
                        // A watermark notice that input caused runs before
                        // the next read: a handler that pauses on
                        // `on_high_water` is paused before the core reads
                        // (and it queues) more.
                        self.run_deferred();
                    }
                    if n < scratch.len() && hint == ReadHint::ShortReadDrains && drained {
                        return;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return self.finish_stream(key, CloseReason::Error(err)),
            }
        }
    }

    /// Hands input to the handler: the pending bytes followed by `fresh`.
    /// Keeps what the handler did not consume.
    pub(crate) fn deliver(&mut self, key: Key, fresh: &[u8]) {
        let Some(conn) = self.stream_mut(key) else { return };
        let Some(handler) = conn.handler.take() else {
            return;
        };
        let pending = std::mem::take(&mut conn.pending);
        // The handler and the input it was given move into the guarded call
        // and come back out: a panic drops both as it unwinds.
        let started = self.callback_start();
        let back = guarded(key, "on_data", RESET_AFTER_PANIC, || {
            let (mut handler, mut pending) = (handler, pending);
            let mut cx = Context::new(self, key);
            if pending.is_empty() {
                let used = handler.on_data(&mut cx, fresh).min(fresh.len());
                pending.extend_from_slice(&fresh[used..]);
            } else {
                pending.extend_from_slice(fresh);
                let used = handler.on_data(&mut cx, &pending).min(pending.len());
                pending.drain(..used);
            }
            (handler, pending)
        });
        self.callback_done(started, Some(key), "on_data");
        let Some((handler, pending)) = back else {
            self.note_panic(Some(key), "on_data");
            return self.handler_panicked(key);
        };
        let Some(conn) = self.stream_mut(key) else { return };
        conn.handler = Some(handler);
        if pending.len() > conn.options.max_pending_input {
            return self.finish_stream(key, CloseReason::InputOverflow);
        }
        // An empty buffer is freed, so an idle connection holds none.
        conn.pending = if pending.is_empty() { Vec::new() } else { pending };
    }

    /// A read returned 0: the peer will send nothing more.
    fn peer_finished(&mut self, key: Key) {
        self.services.recorder.record(key, What::PeerFin);
        self.apply(key, Input::PeerFin, None);
        self.after_output(key);
    }

    /// Writes what is queued, then applies what an emptier queue means.
    pub(crate) fn flush_stream(&mut self, key: Key) {
        let Some(conn) = stream_in(&mut self.sources, key) else {
            return;
        };
        if matches!(conn.state, State::Connecting { .. } | State::Closed)
            || (conn.queue.is_empty() && !conn.stream.has_pending_output())
        {
            return;
        }
        match conn.flush(key, &mut self.services) {
            Ok(()) => {
                self.after_output(key);
            }
            Err(err) => self.abort_stream_with(key, CloseReason::Error(err)),
        }
    }

    /// A TLS connection's handshake deadline passed: cut it if it is
    /// still handshaking.
    pub(crate) fn handshake_deadline(&mut self, key: Key, timer: TimerId) {
        let Some(conn) = self.stream_mut(key) else { return };
        conn.timers.retain(|&t| t != timer);
        if conn.stream.is_handshaking() && conn.state != State::Closed {
            debug!("{key} {}: TLS handshake not done in time", conn.peer);
            let err = io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out");
            self.abort_stream_with(key, CloseReason::Error(err));
        }
    }

    /// An outbound connect's deadline passed: a connection still
    /// connecting fails with `TimedOut`.
    pub(crate) fn connect_deadline(&mut self, key: Key, timer: TimerId) {
        let Some(conn) = self.stream_mut(key) else { return };
        conn.timers.retain(|&t| t != timer);
        conn.connect_timer = None;
        if matches!(conn.state, State::Connecting { .. }) {
            debug!("{key} {}: connect not done in time", conn.peer);
            let err = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            self.finish_stream(key, CloseReason::ConnectFailed(err));
        }
    }

    /// Queues or writes output for a connection. Returns whether it was
    /// taken (written or queued).
    pub(crate) fn send_chunk(&mut self, key: Key, chunk: Chunk) -> bool {
        self.send_chunks(key, [chunk])
    }

    /// Queues a chunk for a connection other than the one being served,
    /// without writing it: every connection given output this way is
    /// flushed once, at the end of the turn ([`Core::flush_deferred_writes`]).
    /// A broadcast then costs one write per receiver per turn, whatever
    /// number of lines reached it in that turn, instead of one per line.
    pub(crate) fn send_chunk_deferred(&mut self, key: Key, chunk: Chunk) -> bool {
        self.queue_chunks(key, [chunk], true)
    }

    /// Flushes connections given deferred output, oldest first, at most
    /// [`DEFERRED_FLUSH_BUDGET`] of them per turn. The rest stay listed,
    /// in order, and the next turn polls without waiting: input that came
    /// meanwhile (a new chat line) is read and queued behind what they
    /// hold, so it leaves with their next write instead of waiting for the
    /// whole fan-out to end.
    pub(crate) fn flush_deferred_writes(&mut self) {
        let count = self.services.pending_flush.len().min(DEFERRED_FLUSH_BUDGET);
        for _ in 0..count {
            let Some(key) = self.services.pending_flush.pop_front() else {
                break;
            };
            let Some(conn) = self.stream_mut(key) else {
                continue;
            };
            conn.flush_pending = false;
            if let State::Connecting { .. } = conn.state {
                // Written once connected; the cap applies now.
                self.after_output(key);
            } else {
                self.flush_stream(key);
            }
        }
    }

    /// Queues chunks as one unit (all or none), then writes if they are
    /// first in line: a memory chunk followed by a file region goes out
    /// with the region in the same segment where the socket allows.
    pub(crate) fn send_chunks<const N: usize>(&mut self, key: Key, chunks: [Chunk; N]) -> bool {
        self.queue_chunks(key, chunks, false)
    }

    /// Queues chunks, then writes now or, if `defer`, at the end of the turn.
    fn queue_chunks<const N: usize>(&mut self, key: Key, chunks: [Chunk; N], defer: bool) -> bool {
        let Some(conn) = stream_in(&mut self.sources, key) else {
            return false;
        };
        match conn.queue_chunks(key, chunks, defer, &mut self.services) {
            Sent::Refused => false,
            Sent::Deferred => true,
            Sent::Failed(err) => {
                self.abort_stream_with(key, CloseReason::Error(err));
                false
            }
            Sent::Taken => {
                let kept = self.after_output(key);
                kept && self.stream_ref(key).is_some_and(|c| c.state != State::Closed)
            }
        }
    }

    /// Sends borrowed bytes: written straight away when nothing is queued,
    /// and only the rest copied into the queue.
    pub(crate) fn send_slice(&mut self, key: Key, data: &[u8]) -> bool {
        let Some(conn) = self.stream_mut(key) else {
            return false;
        };
        if !conn.queue.is_empty() || !matches!(conn.state, State::Open | State::ReadClosed) {
            return self.send_chunk(key, Chunk::Owned(data.to_vec()));
        }
        match conn.queue.write_slice(&mut conn.stream, data) {
            Ok(n) => self.services.wrote(key, n as u64),
            Err(err) => {
                self.abort_stream_with(key, CloseReason::Error(err));
                return false;
            }
        }
        let kept = self.after_output(key);
        kept && self.stream_ref(key).is_some_and(|c| c.state != State::Closed)
    }

    /// After the queue changed: the hard cap, the watermarks, and the
    /// closing states that wait for an empty queue. Returns `false` if the
    /// newest send was dropped to stay within the cap.
    pub(crate) fn after_output(&mut self, key: Key) -> bool {
        let Some(conn) = stream_in(&mut self.sources, key) else {
            return true;
        };
        if conn.state == State::Closed {
            return true;
        }
        match conn.output_changed(key, &mut self.services) {
            Level::Queued => true,
            Level::Dropped => false,
            Level::OverCap => {
                self.abort_stream_with(key, CloseReason::Overflow);
                true
            }
            Level::Emptied => {
                self.queue_emptied(key);
                true
            }
        }
    }

    /// The queue is empty: finish a pending half-close or close.
    fn queue_emptied(&mut self, key: Key) {
        self.apply(key, Input::QueueEmpty, None);
    }

    /// The handler asked to close after flushing.
    pub(crate) fn close_stream(&mut self, key: Key) {
        self.apply(key, Input::Close, None);
    }

    /// The handler asked to shut its write half after flushing.
    pub(crate) fn shutdown_stream_write(&mut self, key: Key) {
        self.apply(key, Input::ShutdownWrite, None);
    }

    /// Drops queued output and resets the connection.
    pub(crate) fn abort_stream(&mut self, key: Key) {
        self.abort_stream_with(key, CloseReason::Aborted);
    }

    /// Drops queued output and resets the connection, for `reason`. Write
    /// errors end this way too: a peer must not mistake a stream cut short
    /// (a file that shrank while it was sent) for one that ended normally.
    pub(crate) fn abort_stream_with(&mut self, key: Key, reason: CloseReason) {
        self.apply(key, Input::Abort, Some(reason));
    }

    /// Closes a connection for `reason` (no reset) and schedules its
    /// removal, which runs its `on_close` once the current callback (if any)
    /// has returned.
    pub(crate) fn finish_stream(&mut self, key: Key, reason: CloseReason) {
        self.apply(key, Input::Fail, Some(reason));
    }

    /// A deadline of the connection's state passed: `timer` is the one
    /// that fired, already gone from the timer set.
    pub(crate) fn deadline_passed(&mut self, key: Key, timer: TimerId, input: Input) {
        let Some(conn) = self.stream_mut(key) else { return };
        if conn.state.timer() != Some(timer) {
            return;
        }
        conn.state.set_timer(None);
        self.apply(key, input, None);
    }

    /// Moves the connection's state machine ([`conn_state::next`]) on
    /// `input` and performs the move's actions, in order. `given` is the
    /// close reason of [`Input::Fail`] and [`Input::Abort`]. The timer of a
    /// deadline the new state no longer waits for is cancelled.
    pub(crate) fn apply(&mut self, key: Key, input: Input, given: Option<CloseReason>) {
        let Some(conn) = stream_in(&mut self.sources, key) else {
            return;
        };
        let old = conn.state;
        // TLS records still waiting are output not yet sent.
        let emptied = conn.queue.is_empty() && !conn.stream.has_pending_output();
        let (new, actions) = conn_state::next(old, input, emptied);
        conn.set_state(key, new);
        // Draining with and without the peer's FIN is one state by name:
        // the FIN has an event of its own.
        if std::mem::discriminant(&old.public()) != std::mem::discriminant(&new.public()) {
            let what = What::State {
                from: old.public(),
                to: new.public(),
            };
            self.services.recorder.record(key, what);
        }
        if let Some(timer) = old.timer().filter(|t| new.timer() != Some(*t)) {
            self.services.timers.cancel(timer);
        }
        let mut given = given;
        for action in actions {
            match action {
                Action::NotifyOpen => self.with_stream_handler(key, "on_open", |h, cx| h.on_open(cx)),
                Action::NotifyReadClosed => {
                    self.with_stream_handler(key, "on_read_closed", |h, cx| h.on_read_closed(cx));
                }
                Action::ShutdownWrite => {
                    if let Some(conn) = self.stream_mut(key) {
                        let _ = conn.stream.shutdown(NetShutdown::Write);
                    }
                }
                Action::ArmDrain | Action::ArmLinger => {
                    if let Some(conn) = stream_in(&mut self.sources, key) {
                        conn.arm_deadline(key, action, &mut self.services);
                    }
                }
                Action::RevisitRead => self.revisit_later(key, Revisit::READ),
                Action::Reset => {
                    if let Some(conn) = self.stream_mut(key) {
                        conn.stream.set_reset_on_close();
                    }
                }
                Action::Finish(end) => {
                    let reason = match end {
                        End::Closed => CloseReason::Closed,
                        End::PeerClosed => CloseReason::PeerClosed,
                        End::DrainTimeout => CloseReason::DrainTimeout,
                        End::Given => given.take().unwrap_or(CloseReason::Aborted),
                    };
                    if let Some(conn) = stream_in(&mut self.sources, key) {
                        conn.closed(key, reason, &mut self.services);
                    }
                }
            }
        }
    }

    /// Pauses or resumes delivery of input to the handler.
    pub(crate) fn set_read_paused(&mut self, key: Key, paused: bool) {
        if let Some(conn) = stream_in(&mut self.sources, key) {
            conn.set_read_paused(key, paused, &mut self.services);
        }
    }

    /// Puts a connection on the ready list, once, for `why` (a
    /// [`Revisit`] bit): it is served next turn, after the other sources.
    pub(crate) fn revisit_later(&mut self, key: Key, why: u8) {
        if let Some(conn) = stream_in(&mut self.sources, key) {
            conn.revisit_later(key, &mut self.services, why);
        }
    }

    /// A connection on the ready list: for [`Revisit::READ`], re-offer
    /// pending input and read on; in any case, flush on. A connection
    /// listed only to go on writing costs no read.
    pub(crate) fn revisit_stream(&mut self, key: Key, scratch: &mut [u8]) {
        let Some(conn) = self.stream_mut(key) else { return };
        let why = std::mem::take(&mut conn.revisit);
        if why & Revisit::READ != 0 {
            if !conn.pending.is_empty() && conn.state.may_receive() && !conn.read_paused {
                self.deliver(key, &[]);
            }
            self.read_stream(key, scratch, ReadHint::UntilWouldBlock);
        }
        self.flush_stream(key);
    }
}
