//! What a handler can do to connections other than its own, by key: read
//! their queue, pause and resume their reading, watch their watermarks;
//! and broadcasts that name a listener, from a connection of another
//! listener, from a custom source and from a handle.
mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use evloop::mio::unix::pipe;
use evloop::protocols::echo::Echo;
use evloop::{
    Addr, ConnectionOptions, Context, Event, Interest, Key, ListenerOptions, SourceHandler, StreamHandler,
};

/// The first connection of its listener is the sink; each later one
/// writes what it reads into the sink, pausing its own reading while the
/// sink's queue is above its high watermark (the notices it watches for),
/// and reports what happens.
struct Feeder {
    report: mpsc::Sender<String>,
    sink: Option<Key>,
}

impl StreamHandler for Feeder {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let first = cx.members().first().copied();
        if first == Some(cx.key()) {
            // A small send buffer: the kernel absorbs little of what the
            // sink does not read, and the queue grows at once.
            let fd = cx.fd().expect("a socket");
            socket2::SockRef::from(&fd)
                .set_send_buffer_size(4096)
                .expect("SO_SNDBUF");
        } else {
            self.sink = first;
            if let Some(sink) = first {
                assert!(cx.source(sink).watch_output());
                assert!(cx.source(sink).watch_output(), "watching twice is once");
            }
        }
        let _ = self.report.send("open".into());
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        if let Some(sink) = self.sink {
            let mut sink = cx.source(sink);
            sink.send(data);
            if sink.is_above_high_water() {
                let queued = sink.queued_bytes();
                let _ = self.report.send(format!("pause at {queued}"));
                cx.pause_reading();
            }
        }
        data.len()
    }

    fn on_other_high_water(&mut self, _: &mut Context<'_>, other: Key) {
        assert_eq!(Some(other), self.sink);
        let _ = self.report.send("sink high".into());
    }

    fn on_other_drain(&mut self, cx: &mut Context<'_>, other: Key) {
        assert_eq!(Some(other), self.sink);
        let _ = self.report.send("sink drained".into());
        cx.resume_reading();
    }
}

#[test]
fn a_feeder_pauses_at_another_connection_s_high_watermark_and_resumes_at_its_drain() {
    const HIGH: usize = 64 * 1024;
    const TOTAL: usize = 4 << 20;
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let options = ListenerOptions {
            connection: ConnectionOptions {
                high_water: HIGH,
                low_water: HIGH / 4,
                ..ConnectionOptions::default()
            },
            ..ListenerOptions::default()
        };
        let factory = move |_: &Addr| Feeder {
            report: tx.clone(),
            sink: None,
        };
        let key = reactor
            .listen_tcp_with(any_port(), options, factory)
            .expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let sink = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sink.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    sink.connect(&server.info.into()).expect("connect");
    let mut sink: std::net::TcpStream = sink.into();
    sink.set_read_timeout(Some(STEP)).expect("timeout");
    assert_eq!(rx.recv_timeout(STEP).expect("sink opened"), "open");
    let feeder = connect(server.info);
    assert_eq!(rx.recv_timeout(STEP).expect("feeder opened"), "open");

    // The sink reads nothing yet: the feeder must stop, with the sink's
    // queue bounded by about one high watermark and one read.
    let data = pattern(TOTAL, 5);
    let mut writer = feeder.try_clone().expect("clone");
    let sent = data.clone();
    let sender = std::thread::spawn(move || writer.write_all(&sent));
    // The notice comes once the callback that crossed the mark returned.
    let paused = rx.recv_timeout(STEP).expect("the feeder paused");
    assert_eq!(rx.recv_timeout(STEP).expect("the notice"), "sink high");
    let queued: usize = paused
        .strip_prefix("pause at ")
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(
        queued > HIGH && queued < HIGH + 512 * 1024,
        "{queued} bytes queued at the pause"
    );

    // Reading the sink drains it: the feeder resumes, and every byte
    // arrives in order.
    let got = read_exact(&mut sink, TOTAL);
    assert_same_bytes(&got, &data, "what went through the feeder");
    sender.join().expect("sender").expect("write");
    let drains = rx.try_iter().filter(|e| e == "sink drained").count();
    assert!(drains >= 1, "no drain notice");
    drop(feeder);
    drop(sink);
    assert_eq!(server.shutdown(STEP), 0);
}

