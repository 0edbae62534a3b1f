//! Datagram sockets through the reactor: UDP echo over IPv4 and IPv6 for
//! several clients at once, up to the largest UDP payload (65,507 bytes),
//! and Unix datagram echo to clients bound to paths of their own.
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;

use common::*;
use evloop::protocols::echo::EchoDatagram;

/// The largest payload of one UDP datagram over IPv4.
const LARGEST: usize = 65_507;

/// Sizes the clients send, one client each.
const SIZES: [usize; 4] = [1, 1400, 9000, LARGEST];

#[track_caller]
fn udp_echo_for_several_clients(bind: &str) {
    let addr: SocketAddr = bind.parse().expect("addr");
    let server = start(move |reactor| {
        let key = reactor.bind_udp(addr, EchoDatagram).expect("bind udp");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let clients: Vec<UdpSocket> = SIZES
        .iter()
        .map(|_| UdpSocket::bind(bind).expect("client"))
        .collect();
    // Everyone sends before anyone reads: the server has several senders'
    // datagrams waiting at once and must answer each to its own sender.
    for (i, client) in clients.iter().enumerate() {
        client.set_read_timeout(Some(STEP)).expect("timeout");
        client
            .send_to(&pattern(SIZES[i], i as u64 + 20), server.info)
            .expect("send");
    }
    for (i, client) in clients.iter().enumerate() {
        let mut buf = vec![0; LARGEST + 1];
        let (n, from) = client.recv_from(&mut buf).expect("reply");
        assert_eq!(from, server.info);
        assert_eq!(n, SIZES[i], "one datagram back, whole");
        assert!(
            buf[..n] == pattern(SIZES[i], i as u64 + 20),
            "datagram {i} changed"
        );
    }
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn udp_echo_over_ipv4_for_several_clients_up_to_the_largest_datagram() {
    udp_echo_for_several_clients("127.0.0.1:0");
}

#[test]
fn udp_echo_over_ipv6_for_several_clients_up_to_the_largest_datagram() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; skipped");
        return;
    }
    udp_echo_for_several_clients("[::1]:0");
}

#[test]
fn unix_datagram_echo_to_clients_bound_to_their_own_paths() {
    let dir = TempDir::new("dgram-unix");
    let server_path = dir.0.join("server.sock");
    let bind_path = server_path.clone();
    let server = start(move |reactor| {
        reactor
            .bind_unix_datagram(&bind_path, EchoDatagram)
            .expect("bind");
    });
    let clients: Vec<UnixDatagram> = (0..3)
        .map(|i| UnixDatagram::bind(dir.0.join(format!("client-{i}.sock"))).expect("client"))
        .collect();
    for (i, client) in clients.iter().enumerate() {
        client.set_read_timeout(Some(STEP)).expect("timeout");
        client
            .send_to(format!("unix datagram {i}").as_bytes(), &server_path)
            .expect("send");
    }
    for (i, client) in clients.iter().enumerate() {
        let mut buf = [0; 64];
        let n = client.recv(&mut buf).expect("reply");
        assert_eq!(&buf[..n], format!("unix datagram {i}").as_bytes());
    }
    assert_eq!(server.shutdown(STEP), 0);
    assert!(!server_path.exists(), "the socket file is removed on close");
}

/// A Unix datagram may be larger than a UDP one (up to the socket buffer):
/// one bigger than the reactor's 64 KiB read buffer must still come back
/// whole, not cut to the buffer's size.
#[test]
fn unix_datagram_larger_than_the_read_buffer_comes_back_whole() {
    const BIG: usize = 100_000;
    let dir = TempDir::new("dgram-unix-big");
    let server_path = dir.0.join("server.sock");
    let bind_path = server_path.clone();
    let server = start(move |reactor| {
        reactor
            .bind_unix_datagram(&bind_path, EchoDatagram)
            .expect("bind");
    });
    let client = UnixDatagram::bind(dir.0.join("client.sock")).expect("client");
    client.set_read_timeout(Some(STEP)).expect("timeout");
    let data = pattern(BIG, 50);
    client.send_to(&data, &server_path).expect("send");
    // Then a small one: the socket goes on after the big one.
    client.send_to(b"after", &server_path).expect("send");
    let mut buf = vec![0; 2 * BIG];
    let n = client.recv(&mut buf).expect("reply");
    assert_eq!(n, BIG, "the datagram came back cut");
    assert!(buf[..n] == data, "the datagram changed");
    let n = client.recv(&mut buf).expect("reply");
    assert_eq!(&buf[..n], b"after");
    assert_eq!(server.shutdown(STEP), 0);
}
