//! Two connections tied together: every byte one side's peer sends is
//! written to the other side, both ways, with backpressure, half-closes
//! and resets passed on. What tokio calls `copy_bidirectional`, as a pair
//! of stream handlers.
//!
//! A [`Relay`] serves one side; its other side is another connection of
//! the same reactor, named by its key, served by a [`Relay`] too.
//! [`Relay::connect`] makes the usual pair: a side that, when its
//! connection opens, connects to an upstream address and serves that new
//! connection with [`Relay::to`] itself. A TCP proxy is a listener whose
//! factory makes [`Relay::connect`] sides (`examples/proxy.rs`).
//!
//! Always true, for each direction on its own:
//! - bytes arrive in order, unchanged: what a side reads is queued on the
//!   other side whole, before the read returns;
//! - memory is bounded: when the other side's queued output passes its
//!   high watermark, this side stops reading ([`crate::Context::pause_reading`])
//!   until that output drains to the low watermark
//!   ([`crate::SourceRef::watch_output`]), so a pair holds at most about
//!   the two high watermarks plus one read, however much is pushed through
//!   it and however long a reader stalls;
//! - a FIN is passed on as a FIN: a side whose peer ends its sending shuts
//!   the other side's write half once what it queued is written, and the
//!   other direction goes on; a pair closes when both directions ended;
//! - a reset is passed on as a reset: a side that ends in error (the peer
//!   reset it, a write failed, a queue or drain limit was passed) or is
//!   aborted aborts the other side, which drops what it queued and sends
//!   RST;
//! - a side whose other side could not connect (refused, timed out) is
//!   closed, after writing what it queued.
//!
//! During a graceful shutdown a pair goes on until it ends or the
//! shutdown's deadline cuts it: a relayed transfer is in-flight work.

use std::net::SocketAddr;

use log::debug;

use crate::{CloseReason, ConnectOptions, Context, Key, StreamHandler};

/// One side of a relay: see the module docs.
///
/// A proxy to a server on this machine, and one request through it:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::{Read, Write};
/// use std::net::{Shutdown, TcpListener, TcpStream};
/// use std::time::Duration;
/// use evloop::relay::Relay;
/// use evloop::{Addr, ConnectOptions, Reactor};
///
/// // The upstream: answers one request with its length.
/// let upstream = TcpListener::bind("127.0.0.1:0")?;
/// let upstream_addr = upstream.local_addr()?;
/// let server = std::thread::spawn(move || -> std::io::Result<()> {
///     let (mut conn, _) = upstream.accept()?;
///     let mut request = Vec::new();
///     conn.read_to_end(&mut request)?; // until the FIN the proxy passes on
///     conn.write_all(format!("{} bytes", request.len()).as_bytes())
/// });
///
/// let mut reactor = Reactor::new()?;
/// let options = ConnectOptions::new().timeout(Duration::from_secs(5));
/// let proxy = reactor.listen_tcp("127.0.0.1:0".parse()?, move |_: &Addr| {
///     Relay::connect(upstream_addr, options.clone())
/// })?;
/// let proxy_addr = reactor.local_addr(proxy).and_then(|a| a.as_inet()).expect("TCP");
///
/// let handle = reactor.handle();
/// let client = std::thread::spawn(move || -> std::io::Result<String> {
///     let mut conn = TcpStream::connect(proxy_addr)?;
///     conn.write_all(b"hello")?;
///     conn.shutdown(Shutdown::Write)?;
///     let mut answer = String::new();
///     conn.read_to_string(&mut answer)?; // until the FIN passed back
///     handle.stop();
///     Ok(answer)
/// });
/// reactor.run()?;
/// assert_eq!(client.join().expect("client thread")?, "5 bytes");
/// server.join().expect("server thread")?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Relay {
    /// The other side, once there is one.
    peer: Option<Key>,
    /// Where to connect the other side when this one opens.
    upstream: Option<(SocketAddr, ConnectOptions)>,
}

impl Relay {
    /// A side whose other side is the connection `peer`, open or still
    /// connecting, served by a [`Relay`] naming this side.
    pub fn to(peer: Key) -> Relay {
        Relay {
            peer: Some(peer),
            upstream: None,
        }
    }

    /// A side that, once its connection opens, connects to `upstream` with
    /// `options` (a connect timeout, above all) and relays to it. Until the
    /// upstream connects, what this side reads is queued for it.
    pub fn connect(upstream: SocketAddr, options: ConnectOptions) -> Relay {
        Relay {
            peer: None,
            upstream: Some((upstream, options)),
        }
    }

    /// The other side's key, once there is one.
    pub fn peer(&self) -> Option<Key> {
        self.peer
    }
}

impl StreamHandler for Relay {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        if let Some((addr, options)) = self.upstream.take() {
            match cx.connect_with(addr, &options, Relay::to(cx.key())) {
                Ok(peer) => self.peer = Some(peer),
                Err(err) => {
                    debug!("{}: cannot connect to {addr}: {err}", cx.key());
                    cx.close();
                    return;
                }
            }
        }
        if let Some(peer) = self.peer {
            if !cx.source(peer).watch_output() {
                // The other side is gone already.
                cx.close();
            }
        }
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let Some(peer) = self.peer else {
            return data.len();
        };
        let mut other = cx.source(peer);
        if !other.send(data) {
            // The other side takes no more output: it is ending, and its
            // end reaches this side through its `on_close`.
            return data.len();
        }
        if other.is_above_high_water() {
            cx.pause_reading();
        }
        data.len()
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        match self.peer {
            Some(peer) if cx.source(peer).is_open() => cx.source(peer).shutdown_write(),
            _ => cx.close(),
        }
    }

    fn on_other_high_water(&mut self, cx: &mut Context<'_>, other: Key) {
        if Some(other) == self.peer {
            cx.pause_reading();
        }
    }

    fn on_other_drain(&mut self, cx: &mut Context<'_>, other: Key) {
        if Some(other) == self.peer {
            cx.resume_reading();
        }
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        // In-flight work: the pair goes on until it ends or the deadline.
        let _ = cx;
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let Some(peer) = self.peer else { return };
        let mut other = cx.source(peer);
        match reason {
            // Both directions ended here; the other side's reading ended
            // too, so its writing may end once its queue is written.
            CloseReason::Closed | CloseReason::PeerClosed => other.shutdown_write(),
            CloseReason::ConnectFailed(err) => {
                debug!("{peer}: upstream connect failed: {err}");
                other.close();
            }
            _ => other.abort(),
        }
    }
}
