//! The load generator (tools/loadgen), from the outside: against the echo example over
//! TCP, a Unix socket and UDP it completes its requests with no error; a
//! server that corrupts a byte, drops datagrams, or is not there is caught.
//!
//! The two programs are built on demand (`cargo build`) the first time a
//! test needs them, so `cargo test --test loadgen` alone runs the current
//! code.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::loadgen::{Outcome, RUN_LIMIT};
use common::*;

/// The path of the program `name`: the `echo` example or the `loadgen`
/// tool, built once per test process with the profile these tests were
/// built with.
fn built(name: &str) -> PathBuf {
    match name {
        "loadgen" => tool_path("loadgen"),
        _ => {
            static BUILD: OnceLock<()> = OnceLock::new();
            BUILD.get_or_init(|| cargo_build(&["--example", "echo"]));
            example_path(name)
        }
    }
}

/// Runs `loadgen echo ARGS`, bounded in time.
#[track_caller]
fn loadgen(args: &[&str]) -> Outcome {
    built("loadgen");
    common::loadgen::run(&[&["echo"], args].concat())
}

/// The echo example on TCP, UDP and a Unix socket in `dir`.
#[track_caller]
fn echo_server(dir: &TempDir) -> ServerProcess {
    built("echo");
    let path = dir.0.join("echo.sock");
    let path = path.to_str().expect("utf-8 path");
    let args = ["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--unix", path];
    ServerProcess::start("echo", &args, 3)
}

/// Runs loadgen against `server` over `transport` and checks that the run
/// passed: exit 0, `requests` answered, no error.
#[track_caller]
fn passes(server: &ServerProcess, transport: &str, extra: &[&str], requests: u64) -> Outcome {
    let addr = server.addr(transport);
    let total = requests.to_string();
    let flag = format!("--{transport}");
    let mut args = vec![flag.as_str(), &addr, "--requests", &total, "--timeout", "30"];
    args.extend_from_slice(extra);
    let out = loadgen(&args);
    assert_eq!(out.code, Some(0), "{args:?}: {}\n{}", out.json, out.stderr);
    assert_eq!(out.field("mode"), "echo");
    assert_eq!(out.field("transport"), transport);
    assert_eq!(out.number("requests"), requests, "{}", out.json);
    assert_eq!(out.number("errors"), 0, "{}", out.json);
    assert_eq!(out.number("wrong_bytes"), 0, "{}", out.json);
    assert_eq!(out.field("timed_out"), "false");
    assert!(out.number("conns") > 0);
    out
}

#[test]
fn echo_over_tcp_completes_every_request() {
    let dir = TempDir::new("loadgen-tcp");
    let mut server = echo_server(&dir);
    let small = ["--conns", "8", "--size", "64", "--depth", "2"];
    let out = passes(&server, "tcp", &small, 3000);
    assert_eq!(out.field("addr"), server.addr("tcp"));
    // Requests larger than one read, several in flight: answers arrive in
    // pieces that do not line up with requests.
    let large = ["--conns", "3", "--size", "100000", "--depth", "3"];
    passes(&server, "tcp", &large, 300);
    assert!(server.terminate().success());
}

#[test]
fn echo_over_a_unix_socket_completes_every_request() {
    let dir = TempDir::new("loadgen-unix");
    let mut server = echo_server(&dir);
    let small = ["--conns", "8", "--size", "64", "--depth", "2"];
    passes(&server, "unix", &small, 3000);
    let large = ["--conns", "2", "--size", "70001", "--depth", "2"];
    passes(&server, "unix", &large, 200);
    assert!(server.terminate().success());
}

#[test]
fn echo_over_udp_completes_every_request() {
    let dir = TempDir::new("loadgen-udp");
    let mut server = echo_server(&dir);
    let small = ["--conns", "4", "--size", "64", "--depth", "2"];
    passes(&server, "udp", &small, 3000);
    let large = ["--conns", "2", "--size", "9000", "--depth", "1"];
    passes(&server, "udp", &large, 300);
    assert!(server.terminate().success());
}

