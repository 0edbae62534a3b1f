//! TCP proxy: each accepted connection relayed to a new connection to the
//! upstream, both ways, byte for byte, on one thread.
//!
//! ```text
//! proxy --upstream ADDR [--tcp ADDR] [--connect-timeout SECS]
//!       [--max-clients N] [--shutdown-timeout SECS]
//! ```
//! Defaults: `--tcp 127.0.0.1:7300`, `--connect-timeout 5`, `--max-clients
//! 10000`. Every pair is two `evloop::relay::Relay` sides: a side whose
//! peer is not reading is not read from, so a pair holds a bounded amount
//! of memory; a FIN is passed on as a FIN and a reset as a reset; an
//! upstream that refuses, or does not answer within the connect timeout,
//! closes the client. A client over `--max-clients` is closed at once.
//! SIGINT/SIGTERM stop accepting and let pairs finish for at most the
//! shutdown timeout.

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use evloop::relay::Relay;
use evloop::{Addr, ConnectOptions, ListenerOptions};

/// TCP proxy: relays each connection to the upstream, with backpressure.
#[derive(Parser)]
#[command(name = "proxy")]
struct Flags {
    /// Address of the server every connection is relayed to
    #[arg(long, value_name = "ADDR")]
    upstream: SocketAddr,
    /// TCP address to listen on (repeatable)
    #[arg(long, value_name = "ADDR")]
    tcp: Vec<SocketAddr>,
    /// Seconds an upstream connect may take before the client is closed
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = common::positive_seconds)]
    connect_timeout: Duration,
    /// Most client connections at once (each holds two sockets)
    #[arg(long, value_name = "N", default_value = "10000")]
    max_clients: usize,
    /// Seconds in-flight connections get to finish after SIGINT/SIGTERM
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = common::seconds)]
    shutdown_timeout: Duration,
}

fn main() -> ExitCode {
    let mut flags: Flags = common::parse();
    common::init_logging();
    if flags.tcp.is_empty() {
        flags.tcp.push("127.0.0.1:7300".parse().expect("valid default"));
    }
    let mut reactor = common::server_reactor(flags.shutdown_timeout);
    let connect = ConnectOptions::new().timeout(flags.connect_timeout);
    let upstream = flags.upstream;
    for &addr in &flags.tcp {
        let options = ListenerOptions {
            max_connections: flags.max_clients,
            ..ListenerOptions::default()
        };
        let connect = connect.clone();
        let factory = move |_: &Addr| Relay::connect(upstream, connect.clone());
        let bound = reactor.listen_tcp_with(addr, options, factory);
        common::bind_or_exit(&mut reactor, "tcp", bound);
    }
    common::serve(reactor)
}
