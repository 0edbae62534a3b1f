//! Backpressure: the high watermark tells a producer to stop, the drain
//! callback asks it for more, and the hard cap on queued output disconnects
//! (`OverflowPolicy::Close`) or refuses sends to (`OverflowPolicy::Drop`) a
//! consumer that does not read, counting for both only what the socket did
//! not take.
mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use evloop::{
    Addr, CloseReason, ConnectionOptions, Context, Key, ListenerOptions, OverflowPolicy, StreamHandler,
};

const TOTAL: usize = 8 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
const HIGH_WATER: usize = 128 * 1024;
const LOW_WATER: usize = 32 * 1024;

/// What a producer reports when it closes.
#[derive(Debug)]
struct Report {
    high_waters: usize,
    drains: usize,
    /// The most output ever queued right after a send.
    peak_queued: usize,
    reason: String,
}

/// Streams `TOTAL` bytes of `pattern(TOTAL, 9)`, producing only while the
/// queue is not above the high watermark and resuming from `on_drain`.
struct Producer {
    data: Vec<u8>,
    sent: usize,
    high_waters: usize,
    drains: usize,
    peak_queued: usize,
    report: mpsc::Sender<Report>,
}

impl Producer {
    fn produce(&mut self, cx: &mut Context<'_>) {
        while self.sent < self.data.len() && !cx.is_above_high_water() {
            let end = (self.sent + CHUNK).min(self.data.len());
            assert!(cx.send(&self.data[self.sent..end]), "send taken");
            self.sent = end;
            self.peak_queued = self.peak_queued.max(cx.queued_bytes());
        }
        if self.sent == self.data.len() {
            cx.close();
        }
    }
}

impl StreamHandler for Producer {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.produce(cx);
    }
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        data.len()
    }
    fn on_high_water(&mut self, cx: &mut Context<'_>) {
        assert!(cx.is_above_high_water());
        self.high_waters += 1;
    }
    fn on_drain(&mut self, cx: &mut Context<'_>) {
        assert!(cx.queued_bytes() <= LOW_WATER, "drain above the low watermark");
        self.drains += 1;
        self.produce(cx);
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.report.send(Report {
            high_waters: self.high_waters,
            drains: self.drains,
            peak_queued: self.peak_queued,
            reason: format!("{reason:?}"),
        });
    }
}

#[test]
fn slow_reader_gets_every_byte_in_order_through_high_water_and_drain() {
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let options = ListenerOptions {
            connection: ConnectionOptions {
                high_water: HIGH_WATER,
                low_water: LOW_WATER,
                ..ConnectionOptions::default()
            },
            ..ListenerOptions::default()
        };
        let factory = move |_: &Addr| Producer {
            data: pattern(TOTAL, 9),
            sent: 0,
            high_waters: 0,
            drains: 0,
            peak_queued: 0,
            report: tx.clone(),
        };
        let key = reactor
            .listen_tcp_with(any_port(), options, factory)
            .expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let mut client = connect(server.info);
    let mut got = Vec::with_capacity(TOTAL);
    let mut buf = vec![0; 64 * 1024];
    loop {
        // Pacing only: short pauses keep the server's queue backed up.
        std::thread::sleep(Duration::from_micros(300));
        let n = client.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got.len(), TOTAL);
    assert!(got == pattern(TOTAL, 9), "bytes arrived out of order or changed");
    drop(client); // ends the server's linger after its FIN
    let report = rx.recv_timeout(STEP).expect("producer closed");
    assert_eq!(report.reason, "Closed");
    assert!(report.high_waters >= 2, "the producer was held back: {report:?}");
    assert_eq!(
        report.high_waters, report.drains,
        "each high water drained: {report:?}"
    );
    assert!(
        report.peak_queued <= HIGH_WATER + CHUNK,
        "the producer stopped at the high watermark: {report:?}"
    );
    assert_eq!(server.shutdown(STEP), 0);
}

/// Sends 256 blocks of 64 KiB (block `i` filled with byte `i`) at once to
/// a client that does not read; closes when the client says `done`.
struct Flooder {
    report: mpsc::Sender<String>,
    taken: Vec<u8>,
}

const BLOCKS: usize = 256;
const BLOCK: usize = 64 * 1024;
const CAP: usize = 1024 * 1024;

impl StreamHandler for Flooder {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        for i in 0..BLOCKS {
            if cx.send_vec(vec![i as u8; BLOCK]) {
                self.taken.push(i as u8);
            }
            assert!(cx.queued_bytes() <= CAP, "queue past the cap");
        }
        let _ = self.report.send(format!("taken {}", self.taken.len()));
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        if data == b"done" {
            cx.close();
        }
        data.len()
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.report.send(format!("close {reason:?}"));
    }
}

fn flood_server(policy: OverflowPolicy) -> (Running<(Key, SocketAddr)>, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let options = ListenerOptions {
            connection: ConnectionOptions {
                max_queued: CAP,
                overflow: policy,
                ..ConnectionOptions::default()
            },
            ..ListenerOptions::default()
        };
        let factory = move |_: &Addr| Flooder {
            report: tx.clone(),
            taken: Vec::new(),
        };
        let key = reactor
            .listen_tcp_with(any_port(), options, factory)
            .expect("listen");
        (
            key,
            reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr"),
        )
    });
    (server, rx)
}

