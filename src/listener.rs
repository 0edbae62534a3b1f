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
//! - `EMFILE`/`ENFILE` (no descriptor left) would make a level of pending
//!   connections that accept can never clear: instead of spinning, the
//!   listener stops accepting for [`BACKOFF`], logs one warning per episode,
//!   and tries again when the timer fires;
//! - the kernel queues up to [`BACKLOG`] connections not yet accepted
//!   (capped by `net.core.somaxconn`), not the 128 that mio's `bind` asks
//!   for: when that queue is full, Linux drops the SYN and the client's
//!   connect stalls a whole second before retrying.

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use log::{debug, warn};
use mio::net::{TcpListener, UnixListener};
use mio::Interest;

use crate::connection::{ConnState, Connection, ConnectionOptions, Stream};
use crate::reactor::{Core, TimerTask};
use crate::source::Source;
use crate::{Addr, Key, StreamFactory, TimerId};

/// Most connections accepted in one wakeup of a listener.
pub(crate) const ACCEPT_BUDGET: usize = 64;

/// How long a listener rests after running out of descriptors.
pub(crate) const BACKOFF: Duration = Duration::from_millis(100);

/// Connections the kernel may queue for a listener before `accept`.
pub(crate) const BACKLOG: libc::c_int = 1024;

/// Settings of one listener and the connections it accepts.
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

/// A listening socket, TCP or Unix.
pub(crate) enum ListenSocket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl ListenSocket {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            ListenSocket::Tcp(l) => l,
            ListenSocket::Unix(l) => l,
        }
    }

    /// Sets the kernel's queue of pending connections to [`BACKLOG`]:
    /// `listen` on a socket already listening only changes its backlog.
    pub(crate) fn raise_backlog(&self) {
        let fd = match self {
            ListenSocket::Tcp(l) => l.as_raw_fd(),
            ListenSocket::Unix(l) => l.as_raw_fd(),
        };
        // SAFETY: listen(2) on a descriptor owned by `self`, open for the
        // duration of the call; it touches no memory of ours.
        if unsafe { libc::listen(fd, BACKLOG) } != 0 {
            debug!("raising the listen backlog: {}", io::Error::last_os_error());
        }
    }

    fn accept(&self) -> io::Result<(Stream, Addr)> {
        match self {
            ListenSocket::Tcp(l) => {
                let (stream, peer) = l.accept()?;
                // Small replies must not wait for Nagle's timer.
                let _ = stream.set_nodelay(true);
                Ok((Stream::Tcp(stream), Addr::Inet(peer)))
            }
            ListenSocket::Unix(l) => {
                let (stream, peer) = l.accept()?;
                Ok((Stream::Unix(stream), Addr::from_unix(&peer)))
            }
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
    /// Set while accepting is paused after `EMFILE`.
    pub(crate) backoff: Option<TimerId>,
    /// Whether the current back-off episode has been logged.
    pub(crate) warned: bool,
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
            warned: false,
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

/// Whether an accept error means the process or system is out of
/// descriptors or memory, so retrying at once would spin.
fn is_resource_exhaustion(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
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
                return;
            }
            match listener.socket.accept() {
                Ok((stream, peer)) => self.admit(key, stream, peer),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if is_resource_exhaustion(&err) => return self.start_backoff(key, err),
                // The peer gave up before we got to it, or a signal: go on.
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) => {}
                Err(err) => {
                    warn!("{key} accept on {}: {err}", listener.local);
                    return self.start_backoff(key, err);
                }
            }
        }
        self.ready.push_back(key);
    }

    fn start_backoff(&mut self, key: Key, err: io::Error) {
        let deadline = self.now + BACKOFF;
        let id = self.timers.set(deadline, None, TimerTask::AcceptBackoff(key));
        let Some(listener) = self.listener_mut(key) else {
            return;
        };
        if !listener.warned {
            listener.warned = true;
            warn!(
                "accept on {}: {err}; pausing accepts for {} ms at a time until descriptors free up",
                listener.local,
                BACKOFF.as_millis()
            );
        }
        listener.backoff = id;
    }

    /// The back-off timer fired: try accepting again.
    pub(crate) fn end_backoff(&mut self, key: Key) {
        if let Some(listener) = self.listener_mut(key) {
            listener.backoff = None;
            self.ready.push_back(key);
        }
    }

    /// Takes in one accepted connection: turned away over the limit, or
    /// given a handler, registered, and opened.
    fn admit(&mut self, listener_key: Key, mut stream: Stream, peer: Addr) {
        let Some(listener) = self.listener_mut(listener_key) else {
            return;
        };
        // An accept succeeded: a later exhaustion is a new episode, worth a warning.
        listener.warned = false;
        if listener.members.len() >= listener.max_connections {
            debug!(
                "{listener_key} {}: at {} connections, turning {peer} away",
                listener.local, listener.max_connections
            );
            if let Some(farewell) = listener.factory.farewell(&peer) {
                let _ = io::Write::write(&mut stream, &farewell);
            }
            return;
        }
        let handler = listener.factory.new_handler(&peer);
        let options = Rc::clone(&listener.connection);
        let slot = listener.members.len() as u32;
        let mut conn = Connection::new(stream, handler, peer, ConnState::Open, options);
        conn.listener = Some((listener_key, slot));
        let Some(key) = self.register_stream(conn) else {
            return;
        };
        if let Some(listener) = self.listener_mut(listener_key) {
            listener.members.push(key);
        }
        self.with_stream_handler(key, |h, cx| h.on_open(cx));
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
        debug!("{key} {}: state=>{}", conn.peer, conn.state);
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
