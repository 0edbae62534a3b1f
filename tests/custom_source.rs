//! A custom mio source (an `evloop::mio::unix::pipe`, the mio evloop is
//! built on) registered with `Reactor::register` and served by a
//! `SourceHandler`: bytes written from the test thread reach the handler, the
//! sender's close reaches it as EOF, and the handler's close removes the source.
mod common;

use std::io::{ErrorKind, Read, Write};
use std::sync::mpsc;

use common::*;
use evloop::{CloseReason, Context, Event, Interest, SourceHandler};

/// What the pipe's handler reports.
#[derive(Debug, PartialEq)]
enum Seen {
    Bytes(Vec<u8>),
    Eof,
    Closed(String),
}

/// Reads until `WouldBlock` on every event (the registration is
/// edge-triggered); closes itself at EOF.
struct PipeReader {
    pipe: evloop::mio::unix::pipe::Receiver,
    report: mpsc::Sender<Seen>,
}

impl SourceHandler for PipeReader {
    fn source(&mut self) -> &mut dyn evloop::mio::event::Source {
        &mut self.pipe
    }
    fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
        let mut buf = [0; 16 * 1024];
        loop {
            match self.pipe.read(&mut buf) {
                Ok(0) => {
                    let _ = self.report.send(Seen::Eof);
                    return cx.close();
                }
                Ok(n) => {
                    let _ = self.report.send(Seen::Bytes(buf[..n].to_vec()));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("pipe read: {e}"),
            }
        }
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.report.send(Seen::Closed(format!("{reason:?}")));
    }
}

#[test]
fn pipe_source_delivers_every_byte_then_eof_and_is_removed() {
    let (sender, receiver) = evloop::mio::unix::pipe::new().expect("pipe");
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let before = reactor.source_count();
        let handler = PipeReader {
            pipe: receiver,
            report: tx,
        };
        let key = reactor.register(handler, Interest::READABLE).expect("register");
        (key, before)
    });
    let (key, baseline) = server.info;
    assert!(server.query(move |r| r.contains(key)));

    // Far more than a pipe holds (64 KiB): the writer blocks until the
    // handler has read, so this takes many readiness edges.
    let data = pattern(1024 * 1024, 40);
    let mut sender = sender;
    sender.set_nonblocking(false).expect("blocking writes");
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            sender.write_all(&data).expect("pipe write");
            sender // dropped by the test, after the bytes are checked
        })
    };
    let mut got = Vec::new();
    while got.len() < data.len() {
        match rx.recv_timeout(STEP).expect("bytes") {
            Seen::Bytes(bytes) => got.extend(bytes),
            other => panic!("{other:?} after {} bytes", got.len()),
        }
    }
    assert!(got == data, "pipe bytes changed or reordered");
    let sender = writer.join().expect("writer thread");

    drop(sender);
    assert_eq!(rx.recv_timeout(STEP).expect("eof"), Seen::Eof);
    assert_eq!(
        rx.recv_timeout(STEP).expect("closed"),
        Seen::Closed("Closed".into())
    );
    server.wait_until("source removed", move |r| !r.contains(key));
    assert_eq!(server.query(|r| r.source_count()), baseline);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn pipe_source_left_open_is_removed_by_shutdown() {
    let (sender, receiver) = evloop::mio::unix::pipe::new().expect("pipe");
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let handler = PipeReader {
            pipe: receiver,
            report: tx,
        };
        reactor.register(handler, Interest::READABLE).expect("register")
    });
    assert_eq!(server.shutdown(STEP), 0);
    assert_eq!(
        rx.recv_timeout(STEP).expect("closed"),
        Seen::Closed("Closed".into()),
        "the default on_shutdown closes"
    );
    drop(sender);
}
