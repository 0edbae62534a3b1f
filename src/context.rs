//! [`Context`]: what a handler may do during a callback.
//!
//! A context names the source whose handler is running ([`Context::key`]) and
//! reaches the whole reactor: send, close, set timers, connect out, stop the
//! loop.
//!
//! One rule for "this source" and "another": a method of [`Context`] acts on
//! the source whose handler is running; the same action on another source,
//! named by its key, is a method of [`Context::source`]'s [`SourceRef`]:
//! `cx.send(data)` here, `cx.source(key).send(data)` there.
//!
//! Always true:
//! - nothing here blocks; sends write what the socket takes at once and
//!   queue the rest;
//! - an operation on a key that is gone does nothing and says so (`false`),
//!   it never panics; so does an operation that does not fit the source
//!   (`send` on a datagram socket);
//! - a connection closed through the context gets its `on_close` after the
//!   current callback returns, never in the middle of it.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::conn_state::ConnState;
use crate::core::Core;
use crate::write_queue::Chunk;
use crate::{Addr, ConnectOptions, Key, StreamHandler, TimerId};

/// The handle a callback gets on its source and on the reactor.
///
/// A session with an idle timeout: [`Context::send`] and [`Context::close`],
/// a timer that each message pushes back, and [`Context::stop`] to end the
/// example once its one connection is gone.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::{Read, Write};
/// use std::net::{Shutdown, TcpStream};
/// use std::time::Duration;
/// use evloop::{Addr, CloseReason, Context, Reactor, StreamHandler, TimerId};
///
/// const IDLE: Duration = Duration::from_secs(10);
///
/// /// Answers `ok` to each message; says `bye` when the peer is done, or
/// /// `idle` after ten quiet seconds, and closes.
/// struct Session(Option<TimerId>);
///
/// impl StreamHandler for Session {
///     fn on_open(&mut self, cx: &mut Context<'_>) {
///         self.0 = cx.set_timer(IDLE);
///     }
///
///     fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
///         if let Some(id) = self.0 {
///             cx.reset_timer(id, IDLE); // activity pushes the deadline back
///         }
///         cx.send(b"ok\n");
///         data.len()
///     }
///
///     fn on_timer(&mut self, cx: &mut Context<'_>, _: TimerId) {
///         cx.send(b"idle\n");
///         cx.close(); // flushes what is queued, then sends FIN
///     }
///
///     fn on_read_closed(&mut self, cx: &mut Context<'_>) {
///         if let Some(id) = self.0.take() {
///             cx.cancel_timer(id);
///         }
///         cx.send(b"bye\n");
///         cx.close();
///     }
///
///     fn on_close(&mut self, cx: &mut Context<'_>, _: &CloseReason) {
///         cx.stop();
///     }
/// }
///
/// let mut reactor = Reactor::new()?;
/// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Session(None))?;
/// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
///
/// // The kernel completes the connection and holds the bytes until the
/// // reactor runs.
/// let mut client = TcpStream::connect(addr)?;
/// client.set_read_timeout(Some(Duration::from_secs(5)))?;
/// client.write_all(b"hello")?;
/// client.shutdown(Shutdown::Write)?;
/// reactor.run()?;
/// let mut transcript = String::new();
/// client.read_to_string(&mut transcript)?;
/// assert_eq!(transcript, "ok\nbye\n");
/// # Ok(())
/// # }
/// ```
pub struct Context<'a> {
    core: &'a mut Core,
    key: Key,
}

impl<'a> Context<'a> {
    pub(crate) fn new(core: &'a mut Core, key: Key) -> Self {
        Context { core, key }
    }

    /// The reactor's state, to read.
    pub(crate) fn core(&self) -> &Core {
        self.core
    }

    /// The key of the source whose handler is running: a connection id
    /// that no later connection will ever have.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The time this turn of the loop started. Cheaper than
    /// `Instant::now()` and the same for every callback of the turn.
    pub fn now(&self) -> Instant {
        self.core.now()
    }

    /// The peer of this connection (`None` for other kinds of source).
    pub fn peer_addr(&self) -> Option<&Addr> {
        self.core.stream_ref(self.key).map(|c| &c.peer)
    }

    /// The local address of this source (a system call for connections).
    pub fn local_addr(&self) -> Option<Addr> {
        self.core.local_addr(self.key)
    }

