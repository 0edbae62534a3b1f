//! The crate's [`Error`]: what can go wrong that is more than a plain IO
//! error on one connection.
//!
//! An error on one connection never becomes an `Error`: it closes that
//! connection, is logged, and reaches the handler as a [`crate::CloseReason`].
//! `Error` is for the caller of [`crate::Reactor`]: a socket that cannot be
//! bound (the message names the address), a poll that fails, a table that
//! is full.

use std::fmt;
use std::io;

/// Errors returned by [`crate::Reactor`] methods and by [`crate::Reactor::run`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A socket could not be bound or listened on: address in use, no
    /// permission, an address this machine does not have.
    Bind {
        /// The address as given (`127.0.0.1:7000`, `/tmp/echo.sock`).
        addr: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// The poll itself or a registration failed: the loop cannot go on.
    Io(io::Error),
    /// Every slot a token can name is in use.
    Full,
    /// A signal that must not be handled: SIGKILL and SIGSTOP cannot be
    /// caught; SIGSEGV, SIGILL, SIGFPE and SIGBUS mean the program itself
    /// went wrong, and must end it (signal-hook's `FORBIDDEN` list).
    ForbiddenSignal(i32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::Io(err) => write!(f, "event loop failed: {err}"),
            Error::Full => f.write_str("too many sources registered"),
            Error::ForbiddenSignal(signal) => {
                write!(f, "signal {signal} cannot be handled as an event of the loop")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } => Some(source),
            Error::Io(err) => Some(err),
            Error::Full | Error::ForbiddenSignal(_) => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::Io(err)
    }
}
