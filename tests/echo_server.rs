//! The echo example server, from the outside (contract: common rules, echo).
mod common;

use std::net::{Shutdown, UdpSocket};
use std::process::Command;

use common::*;

#[test]
fn echo_server_announces_and_echoes_tcp_udp_and_stops_on_sigterm() {
    let mut server = ServerProcess::start("echo", &["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"], 2);
    let mut client = connect(server.socket_addr("tcp"));
    write_all(&mut client, b"ping\n");
    assert_eq!(read_exact(&mut client, 5), b"ping\n");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_end(&mut client), b"");

    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    udp.set_read_timeout(Some(STEP)).expect("timeout");
    udp.send_to(b"datagram", server.socket_addr("udp")).expect("send");
    let mut buf = [0; 64];
    let (n, _) = udp.recv_from(&mut buf).expect("recv");
    assert_eq!(&buf[..n], b"datagram");

    assert!(server.terminate().success());
    assert_eq!(
        server.next_stdout_line(std::time::Duration::from_millis(100)),
        None
    );
}

#[test]
fn bad_argument_is_one_line_and_exit_2() {
    let out = Command::new(example_path("echo"))
        .arg("--nonsense")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end().lines().count(), 1);
}

#[test]
fn help_exits_0() {
    let out = Command::new(example_path("echo"))
        .arg("--help")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--tcp"));
}

#[test]
fn address_in_use_is_one_line_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(example_path("echo"))
        .args(["--tcp", &addr])
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
