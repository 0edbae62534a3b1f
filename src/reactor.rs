//! [`Reactor`]: the loop. One turn, in this order (the same list is in
//! `docs/architecture.md`); before the first turn's poll, the hooks of
//! [`Reactor::on_start`] run:
//!
//! 1. **Timeout.** Zero if the ready list or the deferred queue has work;
//!    otherwise until the earliest timer or shutdown deadline; otherwise
//!    forever.
//! 2. **Poll.** `epoll_wait` through mio; `EINTR` is an empty turn.
//! 3. **Clock.** `now` is read once; every callback of the turn sees it.
//!    The turn is counted, with the poll's wait ([`crate::metrics`]).
//! 4. **Events.** Each event's token is unpacked into a [`Key`]; a key whose
//!    source is gone (closed earlier in this batch, its slot perhaps reused)
//!    finds nothing and the event is dropped. Otherwise: listeners accept,
//!    connections read then flush, datagram sockets flush then receive,
//!    custom sources get `on_ready`. After each event, and after each
//!    delivery of input, deferred work runs.
//! 5. **Ready list.** Sources that stopped early (read, file or accept
//!    budget, resumed reading, a lingering close) are served again, once
//!    each.
//! 6. **Timers.** Every timer due at `now` fires, in deadline order: the
//!    handlers' (`on_timer`) and the reactor's own ([`Reactor::set_timer`],
//!    a closure); timers set meanwhile wait for a later turn.
//! 7. **Commands** from [`crate::Handle`]s, if the waker fired: stop,
//!    shutdown, closures; a batch of messages from another shard
//!    ([`crate::shard`]) is one closure, run here in the order sent.
//! 8. **Shutdown.** Once every connection and socket is gone, or the
//!    deadline has passed (then what is left is cut), `run` returns.
//! 9. **Deferred writes.** Output handlers queued for other connections
//!    (`cx.source(key).send_shared`, `broadcast`) is written, one flush per
//!    connection, at most `DEFERRED_FLUSH_BUDGET` connections per turn.
//! 10. **Turn end.** The hooks of [`Reactor::on_turn_end`] run, in the
//!     order they were added: a shard sends its outboxes here, one batch
//!     per target. The turn's duration goes into the histogram.
//!
//! Deferred work is what a callback causes beyond its own source: another
//! connection's watermark notice, a removal and its `on_close`. Running it
//! after the callback returns means no handler is ever re-entered, and an
//! `on_close` never runs in the middle of another callback.
//!
//! Every call into a handler goes through [`guarded`]: a panic resets or
//! removes that handler's source ([`Core::handler_panicked`]) and the loop
//! goes on (the guarantee and its limits are in `handler.rs`). So does
//! every reactor timer's closure (`reactor/timers.rs`). Each such call is
//! also timed for the slow-callback watchdog (`core/observe.rs`).
//!
//! A program with a loop of its own drives the reactor without `run`:
//! it waits on the reactor's descriptor and [`Reactor::next_timeout`]
//! (`reactor/host.rs`), then calls `run_once(Some(Duration::ZERO))`.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};
use mio::{Events, Interest, Poll, Waker};

use crate::conn_state::ConnState;
use crate::connect::ConnectOptions;
use crate::connection::ConnectionOptions;
use crate::core::{Core, Shutdown};
use crate::datagram::{Datagram, DatagramOptions};
use crate::handle::{Command, Handle};
use crate::listener::{Listener, ListenerOptions};
use crate::registry::Registry;
use crate::services::{Deferred, Services, TimerTask};
use crate::source::{Custom, Source};
use crate::sys::{self, DgramSocket, ListenSocket};
use crate::token::WAKER_TOKEN;
use crate::{
    Addr, CloseReason, DatagramHandler, Error, Key, SourceHandler, StreamFactory, StreamHandler, TimerId,
};

mod host;
mod observe;
mod timers;

pub use timers::ReactorTimer;

/// Size of the one read buffer every socket is read into: enough for the
/// largest UDP datagram.
const SCRATCH_LEN: usize = 64 * 1024;

/// Events taken from one poll.
const EVENTS_CAPACITY: usize = 1024;

/// Reads per connection per wakeup (each up to the read buffer's size,
/// [`SCRATCH_LEN`] unless [`Reactor::set_read_buffer`] says more).
const DEFAULT_READ_BUDGET: usize = 4;

