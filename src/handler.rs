//! The traits a protocol implements: [`StreamHandler`] for a connection,
//! [`StreamFactory`] to make one per accepted connection, [`DatagramHandler`]
//! for a datagram socket, [`SourceHandler`] for any other mio source.
//!
//! Always true:
//! - every callback runs on the reactor's thread, one at a time, and must not
//!   block: a handler that sleeps or does blocking IO stalls every source;
//! - a handler is called only while its source is registered, and
//!   `on_close` is its last call, exactly once (unless the handler panicked:
//!   see below);
//! - what a handler asks of its [`Context`] during a callback (send, close,
//!   timers) takes effect before its next callback;
//! - a handler that panics takes down its own source and nothing else.
//!
//! ## A panicking handler
//!
//! Every call the reactor makes into handler code runs under
//! [`std::panic::catch_unwind`]: each [`StreamHandler`], [`DatagramHandler`]
//! and [`SourceHandler`] callback, [`SourceHandler::source`] at removal,
//! [`StreamFactory::new_handler`] and [`StreamFactory::farewell`]. When one
//! panics, the reactor logs the source's key, the callback and the panic
//! message at error level, then:
//!
//! - a connection's handler: the connection is reset, as by
//!   [`Context::abort`]; its queued output and unconsumed input are dropped;
//! - a datagram socket's handler: the socket is removed and closed;
//! - a custom source's handler: the source is removed. The mio source the
//!   handler owned is dropped with it: one that owns its descriptor closes
//!   it, which takes it out of the epoll set; one that does not (an
//!   [`crate::FdSource`]) stays in the set until its owner closes it, and
//!   its events are dropped as stale;
//! - a factory: the connection just accepted is reset; the listener and
//!   its factory go on accepting;
//! - `on_close`: the source is already gone; nothing more happens.
//!
//! The handler that panicked is dropped as the panic unwinds and is never
//! called again: in particular it gets no `on_close`. Its source is removed
//! by the deferred work that follows the call, like any close: its timers
//! are cancelled and its slot freed. Every other source goes on being
//! served, and [`crate::Reactor::run`] never sees the panic. When nothing
//! panics, the guard costs no allocation and one branch on the result.
//!
//! Why this is sound (the reactor asserts unwind safety): a panic may leave
//! the handler's own state half-updated, which is why it is dropped rather
//! than called again. The reactor's state is whole, because handler code
//! runs only at call boundaries: the handler is taken out of its slot
//! before the call, and each [`Context`] method it calls has finished
//! before control returns to it, without calling any other handler.
//! Deferred work already queued for its source is harmless: a watermark
//! notice finds the slot without a handler and is skipped, a removal frees
//! the slot without an `on_close`, a second removal finds nothing. A
//! factory is the exception: it is kept, so a factory that panics must
//! leave itself fit to make the next handler.
//!
//! The limits:
//!
//! - a binary built with `panic = "abort"` aborts on any panic: there is
//!   nothing to catch;
//! - a panic in the reactor's own code is a bug in evloop and is not
//!   caught. One raised inside a [`Context`] method is caught with the
//!   handler that called it, but the reactor's state may then be
//!   inconsistent;
//! - a handler whose `Drop` panics while the handler is dropped by an
//!   unwind aborts the process, as Rust does for any panic during a panic;
//! - the closures given to [`crate::Handle::run`] are not handlers: they
//!   get the whole reactor, and a panic in one ends `run` (so do the hooks
//!   of `Reactor::on_start` and `on_turn_end`). A reactor timer's closure
//!   ([`crate::Reactor::set_timer`]) is caught like a handler, though: it
//!   is taken out of the reactor's map before the call and dropped by the
//!   unwind, and a repeating timer is cancelled;
//! - the panic hook still runs first: by default it prints the panic and
//!   where it happened to stderr.
//!
//! A minimal protocol, one that answers every chunk with its length, driven
//! one turn at a time from a client on the same thread:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::{ErrorKind, Read, Write};
//! use std::time::Duration;
//! use evloop::{Addr, Context, Reactor, StreamHandler};
//!
//! struct CountBytes;
//!
//! impl StreamHandler for CountBytes {
//!     fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
//!         cx.send(format!("{}\n", data.len()).as_bytes());
//!         data.len() // consumed all of it; none is kept for next time
//!     }
//! }
//!
//! let mut reactor = Reactor::new()?;
//! let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| CountBytes)?;
//! let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
//!
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"hello")?;
//! client.set_nonblocking(true)?;
//! let mut reply = Vec::new();
//! // Each turn: accept, read, answer. A few turns are enough.
//! for _ in 0..500 {
//!     reactor.run_once(Some(Duration::from_millis(10)))?;
//!     let mut buf = [0u8; 16];
//!     match client.read(&mut buf) {
//!         Ok(n) => reply.extend_from_slice(&buf[..n]),
//!         Err(e) if e.kind() == ErrorKind::WouldBlock => {}
//!         Err(e) => return Err(e.into()),
//!     }
//!     if reply.ends_with(b"\n") {
//!         break;
//!     }
//! }
//! assert_eq!(reply, b"5\n");
//! # Ok(())
//! # }
//! ```

