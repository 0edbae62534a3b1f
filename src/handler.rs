//! The traits a protocol implements: [`StreamHandler`] for a connection,
//! [`StreamFactory`] to make one per accepted connection, [`DatagramHandler`]
//! for a datagram socket, [`SourceHandler`] for any other mio source.
//!
//! Always true:
//! - every callback runs on the reactor's thread, one at a time, and must not
//!   block: a handler that sleeps or does blocking IO stalls every source;
//! - a handler is called only while its source is registered, and
//!   `on_close` is its last call, exactly once;
//! - what a handler asks of its [`Context`] during a callback (send, close,
//!   timers) takes effect before its next callback.
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

use std::fmt;
use std::io;

use mio::event::Event;

use crate::{Addr, Context, TimerId};

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
    /// An outbound connection could not be made.
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

/// The handler of any other [`mio::event::Source`]: a pipe, stdin through
/// [`crate::FdSource`], a signal pipe. The handler owns its source.
///
/// Readiness is edge-triggered: on each event, read (or write) until the
/// source says `WouldBlock`, or no further event may come.
pub trait SourceHandler {
    /// The source to register. Called at registration and at removal.
    fn source(&mut self) -> &mut dyn mio::event::Source;

    /// The source is ready.
    fn on_ready(&mut self, cx: &mut Context<'_>, event: &Event);

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
