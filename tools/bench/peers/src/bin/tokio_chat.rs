//! Chat server on tokio, written the way a tokio user writes it first: one
//! room, a `HashMap` of members behind a `std::sync::Mutex`, and for each
//! member an unbounded mpsc channel drained by a writer task of its own.
//!
//! ```text
//! tokio_chat --flavor current_thread|multi_thread [--workers N] [--nodelay] ADDR
//! ```
//!
//! The protocol (the core of evloop's chat example): a member's nick is its
//! peer `ip:port`. On joining it gets `* welcome NICK` and every other member
//! gets `* NICK joined`. A line `TEXT` (ending in `\n`; a trailing `\r` is
//! dropped) reaches every *other* member as `NICK: TEXT`. `/quit` gets
//! `* bye`, then the connection closes. When a member leaves, for whatever
//! reason, the others get `* NICK left`. A line over 4096 bytes gets
//! `* error: line too long` and the member is cut.
//!
//! Why a channel per member rather than one `tokio::sync::broadcast`: it is
//! what tokio's own chat example does, a sender is not sent its own lines,
//! and no line is ever lost (a broadcast receiver that falls behind its
//! fixed capacity skips lines, and only learns it by a `Lagged` error). The
//! price, kept here as most users would: a member that does not read lets
//! its queue grow without bound (evloop cuts such a member instead). Each
//! line is encoded once, into an `Arc<str>` that every queue shares.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const USAGE: &str = "tokio_chat --flavor current_thread|multi_thread [--workers N] [--nodelay] ADDR";

/// Longest line accepted, in bytes, not counting its `\r\n` or `\n`.
const MAX_LINE: usize = 4096;

/// A queue of lines for one member's writer task.
type Tx = mpsc::UnboundedSender<Arc<str>>;

/// The one room: every member's queue, by member id. The lock is only ever
/// held to look at the map and push onto queues, never across an `.await`,
/// which is why a plain `std::sync::Mutex` is the right lock here.
type Room = Arc<Mutex<HashMap<u64, Tx>>>;

fn main() -> ExitCode {
    let mut args = peers::Args::from_env(USAGE);
    let runtime = peers::runtime(&mut args);
    let nodelay = args.switch("--nodelay");
    let addr = args.addr();
    peers::run(runtime, addr, |listener| accept_loop(listener, nodelay))
}

/// Accepts members for ever, each into a task of its own.
async fn accept_loop(listener: TcpListener, nodelay: bool) {
    let room: Room = Arc::default();
    let next_id = AtomicU64::new(0);
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                if nodelay {
                    let _ = socket.set_nodelay(true);
                }
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(member(room.clone(), id, socket, peer));
            }
            Err(err) => peers::accept_failed(&err).await,
        }
    }
}

/// One member, from joining to leaving.
async fn member(room: Room, id: u64, socket: TcpStream, peer: SocketAddr) {
    let nick = peer.to_string();
    let (reader, writer) = socket.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(write_lines(writer, rx));

    // Join: welcome first, then tell the others, under one lock so that no
    // line from the room can come between the two.
    {
        let mut members = room.lock().unwrap();
        let _ = tx.send(Arc::from(format!("* welcome {nick}\n")));
        say_to_others(&members, id, &format!("* {nick} joined\n"));
        members.insert(id, tx.clone());
    }

    let farewell = read_lines(reader, &room, id, &nick).await;

    // Leave: out of the room first, so it gets nothing more, then tell it
    // goodbye (if there is something to say) and tell the others.
    let mut members = room.lock().unwrap();
    members.remove(&id);
    if let Some(text) = farewell {
        let _ = tx.send(Arc::from(text));
    }
    say_to_others(&members, id, &format!("* {nick} left\n"));
    // Dropping `tx`, the queue's last sender, lets the writer task finish
    // what is queued and close the connection.
}

/// Reads the member's lines until it leaves, and relays them. Returns the
/// last line the member itself is to get, if any.
async fn read_lines(reader: OwnedReadHalf, room: &Room, id: u64, nick: &str) -> Option<&'static str> {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        // `take` bounds what one line may hold: the longest line, `\r\n`.
        let limit = (MAX_LINE + 2) as u64;
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return None, // EOF or reset
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            // Either the line is too long, or EOF came in the middle of a
            // line (which is dropped, as it never ended).
            return if line.len() as u64 == limit {
                Some("* error: line too long\n")
            } else {
                None
            };
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > MAX_LINE {
            return Some("* error: line too long\n");
        }
        if line == b"/quit" {
            return Some("* bye\n");
        }
        let text = String::from_utf8_lossy(&line);
        let members = room.lock().unwrap();
        say_to_others(&members, id, &format!("{nick}: {text}\n"));
    }
}

/// Queues `text` once, shared, for every member but `from`.
fn say_to_others(members: &HashMap<u64, Tx>, from: u64, text: &str) {
    let text: Arc<str> = Arc::from(text);
    for (id, tx) in members {
        if *id != from {
            // A member whose writer has gone is about to leave; skip it.
            let _ = tx.send(text.clone());
        }
    }
}

/// Writes the member's queued lines until every sender is gone (the member
/// has left) or the connection fails, then closes the sending side.
async fn write_lines(mut writer: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Arc<str>>) {
    while let Some(text) = rx.recv().await {
        if writer.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
