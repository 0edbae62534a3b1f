//! The chat example server, from the outside: each line of the contract's
//! chat section, over TCP and UDP.
mod common;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::*;

/// A TCP member that reads whole lines.
struct Member {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    nick: String,
}

impl Member {
    #[track_caller]
    fn join(server: &ServerProcess) -> Member {
        let stream = connect(server.socket_addr("tcp"));
        let nick = stream.local_addr().expect("addr").to_string();
        let mut member = Member {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
            nick,
        };
        let welcome = format!("* welcome {}", member.nick);
        member.expect(&welcome);
        member
    }

    #[track_caller]
    fn say(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).expect("write");
        self.writer.write_all(b"\n").expect("write");
    }

    #[track_caller]
    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read line");
        assert!(n > 0, "connection closed while a line was expected");
        line.trim_end_matches('\n').to_string()
    }

    #[track_caller]
    fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want);
    }

    /// Asserts nothing arrives within a short wait.
    #[track_caller]
    fn expect_silence(&mut self) {
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?} {line:?}"),
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(STEP))
            .expect("timeout");
    }

    /// Reads until the server closes; returns the lines seen meanwhile.
    #[track_caller]
    fn until_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return lines,
                Ok(_) => lines.push(line.trim_end_matches('\n').to_string()),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return lines,
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

fn chat(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--tcp", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let announces = 1 + extra.iter().filter(|a| **a == "--udp").count();
    ServerProcess::start("chat", &args, announces)
}

