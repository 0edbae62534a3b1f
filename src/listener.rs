//! Listeners: accept until `WouldBlock`, a per-listener connection limit,
//! and back-off when the process runs out of descriptors.
//!
//! Always true:
//! - a listener keeps the keys of its live connections (`members`), each
//!   connection knows its place in that list, and removal is O(1)
//!   (swap-remove, fixing the moved member's place);
//! - one wakeup accepts at most [`ACCEPT_BUDGET`] connections; a listener
//!   with more waiting goes on the ready list, so a flood of connects cannot
//!   starve the connections already open;
//! - a failed accept (`EMFILE`/`ENFILE`: no descriptor left; `ENOBUFS`,
//!   `ENOMEM`) leaves the connection in the backlog, where it raises no new
//!   edge and retrying at once would spin. The listener rests for
//!   [`BACKOFF`] on a timer instead, ignoring its events meanwhile, and
//!   tries again when the timer fires, edge or no edge. Connections wait in
//!   the backlog meanwhile, so a shortage shorter than that costs them a
//!   wait, nothing more;
//! - if descriptors are still short after that rest, each waiting
//!   connection is turned away at once (reset) with the reactor's spare
//!   descriptor: the spare is closed, the connection accepted into its
//!   place and reset, and the spare reopened. No client hangs in the
//!   backlog of a server that cannot take it, the backlog empties, and the
//!   listener needs no timer: each new connection is a new edge, and the
//!   first one that finds a descriptor free is served. Without a spare (it
//!   could not be reopened: another thread took the descriptor), or for
//!   `ENOBUFS`/`ENOMEM`, the listener rests again instead;
//! - a stretch of failures is one *episode*: it logs one warning when it
//!   starts and one info line when an accept succeeds again, with how long
//!   it lasted and how many connections were turned away. A new episode
//!   within [`WARN_INTERVAL`] of the last warning is logged at debug level,
//!   so a server that hovers at its limit does not log two lines per
//!   connection;
//! - the kernel queues up to [`BACKLOG`] connections not yet accepted
//!   (capped by `net.core.somaxconn`), not the 128 that mio's `bind` asks
//!   for: when that queue is full, Linux drops the SYN and the client's
//!   connect stalls a whole second before retrying.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::Interest;

use crate::conn_state::State;
use crate::connection::{Connection, ConnectionOptions};
use crate::handler::guarded;
use crate::reactor::Core;
use crate::services::TimerTask;
use crate::source::Source;
use crate::sys::{ListenSocket, Stream};
use crate::{Addr, Key, StreamFactory, TimerId};

/// Most connections accepted in one wakeup of a listener.
pub(crate) const ACCEPT_BUDGET: usize = 64;

/// How long a listener rests after accepting fails (out of descriptors).
pub(crate) const BACKOFF: Duration = Duration::from_millis(100);

/// A listener's episodes of failing accepts are logged at warn level at
/// most once in this long; the ones in between at debug level.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// What the log says when a factory panics.
const RESET_ACCEPTED: &str = "resetting the connection just accepted; the listener goes on";

/// Connections the kernel may queue for a listener before `accept`.
pub(crate) const BACKLOG: libc::c_int = 1024;

/// Settings of one listener and the connections it accepts.
///
/// An echo that serves one client at a time and tells the others so, with
/// [`StreamFactory::farewell`]:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use std::time::Duration;
/// use evloop::protocols::echo::Echo;
/// use evloop::{Addr, ListenerOptions, Reactor, StreamFactory, StreamHandler};
///
/// struct OneAtATime;
///
/// impl StreamFactory for OneAtATime {
///     fn new_handler(&mut self, _peer: &Addr) -> Box<dyn StreamHandler> {
///         Box::new(Echo)
///     }
///
///     fn farewell(&mut self, _peer: &Addr) -> Option<Vec<u8>> {
///         Some(b"busy\n".to_vec())
///     }
/// }
///
/// let options = ListenerOptions { max_connections: 1, ..ListenerOptions::default() };
/// let mut reactor = Reactor::new()?;
/// let key = reactor.listen_tcp_with("127.0.0.1:0".parse()?, options, OneAtATime)?;
/// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
///
/// let handle = reactor.handle();
/// let clients = std::thread::spawn(move || {
///     let talk = || -> std::io::Result<String> {
///         let mut first = TcpStream::connect(addr)?;
///         first.set_read_timeout(Some(Duration::from_secs(5)))?;
///         first.write_all(b"hi")?;
///         first.read_exact(&mut [0; 2])?; // served: the one place is taken
///         let mut second = TcpStream::connect(addr)?;
///         second.set_read_timeout(Some(Duration::from_secs(5)))?;
///         let mut reply = String::new();
///         second.read_to_string(&mut reply)?; // until the server closes
///         Ok(reply)
///     };
///     let reply = talk();
///     handle.stop();
///     reply
/// });
/// reactor.run()?;
/// assert_eq!(clients.join().expect("client thread panicked")?, "busy\n");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// Most connections open at once from this listener. One more is
    /// accepted, sent the factory's farewell (if any) and closed.
    pub max_connections: usize,
    /// Limits of each accepted connection.
    pub connection: ConnectionOptions,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            max_connections: 10_000,
            connection: ConnectionOptions::default(),
        }
    }
}

