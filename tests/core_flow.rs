//! Backpressure: the high watermark tells a producer to stop, the drain
//! callback asks it for more, and the hard cap disconnects (or refuses) a
//! consumer that does not read.
mod common;

use std::io::Read;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use evloop::{Addr, CloseReason, ConnectionOptions, Context, ListenerOptions, OverflowPolicy, StreamHandler};

const TOTAL: usize = 8 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Streams `TOTAL` bytes of `pattern(TOTAL, 9)`, producing only while the
/// queue is under the high watermark and resuming from `on_drain`.
struct Producer {
    data: Vec<u8>,
    sent: usize,
    high_waters: usize,
    drains: usize,
    report: mpsc::Sender<(usize, usize)>,
}

impl Producer {
    fn produce(&mut self, cx: &mut Context<'_>) {
        while self.sent < self.data.len() && !cx.is_above_high_water() {
            let end = (self.sent + CHUNK).min(self.data.len());
            assert!(cx.send(&self.data[self.sent..end]));
            self.sent = end;
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
    fn on_high_water(&mut self, _cx: &mut Context<'_>) {
        self.high_waters += 1;
    }
    fn on_drain(&mut self, cx: &mut Context<'_>) {
        self.drains += 1;
        self.produce(cx);
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, _reason: &CloseReason) {
        let _ = self.report.send((self.high_waters, self.drains));
    }
}

#[test]
fn slow_reader_gets_every_byte_through_high_water_and_drain() {
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let options = ListenerOptions {
            connection: ConnectionOptions {
                high_water: 128 * 1024,
                low_water: 32 * 1024,
                ..ConnectionOptions::default()
            },
            ..ListenerOptions::default()
        };
        let factory = move |_: &Addr| Producer {
            data: pattern(TOTAL, 9),
            sent: 0,
            high_waters: 0,
            drains: 0,
            report: tx.clone(),
        };
        let key = reactor
            .listen_tcp_with(any_port(), options, factory)
            .expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let mut client = connect(server.info);
    let mut got = Vec::with_capacity(TOTAL);
    let mut buf = vec![0; 256 * 1024];
    loop {
        // A slow reader: small pauses keep the server's queue backed up.
        std::thread::sleep(Duration::from_micros(500));
        let n = client.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got == pattern(TOTAL, 9),
        "got {} of {TOTAL} bytes, in order",
        got.len()
    );
    let (high_waters, drains) = rx.recv_timeout(STEP).expect("producer closed");
    assert!(high_waters >= 1, "the producer hit the high watermark");
    assert_eq!(high_waters, drains, "every high water was followed by a drain");
}

/// Sends far more than the cap, once, to a client that never reads.
struct Flooder {
    report: mpsc::Sender<(String, usize)>,
    refused: usize,
}

impl StreamHandler for Flooder {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let block = vec![7u8; 64 * 1024];
        for _ in 0..256 {
            if !cx.send(&block) {
                self.refused += 1;
            }
        }
        let _ = self.report.send(("sent".into(), self.refused));
    }
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        data.len()
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.report.send((format!("{reason:?}"), self.refused));
    }
}

fn flood_server(policy: OverflowPolicy) -> (Running<std::net::SocketAddr>, mpsc::Receiver<(String, usize)>) {
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let options = ListenerOptions {
            connection: ConnectionOptions {
                max_queued: 1024 * 1024,
                overflow: policy,
                ..ConnectionOptions::default()
            },
            ..ListenerOptions::default()
        };
        let factory = move |_: &Addr| Flooder {
            report: tx.clone(),
            refused: 0,
        };
        let key = reactor
            .listen_tcp_with(any_port(), options, factory)
            .expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    (server, rx)
}

#[test]
fn consumer_past_the_hard_cap_is_disconnected() {
    let (server, rx) = flood_server(OverflowPolicy::Close);
    let _client = connect(server.info); // never reads
    let (first, _) = rx.recv_timeout(STEP).expect("report");
    let closed = if first == "sent" {
        rx.recv_timeout(STEP).expect("close").0
    } else {
        first
    };
    assert_eq!(closed, "Overflow");
    server.wait_until("connection gone", |r| r.source_count() == 1);
}

#[test]
fn drop_policy_refuses_sends_over_the_cap_and_keeps_the_connection() {
    let (server, rx) = flood_server(OverflowPolicy::Drop);
    let mut client = connect(server.info);
    let (what, refused) = rx.recv_timeout(STEP).expect("report");
    assert_eq!(what, "sent");
    assert!(refused > 0, "sends over the cap were refused");
    assert!(refused < 256, "sends under the cap were taken");
    assert_eq!(server.query(|r| r.source_count()), 2, "still connected");
    // What was taken arrives intact: whole blocks only.
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut total = 0;
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n) = client.read(&mut buf) {
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == 7));
        total += n;
    }
    assert_eq!(total, (256 - refused) * 64 * 1024);
}
