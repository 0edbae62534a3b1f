//! The demo: one reactor on one thread serving echo, chat and files at
//! once. This is the server the README starts with.
//!
//! ```text
//! demo [--root DIR] [--shutdown-timeout SECS]
//!      [--echo ADDR] [--echo-udp ADDR] [--chat ADDR] [--files ADDR]
//!      [--admin ADDR]
//! ```
//!
//! | service | default address |
//! |---|---|
//! | echo, TCP and UDP | 127.0.0.1:7000 |
//! | chat, TCP | 127.0.0.1:7100 |
//! | files, plain TCP, from `--root` (default `.`) | 127.0.0.1:7200 |
//! | files, HTTP/1.1, from the same root | 127.0.0.1:8080 |
//!
//! The address flags exist so that tests (and people running two demos)
//! can move the services, for instance to port 0.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use evloop::protocols::chat::{Chat, ChatConfig};
use evloop::protocols::echo::{Echo, EchoDatagram};
use evloop::protocols::file::FileServer;
use evloop::protocols::http::HttpServer;
use evloop::Addr;

/// Echo, chat and file downloads, all on one thread.
#[derive(Parser)]
#[command(name = "demo")]
struct Flags {
    /// Directory the file service serves
    #[arg(long, value_name = "DIR", default_value = ".")]
    root: PathBuf,
    /// Seconds in-flight work gets to finish after SIGINT/SIGTERM
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = common::seconds)]
    shutdown_timeout: Duration,
    /// Echo over TCP
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000")]
    echo: SocketAddr,
    /// Echo over UDP
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000")]
    echo_udp: SocketAddr,
    /// Chat over TCP
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7100")]
    chat: SocketAddr,
    /// Files over the plain TCP protocol
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7200")]
    files: SocketAddr,
    /// Files over HTTP/1.1
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    #[command(flatten)]
    admin: common::AdminFlags,
}

fn main() -> ExitCode {
    let flags: Flags = common::parse();
    common::init_logging();
    let files = FileServer::new(&flags.root)
        .unwrap_or_else(|err| common::usage_error(&format!("--root {}: {err}", flags.root.display())));
    let http = HttpServer::with_root(files.root().clone());
    let chat = Chat::new(ChatConfig::default());
    let mut reactor = common::server_reactor(flags.shutdown_timeout);

    let bound = reactor.listen_tcp_with(flags.echo, Echo::listener_options(), |_: &Addr| Echo);
    common::bind_or_exit(&mut reactor, "tcp", bound);
    let bound = reactor.bind_udp(flags.echo_udp, EchoDatagram);
    common::bind_or_exit(&mut reactor, "udp", bound);
    let bound = reactor.listen_tcp_with(flags.chat, chat.listener_options(), chat.clone());
    common::bind_or_exit(&mut reactor, "tcp", bound);
    let bound = reactor.listen_tcp(flags.files, files);
    common::bind_or_exit(&mut reactor, "tcp", bound);
    let bound = reactor.listen_tcp_with(flags.http, HttpServer::listener_options(), http);
    common::bind_or_exit(&mut reactor, "http", bound);
    flags.admin.apply(&mut reactor, None);

    common::serve(reactor)
}