/// Pauses and resumes the other connection of its listener on command
/// (`pause`, `resume`), and reports every message it reads.
struct Controller {
    report: mpsc::Sender<String>,
}

impl StreamHandler for Controller {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let members: Vec<Key> = cx.members().to_vec();
        let target = members
            .iter()
            .copied()
            .find(|&k| k != cx.key())
            .expect("another connection");
        let done = match data {
            b"pause" => cx.source(target).pause_reading(),
            b"resume" => cx.source(target).resume_reading(),
            _ => false,
        };
        let _ = self
            .report
            .send(format!("{} {done}", String::from_utf8_lossy(data)));
        data.len()
    }
}

#[test]
fn a_handler_pauses_and_resumes_another_connection_s_reading() {
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let control = reactor
            .listen_tcp(any_port(), move |_: &Addr| Controller { report: tx.clone() })
            .expect("listen");
        reactor
            .local_addr(control)
            .and_then(|a| a.as_inet())
            .expect("addr")
    });
    let control_addr = server.info;
    // Both connections on the same listener: the first is the controller.
    let mut controller = connect(control_addr);
    let mut target = connect(control_addr);
    write_all(&mut controller, b"pause");
    assert_eq!(rx.recv_timeout(STEP).expect("paused"), "pause true");
    write_all(&mut target, b"hello");
    // Paused: nothing of it reaches the target's handler...
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    write_all(&mut controller, b"resume");
    assert_eq!(rx.recv_timeout(STEP).expect("resumed"), "resume true");
    // ...until it is resumed: the target's handler (a controller too)
    // gets the bytes that waited.
    assert_eq!(rx.recv_timeout(STEP).expect("the waiting bytes"), "hello false");
    drop(controller);
    drop(target);
    assert_eq!(server.shutdown(STEP), 0);
}

/// Reads lines from a pipe and broadcasts each to the listener it names.
struct Feed {
    rx: pipe::Receiver,
    listener: Key,
}

impl SourceHandler for Feed {
    fn source(&mut self) -> &mut dyn evloop::mio::event::Source {
        &mut self.rx
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _: &Event) {
        let mut buf = [0; 1024];
        loop {
            match self.rx.read(&mut buf) {
                Ok(0) => {
                    cx.close();
                    return;
                }
                Ok(n) => {
                    let line: Rc<[u8]> = Rc::from(&buf[..n]);
                    cx.broadcast_to(self.listener, &line, None);
                }
                Err(_) => return,
            }
        }
    }
}

#[test]
fn a_broadcast_names_a_listener_from_a_custom_source_and_from_a_handle() {
    let (feed_tx, feed_rx) = pipe::new().expect("pipe");
    let server = start(move |reactor| {
        let listener = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        reactor
            .register(
                Feed {
                    rx: feed_rx,
                    listener,
                },
                Interest::READABLE,
            )
            .expect("register");
        let addr: SocketAddr = reactor
            .local_addr(listener)
            .and_then(|a| a.as_inet())
            .expect("addr");
        (listener, addr)
    });
    let (listener, addr) = server.info;
    let mut a = connect(addr);
    let mut b = connect(addr);
    server.wait_until("both accepted", move |r| r.connection_count(listener) == 2);

    let mut feed_tx = feed_tx;
    feed_tx.write_all(b"from the pipe\n").expect("write the pipe");
    assert_eq!(read_exact(&mut a, 14), b"from the pipe\n");
    assert_eq!(read_exact(&mut b, 14), b"from the pipe\n");

    let reached =
        server.query(move |reactor| reactor.broadcast(listener, &Rc::from(&b"from a handle\n"[..])));
    assert_eq!(reached, 2);
    assert_eq!(read_exact(&mut a, 14), b"from a handle\n");
    assert_eq!(read_exact(&mut b, 14), b"from a handle\n");
    drop(feed_tx);
    drop(a);
    drop(b);
    assert_eq!(server.shutdown(STEP), 0);
}