#[test]
fn a_duration_run_measures_for_that_long() {
    let dir = TempDir::new("loadgen-duration");
    let mut server = echo_server(&dir);
    let addr = server.addr("tcp");
    let started = Instant::now();
    let out = loadgen(&[
        "--tcp",
        &addr,
        "--conns",
        "4",
        "--size",
        "64",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.json, out.stderr);
    let seconds: f64 = out.field("seconds").parse().expect("seconds");
    assert!((0.3..0.5).contains(&seconds), "{}", out.json);
    assert!(out.number("requests") > 0);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(server.terminate().success());
}

/// A TCP echo server of one connection that changes byte `flip` of the
/// stream on its way back.
fn corrupting_server(flip: usize) -> SocketAddr {
    let listener = TcpListener::bind(any_port()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(STEP));
        let mut buf = [0u8; 4096];
        let mut offset = 0;
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if (offset..offset + n).contains(&flip) {
                buf[flip - offset] ^= 0x20;
            }
            offset += n;
            if stream.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    addr
}

#[test]
fn a_wrong_byte_fails_the_run() {
    let addr = corrupting_server(1000).to_string();
    let out = loadgen(&[
        "--tcp",
        &addr,
        "--conns",
        "1",
        "--size",
        "64",
        "--requests",
        "1000",
        "--timeout",
        "30",
    ]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.json, out.stderr);
    assert!(out.number("requests") < 1000, "{}", out.json);
    assert_eq!(out.number("errors"), 1, "{}", out.json);
    assert_eq!(out.number("wrong_bytes"), 1, "{}", out.json);
    assert_eq!(
        out.field("timed_out"),
        "false",
        "ended at once, not at the deadline"
    );
    assert!(out.stderr.contains("wrong byte at offset 1000"), "{}", out.stderr);
}

/// A UDP echo server that drops every `nth` datagram, until `stop`.
fn lossy_udp_server(nth: u64, stop: Arc<AtomicBool>) -> SocketAddr {
    let socket = UdpSocket::bind(any_port()).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let addr = socket.local_addr().expect("addr");
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut buf = [0u8; 65536];
        let mut seen = 0u64;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < RUN_LIMIT {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            seen += 1;
            if seen % nth != 0 {
                let _ = socket.send_to(&buf[..n], from);
            }
        }
    });
    addr
}

#[test]
fn lost_datagrams_are_counted_and_sent_again() {
    let stop = Arc::new(AtomicBool::new(false));
    let addr = lossy_udp_server(10, Arc::clone(&stop)).to_string();
    let out = loadgen(&[
        "--udp",
        &addr,
        "--conns",
        "2",
        "--size",
        "64",
        "--depth",
        "2",
        "--requests",
        "300",
        "--loss-timeout",
        "0.05",
        "--timeout",
        "30",
    ]);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(out.code, Some(0), "{}\n{}", out.json, out.stderr);
    assert_eq!(out.number("requests"), 300, "{}", out.json);
    assert_eq!(out.number("errors"), 0, "{}", out.json);
    assert!(
        out.number("lost") >= 10,
        "every 10th of 300+ is lost: {}",
        out.json
    );
}

#[test]
fn a_refused_connection_is_a_clear_error() {
    let addr = TcpListener::bind(any_port())
        .and_then(|l| l.local_addr())
        .expect("a port")
        .to_string(); // nobody listens there any more
    let out = loadgen(&["--tcp", &addr, "--conns", "3", "--size", "64", "--requests", "10"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.json, out.stderr);
    assert_eq!(out.number("errors"), 3, "{}", out.json);
    assert!(
        out.stderr.contains(&format!("to {addr}: cannot connect")),
        "{}",
        out.stderr
    );

    let dir = TempDir::new("loadgen-refused");
    let path = dir.0.join("nobody.sock");
    let path = path.to_str().expect("utf-8 path");
    let out = loadgen(&["--unix", path, "--conns", "2", "--size", "64", "--requests", "10"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.json, out.stderr);
    assert_eq!(out.number("errors"), 2, "{}", out.json);
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
}

#[test]
fn a_server_that_hangs_up_fails_the_run() {
    let listener = TcpListener::bind(any_port()).expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        // Each connection is closed as soon as it is accepted.
        for _ in 0..2 {
            let _ = listener.accept();
        }
    });
    let out = loadgen(&[
        "--tcp",
        &addr,
        "--conns",
        "2",
        "--size",
        "64",
        "--requests",
        "100",
    ]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.json, out.stderr);
    assert_eq!(out.number("errors"), 2, "{}", out.json);
    assert_eq!(
        out.field("timed_out"),
        "false",
        "ended at once, not at the deadline"
    );
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    for args in [
        &[
            "--tcp",
            "127.0.0.1:1",
            "--udp",
            "127.0.0.1:1",
            "--conns",
            "1",
            "--size",
            "64",
            "--requests",
            "1",
        ][..],
        &["--tcp", "127.0.0.1:1", "--conns", "1", "--size", "64"],
        &[
            "--udp",
            "127.0.0.1:1",
            "--conns",
            "1",
            "--size",
            "8",
            "--requests",
            "1",
        ],
        &[
            "--tcp",
            "127.0.0.1:1",
            "--conns",
            "0",
            "--size",
            "64",
            "--requests",
            "1",
        ],
        &[
            "--tcp",
            "127.0.0.1:1",
            "--conns",
            "1",
            "--size",
            "64",
            "--duration",
            "soon",
        ],
    ] {
        let out = loadgen(args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.json.is_empty(), "{args:?}: nothing on stdout");
        assert_eq!(
            out.stderr.trim_end().lines().count(),
            1,
            "{args:?}: {}",
            out.stderr
        );
    }
    let out = Command::new(built("loadgen"))
        .args(["echo", "--help"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let usage = String::from_utf8_lossy(&out.stdout);
    assert!(
        usage.contains("--unix") && usage.contains("--requests"),
        "{usage}"
    );
}
