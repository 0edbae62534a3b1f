//! File server: the plain TCP file protocol (a name in, the file out) and
//! HTTP/1.1, from one root.
//!
//! ```text
//! file_server [--tcp ADDR]... [--http ADDR]... [--tls ADDR]... [--https ADDR]...
//!             [--cert PEM --key PEM] [--handshake-timeout SECS] [--root DIR]
//!             [--max-clients N] [--idle-timeout SECS] [--threads N [--balance]]
//!             [--shutdown-timeout SECS] [--admin ADDR]
//! ```
//! With no listener flag: `--tcp 127.0.0.1:7200`; with any, exactly those
//! named. `--tls` serves the plain protocol over TLS, `--https` HTTP/1.1
//! over TLS (ALPN `http/1.1`), with the chain in `--cert` and its key in
//! `--key` (`evloop::tls`): files go through the TLS layer, read and
//! encrypted 16 KiB at a time, since `sendfile` cannot encrypt.
//!
//! `--threads N` (default 1) runs N reactors, one per thread, and no other
//! thread: every address is bound by each reactor with `SO_REUSEPORT`, so
//! the kernel spreads connections over them, and announced with one line
//! (`common::serve_sharded`). `--max-clients` counts each address over the
//! whole server: the reactors' listeners of one address share one
//! [`ConnectionLimit`], so the server holds at most N connections on it,
//! however the kernel spread them.
//!
//! `--idle-timeout` is the one patience knob: how long a client may wait
//! before sending its name (plain) or its next request (HTTP keep-alive),
//! how long a download may go without draining a region, and (as the
//! listener's `drain_timeout`) how long a closing download may go without
//! the peer taking a single byte before it is reset. An HTTP request head
//! must arrive within the shorter of it and 10 seconds.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use evloop::protocols::file::FileServer;
use evloop::protocols::http::{HttpServer, DEFAULT_HEADER_TIMEOUT};
use evloop::{ConnectionLimit, ListenerOptions};

/// File server: sends the files under --root to clients that name them.
#[derive(Parser)]
#[command(name = "file_server")]
struct Flags {
    /// TCP address for the plain protocol (repeatable)
    #[arg(long, value_name = "ADDR")]
    tcp: Vec<SocketAddr>,
    /// HTTP/1.1 address (repeatable)
    #[arg(long, value_name = "ADDR")]
    http: Vec<SocketAddr>,
    /// TLS address for the plain protocol (repeatable; needs --cert and --key)
    #[arg(long, value_name = "ADDR")]
    tls: Vec<SocketAddr>,
    /// HTTPS address: HTTP/1.1 over TLS (repeatable; needs --cert and --key)
    #[arg(long, value_name = "ADDR")]
    https: Vec<SocketAddr>,
    #[command(flatten)]
    tls_flags: common::TlsFlags,
    #[command(flatten)]
    admin: common::AdminFlags,
    /// Directory to serve
    #[arg(long, value_name = "DIR", default_value = ".")]
    root: PathBuf,
    /// Most connections at once per address, over all threads
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_clients: usize,
    /// Seconds a client may stay silent (no name yet, or reading nothing) before it is cut
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = common::seconds)]
    idle_timeout: Duration,
    /// Reactor threads, each serving every address (at least 1)
    #[arg(long, value_name = "N", default_value = "1", value_parser = common::threads)]
    threads: usize,
    /// Hand each new TCP connection to the reactor holding the fewest (evloop extension)
    #[arg(long)]
    balance: bool,
    /// Seconds in-flight downloads get to finish after SIGINT/SIGTERM
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = common::seconds)]
    shutdown_timeout: Duration,
}

fn main() -> ExitCode {
    let mut flags: Flags = common::parse();
    common::init_logging();
    // Checked here, once; each shard then makes its own servers (they
    // share nothing across threads).
    if let Err(err) = FileServer::new(&flags.root) {
        common::usage_error(&format!("--root {}: {err}", flags.root.display()));
    }
    let tls = flags.tls_flags.server(!flags.tls.is_empty(), &[]);
    let https = flags.tls_flags.server(!flags.https.is_empty(), &[b"http/1.1"]);
    if flags.tcp.is_empty() && flags.http.is_empty() && flags.tls.is_empty() && flags.https.is_empty() {
        flags.tcp.push("127.0.0.1:7200".parse().expect("valid default"));
    }
    let mut options = ListenerOptions {
        max_connections: flags.max_clients,
        ..ListenerOptions::default()
    };
    // A stalled reader is cut after the same patience as a silent one.
    options.connection.drain_timeout = flags.idle_timeout;
    // HTTP's watermarks bound what a client that does not read holds of a
    // listing (under 256 KiB).
    let mut http_options = HttpServer::listener_options();
    http_options.connection.drain_timeout = options.connection.drain_timeout;
    // One limit per address, shared by that address's listener on every
    // shard.
    let limits = |addrs: &[SocketAddr]| -> Vec<ConnectionLimit> {
        addrs
            .iter()
            .map(|_| ConnectionLimit::new(flags.max_clients))
            .collect()
    };
    let (tcp_limits, http_limits) = (limits(&flags.tcp), limits(&flags.http));
    let (tls_limits, https_limits) = (limits(&flags.tls), limits(&flags.https));
    common::serve_sharded(
        flags.threads,
        flags.shutdown_timeout,
        |reactor, shards, binder| {
            binder.balance(flags.balance);
            let files = FileServer::new(&flags.root)?.with_idle_timeout(flags.idle_timeout);
            let http = HttpServer::with_root(files.root().clone())
                .with_idle_timeout(flags.idle_timeout)
                .with_header_timeout(flags.idle_timeout.min(DEFAULT_HEADER_TIMEOUT));
            for (&addr, limit) in flags.tcp.iter().zip(&tcp_limits) {
                let options = ListenerOptions {
                    shared_limit: Some(limit.clone()),
                    ..options.clone()
                };
                binder.tcp(reactor, "tcp", addr, options, files.clone());
            }
            for (&addr, limit) in flags.http.iter().zip(&http_limits) {
                let options = ListenerOptions {
                    max_connections: flags.max_clients,
                    shared_limit: Some(limit.clone()),
                    ..http_options.clone()
                };
                binder.tcp(reactor, "http", addr, options, http.clone());
            }
            if let Some(tls) = &tls {
                for (&addr, limit) in flags.tls.iter().zip(&tls_limits) {
                    let options = ListenerOptions {
                        shared_limit: Some(limit.clone()),
                        tls: Some(tls.clone()),
                        ..options.clone()
                    };
                    binder.tcp(reactor, "tls", addr, options, files.clone());
                }
            }
            if let Some(https) = &https {
                for (&addr, limit) in flags.https.iter().zip(&https_limits) {
                    let options = ListenerOptions {
                        max_connections: flags.max_clients,
                        shared_limit: Some(limit.clone()),
                        tls: Some(https.clone()),
                        ..http_options.clone()
                    };
                    binder.tcp(reactor, "https", addr, options, http.clone());
                }
            }
            flags.admin.apply(reactor, Some(shards));
            Ok(())
        },
    )
}