#[test]
fn join_say_and_leave_notices() {
    let server = chat(&[]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    alice.say("hello room");
    bob.expect(&format!("{}: hello room", alice.nick));
    alice.expect_silence(); // the sender does not get its own line
    bob.say("hi\r");
    alice.expect(&format!("{}: hi", bob.nick));
    drop(bob.writer);
    drop(bob.reader);
    alice.expect(&format!("* {} left", bob.nick));
    alice.expect_silence();
}

#[test]
fn nick_who_and_quit() {
    let server = chat(&[]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    alice.say("/nick alice");
    let renamed = format!("* {} is now alice", alice.nick);
    alice.expect(&renamed);
    bob.expect(&renamed);
    bob.say("/nick alice");
    assert!(bob.line().starts_with("* error: "), "taken");
    bob.say("/nick not valid!");
    assert!(bob.line().starts_with("* error: "), "invalid");
    bob.say(&format!("/nick {}", "x".repeat(33)));
    assert!(bob.line().starts_with("* error: "), "too long");
    alice.expect_silence(); // errors go to the sender alone
    bob.say("/who");
    bob.expect(&format!("* online: alice {}", bob.nick));
    bob.say("/quit");
    assert_eq!(bob.until_closed(), ["* bye"]);
    alice.expect(&format!("* {} left", bob.nick));
}

#[test]
fn invalid_utf8_is_replaced_not_fatal() {
    let server = chat(&[]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    bob.writer.write_all(b"caf\xe9 ok\n").expect("write");
    alice.expect(&format!("{}: caf\u{fffd} ok", bob.nick));
    bob.say("still here");
    alice.expect(&format!("{}: still here", bob.nick));
}

#[test]
fn line_too_long_is_an_error_and_a_disconnect() {
    let server = chat(&["--max-line", "64"]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    bob.say(&"y".repeat(64));
    alice.expect(&format!("{}: {}", bob.nick, "y".repeat(64)));
    bob.say(&"z".repeat(65));
    assert_eq!(bob.until_closed(), ["* error: line too long"]);
    alice.expect(&format!("* {} left", bob.nick));
}

#[test]
fn room_full_refuses_the_extra_member() {
    let server = chat(&["--max-clients", "2"]);
    let _alice = Member::join(&server);
    let _bob = Member::join(&server);
    let mut third = connect(server.socket_addr("tcp"));
    assert_eq!(read_to_end(&mut third), b"* error: room is full\n");
}

#[test]
fn silent_member_is_disconnected_after_the_idle_timeout() {
    let server = chat(&["--idle-timeout", "0.5"]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    // Alice keeps talking, so only Bob, silent, is cut.
    let deadline = std::time::Instant::now() + STEP;
    let left = format!("* {} left", bob.nick);
    alice
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    loop {
        assert!(std::time::Instant::now() < deadline, "bob was never cut");
        alice.say("tick");
        let mut line = String::new();
        if alice.reader.read_line(&mut line).is_ok() && line.trim_end() == left {
            break;
        }
    }
    let seen = bob.until_closed();
    assert!(seen.iter().all(|l| l.ends_with(": tick")), "{seen:?}");
}

#[test]
fn member_that_does_not_read_is_cut_at_the_output_cap_and_the_room_goes_on() {
    let server = chat(&["--max-outbuf", "65536", "--max-line", "4096"]);
    let mut talker = Member::join(&server);
    let mut listener = Member::join(&server);
    talker.expect(&format!("* {} joined", listener.nick));
    let sloth = Member::join(&server); // never reads again
    talker.expect(&format!("* {} joined", sloth.nick));
    listener.expect(&format!("* {} joined", sloth.nick));
    let line = "w".repeat(4000);
    let left = format!("* {} left", sloth.nick);
    let mut cut = false;
    for _ in 0..2000 {
        talker.say(&line);
        let got = listener.line();
        if got == left {
            cut = true;
            break;
        }
        assert_eq!(got, format!("{}: {line}", talker.nick));
    }
    assert!(cut, "the non-reading member was never disconnected");
    talker.say("after");
    loop {
        let got = listener.line();
        if got.ends_with(": after") {
            break;
        }
    }
    drop(sloth);
}

#[test]
fn datagram_members_share_the_room() {
    let server = chat(&["--udp", "127.0.0.1:0"]);
    let mut alice = Member::join(&server);
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    udp.set_read_timeout(Some(STEP)).expect("timeout");
    let udp_nick = udp.local_addr().expect("addr").to_string();
    let udp_server = server.socket_addr("udp");
    let recv = |udp: &UdpSocket| {
        let mut buf = [0; 2048];
        let (n, _) = udp.recv_from(&mut buf).expect("datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    udp.send_to(b"hello from udp\n", udp_server).expect("send");
    assert_eq!(recv(&udp), format!("* welcome {udp_nick}"));
    alice.expect(&format!("* {udp_nick} joined"));
    alice.expect(&format!("{udp_nick}: hello from udp"));
    alice.say("hello datagram");
    assert_eq!(recv(&udp), format!("{}: hello datagram", alice.nick));
    udp.send_to(b"/who", udp_server).expect("send");
    assert_eq!(recv(&udp), format!("* online: {} {udp_nick}", alice.nick));
    udp.send_to(b"/quit", udp_server).expect("send");
    assert_eq!(recv(&udp), "* bye");
    alice.expect(&format!("* {udp_nick} left"));
}

/// A UDP member of the room, reading one datagram per line.
struct Datagram {
    socket: UdpSocket,
    server: std::net::SocketAddr,
    nick: String,
}

impl Datagram {
    #[track_caller]
    fn bind(server: &ServerProcess, at: &str) -> Option<Datagram> {
        let socket = UdpSocket::bind(at).ok()?;
        socket.set_read_timeout(Some(STEP)).expect("timeout");
        let nick = socket.local_addr().expect("addr").to_string();
        Some(Datagram {
            socket,
            server: server.socket_addr("udp"),
            nick,
        })
    }

    #[track_caller]
    fn say(&self, line: &str) {
        self.socket.send_to(line.as_bytes(), self.server).expect("send");
    }

    #[track_caller]
    fn line(&self) -> String {
        let mut buf = [0; 2048];
        let (n, _) = self.socket.recv_from(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

#[test]
fn datagram_members_count_toward_max_clients() {
    let server = chat(&["--udp", "127.0.0.1:0", "--max-clients", "2"]);
    let mut alice = Member::join(&server);
    let first = Datagram::bind(&server, "127.0.0.1:0").expect("bind");
    first.say("here");
    assert_eq!(first.line(), format!("* welcome {}", first.nick));
    alice.expect(&format!("* {} joined", first.nick));
    alice.expect(&format!("{}: here", first.nick));
    let second = Datagram::bind(&server, "127.0.0.1:0").expect("bind");
    second.say("me too");
    assert_eq!(second.line(), "* error: room is full");
    let mut third = connect(server.socket_addr("tcp"));
    assert_eq!(read_to_end(&mut third), b"* error: room is full\n");
    alice.expect_silence(); // the turned-away never joined, so never left
}

#[test]
fn silent_datagram_member_leaves_after_the_idle_timeout() {
    let server = chat(&["--udp", "127.0.0.1:0", "--idle-timeout", "0.5"]);
    let mut alice = Member::join(&server);
    let udp = Datagram::bind(&server, "127.0.0.1:0").expect("bind");
    udp.say("hello\n"); // the newline is optional, and not part of the line
    assert_eq!(udp.line(), format!("* welcome {}", udp.nick));
    alice.expect(&format!("* {} joined", udp.nick));
    alice.expect(&format!("{}: hello", udp.nick));
    alice
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let left = format!("* {} left", udp.nick);
    let deadline = std::time::Instant::now() + STEP;
    loop {
        assert!(std::time::Instant::now() < deadline, "the UDP member never left");
        alice.say("tick");
        let mut line = String::new();
        if alice.reader.read_line(&mut line).is_ok() && line.trim_end() == left {
            break;
        }
    }
    // Its next datagram is a new join.
    udp.socket.set_read_timeout(Some(STEP)).expect("timeout");
    udp.say("back");
    let welcome = format!("* welcome {}", udp.nick);
    while udp.line() != welcome {} // ticks sent before it left may come first
}

#[test]
fn tcp_and_udp_peers_on_the_same_port_get_distinct_nicks() {
    let server = chat(&["--udp", "127.0.0.1:0"]);
    let mut alice = Member::join(&server);
    // TCP and UDP ports are separate spaces, so a UDP socket can usually
    // take the port of alice's TCP connection; if not, there is no clash
    // to test.
    let Some(udp) = Datagram::bind(&server, &alice.nick) else {
        return;
    };
    udp.say("/who");
    let welcome = udp.line();
    let udp_nick = welcome.strip_prefix("* welcome ").expect("welcome").to_string();
    assert_ne!(udp_nick, alice.nick, "nicks are unique in the room");
    assert_eq!(udp.line(), format!("* online: {} {udp_nick}", alice.nick));
    alice.expect(&format!("* {udp_nick} joined"));
    udp.say("/quit");
    assert_eq!(udp.line(), "* bye");
    alice.expect(&format!("* {udp_nick} left"));
    alice.say("/who"); // alice's own nick is still hers alone
    alice.expect(&format!("* online: {}", alice.nick));
}

#[test]
fn sigterm_closes_every_member_and_exits_zero() {
    let mut server = chat(&[]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    bob.say("before the end");
    alice.expect(&format!("{}: before the end", bob.nick));
    server.signal(libc::SIGTERM);
    // Members closing together are not told of each other: the room never
    // sends to a member already on its way out.
    assert_eq!(alice.until_closed(), Vec::<String>::new());
    assert_eq!(bob.until_closed(), Vec::<String>::new());
    // Closing our ends too spares the server its wait for our FIN.
    drop((alice, bob));
    let status = server.wait();
    assert!(status.success(), "{status:?}");
}

#[test]
fn left_is_announced_exactly_once_whatever_the_reason() {
    let server = chat(&["--max-line", "64"]);
    let mut watcher = Member::join(&server);
    let mut others: Vec<Member> = (0..4).map(|_| Member::join(&server)).collect();
    for other in &others {
        watcher.expect(&format!("* {} joined", other.nick));
    }
    let nicks: Vec<String> = others.iter().map(|m| m.nick.clone()).collect();
    let reset = others.pop().expect("four");
    let closer = others.pop().expect("three");
    let mut long = others.pop().expect("two");
    let mut quitter = others.pop().expect("one");
    quitter.say("/quit");
    long.say(&"x".repeat(65));
    closer.writer.shutdown(std::net::Shutdown::Both).expect("close");
    // A reset: SO_LINGER with a zero timeout makes close send RST.
    reset_on_close(&reset.writer);
    drop(reset);
    // Each of the four left once: four notices, in any order, then nothing.
    let mut seen: Vec<String> = (0..4).map(|_| watcher.line()).collect();
    seen.sort();
    let mut want: Vec<String> = nicks.iter().map(|n| format!("* {n} left")).collect();
    want.sort();
    assert_eq!(seen, want);
    watcher.expect_silence();
    // Each was told why before the close, after the joins it saw.
    let last = |m: &mut Member| m.until_closed().last().cloned();
    assert_eq!(last(&mut quitter).as_deref(), Some("* bye"));
    assert_eq!(last(&mut long).as_deref(), Some("* error: line too long"));
    drop(closer);
}

#[test]
fn a_line_too_long_is_refused_before_its_newline_arrives() {
    let server = chat(&["--max-line", "64"]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    // 65 bytes and no newline yet: already over the limit.
    bob.writer.write_all(&[b'z'; 65]).expect("write");
    assert_eq!(bob.until_closed(), ["* error: line too long"]);
    alice.expect(&format!("* {} left", bob.nick));
}

#[test]
fn a_max_line_above_a_mebibyte_is_honoured() {
    // Past the reactor's default cap on unconsumed input (1 MiB): the chat's
    // listener options make room for a partial line of --max-line.
    let server = chat(&["--max-line", "2000000"]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    let long = "l".repeat(1_500_000);
    let writer = bob.writer.try_clone().expect("clone");
    let sent = long.clone();
    let sender = std::thread::spawn(move || {
        let mut writer = writer;
        writer.write_all(sent.as_bytes()).expect("write");
        writer.write_all(b"\n").expect("write");
    });
    assert_eq!(alice.line(), format!("{}: {long}", bob.nick));
    sender.join().expect("sender");
    bob.say("still here");
    alice.expect(&format!("{}: still here", bob.nick));
}

#[test]
fn crlf_lines_and_commands_work() {
    let server = chat(&[]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    bob.writer.write_all(b"/nick bob\r\nhi there\r\n").expect("write");
    let renamed = format!("* {} is now bob", bob.nick);
    alice.expect(&renamed);
    bob.expect(&renamed);
    alice.expect("bob: hi there");
    alice.writer.write_all(b"/who\r\n").expect("write");
    alice.expect(&format!("* online: {} bob", alice.nick));
}

#[test]
fn a_datagram_with_line_breaks_inside_is_still_one_line() {
    let server = chat(&["--udp", "127.0.0.1:0"]);
    let mut alice = Member::join(&server);
    let udp = Datagram::bind(&server, "127.0.0.1:0").expect("bind");
    // Without care, the second half would reach alice as a forged notice.
    udp.say(&format!("hi\n* {} left\n", alice.nick));
    assert_eq!(udp.line(), format!("* welcome {}", udp.nick));
    alice.expect(&format!("* {} joined", udp.nick));
    alice.expect(&format!("{}: hi * {} left", udp.nick, alice.nick));
    alice.expect_silence();
}
