//! TLS as a layer under any stream handler: [`ServerTls`] on a listener
//! ([`ListenerOptions::tls`](crate::ListenerOptions::tls)) makes every
//! connection it accepts speak TLS 1.2 or 1.3 (rustls, with the *ring*
//! crypto provider), in the reactor's own thread.
//!
//! The handler does not change: `on_data` sees the bytes the peer's records
//! carried, and `Context::send` (every send, file regions included) hands
//! bytes that are encrypted on their way out. rustls is sans-IO (it takes
//! bytes from the socket and gives bytes for it), so the layer is only a
//! second pair of buffers in the socket's read and write calls:
//!
//! - **Reading.** The socket's ciphertext goes into rustls until it has
//!   plaintext to give; a read gives as much plaintext as the caller's
//!   buffer holds, and is short only when the socket has nothing more (so
//!   the reactor's edge-triggered read loop stays right). Handshake
//!   messages rustls must answer are written on the way.
//! - **Writing.** A write first sends the ciphertext rustls still holds; it
//!   takes new plaintext only when that is all gone and rustls has room
//!   (at most [`TLS_BUFFER`] bytes of records waiting), else it says
//!   `WouldBlock`, so the connection's queue, its cap and its watermarks
//!   count what they always count: the bytes the handler sent and the peer
//!   has not yet taken. A file region cannot go through `sendfile` (the
//!   kernel would send it unencrypted): it is read 16 KiB at a time and
//!   encrypted, within the same per-turn budget, in constant memory.
//! - **Closing.** A half-close sends `close_notify` before the TCP FIN. A
//!   peer's `close_notify` reads as the end of input (`on_read_closed`, as
//!   a FIN does in plain TCP); a peer that closes the TCP connection
//!   without it has truncated the stream, and the connection ends with
//!   [`CloseReason::Error`](crate::CloseReason::Error) of kind
//!   [`io::ErrorKind::UnexpectedEof`], which a handler can tell apart.
//! - **The handshake** runs in the loop like any other input. The handler
//!   is opened when the connection is accepted (what it sends meanwhile is
//!   held until the handshake is done); a connection still handshaking
//!   after [`ServerTls::handshake_timeout`] is cut, and bytes that are not
//!   TLS end the connection at the first record. Both are logged at debug
//!   level and touch nothing else.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use evloop::tls::ServerTls;
//! use evloop::{protocols::echo::Echo, Addr, ListenerOptions, Reactor};
//! # let dir = std::env::temp_dir().join(format!("evloop-tls-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let (cert, key) = (dir.join("missing-cert.pem"), dir.join("missing-key.pem"));
//!
//! // A missing or unreadable file, or a key that is not the certificate's,
//! // is an error naming the file.
//! match ServerTls::from_pem_files(&cert, &key) {
//!     Ok(tls) => {
//!         let options = ListenerOptions { tls: Some(tls), ..ListenerOptions::default() };
//!         let mut reactor = Reactor::new()?;
//!         reactor.listen_tcp_with("127.0.0.1:0".parse()?, options, |_: &Addr| Echo)?;
//!     }
//!     Err(err) => assert!(err.to_string().contains("missing-cert.pem")),
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The most bytes of TLS records a connection holds for the socket before
/// its writes say `WouldBlock`: four full records.
pub const TLS_BUFFER: usize = 64 * 1024;

