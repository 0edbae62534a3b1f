//! [`Handle`]: how other threads reach a running reactor.
//!
//! A handle is a [`mio::Waker`] plus the sending end of a channel. Each call
//! puts a command on the channel, then wakes the poll; the reactor runs the
//! commands on its own thread at the end of that turn. Handles are
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
}

impl Handle {
    pub(crate) fn new(waker: Arc<Waker>, commands: mpsc::Sender<Command>) -> Self {
        Handle { waker, commands }
    }

    fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok() && self.waker.wake().is_ok()
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
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}
