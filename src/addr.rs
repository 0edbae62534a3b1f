//! [`Addr`]: the address of a peer or a local socket, TCP/UDP or Unix.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// An address of either family evloop speaks: internet (IPv4 or IPv6) or a
/// Unix socket path. Unix sockets without a name (the client end of most
/// Unix stream connections) have no path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    /// An IPv4 or IPv6 address and port. Displays as `ip:port`, with IPv6
    /// in brackets (`[::1]:7000`).
    Inet(SocketAddr),
    /// A Unix socket: its path, or `None` for an unnamed socket.
    Unix(Option<PathBuf>),
}

impl Addr {
    /// The internet address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(addr) => Some(*addr),
            Addr::Unix(_) => None,
        }
    }

    /// The Unix socket path, if this is a named Unix socket.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Addr::Unix(Some(path)) => Some(path),
            Addr::Unix(None) | Addr::Inet(_) => None,
        }
    }

    pub(crate) fn from_unix(addr: &std::os::unix::net::SocketAddr) -> Addr {
        Addr::Unix(addr.as_pathname().map(Path::to_path_buf))
    }
}

impl From<SocketAddr> for Addr {
    fn from(addr: SocketAddr) -> Self {
        Addr::Inet(addr)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(addr) => write!(f, "{addr}"),
            Addr::Unix(Some(path)) => write!(f, "{}", path.display()),
            Addr::Unix(None) => f.write_str("(unnamed)"),
        }
    }
}
