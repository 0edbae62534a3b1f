//! Echo server: TCP, UDP and Unix stream, on one thread or `--threads N`.
//!
//! ```text
//! echo [--tcp ADDR]... [--udp ADDR]... [--unix PATH]... [--threads N [--balance]]
//!      [--tls ADDR]... [--cert PEM --key PEM] [--handshake-timeout SECS]
//!      [--shutdown-timeout SECS] [--admin ADDR]
//! ```
//! `--tls ADDR` is a TCP listener speaking TLS 1.2 and 1.3 (rustls),
//! announced `listening tls ADDR`, with the chain in `--cert` and its key
//! in `--key`: the same echo, through `evloop::tls`.
//! With no listener flag: `--tcp 127.0.0.1:7000 --udp 127.0.0.1:7000`.
//!
//! `--threads N` (default 1) runs N reactors, one per thread, and no other
//! thread: each TCP and UDP address is bound by every reactor with
//! `SO_REUSEPORT` (the kernel spreads connections and datagrams over them),
//! a Unix path is bound once and accepted from by every reactor; each
//! address is still announced with one line. SIGINT/SIGTERM shut all of
//! them down (`common::serve_sharded`).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use evloop::protocols::echo::{Echo, EchoDatagram};
use evloop::Addr;

/// Echo server: every byte (TCP, Unix) or datagram (UDP) back to its sender.
#[derive(Parser)]
#[command(name = "echo")]
struct Flags {
    /// TCP address to listen on (repeatable)
    #[arg(long, value_name = "ADDR")]
    tcp: Vec<SocketAddr>,
    /// UDP address to bind (repeatable)
    #[arg(long, value_name = "ADDR")]
    udp: Vec<SocketAddr>,
    /// Unix stream socket path to listen on (repeatable)
    #[arg(long, value_name = "PATH")]
    unix: Vec<PathBuf>,
    /// TLS-over-TCP address to listen on (repeatable; needs --cert and --key)
    #[arg(long, value_name = "ADDR")]
    tls: Vec<SocketAddr>,
    #[command(flatten)]
    tls_flags: common::TlsFlags,
    #[command(flatten)]
    admin: common::AdminFlags,
    /// Reactor threads, each serving every address (at least 1)
    #[arg(long, value_name = "N", default_value = "1", value_parser = common::threads)]
    threads: usize,
    /// Hand each new TCP connection to the reactor holding the fewest (evloop extension)
    #[arg(long)]
    balance: bool,
    /// Seconds in-flight connections get to finish after SIGINT/SIGTERM
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = common::seconds)]
    shutdown_timeout: Duration,
}

fn main() -> ExitCode {
    let mut flags: Flags = common::parse();
    common::init_logging();
    let tls = flags.tls_flags.server(!flags.tls.is_empty(), &[]);
    if flags.tcp.is_empty() && flags.udp.is_empty() && flags.unix.is_empty() && flags.tls.is_empty() {
        let default: SocketAddr = "127.0.0.1:7000".parse().expect("valid default");
        flags.tcp.push(default);
        flags.udp.push(default);
    }
    common::serve_sharded(
        flags.threads,
        flags.shutdown_timeout,
        |reactor, shards, binder| {
            binder.balance(flags.balance);
            for &addr in &flags.tcp {
                binder.tcp(reactor, "tcp", addr, Echo::listener_options(), |_: &Addr| Echo);
            }
            for &addr in &flags.udp {
                binder.udp(reactor, "udp", addr, EchoDatagram);
            }
            for path in &flags.unix {
                binder.unix(reactor, "unix", path, Echo::listener_options(), |_: &Addr| Echo);
            }
            if let Some(tls) = &tls {
                for &addr in &flags.tls {
                    let options = common::with_tls(Echo::listener_options(), tls);
                    binder.tcp(reactor, "tls", addr, options, |_: &Addr| Echo);
                }
            }
            flags.admin.apply(reactor, Some(shards));
            Ok(())
        },
    )
}
