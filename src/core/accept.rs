//! Accepting: the accept loop within its budget, back-off and turning
//! connections away when descriptors run out, the factory, and admitting a
//! connection to its listener.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};

use log::{debug, warn};
use mio::net::TcpStream;
use mio::Interest;

use crate::conn_state::State;
use crate::connection::Connection;
use crate::handler::guarded;
use crate::listener::{AfterFailure, Listener, ACCEPT_BUDGET};
use crate::registry::Registry;
use crate::shard::Shards;
use crate::source::Source;
use crate::sys::{ListenSocket, Stream};
use crate::{Addr, Error, Key, Reactor};

use super::Core;

/// What the log says when a factory panics.
const RESET_ACCEPTED: &str = "resetting the connection just accepted; the listener goes on";

/// What became of a connection the spare descriptor made room for.
enum TurnAway {
    /// One was accepted and reset.
    Done,
    /// None was waiting.
    Empty,
    /// No spare, or the accept still failed.
    Failed,
}

/// The listener named by `key`, borrowing only the registry.
fn listener_in(sources: &mut Registry<Source>, key: Key) -> Option<&mut Listener> {
    match sources.get_mut(key) {
        Some(Source::Listener(listener)) => Some(listener),
        _ => None,
    }
}

impl Core {
    fn listener_mut(&mut self, key: Key) -> Option<&mut Listener> {
        listener_in(&mut self.sources, key)
    }

