//! The demo example: echo, chat and files (plain and HTTP) served at once by one reactor
//! on one thread (docs/programs.md: demo).
mod common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;

use common::*;

#[test]
fn one_thread_serves_echo_chat_and_files_at_once() {
    let root = std::env::temp_dir().join(format!("evloop-demo-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(root.join("note.txt"), b"from the demo\n").expect("file");
    let args = [
        "--root",
        root.to_str().expect("utf-8"),
        "--echo",
        "127.0.0.1:0",
        "--echo-udp",
        "127.0.0.1:0",
        "--chat",
        "127.0.0.1:0",
        "--files",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ];
    let mut demo = ServerProcess::start("demo", &args, 5);
    let tcp: Vec<String> = demo
        .listening
        .iter()
        .filter(|(kind, _)| kind == "tcp")
        .map(|(_, addr)| addr.clone())
        .collect();
    assert_eq!(tcp.len(), 3);
    let task = std::fs::read_to_string(format!("/proc/{}/status", demo.child.id())).expect("status");
    assert!(task.contains("Threads:\t1\n"), "one thread serves it all");

    let mut echo = connect(tcp[0].parse().expect("addr"));
    let mut chat = BufReader::new(connect(tcp[1].parse().expect("addr")));
    let mut files = connect(tcp[2].parse().expect("addr"));

    write_all(&mut files, b"note.txt");
    write_all(&mut echo, b"ping");
    let mut welcome = String::new();
    chat.read_line(&mut welcome).expect("welcome");
    assert!(welcome.starts_with("* welcome "), "{welcome}");
    assert_eq!(read_exact(&mut echo, 4), b"ping");
    assert_eq!(read_to_end(&mut files), b"from the demo\n");

    let mut http = connect(demo.socket_addr("http"));
    write_all(
        &mut http,
        b"GET /note.txt HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n",
    );
    let answer = String::from_utf8(read_to_end(&mut http)).expect("utf-8");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nfrom the demo\n"), "{answer}");

    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    udp.set_read_timeout(Some(STEP)).expect("timeout");
    udp.send_to(b"dgram", demo.addr("udp")).expect("send");
    let mut buf = [0; 16];
    let n = udp.recv(&mut buf).expect("echo");
    assert_eq!(&buf[..n], b"dgram");

    assert!(demo.terminate().success());
    std::fs::remove_dir_all(&root).expect("cleanup");
}