#[test]
fn consumer_past_the_hard_cap_is_disconnected_with_overflow() {
    let (server, rx) = flood_server(OverflowPolicy::Close);
    let (listener, addr) = server.info;
    let mut client = connect(addr); // reads nothing until the verdict
    let events: Vec<String> = (0..2).map(|_| rx.recv_timeout(STEP).expect("event")).collect();
    // The abort happens inside a send, so `on_close` follows `on_open`.
    assert!(events[0].starts_with("taken "), "{events:?}");
    assert_eq!(events[1], "close Overflow");
    server.wait_until("connection gone", move |r| r.connection_count(listener) == 0);
    // Whatever reached the socket before the cap may arrive; then a reset.
    let mut buf = vec![0; BLOCK];
    let mut total = 0;
    let end = loop {
        match client.read(&mut buf) {
            Ok(0) => break "EOF".to_string(),
            Ok(n) => total += n,
            Err(e) => break format!("{:?}", e.kind()),
        }
    };
    assert_eq!(end, "ConnectionReset", "after {total} bytes");
    assert!(total < BLOCKS * BLOCK);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn drop_policy_refuses_sends_over_the_cap_and_keeps_the_connection() {
    let (server, rx) = flood_server(OverflowPolicy::Drop);
    let (listener, addr) = server.info;
    let mut client = connect(addr);
    let taken: usize = rx
        .recv_timeout(STEP)
        .expect("report")
        .strip_prefix("taken ")
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(
        taken > 0 && taken < BLOCKS,
        "some sends were refused: {taken} taken"
    );
    assert_eq!(
        server.query(move |r| r.connection_count(listener)),
        1,
        "still connected"
    );

    write_all(&mut client, b"done");
    let got = read_to_end(&mut client);
    drop(client); // ends the server's linger after its FIN
    assert_eq!(rx.recv_timeout(STEP).expect("closed"), "close Closed");
    // Whole blocks only, in order, none of them torn.
    assert_eq!(got.len() % BLOCK, 0, "a block was cut");
    assert_eq!(got.len() / BLOCK, taken);
    let mut last = None;
    for block in got.chunks(BLOCK) {
        assert!(block.iter().all(|&b| b == block[0]), "a block was mixed");
        assert!(last < Some(block[0]), "blocks out of order");
        last = Some(block[0]);
    }
    assert_eq!(server.shutdown(STEP), 0);
}

/// On `go` from its peer, sends `BURST` shared blocks to every other
/// connection of its listener in one callback, queued for the end of the
/// turn, and reports how many each took. Every connection asks for a
/// large send buffer (the kernel grants up to twice `net.core.wmem_max`,
/// 416 KiB by default), so one write at the end of the turn can take them.
struct Burster {
    report: mpsc::Sender<usize>,
}

const BURST: usize = 12;
const BURST_BLOCK: usize = 16 * 1024;
const BURST_CAP: usize = 64 * 1024;

impl StreamHandler for Burster {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let fd = cx.fd().expect("a connection has a socket");
        socket2::SockRef::from(&fd)
            .set_send_buffer_size(4 << 20)
            .expect("SO_SNDBUF");
        let _ = self.report.send(0);
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        if data == b"go" {
            let others: Vec<Key> = cx.members().iter().copied().filter(|&k| k != cx.key()).collect();
            let mut taken = 0;
            for i in 0..BURST {
                let block: std::rc::Rc<[u8]> = vec![i as u8; BURST_BLOCK].into();
                for &other in &others {
                    taken += usize::from(cx.source(other).send_shared(&block));
                }
            }
            let _ = self.report.send(taken);
        }
        data.len()
    }
}

#[test]
fn drop_policy_counts_only_what_the_socket_did_not_take_at_the_end_of_the_turn() {
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let options = ListenerOptions {
            connection: ConnectionOptions {
                max_queued: BURST_CAP,
                overflow: OverflowPolicy::Drop,
                ..ConnectionOptions::default()
            },
            ..ListenerOptions::default()
        };
        let factory = move |_: &Addr| Burster { report: tx.clone() };
        let key = reactor
            .listen_tcp_with(any_port(), options, factory)
            .expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let mut sender = connect(server.info);
    // The reader's receive buffer is set before it connects, so that its
    // window can take the whole burst.
    let reader = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    reader.set_recv_buffer_size(4 << 20).expect("SO_RCVBUF");
    reader.connect(&server.info.into()).expect("connect");
    let mut reader: std::net::TcpStream = reader.into();
    reader.set_read_timeout(Some(STEP)).expect("timeout");
    for _ in 0..2 {
        assert_eq!(rx.recv_timeout(STEP).expect("opened"), 0);
    }
    write_all(&mut sender, b"go");
    // 192 KiB in one turn, three times the cap: each send was queued, and
    // the socket took them all at the end of the turn.
    assert_eq!(rx.recv_timeout(STEP).expect("the burst"), BURST);
    let got = read_exact(&mut reader, BURST * BURST_BLOCK);
    for (i, block) in got.chunks(BURST_BLOCK).enumerate() {
        assert!(block.iter().all(|&b| b == i as u8), "block {i} is wrong");
    }
    drop(sender);
    drop(reader);
    assert_eq!(server.shutdown(STEP), 0);
}
