//! Lifecycles: graceful shutdown from another thread, stop, closures run on
//! the reactor thread, outbound connections (made and refused), a custom
//! source (a pipe), and datagram sockets (UDP over IPv4 and IPv6, Unix).
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use evloop::protocols::echo::{Echo, EchoDatagram};
use evloop::{Addr, CloseReason, Context, Event, Interest, SourceHandler, StreamHandler};

/// Greets, then ignores shutdown requests.
struct Stubborn(mpsc::Sender<String>);

impl StreamHandler for Stubborn {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.send(b"hi\n");
    }
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        data.len()
    }
    fn on_shutdown(&mut self, _cx: &mut Context<'_>) {}
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.0.send(format!("{reason:?}"));
    }
}

/// Queues 4 MiB at once: far more than the socket buffers hold.
struct BigGreeting;

impl StreamHandler for BigGreeting {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.send_vec(pattern(4 * 1024 * 1024, 30));
    }
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        data.len()
    }
}

#[test]
fn shutdown_from_another_thread_flushes_queued_output_and_refuses_new_clients() {
    let mut server = start(|reactor| {
        let echo = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        let big = reactor
            .listen_tcp(any_port(), |_: &Addr| BigGreeting)
            .expect("listen");
        let addr = |key| reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr");
        (addr(echo), addr(big))
    });
    let (echo_addr, big_addr) = server.info;
    let mut clients: Vec<_> = (0..10).map(|_| connect(echo_addr)).collect();
    for client in &mut clients {
        write_all(client, b"served");
        assert_eq!(read_exact(client, 6), b"served");
    }
    let mut slow = connect(big_addr);
    server.wait_until("4 MiB queued", |r| r.source_count() == 13);

    assert!(server.handle.shutdown(STEP));
    // Only now does the slow client read: all of it must still come.
    assert!(
        read_to_end(&mut slow) == pattern(4 * 1024 * 1024, 30),
        "queued output flushed"
    );
    for client in &mut clients {
        assert_eq!(read_to_end(client), b"", "EOF after shutdown");
    }
    assert_eq!(server.join(), 0, "every source is gone");
    assert!(
        std::net::TcpStream::connect(echo_addr).is_err(),
        "the listener is closed"
    );
}

#[test]
fn handler_ignoring_shutdown_is_cut_at_the_deadline() {
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let key = reactor
            .listen_tcp(any_port(), move |_: &Addr| Stubborn(tx.clone()))
            .expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let mut client = connect(server.info);
    assert_eq!(read_exact(&mut client, 3), b"hi\n");
    let begun = Instant::now();
    assert_eq!(server.shutdown(Duration::from_millis(200)), 0);
    assert!(
        begun.elapsed() >= Duration::from_millis(200),
        "waited for the deadline"
    );
    assert_eq!(rx.recv_timeout(STEP).expect("closed"), "Shutdown");
}

#[test]
fn stop_returns_from_run_and_closures_run_on_the_reactor_thread() {
    let mut server = start(|reactor| {
        reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        std::thread::current().id()
    });
    let reactor_thread = server.info;
    let (count, thread) = server.query(|r| (r.source_count(), std::thread::current().id()));
    assert_eq!(count, 1);
    assert_eq!(thread, reactor_thread);
    assert!(server.handle.stop());
    assert_eq!(server.join(), 1, "stop leaves sources open");
}

/// Sends a greeting once connected, reports what comes back and how it ends.
struct Outbound(mpsc::Sender<String>);

impl StreamHandler for Outbound {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let _ = self.0.send("open".into());
        cx.send(b"from evloop");
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let _ = self.0.send(String::from_utf8_lossy(data).into_owned());
        cx.close();
        data.len()
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.0.send(format!("close {reason}"));
    }
}

#[test]
fn outbound_connection_opens_and_carries_bytes_both_ways() {
    let peer = TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer_addr = peer.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    let _server = start(move |reactor| {
        reactor.connect_tcp(peer_addr, Outbound(tx)).expect("connect");
    });
    let (mut stream, _) = peer.accept().expect("accept");
    stream.set_read_timeout(Some(STEP)).expect("timeout");
    assert_eq!(rx.recv_timeout(STEP).expect("event"), "open");
    assert_eq!(read_exact(&mut stream, 11), b"from evloop");
    write_all(&mut stream, b"from std");
    assert_eq!(rx.recv_timeout(STEP).expect("event"), "from std");
    assert_eq!(rx.recv_timeout(STEP).expect("event"), "close closed");
}