/// The default of [`ServerTls::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS for the connections a listener accepts: a rustls server
/// configuration and how long a handshake may take. Clones share the
/// configuration.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    /// A connection still handshaking this long after it was accepted is
    /// cut (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Duration,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("alpn", &self.config.alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// TLS with a configuration made elsewhere (client certificates,
    /// session storage, a certificate resolver).
    pub fn new(config: Arc<rustls::ServerConfig>) -> ServerTls {
        ServerTls {
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// TLS 1.2 and 1.3 with the certificate chain in `cert` and its
    /// private key in `key` (PEM files; the key PKCS#8, PKCS#1 or SEC1),
    /// no client certificates.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] naming the file: it cannot be read, holds no
    /// certificate or no key, or the key is not the certificate's.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<ServerTls, TlsError> {
        let config = server_config(cert.as_ref(), key.as_ref(), Vec::new())?;
        Ok(ServerTls::new(Arc::new(config)))
    }

    /// The same, offering `protocols` by ALPN (for HTTPS: `http/1.1`).
    ///
    /// # Errors
    ///
    /// As [`ServerTls::from_pem_files`].
    pub fn from_pem_files_with_alpn(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        protocols: &[&[u8]],
    ) -> Result<ServerTls, TlsError> {
        let alpn = protocols.iter().map(|p| p.to_vec()).collect();
        let config = server_config(cert.as_ref(), key.as_ref(), alpn)?;
        Ok(ServerTls::new(Arc::new(config)))
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }

    /// A server side of TLS for one accepted connection.
    pub(crate) fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream> {
        let conn = rustls::ServerConnection::new(Arc::clone(&self.config)).map_err(io::Error::other)?;
        Ok(TlsStream::new(tcp, rustls::Connection::Server(conn)))
    }
}

/// TLS for outbound connections ([`Reactor::connect_tls`](crate::Reactor::connect_tls),
/// [`Context::connect_tls`](crate::Context::connect_tls)): the roots a
/// server's certificate must chain to, checked against the name the
/// connection asks for. Clones share the configuration.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    /// A connection still handshaking this long after it was made is cut
    /// (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Duration,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Where a system keeps its bundle of trusted roots, in the order looked
/// at after `SSL_CERT_FILE`.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

impl ClientTls {
    /// TLS with a configuration made elsewhere (client certificates, other
    /// verifiers).
    pub fn new(config: Arc<rustls::ClientConfig>) -> ClientTls {
        ClientTls {
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Trusts the certificates in the PEM file `roots` (a CA, or a
    /// self-signed server certificate).
    ///
    /// # Errors
    ///
    /// A [`TlsError`] naming the file: it cannot be read, or holds no
    /// certificate rustls takes as a root.
    pub fn with_roots_pem(roots: impl AsRef<Path>) -> Result<ClientTls, TlsError> {
        let path = roots.as_ref();
        let mut store = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsError::Read {
                path: path.to_path_buf(),
                error: e.to_string(),
            })?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Read {
                path: path.to_path_buf(),
                error: e.to_string(),
            })?;
        let (added, _ignored) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsError::NoCertificate(path.to_path_buf()));
        }
        Self::with_store(store, path)
    }

    /// Trusts the system's roots: the PEM bundle named by `SSL_CERT_FILE`,
    /// or the first of the usual places that exists
    /// (`/etc/ssl/certs/ca-certificates.crt` on Debian).
    ///
    /// # Errors
    ///
    /// A [`TlsError`] naming the bundle tried when none can be used.
    pub fn with_system_roots() -> Result<ClientTls, TlsError> {
        let bundle = std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .or_else(|| SYSTEM_BUNDLES.iter().map(PathBuf::from).find(|p| p.exists()))
            .unwrap_or_else(|| PathBuf::from(SYSTEM_BUNDLES[0]));
        ClientTls::with_roots_pem(bundle)
    }

    fn with_store(store: rustls::RootCertStore, path: &Path) -> Result<ClientTls, TlsError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Refused {
                key: path.to_path_buf(),
                error,
            })?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(ClientTls::new(Arc::new(config)))
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    /// A client side of TLS on a connecting socket, for `server_name` (a
    /// DNS name or an IP address).
    pub(crate) fn connect(&self, tcp: TcpStream, server_name: &str) -> io::Result<TlsStream> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("server name {server_name:?}: {e}"),
            )
        })?;
        let conn = rustls::ClientConnection::new(Arc::clone(&self.config), name).map_err(io::Error::other)?;
        Ok(TlsStream::new(tcp, rustls::Connection::Client(conn)))
    }
}