use std::any::Any;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};

use log::error;
use mio::event::Event;

use crate::{Addr, Context, Key, TimerId};

/// Runs one call into handler code, catching a panic: `Some` with what the
/// call returned, or `None` once the panic has been logged (with `key`, the
/// source's key or what else names the call's owner, such as a reactor
/// timer; the name of the `callback`; and what the reactor does about it,
/// `then`).
///
/// `AssertUnwindSafe` is sound here because the caller upholds what the
/// module docs say: anything the call may have left half-updated (the
/// handler, its pending input) is moved into `call` and dropped by the
/// unwind, never used again; the reactor's state is consistent at the call
/// boundary; and on `None` the caller resets or removes the source (a
/// factory, which is kept, is the documented exception).
#[inline]
pub(crate) fn guarded<R>(
    key: impl fmt::Display,
    callback: &'static str,
    then: &'static str,
    call: impl FnOnce() -> R,
) -> Option<R> {
    match panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(value) => Some(value),
        Err(payload) => {
            report_panic(&key, callback, then, payload);
            None
        }
    }
}

/// Logs a caught panic and drops its payload.
#[cold]
#[inline(never)]
fn report_panic(
    key: &dyn fmt::Display,
    callback: &'static str,
    then: &'static str,
    payload: Box<dyn Any + Send>,
) {
    let message = match payload.downcast_ref::<&'static str>() {
        Some(text) => text,
        None => match payload.downcast_ref::<String>() {
            Some(text) => text.as_str(),
            None => "(the panic's payload is not a string)",
        },
    };
    error!("{key}: handler panicked in {callback}: {message}; {then}");
    // A payload from `panic_any` may itself panic when dropped: that second
    // panic must not escape either. Its own payload is leaked, not dropped.
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// Why a connection or source ended; given to `on_close`.
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// The handler (or code holding its key) closed it, after flushing.
    Closed,
    /// The handler aborted it: queued output was dropped and the peer got a
    /// reset.
    Aborted,
    /// The peer closed its side and nothing was left to do.
    PeerClosed,
    /// Reading or writing failed (a reset, a broken pipe, a file that ended
    /// early while being streamed).
    Error(io::Error),
    /// An outbound connection could not be made (refused, unreachable,
    /// timed out). A peer that accepted and reset at once gives
    /// [`CloseReason::Error`], even if the reset came before the connect
    /// was seen done.
    ConnectFailed(io::Error),
    /// Queued output passed the connection's hard cap
    /// ([`crate::ConnectionOptions::max_queued`]).
    Overflow,
    /// Unconsumed input passed [`crate::ConnectionOptions::max_pending_input`].
    InputOverflow,
    /// A close did not finish flushing: the peer took nothing for
    /// [`crate::ConnectionOptions::drain_timeout`].
    DrainTimeout,
    /// The reactor shut down and the shutdown deadline passed first.
    Shutdown,
}

impl CloseReason {
    /// Whether the connection ended because something went wrong, as
    /// opposed to one side closing it on purpose.
    pub fn is_error(&self) -> bool {
        match self {
            CloseReason::Closed | CloseReason::Aborted | CloseReason::PeerClosed | CloseReason::Shutdown => {
                false
            }
            CloseReason::Error(_)
            | CloseReason::ConnectFailed(_)
            | CloseReason::Overflow
            | CloseReason::InputOverflow
            | CloseReason::DrainTimeout => true,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Closed => f.write_str("closed"),
            CloseReason::Aborted => f.write_str("aborted"),
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Error(err) => write!(f, "error: {err}"),
            CloseReason::ConnectFailed(err) => write!(f, "connect failed: {err}"),
            CloseReason::Overflow => f.write_str("output over the queue cap"),
            CloseReason::InputOverflow => f.write_str("input over the pending cap"),
            CloseReason::DrainTimeout => f.write_str("flush before close timed out"),
            CloseReason::Shutdown => f.write_str("reactor shut down"),
        }
    }
}

