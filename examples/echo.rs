//! Echo server: TCP, UDP and Unix stream, one thread.
//!
//! ```text
//! echo [--tcp ADDR]... [--udp ADDR]... [--unix PATH]... [--shutdown-timeout SECS]
//! ```
//! With no listener flag: `--tcp 127.0.0.1:7000 --udp 127.0.0.1:7000`.

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
    /// Seconds in-flight connections get to finish after SIGINT/SIGTERM
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = common::seconds)]
    shutdown_timeout: Duration,
}

fn main() -> ExitCode {
    let mut flags: Flags = common::parse();
    common::init_logging();
    if flags.tcp.is_empty() && flags.udp.is_empty() && flags.unix.is_empty() {
        let default: SocketAddr = "127.0.0.1:7000".parse().expect("valid default");
        flags.tcp.push(default);
        flags.udp.push(default);
    }
    let mut reactor = common::server_reactor(flags.shutdown_timeout);
    for addr in flags.tcp {
        let bound = reactor.listen_tcp_with(addr, Echo::listener_options(), |_: &Addr| Echo);
        common::bind_or_exit(&mut reactor, "tcp", bound);
    }
    for addr in flags.udp {
        let bound = reactor.bind_udp(addr, EchoDatagram);
        common::bind_or_exit(&mut reactor, "udp", bound);
    }
    for path in flags.unix {
        let bound = reactor.listen_unix_with(&path, Echo::listener_options(), |_: &Addr| Echo);
        common::bind_or_exit(&mut reactor, "unix", bound);
    }
    common::serve(reactor)
}
