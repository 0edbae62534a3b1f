//! Sockets and every system call evloop makes through `unsafe`: the stream,
//! listening and datagram sockets the reactor drives, and the few calls the
//! standard library and mio do not offer (`sendmsg` with flags, `sendfile`,
//! `SO_LINGER`, `listen` again for a larger backlog, a peek at a Unix
//! datagram's size, `faccessat`, `openat2` to open a name beneath a
//! directory), the sockets built with `socket2` to set
//! `SO_REUSEPORT` before they are bound, and the descriptors a service
//! manager hands over (`fcntl`, `getsockopt`, taking ownership of a
//! descriptor number), and `O_NONBLOCK` read and set on stdin's open file
//! description (`fcntl`) for [`crate::stdin`].
//!
//! Always true: this is the only file in `src/` with `unsafe`; every block
//! has a `SAFETY` comment saying why the call cannot touch memory it should
//! not. Each call passes descriptors owned by a value that outlives it, and
//! buffers whose pointer and length come from one Rust slice.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use log::{debug, trace};
use mio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener, UnixStream};

use crate::tls::TlsStream;
use crate::write_queue::{copy_file_region, Sink};
use crate::Addr;

/// A connected stream socket, TCP or Unix, or TCP with TLS on it.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            Stream::Unix(s) => f.debug_tuple("Unix").field(s).finish(),
            Stream::Tls(s) => f.debug_tuple("Tls").field(&s.tcp).finish(),
        }
    }
}

