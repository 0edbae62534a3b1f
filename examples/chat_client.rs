//! Chat client: lines from stdin go to the chat server, lines from the
//! server go to stdout, in one thread.
//!
//! ```text
//! chat_client ADDR
//! ```
//!
//! Stdin and the connection are both sources of one reactor. At the end of
//! stdin the client shuts its write half once everything typed is sent,
//! then waits for the server to close (at most a short grace, so a server
//! that keeps the connection open does not keep the client); it also ends
//! when the server closes.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use clap::Parser;
use common::stdin::{register_stdin, LineSink};
use evloop::{CloseReason, Context, Key, Reactor, StreamHandler};

/// Chat client: stdin to the server, the server to stdout.
#[derive(Parser)]
#[command(name = "chat_client")]
struct Flags {
    /// Chat server address, ip:port
    addr: SocketAddr,
}

/// The connection: prints what the server sends; ends the loop when closed.
struct Server {
    failed: Rc<std::cell::Cell<bool>>,
}

impl StreamHandler for Server {
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(data);
        let _ = out.flush();
        data.len()
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        if let CloseReason::ConnectFailed(err) | CloseReason::Error(err) = reason {
            eprintln!("chat_client: {err}");
            self.failed.set(true);
        }
        cx.stop();
    }
}

/// How long to wait, after the end of stdin, for the server to close.
const GRACE: Duration = Duration::from_secs(2);

/// Sends stdin's lines; at its end, shuts the write half after flushing.
struct Typed {
    server: Key,
}

impl LineSink for Typed {
    fn line(&mut self, cx: &mut Context<'_>, line: &[u8]) {
        let mut framed = Vec::with_capacity(line.len() + 1);
        framed.extend_from_slice(line);
        framed.push(b'\n');
        cx.send_to(self.server, &framed);
    }

    fn end(&mut self, cx: &mut Context<'_>) -> Option<Duration> {
        // FIN goes out after everything typed. The chat server answers it by
        // closing, which ends the loop; a server that does not gets GRACE.
        cx.shutdown_source_write(self.server);
        Some(GRACE)
    }
}

fn main() -> ExitCode {
    let flags: Flags = common::parse();
    common::init_logging();
    let mut reactor = Reactor::new().unwrap_or_else(|err| common::fail(&err));
    let failed = Rc::new(std::cell::Cell::new(false));
    let server = reactor
        .connect_tcp(
            flags.addr,
            Server {
                failed: Rc::clone(&failed),
            },
        )
        .unwrap_or_else(|err| common::fail(&format!("{}: {err}", flags.addr)));
    if let Err(err) = register_stdin(&mut reactor, Typed { server }) {
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
