//! Sockets handed over by a service manager: systemd's socket activation,
//! the protocol of `sd_listen_fds(3)`.
//!
//! The manager binds the sockets (a `.socket` unit), starts the program
//! with them open at descriptors 3, 4, ... and says so in three
//! environment variables:
//!
//! | variable | holds |
//! |---|---|
//! | `LISTEN_PID` | the pid of the process the sockets are for |
//! | `LISTEN_FDS` | how many there are, from descriptor 3 on |
//! | `LISTEN_FDNAMES` | optional: their names (`FileDescriptorName=`), separated by `:` |
//!
//! [`listen_fds`] reads them, takes ownership of the descriptors and tells
//! each socket's kind, so that the program can hand them to a reactor
//! ([`Reactor::adopt_tcp_listener`](crate::Reactor::adopt_tcp_listener),
//! [`adopt_unix_listener`](crate::Reactor::adopt_unix_listener),
//! [`adopt_udp`](crate::Reactor::adopt_udp)) instead of binding its own.
//!
//! Always true:
//! - descriptors are claimed only when `LISTEN_PID` is this process's pid:
//!   variables inherited from a parent that was activated itself are
//!   ignored, and left alone;
//! - when they are this process's, the three variables are removed before
//!   anything else is done, as `sd_listen_fds(1)` does, so that the
//!   program's children do not inherit them and a second call finds
//!   nothing, and never claims a descriptor twice;
//! - every claimed descriptor gets `FD_CLOEXEC`: the program's children do
//!   not inherit the sockets either.

use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};

use crate::sys;

/// The first descriptor a service manager hands over
/// (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// One socket handed over by the service manager, by kind, with its name
/// from `LISTEN_FDNAMES` (`None` when the variable is not set or the name
/// is empty).
#[derive(Debug)]
pub enum Activated {
    /// A listening TCP socket (IPv4 or IPv6): `ListenStream=` with a port
    /// or an address.
    TcpListener(std::net::TcpListener, Option<String>),
    /// A listening Unix stream socket: `ListenStream=` with a path.
    UnixListener(UnixListener, Option<String>),
    /// A UDP socket: `ListenDatagram=` with a port or an address.
    Udp(std::net::UdpSocket, Option<String>),
    /// A Unix datagram socket: `ListenDatagram=` with a path.
    UnixDatagram(UnixDatagram, Option<String>),
    /// Anything else: a stream socket that is not listening (`Accept=yes`
    /// hands over one connection), another family or type, a FIFO, a file.
    Other(OwnedFd, Option<String>),
}

impl Activated {
    /// The socket's name from `LISTEN_FDNAMES`, if it has one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Activated::TcpListener(_, name)
            | Activated::UnixListener(_, name)
            | Activated::Udp(_, name)
            | Activated::UnixDatagram(_, name)
            | Activated::Other(_, name) => name.as_deref(),
        }
    }
}

/// The sockets the service manager handed to this process, in descriptor
/// order (3, 4, ...). Empty when the program was not socket-activated:
/// `LISTEN_PID` or `LISTEN_FDS` is not set, or `LISTEN_PID` names another
/// process.
///
/// When the variables are this process's, they are removed (as
/// `sd_listen_fds(1)` does), and each descriptor is claimed: it is owned
/// by the value returned, and set close-on-exec. Call it once, early in
/// `main`, before the program starts threads: removing an environment
/// variable races with any other thread reading the environment.
///
/// A program that serves a socket from systemd if it has one, and binds its
/// own otherwise:
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use evloop::activation::{listen_fds, Activated};
/// use evloop::{protocols::echo::Echo, Addr, ListenerOptions, Reactor};
///
/// let mut reactor = Reactor::new()?;
/// let mut serving = 0;
/// for socket in listen_fds()? {
///     match socket {
///         Activated::TcpListener(listener, _name) => {
///             reactor.adopt_tcp_listener(listener, ListenerOptions::default(), |_: &Addr| Echo)?;
///             serving += 1;
///         }
///         other => eprintln!("ignoring a socket I do not serve: {other:?}"),
///     }
/// }
/// if serving == 0 {
///     reactor.listen_tcp("127.0.0.1:7000".parse()?, |_: &Addr| Echo)?;
/// }
/// reactor.run()?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`io::ErrorKind::InvalidData`] when a variable is malformed: not
/// Unicode, a pid or a count that is not a number, a count past the
/// highest descriptor, names that are not one per descriptor. An error
/// from the system when a descriptor it names is not open (`EBADF`), or
/// its kind cannot be read; descriptors claimed before it are closed.
pub fn listen_fds() -> io::Result<Vec<Activated>> {
    let pid = env_var("LISTEN_PID")?;
    let fds = env_var("LISTEN_FDS")?;
    let names = env_var("LISTEN_FDNAMES")?;
    let own_pid = std::process::id();
    if for_pid(pid.as_deref(), own_pid)? {
        // Removed before the descriptors are claimed, so that nothing can
        // claim them twice, and whatever follows, so that no child
        // inherits them. Edition 2021: `remove_var` is a safe call here.
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(name);
        }
    }
    let Some(handed) = parse(pid.as_deref(), fds.as_deref(), names.as_deref(), own_pid)? else {
        return Ok(Vec::new());
    };
    let mut sockets = Vec::with_capacity(handed.len());
    for (fd, name) in handed {
        let owned = sys::claim_inherited_fd(fd)
            .map_err(|err| io::Error::new(err.kind(), format!("LISTEN_FDS: descriptor {fd}: {err}")))?;
        sockets.push(classify(owned, name)?);
    }
    Ok(sockets)
}