    /// The listener that accepted this connection, if it was accepted.
    pub fn listener(&self) -> Option<Key> {
        self.core
            .stream_ref(self.key)
            .and_then(|c| c.listener)
            .map(|(l, _)| l)
    }

    /// The state of this connection (`None` for other kinds of source).
    pub fn state(&self) -> Option<ConnState> {
        self.core.stream_ref(self.key).map(|c| c.state.public())
    }

    /// Bytes of output held in memory for this connection.
    pub fn queued_bytes(&self) -> usize {
        self.core.stream_ref(self.key).map_or(0, |c| c.queue.buffered())
    }

    /// Whether this connection's queued output is above its high watermark
    /// (and has not yet drained to the low one).
    pub fn is_above_high_water(&self) -> bool {
        self.core.stream_ref(self.key).is_some_and(|c| c.above_high_water)
    }

    /// Sends bytes on this connection: written at once if nothing is
    /// queued, the rest copied into the queue. Returns `false` if the
    /// connection no longer takes output (closing, closed, or over its cap
    /// with [`crate::OverflowPolicy::Drop`]).
    pub fn send(&mut self, data: &[u8]) -> bool {
        self.core.send_slice(self.key, data)
    }

    /// Sends an owned buffer on this connection; queued without a copy.
    pub fn send_vec(&mut self, data: Vec<u8>) -> bool {
        self.core.send_chunk(self.key, Chunk::Owned(data))
    }

    /// Sends a shared buffer on this connection; queued by reference, so
    /// one payload can sit in many queues at the cost of one.
    pub fn send_shared(&mut self, data: &Rc<[u8]>) -> bool {
        self.core.send_chunk(self.key, Chunk::Shared(Rc::clone(data)))
    }

    /// Sends `len` bytes of `file` from `offset` on this connection, with
    /// `sendfile(2)` where possible: the bytes go from the page cache to the
    /// socket without passing through this process, and the queue holds
    /// only the region. If the file turns out shorter, the connection fails
    /// rather than send less than promised.
    pub fn send_file(&mut self, file: &Rc<File>, offset: u64, len: u64) -> bool {
        let chunk = Chunk::File {
            file: Rc::clone(file),
            offset,
            len,
        };
        self.core.send_chunk(self.key, chunk)
    }

    /// Sends an owned buffer and then `len` bytes of `file` from `offset`,
    /// queued together: a response head and its body. On TCP the buffer is
    /// written with `MSG_MORE`, so a head and a small body leave in one
    /// segment rather than two. Returns `false` as [`Context::send`] does.
    pub fn send_vec_then_file(&mut self, data: Vec<u8>, file: &Rc<File>, offset: u64, len: u64) -> bool {
        let region = Chunk::File {
            file: Rc::clone(file),
            offset,
            len,
        };
        self.core.send_chunks(self.key, [Chunk::Owned(data), region])
    }

