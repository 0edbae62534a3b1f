//! Name lookups off the loop: [`Handle::resolve`].
//!
//! `getaddrinfo(3)` blocks, for as long as the resolver takes (seconds,
//! when a DNS server does not answer), so it must never run on the
//! reactor's thread. The lookup runs on a thread of its own, and its
//! answer comes back to the reactor's thread through [`Handle::run`],
//! between two turns, like any command.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use crate::{Handle, Reactor};

impl Handle {
    /// Looks up `name` (`host:port`, as [`ToSocketAddrs`] takes it: a DNS
    /// name, `localhost`, or an address) on a new thread, then runs `then`
    /// on the reactor's thread with the addresses found, in the resolver's
    /// order, or the error. Returns `false` if the thread could not be
    /// started. If the reactor is gone by the time the answer comes,
    /// `then` is dropped without running.
    ///
    /// A handler resolves through [`crate::Context::handle`] and names
    /// itself by key in `then`, since the reactor may have closed it
    /// meanwhile:
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use evloop::Reactor;
    ///
    /// let mut reactor = Reactor::new()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// reactor.handle().resolve("localhost:7000", move |reactor, addrs| {
    ///     let _ = tx.send(addrs.map_err(|e| e.to_string()));
    ///     reactor.stop();
    /// });
    /// reactor.run()?; // until the answer came and stopped it
    /// let addrs = rx.recv()??; // `localhost` comes from /etc/hosts
    /// assert!(!addrs.is_empty());
    /// assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 7000));
    /// # Ok(())
    /// # }
    /// ```
    pub fn resolve<F>(&self, name: &str, then: F) -> bool
    where
        F: FnOnce(&mut Reactor, io::Result<Vec<SocketAddr>>) + Send + 'static,
    {
        let handle = self.clone();
        let name = name.to_owned();
        std::thread::Builder::new()
            .name("evloop-resolve".into())
            .spawn(move || {
                let found = name.to_socket_addrs().map(Iterator::collect);
                handle.run(move |reactor| then(reactor, found));
            })
            .is_ok()
    }
}