/// Tells a claimed descriptor's kind and converts it to the matching
/// socket type.
fn classify(fd: OwnedFd, name: Option<String>) -> io::Result<Activated> {
    let Some(kind) = sys::socket_kind(fd.as_fd())? else {
        return Ok(Activated::Other(fd, name));
    };
    let inet = kind.domain == libc::AF_INET || kind.domain == libc::AF_INET6;
    let unix = kind.domain == libc::AF_UNIX;
    Ok(match kind.ty {
        libc::SOCK_STREAM if kind.listening && inet => Activated::TcpListener(fd.into(), name),
        libc::SOCK_STREAM if kind.listening && unix => Activated::UnixListener(fd.into(), name),
        libc::SOCK_DGRAM if inet => Activated::Udp(fd.into(), name),
        libc::SOCK_DGRAM if unix => Activated::UnixDatagram(fd.into(), name),
        _ => Activated::Other(fd, name),
    })
}

/// An environment variable: `None` if unset, `InvalidData` if not Unicode.
fn env_var(name: &str) -> io::Result<Option<String>> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(invalid(format!("{name} is not valid Unicode"))),
    }
}

/// Whether `LISTEN_PID` names the process `own_pid`.
fn for_pid(pid: Option<&str>, own_pid: u32) -> io::Result<bool> {
    let Some(pid) = pid else {
        return Ok(false);
    };
    match pid.parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(pid == own_pid),
        _ => Err(invalid(format!("LISTEN_PID is not a process id: {pid:?}"))),
    }
}

/// Descriptors handed over, each with its name.
type Handed = Vec<(RawFd, Option<String>)>;

/// The descriptors and names the three variables' values hand to the
/// process `own_pid`: `None` when they hand it nothing (no `LISTEN_PID` or
/// `LISTEN_FDS`, or a `LISTEN_PID` of another process). A pure function of
/// its arguments; [`listen_fds`] gives it the environment's values.
fn parse(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    own_pid: u32,
) -> io::Result<Option<Handed>> {
    if !for_pid(pid, own_pid)? {
        return Ok(None);
    }
    let Some(fds) = fds else {
        return Ok(None);
    };
    let count: RawFd = match fds.parse::<u32>().ok().and_then(|n| RawFd::try_from(n).ok()) {
        Some(n) if n <= RawFd::MAX - LISTEN_FDS_START => n,
        _ => {
            return Err(invalid(format!(
                "LISTEN_FDS is not a count of descriptors: {fds:?}"
            )))
        }
    };
    let names: Vec<Option<String>> = match names {
        None => vec![None; count as usize],
        Some(names) => {
            let names: Vec<Option<String>> = names
                .split(':')
                .map(|name| (!name.is_empty()).then(|| name.to_string()))
                .collect();
            if names.len() != count as usize {
                return Err(invalid(format!(
                    "LISTEN_FDNAMES has {} names for {count} descriptors",
                    names.len()
                )));
            }
            names
        }
    };
    let fds = (LISTEN_FDS_START..LISTEN_FDS_START + count).zip(names).collect();
    Ok(Some(fds))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 4242;

    #[test]
    fn nothing_set_hands_nothing() {
        assert!(parse(None, None, None, ME).expect("valid").is_none());
        assert!(parse(None, Some("2"), None, ME).expect("valid").is_none());
        assert!(parse(Some("4242"), None, None, ME).expect("valid").is_none());
    }

    #[test]
    fn another_process_pid_hands_nothing() {
        let parsed = parse(Some("4243"), Some("2"), Some("a:b"), ME).expect("valid");
        assert!(parsed.is_none());
        // Not ours, so not checked further either.
        assert!(parse(Some("1"), Some("many"), None, ME).expect("valid").is_none());
    }

    #[test]
    fn own_pid_hands_descriptors_from_3_with_names() {
        let parsed = parse(Some("4242"), Some("3"), Some("web::dns"), ME).expect("valid");
        let expected = vec![
            (3, Some("web".to_string())),
            (4, None),
            (5, Some("dns".to_string())),
        ];
        assert_eq!(parsed, Some(expected));
        let unnamed = parse(Some("4242"), Some("2"), None, ME).expect("valid");
        assert_eq!(unnamed, Some(vec![(3, None), (4, None)]));
        assert_eq!(
            parse(Some("4242"), Some("0"), None, ME).expect("valid"),
            Some(vec![])
        );
    }

    #[test]
    fn malformed_values_are_invalid_data() {
        let cases = [
            (Some("4242"), Some("two"), None),
            (Some("4242"), Some("-1"), None),
            (Some("4242"), Some(""), None),
            (Some("4242"), Some("2147483647"), None),
            (Some("4242"), Some("2"), Some("only-one")),
            (Some("pid"), Some("1"), None),
            (Some("0"), Some("1"), None),
        ];
        for (pid, fds, names) in cases {
            let err = parse(pid, fds, names, ME).expect_err("malformed");
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidData,
                "{pid:?} {fds:?} {names:?}"
            );
            assert!(err.to_string().starts_with("LISTEN_"), "{err}");
        }
    }
}