#[test]
fn outbound_connect_to_a_closed_port_reports_the_error_to_the_handler() {
    let closed = {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr")
    };
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| reactor.connect_tcp(closed, Outbound(tx)).map(|_| ()).is_ok());
    // Linux answers a non-blocking connect on loopback with EINPROGRESS and
    // reports the refusal as a socket error afterwards, so the handler hears.
    assert!(server.info, "connect_tcp started the attempt");
    let message = rx.recv_timeout(STEP).expect("handler told");
    assert!(message.starts_with("close connect failed"), "{message}");
    assert!(message.contains("refused"), "{message}");
}

/// Reads a pipe until `WouldBlock` on each event; closes itself at EOF.
struct PipeReader {
    pipe: mio::unix::pipe::Receiver,
    report: mpsc::Sender<Vec<u8>>,
}

impl SourceHandler for PipeReader {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.pipe
    }
    fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
        let mut buf = [0; 4096];
        loop {
            match self.pipe.read(&mut buf) {
                Ok(0) => {
                    let _ = self.report.send(b"<eof>".to_vec());
                    return cx.close();
                }
                Ok(n) => {
                    let _ = self.report.send(buf[..n].to_vec());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("pipe read: {e}"),
            }
        }
    }
}

#[test]
fn custom_pipe_source_delivers_bytes_and_eof() {
    let (sender, receiver) = mio::unix::pipe::new().expect("pipe");
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        reactor
            .register(
                PipeReader {
                    pipe: receiver,
                    report: tx,
                },
                Interest::READABLE,
            )
            .expect("register")
    });
    let key = server.info;
    sender.set_nonblocking(false).expect("blocking writes");
    let mut sender = sender;
    sender.write_all(b"through the pipe").expect("write");
    let mut got = Vec::new();
    while got.len() < 16 {
        got.extend(rx.recv_timeout(STEP).expect("bytes"));
    }
    assert_eq!(got, b"through the pipe");
    drop(sender);
    assert_eq!(rx.recv_timeout(STEP).expect("eof"), b"<eof>");
    server.wait_until("source removed", move |r| !r.contains(key));
}

#[track_caller]
fn udp_round_trip(bind: &str) {
    let addr = bind.parse().expect("addr");
    let server = start(move |reactor| {
        let key = reactor.bind_udp(addr, EchoDatagram).expect("bind udp");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let clients: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind(bind).expect("client")).collect();
    for (i, client) in clients.iter().enumerate() {
        client.set_read_timeout(Some(STEP)).expect("timeout");
        let size = [1, 1400, 65_507][i];
        let payload = pattern(size, i as u64 + 20);
        client.send_to(&payload, server.info).expect("send");
        let mut buf = vec![0; 70_000];
        let (n, from) = client.recv_from(&mut buf).expect("reply");
        assert_eq!(from, server.info);
        assert!(
            buf[..n] == payload[..],
            "datagram of {size} bytes came back unchanged"
        );
    }
}

#[test]
fn udp_echo_ipv4_up_to_the_largest_datagram() {
    udp_round_trip("127.0.0.1:0");
}

#[test]
fn udp_echo_ipv6() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; skipped");
        return;
    }
    udp_round_trip("[::1]:0");
}

#[test]
fn unix_datagram_echo() {
    let dir = std::env::temp_dir().join(format!("evloop-core-dgram-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let server_path = dir.join("server.sock");
    let bind_path = server_path.clone();
    let server = start(move |reactor| {
        reactor
            .bind_unix_datagram(&bind_path, EchoDatagram)
            .expect("bind");
    });
    let client = UnixDatagram::bind(dir.join("client.sock")).expect("client");
    client.set_read_timeout(Some(STEP)).expect("timeout");
    client.send_to(b"unix datagram", &server_path).expect("send");
    let mut buf = [0; 64];
    let n = client.recv(&mut buf).expect("reply");
    assert_eq!(&buf[..n], b"unix datagram");
    assert_eq!(server.shutdown(STEP), 0);
    assert!(!server_path.exists(), "socket file removed on close");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
