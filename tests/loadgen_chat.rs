//! The load generator's chat mode (tools/loadgen), from the outside:
//! against the chat example every line reaches every other member; with
//! several `--tcp` addresses the members are spread over them and each
//! delivery is counted and timed as within one server or across servers;
//! a server that does not relay, or is not there, fails the run; a bad
//! argument exits 2.
//!
//! The programs are built on demand (`cargo build`) the first time a test
//! needs them, so `cargo test --test loadgen_chat` alone runs the current
//! code.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use common::loadgen::Outcome;
use common::*;

/// Runs `loadgen chat ARGS`, bounded in time.
#[track_caller]
fn loadgen_chat(args: &[&str]) -> Outcome {
    common::loadgen::run(&[&["chat"], args].concat())
}

/// Builds the chat example, once per test process.
/// loadgen's chat mode with 20 receivers and 2 senders at 100 lines/s for
/// a second, over the servers at `tcp` (members in turn), measuring the
/// processes `pids` (comma-separated).
fn room_load(tcp: &[&str], pids: &str) -> Outcome {
    let mut args = Vec::new();
    for addr in tcp {
        args.extend(["--tcp", addr]);
    }
    args.extend([
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
        pids,
    ]);
    loadgen_chat(&args)
}

fn build_chat() {
    static BUILD: OnceLock<()> = OnceLock::new();
    BUILD.get_or_init(|| cargo_build(&["--example", "chat"]));
}

/// The chat example on a `:0` TCP port, built first if need be.
#[track_caller]
fn chat_server() -> ServerProcess {
    build_chat();
    chat::chat(&[])
}

#[test]
fn every_line_reaches_every_other_member() {
    let mut server = chat_server();
    let addr = server.addr("tcp");
    let pid = server.child.id().to_string();
    let out = room_load(&[&addr], &pid);
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

/// A TCP relay on a `:0` port of its own to `upstream`: each connection
/// accepted is piped both ways to a new connection to `upstream` (a
/// direction's end is passed on as a shutdown of the other side's write).
/// Returns its address and the count of connections it accepted.
fn counting_relay(upstream: &str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(any_port()).expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let upstream = upstream.to_string();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue; // the client sees its connection closed
            };
            for (mut from, to) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                ),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut &to);
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        }
    });
    (addr, accepted)
}