/// The protocol side of one stream connection (TCP or Unix).
///
/// Only [`StreamHandler::on_data`] must be written; every other callback has
/// a default that suits most protocols.
///
/// A callback that panics costs its own connection only: the panic is
/// caught and logged, the connection is reset, and the handler is dropped
/// without `on_close` (see the crate docs).
///
/// A minimal protocol: each line comes back in capitals. `on_data` consumes
/// whole lines only, so a line split across reads is answered once its end
/// has arrived.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::{Read, Write};
/// use std::net::{Shutdown, TcpStream};
/// use std::time::Duration;
/// use evloop::codec::{encode_line, lines};
/// use evloop::{Addr, Context, Reactor, StreamHandler};
///
/// struct Shout;
///
/// impl StreamHandler for Shout {
///     fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
///         let mut input = lines(data, 1024);
///         let mut out = Vec::new();
///         for line in input.by_ref() {
///             match line {
///                 Ok(line) => encode_line(&mut out, &line.to_ascii_uppercase()),
///                 Err(_) => cx.abort(), // over 1 KiB without a newline
///             }
///         }
///         cx.send_vec(out);
///         input.consumed() // a partial line is handed back with the next bytes
///     }
/// }
///
/// let mut reactor = Reactor::new()?;
/// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Shout)?;
/// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
///
/// let handle = reactor.handle();
/// let client = std::thread::spawn(move || {
///     let talk = || -> std::io::Result<String> {
///         let mut stream = TcpStream::connect(addr)?;
///         stream.set_read_timeout(Some(Duration::from_secs(5)))?;
///         stream.write_all(b"hello\nwor")?;
///         stream.write_all(b"ld\nand no newline")?;
///         stream.shutdown(Shutdown::Write)?; // the server closes in turn
///         let mut reply = String::new();
///         stream.read_to_string(&mut reply)?;
///         Ok(reply)
///     };
///     let reply = talk();
///     handle.stop();
///     reply
/// });
/// reactor.run()?;
/// assert_eq!(client.join().expect("client thread panicked")?, "HELLO\nWORLD\n");
/// # Ok(())
/// # }
/// ```
pub trait StreamHandler {
    /// The connection is open: accepted, or an outbound connect completed.
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// Bytes arrived. `data` holds what earlier calls left unconsumed,
    /// followed by the new bytes. Returns how many bytes from the front were
    /// consumed; the rest is kept and handed back, with whatever arrives
    /// next appended. An idle connection whose handler consumes everything
    /// holds no input buffer at all.
    ///
    /// A return above `data.len()` counts as `data.len()`.
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize;

    /// The peer shut down its write side (a read returned 0). The connection
    /// stays open for writing until the handler closes it. The default
    /// closes after flushing what is queued.
    ///
    /// After the handler's own [`Context::shutdown_write`] has finished,
    /// the peer's FIN ends the connection: it is already closed (with
    /// [`CloseReason::PeerClosed`]) when this is called.
    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    /// Queued output rose past the high watermark: the peer reads slower
    /// than the handler writes. A well-behaved handler stops producing (for
    /// instance [`Context::pause_reading`]) until
    /// [`StreamHandler::on_drain`].
    fn on_high_water(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// Queued output fell to the low watermark after having passed the high
    /// one: time to produce more.
    fn on_drain(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// Another connection this handler watches
    /// ([`crate::SourceRef::watch_output`]) passed its high watermark: the
    /// moment to stop feeding it, for instance by pausing this connection's
    /// reading until [`StreamHandler::on_other_drain`].
    fn on_other_high_water(&mut self, cx: &mut Context<'_>, other: Key) {
        let _ = (cx, other);
    }

    /// Another connection this handler watches fell to its low watermark
    /// after having passed the high one.
    fn on_other_drain(&mut self, cx: &mut Context<'_>, other: Key) {
        let _ = (cx, other);
    }

    /// A timer set through the context fired.
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let _ = (cx, timer);
    }

    /// The reactor is shutting down gracefully. The default closes the
    /// connection after flushing; a handler may first send a farewell.
    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    /// The connection is gone; the last call this handler gets. The context
    /// still reaches other connections (to tell them), but sends to this
    /// one go nowhere.
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = (cx, reason);
    }
}