/// Why a TLS configuration could not be made: each names the file at fault.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read, or is not PEM.
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: String,
    },
    /// The certificate file holds no certificate.
    NoCertificate(PathBuf),
    /// The key file holds no private key.
    NoKey(PathBuf),
    /// rustls refused the pair (most often: the key is not the
    /// certificate's).
    Refused {
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        error: rustls::Error,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "{}: {error}", path.display()),
            TlsError::NoCertificate(path) => write!(f, "{}: no certificate in the file", path.display()),
            TlsError::NoKey(path) => write!(f, "{}: no private key in the file", path.display()),
            TlsError::Refused { key, error } => {
                write!(f, "{}: not usable with the certificate: {error}", key.display())
            }
        }
    }
}

impl std::error::Error for TlsError {}

/// The provider every configuration here uses: *ring*, which builds from
/// the package registry with a C compiler alone. rustls marks it
/// deprecated because it has no post-quantum key exchange (X25519MLKEM768
/// is in the aws-lc-rs provider, which needs cmake and a far longer
/// build); it offers X25519, P-256 and P-384. Its own order puts P-384
/// first, so a client would send its key share for the slowest of the
/// three: X25519 goes first here, then P-256, as OpenSSL and browsers do.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::kx_group;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(provider)
}

fn server_config(cert: &Path, key: &Path, alpn: Vec<Vec<u8>>) -> Result<rustls::ServerConfig, TlsError> {
    let read_error = |path: &Path, error: &dyn fmt::Display| TlsError::Read {
        path: path.to_path_buf(),
        error: error.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read_error(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(cert, &e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let private = match PrivateKeyDer::from_pem_file(key) {
        Ok(private) => private,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => return Err(TlsError::NoKey(key.to_path_buf())),
        Err(e) => return Err(read_error(key, &e)),
    };
    let refused = |error| TlsError::Refused {
        key: key.to_path_buf(),
        error,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(refused)?;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// A TCP socket with TLS on it: reads give plaintext, writes take
/// plaintext (see the module docs for how each maps to the socket).
pub(crate) struct TlsStream {
    pub(crate) tcp: TcpStream,
    conn: rustls::Connection,
    /// The socket read 0: the peer closed its side.
    eof: bool,
    /// `close_notify` was sent.
    notified: bool,
    /// The last read ended because the socket had nothing more.
    drained: bool,
    /// Whether a short read may be taken for an empty socket: not when
    /// the event said the peer closed (its FIN must be read).
    trust_short: bool,
    /// Input is read and dropped (a closing connection lingering for the
    /// peer's FIN): it is not given to rustls at all.
    discard: bool,
}

/// The socket as rustls reads it, noting whether a read came back short.
struct Noting<'a> {
    tcp: &'a mut TcpStream,
    short: bool,
}

impl Read for Noting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

impl TlsStream {
    fn new(tcp: TcpStream, mut conn: rustls::Connection) -> TlsStream {
        conn.set_buffer_limit(Some(TLS_BUFFER));
        TlsStream {
            tcp,
            conn,
            eof: false,
            notified: false,
            drained: false,
            trust_short: true,
            discard: false,
        }
    }

    /// Whether the last read ended because the socket had nothing more
    /// (a short read then means "empty", as on a plain socket); `false`
    /// when it ended at a `close_notify` or an error with plaintext given.
    pub(crate) fn drained(&self) -> bool {
        self.drained
    }

    /// Whether reads may take a short socket read for an empty socket
    /// (saving the read that would say `WouldBlock`): yes for a readable
    /// event, no when the event said the peer closed or failed.
    pub(crate) fn trust_short_reads(&mut self, trust: bool) {
        self.trust_short = trust;
    }

    /// Whether input is only read to be dropped (the connection takes no
    /// more): then rustls is not given it, so nothing a peer sends after
    /// our `close_notify` reaches rustls's record layer.
    pub(crate) fn discard_input(&mut self, discard: bool) {
        self.discard = discard;
    }

    /// Whether the handshake is still going on.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether output is not yet all sent: records wait for the socket,
    /// or the handshake (whose end releases what the handler sent) is not
    /// done. A half-close or close waits for both, so `close_notify` never
    /// goes out in the middle of a handshake.
    pub(crate) fn has_pending_output(&self) -> bool {
        self.conn.wants_write() || self.conn.is_handshaking()
    }

    /// Writes the records rustls holds until the socket is full; what is
    /// left waits for the next writable edge.
    pub(crate) fn write_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Sends `close_notify` (as far as the socket takes it): nothing more
    /// will be written.
    pub(crate) fn close_notify(&mut self) -> io::Result<()> {
        if !self.notified {
            self.notified = true;
            self.conn.send_close_notify();
        }
        self.write_pending()
    }

    /// Takes plaintext into rustls from `bufs` while it has room; writes
    /// records out. `WouldBlock` when it took nothing.
    fn take_plaintext(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_pending()?;
        if self.conn.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut taken = 0;
        for buf in bufs {
            let n = self.conn.writer().write(buf)?;
            taken += n;
            if n < buf.len() {
                break;
            }
        }
        self.write_pending()?;
        if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.discard {
            // The bytes are dropped by the caller; they are ciphertext.
            let n = self.tcp.read(buf)?;
            self.drained = n < buf.len();
            return Ok(n);
        }
        let mut filled = 0;
        self.drained = false;
        // This call's last socket read was short: the socket was empty
        // then, and a new edge comes with new bytes (as for a plain
        // socket's short read). Only within one call: between calls the
        // handler may pause reading while new bytes come.
        let mut socket_empty = false;
        loop {
            match self.conn.reader().read(&mut buf[filled..]) {
                // close_notify: the end of input (after what came before).
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                // The socket closed without close_notify: truncated.
                Err(err) if filled == 0 => return Err(err),
                Err(_) => return Ok(filled),
            }
            if self.eof {
                // rustls has reported what it had; nothing more comes.
                return if filled > 0 {
                    Ok(filled)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            if socket_empty && self.trust_short {
                // The socket's last read was short and everything it gave
                // is decrypted: a read now would only say `WouldBlock`.
                self.drained = true;
                self.write_pending()?;
                return if filled > 0 {
                    Ok(filled)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let mut socket = Noting {
                tcp: &mut self.tcp,
                short: false,
            };
            let read = self.conn.read_tls(&mut socket);
            socket_empty = socket.short;
            match read {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    self.write_pending()?;
                    return if filled > 0 {
                        Ok(filled)
                    } else {
                        Err(io::ErrorKind::WouldBlock.into())
                    };
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            if let Err(error) = self.process() {
                // rustls queued an alert for the peer: try to send it.
                let _ = self.write_pending();
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
            // Handshake messages, key updates: answered as they come.
            self.write_pending()?;
        }
    }
}

impl TlsStream {
    /// Decrypts what `read_tls` took. After our `close_notify`, rustls
    /// (0.23) checks with a debug assertion that it never sends a second
    /// alert, which a peer sending a bad record then would trip in a debug
    /// build: that assertion is caught here and taken for the error it
    /// stands for, so no peer can end the loop. Release builds have no
    /// such assertion.
    fn process(&mut self) -> Result<(), rustls::Error> {
        if !self.notified {
            return self.conn.process_new_packets().map(drop);
        }
        let conn = &mut self.conn;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            conn.process_new_packets().map(drop)
        }))
        .unwrap_or_else(|_| {
            Err(rustls::Error::General(
                "a bad record after our close_notify".into(),
            ))
        })
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.take_plaintext(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.take_plaintext(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
