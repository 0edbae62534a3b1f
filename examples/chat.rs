//! Chat server: one room over TCP, and over UDP with `--udp`.
//!
//! ```text
//! chat [--tcp ADDR]... [--udp ADDR]... [--max-line BYTES] [--max-outbuf BYTES]
//!      [--max-clients N] [--idle-timeout SECS] [--shutdown-timeout SECS]
//!      [--threads N [--balance]] [--tls ADDR]... [--cert PEM --key PEM]
//!      [--handshake-timeout SECS] [--admin ADDR] [--redis ADDR [--room NAME]]
//! ```
//! With no listener flag: `--tcp 127.0.0.1:7100`. `--tls ADDR` is one
//! more way into the same room: TCP with TLS (`evloop::tls`), announced
//! `listening tls ADDR`.
//!
//! The room's rules (made-safe text, case-insensitive nicks, the two-step
//! greeting of UDP peers) are the library's: `src/protocols/chat/`. With
//! `--threads N` each of N reactors accepts on the same addresses
//! (`SO_REUSEPORT`) and the room is still one room: one registry of nicks,
//! `--max-clients` counted over the whole room, each line sent once to
//! each other reactor (`Chat::sharded`).
//!
//! With `--redis ADDR`, chat servers that share a Redis server and a
//! `--room` name are one room (`Chat::over_redis`): joins, leaves, renames
//! and lines cross between them, `/who` lists every member, nicks are
//! unique in the whole room. With `--threads N` as well, each reactor
//! joins the room as a server of its own.

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use evloop::protocols::chat::{is_valid_room, Chat, ChatConfig, SharedRoom};

/// Chat server: every line goes to every other member of the room.
#[derive(Parser)]
#[command(name = "chat")]
struct Flags {
    /// TCP address to listen on (repeatable)
    #[arg(long, value_name = "ADDR")]
    tcp: Vec<SocketAddr>,
    /// UDP address for datagram members (repeatable)
    #[arg(long, value_name = "ADDR")]
    udp: Vec<SocketAddr>,
    /// TLS-over-TCP address to listen on (repeatable; needs --cert and --key)
    #[arg(long, value_name = "ADDR")]
    tls: Vec<SocketAddr>,
    #[command(flatten)]
    tls_flags: common::TlsFlags,
    #[command(flatten)]
    admin: common::AdminFlags,
    /// Longest line in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    max_line: usize,
    /// Most unsent output per member before it is disconnected
    #[arg(long, value_name = "BYTES", default_value_t = 1_048_576)]
    max_outbuf: usize,
    /// Most members at once (UDP peers hold at most half)
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_clients: usize,
    /// Seconds of silence before a member is disconnected (a greeted UDP
    /// peer that has not sent its second datagram: at most 30)
    #[arg(long, value_name = "SECS", default_value = "600", value_parser = common::seconds)]
    idle_timeout: Duration,
    /// Seconds members get to receive what is owed after SIGINT/SIGTERM
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = common::seconds)]
    shutdown_timeout: Duration,
    /// Reactor threads, each serving every address, all one room (at least 1)
    #[arg(long, value_name = "N", default_value = "1", value_parser = common::threads)]
    threads: usize,
    /// Hand each new TCP connection to the reactor holding the fewest (evloop extension)
    #[arg(long)]
    balance: bool,
    /// Redis server (IP:PORT) through which chat servers share one room
    #[arg(long, value_name = "ADDR")]
    redis: Option<SocketAddr>,
    /// The room's name among the Redis server's rooms (1 to 64 of A-Z a-z 0-9 _ - . :)
    #[arg(long, value_name = "NAME", default_value = "evloop", requires = "redis", value_parser = room_name)]
    room: String,
}

/// A `--room` value: a name [`is_valid_room`] allows.
fn room_name(text: &str) -> Result<String, String> {
    if is_valid_room(text) {
        Ok(text.to_owned())
    } else {
        Err("a room name is 1 to 64 of A-Z a-z 0-9 _ - . :".to_owned())
    }
}

fn main() -> ExitCode {
    let mut flags: Flags = common::parse();
    common::init_logging();
    let tls = flags.tls_flags.server(!flags.tls.is_empty(), &[]);
    if flags.tcp.is_empty() && flags.udp.is_empty() && flags.tls.is_empty() {
        flags.tcp.push("127.0.0.1:7100".parse().expect("valid default"));
    }
    let config = ChatConfig {
        max_line: flags.max_line,
        max_outbuf: flags.max_outbuf,
        max_clients: flags.max_clients,
        idle_timeout: flags.idle_timeout,
    };
    // The part of the room every reactor shares; with one, it goes unused.
    let shared = SharedRoom::new();
    common::serve_sharded(
        flags.threads,
        flags.shutdown_timeout,
        |reactor, shards, binder| {
            binder.balance(flags.balance);
            let chat = match flags.redis {
                Some(redis) => Chat::over_redis(reactor, config.clone(), redis, &flags.room),
                None => Chat::sharded(config.clone(), shards, &shared),
            };
            for &addr in &flags.tcp {
                binder.tcp(reactor, "tcp", addr, chat.listener_options(), chat.clone());
            }
            for &addr in &flags.udp {
                binder.udp(reactor, "udp", addr, chat.datagram_handler());
            }
            if let Some(tls) = &tls {
                for &addr in &flags.tls {
                    let options = common::with_tls(chat.listener_options(), tls);
                    binder.tcp(reactor, "tls", addr, options, chat.clone());
                }
            }
            flags.admin.apply(reactor, Some(shards));
            Ok(())
        },
    )
}