/// A listener: its socket, its factory, and its live connections.
pub(crate) struct Listener {
    pub(crate) socket: ListenSocket,
    pub(crate) factory: Box<dyn StreamFactory>,
    pub(crate) max_connections: usize,
    pub(crate) connection: Rc<ConnectionOptions>,
    pub(crate) members: Vec<Key>,
    pub(crate) local: Addr,
    /// Set while accepting is paused after a failed accept.
    pub(crate) backoff: Option<TimerId>,
    /// Set from a failed accept until the next one that succeeds.
    exhausted: Option<Episode>,
    /// When the last episode was logged at warn level.
    last_warning: Option<Instant>,
    /// A Unix socket file this listener created, removed when it closes.
    pub(crate) unix_path: Option<PathBuf>,
}

impl Listener {
    pub(crate) fn new(
        socket: ListenSocket,
        local: Addr,
        options: ListenerOptions,
        factory: Box<dyn StreamFactory>,
    ) -> Self {
        let unix_path = match &socket {
            ListenSocket::Unix(_) => local.as_path().map(PathBuf::from),
            ListenSocket::Tcp(_) => None,
        };
        Listener {
            socket,
            factory,
            max_connections: options.max_connections,
            connection: Rc::new(options.connection),
            members: Vec::new(),
            local,
            backoff: None,
            exhausted: None,
            last_warning: None,
            unix_path,
        }
    }

    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        self.socket.source()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A stretch of failed accepts, from the first failure to the next accept
/// that succeeds.
struct Episode {
    since: Instant,
    /// Accepts that failed: the first, each retry after a rest, and each
    /// one that a spare descriptor then made room for.
    refused: u64,
    /// Connections accepted with the spare descriptor and reset.
    turned_away: u64,
    /// The listener has rested once: connections that still find no
    /// descriptor are turned away.
    rested: bool,
    /// Logged at warn level, so its end is logged at info level.
    loud: bool,
}

/// Whether an accept error means the process (`EMFILE`) or the system
/// (`ENFILE`) is out of descriptors: what the spare descriptor is for.
fn is_descriptor_shortage(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// What became of a connection the spare descriptor made room for.
enum TurnAway {
    /// One was accepted and reset.
    Done,
    /// None was waiting.
    Empty,
    /// No spare, or the accept still failed.
    Failed,
}

impl Core {
    fn listener_mut(&mut self, key: Key) -> Option<&mut Listener> {
        match self.sources.get_mut(key) {
            Some(Source::Listener(listener)) => Some(listener),
            _ => None,
        }
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
                    if listener.exhausted.is_some() {
                        self.accepting_again(key);
                    }
                    self.admit(key, stream, peer);
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

    /// Accepting failed with `err` (see the module docs). Returns whether to
    /// go on accepting: a connection was turned away, more may wait.
    fn accept_failed(&mut self, key: Key, err: io::Error) -> bool {
        let now = self.services.now;
        let has_spare = self.spare_fd.is_some();
        let Some(listener) = self.listener_mut(key) else {
            return false;
        };
        let shortage = is_descriptor_shortage(&err);
        let episode = match &mut listener.exhausted {
            Some(episode) => episode,
            None => {
                let loud = listener
                    .last_warning
                    .map_or(true, |at| now.saturating_duration_since(at) >= WARN_INTERVAL);
                let plan = if shortage && has_spare {
                    "then turning connections away until descriptors free up"
                } else {
                    "at a time until accepting works again"
                };
                let ms = BACKOFF.as_millis();
                let level = if loud {
                    listener.last_warning = Some(now);
                    log::Level::Warn
                } else {
                    log::Level::Debug
                };
                log::log!(
                    level,
                    "{key}: accepting on {} failed: {err}; pausing accepts for {ms} ms, {plan}",
                    listener.local
                );
                listener.exhausted.insert(Episode {
                    since: now,
                    refused: 0,
                    turned_away: 0,
                    rested: false,
                    loud,
                })
            }
        };
        episode.refused += 1;
        if episode.rested && shortage {
            match self.turn_away_one(key) {
                TurnAway::Done => {
                    if let Some(episode) = self.listener_mut(key).and_then(|l| l.exhausted.as_mut()) {
                        episode.turned_away += 1;
                    }
                    return true;
                }
                // The backlog is empty: the next connection raises an edge.
                TurnAway::Empty => return false,
                TurnAway::Failed => {}
            }
        }
        self.start_backoff(key);
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

    /// An accept succeeded after an episode of failures: logs its end.
    fn accepting_again(&mut self, key: Key) {
        let now = self.services.now;
        let Some(listener) = self.listener_mut(key) else {
            return;
        };
        let Some(episode) = listener.exhausted.take() else {
            return;
        };
        let ms = now.saturating_duration_since(episode.since).as_millis();
        let (refused, turned_away) = (episode.refused, episode.turned_away);
        let level = if episode.loud {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "{key}: accepting on {} again after {ms} ms: {refused} accepts failed, \
             {turned_away} connections turned away",
            listener.local
        );
        // A spare lost to a race is taken back now that descriptors are free.
        self.reserve_spare_fd();
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

    /// Rests the listener for [`BACKOFF`]: its events are ignored until the
    /// timer fires and puts it on the ready list.
    fn start_backoff(&mut self, key: Key) {
        let deadline = self.services.now + BACKOFF;
        let id = self
            .services
            .timers
            .set(deadline, None, TimerTask::AcceptBackoff(key));
        let Some(listener) = self.listener_mut(key) else {
            if let Some(id) = id {
                self.services.timers.cancel(id);
            }
            return;
        };
        if let Some(episode) = &mut listener.exhausted {
            episode.rested = true;
        }
        listener.backoff = id;
    }

    /// The back-off timer fired: try accepting again. Connections waiting
    /// in the backlog raise no new edge, so this is what serves them.
    pub(crate) fn end_backoff(&mut self, key: Key) {
        if let Some(listener) = self.listener_mut(key) {
            listener.backoff = None;
            self.services.ready.push_back(key);
        }
    }

    /// Takes in one accepted connection: turned away over the limit, or
    /// given a handler, registered, and opened. A factory that panics gets
    /// the connection reset; the listener goes on (see `handler.rs`).
    fn admit(&mut self, listener_key: Key, mut stream: Stream, peer: Addr) {
        let Some(listener) = self.listener_mut(listener_key) else {
            return;
        };
        let factory = &mut listener.factory;
        if listener.members.len() >= listener.max_connections {
            debug!(
                "{listener_key} {}: at {} connections, turning {peer} away",
                listener.local, listener.max_connections
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
            return;
        }
        let Some(handler) = guarded(listener_key, "StreamFactory::new_handler", RESET_ACCEPTED, || {
            factory.new_handler(&peer)
        }) else {
            stream.set_reset_on_close();
            return;
        };
        let options = Rc::clone(&listener.connection);
        let slot = listener.members.len() as u32;
        let mut conn = Connection::new(stream, handler, peer, State::Open, options);
        conn.listener = Some((listener_key, slot));
        let Some(key) = self.register_stream(conn) else {
            return;
        };
        if let Some(listener) = self.listener_mut(listener_key) {
            listener.members.push(key);
        }
        self.with_stream_handler(key, "on_open", |h, cx| h.on_open(cx));
    }

    /// Inserts a connection and registers its socket for both directions.
    pub(crate) fn register_stream(&mut self, conn: Connection) -> Option<Key> {
        let key = match self.sources.insert(Source::Stream(conn)) {
            Ok(key) => key,
            Err(_) => {
                warn!("source table full: dropping a connection");
                return None;
            }
        };
        let conn = crate::connection::stream_in(&mut self.sources, key)?;
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
        let Some(listener) = self.listener_mut(listener_key) else {
            return;
        };
        let slot = slot as usize;
        if slot >= listener.members.len() {
            return;
        }
        listener.members.swap_remove(slot);
        if let Some(&moved) = listener.members.get(slot) {
            if let Some(conn) = self.stream_mut(moved) {
                conn.listener = Some((listener_key, slot as u32));
            }
        }
    }
}
