//! [`Core`]: the reactor's state that handlers reach through
//! [`crate::Context`], and every call into a handler. The loop itself
//! ([`crate::Reactor`]) holds only the event list, the read buffer and the
//! command channel; everything a turn does to sources happens here:
//! dispatching events, deferred work, removals, timers, shutdown.
//!
//! - [`stream`]: stream events around the connection's IO steps, and the
//!   moves of its state machine;
//! - [`accept`]: the accept loop, the factory, admitting a connection;
//! - [`datagram`]: receiving and sending on datagram sockets.

mod accept;
mod datagram;
mod observe;
mod stream;

pub use observe::ConnectionInfo;

pub(crate) use stream::stream_in;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::net::UnixStream;
use mio::Poll;

use crate::conn_state::{Input, State, Then};
use crate::connect::ConnectOptions;
use crate::connection::{Connection, ConnectionOptions};
use crate::handler::guarded;
use crate::registry::Registry;
use crate::services::{Deferred, Notice, Services, TimerTask};
use crate::source::Source;
use crate::sys::Stream;
use crate::write_queue::Chunk;
use crate::{Addr, CloseReason, Context, DatagramHandler, Key, SourceHandler, StreamHandler, TimerId};

/// The reactor's state that handlers reach through [`Context`]: everything
/// but the event list and the read buffer, which the loop itself holds.
pub(crate) struct Core {
    pub(crate) poll: Poll,
    pub(crate) sources: Registry<Source>,
    /// The loop's shared services: clock, timers, queues of later work.
    pub(crate) services: Services,
    /// Options of outbound connections.
    pub(crate) defaults: Rc<ConnectionOptions>,
    pub(crate) stop_requested: bool,
    pub(crate) shutdown: Shutdown,
    /// Events dropped because their source was gone (see step 4).
    pub(crate) stale_events: u64,
    /// A descriptor held in reserve while listeners exist: when accepting
    /// fails for want of descriptors, it is closed to make room to accept
    /// and turn away a connection that would otherwise wait in the backlog
    /// (see `listener.rs`).
    pub(crate) spare_fd: Option<std::fs::File>,
    /// The reactor's handle, for [`Context::handle`].
    pub(crate) handle: crate::Handle,
}

/// Where a graceful shutdown stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shutdown {
    /// Running normally.
    No,
    /// Asked for; handlers are told at the end of this turn.
    Requested { deadline: Instant },
    /// Handlers were told; waiting for connections to finish.
    Draining { deadline: Instant },
}

/// A handler of any kind, taken out of its source while it runs.
enum AnyHandler {
    Stream(Box<dyn StreamHandler>),
    Datagram(Box<dyn DatagramHandler>),
    Custom(Box<dyn SourceHandler>),
}

impl AnyHandler {
    /// What [`Core::handler_panicked`] does to this handler's source, for
    /// the log line.
    fn after_panic(&self) -> &'static str {
        match self {
            AnyHandler::Stream(_) => "resetting the connection",
            AnyHandler::Datagram(_) => "removing the socket",
            AnyHandler::Custom(_) => "removing the source",
        }
    }
}

impl Core {
    /// Step 4 for one event.
    pub(crate) fn dispatch(&mut self, event: &mio::event::Event, scratch: &mut [u8]) {
        let Some(key) = Key::from_token(event.token()) else {
            return;
        };
        match self.sources.get_mut(key) {
            None => {
                self.stale_events += 1;
                debug!("{key}: event for a source that is gone, dropped");
            }
            Some(Source::Listener(_)) => self.accept_ready(key),
            Some(Source::Stream(_)) => self.stream_event(key, event, scratch),
            Some(Source::Datagram(_)) => self.datagram_event(key, event, scratch),
            Some(Source::Custom(custom)) => {
                let Some(handler) = custom.handler.take() else {
                    return;
                };
                self.call_handler(key, AnyHandler::Custom(handler), "on_ready", |handler, cx| {
                    if let AnyHandler::Custom(h) = handler {
                        h.on_ready(cx, event);
                    }
                });
            }
        }
    }

