//! How an outbound TCP connection is opened: [`ConnectOptions`], taken by
//! [`crate::Context::connect_with`] and [`crate::Reactor::connect_tcp_with`].
//!
//! Always true:
//! - the connect never blocks the loop: the socket is made non-blocking
//!   before `connect(2)`, and the handler hears of the outcome later
//!   (`on_open`, or `on_close` with [`crate::CloseReason::ConnectFailed`]);
//! - a connect that reaches its own socket (TCP's simultaneous open, when
//!   the kernel gives a connect to a free local port that port as its
//!   own) fails with `ConnectFailed` of kind `ConnectionRefused`: nothing
//!   listens there;
//! - with a [`ConnectOptions::timeout`], a connection still connecting when
//!   it passes is closed with `ConnectFailed` of kind `TimedOut`; a
//!   connection that connected in time keeps no timer;
//! - [`ConnectOptions::configure`] runs once, on the new socket, before the
//!   SYN leaves: options that only count before the handshake (buffer
//!   sizes, which set the window scale) take effect. An error it returns
//!   fails the connect at once, as a socket that cannot be made does.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::rc::Rc;
use std::time::Duration;

use crate::tls::ClientTls;
use crate::ConnectionOptions;

/// A hook given the new socket before it connects.
type Configure = Rc<crate::sys::ConfigureFn>;

/// How to open an outbound TCP connection. The default is what
/// [`crate::Context::connect`] does: no timeout, `TCP_NODELAY` on, any local
/// address, the reactor's connection options.
///
/// A connect that must be done within a second, with keep-alive probes
/// set on the socket before it connects:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::net::TcpListener;
/// use std::time::Duration;
/// use evloop::{ConnectOptions, Context, Reactor, StreamHandler};
///
/// struct Client;
///
/// impl StreamHandler for Client {
///     fn on_open(&mut self, cx: &mut Context<'_>) {
///         cx.send(b"hello");
///         cx.close();
///         cx.stop();
///     }
///
///     fn on_data(&mut self, _: &mut Context<'_>, data: &[u8]) -> usize {
///         data.len()
///     }
/// }
///
/// let server = TcpListener::bind("127.0.0.1:0")?;
/// let mut reactor = Reactor::new()?;
/// let options = ConnectOptions::new()
///     .timeout(Duration::from_secs(1))
///     .configure(|fd| socket2::SockRef::from(&fd).set_keepalive(true));
/// reactor.connect_tcp_with(server.local_addr()?, &options, Client)?;
/// reactor.run()?; // until the client is connected
/// let (_, _) = server.accept()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) nodelay: bool,
    pub(crate) bind: Option<SocketAddr>,
    pub(crate) connection: Option<Rc<ConnectionOptions>>,
    pub(crate) configure: Option<Configure>,
    pub(crate) tls: Option<(ClientTls, String)>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: None,
            nodelay: true,
            bind: None,
            connection: None,
            configure: None,
            tls: None,
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("timeout", &self.timeout)
            .field("nodelay", &self.nodelay)
            .field("bind", &self.bind)
            .field("connection", &self.connection)
            .field("configure", &self.configure.as_ref().map(|_| "Fn"))
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}

impl ConnectOptions {
    /// The defaults: no timeout, `TCP_NODELAY` on, any local address, the
    /// reactor's connection options.
    pub fn new() -> Self {
        ConnectOptions::default()
    }

    /// Gives up on a connect not done within `after`: the handler gets
    /// `on_close` with [`crate::CloseReason::ConnectFailed`] of kind
    /// `TimedOut`.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// Sets `TCP_NODELAY` (on by default: evloop writes whole messages, so
    /// Nagle's delay only adds latency).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// Binds the socket to `local` before connecting (a source address, or
    /// port 0 for any port on that address).
    pub fn bind(mut self, local: SocketAddr) -> Self {
        self.bind = Some(local);
        self
    }

    /// The connection's options (watermarks, caps, timeouts) instead of the
    /// reactor's defaults ([`crate::Reactor::set_connection_defaults`]).
    pub fn connection(mut self, options: ConnectionOptions) -> Self {
        self.connection = Some(Rc::new(options));
        self
    }

    /// Speaks TLS over the connection, as [`crate::Context::connect_tls`]
    /// does: the server's certificate must chain to `tls`'s roots and be
    /// valid for `server_name` (a DNS name or an IP address). The connect
    /// timeout covers the TCP connect; `tls`'s handshake timeout the
    /// handshake after it.
    pub fn tls(mut self, tls: &ClientTls, server_name: &str) -> Self {
        self.tls = Some((tls.clone(), server_name.to_owned()));
        self
    }

    /// Runs `configure` on the new socket before it connects, for options
    /// evloop does not name (`SO_KEEPALIVE`, buffer sizes, `SO_MARK`, ...):
    /// `socket2::SockRef::from(&fd)` gives them safely. An error fails the
    /// connect.
    pub fn configure(mut self, configure: impl Fn(BorrowedFd<'_>) -> io::Result<()> + 'static) -> Self {
        self.configure = Some(Rc::new(configure));
        self
    }
}