/// Makes a [`StreamHandler`] for each connection a listener accepts.
///
/// Any `FnMut(&Addr) -> H` closure, where `H` is a handler, is a factory:
/// `|_: &Addr| Echo::default()`. A closure that picks among handler types
/// returns `Box<dyn StreamHandler>`, which is a handler too.
///
/// A factory closure may keep state from one connection to the next: here,
/// a counter that numbers the clients.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::Read;
/// use std::net::TcpStream;
/// use std::time::Duration;
/// use evloop::{Addr, Context, Reactor, StreamHandler};
///
/// /// Tells the client its number, then closes.
/// struct Ticket(u32);
///
/// impl StreamHandler for Ticket {
///     fn on_open(&mut self, cx: &mut Context<'_>) {
///         cx.send(format!("you are number {}\n", self.0).as_bytes());
///         cx.close();
///     }
///
///     fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
///         data.len()
///     }
/// }
///
/// let mut issued = 0;
/// let factory = move |_peer: &Addr| {
///     issued += 1;
///     Ticket(issued)
/// };
/// let mut reactor = Reactor::new()?;
/// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, factory)?;
/// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
///
/// let handle = reactor.handle();
/// let clients = std::thread::spawn(move || {
///     let tickets: std::io::Result<Vec<String>> = (0..2)
///         .map(|_| {
///             let mut stream = TcpStream::connect(addr)?;
///             stream.set_read_timeout(Some(Duration::from_secs(5)))?;
///             let mut ticket = String::new();
///             stream.read_to_string(&mut ticket)?; // until the server closes
///             Ok(ticket)
///         })
///         .collect();
///     handle.stop();
///     tickets
/// });
/// reactor.run()?;
/// let tickets = clients.join().expect("client thread panicked")?;
/// assert_eq!(tickets, ["you are number 1\n", "you are number 2\n"]);
/// # Ok(())
/// # }
/// ```
pub trait StreamFactory {
    /// A handler for a connection just accepted from `peer`.
    fn new_handler(&mut self, peer: &Addr) -> Box<dyn StreamHandler>;

    /// What to send a connection turned away because the listener is at its
    /// [`crate::ListenerOptions::max_connections`], before it is closed.
    /// Sent with one non-blocking write, best effort. The default sends
    /// nothing.
    fn farewell(&mut self, peer: &Addr) -> Option<Vec<u8>> {
        let _ = peer;
        None
    }
}

impl<F, H> StreamFactory for F
where
    F: FnMut(&Addr) -> H,
    H: StreamHandler + 'static,
{
    fn new_handler(&mut self, peer: &Addr) -> Box<dyn StreamHandler> {
        Box::new(self(peer))
    }
}

impl<H: StreamHandler + ?Sized> StreamHandler for Box<H> {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        (**self).on_open(cx);
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        (**self).on_data(cx, data)
    }
    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        (**self).on_read_closed(cx);
    }
    fn on_high_water(&mut self, cx: &mut Context<'_>) {
        (**self).on_high_water(cx);
    }
    fn on_drain(&mut self, cx: &mut Context<'_>) {
        (**self).on_drain(cx);
    }
    fn on_other_high_water(&mut self, cx: &mut Context<'_>, other: Key) {
        (**self).on_other_high_water(cx, other);
    }
    fn on_other_drain(&mut self, cx: &mut Context<'_>, other: Key) {
        (**self).on_other_drain(cx, other);
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        (**self).on_timer(cx, timer);
    }
    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        (**self).on_shutdown(cx);
    }
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        (**self).on_close(cx, reason);
    }
}

