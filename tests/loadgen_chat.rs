//! The load generator's chat mode (tools/loadgen), from the outside:
//! against the chat example every line reaches every other member; a
//! server that does not relay, or is not there, fails the run; a bad
//! argument exits 2.
//!
//! The programs are built on demand (`cargo build`) the first time a test
//! needs them, so `cargo test --test loadgen_chat` alone runs the current
//! code.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;

use common::loadgen::Outcome;
use common::*;

/// Runs `loadgen chat ARGS`, bounded in time.
#[track_caller]
fn loadgen_chat(args: &[&str]) -> Outcome {
    common::loadgen::run(&[&["chat"], args].concat())
}

/// The chat example on a `:0` TCP port, built first if need be.
#[track_caller]
fn chat_server() -> ServerProcess {
    static BUILD: OnceLock<()> = OnceLock::new();
    BUILD.get_or_init(|| cargo_build(&["--example", "chat"]));
    chat::chat(&[])
}

#[test]
fn every_line_reaches_every_other_member() {
    let mut server = chat_server();
    let addr = server.addr("tcp");
    let pid = server.child.id().to_string();
    let out = loadgen_chat(&[
        "--tcp",
        &addr,
        "--receivers",
        "20",
        "--senders",
        "2",
        "--rate",
        "100",
        "--duration",
        "1",
        "--timeout",
        "30",
        "--pid",
        &pid,
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.json, out.stderr);
    assert_eq!(out.field("mode"), "chat");
    assert_eq!(out.field("addr"), addr);
    let sent = out.number("sent");
    assert!(sent > 0, "{}", out.json);
    // 22 members: each line goes to the 21 that did not send it.
    assert_eq!(out.number("expected"), sent * 21, "{}", out.json);
    assert_eq!(out.number("received"), out.number("expected"), "{}", out.json);
    assert_eq!(out.field("delivered"), "1.0000", "{}", out.json);
    assert_eq!(out.number("errors"), 0, "{}", out.json);
    assert_eq!(out.field("timed_out"), "false");
    assert!(
        out.field("server_us_per_line").parse::<f64>().is_ok(),
        "{}",
        out.json
    );
    assert!(server.terminate().success());
}

/// A room of two that greets both members by the protocol but relays
/// nothing: the first member is told of the second, then both are only
/// read from. Returns its address.
fn mute_room() -> String {
    let listener = TcpListener::bind(any_port()).expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        let mut members: Vec<TcpStream> = Vec::new();
        for nick in ["a", "b"] {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let _ = stream.set_read_timeout(Some(STEP));
            let _ = writeln!(stream, "* welcome {nick}");
            if let Some(first) = members.first_mut() {
                let _ = writeln!(first, "* {nick} joined");
            }
            members.push(stream);
        }
        // Reads each member's lines until its `/quit` (or a timeout),
        // then says bye and closes it.
        for member in members {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(member.try_clone().expect("clone"));
                let mut line = String::new();
                while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                    if line == "/quit\n" {
                        let _ = (&member).write_all(b"* bye\n");
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

#[test]
fn missing_deliveries_fail_the_run() {
    let addr = mute_room();
    let out = loadgen_chat(&[
        "--tcp",
        &addr,
        "--receivers",
        "1",
        "--senders",
        "1",
        "--rate",
        "50",
        "--duration",
        "0.2",
        "--grace",
        "0.1",
        "--timeout",
        "30",
    ]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.json, out.stderr);
    assert!(out.number("sent") > 0, "{}", out.json);
    assert_eq!(out.number("received"), 0, "{}", out.json);
    assert_eq!(out.field("delivered"), "0.0000", "{}", out.json);
    assert_eq!(out.number("errors"), 0, "{}", out.json);
    assert!(out.stderr.contains("deliveries missing"), "{}", out.stderr);
}

#[test]
fn a_refused_connection_fails_the_run_at_once() {
    let addr = TcpListener::bind(any_port())
        .and_then(|l| l.local_addr())
        .expect("a port")
        .to_string(); // nobody listens there any more
    let args = [
        "--tcp",
        &addr,
        "--receivers",
        "3",
        "--senders",
        "1",
        "--rate",
        "10",
    ];
    let out = loadgen_chat(&[&args[..], &["--duration", "1", "--timeout", "30"]].concat());
    assert_eq!(out.code, Some(1), "{}\n{}", out.json, out.stderr);
    assert!(out.number("dropped") >= 1, "{}", out.json);
    assert_eq!(out.number("sent"), 0, "{}", out.json);
    assert_eq!(
        out.field("timed_out"),
        "false",
        "ended at once, not at the deadline"
    );
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
}

#[test]
fn bad_arguments_exit_2() {
    let base = ["--tcp", "127.0.0.1:1", "--duration", "1"];
    for extra in [
        &["--receivers", "5", "--senders", "0", "--rate", "10"][..],
        &["--receivers", "0", "--senders", "1", "--rate", "10"],
        &["--receivers", "5", "--senders", "1", "--rate", "0"],
        &["--receivers", "5", "--senders", "1"],
    ] {
        let out = loadgen_chat(&[&base[..], extra].concat());
        assert_eq!(out.code, Some(2), "{extra:?}: {}", out.stderr);
        assert!(out.json.is_empty(), "{extra:?}: {}", out.json);
        assert_eq!(out.stderr.lines().count(), 1, "{extra:?}: {}", out.stderr);
    }
}
