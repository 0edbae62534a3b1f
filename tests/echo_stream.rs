//! Bulk echo through the reactor: 10 MiB each way with the client writing
//! on one thread while it reads on another, over TCP on IPv4 and IPv6 and
//! over a Unix stream socket; the bytes that come back must be the bytes
//! sent, in order.
mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;

use common::*;
use evloop::protocols::echo::Echo;
use evloop::Addr;

const TEN_MIB: usize = 10 * 1024 * 1024;

/// Writes `data` on a thread of its own while reading the echo here.
#[track_caller]
fn echo_concurrently<S>(mut writer: S, mut reader: S, data: &[u8]) -> Vec<u8>
where
    S: Read + Write + Send + 'static,
{
    let sent = data.to_vec();
    let sender = std::thread::spawn(move || {
        for chunk in sent.chunks(64 * 1024) {
            writer.write_all(chunk).expect("client write");
        }
        writer
    });
    let mut back = vec![0; data.len()];
    reader.read_exact(&mut back).expect("the whole echo");
    sender.join().expect("writer thread");
    back
}

/// Compares without printing 10 MiB on failure.
#[track_caller]
fn assert_same(back: &[u8], data: &[u8]) {
    if let Some(at) = back.iter().zip(data).position(|(a, b)| a != b) {
        panic!("echo differs from byte {at} on (of {})", data.len());
    }
    assert_eq!(back.len(), data.len());
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
fn ten_mib_echo_round_trip_over_ipv4_with_concurrent_read_and_write() {
    let server = start_echo(any_port());
    let client = connect(server.info);
    let data = pattern(TEN_MIB, 1);
    let back = echo_concurrently(client.try_clone().expect("clone"), client, &data);
    assert_same(&back, &data);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn ten_mib_echo_round_trip_over_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; skipped");
        return;
    }
    let server = start_echo("[::1]:0".parse().expect("addr"));
    assert!(server.info.is_ipv6());
    let client = connect(server.info);
    let data = pattern(TEN_MIB, 2);
    let back = echo_concurrently(client.try_clone().expect("clone"), client, &data);
    assert_same(&back, &data);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn ten_mib_echo_round_trip_over_a_unix_stream_socket() {
    let dir = TempDir::new("echo-unix");
    let path = dir.0.join("echo.sock");
    let listen_path = path.clone();
    let server = start(move |reactor| {
        reactor
            .listen_unix(&listen_path, |_: &Addr| Echo)
            .expect("listen unix");
    });
    let client = UnixStream::connect(&path).expect("connect unix");
    client.set_read_timeout(Some(STEP)).expect("timeout");
    client.set_write_timeout(Some(STEP)).expect("timeout");
    let data = pattern(TEN_MIB, 3);
    let back = echo_concurrently(client.try_clone().expect("clone"), client, &data);
    assert_same(&back, &data);
    assert_eq!(server.shutdown(STEP), 0);
    assert!(!path.exists(), "the listener removes its socket file");
}
