//! [`Handle`]: how other threads reach a running reactor.
//!
//! A handle is a [`mio::Waker`] plus the sending end of a channel. Each call
//! puts a command on the channel, then wakes the poll unless a wakeup is
//! already on its way: commands sent before the reactor gets to them cost
//! one wakeup together, however many threads send them. The reactor runs
//! the commands on its own thread at step 7 of that turn. Handles are
//! `Send + Sync + Clone`; the reactor itself stays on one thread.
//!
//! Stopping a reactor from another thread:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use evloop::Reactor;
//!
//! let (tx, rx) = std::sync::mpsc::channel();
//! let thread = std::thread::spawn(move || -> Result<(), evloop::Error> {
//!     let mut reactor = Reactor::new()?;
//!     tx.send(reactor.handle()).expect("main thread waits for the handle");
//!     reactor.run()
//! });
//! let handle = rx.recv()?;
//! // Stop accepting, let connections finish for up to a second, return.
//! assert!(handle.shutdown(Duration::from_secs(1)));
//! thread.join().expect("reactor thread panicked")?;
//! // The reactor is gone: commands find nobody.
//! assert!(!handle.stop());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use mio::Waker;

use crate::Reactor;

/// A command from another thread.
pub(crate) enum Command {
    Stop,
    Shutdown(Duration),
    Run(Box<dyn FnOnce(&mut Reactor) + Send>),
}

/// A `Send + Clone` handle to a reactor, for other threads.
///
/// Another thread runs a closure on the reactor's thread, with the reactor
/// itself (here, to read a listener's address), then stops it:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use evloop::{protocols::echo::Echo, Addr, Reactor};
///
/// let mut reactor = Reactor::new()?;
/// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Echo)?;
///
/// let handle = reactor.handle();
/// let other = std::thread::spawn(move || {
///     let (tx, rx) = mpsc::channel();
///     let queued = handle.run(move |reactor| {
///         let _ = tx.send(reactor.local_addr(key)); // runs between two turns
///     });
///     let answer = rx.recv_timeout(Duration::from_secs(5));
///     handle.stop(); // `run` returns at the end of the current turn
///     (queued, answer)
/// });
/// reactor.run()?;
/// let (queued, answer) = other.join().expect("thread panicked");
/// assert!(queued);
/// assert_eq!(answer?, reactor.local_addr(key));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Handle {
    waker: Arc<Waker>,
    commands: mpsc::Sender<Command>,
    /// Set by the sender that wakes the reactor, cleared by the reactor
    /// before it takes the commands ([`Handle::take_wakeup`]): while it is
    /// set, a wakeup is on its way and will find every command sent since.
    wake_pending: Arc<AtomicBool>,
    /// Wakeups made, for tests.
    #[cfg(test)]
    wakeups: Arc<std::sync::atomic::AtomicUsize>,
}

impl Handle {
    pub(crate) fn new(waker: Arc<Waker>, commands: mpsc::Sender<Command>) -> Self {
        Handle {
            waker,
            commands,
            wake_pending: Arc::new(AtomicBool::new(false)),
            #[cfg(test)]
            wakeups: Arc::default(),
        }
    }

    fn send(&self, command: Command) -> bool {
        if self.commands.send(command).is_err() {
            return false;
        }
        // The command is on the channel before the flag is read: whoever
        // finds the flag set knows the reactor has not yet cleared it, and
        // it clears it (with a swap that reads this one) before it drains.
        if self.wake_pending.swap(true, Ordering::AcqRel) {
            return true;
        }
        #[cfg(test)]
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        if self.waker.wake().is_ok() {
            return true;
        }
        // Nobody is coming: let the next sender try again.
        self.wake_pending.store(false, Ordering::Release);
        false
    }

    /// For the reactor, before it drains the channel at step 7: the next
    /// command sent wakes it again.
    pub(crate) fn take_wakeup(&self) {
        self.wake_pending.swap(false, Ordering::AcqRel);
    }

    /// Whether a wakeup is on its way: commands wait that the reactor has
    /// not yet taken.
    pub(crate) fn is_wake_pending(&self) -> bool {
        self.wake_pending.load(Ordering::Acquire)
    }

    /// Makes `run` return at the end of the current turn, leaving every
    /// source open. Returns `false` if the reactor is gone.
    pub fn stop(&self) -> bool {
        self.send(Command::Stop)
    }

    /// Starts a graceful shutdown: stop accepting, tell every handler, give
    /// connections up to `timeout` to flush and close, then `run` returns.
    /// Returns `false` if the reactor is gone.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.send(Command::Shutdown(timeout))
    }

    /// Runs `f` on the reactor's thread, between two turns, with the
    /// reactor itself: to add a listener, send to a connection by key, read
    /// a count. Returns `false` if the reactor is gone (then `f` never
    /// runs).
    pub fn run<F>(&self, f: F) -> bool
    where
        F: FnOnce(&mut Reactor) + Send + 'static,
    {
        self.send(Command::Run(Box::new(f)))
    }

    /// The reactor's counters and gauges ([`crate::metrics::Snapshot`]),
    /// copied at its next turn. Blocks the calling thread until then, at
    /// most `timeout`; `None` if the reactor is gone or took longer. Not
    /// for the reactor's own thread, which would wait for itself: there,
    /// [`Reactor::metrics`] or [`crate::Context::metrics`].
    pub fn metrics(&self, timeout: Duration) -> Option<crate::metrics::Snapshot> {
        self.ask(timeout, |reactor| reactor.metrics())
    }

    /// The flight recorder's events ([`Reactor::trace`]), copied at the
    /// reactor's next turn; blocks as [`Handle::metrics`] does.
    pub fn trace(&self, timeout: Duration) -> Option<Vec<crate::metrics::TraceEvent>> {
        self.ask(timeout, |reactor| reactor.trace())
    }

    /// Has the reactor write its flight recorder to the log at its next
    /// turn ([`Reactor::dump_trace`]). Returns `false` if it is gone.
    pub fn dump_trace(&self) -> bool {
        self.run(|reactor| reactor.dump_trace())
    }

    /// Runs `read` on the reactor and waits for its answer.
    fn ask<T: Send + 'static>(
        &self,
        timeout: Duration,
        read: impl FnOnce(&mut Reactor) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if !self.run(move |reactor| {
            let _ = tx.send(read(reactor));
        }) {
            return None;
        }
        rx.recv_timeout(timeout).ok()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use crate::Reactor;

    #[test]
    fn commands_sent_before_the_reactor_drains_cost_one_wakeup() {
        let mut reactor = Reactor::new().expect("reactor");
        let handle = reactor.handle();
        let ran = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let handle = handle.clone();
                let ran = Arc::clone(&ran);
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        let ran = Arc::clone(&ran);
                        assert!(handle.run(move |_| {
                            ran.fetch_add(1, Ordering::Relaxed);
                        }));
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.join().expect("sender");
        }
        assert_eq!(
            handle.wakeups.load(Ordering::Relaxed),
            1,
            "100 commands, one wakeup"
        );
        reactor.run_once(Some(Duration::from_secs(5))).expect("turn");
        assert_eq!(ran.load(Ordering::Relaxed), 100, "all ran in the turn woken");
        // Drained: the next command wakes it again.
        let again = Arc::clone(&ran);
        assert!(handle.run(move |_| {
            again.fetch_add(1, Ordering::Relaxed);
        }));
        assert_eq!(handle.wakeups.load(Ordering::Relaxed), 2);
        reactor.run_once(Some(Duration::from_secs(5))).expect("turn");
        assert_eq!(ran.load(Ordering::Relaxed), 101);
    }
}