/// The protocol side of a datagram socket (UDP or Unix datagram).
///
/// A UDP echo, and a client on another thread:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::net::{SocketAddr, UdpSocket};
/// use std::time::Duration;
/// use evloop::{Addr, Context, DatagramHandler, Reactor};
///
/// /// Sends each datagram back to where it came from.
/// struct Echo;
///
/// impl DatagramHandler for Echo {
///     fn on_datagram(&mut self, cx: &mut Context<'_>, data: &[u8], from: &Addr) {
///         cx.send_datagram(from, data);
///     }
/// }
///
/// let mut reactor = Reactor::new()?;
/// let key = reactor.bind_udp("127.0.0.1:0".parse()?, Echo)?;
/// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a UDP socket");
///
/// let handle = reactor.handle();
/// let client = std::thread::spawn(move || {
///     let talk = || -> std::io::Result<(Vec<u8>, SocketAddr)> {
///         let socket = UdpSocket::bind("127.0.0.1:0")?;
///         socket.set_read_timeout(Some(Duration::from_secs(5)))?;
///         socket.send_to(b"ping", addr)?;
///         let mut buf = [0; 64];
///         let (len, from) = socket.recv_from(&mut buf)?;
///         Ok((buf[..len].to_vec(), from))
///     };
///     let reply = talk();
///     handle.stop();
///     reply
/// });
/// reactor.run()?;
/// let (reply, from) = client.join().expect("client thread panicked")?;
/// assert_eq!((reply.as_slice(), from), (&b"ping"[..], addr));
/// # Ok(())
/// # }
/// ```
pub trait DatagramHandler {
    /// One datagram arrived from `from`. Reply with
    /// [`Context::send_datagram`].
    fn on_datagram(&mut self, cx: &mut Context<'_>, data: &[u8], from: &Addr);

    /// A timer set through the context fired.
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let _ = (cx, timer);
    }

    /// The reactor is shutting down. The default closes the socket.
    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    /// The socket is closed; the last call.
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = (cx, reason);
    }
}

/// The handler of any other [`mio::event::Source`]: a pipe, an `eventfd`
/// through [`crate::FdSource`], a signal pipe. The handler owns its source.
/// mio is the one evloop re-exports, [`crate::mio`]: a program names it as
/// `evloop::mio` and needs no mio of its own.
///
/// Readiness is edge-triggered: on each event, read (or write) until the
/// source says `WouldBlock`, or no further event may come.
///
/// A descriptor registered through [`crate::FdSource`], here one end of a
/// socket pair standing in for a pipe or a terminal, read to its end:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::cell::RefCell;
/// use std::io::{ErrorKind, Read, Write};
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
/// use std::rc::Rc;
/// use std::time::Duration;
/// use evloop::{Context, Event, FdSource, Interest, Reactor, SourceHandler};
///
/// struct ReadAll {
///     stream: UnixStream, // owns the descriptor; `fd` only names it
///     fd: FdSource,
///     got: Rc<RefCell<Vec<u8>>>,
/// }
///
/// impl SourceHandler for ReadAll {
///     fn source(&mut self) -> &mut dyn evloop::mio::event::Source {
///         &mut self.fd
///     }
///
///     fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
///         let mut buf = [0; 1024];
///         loop {
///             match self.stream.read(&mut buf) {
///                 Ok(n) if n > 0 => self.got.borrow_mut().extend_from_slice(&buf[..n]),
///                 Err(e) if e.kind() == ErrorKind::WouldBlock => return, // wait for the next edge
///                 _ => break, // end of file, or a failed read
///             }
///         }
///         cx.close(); // deregisters the source; the stream closes with the handler
///     }
/// }
///
/// let (mut writer, reader) = UnixStream::pair()?;
/// reader.set_nonblocking(true)?; // a read must never block the loop
/// let fd = FdSource::new(reader.as_raw_fd());
/// let got = Rc::new(RefCell::new(Vec::new()));
/// let handler = ReadAll { stream: reader, fd, got: Rc::clone(&got) };
/// let mut reactor = Reactor::new()?;
/// let key = reactor.register(handler, Interest::READABLE)?;
///
/// writer.write_all(b"hello")?;
/// drop(writer); // end of file
/// // One turn: the bytes and the end of file are waiting already.
/// reactor.run_once(Some(Duration::from_secs(5)))?;
/// assert_eq!(*got.borrow(), b"hello");
/// assert!(!reactor.contains(key));
/// # Ok(())
/// # }
/// ```
pub trait SourceHandler {
    /// The source to register. Called at registration and at removal.
    fn source(&mut self) -> &mut dyn mio::event::Source;

    /// The source is ready.
    fn on_ready(&mut self, cx: &mut Context<'_>, event: &Event);

    /// Called once on the next turn after [`Context::revisit`]: a handler
    /// that stopped reading in the middle of its input, to let the other
    /// sources have their turn, reads on here. Edge-triggered readiness
    /// will not announce input that was already there, so this call is
    /// the only one that comes for it.
    fn on_revisit(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// A timer set through the context fired.
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let _ = (cx, timer);
    }

    /// The reactor is shutting down. The default removes the source.
    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    /// The source has been deregistered; the last call.
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = (cx, reason);
    }
}
