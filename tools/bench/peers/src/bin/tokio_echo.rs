//! Echo server on tokio, written the way a tokio user writes it first (it is
//! the echo example of tokio's README and tutorial): an accept loop, one task
//! per connection, a 4 KiB buffer, read then `write_all` until EOF.
//!
//! ```text
//! tokio_echo --flavor current_thread|multi_thread [--workers N] [--nodelay] ADDR
//! ```
//! `--nodelay` sets TCP_NODELAY on each connection, as evloop does on every
//! socket it accepts; without it, the sockets keep the kernel's default
//! (Nagle's algorithm on), as in the tokio example.

use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "tokio_echo --flavor current_thread|multi_thread [--workers N] [--nodelay] ADDR";

fn main() -> ExitCode {
    let mut args = peers::Args::from_env(USAGE);
    let runtime = peers::runtime(&mut args);
    let nodelay = args.switch("--nodelay");
    let addr = args.addr();
    peers::run(runtime, addr, |listener| accept_loop(listener, nodelay))
}

/// Accepts connections for ever, each into a task of its own.
async fn accept_loop(listener: TcpListener, nodelay: bool) {
    loop {
        match listener.accept().await {
            Ok((socket, _peer)) => {
                if nodelay {
                    let _ = socket.set_nodelay(true);
                }
                tokio::spawn(echo(socket));
            }
            Err(err) => peers::accept_failed(&err).await,
        }
    }
}

/// Sends back every byte the peer sends; closes after the peer's EOF.
async fn echo(mut socket: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match socket.read(&mut buf).await {
            Ok(0) => break, // EOF: the peer is done sending
            Ok(n) => n,
            Err(_) => return, // reset: nothing more to do
        };
        if socket.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = socket.shutdown().await;
}