impl Stream {
    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
            Stream::Tls(s) => &mut s.tcp,
        }
    }

    /// Shuts a direction down; with TLS, `close_notify` goes first.
    pub(crate) fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tls(s) => {
                if how != Shutdown::Read {
                    // As far as the socket takes it: a full socket when
                    // the queue just emptied is all but impossible.
                    if let Err(err) = s.close_notify() {
                        trace!("close_notify: {err}");
                    }
                }
                s.tcp.shutdown(how)
            }
        }
    }

    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
            Stream::Tls(s) => s.tcp.take_error(),
        }
    }

    /// Ends a TLS stream's output with `close_notify`, once, as far as the
    /// socket takes it (nothing to do without TLS).
    pub(crate) fn close_notify(&mut self) {
        if let Stream::Tls(s) = self {
            if let Err(err) = s.close_notify() {
                trace!("close_notify: {err}");
            }
        }
    }

    /// TLS records that wait for the socket: output not yet sent although
    /// the write queue may be empty.
    pub(crate) fn has_pending_output(&self) -> bool {
        match self {
            Stream::Tls(s) => s.has_pending_output(),
            Stream::Tcp(_) | Stream::Unix(_) => false,
        }
    }

    /// Sends what waits below the write queue (TLS records), as far as the
    /// socket takes it.
    pub(crate) fn write_pending(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.write_pending(),
            Stream::Tcp(_) | Stream::Unix(_) => Ok(()),
        }
    }

    /// Whether a short read from the socket may be taken for an empty
    /// socket by a TLS stream's reads (see `TlsStream::trust_short_reads`).
    pub(crate) fn trust_short_reads(&mut self, trust: bool) {
        if let Stream::Tls(s) = self {
            s.trust_short_reads(trust);
        }
    }

    /// Whether a TLS stream's input is only read to be dropped (see
    /// `TlsStream::discard_input`).
    pub(crate) fn discard_tls_input(&mut self, discard: bool) {
        if let Stream::Tls(s) = self {
            s.discard_input(discard);
        }
    }

    /// Whether this is a TLS stream.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// For a TLS stream: whether its last read ended because the socket
    /// had nothing more (not at a `close_notify` or an error record).
    pub(crate) fn tls_drained(&self) -> bool {
        match self {
            Stream::Tls(s) => s.drained(),
            Stream::Tcp(_) | Stream::Unix(_) => true,
        }
    }

    /// Whether a TLS handshake is still going on (never, without TLS).
    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Stream::Tls(s) => s.is_handshaking(),
            Stream::Tcp(_) | Stream::Unix(_) => false,
        }
    }

    pub(crate) fn peer_addr(&self) -> io::Result<Addr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(Addr::Inet),
            Stream::Unix(s) => s.peer_addr().map(|a| Addr::from_unix(&a)),
            Stream::Tls(s) => s.tcp.peer_addr().map(Addr::Inet),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Stream::Tcp(s) => s.local_addr().map(Addr::Inet),
            Stream::Unix(s) => s.local_addr().map(|a| Addr::from_unix(&a)),
            Stream::Tls(s) => s.tcp.local_addr().map(Addr::Inet),
        }
    }

    /// Makes the close send a reset (`SO_LINGER` with a zero timeout).
    pub(crate) fn set_reset_on_close(&self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: the fd is a live socket owned by `self`; the option value
        // is a properly initialised `linger` and its exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            trace!("SO_LINGER: {}", io::Error::last_os_error());
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.tcp.as_raw_fd(),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
            Stream::Tls(s) => s.tcp.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    /// One buffer goes out with `send`, several with `sendmsg`: both take
    /// the socket layer's short path, where `writev` first passes through
    /// the file layer (on a broadcast, one call per receiver per turn).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match (self, bufs) {
            (Stream::Tls(s), _) => s.write_vectored(bufs),
            (this, [one]) => this.write(one),
            (this, _) => send_vectored(this.as_raw_fd(), bufs, libc::MSG_NOSIGNAL),
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
            Stream::Tls(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for Stream {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        if let Stream::Tls(tls) = self {
            // The kernel would send the file as it is: read and encrypt.
            return copy_file_region(&mut **tls, file, offset, len);
        }
        let mut off = offset as libc::off_t;
        // SAFETY: both fds are open for the duration of the call (the socket
        // is owned by `self`, the file is borrowed); `off` is a valid,
        // exclusively borrowed offset the kernel updates.
        let sent = unsafe { libc::sendfile(self.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // This pair of descriptors cannot use sendfile: copy instead.
            Some(libc::EINVAL) | Some(libc::ENOSYS) => copy_file_region(self, file, offset, len),
            _ => Err(err),
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        copy_file_region(self, file, offset, len)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn write_vectored_more(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(tcp) => send_vectored(tcp.as_raw_fd(), bufs, libc::MSG_MORE | libc::MSG_NOSIGNAL),
            Stream::Unix(_) | Stream::Tls(_) => self.write_vectored(bufs),
        }
    }
}

/// `sendmsg` of `bufs` on the socket `fd`, with `flags`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_vectored(fd: std::os::fd::RawFd, bufs: &[io::IoSlice<'_>], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data); the
    // iovec array points at `bufs`, which `IoSlice` lays out as `iovec` and
    // which outlives the call; the caller's socket keeps `fd` open.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len() as _;
        libc::sendmsg(fd, &msg, flags)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// A listening socket, TCP or Unix.
pub(crate) enum ListenSocket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl ListenSocket {
    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            ListenSocket::Tcp(l) => l,
            ListenSocket::Unix(l) => l,
        }
    }

    /// Sets the kernel's queue of pending connections to `backlog`:
    /// `listen` on a socket already listening only changes its backlog.
    pub(crate) fn raise_backlog(&self, backlog: libc::c_int) {
        let fd = match self {
            ListenSocket::Tcp(l) => l.as_raw_fd(),
            ListenSocket::Unix(l) => l.as_raw_fd(),
        };
        // SAFETY: listen(2) on a descriptor owned by `self`, open for the
        // duration of the call; it touches no memory of ours.
        if unsafe { libc::listen(fd, backlog) } != 0 {
            debug!("raising the listen backlog: {}", io::Error::last_os_error());
        }
    }

    pub(crate) fn accept(&self) -> io::Result<(Stream, Addr)> {
        match self {
            ListenSocket::Tcp(l) => {
                let (stream, peer) = l.accept()?;
                // Small replies must not wait for Nagle's timer.
                let _ = stream.set_nodelay(true);
                Ok((Stream::Tcp(stream), Addr::Inet(peer)))
            }
            ListenSocket::Unix(l) => {
                let (stream, peer) = l.accept()?;
                Ok((Stream::Unix(stream), Addr::from_unix(&peer)))
            }
        }
    }
}

/// A datagram socket, UDP or Unix.
pub(crate) enum DgramSocket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl DgramSocket {
    pub(crate) fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Addr)> {
        match self {
            DgramSocket::Udp(s) => s.recv_from(buf).map(|(n, a)| (n, Addr::Inet(a))),
            DgramSocket::Unix(s) => s.recv_from(buf).map(|(n, a)| (n, Addr::from_unix(&a))),
        }
    }

    /// The size of the next Unix datagram when it is larger than `room`
    /// (Linux reports a datagram's real size to a peek with `MSG_TRUNC`).
    /// UDP datagrams always fit the scratch buffer: `None`.
    pub(crate) fn oversized(&self, room: usize) -> io::Result<Option<usize>> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let DgramSocket::Unix(s) = self {
            let mut byte = 0u8;
            // SAFETY: the fd is a live socket owned by `s`; the buffer is one
            // valid, exclusively borrowed byte and its length is passed.
            let len = unsafe {
                libc::recv(
                    s.as_raw_fd(),
                    (&mut byte as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                )
            };
            if len < 0 {
                return Err(io::Error::last_os_error());
            }
            let len = len as usize;
            return Ok((len > room).then_some(len));
        }
        let _ = room;
        Ok(None)
    }

    pub(crate) fn send_to(&self, data: &[u8], to: &Addr) -> io::Result<usize> {
        match (self, to) {
            (DgramSocket::Udp(s), Addr::Inet(addr)) => s.send_to(data, *addr),
            (DgramSocket::Unix(s), Addr::Unix(Some(path))) => s.send_to(data, path),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "address of the wrong family",
            )),
        }
    }
}

