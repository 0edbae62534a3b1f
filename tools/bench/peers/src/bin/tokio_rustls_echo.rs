//! Echo server over TLS on tokio, the way a tokio user adds TLS to the echo
//! of tokio's README: the same accept loop and task per connection as
//! `tokio_echo`, with `tokio_rustls::TlsAcceptor` in front of each socket.
//! rustls uses the *ring* provider and its safe defaults (TLS 1.2 and 1.3),
//! as evloop's `echo --tls` does.
//!
//! ```text
//! tokio_rustls_echo --flavor current_thread|multi_thread [--workers N] [--nodelay]
//!                   --cert PEM --key PEM (ADDR | --addr ADDR)
//! ```
//! It announces `listening tls ADDR`. Per connection: the handshake
//! (`TlsAcceptor::accept`), then read into a 4 KiB buffer, `write_all` and
//! `flush` what was read, until the peer's EOF; then `close_notify`.
//! `--nodelay` sets TCP_NODELAY on each accepted socket, as in `tokio_echo`.
//! A missing `--cert` or `--key` is a usage error (exit 2); a certificate or
//! key that cannot be read or used is one line naming it (exit 1).

use std::process::ExitCode;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const USAGE: &str = "tokio_rustls_echo --flavor current_thread|multi_thread [--workers N] [--nodelay] \
                     --cert PEM --key PEM (ADDR | --addr ADDR)";

fn main() -> ExitCode {
    let mut args = peers::Args::from_env(USAGE);
    let runtime = peers::runtime(&mut args);
    let nodelay = args.switch("--nodelay");
    let cert = args
        .value("--cert")
        .unwrap_or_else(|| peers::usage_error("--cert PEM is required"));
    let key = args
        .value("--key")
        .unwrap_or_else(|| peers::usage_error("--key PEM is required"));
    let addr = args.addr();
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&cert, &key)));
    peers::run_as(runtime, "tls", addr, |listener| {
        accept_loop(listener, acceptor, nodelay)
    })
}

/// The server's configuration: the chain in `cert`, its key in `key`, no
/// client certificates. Exits 1 with one line naming the file that fails.
fn server_config(cert: &str, key: &str) -> ServerConfig {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .unwrap_or_else(|err| peers::fail(&format!("cannot read certificate {cert}: {err}")));
    if chain.is_empty() {
        peers::fail(&format!("no certificate in {cert}"));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .unwrap_or_else(|err| peers::fail(&format!("cannot read key {key}: {err}")));
    // ring's provider as it comes: X25519, P-256 and P-384 key exchange.
    // rustls marks it deprecated (no post-quantum key exchange).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, private))
        .unwrap_or_else(|err| peers::fail(&format!("cannot use {cert} with {key}: {err}")))
}

/// Accepts connections for ever, each into a task of its own, which does
/// the handshake and then echoes.
async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, nodelay: bool) {
    loop {
        match listener.accept().await {
            Ok((socket, _peer)) => {
                if nodelay {
                    let _ = socket.set_nodelay(true);
                }
                tokio::spawn(echo(acceptor.clone(), socket));
            }
            Err(err) => peers::accept_failed(&err).await,
        }
    }
}

/// Completes the handshake, then sends back every byte the peer sends;
/// closes (with `close_notify`) after the peer's EOF.
async fn echo(acceptor: TlsAcceptor, socket: TcpStream) {
    let Ok(mut tls) = acceptor.accept(socket).await else {
        return; // a failed handshake: nothing to echo
    };
    let mut buf = [0u8; 4096];
    loop {
        let n = match tls.read(&mut buf).await {
            Ok(0) => break, // close_notify or EOF: the peer is done sending
            Ok(n) => n,
            Err(_) => return, // reset, or a TCP close without close_notify
        };
        if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err() {
            return;
        }
    }
    let _ = tls.shutdown().await;
}
