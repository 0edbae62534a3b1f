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

use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balance::Balance;
use crate::connection::ConnectionOptions;
use crate::services::{Services, TimerTask};
use crate::sys::ListenSocket;
use crate::tls::ServerTls;
use crate::{Addr, Key, StreamFactory, TimerId};

/// Most connections accepted in one wakeup of a listener.
pub(crate) const ACCEPT_BUDGET: usize = 64;

/// How long a listener rests after accepting fails (out of descriptors).
pub(crate) const BACKOFF: Duration = Duration::from_millis(100);

/// A listener's episodes of failing accepts are logged at warn level at
/// most once in this long; the ones in between at debug level.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(60);

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
    /// Sets `SO_REUSEPORT` on a TCP listener before it is bound (default
    /// `false`), so that several sockets, in this process or others, can
    /// listen on one address and port; the kernel spreads new connections
    /// among them by a hash of each connection's addresses and ports. Every
    /// socket sharing the port must set it, and (on Linux) belong to the
    /// same user. With it, several reactors on several threads serve one
    /// port: each binds its own listener to the same address (see
    /// [`Reactor::listen_tcp_with`](crate::Reactor::listen_tcp_with)).
    ///
    /// Only [`Reactor::listen_tcp_with`](crate::Reactor::listen_tcp_with)
    /// reads it. Unix listeners ignore it (a path has one listener), and so
    /// do the `adopt_` calls: an adopted socket is already bound.
    pub reuse_port: bool,
    /// Balances the connections of one address over shards (default
    /// `None`; an evloop extension): each shard binds its own listener of
    /// the address with a clone of one [`Balance`], and a connection
    /// accepted by a shard holding more than its share is handed to the
    /// shard holding the fewest, which serves it as if its own listener had
    /// accepted it (see [`Balance`] for the cost). Only TCP listeners bound
    /// on a shard ([`shard::run`](crate::shard::run)) balance; elsewhere
    /// it is ignored.
    pub balance: Option<Balance>,
    /// A limit several listeners share (default `None`): one address bound
    /// once per shard counts its connections over every shard, so that
    /// `--max-clients` holds for the whole server. A connection is admitted
    /// only while both this listener's `max_connections` and the shared
    /// limit have room; one over either is sent the farewell and closed.
    pub shared_limit: Option<ConnectionLimit>,
    /// TLS for every connection accepted (default `None`): the handshake
    /// runs in the loop, and the handler reads and sends plaintext (see
    /// [`crate::tls`]). Only TCP listeners read it; a Unix listener
    /// ignores it.
    pub tls: Option<ServerTls>,
}

/// A most-connections-at-once bound that several listeners share, on one
/// thread or several: clones count against the same total.
///
/// ```
/// use evloop::{ConnectionLimit, ListenerOptions};
///
/// let limit = ConnectionLimit::new(100);
/// // Each shard's listener of one address gets a clone.
/// let options = ListenerOptions {
///     shared_limit: Some(limit.clone()),
///     ..ListenerOptions::default()
/// };
/// assert_eq!(limit.held(), 0);
/// # drop(options);
/// ```
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    inner: Arc<LimitInner>,
}

#[derive(Debug)]
struct LimitInner {
    max: usize,
    held: AtomicUsize,
}