    /// Sends one shared payload to every connection of this connection's
    /// listener, except `skip`. Each receiver queues a reference, not a
    /// copy, written at the end of the turn like [`SourceRef::send_shared`].
    /// Returns how many took it.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::{BufRead, BufReader, Write};
    /// use std::net::TcpStream;
    /// use std::rc::Rc;
    /// use std::time::Duration;
    /// use evloop::{Addr, Context, Reactor, StreamHandler};
    ///
    /// /// Passes each message on to every other connection of the listener.
    /// struct Relay;
    ///
    /// impl StreamHandler for Relay {
    ///     fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
    ///         let message: Rc<[u8]> = Rc::from(data);
    ///         let receivers = cx.broadcast(&message, Some(cx.key()));
    ///         cx.send(format!("relayed to {receivers}\n").as_bytes());
    ///         cx.stop(); // one message is all this example needs
    ///         data.len()
    ///     }
    /// }
    ///
    /// let mut reactor = Reactor::new()?;
    /// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Relay)?;
    /// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
    ///
    /// // Both connect, and `a` speaks, before the reactor runs: the kernel
    /// // holds the connections and the bytes until it accepts and reads.
    /// let mut a = TcpStream::connect(addr)?;
    /// let b = TcpStream::connect(addr)?;
    /// a.write_all(b"hi all\n")?;
    /// reactor.run()?;
    ///
    /// let read_line = |stream: &TcpStream| -> std::io::Result<String> {
    ///     stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    ///     let mut line = String::new();
    ///     BufReader::new(stream).read_line(&mut line)?;
    ///     Ok(line)
    /// };
    /// assert_eq!(read_line(&a)?, "relayed to 1\n");
    /// assert_eq!(read_line(&b)?, "hi all\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn broadcast(&mut self, data: &Rc<[u8]>, skip: Option<Key>) -> usize {
        match self.listener() {
            Some(listener) => self.core.broadcast(listener, data, skip),
            None => 0,
        }
    }

    /// The connections of this connection's listener, this one included.
    pub fn members(&self) -> &[Key] {
        match self.listener() {
            Some(listener) => self.core.members(listener),
            None => &[],
        }
    }

    /// Sends one shared payload to every connection of `listener` (any
    /// listener of this reactor, not only this connection's), except
    /// `skip`, as [`Context::broadcast`] does. Works from every kind of
    /// source: a timer, stdin or a pipe can feed a listener's connections.
    /// Returns how many took it; 0 if `listener` is not a listener.
    ///
    /// An announcer: what is said on the `control` listener goes to every
    /// connection of the `public` one.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::{Read, Write};
    /// use std::net::TcpStream;
    /// use std::rc::Rc;
    /// use evloop::{Addr, Context, Key, Reactor, StreamHandler};
    ///
    /// struct Listen;
    /// impl StreamHandler for Listen {
    ///     fn on_data(&mut self, _: &mut Context<'_>, data: &[u8]) -> usize {
    ///         data.len()
    ///     }
    /// }
    ///
    /// struct Announce(Key);
    /// impl StreamHandler for Announce {
    ///     fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
    ///         let reached = cx.broadcast_to(self.0, &Rc::from(data), None);
    ///         cx.send(format!("{reached}\n").as_bytes());
    ///         cx.stop();
    ///         data.len()
    ///     }
    /// }
    ///
    /// let mut reactor = Reactor::new()?;
    /// let public = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Listen)?;
    /// let control = reactor.listen_tcp("127.0.0.1:0".parse()?, move |_: &Addr| Announce(public))?;
    /// let inet = |key| reactor.local_addr(key).and_then(|a| a.as_inet()).expect("TCP");
    /// let (public_addr, control_addr) = (inet(public), inet(control));
    ///
    /// let mut member = TcpStream::connect(public_addr)?;
    /// reactor.run_once(None)?; // accepts the member
    /// let mut operator = TcpStream::connect(control_addr)?;
    /// operator.write_all(b"closing at six\n")?;
    /// reactor.run()?;
    /// let mut heard = [0; 15];
    /// member.read_exact(&mut heard)?;
    /// assert_eq!(&heard, b"closing at six\n");
    /// let mut reached = [0; 2];
    /// operator.read_exact(&mut reached)?;
    /// assert_eq!(&reached, b"1\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn broadcast_to(&mut self, listener: Key, data: &Rc<[u8]>, skip: Option<Key>) -> usize {
        self.core.broadcast(listener, data, skip)
    }

    /// The connections of `listener`, in the order they were accepted.
    pub fn members_of(&self, listener: Key) -> &[Key] {
        self.core.members(listener)
    }

    /// This connection's socket, for options evloop does not name
    /// (`socket2::SockRef::from(&fd)` sets them safely); `None` for other
    /// kinds of source. The descriptor stays the reactor's: do not read,
    /// write or close it.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::net::TcpStream;
    /// use std::time::Duration;
    /// use evloop::{Addr, Context, Reactor, StreamHandler};
    ///
    /// /// Asks the kernel to probe an idle peer, so that a vanished one is
    /// /// noticed.
    /// struct KeptAlive;
    ///
    /// impl StreamHandler for KeptAlive {
    ///     fn on_open(&mut self, cx: &mut Context<'_>) {
    ///         if let Some(fd) = cx.fd() {
    ///             let socket = socket2::SockRef::from(&fd);
    ///             let probes = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    ///             let set = socket.set_tcp_keepalive(&probes);
    ///             assert!(set.is_ok() && socket.keepalive().unwrap_or(false));
    ///         }
    ///         cx.stop();
    ///     }
    ///
    ///     fn on_data(&mut self, _: &mut Context<'_>, data: &[u8]) -> usize {
    ///         data.len()
    ///     }
    /// }
    ///
    /// let mut reactor = Reactor::new()?;
    /// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| KeptAlive)?;
    /// let _client = TcpStream::connect(reactor.local_addr(key).and_then(|a| a.as_inet()).expect("TCP"))?;
    /// reactor.run()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.core.stream_ref(self.key).map(|c| c.stream.as_fd())
    }

    /// A handle on this reactor, for a thread that will come back with
    /// [`crate::Handle::run`] (a blocking lookup, a computation), or for
    /// [`crate::Handle::resolve`]. The thread names the connection by its
    /// key: if it closed meanwhile, sends to it do nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::{Read, Write};
    /// use std::net::TcpStream;
    /// use evloop::{Addr, Context, Reactor, StreamHandler};
    ///
    /// /// Sums the numbers of a line on another thread.
    /// struct Summer;
    ///
    /// impl StreamHandler for Summer {
    ///     fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
    ///         let line = String::from_utf8_lossy(data).into_owned();
    ///         let (key, handle) = (cx.key(), cx.handle());
    ///         std::thread::spawn(move || {
    ///             let sum: u64 = line.split_whitespace().filter_map(|n| n.parse::<u64>().ok()).sum();
    ///             handle.run(move |reactor| {
    ///                 reactor.send_to(key, format!("{sum}\n").as_bytes());
    ///                 reactor.stop();
    ///             });
    ///         });
    ///         data.len()
    ///     }
    /// }
    ///
    /// let mut reactor = Reactor::new()?;
    /// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Summer)?;
    /// let mut client = TcpStream::connect(reactor.local_addr(key).and_then(|a| a.as_inet()).expect("TCP"))?;
    /// client.write_all(b"1 2 39\n")?;
    /// reactor.run()?;
    /// let mut answer = [0; 3];
    /// client.read_exact(&mut answer)?;
    /// assert_eq!(&answer, b"42\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn handle(&self) -> crate::Handle {
        self.core.handle.clone()
    }

    /// Closes this source. A connection first flushes its queued output
    /// (for at most [`crate::ConnectionOptions::drain_timeout`] without
    /// progress), then sends FIN; input arriving meanwhile is discarded.
    /// An outbound connection still connecting with output queued is
    /// closed that way once connected (its handler gets no `on_open`).
    pub fn close(&mut self) {
        self.core.close_source(self.key);
    }

    /// Drops queued output and resets this connection at once.
    pub fn abort(&mut self) {
        self.core.abort_stream(self.key);
    }

    /// Shuts this connection's write half once queued output is flushed
    /// (the peer reads end-of-file); input goes on being delivered. Asked
    /// while an outbound connect is in progress, it takes effect once
    /// connected, before `on_open`; sends are refused from the request on.
    pub fn shutdown_write(&mut self) {
        self.core.shutdown_stream_write(self.key);
    }

    /// Stops delivering input to this connection's handler. The socket is
    /// not read, so the peer's sends back up into TCP flow control.
    pub fn pause_reading(&mut self) {
        self.core.set_read_paused(self.key, true);
    }

    /// Resumes delivering input, including anything that arrived meanwhile.
    pub fn resume_reading(&mut self) {
        self.core.set_read_paused(self.key, false);
    }

    /// Sets a one-shot timer owned by this source; its handler's `on_timer`
    /// gets the id after `after`. Returns `None` if the timer table is full,
    /// or if the source is gone (as it is in `on_close`). The timer is
    /// cancelled if the source goes first.
    pub fn set_timer(&mut self, after: Duration) -> Option<TimerId> {
        self.core.set_user_timer(self.key, after, None)
    }

    /// Sets a timer that fires every `every`, until cancelled. It fires at
    /// most once per turn of the loop (a zero period: once every turn).
    pub fn set_repeating(&mut self, every: Duration) -> Option<TimerId> {
        self.core.set_user_timer(self.key, every, Some(every))
    }

    /// Moves a timer to fire `after` from now. Returns `false` if it is
    /// gone (fired, if one-shot, or cancelled).
    pub fn reset_timer(&mut self, id: TimerId, after: Duration) -> bool {
        self.core.reset_timer(id, after)
    }

    /// Cancels a timer. Returns `false` if it was already gone.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.core.cancel_timer(id)
    }

    /// Opens an outbound TCP connection served by `handler`, which gets
    /// `on_open` once connected, or `on_close` with
    /// [`crate::CloseReason::ConnectFailed`] if the connect fails.
    ///
    /// # Errors
    ///
    /// The socket could not be created or registered (out of descriptors).
    pub fn connect(&mut self, addr: SocketAddr, handler: impl StreamHandler + 'static) -> io::Result<Key> {
        self.core
            .connect_tcp(addr, &ConnectOptions::default(), Box::new(handler))
    }

    /// Opens an outbound TCP connection as [`Context::connect`] does, with
    /// `options`: a connect timeout, the connection's own options, a local
    /// address, socket options set before the SYN (see [`ConnectOptions`]).
    ///
    /// A connection that asks a backend on the client's behalf, and gives
    /// up on a backend that does not connect within two seconds:
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::Read;
    /// use std::net::{SocketAddr, TcpListener, TcpStream};
    /// use std::time::Duration;
    /// use evloop::{Addr, CloseReason, ConnectOptions, Context, Key, Reactor, StreamHandler};
    ///
    /// /// Tells the client whether the backend answered.
    /// struct Probe(Key);
    ///
    /// impl StreamHandler for Probe {
    ///     fn on_open(&mut self, cx: &mut Context<'_>) {
    ///         cx.source(self.0).send(b"backend up\n");
    ///         cx.close();
    ///     }
    ///     fn on_data(&mut self, _: &mut Context<'_>, data: &[u8]) -> usize {
    ///         data.len()
    ///     }
    ///     fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
    ///         if let CloseReason::ConnectFailed(err) = reason {
    ///             cx.source(self.0).send(format!("backend down: {:?}\n", err.kind()).as_bytes());
    ///         }
    ///         cx.source(self.0).close();
    ///         cx.stop();
    ///     }
    /// }
    ///
    /// struct Front(SocketAddr);
    ///
    /// impl StreamHandler for Front {
    ///     fn on_open(&mut self, cx: &mut Context<'_>) {
    ///         let options = ConnectOptions::new().timeout(Duration::from_secs(2));
    ///         let probe = Probe(cx.key());
    ///         if cx.connect_with(self.0, &options, probe).is_err() {
    ///             cx.close();
    ///         }
    ///     }
    ///     fn on_data(&mut self, _: &mut Context<'_>, data: &[u8]) -> usize {
    ///         data.len()
    ///     }
    /// }
    ///
    /// let backend = TcpListener::bind("127.0.0.1:0")?;
    /// let backend_addr = backend.local_addr()?;
    /// let mut reactor = Reactor::new()?;
    /// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, move |_: &Addr| Front(backend_addr))?;
    /// let mut client = TcpStream::connect(reactor.local_addr(key).and_then(|a| a.as_inet()).expect("TCP"))?;
    /// reactor.run()?;
    /// let mut answer = String::new();
    /// client.read_to_string(&mut answer)?;
    /// assert_eq!(answer, "backend up\n");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The socket could not be created, configured or registered.
    pub fn connect_with(
        &mut self,
        addr: SocketAddr,
        options: &ConnectOptions,
        handler: impl StreamHandler + 'static,
    ) -> io::Result<Key> {
        self.core.connect_tcp(addr, options, Box::new(handler))
    }

    /// Opens an outbound TCP connection that speaks TLS, as
    /// [`Context::connect`]: the server's certificate must chain to `tls`'s
    /// roots and be valid for `server_name` (a DNS name or an IP address).
    /// A certificate that does not verify ends the connection with
    /// [`CloseReason::Error`](crate::CloseReason::Error) of kind
    /// `InvalidData`, naming rustls's reason.
    ///
    /// # Errors
    ///
    /// The socket could not be created or registered, or `server_name` is
    /// neither a DNS name nor an IP address.
    pub fn connect_tls(
        &mut self,
        addr: SocketAddr,
        tls: &crate::tls::ClientTls,
        server_name: &str,
        handler: impl StreamHandler + 'static,
    ) -> io::Result<Key> {
        let options = ConnectOptions::new().tls(tls, server_name);
        self.core.connect_tcp(addr, &options, Box::new(handler))
    }

    /// Opens an outbound Unix stream connection, as [`Context::connect`].
    ///
    /// # Errors
    ///
    /// The socket could not be created, connected or registered.
    pub fn connect_unix(&mut self, path: &Path, handler: impl StreamHandler + 'static) -> io::Result<Key> {
        self.core.connect_unix(path, Box::new(handler))
    }

    /// Sends one datagram from this datagram socket. Returns `false` if it
    /// was dropped (see `datagram.rs` for when).
    pub fn send_datagram(&mut self, to: &Addr, data: &[u8]) -> bool {
        let key = self.key;
        self.source(key).send_datagram(to, data)
    }

    /// A copy of the reactor's counters and gauges, as
    /// [`Reactor::metrics`](crate::Reactor::metrics) gives.
    pub fn metrics(&self) -> crate::metrics::Snapshot {
        self.core.snapshot()
    }

    /// The flight recorder's events, oldest first, as
    /// [`Reactor::trace`](crate::Reactor::trace) gives.
    pub fn trace(&self) -> Vec<crate::metrics::TraceEvent> {
        self.core.trace_events().copied().collect()
    }

    /// Every stream connection, as
    /// [`Reactor::connections`](crate::Reactor::connections) gives.
    pub fn connections(&self) -> Vec<crate::metrics::ConnectionInfo> {
        let mut all = Vec::new();
        self.core.for_each_connection(|info| all.push(info));
        all
    }

    /// Asks for one more call, next turn: a custom source's handler gets
    /// [`crate::SourceHandler::on_revisit`] after the sources with events
    /// were served. A handler that has read its share of a busy source
    /// returns early and reads on there, so one source cannot hold the
    /// loop. Asked twice in a turn, it still comes once. Returns `false`
    /// for other kinds of source (connections are revisited by the
    /// reactor itself, within their read budget).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::{ErrorKind, Read, Write};
    /// use evloop::mio::unix::pipe;
    /// use evloop::{Context, Event, Interest, Reactor, SourceHandler};
    ///
    /// /// Reads at most 4 bytes per call, then comes back for the rest.
    /// struct Sip {
    ///     rx: pipe::Receiver,
    ///     got: Vec<u8>,
    ///     calls: usize,
    /// }
    ///
    /// impl Sip {
    ///     fn read_some(&mut self, cx: &mut Context<'_>) {
    ///         self.calls += 1;
    ///         let mut buf = [0; 4];
    ///         match self.rx.read(&mut buf) {
    ///             Ok(0) => {
    ///                 cx.close();
    ///                 cx.stop();
    ///             }
    ///             Ok(n) => {
    ///                 self.got.extend_from_slice(&buf[..n]);
    ///                 cx.revisit(); // more may be waiting; no edge will say so
    ///             }
    ///             Err(e) if e.kind() == ErrorKind::WouldBlock => {}
    ///             Err(_) => cx.close(),
    ///         }
    ///     }
    /// }
    ///
    /// impl SourceHandler for Sip {
    ///     fn source(&mut self) -> &mut dyn evloop::mio::event::Source {
    ///         &mut self.rx
    ///     }
    ///     fn on_ready(&mut self, cx: &mut Context<'_>, _: &Event) {
    ///         self.read_some(cx);
    ///     }
    ///     fn on_revisit(&mut self, cx: &mut Context<'_>) {
    ///         self.read_some(cx);
    ///     }
    ///     fn on_close(&mut self, _: &mut Context<'_>, _: &evloop::CloseReason) {
    ///         assert_eq!(self.got, b"twelve bytes");
    ///         assert!(self.calls >= 4);
    ///     }
    /// }
    ///
    /// let (mut tx, rx) = pipe::new()?;
    /// tx.write_all(b"twelve bytes")?;
    /// drop(tx); // end of input after the bytes
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(Sip { rx, got: Vec::new(), calls: 0 }, Interest::READABLE)?;
    /// reactor.run()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn revisit(&mut self) -> bool {
        self.core.revisit_source(self.key)
    }

    /// Stops the reactor: `run` returns after this turn, leaving every
    /// source as it is.
    pub fn stop(&mut self) {
        self.core.request_stop();
    }

    /// Starts a graceful shutdown (see [`crate::Reactor::shutdown`]).
    pub fn shutdown(&mut self, timeout: Duration) {
        self.core.begin_shutdown(timeout);
    }

    /// Another source, by its key: what this context does for its own
    /// source, done for that one. A key that is gone gives a view on which
    /// every operation does nothing and says so.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::{Read, Write};
    /// use std::net::TcpStream;
    /// use evloop::{Addr, Context, Key, Reactor, StreamHandler};
    ///
    /// /// The first connection forwards what it gets to the second, then
    /// /// closes both.
    /// struct Forward;
    ///
    /// impl StreamHandler for Forward {
    ///     fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
    ///         let other: Option<Key> = cx.members().iter().copied().find(|&k| k != cx.key());
    ///         if let Some(other) = other {
    ///             let mut target = cx.source(other);
    ///             target.send(data);
    ///             target.close(); // after what it was sent
    ///         }
    ///         cx.close();
    ///         cx.stop();
    ///         data.len()
    ///     }
    /// }
    ///
    /// let mut reactor = Reactor::new()?;
    /// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Forward)?;
    /// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
    /// let mut a = TcpStream::connect(addr)?;
    /// let mut b = TcpStream::connect(addr)?;
    /// reactor.run_once(None)?; // accepts both
    /// reactor.run_once(None)?;
    /// a.write_all(b"over")?;
    /// reactor.run()?;
    /// let mut got = String::new();
    /// b.read_to_string(&mut got)?;
    /// assert_eq!(got, "over");
    /// # Ok(())
    /// # }
    /// ```
    pub fn source(&mut self, key: Key) -> SourceRef<'_> {
        SourceRef {
            core: self.core,
            key,
            caller: self.key,
        }
    }
}