/// A single-threaded event loop over a slab of sources.
///
/// An echo server and one client: the reactor runs on this thread, the
/// client on another, which stops the reactor through a [`Handle`] when it
/// is done.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::{BufRead, BufReader, Write};
/// use std::net::{SocketAddr, TcpStream};
/// use std::time::Duration;
/// use evloop::{protocols::echo::Echo, Addr, Reactor};
///
/// /// Sends a line and reads it back.
/// fn client(addr: SocketAddr) -> std::io::Result<String> {
///     let mut stream = TcpStream::connect(addr)?;
///     stream.set_read_timeout(Some(Duration::from_secs(5)))?;
///     stream.write_all(b"hello\n")?;
///     let mut line = String::new();
///     BufReader::new(stream).read_line(&mut line)?;
///     Ok(line)
/// }
///
/// let mut reactor = Reactor::new()?;
/// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Echo)?;
/// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
///
/// let handle = reactor.handle();
/// let thread = std::thread::spawn(move || {
///     let reply = client(addr);
///     handle.stop(); // whatever happened, let `run` return
///     reply
/// });
/// reactor.run()?; // serves every source on this thread until stopped
/// assert_eq!(thread.join().expect("client thread panicked")?, "hello\n");
/// # Ok(())
/// # }
/// ```
pub struct Reactor {
    pub(crate) core: Core,
    events: Events,
    scratch: Box<[u8]>,
    commands: mpsc::Receiver<Command>,
    handle: Handle,
    due: Vec<(TimerId, u64)>,
    /// The closures of the reactor's own timers ([`Reactor::set_timer`]).
    callbacks: timers::Callbacks,
    /// Hooks of [`Reactor::on_start`] not yet run.
    start: Vec<StartHook>,
    /// Step 10's hooks ([`Reactor::on_turn_end`]); empty costs nothing.
    turn_end: Vec<TurnHook>,
    /// The last poll filled the event list: more events may be waiting
    /// (for [`Reactor::next_timeout`]).
    more_events: bool,
    /// When the last turn ended: the poll's wait is counted from there.
    turn_ended: Instant,
}

/// A hook of [`Reactor::on_start`].
type StartHook = Box<dyn FnOnce(&mut Reactor)>;

/// A hook of [`Reactor::on_turn_end`].
type TurnHook = Box<dyn FnMut(&mut Reactor)>;

