//! File server on tokio for the plain file protocol, written the way a tokio
//! user writes it first: `tokio::fs::File` and `tokio::io::copy`.
//!
//! ```text
//! tokio_files --flavor current_thread|multi_thread [--workers N] [--nodelay]
//!             [--buf BYTES] --root DIR ADDR
//! ```
//!
//! The protocol (that of evloop's file_server, `--tcp`): the client sends a
//! file name relative to the root, optionally followed by `\n` (a trailing
//! `\r\n` or `\n` is not part of the name; a name sent bare is complete at
//! the end of the first chunk that arrives). The server answers with the
//! raw bytes of the file and closes. A missing file, anything but a regular
//! file, or a name that is absolute, holds `..` or a NUL byte, gets exactly
//! the 7 bytes `no_file`, then a close.
//!
//! `tokio::fs::File` reads on tokio's blocking thread pool, one hand-off per
//! read, and `copy` reads 8 KiB at a time: that is the plain variant. With
//! `--buf BYTES`, the file is read through a `BufReader` of that capacity
//! and sent with `copy_buf`, so each hand-off reads BYTES (tokio caps one
//! read at 2 MiB): the tuned variant. Neither uses `sendfile(2)`, which
//! tokio does not offer; evloop and nginx do.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "tokio_files --flavor current_thread|multi_thread [--workers N] [--nodelay] \
                     [--buf BYTES] --root DIR ADDR";

/// The answer to a name that is not served.
const NO_FILE: &[u8] = b"no_file";

/// Longest name read, in bytes (the first chunk is read into this much).
const MAX_NAME: usize = 1024;

/// How long, once the file is sent, to wait for the client to close.
const LINGER: Duration = Duration::from_secs(10);

/// What every connection needs to know.
struct Config {
    root: PathBuf,
    buf: Option<usize>,
}

fn main() -> ExitCode {
    let mut args = peers::Args::from_env(USAGE);
    let runtime = peers::runtime(&mut args);
    let nodelay = args.switch("--nodelay");
    let buf: Option<usize> = args.parsed("--buf");
    if buf == Some(0) {
        peers::usage_error("--buf must be at least 1");
    }
    let root = args
        .value("--root")
        .unwrap_or_else(|| peers::usage_error("--root DIR is required"));
    let root = match std::fs::canonicalize(&root) {
        Ok(dir) if dir.is_dir() => dir,
        Ok(_) => peers::usage_error(&format!("--root {root}: not a directory")),
        Err(err) => peers::usage_error(&format!("--root {root}: {err}")),
    };
    let addr = args.addr();
    let config = Arc::new(Config { root, buf });
    peers::run(runtime, addr, |listener| accept_loop(listener, config, nodelay))
}

/// Accepts connections for ever, each into a task of its own.
async fn accept_loop(listener: TcpListener, config: Arc<Config>, nodelay: bool) {
    loop {
        match listener.accept().await {
            Ok((socket, _peer)) => {
                if nodelay {
                    let _ = socket.set_nodelay(true);
                }
                let config = config.clone();
                // An error here is mostly a client gone mid-file: the
                // connection is over either way, so it is dropped.
                tokio::spawn(async move { serve(socket, &config).await });
            }
            Err(err) => peers::accept_failed(&err).await,
        }
    }
}

/// Serves one connection: reads the name, sends the file or `no_file`.
async fn serve(mut socket: TcpStream, config: &Config) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_NAME];
    let n = socket.read(&mut buf).await?;
    if n == 0 {
        return Ok(()); // closed before naming anything
    }
    match open(&config.root, name(&buf[..n])).await {
        Some(file) => match config.buf {
            None => {
                let mut file = file;
                tokio::io::copy(&mut file, &mut socket).await?;
            }
            Some(capacity) => {
                let mut file = BufReader::with_capacity(capacity, file);
                tokio::io::copy_buf(&mut file, &mut socket).await?;
            }
        },
        None => socket.write_all(NO_FILE).await?,
    }
    // Send our FIN, then read (and drop) whatever the client still sends
    // until it closes too: closing a socket with unread input makes the
    // kernel reset the connection, and a reset can throw away the end of
    // the file before the client has read it.
    socket.shutdown().await?;
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = socket.read(&mut buf).await {}
    })
    .await;
    Ok(())
}

/// The name in the first chunk: up to its first `\n`, or all of it; without
/// a trailing `\r`.
fn name(chunk: &[u8]) -> &[u8] {
    let line = match chunk.iter().position(|&b| b == b'\n') {
        Some(end) => &chunk[..end],
        None => chunk,
    };
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Opens `name` under `root`, if it is a name that is served and a regular
/// file is there. A file that cannot be opened for another reason (out of
/// descriptors, say) is answered `no_file` too.
async fn open(root: &Path, name: &[u8]) -> Option<File> {
    let name = std::str::from_utf8(name).ok()?;
    let relative = Path::new(name);
    let plain = |c: Component<'_>| matches!(c, Component::Normal(_) | Component::CurDir);
    if name.is_empty() || name.contains('\0') || !relative.components().all(plain) {
        return None; // absolute, `..`, NUL, or nothing at all
    }
    // Look before opening: opening a FIFO for reading would wait for a
    // writer. (A user would not bother about symlinks that lead out of the
    // root, and neither does this.)
    let path = root.join(relative);
    if !tokio::fs::metadata(&path).await.ok()?.is_file() {
        return None;
    }
    File::open(&path).await.ok()
}