    /// Accepts what is waiting on a listener, within the budget.
    pub(crate) fn accept_ready(&mut self, key: Key) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.listener_mut(key) else {
                return;
            };
            if listener.backoff.is_some() {
                // Resting: the timer will retry, whatever edges come meanwhile.
                return;
            }
            match listener.socket.accept() {
                Ok((stream, peer)) => {
                    if listener.in_episode() {
                        self.accepting_again(key);
                    }
                    if let Some((stream, peer)) = self.hand_off(key, stream, peer) {
                        self.admit(key, stream, peer);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                // The peer gave up before we got to it, or a signal: go on.
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) => {}
                Err(err) => {
                    if !self.accept_failed(key, err) {
                        return;
                    }
                }
            }
        }
        self.services.ready.push_back(key);
    }

    /// Accepting failed with `err` (see `listener.rs`). Returns whether to
    /// go on accepting: a connection was turned away, more may wait.
    fn accept_failed(&mut self, key: Key, err: io::Error) -> bool {
        let now = self.services.now;
        let has_spare = self.spare_fd.is_some();
        let Some(listener) = listener_in(&mut self.sources, key) else {
            return false;
        };
        if listener.accept_failed(key, &err, now, has_spare) == AfterFailure::TurnAway {
            match self.turn_away_one(key) {
                TurnAway::Done => {
                    if let Some(listener) = listener_in(&mut self.sources, key) {
                        listener.turned_away();
                    }
                    return true;
                }
                // The backlog is empty: the next connection raises an edge.
                TurnAway::Empty => return false,
                TurnAway::Failed => {}
            }
        }
        if let Some(listener) = listener_in(&mut self.sources, key) {
            listener.start_backoff(key, &mut self.services);
        }
        false
    }

    /// Out of descriptors: closes the spare, accepts the oldest waiting
    /// connection into its place, resets that connection, and reopens the
    /// spare.
    fn turn_away_one(&mut self, key: Key) -> TurnAway {
        let Some(spare) = self.spare_fd.take() else {
            return TurnAway::Failed;
        };
        drop(spare);
        let Some(listener) = self.listener_mut(key) else {
            self.reserve_spare_fd();
            return TurnAway::Failed;
        };
        let outcome = match listener.socket.accept() {
            Ok((stream, peer)) => {
                stream.set_reset_on_close();
                // Closed before the spare is reopened, which needs its descriptor.
                drop(stream);
                debug!("{key}: out of descriptors: turned {peer} away");
                TurnAway::Done
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => TurnAway::Empty,
            // Something left the backlog, or a signal: go on.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                ) =>
            {
                TurnAway::Done
            }
            Err(err) => {
                debug!("{key}: accepting with the spare descriptor freed: {err}");
                TurnAway::Failed
            }
        };
        self.reserve_spare_fd();
        outcome
    }

    /// An accept succeeded after an episode of failures: logs its end, and
    /// takes back a spare descriptor lost to a race, now that descriptors
    /// are free.
    fn accepting_again(&mut self, key: Key) {
        let now = self.services.now;
        if listener_in(&mut self.sources, key).is_some_and(|l| l.accepting_again(key, now)) {
            self.reserve_spare_fd();
        }
    }

    /// Opens the spare descriptor if none is held. Without one, a listener
    /// out of descriptors only rests and retries.
    pub(crate) fn reserve_spare_fd(&mut self) {
        if self.spare_fd.is_none() {
            match File::open("/dev/null") {
                Ok(file) => self.spare_fd = Some(file),
                Err(err) => debug!("no spare descriptor for accepting: {err}"),
            }
        }
    }

    /// The back-off timer fired: try accepting again. Connections waiting
    /// in the backlog raise no new edge, so this is what serves them.
    pub(crate) fn end_backoff(&mut self, key: Key) {
        if let Some(listener) = listener_in(&mut self.sources, key) {
            listener.end_backoff(key, &mut self.services);
        }
    }

    /// A connection just accepted on a balanced listener (see
    /// `balance.rs`), when another shard holds fewer by more than the
    /// slack: sent there, to be adopted by that shard's listener of the
    /// same address. Given back, to be admitted here, if the listener does
    /// not balance or the message is refused.
    fn hand_off(&mut self, key: Key, stream: Stream, peer: Addr) -> Option<(Stream, Addr)> {
        let shard = self
            .listener_mut(key)
            .and_then(|l| l.balanced().map(|(_, shard)| shard));
        let (Some(shard), Addr::Inet(inet)) = (shard, &peer) else {
            return Some((stream, peer));
        };
        let inet = *inet;
        let tcp = match stream {
            Stream::Tcp(tcp) => tcp,
            unix => return Some((unix, peer)),
        };
        let (Some(shards), Some(Some((to, target, reservation)))) = (
            Shards::current(),
            self.listener_mut(key)
                .and_then(|l| l.balance.as_ref().map(|b| b.target(shard))),
        ) else {
            return Some((Stream::Tcp(tcp), peer));
        };
        // The message is given back whole if refused: the stream travels in
        // a cell this shard can take it back from.
        let parcel = Arc::new(Mutex::new(Some((std::net::TcpStream::from(tcp), reservation))));
        let sent = Arc::clone(&parcel);
        let message = move |reactor: &mut Reactor| {
            let taken = sent.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some((stream, _reservation)) = taken {
                if let Err(err) = reactor.adopt_stream(target, stream, inet) {
                    debug!("{target}: handed {inet} over from shard {shard}, but: {err}");
                }
            }
        };
        match shards.send(to, message) {
            Ok(()) => {
                debug!("{key}: {inet} handed over to shard {to}");
                None
            }
            Err(refused) => {
                drop(refused);
                let taken = parcel.lock().unwrap_or_else(PoisonError::into_inner).take();
                let (stream, _reservation) = taken?;
                debug!("{key}: shard {to} refused {inet}: served here");
                Some((Stream::Tcp(TcpStream::from_std(stream)), peer))
            }
        }
    }

    /// Takes over a TCP connection accepted elsewhere (another shard's
    /// listener) as if `listener_key` had accepted it: see
    /// `Reactor::adopt_stream`.
    pub(crate) fn adopt_stream(
        &mut self,
        listener_key: Key,
        stream: std::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<Key, Error> {
        if !self
            .listener_mut(listener_key)
            .is_some_and(|l| matches!(l.socket, ListenSocket::Tcp(_)))
        {
            let text = format!("{listener_key} is not a TCP listener: cannot adopt {peer}");
            return Err(Error::Io(io::Error::new(io::ErrorKind::InvalidInput, text)));
        }
        stream.set_nonblocking(true)?;
        let stream = Stream::Tcp(TcpStream::from_std(stream));
        self.admit(listener_key, stream, Addr::Inet(peer)).ok_or_else(|| {
            let text = format!("{listener_key}: {peer} turned away (limit, factory panic or registration)");
            Error::Io(io::Error::other(text))
        })
    }

    /// Takes in one accepted connection: turned away over the limit, or
    /// given a handler, registered, and opened; its key, if it was. A
    /// factory that panics gets the connection reset; the listener goes on
    /// (see `handler.rs`).
    fn admit(&mut self, listener_key: Key, mut stream: Stream, peer: Addr) -> Option<Key> {
        let started = self.callback_start();
        let listener = self.listener_mut(listener_key)?;
        let factory = &mut listener.factory;
        // The shared limit's place is taken last, only when this
        // listener's own limit has room; it is given back in `leave`.
        let full = listener.members.len() >= listener.max_connections
            || listener
                .shared_limit
                .as_ref()
                .is_some_and(|limit| !limit.try_take());
        if full {
            debug!(
                "{listener_key} {}: at its connection limit, turning {peer} away",
                listener.local
            );
            match guarded(listener_key, "StreamFactory::farewell", RESET_ACCEPTED, || {
                factory.farewell(&peer)
            }) {
                Some(Some(farewell)) => {
                    let _ = io::Write::write(&mut stream, &farewell);
                }
                Some(None) => {}
                None => stream.set_reset_on_close(),
            }
            return None;
        }
        let made = guarded(listener_key, "StreamFactory::new_handler", RESET_ACCEPTED, || {
            factory.new_handler(&peer)
        });
        self.callback_done(started, Some(listener_key), "StreamFactory::new_handler");
        let listener = self.listener_mut(listener_key)?;
        let Some(handler) = made else {
            stream.set_reset_on_close();
            listener.give_back_place();
            self.note_panic(Some(listener_key), "StreamFactory::new_handler");
            return None;
        };
        let options = Rc::clone(&listener.connection);
        let slot = listener.members.len() as u32;
        let tls = listener.tls.clone();
        let stream = match (stream, &tls) {
            (Stream::Tcp(tcp), Some(tls)) => match tls.accept(tcp) {
                Ok(tls) => Stream::Tls(Box::new(tls)),
                Err(err) => {
                    debug!("{listener_key}: TLS for {peer}: {err}");
                    listener.give_back_place();
                    return None;
                }
            },
            (stream, _) => stream,
        };
        let mut conn = Connection::new(stream, handler, peer, State::Open, options);
        conn.listener = Some((listener_key, slot));
        // A TLS connection meets its handler once its handshake is done.
        conn.opening = tls.is_some();
        let Some(key) = self.register_stream(conn) else {
            if let Some(listener) = self.listener_mut(listener_key) {
                listener.give_back_place();
            }
            return None;
        };
        if let Some(listener) = self.listener_mut(listener_key) {
            listener.members.push(key);
            listener.count_in_balance(true);
        }
        self.services.counters.accepted += 1;
        let accepted = crate::metrics::What::Accepted {
            listener: listener_key,
        };
        self.services.recorder.record(key, accepted);
        match tls {
            Some(tls) => self.arm_handshake(key, tls.handshake_timeout),
            None => self.with_stream_handler(key, "on_open", |h, cx| h.on_open(cx)),
        }
        Some(key)
    }

    /// Inserts a connection and registers its socket for both directions.
    pub(crate) fn register_stream(&mut self, mut conn: Connection) -> Option<Key> {
        conn.born = super::observe::seconds_since(self.services.counters.started, self.services.now);
        let key = match self.sources.insert(Source::Stream(conn)) {
            Ok(key) => key,
            Err(_) => {
                warn!("source table full: dropping a connection");
                return None;
            }
        };
        let conn = super::stream_in(&mut self.sources, key)?;
        let registry = self.poll.registry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(err) = registry.register(conn.stream.source(), key.to_token(), interest) {
            warn!("registering a connection from {}: {err}", conn.peer);
            self.sources.remove(key);
            return None;
        }
        debug!("{key} {}: state=>{}", conn.peer, conn.state.public());
        Some(key)
    }

    /// Takes a connection off its listener's member list.
    pub(crate) fn leave_listener(&mut self, listener_key: Key, slot: u32) {
        let moved = listener_in(&mut self.sources, listener_key).and_then(|l| l.leave(slot));
        if let Some(conn) = moved.and_then(|moved| self.stream_mut(moved)) {
            conn.listener = Some((listener_key, slot));
        }
    }
}
