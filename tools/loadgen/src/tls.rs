//! `--tls`: the load over TLS, through evloop's own TLS client
//! ([`Context::connect_tls`]), verified against `--cacert`, with session
//! resumption off: every connection is a full handshake.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use evloop::tls::ClientTls;
use evloop::{Context, Key, StreamHandler};

use crate::common;

/// The TLS flags of the modes that connect over TCP.
#[derive(Args, Clone, Debug)]
pub(crate) struct TlsFlags {
    /// Speak TLS to the server (with --cacert: the roots its certificate
    /// must chain to)
    #[arg(long)]
    tls: bool,
    /// PEM file of the roots to trust [default: the system's]
    #[arg(long, value_name = "PEM", requires = "tls")]
    cacert: Option<PathBuf>,
    /// Name the server's certificate must be valid for [default: the host
    /// of the address]
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
}

/// TLS to speak, and the name to verify.
#[derive(Clone, Debug)]
pub(crate) struct Tls {
    client: ClientTls,
    server_name: String,
}

impl TlsFlags {
    /// The TLS to speak to `addr`, if `--tls`: roots that cannot be read
    /// are a one-line error naming the file (exit 1).
    pub(crate) fn for_addr(&self, addr: &SocketAddr) -> Option<Tls> {
        if !self.tls {
            return None;
        }
        let client = match &self.cacert {
            Some(path) => ClientTls::with_roots_pem(path),
            None => ClientTls::with_system_roots(),
        }
        .unwrap_or_else(|err| common::fail(&err));
        // Every connection makes a full handshake: a load generator that
        // resumed sessions would measure the server's cheap path only.
        let mut config = (**client.config()).clone();
        config.resumption = rustls::client::Resumption::disabled();
        let mut client = ClientTls::new(std::sync::Arc::new(config));
        client.handshake_timeout = Duration::from_secs(10);
        let server_name = self.server_name.clone().unwrap_or_else(|| addr.ip().to_string());
        Some(Tls { client, server_name })
    }
}

/// Connects to `addr`, over TLS when `tls` is given.
pub(crate) fn connect(
    cx: &mut Context<'_>,
    addr: SocketAddr,
    tls: Option<&Tls>,
    handler: impl StreamHandler + 'static,
) -> io::Result<Key> {
    match tls {
        Some(tls) => cx.connect_tls(addr, &tls.client, &tls.server_name, handler),
        None => cx.connect(addr, handler),
    }
}