impl Reactor {
    /// Makes a reactor with its poll, waker and read buffer.
    ///
    /// # Errors
    ///
    /// The poll or its waker could not be created (out of descriptors).
    pub fn new() -> Result<Reactor, Error> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
        let (tx, rx) = mpsc::channel();
        let handle = Handle::new(waker, tx);
        Ok(Reactor {
            core: Core {
                poll,
                sources: Registry::new(),
                services: Services::new(DEFAULT_READ_BUDGET),
                defaults: Rc::new(ConnectionOptions::default()),
                stop_requested: false,
                shutdown: Shutdown::No,
                stale_events: 0,
                spare_fd: None,
                handle: handle.clone(),
            },
            events: Events::with_capacity(EVENTS_CAPACITY),
            scratch: vec![0; SCRATCH_LEN].into_boxed_slice(),
            commands: rx,
            handle,
            due: Vec::new(),
            callbacks: timers::Callbacks::new(),
            start: Vec::new(),
            turn_end: Vec::new(),
            more_events: false,
            turn_ended: Instant::now(),
        })
    }

    /// A handle for other threads: stop, shut down, run a closure here.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Options for outbound connections made from now on.
    pub fn set_connection_defaults(&mut self, options: ConnectionOptions) {
        self.core.defaults = Rc::new(options);
    }

    /// Reads per connection per wakeup before other sources get a turn
    /// (at least 1; default 4 reads of up to 64 KiB).
    pub fn set_read_budget(&mut self, reads: usize) {
        self.core.services.read_budget = reads.max(1);
    }

    /// Size of the one buffer every socket is read into, and so the most
    /// one read takes and one `on_data` call is given of fresh input
    /// (default and least 64 KiB, which the largest UDP datagram needs).
    ///
    /// A server that answers requests has no use for more. A program that
    /// receives bulk data, such as a download client or a proxy's
    /// upstream side, gains from 1 MiB: each read drains more of the
    /// socket, so the kernel sends fewer window updates, and on loopback
    /// each of those runs part of the sender's TCP work on the reader's
    /// core. evloop's load generator takes eight downloads at once about
    /// twice as fast with 1 MiB as with 64 KiB.
    pub fn set_read_buffer(&mut self, bytes: usize) {
        self.scratch = vec![0; bytes.max(SCRATCH_LEN)].into_boxed_slice();
    }

    /// Binds a TCP listener; each accepted connection gets a handler from
    /// `factory`. Default [`ListenerOptions`].
    ///
    /// The first listener of a reactor (TCP or Unix) also makes it hold one
    /// spare descriptor (`/dev/null`). When the process runs out of
    /// descriptors, and the shortage outlasts a 100 ms pause, the spare is
    /// used to accept and reset each waiting connection rather than leave
    /// it hanging in the backlog.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] naming the address (in use, no permission).
    pub fn listen_tcp(
        &mut self,
        addr: SocketAddr,
        factory: impl StreamFactory + 'static,
    ) -> Result<Key, Error> {
        self.listen_tcp_with(addr, ListenerOptions::default(), factory)
    }

    /// Binds a TCP listener with the given options.
    ///
    /// With [`ListenerOptions::reuse_port`], the socket is made with
    /// `SO_REUSEADDR` and `SO_REUSEPORT` before it is bound, so several
    /// reactors (or processes) can each bind a listener to the same
    /// address; the kernel spreads new connections among them. The first
    /// may bind port 0 and the others the port it got:
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use evloop::{protocols::echo::Echo, Addr, ListenerOptions, Reactor};
    ///
    /// let options = ListenerOptions { reuse_port: true, ..ListenerOptions::default() };
    /// let mut first = Reactor::new()?;
    /// let key = first.listen_tcp_with("127.0.0.1:0".parse()?, options.clone(), |_: &Addr| Echo)?;
    /// let addr = first.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
    /// let mut second = Reactor::new()?; // in a real program, on a thread of its own
    /// second.listen_tcp_with(addr, options, |_: &Addr| Echo)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] naming the address (in use by a socket without
    /// `SO_REUSEPORT` or of another user, no permission).
    pub fn listen_tcp_with(
        &mut self,
        addr: SocketAddr,
        options: ListenerOptions,
        factory: impl StreamFactory + 'static,
    ) -> Result<Key, Error> {
        let bind_error = |source| Error::Bind {
            addr: addr.to_string(),
            source,
        };
        let (listener, origin) = if options.reuse_port {
            let listener =
                sys::tcp_listener_reuse_port(addr, crate::listener::BACKLOG).map_err(bind_error)?;
            (listener, Origin::Made)
        } else {
            (TcpListener::bind(addr).map_err(bind_error)?, Origin::Bound)
        };
        let local = listener.local_addr().map_err(bind_error)?;
        self.add_listener(
            ListenSocket::Tcp(listener),
            Addr::Inet(local),
            options,
            Box::new(factory),
            origin,
        )
    }

    /// Serves a TCP listener bound elsewhere: by the program before the
    /// reactor existed, by a parent process, or by a service manager
    /// ([`activation::listen_fds`](crate::activation::listen_fds)). The
    /// socket is made non-blocking; its backlog and options are left as
    /// its creator set them ([`ListenerOptions::reuse_port`] is ignored).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use evloop::{protocols::echo::Echo, Addr, ListenerOptions, Reactor};
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut reactor = Reactor::new()?;
    /// let key = reactor.adopt_tcp_listener(listener, ListenerOptions::default(), |_: &Addr| Echo)?;
    /// assert!(reactor.local_addr(key).and_then(|a| a.as_inet()).is_some());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the socket cannot be made non-blocking, has no
    /// local address, or cannot be registered.
    pub fn adopt_tcp_listener(
        &mut self,
        listener: std::net::TcpListener,
        options: ListenerOptions,
        factory: impl StreamFactory + 'static,
    ) -> Result<Key, Error> {
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        self.add_listener(
            ListenSocket::Tcp(TcpListener::from_std(listener)),
            Addr::Inet(local),
            options,
            Box::new(factory),
            Origin::Adopted,
        )
    }

    /// Takes over a TCP connection accepted elsewhere, typically by
    /// another shard's listener of the same address, and serves it as if
    /// `listener` had accepted it: the same admission as an accepted
    /// connection, so `listener`'s factory makes its handler (or, at
    /// [`ListenerOptions::max_connections`], sends its farewell and closes
    /// it), it counts against that limit, it is among the listener's
    /// [`members`](crate::Context::members), and its handler's `on_open` is
    /// called here. The socket is made non-blocking. This is what a
    /// balanced listener's hand-off runs on the target shard
    /// ([`ListenerOptions::balance`]); the connection is not handed on
    /// again.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]: `listener` is not a TCP listener of this reactor
    /// (`InvalidInput`), the socket cannot be made non-blocking, or the
    /// connection was not admitted (turned away at the limit, the factory
    /// panicked, or it could not be registered); it is closed then.
    pub fn adopt_stream(
        &mut self,
        listener: Key,
        stream: std::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<Key, Error> {
        self.core.adopt_stream(listener, stream, peer)
    }

    /// Serves a Unix stream listener bound elsewhere (see
    /// [`Reactor::adopt_tcp_listener`]). The socket is made non-blocking.
    /// Its file is not evloop's: it is left in place when the listener
    /// closes.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the socket cannot be made non-blocking, has no
    /// local address, or cannot be registered.
    pub fn adopt_unix_listener(
        &mut self,
        listener: std::os::unix::net::UnixListener,
        options: ListenerOptions,
        factory: impl StreamFactory + 'static,
    ) -> Result<Key, Error> {
        listener.set_nonblocking(true)?;
        let local = Addr::from_unix(&listener.local_addr()?);
        self.add_listener(
            ListenSocket::Unix(UnixListener::from_std(listener)),
            local,
            options,
            Box::new(factory),
            Origin::Adopted,
        )
    }

    /// Binds a Unix stream listener at `path`. A stale socket file left by
    /// a process that died (nobody accepts on it) is replaced; the file is
    /// removed when the listener closes.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] naming the path (in use by a live server, no
    /// permission, no such directory).
    pub fn listen_unix(
        &mut self,
        path: impl AsRef<Path>,
        factory: impl StreamFactory + 'static,
    ) -> Result<Key, Error> {
        self.listen_unix_with(path, ListenerOptions::default(), factory)
    }

    /// Binds a Unix stream listener with the given options.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] naming the path.
    pub fn listen_unix_with(
        &mut self,
        path: impl AsRef<Path>,
        options: ListenerOptions,
        factory: impl StreamFactory + 'static,
    ) -> Result<Key, Error> {
        let path = path.as_ref();
        let bind_error = |source| Error::Bind {
            addr: path.display().to_string(),
            source,
        };
        remove_stale_socket(path);
        let listener = UnixListener::bind(path).map_err(bind_error)?;
        let local = Addr::Unix(Some(path.to_path_buf()));
        self.add_listener(
            ListenSocket::Unix(listener),
            local,
            options,
            Box::new(factory),
            Origin::Bound,
        )
    }

    fn add_listener(
        &mut self,
        socket: ListenSocket,
        local: Addr,
        options: ListenerOptions,
        factory: Box<dyn StreamFactory>,
        origin: Origin,
    ) -> Result<Key, Error> {
        let key = self.core.sources.next_key();
        if origin == Origin::Bound {
            socket.raise_backlog(crate::listener::BACKLOG);
        }
        self.core.reserve_spare_fd();
        let mut listener = Listener::new(socket, local, options, factory);
        if origin == Origin::Adopted {
            // Not ours to remove: whoever bound the path owns the file.
            listener.unix_path = None;
        }
        self.core
            .poll
            .registry()
            .register(listener.source(), key.to_token(), Interest::READABLE)?;
        if let Some(shards) = crate::shard::Shards::current() {
            listener.join_balance(shards.id(), key);
        }
        info!("{key}: listening on {}", listener.local);
        self.core
            .sources
            .insert(Source::Listener(Box::new(listener)))
            .map_err(|_| Error::Full)
    }

    /// Binds a UDP socket served by `handler`. Default
    /// [`DatagramOptions`].
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] naming the address.
    pub fn bind_udp(
        &mut self,
        addr: SocketAddr,
        handler: impl DatagramHandler + 'static,
    ) -> Result<Key, Error> {
        self.bind_udp_with(addr, DatagramOptions::default(), handler)
    }

    /// Binds a UDP socket with the given options, served by `handler`.
    /// With [`DatagramOptions::reuse_port`], several sockets (one per
    /// reactor) can bind the same address (example on
    /// [`DatagramOptions`]).
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] naming the address.
    pub fn bind_udp_with(
        &mut self,
        addr: SocketAddr,
        options: DatagramOptions,
        handler: impl DatagramHandler + 'static,
    ) -> Result<Key, Error> {
        let bind_error = |source| Error::Bind {
            addr: addr.to_string(),
            source,
        };
        let socket = if options.reuse_port {
            sys::udp_socket_reuse_port(addr).map_err(bind_error)?
        } else {
            UdpSocket::bind(addr).map_err(bind_error)?
        };
        let local = socket.local_addr().map_err(bind_error)?;
        self.add_datagram(DgramSocket::Udp(socket), Addr::Inet(local), Box::new(handler))
    }

    /// Serves a UDP socket bound elsewhere (see
    /// [`Reactor::adopt_tcp_listener`]). The socket is made non-blocking;
    /// its options are left as they are.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the socket cannot be made non-blocking, has no
    /// local address, or cannot be registered.
    pub fn adopt_udp(
        &mut self,
        socket: std::net::UdpSocket,
        handler: impl DatagramHandler + 'static,
    ) -> Result<Key, Error> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        self.add_datagram(
            DgramSocket::Udp(UdpSocket::from_std(socket)),
            Addr::Inet(local),
            Box::new(handler),
        )
    }

    /// Binds a Unix datagram socket at `path`, served by `handler`. The
    /// file is removed when the socket closes.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] naming the path.
    pub fn bind_unix_datagram(
        &mut self,
        path: impl AsRef<Path>,
        handler: impl DatagramHandler + 'static,
    ) -> Result<Key, Error> {
        let path = path.as_ref();
        let bind_error = |source| Error::Bind {
            addr: path.display().to_string(),
            source,
        };
        let socket = UnixDatagram::bind(path).map_err(bind_error)?;
        let local = Addr::Unix(Some(path.to_path_buf()));
        self.add_datagram(DgramSocket::Unix(socket), local, Box::new(handler))
    }

    fn add_datagram(
        &mut self,
        socket: DgramSocket,
        local: Addr,
        handler: Box<dyn DatagramHandler>,
    ) -> Result<Key, Error> {
        let key = self.core.sources.next_key();
        let mut dgram = Datagram::new(socket, local, handler);
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.core
            .poll
            .registry()
            .register(dgram.source(), key.to_token(), interest)?;
        info!("{key}: datagrams on {}", dgram.local);
        self.core
            .sources
            .insert(Source::Datagram(Box::new(dgram)))
            .map_err(|_| Error::Full)
    }

    /// Registers any mio source, owned by its handler, for `interest`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the source cannot be registered (for instance a
    /// regular file, which epoll does not take).
    pub fn register(
        &mut self,
        handler: impl SourceHandler + 'static,
        interest: Interest,
    ) -> Result<Key, Error> {
        let key = self.core.sources.next_key();
        let mut handler: Box<dyn SourceHandler> = Box::new(handler);
        self.core
            .poll
            .registry()
            .register(handler.source(), key.to_token(), interest)?;
        let custom = Custom {
            handler: Some(handler),
            timers: Vec::new(),
            revisit: false,
        };
        self.core
            .sources
            .insert(Source::Custom(Box::new(custom)))
            .map_err(|_| Error::Full)
    }

    /// Calls the custom source `key`'s `on_revisit` next turn, as its
    /// handler would ask through [`Context::revisit`](crate::Context::revisit):
    /// for a source whose first callback must come without an event
    /// (`evloop::stdin` on a regular file). `false` if `key` is not a
    /// custom source.
    pub(crate) fn revisit(&mut self, key: Key) -> bool {
        self.core.revisit_source(key)
    }

    /// Opens an outbound TCP connection served by `handler` (see
    /// [`Context::connect`](crate::Context::connect)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the socket cannot be created or registered.
    pub fn connect_tcp(
        &mut self,
        addr: SocketAddr,
        handler: impl StreamHandler + 'static,
    ) -> Result<Key, Error> {
        Ok(self
            .core
            .connect_tcp(addr, &ConnectOptions::default(), Box::new(handler))?)
    }

    /// Opens an outbound TCP connection with `options` (a connect timeout,
    /// the connection's own options, socket options): see
    /// [`ConnectOptions`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the socket cannot be created, configured or
    /// registered.
    pub fn connect_tcp_with(
        &mut self,
        addr: SocketAddr,
        options: &ConnectOptions,
        handler: impl StreamHandler + 'static,
    ) -> Result<Key, Error> {
        Ok(self.core.connect_tcp(addr, options, Box::new(handler))?)
    }

    /// Opens an outbound TCP connection that speaks TLS, served by
    /// `handler` (see [`Context::connect_tls`](crate::Context::connect_tls)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the socket cannot be created or registered, or
    /// `server_name` is neither a DNS name nor an IP address.
    pub fn connect_tls(
        &mut self,
        addr: SocketAddr,
        tls: &crate::tls::ClientTls,
        server_name: &str,
        handler: impl StreamHandler + 'static,
    ) -> Result<Key, Error> {
        let options = ConnectOptions::new().tls(tls, server_name);
        Ok(self.core.connect_tcp(addr, &options, Box::new(handler))?)
    }

    /// Opens an outbound Unix stream connection served by `handler`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the socket cannot be created, connected or
    /// registered.
    pub fn connect_unix(
        &mut self,
        path: impl AsRef<Path>,
        handler: impl StreamHandler + 'static,
    ) -> Result<Key, Error> {
        Ok(self.core.connect_unix(path.as_ref(), Box::new(handler))?)
    }

    /// The address a source is bound to: a listener's or datagram socket's
    /// (with the real port after binding `:0`), a connection's local end.
    pub fn local_addr(&self, key: Key) -> Option<Addr> {
        self.core.sources.get(key).and_then(Source::local_addr)
    }

    /// Whether `key` still names a source.
    pub fn contains(&self, key: Key) -> bool {
        self.core.sources.contains(key)
    }

    /// How many sources are registered (listeners, connections, sockets,
    /// custom sources).
    pub fn source_count(&self) -> usize {
        self.core.sources.len()
    }

    /// How many connections a listener has open.
    pub fn connection_count(&self, listener: Key) -> usize {
        match self.core.sources.get(listener) {
            Some(Source::Listener(l)) => l.members.len(),
            _ => 0,
        }
    }

    /// How many timers are pending (handlers' and the reactor's own).
    pub fn timer_count(&self) -> usize {
        self.core.services.timers.len()
    }

    /// How many events were dropped because the source they named was gone
    /// (closed earlier in the same batch, its slot perhaps reused).
    pub fn stale_events(&self) -> u64 {
        self.core.stale_events
    }

    /// The state of a connection, if `key` names one.
    pub fn connection_state(&self, key: Key) -> Option<ConnState> {
        self.core.stream_ref(key).map(|c| c.state.public())
    }

    /// Sends bytes to a connection. Returns whether it took them.
    pub fn send_to(&mut self, key: Key, data: &[u8]) -> bool {
        let sent = self.core.send_slice(key, data);
        self.core.run_deferred();
        sent
    }

    /// Queues a shared payload on connection `key`, written once at the
    /// end of the turn (step 9) together with everything else sent to it
    /// in the turn, as [`SourceRef::send_shared`](crate::SourceRef::send_shared)
    /// does for another connection than the caller's. Meant for a
    /// [`Handle::run`] closure or a shard's message (step 7): a fan-out
    /// costs one write per receiver per turn. Returns whether it was taken
    /// (a connection that is gone, or over its output cap, does not take it).
    pub fn send_shared_to(&mut self, key: Key, data: &Rc<[u8]>) -> bool {
        let sent = self
            .core
            .send_chunk_deferred(key, crate::write_queue::Chunk::Shared(Rc::clone(data)));
        self.core.run_deferred();
        sent
    }

    /// Sends one datagram from datagram socket `socket` to `to`, as
    /// [`SourceRef::send_datagram`](crate::SourceRef::send_datagram) does.
    /// Returns `false` if it was dropped.
    pub fn send_datagram_to(&mut self, socket: Key, to: &Addr, data: &[u8]) -> bool {
        let sent = self.core.send_datagram(socket, to, data);
        self.core.run_deferred();
        sent
    }

    /// Sends one shared payload to every connection of a listener. Returns
    /// how many took it.
    pub fn broadcast(&mut self, listener: Key, data: &Rc<[u8]>) -> usize {
        let sent = self.core.broadcast(listener, data, None);
        self.core.run_deferred();
        sent
    }

    /// Resumes delivering input to connection `key`'s handler, as
    /// [`SourceRef::resume_reading`](crate::SourceRef::resume_reading)
    /// does from a callback: what arrived meanwhile comes first. Returns
    /// `false` if it is not an open connection.
    pub fn resume_reading(&mut self, key: Key) -> bool {
        let open = self.core.stream_ref(key).is_some();
        self.core.set_read_paused(key, false);
        self.core.run_deferred();
        open
    }

    /// Closes a source: a connection after flushing, anything else at once.
    pub fn close(&mut self, key: Key) {
        self.core.close_source(key);
        self.core.run_deferred();
    }

    /// Makes `run` return at the end of the current turn.
    pub fn stop(&mut self) {
        self.core.stop_requested = true;
    }

    /// Starts a graceful shutdown: listeners close at once (no new
    /// connections), every handler gets `on_shutdown` (by default: close
    /// after flushing), and `run` returns when every connection and socket
    /// is gone, or when `timeout` has passed, cutting what is left.
    ///
    /// Output already queued is flushed; input not yet read when a
    /// connection closes is discarded, as for any close. A handler that
    /// wants to answer requests still in flight overrides `on_shutdown`.
    pub fn shutdown(&mut self, timeout: Duration) {
        self.core.begin_shutdown(timeout);
    }

    /// Whether a graceful shutdown has begun and not yet ended.
    pub fn is_shutting_down(&self) -> bool {
        self.core.shutdown != Shutdown::No
    }

    /// Adds a hook that runs once at the end of every turn, after the
    /// deferred writes (step 10), with the reactor; hooks run in the order
    /// they were added, each followed by the deferred work it caused. A
    /// hook added by a hook runs from the next turn on. This is where a
    /// shard sends the messages of the turn ([`crate::shard`]), and where
    /// anything else that batches per turn can flush.
    ///
    /// A hook runs every turn, for the reactor's life: it should return at
    /// once when it has nothing to do. Like a [`Handle::run`] closure, and
    /// unlike a handler, a hook that panics is not contained: the panic
    /// leaves `run`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// use evloop::Reactor;
    ///
    /// let mut reactor = Reactor::new()?;
    /// let turns = Rc::new(Cell::new(0));
    /// let counter = Rc::clone(&turns);
    /// reactor.on_turn_end(move |_reactor| counter.set(counter.get() + 1));
    /// reactor.run_once(Some(Duration::ZERO))?;
    /// reactor.run_once(Some(Duration::ZERO))?;
    /// assert_eq!(turns.get(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_turn_end(&mut self, hook: impl FnMut(&mut Reactor) + 'static) {
        self.turn_end.push(Box::new(hook));
    }

    /// Adds a hook that runs once, with the reactor, at the start of the
    /// first turn of the first [`run`](Reactor::run) or
    /// [`run_once`](Reactor::run_once), before the poll; hooks run in the
    /// order they were added, each followed by the deferred work it
    /// caused. A hook added once the loop has started runs at the start of
    /// the next turn. This is where a program sets up what needs the loop
    /// running: its first timers, its first outbound connections, an
    /// announcement that it is serving.
    ///
    /// Like an [`on_turn_end`](Reactor::on_turn_end) hook and a
    /// [`Handle::run`] closure, a hook that panics is not contained: the
    /// panic leaves `run`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::{cell::RefCell, rc::Rc, time::Duration};
    /// use evloop::Reactor;
    ///
    /// let mut reactor = Reactor::new()?;
    /// let log = Rc::new(RefCell::new(Vec::new()));
    /// for name in ["first", "second"] {
    ///     let log = Rc::clone(&log);
    ///     reactor.on_start(move |reactor| {
    ///         log.borrow_mut().push(name);
    ///         if name == "second" {
    ///             reactor.stop(); // `run` returns at the end of the first turn
    ///         }
    ///     });
    /// }
    /// reactor.run()?;
    /// reactor.run_once(Some(Duration::ZERO))?; // hooks run once, not per run
    /// assert_eq!(*log.borrow(), ["first", "second"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_start(&mut self, hook: impl FnOnce(&mut Reactor) + 'static) {
        self.start.push(Box::new(hook));
    }

    /// Runs turns until [`Reactor::stop`] or a finished shutdown.
    ///
    /// # Errors
    ///
    /// Only a failure of the loop itself ([`Error::Io`] from the poll).
    /// Errors of single connections close those connections and are logged.
    pub fn run(&mut self) -> Result<(), Error> {
        self.core.stop_requested = false;
        while !self.core.stop_requested {
            self.run_once(None)?;
        }
        self.core.stop_requested = false;
        Ok(())
    }

    /// Runs one turn of the loop, waiting at most `timeout` (or until the
    /// next timer) for events.
    ///
    /// With `run_once` the caller owns the loop and decides when it ends:
    /// here, once a client thread is done and its connection is gone.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::{Read, Write};
    /// use std::net::TcpStream;
    /// use std::time::Duration;
    /// use evloop::{protocols::echo::Echo, Addr, Reactor};
    ///
    /// let mut reactor = Reactor::new()?;
    /// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Echo)?;
    /// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
    ///
    /// let client = std::thread::spawn(move || -> std::io::Result<[u8; 4]> {
    ///     let mut stream = TcpStream::connect(addr)?;
    ///     stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    ///     stream.write_all(b"ping")?;
    ///     let mut reply = [0; 4];
    ///     stream.read_exact(&mut reply)?;
    ///     Ok(reply) // dropping the stream sends FIN
    /// });
    /// // The timeout brings each turn back here to check.
    /// while !client.is_finished() || reactor.connection_count(key) > 0 {
    ///     reactor.run_once(Some(Duration::from_millis(10)))?;
    /// }
    /// assert_eq!(&client.join().expect("client thread panicked")?, b"ping");
    /// assert_eq!(reactor.source_count(), 1); // the listener alone
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the poll fails.
    pub fn run_once(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        self.run_start_hooks();
        let timeout = self.poll_timeout(timeout);
        match self.core.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => self.events.clear(),
            Err(err) => return Err(Error::Io(err)),
        }
        let count = self.events.iter().count();
        self.more_events = count >= self.events.capacity();
        let now = Instant::now();
        self.core.services.now = now;
        self.core.services.turn += 1;
        self.core.begin_turn(now, self.turn_ended);
        let mut woken = false;
        for event in self.events.iter() {
            if event.token() == WAKER_TOKEN {
                woken = true;
                continue;
            }
            self.core.dispatch(event, &mut self.scratch);
            self.core.run_deferred();
        }
        self.core.services.counters.events += (count - usize::from(woken)) as u64;
        self.serve_ready_list();
        self.expire_timers();
        if woken {
            self.run_commands();
        }
        self.advance_shutdown();
        // Step 9: output handlers queued for other connections goes out
        // now, once per connection, however many sends reached it.
        self.core.flush_deferred_writes();
        self.core.run_deferred();
        // Step 10: the end-of-turn hooks, such as a shard's outboxes.
        self.end_turn();
        self.turn_ended = Instant::now();
        self.core.end_turn(self.turn_ended);
        Ok(())
    }

    /// Before step 1: the hooks of `on_start` not yet run, in the order
    /// they were added.
    fn run_start_hooks(&mut self) {
        if self.start.is_empty() {
            return;
        }
        for hook in std::mem::take(&mut self.start) {
            hook(self);
            self.core.run_deferred();
        }
    }

    /// Step 1: how long the poll may wait.
    fn poll_timeout(&mut self, cap: Option<Duration>) -> Option<Duration> {
        if !self.start.is_empty()
            || !self.core.services.ready.is_empty()
            || !self.core.services.deferred.is_empty()
            || !self.core.services.pending_flush.is_empty()
            || self.core.stop_requested
        {
            return Some(Duration::ZERO);
        }
        let mut deadline = self.core.services.timers.next_deadline();
        if let Shutdown::Requested { .. } = self.core.shutdown {
            return Some(Duration::ZERO);
        }
        if let Shutdown::Draining { deadline: end } = self.core.shutdown {
            deadline = Some(deadline.map_or(end, |d| d.min(end)));
        }
        let until = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match (until, cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Step 5: serve each source on the ready list once.
    fn serve_ready_list(&mut self) {
        for _ in 0..self.core.services.ready.len() {
            let Some(key) = self.core.services.ready.pop_front() else {
                break;
            };
            match self.core.sources.get(key) {
                Some(Source::Stream(_)) => self.core.revisit_stream(key, &mut self.scratch),
                Some(Source::Listener(_)) => self.core.accept_ready(key),
                Some(Source::Datagram(_)) => self.core.receive_datagrams(key, &mut self.scratch),
                Some(Source::Custom(_)) => self.core.revisit_custom(key),
                None => {}
            }
            self.core.run_deferred();
        }
    }

    /// Step 6: fire every timer due now.
    fn expire_timers(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.core
            .services
            .timers
            .collect_due(self.core.services.now, &mut due);
        for &(id, seq) in &due {
            match self.core.services.timers.take_due(id, seq) {
                None => continue, // cancelled or reset earlier in the pass
                Some(TimerTask::Reactor) => self.fire_reactor_timer(id),
                Some(task) => self.core.fire_timer(id, task),
            }
            self.core.run_deferred();
        }
        due.clear();
        self.due = due;
    }

    /// Step 7: commands from other threads.
    fn run_commands(&mut self) {
        self.handle.take_wakeup();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Stop => self.core.stop_requested = true,
                Command::Shutdown(timeout) => self.core.begin_shutdown(timeout),
                Command::Run(f) => {
                    let started = self.core.callback_start();
                    f(self);
                    self.core.callback_done(started, None, "Handle::run");
                }
            }
            self.core.run_deferred();
        }
    }

    /// Step 10: run the hooks of `on_turn_end`, in the order they were added.
    fn end_turn(&mut self) {
        if self.turn_end.is_empty() {
            return;
        }
        let mut hooks = std::mem::take(&mut self.turn_end);
        for hook in &mut hooks {
            let started = self.core.callback_start();
            hook(self);
            self.core.callback_done(started, None, "on_turn_end");
            self.core.run_deferred();
        }
        hooks.append(&mut self.turn_end); // added by a hook: from next turn
        self.turn_end = hooks;
    }

    /// Step 8: tell handlers of a requested shutdown; end a finished one.
    fn advance_shutdown(&mut self) {
        match self.core.shutdown {
            Shutdown::No => {}
            Shutdown::Requested { deadline } => {
                self.core.shutdown = Shutdown::Draining { deadline };
                self.core.tell_shutdown();
                self.core.run_deferred();
                self.advance_shutdown();
            }
            Shutdown::Draining { deadline } => {
                let busy = self
                    .core
                    .sources
                    .iter()
                    .any(|(_, s)| !matches!(s, Source::Custom(_)));
                if busy && Instant::now() < deadline {
                    return;
                }
                if busy {
                    warn!("shutdown deadline passed: cutting what is left");
                }
                for key in self.core.sources.keys() {
                    match self.core.sources.get(key) {
                        Some(Source::Stream(_)) => self.core.abort_stream_with(key, CloseReason::Shutdown),
                        _ => self
                            .core
                            .services
                            .deferred
                            .push_back(Deferred::Remove(key, CloseReason::Shutdown)),
                    }
                }
                self.core.run_deferred();
                // Timers hold no shutdown open, and outlive none.
                self.cancel_reactor_timers();
                info!("shutdown complete");
                self.core.shutdown = Shutdown::No;
                self.core.stop_requested = true;
            }
        }
    }
}

/// Where a listening socket came from, and so what evloop may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Bound by std or mio: its backlog is raised to
    /// [`BACKLOG`](crate::listener::BACKLOG), and a Unix socket file is
    /// removed when the listener closes.
    Bound,
    /// Made by evloop with `socket2`, listening with that backlog already.
    Made,
    /// Bound elsewhere: its backlog and its file are its creator's.
    Adopted,
}

/// Removes a Unix socket file nobody is accepting on (left by a process
/// that died), so that binding the path works again. A live server's
/// socket, or any other kind of file, is left alone.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
        debug!("removing stale socket file {}", path.display());
        let _ = std::fs::remove_file(path);
    }
}