impl ConnectionLimit {
    /// A limit of `max` connections at once, none held.
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            inner: Arc::new(LimitInner {
                max,
                held: AtomicUsize::new(0),
            }),
        }
    }

    /// The most connections at once.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Connections held now, over every listener that shares the limit.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::Acquire)
    }

    /// Takes one place, unless all are held.
    pub(crate) fn try_take(&self) -> bool {
        self.inner
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.inner.max).then_some(held + 1)
            })
            .is_ok()
    }

    /// Gives back `n` places.
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            self.inner.held.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            max_connections: 10_000,
            connection: ConnectionOptions::default(),
            reuse_port: false,
            balance: None,
            shared_limit: None,
            tls: None,
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
    /// The balancing group this listener asked for, and once it has joined
    /// it (bound on a shard, see `Reactor::add_listener`), its shard.
    pub(crate) balance: Option<Balance>,
    /// A limit shared with other listeners; each member holds one place.
    pub(crate) shared_limit: Option<ConnectionLimit>,
    pub(crate) shard: Option<usize>,
    /// TLS for the connections it accepts.
    pub(crate) tls: Option<ServerTls>,
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
            balance: options.balance,
            shared_limit: options.shared_limit,
            tls: options.tls,
            shard: None,
        }
    }

    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        self.socket.source()
    }

    /// Its balancing group and its shard there, once it has joined.
    pub(crate) fn balanced(&self) -> Option<(&Balance, usize)> {
        self.balance.as_ref().zip(self.shard)
    }

    /// Joins its balancing group as shard `shard`'s listener `key` (TCP
    /// only: a Unix path has one listener, shared).
    pub(crate) fn join_balance(&mut self, shard: usize, key: Key) {
        if let (Some(balance), ListenSocket::Tcp(_)) = (&self.balance, &self.socket) {
            if balance.join(shard, key) {
                self.shard = Some(shard);
            }
        }
    }

    /// Counts a connection admitted (`true`) or gone (`false`) in its
    /// balancing group.
    pub(crate) fn count_in_balance(&self, admitted: bool) {
        if let Some((balance, shard)) = self.balanced() {
            balance.add(shard, admitted);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some((balance, shard)) = self.balanced() {
            balance.leave(shard);
        }
        // Its members outlive it without a listener to leave: their places
        // go back now.
        if let Some(limit) = &self.shared_limit {
            limit.release(self.members.len());
        }
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

/// What a failed accept asks of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Turn the oldest waiting connection away with the spare descriptor.
    TurnAway,
    /// Rest for [`BACKOFF`].
    Rest,
}

impl Listener {
    /// Accepting failed with `err` at `now`: starts an episode (logging its
    /// start, at warn level at most once per [`WARN_INTERVAL`]) or counts
    /// one more failure in it, and says what to do: turn a connection away
    /// once the listener has rested and descriptors are still short (and a
    /// spare is held), rest otherwise.
    pub(crate) fn accept_failed(
        &mut self,
        key: Key,
        err: &io::Error,
        now: Instant,
        has_spare: bool,
    ) -> AfterFailure {
        let shortage = is_descriptor_shortage(err);
        let episode = match &mut self.exhausted {
            Some(episode) => episode,
            None => {
                let loud = self
                    .last_warning
                    .map_or(true, |at| now.saturating_duration_since(at) >= WARN_INTERVAL);
                let plan = if shortage && has_spare {
                    "then turning connections away until descriptors free up"
                } else {
                    "at a time until accepting works again"
                };
                let ms = BACKOFF.as_millis();
                let level = if loud {
                    self.last_warning = Some(now);
                    log::Level::Warn
                } else {
                    log::Level::Debug
                };
                log::log!(
                    level,
                    "{key}: accepting on {} failed: {err}; pausing accepts for {ms} ms, {plan}",
                    self.local
                );
                self.exhausted.insert(Episode {
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
            AfterFailure::TurnAway
        } else {
            AfterFailure::Rest
        }
    }

    /// Whether accepts have been failing (an episode is going on).
    pub(crate) fn in_episode(&self) -> bool {
        self.exhausted.is_some()
    }

    /// A connection was turned away with the spare descriptor.
    pub(crate) fn turned_away(&mut self) {
        if let Some(episode) = &mut self.exhausted {
            episode.turned_away += 1;
        }
    }

    /// An accept succeeded: ends an episode of failures, if one was going
    /// on, logging its length and counts. Returns whether one was.
    pub(crate) fn accepting_again(&mut self, key: Key, now: Instant) -> bool {
        let Some(episode) = self.exhausted.take() else {
            return false;
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
            self.local
        );
        true
    }

    /// Rests for [`BACKOFF`]: events are ignored until the timer fires and
    /// puts the listener on the ready list.
    pub(crate) fn start_backoff(&mut self, key: Key, services: &mut Services) {
        let deadline = services.now + BACKOFF;
        self.backoff = services.timers.set(deadline, None, TimerTask::AcceptBackoff(key));
        if let Some(episode) = &mut self.exhausted {
            episode.rested = true;
        }
    }

    /// The rest is over: accept again next turn, edge or no edge.
    pub(crate) fn end_backoff(&mut self, key: Key, services: &mut Services) {
        self.backoff = None;
        services.ready.push_back(key);
    }

    /// Takes the member at `slot` off the list in O(1) (swap-remove).
    /// Returns the member moved into `slot`, whose place must be updated.
    /// Gives back the shared limit's place taken for a connection that
    /// was then not admitted.
    pub(crate) fn give_back_place(&self) {
        if let Some(limit) = &self.shared_limit {
            limit.release(1);
        }
    }

    pub(crate) fn leave(&mut self, slot: u32) -> Option<Key> {
        let slot = slot as usize;
        if slot >= self.members.len() {
            return None;
        }
        self.members.swap_remove(slot);
        self.count_in_balance(false);
        if let Some(limit) = &self.shared_limit {
            limit.release(1);
        }
        self.members.get(slot).copied()
    }
}
