//! Datagram sockets, UDP and Unix: receive until `WouldBlock`, send
//! directly, queue only what the socket refuses.
//!
//! Always true:
//! - one datagram in, one `on_datagram` call: datagrams are never split,
//!   cut or joined; the scratch buffer holds 64 KiB, more than the largest
//!   UDP payload (65,507 bytes over IPv4); a Unix datagram can be larger (up
//!   to the sender's socket buffer), so on Unix sockets the next datagram's
//!   size is peeked first and a larger one is received into a buffer of its
//!   own size;
//! - an error about one datagram (an ICMP "port unreachable" surfacing as
//!   `ECONNREFUSED`, a datagram too large for the path) is logged and the
//!   socket goes on: datagrams are allowed to be lost, the socket is not;
//! - datagrams the socket refuses with `WouldBlock` wait in a queue of at
//!   most [`MAX_QUEUED`] bytes, sent on the next WRITABLE edge; past that,
//!   new datagrams are dropped;
//! - a handler that panics is dropped and its socket removed, without
//!   `on_close` (see `handler.rs`).

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;

use log::debug;

use crate::sys::DgramSocket;
use crate::{Addr, DatagramHandler, Key, TimerId};

/// Settings of one UDP socket, for
/// [`Reactor::bind_udp_with`](crate::Reactor::bind_udp_with).
///
/// Two reactors, each with its own socket on one UDP port:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use evloop::{Addr, Context, DatagramHandler, DatagramOptions, Reactor};
///
/// /// Sends every datagram back.
/// struct Echo;
///
/// impl DatagramHandler for Echo {
///     fn on_datagram(&mut self, cx: &mut Context<'_>, data: &[u8], from: &Addr) {
///         cx.send_datagram(from, data);
///     }
/// }
///
/// let options = DatagramOptions { reuse_port: true };
/// let mut first = Reactor::new()?;
/// let key = first.bind_udp_with("127.0.0.1:0".parse()?, options.clone(), Echo)?;
/// let addr = first.local_addr(key).and_then(|a| a.as_inet()).expect("a UDP socket");
/// let mut second = Reactor::new()?; // in a real program, on another thread
/// second.bind_udp_with(addr, options, Echo)?; // the same port
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct DatagramOptions {
    /// Sets `SO_REUSEPORT` before the socket is bound (default `false`), so
    /// that several sockets, each set so and owned by the same user, can
    /// bind one address and port. Linux hands each datagram to one of them
    /// by a hash of its source and destination addresses and ports: the
    /// datagrams of one peer keep going to one socket.
    pub reuse_port: bool,
}

/// Most bytes of datagrams waiting for a full socket to drain.
pub(crate) const MAX_QUEUED: usize = 1024 * 1024;

/// A datagram socket with its handler and its queue of refused datagrams.
pub(crate) struct Datagram {
    pub(crate) socket: DgramSocket,
    pub(crate) handler: Option<Box<dyn DatagramHandler>>,
    out: VecDeque<(Addr, Vec<u8>)>,
    out_bytes: usize,
    pub(crate) local: Addr,
    pub(crate) timers: Vec<TimerId>,
    /// A Unix socket file this socket created, removed when it closes.
    unix_path: Option<PathBuf>,
}

impl Datagram {
    pub(crate) fn new(socket: DgramSocket, local: Addr, handler: Box<dyn DatagramHandler>) -> Self {
        let unix_path = match &socket {
            DgramSocket::Unix(_) => local.as_path().map(PathBuf::from),
            DgramSocket::Udp(_) => None,
        };
        Datagram {
            socket,
            handler: Some(handler),
            out: VecDeque::new(),
            out_bytes: 0,
            local,
            timers: Vec::new(),
            unix_path,
        }
    }

    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match &mut self.socket {
            DgramSocket::Udp(s) => s,
            DgramSocket::Unix(s) => s,
        }
    }

    /// Sends queued datagrams until the socket is full.
    pub(crate) fn flush(&mut self, key: Key) {
        while let Some((to, data)) = self.out.front() {
            match self.socket.send_to(data, to) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => debug!("{key}: datagram to {to} dropped: {err}"),
                Ok(_) => {}
            }
            self.out_bytes -= data.len();
            self.out.pop_front();
        }
    }

    /// Sends one datagram, or queues it if the socket is full.
    pub(crate) fn send(&mut self, key: Key, to: &Addr, data: &[u8]) -> bool {
        if self.out.is_empty() {
            match self.socket.send_to(data, to) {
                Ok(_) => return true,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => {
                    debug!("{key}: datagram to {to} dropped: {err}");
                    return false;
                }
            }
        }
        if self.out_bytes + data.len() > MAX_QUEUED {
            debug!("{key}: send queue full, datagram to {to} dropped");
            return false;
        }
        self.out_bytes += data.len();
        self.out.push_back((to.clone(), data.to_vec()));
        true
    }
}

impl Drop for Datagram {
    fn drop(&mut self) {
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}