/// Whether this process may open `path` for reading: `faccessat(2)` with
/// the effective ids, as `open` checks them.
pub(crate) fn may_read(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the
    // call; faccessat only reads it.
    unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), libc::R_OK, libc::AT_EACCESS) == 0 }
}

/// Makes a FIFO at `path` (for tests of what serving one must refuse).
/// Opens `name` (relative, no NUL) read-only with `flags` beneath the
/// directory `dir` (`openat2` with `RESOLVE_BENEATH`): the kernel refuses,
/// with `EXDEV`, any resolution that would leave `dir`, an absolute symlink
/// included.
#[cfg(target_os = "linux")]
pub(crate) fn open_beneath(dir: BorrowedFd<'_>, name: &Path, flags: libc::c_int) -> io::Result<File> {
    let name = CString::new(name.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `open_how` is plain integers; all zeros is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | flags) as u64;
    how.resolve = libc::RESOLVE_BENEATH;
    // SAFETY: `dir` is an open descriptor borrowed for the call, `name` a
    // C string and `how` an `open_how` of the size passed, both alive for
    // the call; the kernel only reads them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("openat2 returned no descriptor"))?;
    // SAFETY: a descriptor `openat2` just returned, owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
pub(crate) fn mkfifo(path: &Path) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: mkfifo(3) with a valid NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP listener on `addr` with `SO_REUSEADDR` (as std and mio set on
/// listeners) and `SO_REUSEPORT`, listening with `backlog`, non-blocking.
/// Neither std nor mio can set an option between making a socket and
/// binding it; `socket2` can, without `unsafe`.
pub(crate) fn tcp_listener_reuse_port(addr: SocketAddr, backlog: libc::c_int) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    // `Socket::new` sets close-on-exec, as std does.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A hook given a new socket before it connects ([`crate::ConnectOptions::configure`]).
pub(crate) type ConfigureFn = dyn Fn(BorrowedFd<'_>) -> io::Result<()>;

/// A non-blocking TCP connect to `addr`, started: the socket is made,
/// given `TCP_NODELAY` if asked, bound to `bind` if given, handed to
/// `configure` (any option the caller wants before the SYN leaves), and
/// connected without waiting (`EINPROGRESS` is the normal answer).
pub(crate) fn tcp_connect(
    addr: SocketAddr,
    nodelay: bool,
    bind: Option<SocketAddr>,
    configure: Option<&ConfigureFn>,
) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    if nodelay {
        socket.set_tcp_nodelay(true)?;
    }
    if let Some(local) = bind {
        socket.bind(&local.into())?;
    }
    if let Some(configure) = configure {
        configure(socket.as_fd())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(err) => return Err(err),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// A UDP socket bound to `addr` with `SO_REUSEPORT`, non-blocking.
pub(crate) fn udp_socket_reuse_port(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// Takes ownership of descriptor `fd`, inherited across `exec` from a
/// service manager (systemd's `LISTEN_FDS`), and sets its `FD_CLOEXEC`
/// flag so that the program's own children do not inherit it.
///
/// Only [`crate::activation`] calls it, for the numbers the protocol names
/// (3 up to 3 + `LISTEN_FDS`), after removing the variables that name them,
/// so that no second call claims the same descriptors. Nothing else in the
/// process has a claim on them: they were opened by the manager, not here.
/// Fails with `EBADF` if `fd` is not open.
pub(crate) fn claim_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) reads the flags of a descriptor number and
    // touches no memory of ours; a number that is not open gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: as above: fcntl(F_SETFD) on a descriptor number, no memory.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: `fd` is open (F_GETFD succeeded) and, by the activation
    // protocol (see above), owned by no other value in this process; the
    // `OwnedFd` becomes its one owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the open file description behind `fd` is in non-blocking mode
/// (`O_NONBLOCK`, from `fcntl(F_GETFL)`).
pub(crate) fn is_nonblocking(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: fcntl(F_GETFL) on a borrowed, so open, descriptor reads its
    // status flags and touches no memory of ours.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & libc::O_NONBLOCK != 0)
}

/// Sets or clears `O_NONBLOCK` on the open file description behind `fd`,
/// leaving its other status flags as they are. The description may be
/// shared with other descriptors and processes (stdin with the parent
/// shell): they see the change too.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<()> {
    // SAFETY: as in `is_nonblocking`: F_GETFL on a borrowed descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if wanted == flags {
        return Ok(());
    }
    // SAFETY: fcntl(F_SETFL) with an integer argument on a borrowed
    // descriptor; it touches no memory of ours.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, wanted) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a socket is, from `getsockopt`: its type (`SOCK_STREAM`,
/// `SOCK_DGRAM`, ...), its address family (`AF_INET`, `AF_INET6`,
/// `AF_UNIX`, ...) and whether it is listening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketKind {
    pub(crate) ty: libc::c_int,
    pub(crate) domain: libc::c_int,
    pub(crate) listening: bool,
}

/// The kind of socket `fd` is, or `None` if it is not a socket.
pub(crate) fn socket_kind(fd: BorrowedFd<'_>) -> io::Result<Option<SocketKind>> {
    let ty = match sockopt_int(fd, libc::SO_TYPE) {
        Ok(ty) => ty,
        Err(err) if err.raw_os_error() == Some(libc::ENOTSOCK) => return Ok(None),
        Err(err) => return Err(err),
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let domain = sockopt_int(fd, libc::SO_DOMAIN)?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let domain = libc::c_int::from(socket2::SockRef::from(&fd).local_addr()?.family());
    let listening = ty == libc::SOCK_STREAM && sockopt_int(fd, libc::SO_ACCEPTCONN)? != 0;
    Ok(Some(SocketKind {
        ty,
        domain,
        listening,
    }))
}

/// An integer socket option of level `SOL_SOCKET`.
fn sockopt_int(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is borrowed, so open for the call; `value` and `len` are
    // valid, exclusively borrowed locals, and `len` is `value`'s exact size,
    // so the kernel writes at most that many bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// The CPUs this thread may run on (`sched_getaffinity(2)`): what a new
/// thread inherits, so the CPUs the shards of `evloop::shard` may use.
#[cfg(target_os = "linux")]
pub(crate) fn cpu_affinity() -> io::Result<Vec<usize>> {
    // SAFETY: `cpu_set_t` is a plain bit array, for which all zeroes is a
    // valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed local, and the size
    // passed is its exact size, so the kernel writes within it. Pid 0 is
    // the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    // SAFETY: CPU_ISSET reads bit `cpu` of `set`; every `cpu` is below
    // CPU_SETSIZE, the number of bits `cpu_set_t` holds.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Restricts this thread to `cpus` (`sched_setaffinity(2)`); pinning is a
/// set of one. CPUs past `CPU_SETSIZE` are ignored.
#[cfg(target_os = "linux")]
pub(crate) fn set_cpu_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: as in `cpu_affinity`, all zeroes is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    for &cpu in cpus.iter().filter(|&&cpu| cpu < max) {
        // SAFETY: CPU_SET writes bit `cpu` of `set`, and `cpu` is below
        // CPU_SETSIZE, the number of bits `cpu_set_t` holds.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid local the kernel only reads, of the size
    // passed. Pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Thread affinity is Linux's; elsewhere shards run unpinned.
#[cfg(not(target_os = "linux"))]
pub(crate) fn cpu_affinity() -> io::Result<Vec<usize>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no sched_getaffinity on this system",
    ))
}

/// Thread affinity is Linux's; elsewhere shards run unpinned.
#[cfg(not(target_os = "linux"))]
pub(crate) fn set_cpu_affinity(_cpus: &[usize]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no sched_setaffinity on this system",
    ))
}

/// The kernel's coarse monotonic clock, in nanoseconds: on Linux
/// `CLOCK_MONOTONIC_COARSE`, which the vDSO reads from the last tick's
/// time without touching the hardware counter (a third of the cost of
/// `Instant::now` on the benchmark machine: 10 ns against 32), and which
/// advances once a tick (1 to 10 ms, by the kernel's configuration).
/// Elsewhere the precise monotonic clock. For the slow-callback watchdog,
/// which times every callback and needs only to know which ones ran for
/// milliseconds.
pub(crate) fn coarse_clock_ns() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC_COARSE;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, exclusively borrowed local timespec, the
    // only memory `clock_gettime` writes; the clock id is one it knows.
    let rc = unsafe { libc::clock_gettime(CLOCK, &mut now) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}
