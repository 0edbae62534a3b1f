//! The echo example server, from the outside (docs/programs.md: common rules, echo).
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
    assert_taken_address_is_one_line("echo", &["--tcp", &addr], &addr);
}

#[test]
fn echo_server_on_a_unix_socket_and_ipv6() {
    let dir = TempDir::new("echo-example-unix");
    let path = dir.0.join("echo.sock");
    let path_arg = path.to_str().expect("utf-8 path");
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let mut args = vec!["--unix", path_arg];
    if ipv6 {
        args.extend(["--tcp", "[::1]:0"]);
    }
    let mut server = ServerProcess::start("echo", &args, if ipv6 { 2 } else { 1 });
    assert_eq!(server.addr("unix"), path_arg);
    let mut unix = std::os::unix::net::UnixStream::connect(&path).expect("connect unix");
    unix.set_read_timeout(Some(STEP)).expect("timeout");
    write_all(&mut unix, b"over a path");
    assert_eq!(read_exact(&mut unix, 11), b"over a path");
    unix.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_end(&mut unix), b"");
    if ipv6 {
        let mut v6 = connect(server.socket_addr("tcp"));
        write_all(&mut v6, b"v6");
        assert_eq!(read_exact(&mut v6, 2), b"v6");
    }
    assert!(server.terminate().success());
    assert!(!path.exists(), "the socket file is removed at exit");
}

#[test]
fn a_bind_without_permission_is_one_line_naming_it() {
    // Ports below net.ipv4.ip_unprivileged_port_start need privilege. Root
    // has it, so as root the server runs as nobody.
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    if start <= 1 {
        eprintln!("every port is unprivileged on this machine: nothing to refuse");
        return;
    }
    let addr = format!("127.0.0.1:{}", start - 1);
    let mut command = Command::new(example_path("echo"));
    command.args(["--tcp", &addr]);
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        use std::os::unix::process::CommandExt;
        command.uid(65534).gid(65534);
    }
    let out = command.output().expect("run");
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(stderr.to_lowercase().contains("permission"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Clients that send but never read (docs/programs.md: echo). Each pushes until the
/// server stops taking its bytes; then the server must be holding no more
/// than about 64 KiB for each (one read's worth), not a watermark's worth
/// plus several reads, as it did when it kept reading past the watermark.
#[test]
fn a_client_that_sends_but_never_reads_costs_at_most_about_64_kib() {
    use std::io::{ErrorKind, Write};
    use std::time::{Duration, Instant};

    const CLIENTS: usize = 40;
    let server = ServerProcess::start("echo", &["--tcp", "127.0.0.1:0"], 1);
    let addr = server.socket_addr("tcp");
    let before_kib = server.rss_kib();

    let mut clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stream = connect(addr);
            stream.set_nonblocking(true).expect("non-blocking");
            stream
        })
        .collect();
    // Push until a few rounds in a row take nothing: the server has
    // stopped reading from every client and the kernel's buffers are full.
    let chunk = vec![b'e'; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_rounds = 0;
    while quiet_rounds < 5 {
        assert!(Instant::now() < deadline, "the server kept taking bytes");
        let mut taken = 0;
        for client in &mut clients {
            loop {
                match client.write(&chunk) {
                    Ok(n) => taken += n,
                    Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                    Err(err) => panic!("write: {err}"),
                }
            }
        }
        quiet_rounds = if taken == 0 { quiet_rounds + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(20));
    }

    let grown_kib = server.rss_kib().saturating_sub(before_kib);
    let bound_kib = (CLIENTS * 96) as u64;
    assert!(
        grown_kib <= bound_kib,
        "{CLIENTS} clients that do not read grew the server by {grown_kib} KiB (bound {bound_kib})"
    );

    // Reading again, a client gets its echo back, and the server reads on.
    let mut client = clients.pop().expect("a client");
    client.set_nonblocking(false).expect("blocking");
    let mut buf = vec![0; 64 * 1024];
    let got = std::io::Read::read(&mut client, &mut buf).expect("echo flows again");
    assert!(got > 0 && buf[..got].iter().all(|&b| b == b'e'));
}
