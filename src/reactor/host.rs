//! A reactor driven by another loop (a GUI's, tokio's, another reactor's):
//! the reactor's readiness as one descriptor ([`AsRawFd`], [`AsFd`]) and
//! the time until it next needs a turn ([`Reactor::next_timeout`]).
//!
//! The descriptor is the epoll instance. It is readable while an event of
//! any of the reactor's sources (the waker of its [`crate::Handle`]
//! included) waits to be taken by a poll; every other reason for a turn
//! is in `next_timeout`. So a host that waits until the descriptor is
//! readable or `next_timeout` has passed, then runs
//! `reactor.run_once(Some(Duration::ZERO))`, misses nothing, whether it
//! watches the descriptor level-triggered (`poll(2)`) or edge-triggered
//! (tokio's `AsyncFd`, a mio `Poll`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use crate::Reactor;

impl Reactor {
    /// How long a host loop may wait before the next
    /// [`run_once`](Reactor::run_once), when the reactor's descriptor
    /// ([`AsRawFd`]) stays unreadable: `Some(Duration::ZERO)` when a turn
    /// has work already (the ready list, deferred writes, a stop or
    /// shutdown asked for, an [`on_start`](Reactor::on_start) hook not
    /// yet run, commands from a [`crate::Handle`] not yet taken, or more
    /// events than the last poll could hold); otherwise the time to the
    /// earliest timer (the handlers' and the reactor's) or to a shutdown's
    /// deadline; `None` when only an event can give the reactor work.
    ///
    /// The time is not rounded: a host whose wait counts whole
    /// milliseconds rounds it up, or it wakes before the deadline and
    /// turns for nothing until it passes.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use evloop::Reactor;
    ///
    /// let mut reactor = Reactor::new()?;
    /// assert_eq!(reactor.next_timeout(), None); // only the descriptor can wake it
    /// reactor.set_timer(Duration::from_secs(60), |_| {})?;
    /// let wait = reactor.next_timeout().expect("the timer's deadline");
    /// assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60));
    /// reactor.stop();
    /// assert_eq!(reactor.next_timeout(), Some(Duration::ZERO)); // a turn has work
    /// # Ok(())
    /// # }
    /// ```
    pub fn next_timeout(&mut self) -> Option<Duration> {
        if !self.start.is_empty() || self.more_events || self.handle.is_wake_pending() {
            return Some(Duration::ZERO);
        }
        self.poll_timeout(None)
    }
}

/// The reactor's epoll descriptor, for a host loop to wait on: readable
/// when a source has an event for the reactor. It is the same descriptor
/// for the reactor's whole life, open until the reactor is dropped. Only
/// to wait on: a host that reads it, registers it in this same reactor,
/// or closes it breaks the reactor. With [`Reactor::next_timeout`], a host
/// loop on its own mio `Poll`, which never calls `run`:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::{cell::Cell, os::fd::AsRawFd, rc::Rc, time::Duration};
/// use evloop::Reactor;
/// use mio::{unix::SourceFd, Events, Interest, Poll, Token};
///
/// let mut reactor = Reactor::new()?;
/// let fired = Rc::new(Cell::new(false));
/// let flag = Rc::clone(&fired);
/// reactor.set_timer(Duration::from_millis(10), move |_| flag.set(true))?;
///
/// // The host's loop: the reactor is one descriptor among the host's.
/// let mut host = Poll::new()?;
/// let fd = reactor.as_raw_fd();
/// host.registry().register(&mut SourceFd(&fd), Token(0), Interest::READABLE)?;
/// let mut events = Events::with_capacity(16);
/// while !fired.get() {
///     host.poll(&mut events, reactor.next_timeout())?;
///     reactor.run_once(Some(Duration::ZERO))?; // never waits in there
/// }
/// host.registry().deregister(&mut SourceFd(&fd))?;
/// # Ok(())
/// # }
/// ```
impl AsRawFd for Reactor {
    fn as_raw_fd(&self) -> RawFd {
        self.core.poll.as_raw_fd()
    }
}

/// The reactor's epoll descriptor, borrowed: see [`AsRawFd`] for what a
/// host may do with it.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::os::fd::{AsFd, AsRawFd};
/// use evloop::Reactor;
///
/// let reactor = Reactor::new()?;
/// assert_eq!(reactor.as_fd().as_raw_fd(), reactor.as_raw_fd());
/// # Ok(())
/// # }
/// ```
impl AsFd for Reactor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.core.poll.registry().as_fd()
    }
}