/// Another source, named by its key, seen from a callback: see
/// [`Context::source`]. Every operation on a key that is gone, or that does
/// not fit the source's kind, does nothing and returns `false` (or `None`).
pub struct SourceRef<'c> {
    core: &'c mut Core,
    key: Key,
    /// The source whose handler is running.
    caller: Key,
}

impl SourceRef<'_> {
    /// The key this view names.
    pub fn key(&self) -> Key {
        self.key
    }

    /// Whether the source is still there (a connection: not yet closed).
    pub fn is_open(&self) -> bool {
        self.core.is_open(self.key)
    }

    /// The state of the connection (`None` for other kinds of source).
    pub fn state(&self) -> Option<ConnState> {
        self.core.stream_ref(self.key).map(|c| c.state.public())
    }

    /// Sends bytes on the connection, written at once like
    /// [`Context::send`] (only what the socket does not take is copied).
    /// For one payload to many connections, [`SourceRef::send_shared`]
    /// queues it by reference and writes once per turn.
    pub fn send(&mut self, data: &[u8]) -> bool {
        self.core.send_slice(self.key, data)
    }

    /// Sends a shared buffer on the connection. To another connection than
    /// the caller's it is queued now and written at the end of the current
    /// turn of the loop, together with everything else sent to it in this
    /// turn: a fan-out costs one write per receiver per turn, not one per
    /// message.
    pub fn send_shared(&mut self, data: &Rc<[u8]>) -> bool {
        let chunk = Chunk::Shared(Rc::clone(data));
        if self.key == self.caller {
            self.core.send_chunk(self.key, chunk)
        } else {
            self.core.send_chunk_deferred(self.key, chunk)
        }
    }

    /// Closes the source, as [`Context::close`] does.
    pub fn close(&mut self) {
        self.core.close_source(self.key);
    }

    /// Drops queued output and resets the connection at once; any other
    /// kind of source is closed. Its slot is free once the current callback
    /// returns.
    pub fn abort(&mut self) {
        self.core.abort_source(self.key);
    }

    /// Shuts the connection's write half once its queued output is
    /// flushed, as [`Context::shutdown_write`] does.
    pub fn shutdown_write(&mut self) {
        self.core.shutdown_stream_write(self.key);
    }

    /// Bytes of output held in memory for the connection (0 if gone).
    /// Shown, with the four methods after it, in
    /// [`SourceRef::watch_output`]'s example.
    pub fn queued_bytes(&self) -> usize {
        self.core.stream_ref(self.key).map_or(0, |c| c.queue.buffered())
    }

    /// Whether the connection's queued output is above its high watermark
    /// (and has not yet drained to the low one).
    pub fn is_above_high_water(&self) -> bool {
        self.core.stream_ref(self.key).is_some_and(|c| c.above_high_water)
    }

    /// Stops delivering input to the connection's handler, as
    /// [`Context::pause_reading`] does for the caller's: its peer's sends
    /// back up into TCP flow control.
    pub fn pause_reading(&mut self) -> bool {
        let open = self.core.stream_ref(self.key).is_some();
        self.core.set_read_paused(self.key, true);
        open
    }

    /// Resumes delivering input to the connection's handler.
    pub fn resume_reading(&mut self) -> bool {
        let open = self.core.stream_ref(self.key).is_some();
        self.core.set_read_paused(self.key, false);
        open
    }

    /// Asks for the connection's watermark notices: the caller's handler
    /// gets [`StreamHandler::on_other_high_water`] when this connection's
    /// queued output passes its high watermark, and
    /// [`StreamHandler::on_other_drain`] when it falls back to the low one,
    /// with this key, until [`SourceRef::unwatch_output`] or either
    /// connection goes. The notices come after the callback that crossed
    /// the mark, like the connection's own. Only stream handlers receive
    /// them. Returns `false` if the key is not a connection.
    ///
    /// The way to feed one connection from another without letting a slow
    /// reader grow the queue: pause the feeding side's reading at the high
    /// watermark and resume it at the drain, which is what
    /// [`crate::relay::Relay`] does both ways.
    ///
    /// Here a connection feeds an outbound one that is still connecting,
    /// so that what it sends stays queued: past the high watermark first,
    /// then drained once the connect is done.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::cell::RefCell;
    /// use std::net::{TcpListener, TcpStream};
    /// use std::rc::Rc;
    /// use evloop::{Addr, ConnectOptions, ConnectionOptions, Context, Key, Reactor, StreamHandler};
    ///
    /// struct Quiet;
    /// impl StreamHandler for Quiet {
    ///     fn on_data(&mut self, _: &mut Context<'_>, data: &[u8]) -> usize {
    ///         data.len()
    ///     }
    /// }
    ///
    /// struct Feeder {
    ///     upstream: std::net::SocketAddr,
    ///     seen: Rc<RefCell<Vec<String>>>,
    /// }
    ///
    /// impl StreamHandler for Feeder {
    ///     fn on_open(&mut self, cx: &mut Context<'_>) {
    ///         let small = ConnectionOptions { high_water: 512, low_water: 0, ..ConnectionOptions::default() };
    ///         let options = ConnectOptions::new().connection(small);
    ///         let Ok(out) = cx.connect_with(self.upstream, &options, Quiet) else { return };
    ///         let mut out = cx.source(out);
    ///         out.watch_output();
    ///         out.send(&[7; 1024]); // queued: the connect is in progress
    ///         let line = format!("queued {}, above: {}", out.queued_bytes(), out.is_above_high_water());
    ///         self.seen.borrow_mut().push(line);
    ///     }
    ///
    ///     fn on_data(&mut self, _: &mut Context<'_>, data: &[u8]) -> usize {
    ///         data.len()
    ///     }
    ///
    ///     fn on_other_high_water(&mut self, _: &mut Context<'_>, _: Key) {
    ///         self.seen.borrow_mut().push("high".into());
    ///     }
    ///
    ///     fn on_other_drain(&mut self, cx: &mut Context<'_>, _: Key) {
    ///         self.seen.borrow_mut().push("drained".into());
    ///         cx.stop();
    ///     }
    /// }
    ///
    /// let upstream = TcpListener::bind("127.0.0.1:0")?;
    /// let upstream_addr = upstream.local_addr()?;
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let mut reactor = Reactor::new()?;
    /// let log = Rc::clone(&seen);
    /// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, move |_: &Addr| Feeder {
    ///     upstream: upstream_addr,
    ///     seen: Rc::clone(&log),
    /// })?;
    /// let _client = TcpStream::connect(reactor.local_addr(key).and_then(|a| a.as_inet()).expect("TCP"))?;
    /// reactor.run()?; // until the drain
    /// assert_eq!(*seen.borrow(), ["queued 1024, above: true", "high", "drained"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch_output(&mut self) -> bool {
        let caller = self.caller;
        let Some(conn) = self.core.stream_mut(self.key) else {
            return false;
        };
        let mut watchers = std::mem::take(&mut conn.watchers);
        // Watchers that are gone are dropped here, not as they go.
        watchers.retain(|&w| self.core.is_open(w));
        if !watchers.contains(&caller) {
            watchers.push(caller);
        }
        if let Some(conn) = self.core.stream_mut(self.key) {
            conn.watchers = watchers;
        }
        true
    }

    /// Stops the notices [`SourceRef::watch_output`] asked for. Returns
    /// `false` if the caller was not watching.
    pub fn unwatch_output(&mut self) -> bool {
        let caller = self.caller;
        let Some(conn) = self.core.stream_mut(self.key) else {
            return false;
        };
        let before = conn.watchers.len();
        conn.watchers.retain(|&w| w != caller);
        conn.watchers.len() != before
    }

    /// The connection's socket, as [`Context::fd`].
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.core.stream_ref(self.key).map(|c| c.stream.as_fd())
    }

    /// Sends one datagram from the datagram socket. Returns `false` if it
    /// was dropped (see `datagram.rs` for when).
    pub fn send_datagram(&mut self, to: &Addr, data: &[u8]) -> bool {
        self.core.send_datagram(self.key, to, data)
    }
}
