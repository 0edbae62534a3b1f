//! Two-party chat over UDP, in one thread.
//!
//! ```text
//! udp_chat --peer ADDR [--bind ADDR]
//! ```
//!
//! How can one program send and receive at the same time? The classic
//! version uses two threads: one blocks in `input()` and sends, the other
//! blocks in `recvfrom()` and prints. Here neither call blocks. Stdin and
//! the socket are both registered with one reactor, which wakes up when
//! either has something to read, so a line typed is sent at once and a
//! datagram received is printed at once, on the same thread.
//!
//! Each stdin line goes to the peer as one datagram (without its newline);
//! each datagram received is printed as `[ip:port] TEXT`. Sending or
//! receiving `bye` ends the program, and so does the end of stdin.
//!
//! TEXT is the peer's, printed to a terminal: it is made safe to show
//! first ([`evloop::text`]), every control character but tab and every line
//! separator printed as U+FFFD, so a datagram cannot drive the terminal or
//! pose as a second line.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use evloop::stdin::{self, StdinHandler};
use evloop::text::sanitize_lossy;
use evloop::{Addr, Context, DatagramHandler, Key, Reactor};

/// Two-party UDP chat: stdin lines to the peer, its datagrams to stdout.
#[derive(Parser)]
#[command(name = "udp_chat")]
struct Flags {
    /// The other party's address
    #[arg(long, value_name = "ADDR")]
    peer: SocketAddr,
    /// The local address to bind
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7890")]
    bind: SocketAddr,
}

/// Prints what arrives; `bye` ends the program.
struct Receive;

impl DatagramHandler for Receive {
    fn on_datagram(&mut self, cx: &mut Context<'_>, data: &[u8], from: &Addr) {
        // A peer that sends its newline too still prints as one line.
        let data = data.strip_suffix(b"\n").unwrap_or(data);
        let data = data.strip_suffix(b"\r").unwrap_or(data);
        let text = sanitize_lossy(data);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "[{from}] {text}");
        let _ = out.flush();
        if text == "bye" {
            cx.stop();
        }
    }
}

/// Sends each stdin line to the peer; `bye` or the end of input ends.
struct Send {
    socket: Key,
    peer: Addr,
}

/// The longest line sent as one datagram: the largest UDP payload over
/// IPv4. A longer line goes as several.
const MAX_LINE: usize = 65_507;

impl StdinHandler for Send {
    fn on_line(&mut self, cx: &mut Context<'_>, line: &[u8]) {
        // The line comes without its `\n` (or `\r\n`).
        cx.source(self.socket).send_datagram(&self.peer, line);
        if line == b"bye" {
            cx.stop();
        }
    }

    fn on_end(&mut self, cx: &mut Context<'_>) {
        // Datagrams are sent as they are typed (or queued, and the loop
        // finishes this turn's writes): nothing to wait for.
        cx.stop();
    }
}

fn main() -> ExitCode {
    let flags: Flags = common::parse();
    common::init_logging();
    let mut reactor = Reactor::new().unwrap_or_else(|err| common::fail(&err));
    let socket = reactor
        .bind_udp(flags.bind, Receive)
        .unwrap_or_else(|err| common::fail(&err));
    let sink = Send {
        socket,
        peer: Addr::Inet(flags.peer),
    };
    if let Err(err) = stdin::register_lines(&mut reactor, MAX_LINE, sink) {
        common::fail(&err);
    }
    if let Err(err) = evloop::signals::shutdown_on_signals(&mut reactor, Duration::from_secs(1)) {
        common::fail(&err);
    }
    match reactor.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => common::fail(&err),
    }
}
