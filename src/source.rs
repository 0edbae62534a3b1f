//! [`Source`]: what a slot of the registry holds, one variant per kind of
//! socket; and [`FdSource`], to register any raw descriptor.
//!
//! Always true: a source's key is its token; the variant decides how an
//! event for that token is dispatched (accept, read and write, receive, or
//! the custom handler's `on_ready`).

use std::os::fd::{AsRawFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::connection::Connection;
use crate::datagram::Datagram;
use crate::listener::Listener;
use crate::{Addr, SourceHandler, TimerId};

/// What a slot of the reactor's registry holds.
///
/// Listeners and datagram sockets are boxed so that the slab's entry, sized
/// for the largest variant, stays the size of a connection: connections are
/// the many, listeners the few. A connection is kept inline on purpose:
/// boxing it would cost an allocation and a pointer chase per connection.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Source {
    Listener(Box<Listener>),
    Stream(Connection),
    Datagram(Box<Datagram>),
    Custom(Box<Custom>),
}

impl Source {
    /// The address the source is bound to, when it has one.
    pub(crate) fn local_addr(&self) -> Option<Addr> {
        match self {
            Source::Listener(l) => Some(l.local.clone()),
            Source::Stream(c) => c.stream.local_addr().ok(),
            Source::Datagram(d) => Some(d.local.clone()),
            Source::Custom(_) => None,
        }
    }

    /// The user timers owned by this source.
    pub(crate) fn timers_mut(&mut self) -> Option<&mut Vec<TimerId>> {
        match self {
            Source::Stream(c) => Some(&mut c.timers),
            Source::Datagram(d) => Some(&mut d.timers),
            Source::Custom(c) => Some(&mut c.timers),
            Source::Listener(_) => None,
        }
    }
}

/// A user-registered source and its handler.
pub(crate) struct Custom {
    /// Taken out while one of its callbacks runs.
    pub(crate) handler: Option<Box<dyn SourceHandler>>,
    pub(crate) timers: Vec<TimerId>,
    /// On the ready list for `on_revisit` ([`crate::Context::revisit`]).
    pub(crate) revisit: bool,
}

/// A raw file descriptor as a [`mio::event::Source`], for descriptors mio
/// has no type for: stdin, a terminal, a pipe made elsewhere.
///
/// It does not own the descriptor: dropping it closes nothing.
///
/// ```
/// use evloop::FdSource;
/// let stdin = FdSource::new(0);
/// assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&stdin), 0);
/// ```
///
/// A whole program that registers one, with the handler that owns the
/// descriptor, is in the docs of [`SourceHandler`].
#[derive(Debug, Clone, Copy)]
pub struct FdSource(RawFd);

impl FdSource {
    /// Wraps a descriptor. The caller keeps it open while it is registered,
    /// and in non-blocking mode if reads must not block the loop.
    pub fn new(fd: RawFd) -> Self {
        FdSource(fd)
    }
}

impl AsRawFd for FdSource {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl mio::event::Source for FdSource {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> std::io::Result<()> {
        SourceFd(&self.0).register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> std::io::Result<()> {
        SourceFd(&self.0).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> std::io::Result<()> {
        SourceFd(&self.0).deregister(registry)
    }
}
