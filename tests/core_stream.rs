//! Stream connections through the reactor: bulk echo with concurrent read and
//! write over TCP (IPv4, IPv6) and Unix sockets, half-close in both
//! directions, a thousand connections at once, and the per-listener limit.
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;

use common::*;
use evloop::protocols::echo::Echo;
use evloop::{Addr, Context, ListenerOptions, StreamFactory, StreamHandler};

const TEN_MIB: usize = 10 * 1024 * 1024;

/// Writes `data` on one thread while reading it back on this one.
#[track_caller]
fn echo_concurrently<S>(mut writer: S, mut reader: S, data: Vec<u8>) -> Vec<u8>
where
    S: Read + Write + Send + 'static,
{
    let len = data.len();
    let sender = std::thread::spawn(move || {
        for chunk in data.chunks(64 * 1024) {
            writer.write_all(chunk).expect("write");
        }
        writer
    });
    let mut back = vec![0; len];
    reader.read_exact(&mut back).expect("echoed bytes");
    sender.join().expect("writer thread");
    back
}

fn start_echo(addr: SocketAddr) -> Running<SocketAddr> {
    start(move |reactor| {
        let key = reactor.listen_tcp(addr, |_: &Addr| Echo).expect("listen");
        reactor
            .local_addr(key)
            .and_then(|a| a.as_inet())
            .expect("tcp address")
    })
}

#[test]
fn ten_mib_echo_round_trip_with_concurrent_read_and_write_ipv4() {
    let server = start_echo(any_port());
    let client = connect(server.info);
    let data = pattern(TEN_MIB, 1);
    let back = echo_concurrently(client.try_clone().expect("clone"), client, data.clone());
    assert!(back == data, "echoed bytes differ");
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn ten_mib_echo_round_trip_ipv6() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback on this machine; skipped");
        return;
    };
    drop(probe);
    let server = start_echo("[::1]:0".parse().expect("addr"));
    assert!(server.info.is_ipv6());
    let client = connect(server.info);
    let data = pattern(TEN_MIB, 2);
    let back = echo_concurrently(client.try_clone().expect("clone"), client, data.clone());
    assert!(back == data, "echoed bytes differ");
}

#[test]
fn ten_mib_echo_round_trip_unix_stream() {
    let dir = std::env::temp_dir().join(format!("evloop-core-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("echo.sock");
    let listen_path = path.clone();
    let server = start(move |reactor| {
        reactor
            .listen_unix(&listen_path, |_: &Addr| Echo)
            .expect("listen unix");
    });
    let client = UnixStream::connect(&path).expect("connect unix");
    client.set_read_timeout(Some(STEP)).expect("timeout");
    let data = pattern(TEN_MIB, 3);
    let back = echo_concurrently(client.try_clone().expect("clone"), client, data.clone());
    assert!(back == data, "echoed bytes differ");
    assert_eq!(server.shutdown(STEP), 0);
    assert!(!path.exists(), "the listener removes its socket file");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn half_close_gets_everything_owed_then_eof() {
    let server = start_echo(any_port());
    let mut client = connect(server.info);
    let data = pattern(1024 * 1024, 4);
    // Send it all before reading anything, then half-close.
    let mut writer = client.try_clone().expect("clone");
    let sent = data.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).expect("write");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let back = read_to_end(&mut client);
    sender.join().expect("writer");
    assert!(back == data, "got {} of {} bytes", back.len(), data.len());
}

/// Answers the peer's FIN with a farewell, proving the write half stays
/// open after the read half closed.
struct ByeOnFin;

impl StreamHandler for ByeOnFin {
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        data.len()
    }
    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        assert!(cx.send(b"bye after your FIN"), "write half still open");
        cx.close();
    }
}

#[test]
fn write_half_stays_open_after_peer_fin() {
    let server = start(|reactor| {
        let key = reactor
            .listen_tcp(any_port(), |_: &Addr| ByeOnFin)
            .expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let mut client = connect(server.info);
    write_all(&mut client, b"ignored");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_end(&mut client), b"bye after your FIN");
}

/// Shuts its write half at once; afterwards reports every byte it receives
/// on a channel.
struct ShutWriteFirst(std::sync::mpsc::Sender<Vec<u8>>);

impl StreamHandler for ShutWriteFirst {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.send(b"only this");
        cx.shutdown_write();
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        assert!(!cx.send(b"x"), "no sends after shutdown_write");
        let _ = self.0.send(data.to_vec());
        data.len()
    }
}

#[test]
fn shutdown_write_sends_eof_and_input_still_arrives() {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = start(move |reactor| {
        let key = reactor
            .listen_tcp(any_port(), move |_: &Addr| ShutWriteFirst(tx.clone()))
            .expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let mut client = connect(server.info);
    assert_eq!(read_to_end(&mut client), b"only this", "queued bytes, then EOF");
    write_all(&mut client, b"still heard");
    let mut heard = Vec::new();
    while heard.len() < 11 {
        heard.extend(rx.recv_timeout(STEP).expect("handler received"));
    }
    assert_eq!(heard, b"still heard");
    client.shutdown(Shutdown::Write).expect("half-close");
    server.wait_until("connection gone after both FINs", |r| r.source_count() == 1);
}

#[test]
fn a_thousand_concurrent_connections_then_none() {
    raise_fd_limit(4096);
    let server = start(|reactor| {
        let key = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        (
            key,
            reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr"),
        )
    });
    let (listener, addr) = server.info;
    let mut clients: Vec<TcpStream> = (0..1000).map(|_| connect(addr)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        write_all(client, format!("{i:04}").as_bytes());
    }
    server.wait_until("all 1000 accepted", move |r| r.connection_count(listener) == 1000);
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_exact(client, 4), format!("{i:04}").as_bytes());
    }
    drop(clients);
    server.wait_until("all 1000 gone", move |r| r.connection_count(listener) == 0);
    assert_eq!(server.query(|r| r.source_count()), 1, "only the listener is left");
}

/// Turns connections over the limit away with a farewell.
struct Limited;

impl StreamFactory for Limited {
    fn new_handler(&mut self, _peer: &Addr) -> Box<dyn StreamHandler> {
        Box::new(Echo)
    }
    fn farewell(&mut self, _peer: &Addr) -> Option<Vec<u8>> {
        Some(b"full\n".to_vec())
    }
}

#[test]
fn connection_over_the_listener_limit_gets_farewell_then_eof() {
    let server = start(|reactor| {
        let options = ListenerOptions {
            max_connections: 2,
            ..ListenerOptions::default()
        };
        let key = reactor
            .listen_tcp_with(any_port(), options, Limited)
            .expect("listen");
        (
            key,
            reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr"),
        )
    });
    let (listener, addr) = server.info;
    let mut first = connect(addr);
    let mut second = connect(addr);
    server.wait_until("two admitted", move |r| r.connection_count(listener) == 2);
    let mut third = connect(addr);
    assert_eq!(read_to_end(&mut third), b"full\n");
    for client in [&mut first, &mut second] {
        write_all(client, b"ok");
        assert_eq!(read_exact(client, 2), b"ok");
    }
    drop(first);
    server.wait_until("one left", move |r| r.connection_count(listener) == 1);
    let mut fourth = connect(addr);
    write_all(&mut fourth, b"in");
    assert_eq!(read_exact(&mut fourth, 2), b"in");
}

/// Raises the soft descriptor limit to `want` (or the hard limit).
fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, exclusively borrowed struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