#[test]
fn members_are_spread_over_the_addresses_and_deliveries_split_by_server() {
    // One chat server on two listeners: the first address straight, the
    // second through a relay that counts who came by it. By address they
    // are two servers (the room is one), so both kinds are delivered.
    build_chat();
    let mut server = ServerProcess::start("chat", &["--tcp", "127.0.0.1:0", "--tcp", "127.0.0.1:0"], 2);
    let tcp: Vec<String> = server
        .listening
        .iter()
        .filter(|(kind, _)| kind == "tcp")
        .map(|(_, addr)| addr.clone())
        .collect();
    assert_eq!(tcp.len(), 2, "{:?}", server.listening);
    let (relay, relayed) = counting_relay(&tcp[1]);
    let pid = server.child.id().to_string();
    // 3 senders and 20 receivers, members 0 to 22 in turn over the two
    // addresses: 12 on the first (senders 0 and 2), 11 on the second
    // (sender 1).
    let out = loadgen_chat(&[
        "--tcp",
        &tcp[0],
        "--tcp",
        &relay,
        "--receivers",
        "20",
        "--senders",
        "3",
        "--rate",
        "90",
        "--duration",
        "1",
        "--timeout",
        "30",
        "--pid",
        &format!("{pid},{pid}"),
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.json, out.stderr);
    assert_eq!(out.field("addr"), format!("{},{relay}", tcp[0]));
    assert_eq!(
        relayed.load(Ordering::SeqCst),
        11,
        "members that came through the second address"
    );
    assert_eq!(out.number("servers"), 2, "{}", out.json);
    assert_eq!(out.field("members_per_server"), "12,11", "{}", out.json);
    // Line k goes to sender k mod 3: senders 0 and 2 (first address) send
    // two lines in three, sender 1 (second address) the third.
    let sent = out.number("sent");
    assert!(sent > 0, "{}", out.json);
    let (from_first, from_second) = (sent - sent / 3, sent / 3);
    let within = from_first * 11 + from_second * 10;
    let across = from_first * 11 + from_second * 12;
    assert_eq!(out.number("within_expected"), within, "{}", out.json);
    assert_eq!(out.number("across_expected"), across, "{}", out.json);
    assert_eq!(within + across, out.number("expected"), "{}", out.json);
    for kind in ["within", "across"] {
        let field = |name: &str| format!("{kind}_{name}");
        assert_eq!(
            out.number(&field("received")),
            out.number(&field("expected")),
            "{}",
            out.json
        );
        assert_eq!(out.number(&field("missing")), 0, "{}", out.json);
        assert_eq!(out.field(&field("delivered")), "1.0000", "{}", out.json);
        let (p50, p99, max) = (
            out.real(&field("p50_us")),
            out.real(&field("p99_us")),
            out.real(&field("max_us")),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{kind}: {}", out.json);
    }
    assert_eq!(out.number("missing"), 0, "{}", out.json);
    assert_eq!(out.field("delivered"), "1.0000", "{}", out.json);
    // The same process twice in --pid: each alone, and their sum.
    let each: Vec<f64> = out
        .field("server_cpu_each")
        .split(',')
        .map(|v| v.parse().expect("a share"))
        .collect();
    assert_eq!(each.len(), 2, "{}", out.json);
    assert!(
        out.field("server_us_per_line_each").split(',').count() == 2,
        "{}",
        out.json
    );
    assert!(server.terminate().success());
}

#[test]
fn one_address_is_all_within() {
    let mut server = chat_server();
    let addr = server.addr("tcp");
    let out = loadgen_chat(&[
        "--tcp",
        &addr,
        "--tcp",
        &addr, // the same address twice: one server
        "--receivers",
        "4",
        "--senders",
        "2",
        "--rate",
        "50",
        "--duration",
        "0.4",
        "--timeout",
        "30",
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.json, out.stderr);
    assert_eq!(out.number("servers"), 1, "{}", out.json);
    assert_eq!(out.field("members_per_server"), "6", "{}", out.json);
    assert_eq!(
        out.number("within_expected"),
        out.number("expected"),
        "{}",
        out.json
    );
    assert_eq!(
        out.number("within_received"),
        out.number("expected"),
        "{}",
        out.json
    );
    assert_eq!(out.number("across_expected"), 0, "{}", out.json);
    for key in [
        "across_delivered",
        "across_p50_us",
        "across_p99_us",
        "across_max_us",
    ] {
        assert_eq!(out.field(key), "null", "{key}: {}", out.json);
    }
    assert!(server.terminate().success());
}

/// The chat example in `room` over Redis at `redis`, on a `:0` TCP port,
/// logging at `RUST_LOG=info` to `NAME.log` in `dir`; returned once it has
/// logged that it is in the room (within [`STEP`]).
#[track_caller]
fn chat_in_room(redis: &str, room: &str, dir: &TempDir, name: &str) -> ServerProcess {
    build_chat();
    let log = dir.0.join(format!("{name}.log"));
    let mut command = std::process::Command::new(example_path("chat"));
    command
        .args(["--tcp", "127.0.0.1:0", "--redis", redis, "--room", room])
        .env("RUST_LOG", "info");
    let stderr = std::fs::File::create(&log).expect("log file");
    let server = ServerProcess::start_logging_to(&mut command, 1, std::process::Stdio::from(stderr));
    let joined = format!("chat: in room {room} over Redis at {redis}");
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&joined) {
            return server;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never logged {joined:?}; its log:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn two_servers_over_redis_deliver_within_and_across() {
    let redis = common::redis::RedisServer::start();
    let dir = TempDir::new("loadgen-chat-redis");
    let mut servers: Vec<ServerProcess> = ["a", "b"]
        .iter()
        .map(|name| chat_in_room(&redis.addr(), "loadgen", &dir, name))
        .collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr("tcp")).collect();
    let pids: Vec<String> = servers.iter().map(|s| s.child.id().to_string()).collect();
    // 2 senders and 20 receivers in turn over the two servers: 11 members
    // each, sender 0 on the first, sender 1 on the second.
    let out = room_load(&[&addrs[0], &addrs[1]], &pids.join(","));
    assert_eq!(out.code, Some(0), "{}\n{}", out.json, out.stderr);
    assert_eq!(out.number("servers"), 2, "{}", out.json);
    assert_eq!(out.field("members_per_server"), "11,11", "{}", out.json);
    let sent = out.number("sent");
    assert!(sent > 0, "{}", out.json);
    // Each line: to the 10 other members of its server, and the 11 of the
    // other one; every one of them delivered.
    assert_eq!(out.number("within_expected"), sent * 10, "{}", out.json);
    assert_eq!(out.number("across_expected"), sent * 11, "{}", out.json);
    for kind in ["within", "across"] {
        let field = |name: &str| format!("{kind}_{name}");
        assert_eq!(out.number(&field("missing")), 0, "{}", out.json);
        assert_eq!(out.field(&field("delivered")), "1.0000", "{}", out.json);
        assert!(out.real(&field("p99_us")) > 0.0, "{}", out.json);
    }
    assert_eq!(out.number("errors"), 0, "{}", out.json);
    assert_eq!(out.field("server_cpu_each").split(',').count(), 2, "{}", out.json);
    for server in &mut servers {
        assert!(server.terminate().success());
    }
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