    /// Lists a custom source for `on_revisit` next turn, once.
    pub(crate) fn revisit_source(&mut self, key: Key) -> bool {
        match self.sources.get_mut(key) {
            Some(Source::Custom(custom)) => {
                if !custom.revisit {
                    custom.revisit = true;
                    self.services.ready.push_back(key);
                }
                true
            }
            _ => false,
        }
    }

    /// A custom source on the ready list: its handler's `on_revisit`.
    pub(crate) fn revisit_custom(&mut self, key: Key) {
        let Some(Source::Custom(custom)) = self.sources.get_mut(key) else {
            return;
        };
        custom.revisit = false;
        let Some(handler) = custom.handler.take() else {
            return;
        };
        self.call_handler(key, AnyHandler::Custom(handler), "on_revisit", |handler, cx| {
            if let AnyHandler::Custom(h) = handler {
                h.on_revisit(cx);
            }
        });
    }

    /// Calls a handler taken out of its slot, under [`guarded`], then puts
    /// it back; if it panics, it is dropped by the unwind and its source is
    /// reset or removed.
    fn call_handler(
        &mut self,
        key: Key,
        handler: AnyHandler,
        callback: &'static str,
        f: impl FnOnce(&mut AnyHandler, &mut Context<'_>),
    ) {
        let then = handler.after_panic();
        let started = self.callback_start();
        let back = guarded(key, callback, then, || {
            let mut handler = handler;
            f(&mut handler, &mut Context::new(self, key));
            handler
        });
        self.callback_done(started, Some(key), callback);
        match back {
            Some(handler) => self.put_handler(key, handler),
            None => {
                self.note_panic(Some(key), callback);
                self.handler_panicked(key);
            }
        }
    }

    /// A handler of `key` panicked and is gone: reset its connection, or
    /// remove its socket or source. Its slot is then freed by deferred work
    /// like any removal, but without `on_close`, since the handler is not
    /// there to get it. Deferred work already queued for the key finds no
    /// handler either: a notice is skipped, a second removal does nothing.
    pub(crate) fn handler_panicked(&mut self, key: Key) {
        match self.sources.get(key) {
            // A connection already closed has its removal queued.
            Some(Source::Stream(_)) => self.abort_stream_with(key, CloseReason::Aborted),
            Some(Source::Datagram(_) | Source::Custom(_)) => {
                self.services
                    .deferred
                    .push_back(Deferred::Remove(key, CloseReason::Aborted));
            }
            // A factory panicked: the listener goes on.
            Some(Source::Listener(_)) | None => {}
        }
    }

    fn take_handler(&mut self, key: Key) -> Option<AnyHandler> {
        match self.sources.get_mut(key)? {
            Source::Stream(c) => c.handler.take().map(AnyHandler::Stream),
            Source::Datagram(d) => d.handler.take().map(AnyHandler::Datagram),
            Source::Custom(c) => c.handler.take().map(AnyHandler::Custom),
            Source::Listener(_) => None,
        }
    }

    fn put_handler(&mut self, key: Key, handler: AnyHandler) {
        match (self.sources.get_mut(key), handler) {
            (Some(Source::Stream(c)), AnyHandler::Stream(h)) => c.handler = Some(h),
            (Some(Source::Datagram(d)), AnyHandler::Datagram(h)) => d.handler = Some(h),
            (Some(Source::Custom(c)), AnyHandler::Custom(h)) => c.handler = Some(h),
            // The source is gone: the handler goes with it.
            _ => {}
        }
    }

    /// Runs deferred work until none is left.
    pub(crate) fn run_deferred(&mut self) {
        while let Some(work) = self.services.deferred.pop_front() {
            match work {
                Deferred::Notify(key, Notice::HighWater) => {
                    self.with_stream_handler(key, "on_high_water", |h, cx| h.on_high_water(cx));
                }
                Deferred::Notify(key, Notice::Drain) => {
                    self.with_stream_handler(key, "on_drain", |h, cx| h.on_drain(cx));
                }
                Deferred::Notify(key, Notice::OtherHighWater(other)) => {
                    self.with_stream_handler(key, "on_other_high_water", |h, cx| {
                        h.on_other_high_water(cx, other);
                    });
                }
                Deferred::Notify(key, Notice::OtherDrain(other)) => {
                    self.with_stream_handler(key, "on_other_drain", |h, cx| h.on_other_drain(cx, other));
                }
                Deferred::Remove(key, reason) => self.remove_source(key, reason),
            }
        }
    }

    /// Takes a source out of the registry, cancels its timers, and gives
    /// its handler the last call, `on_close`. The socket closes when the
    /// source is dropped, after that call.
    fn remove_source(&mut self, key: Key, reason: CloseReason) {
        let Some(mut source) = self.sources.remove(key) else {
            return;
        };
        for id in source.timers_mut().map(std::mem::take).unwrap_or_default() {
            self.services.timers.cancel(id);
        }
        let handler = match &mut source {
            Source::Stream(conn) => {
                if let Some(id) = conn.state.timer() {
                    self.services.timers.cancel(id);
                }
                if let Some((listener, slot)) = conn.listener {
                    self.leave_listener(listener, slot);
                }
                debug!("{key} {}: removed ({reason})", conn.peer);
                let handler = conn.handler.take();
                // A TLS connection whose handshake never finished was never
                // its handler's: no `on_close` for it either.
                handler.filter(|_| !conn.opening).map(AnyHandler::Stream)
            }
            Source::Datagram(dgram) => dgram.handler.take().map(AnyHandler::Datagram),
            // Deregistered below: `source()` is handler code.
            Source::Custom(custom) => custom.handler.take().map(AnyHandler::Custom),
            Source::Listener(listener) => {
                if let Some(id) = listener.backoff {
                    self.services.timers.cancel(id);
                }
                info!("{key}: stopped listening on {}", listener.local);
                None
            }
        };
        if let Some(handler) = handler {
            let reason = &reason;
            // The source is out of the registry already: a panic here
            // leaves nothing to clean up. The handler is dropped inside the
            // guard, so a `Drop` that panics is caught too.
            let started = self.callback_start();
            let back = guarded(key, "on_close", "the source was already removed", || {
                let mut handler = handler;
                if let AnyHandler::Custom(h) = &mut handler {
                    let _ = self.poll.registry().deregister(h.source());
                }
                let mut cx = Context::new(self, key);
                match &mut handler {
                    AnyHandler::Stream(h) => h.on_close(&mut cx, reason),
                    AnyHandler::Datagram(h) => h.on_close(&mut cx, reason),
                    AnyHandler::Custom(h) => h.on_close(&mut cx, reason),
                }
                drop(handler);
            });
            self.callback_done(started, Some(key), "on_close");
            if back.is_none() {
                self.note_panic(Some(key), "on_close");
            }
        }
    }

    /// The time this turn started.
    pub(crate) fn now(&self) -> Instant {
        self.services.now
    }

    /// The local address of a source (a system call for connections).
    pub(crate) fn local_addr(&self, key: Key) -> Option<Addr> {
        self.sources.get(key).and_then(Source::local_addr)
    }

    /// The connections of a listener.
    pub(crate) fn members(&self, listener: Key) -> &[Key] {
        match self.sources.get(listener) {
            Some(Source::Listener(listener)) => &listener.members,
            _ => &[],
        }
    }

    /// Whether a source is there (a connection: not yet closed).
    pub(crate) fn is_open(&self, key: Key) -> bool {
        match self.sources.get(key) {
            Some(Source::Stream(conn)) => conn.state != State::Closed,
            Some(_) => true,
            None => false,
        }
    }

    /// Moves a timer to fire `after` from now; `false` if it is gone.
    pub(crate) fn reset_timer(&mut self, id: TimerId, after: Duration) -> bool {
        let deadline = self.services.now + after;
        self.services.timers.reset(id, deadline)
    }

    /// Cancels a timer (and drops it from its owner's list); `false` if it
    /// was already gone.
    pub(crate) fn cancel_timer(&mut self, id: TimerId) -> bool {
        let cancelled = self.services.timers.cancel(id);
        if let Some(TimerTask::User(owner)) = cancelled {
            self.forget_timer(owner, id);
        }
        cancelled.is_some()
    }

    /// Asks `run` to return after this turn.
    pub(crate) fn request_stop(&mut self) {
        self.stop_requested = true;
    }

    /// Resets a connection at once; any other kind of source is closed.
    pub(crate) fn abort_source(&mut self, key: Key) {
        match self.sources.get(key) {
            Some(Source::Stream(_)) => self.abort_stream(key),
            Some(_) => self.close_source(key),
            None => {}
        }
    }

    /// Closes any source: a connection after flushing, others at once.
    pub(crate) fn close_source(&mut self, key: Key) {
        match self.sources.get(key) {
            Some(Source::Stream(_)) => self.close_stream(key),
            Some(_) => self
                .services
                .deferred
                .push_back(Deferred::Remove(key, CloseReason::Closed)),
            None => {}
        }
    }

    /// Queues one shared payload on every member of a listener.
    pub(crate) fn broadcast(&mut self, listener: Key, data: &Rc<[u8]>, skip: Option<Key>) -> usize {
        let mut sent = 0;
        let mut index = 0;
        // Members are only removed by deferred work, so indexes stay valid
        // while this loop runs, even if a send fails and closes a member.
        while let Some(Source::Listener(l)) = self.sources.get(listener) {
            let Some(&member) = l.members.get(index) else {
                break;
            };
            index += 1;
            if Some(member) != skip && self.send_chunk_deferred(member, Chunk::Shared(Rc::clone(data))) {
                sent += 1;
            }
        }
        sent
    }

    pub(crate) fn set_user_timer(
        &mut self,
        owner: Key,
        after: Duration,
        every: Option<Duration>,
    ) -> Option<TimerId> {
        let timers = self.sources.get_mut(owner)?.timers_mut()?;
        let id = self
            .services
            .timers
            .set(self.services.now + after, every, TimerTask::User(owner))?;
        timers.push(id);
        Some(id)
    }

    /// Drops a timer from its owner's list (it fired or was cancelled).
    pub(crate) fn forget_timer(&mut self, owner: Key, id: TimerId) {
        if let Some(timers) = self.sources.get_mut(owner).and_then(Source::timers_mut) {
            timers.retain(|t| *t != id);
        }
    }

    pub(crate) fn fire_timer(&mut self, id: TimerId, task: TimerTask) {
        match task {
            TimerTask::User(owner) => {
                if !self.services.timers.contains(id) {
                    self.forget_timer(owner, id);
                }
                self.services.recorder.record(owner, crate::metrics::What::Timer);
                let Some(handler) = self.take_handler(owner) else {
                    return;
                };
                self.call_handler(owner, handler, "on_timer", |handler, cx| match handler {
                    AnyHandler::Stream(h) => h.on_timer(cx, id),
                    AnyHandler::Datagram(h) => h.on_timer(cx, id),
                    AnyHandler::Custom(h) => h.on_timer(cx, id),
                });
            }
            TimerTask::Drain(key) => self.deadline_passed(key, id, Input::DrainTimeout),
            TimerTask::Linger(key) => self.deadline_passed(key, id, Input::LingerTimeout),
            TimerTask::AcceptBackoff(key) => self.end_backoff(key),
            TimerTask::Handshake(key) => self.handshake_deadline(key, id),
            TimerTask::Connect(key) => self.connect_deadline(key, id),
            // Fired by the reactor, which holds its closure.
            TimerTask::Reactor => {}
        }
    }

    pub(crate) fn begin_shutdown(&mut self, timeout: Duration) {
        if self.shutdown == Shutdown::No {
            info!("shutting down: at most {} ms to finish", timeout.as_millis());
            self.shutdown = Shutdown::Requested {
                deadline: Instant::now() + timeout,
            };
        }
    }

    /// Closes every listener and gives every handler `on_shutdown`.
    pub(crate) fn tell_shutdown(&mut self) {
        for key in self.sources.keys() {
            if let Some(Source::Listener(_)) = self.sources.get(key) {
                self.remove_source(key, CloseReason::Shutdown);
                continue;
            }
            if let Some(Source::Stream(conn)) = self.sources.get(key) {
                if conn.opening {
                    // Still handshaking: nothing of it is the handler's.
                    self.abort_stream_with(key, CloseReason::Shutdown);
                    self.run_deferred();
                    continue;
                }
            }
            let Some(handler) = self.take_handler(key) else {
                continue;
            };
            self.call_handler(key, handler, "on_shutdown", |handler, cx| match handler {
                AnyHandler::Stream(h) => h.on_shutdown(cx),
                AnyHandler::Datagram(h) => h.on_shutdown(cx),
                AnyHandler::Custom(h) => h.on_shutdown(cx),
            });
            self.run_deferred();
        }
    }

    pub(crate) fn connect_tcp(
        &mut self,
        addr: SocketAddr,
        options: &ConnectOptions,
        handler: Box<dyn StreamHandler>,
    ) -> io::Result<Key> {
        let tcp = crate::sys::tcp_connect(addr, options.nodelay, options.bind, options.configure.as_deref())?;
        let (stream, handshake) = match &options.tls {
            Some((tls, server_name)) => {
                let stream = tls.connect(tcp, server_name)?;
                (Stream::Tls(Box::new(stream)), Some(tls.handshake_timeout))
            }
            None => (Stream::Tcp(tcp), None),
        };
        let connection = options.connection.clone();
        let key = self.add_outbound(stream, Addr::Inet(addr), connection, handler)?;
        if let Some(after) = options.timeout {
            self.arm_connect_timeout(key, after);
        }
        if let Some(after) = handshake {
            self.arm_handshake(key, after);
        }
        Ok(key)
    }

    /// Cuts `key` if it is still connecting `after` from now.
    fn arm_connect_timeout(&mut self, key: Key, after: Duration) {
        let deadline = self.services.now + after;
        let timer = self.services.timers.set(deadline, None, TimerTask::Connect(key));
        if let (Some(timer), Some(conn)) = (timer, self.stream_mut(key)) {
            // Cancelled once connected, or with the connection's other
            // timers if it goes.
            conn.timers.push(timer);
            conn.connect_timer = Some(timer);
        }
    }

    /// Cuts `key` if its TLS handshake is not done `timeout` from now.
    pub(crate) fn arm_handshake(&mut self, key: Key, timeout: Duration) {
        let deadline = self.services.now + timeout;
        let timer = self
            .services
            .timers
            .set(deadline, None, TimerTask::Handshake(key));
        if let (Some(timer), Some(conn)) = (timer, self.stream_mut(key)) {
            // Cancelled with the connection's other timers if it goes.
            conn.timers.push(timer);
        }
    }

    pub(crate) fn connect_unix(&mut self, path: &Path, handler: Box<dyn StreamHandler>) -> io::Result<Key> {
        let stream = UnixStream::connect(path)?;
        self.add_outbound(
            Stream::Unix(stream),
            Addr::Unix(Some(path.to_path_buf())),
            None,
            handler,
        )
    }

    fn add_outbound(
        &mut self,
        stream: Stream,
        peer: Addr,
        options: Option<Rc<ConnectionOptions>>,
        handler: Box<dyn StreamHandler>,
    ) -> io::Result<Key> {
        let conn = Connection::new(
            stream,
            handler,
            peer,
            State::Connecting {
                then: Then::Open,
                drain: None,
            },
            options.unwrap_or_else(|| Rc::clone(&self.defaults)),
        );
        let key = self
            .register_stream(conn)
            .ok_or_else(|| io::Error::other("the connection could not be registered"))?;
        self.services.counters.connected += 1;
        self.services
            .recorder
            .record(key, crate::metrics::What::Connecting);
        Ok(key)
    }
}
