//! Chat client: lines from stdin go to the chat server, lines from the
//! server go to stdout, in one thread.
//!
//! ```text
//! chat_client ADDR [--tls [--cacert PEM] [--server-name NAME]]
//! ```
//!
//! With `--tls` the connection speaks TLS (`Reactor::connect_tls`): the
//! server's certificate must chain to `--cacert`'s roots (default: the
//! system's) and be valid for `--server-name` (default: ADDR's host). One
//! that does not is a one-line error and exit 1.
//!
//! Stdin and the connection are both sources of one reactor. At the end of
//! stdin the client shuts its write half once everything typed is sent,
//! then waits for the server to close (at most a short grace, so a server
//! that keeps the connection open does not keep the client); it also ends
//! when the server closes.
//!
//! What the server sends is printed line by line, each line made safe to
//! show first ([`evloop::text`]): a control character (ESC, a bare `\r`,
//! ...) or a line separator inside a line is printed as U+FFFD, so neither
//! the server nor a member it relays can drive the terminal or draw a
//! fake line. Each line still ends in `\n` (a `\r` before it is taken as
//! part of the line end).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use clap::Parser;
use evloop::stdin::{self, StdinHandler};
use evloop::text::{sanitize_lossy, split_unfinished_char};
use evloop::{CloseReason, Context, Key, Reactor, StreamHandler, TimerId};

/// Chat client: stdin to the server, the server to stdout.
#[derive(Parser)]
#[command(name = "chat_client")]
struct Flags {
    /// Chat server address, ip:port
    addr: SocketAddr,
    #[command(flatten)]
    tls: common::ClientTlsFlags,
}

/// The connection: prints what the server sends; ends the loop when closed.
struct Server {
    failed: Rc<std::cell::Cell<bool>>,
}

impl StreamHandler for Server {
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        let (shown, used) = printable(data);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(shown.as_bytes());
        let _ = out.flush();
        used
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        if let CloseReason::ConnectFailed(err) | CloseReason::Error(err) = reason {
            eprintln!("chat_client: {err}");
            self.failed.set(true);
        }
        cx.stop();
    }
}

/// What to print of `data`, and how many of its bytes that used. A line
/// is printed as soon as its bytes come, without waiting for its `\n`; the
/// few bytes held back (at most 4) are the start of a character whose rest
/// has not come, and a `\r` that may be the start of a `\r\n`.
fn printable(data: &[u8]) -> (String, usize) {
    let (mut ready, _) = split_unfinished_char(data);
    if let Some(before_cr) = ready.strip_suffix(b"\r") {
        ready = before_cr;
    }
    let mut shown = String::with_capacity(ready.len() + 1);
    for piece in ready.split_inclusive(|&b| b == b'\n') {
        match piece.strip_suffix(b"\n") {
            Some(line) => {
                shown.push_str(&sanitize_lossy(line.strip_suffix(b"\r").unwrap_or(line)));
                shown.push('\n');
            }
            None => shown.push_str(&sanitize_lossy(piece)),
        }
    }
    (shown, ready.len())
}

/// How long to wait, after the end of stdin, for the server to close.
const GRACE: Duration = Duration::from_secs(2);

/// The longest line sent as one; a longer one is sent as several.
const MAX_LINE: usize = 64 * 1024;

/// Sends stdin's lines; at its end, shuts the write half after flushing.
struct Typed {
    server: Key,
}

impl StdinHandler for Typed {
    fn on_line(&mut self, cx: &mut Context<'_>, line: &[u8]) {
        let mut framed = Vec::with_capacity(line.len() + 1);
        framed.extend_from_slice(line);
        framed.push(b'\n');
        cx.source(self.server).send(&framed);
    }

    fn on_end(&mut self, cx: &mut Context<'_>) {
        // FIN goes out after everything typed. The chat server answers it by
        // closing, which ends the loop; a server that does not gets GRACE,
        // timed by the stdin source, which stays registered until then.
        cx.source(self.server).shutdown_write();
        if cx.set_timer(GRACE).is_none() {
            cx.stop();
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _timer: TimerId) {
        cx.stop(); // the grace is over
    }
}

fn main() -> ExitCode {
    let flags: Flags = common::parse();
    common::init_logging();
    let mut reactor = Reactor::new().unwrap_or_else(|err| common::fail(&err));
    let failed = Rc::new(std::cell::Cell::new(false));
    let handler = Server {
        failed: Rc::clone(&failed),
    };
    let connected = match flags.tls.client() {
        Some(tls) => reactor.connect_tls(flags.addr, &tls, &flags.tls.server_name(&flags.addr), handler),
        None => reactor.connect_tcp(flags.addr, handler),
    };
    let server = connected.unwrap_or_else(|err| common::fail(&format!("{}: {err}", flags.addr)));
    if let Err(err) = stdin::register_lines(&mut reactor, MAX_LINE, Typed { server }) {
        common::fail(&err);
    }
    if let Err(err) = evloop::signals::shutdown_on_signals(&mut reactor, Duration::from_secs(1)) {
        common::fail(&err);
    }
    if let Err(err) = reactor.run() {
        common::fail(&err);
    }
    if failed.get() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
