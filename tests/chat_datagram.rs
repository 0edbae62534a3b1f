//! The chat example's datagram members (`--udp`), from the outside: a
//! stranger's first datagram only greets it, its second joins it; datagram
//! peers hold at most half the room; a `/who` for one is split into small
//! datagrams; a greeting not followed up is forgotten silently.
mod common;

use std::io::BufRead;
use std::time::{Duration, Instant};

use common::chat::*;
use common::*;

#[test]
fn datagram_members_share_the_room() {
    let server = chat(&["--udp", "127.0.0.1:0"]);
    let mut alice = Member::join(&server);
    let udp = Datagram::new(&server);
    let udp_nick = udp.nick.clone();
    udp.say("hello from udp\n");
    assert_eq!(udp.line(), format!("* welcome {udp_nick}"));
    alice.expect_silence(); // a greeting is not a join, and is not relayed
    udp.say("hello again\n");
    alice.expect(&format!("* {udp_nick} joined"));
    alice.expect(&format!("{udp_nick}: hello again"));
    alice.say("hello datagram");
    assert_eq!(udp.line(), format!("{}: hello datagram", alice.nick));
    udp.say("/who");
    assert_eq!(udp.line(), format!("* online: {} {udp_nick}", alice.nick));
    udp.say("/quit");
    assert_eq!(udp.line(), "* bye");
    alice.expect(&format!("* {udp_nick} left"));
}

#[test]
fn datagram_members_count_toward_max_clients() {
    // Two slots, so one for datagram members.
    let server = chat(&["--udp", "127.0.0.1:0", "--max-clients", "2"]);
    let mut alice = Member::join(&server);
    let first = Datagram::new(&server);
    first.say("hi");
    assert_eq!(first.line(), format!("* welcome {}", first.nick));
    first.say("here");
    alice.expect(&format!("* {} joined", first.nick));
    alice.expect(&format!("{}: here", first.nick));
    let second = Datagram::new(&server);
    second.say("me too");
    assert_eq!(second.line(), "* error: room is full");
    let mut third = connect(server.socket_addr("tcp"));
    assert_eq!(read_to_end(&mut third), b"* error: room is full\n");
    alice.expect_silence(); // the turned-away never joined, so never left
}

#[test]
fn silent_datagram_member_leaves_after_the_idle_timeout() {
    let server = chat(&["--udp", "127.0.0.1:0", "--idle-timeout", "1"]);
    let mut alice = Member::join(&server);
    let udp = Datagram::new(&server);
    udp.say("hi");
    assert_eq!(udp.line(), format!("* welcome {}", udp.nick));
    udp.say("hello\n"); // the newline is optional, and not part of the line
    alice.expect(&format!("* {} joined", udp.nick));
    alice.expect(&format!("{}: hello", udp.nick));
    alice
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let left = format!("* {} left", udp.nick);
    let deadline = Instant::now() + STEP;
    loop {
        assert!(Instant::now() < deadline, "the UDP member never left");
        alice.say("tick");
        let mut line = String::new();
        if alice.reader.read_line(&mut line).is_ok() && line.trim_end() == left {
            break;
        }
    }
    // Its next datagram is a new greeting.
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
    udp.say("/who");
    alice.expect(&format!("* {udp_nick} joined"));
    assert_eq!(udp.line(), format!("* online: {} {udp_nick}", alice.nick));
    udp.say("/quit");
    assert_eq!(udp.line(), "* bye");
    alice.expect(&format!("* {udp_nick} left"));
    alice.say("/who"); // alice's own nick is still hers alone
    alice.expect(&format!("* online: {}", alice.nick));
}

#[test]
fn a_datagram_with_line_breaks_inside_is_still_one_line() {
    let server = chat(&["--udp", "127.0.0.1:0"]);
    let mut alice = Member::join(&server);
    let udp = Datagram::new(&server);
    udp.say("hi");
    assert_eq!(udp.line(), format!("* welcome {}", udp.nick));
    // Without care, the second half would reach alice as a forged notice.
    udp.say(&format!("hi\n* {} left\n", alice.nick));
    alice.expect(&format!("* {} joined", udp.nick));
    alice.expect(&format!("{}: hi\u{fffd}* {} left", udp.nick, alice.nick));
    alice.expect_silence();
}

#[test]
fn strangers_cannot_fill_the_room_and_members_still_join() {
    // 50 empty datagrams from 50 ports: only half the room's slots can be
    // taken by datagram peers, so stream members still get the rest.
    let server = chat(&["--udp", "127.0.0.1:0", "--max-clients", "50"]);
    let strangers: Vec<Datagram> = (0..50).map(|_| Datagram::new(&server)).collect();
    for stranger in &strangers {
        stranger.send(b"");
    }
    let (mut welcomed, mut refused) = (0, 0);
    for stranger in &strangers {
        let answer = stranger.line();
        // A stream member may hold the same ip:port nick (a TCP port equal
        // to this UDP one): the room then makes the name unique (`#N`).
        let welcome = format!("* welcome {}", stranger.nick);
        if answer == welcome || answer.starts_with(&format!("{welcome}#")) {
            welcomed += 1;
        } else {
            assert_eq!(answer, "* error: room is full");
            refused += 1;
        }
    }
    assert_eq!((welcomed, refused), (25, 25));
    let mut members: Vec<Member> = (0..25).map(|_| Member::join(&server)).collect();
    let mut last = connect(server.socket_addr("tcp"));
    assert_eq!(read_to_end(&mut last), b"* error: room is full\n");
    // Greeted strangers were never announced: the first member saw only
    // the joins of the 24 stream members after it, and /who lists those.
    let nicks: Vec<String> = members.iter().map(|m| m.nick.clone()).collect();
    let first = &mut members[0];
    for nick in &nicks[1..] {
        first.expect(&format!("* {nick} joined"));
    }
    first.say("/who");
    first.expect(&format!("* online: {}", nicks.join(" ")));
}

#[test]
fn a_stranger_gets_its_welcome_and_nothing_else_until_it_confirms() {
    let server = chat(&["--udp", "127.0.0.1:0"]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    // A 4-byte /who, as a forged source address would send it: one small
    // line back, not the member list.
    let stranger = Datagram::new(&server);
    stranger.say("/who");
    assert_eq!(stranger.line(), format!("* welcome {}", stranger.nick));
    stranger.expect_silence();
    // Nobody was told of it; it gets none of the room's traffic.
    alice.say("hello room");
    bob.expect(&format!("{}: hello room", alice.nick));
    bob.say("/who");
    bob.expect(&format!("* online: {} {}", alice.nick, bob.nick));
    let bob_nick = bob.nick.clone();
    drop(bob);
    alice.expect(&format!("* {bob_nick} left"));
    stranger.expect_silence();
    // A second datagram confirms it: it joins, and that line is run.
    stranger.say("now I am here");
    alice.expect(&format!("* {} joined", stranger.nick));
    alice.expect(&format!("{}: now I am here", stranger.nick));
    alice.say("welcome");
    assert_eq!(stranger.line(), format!("{}: welcome", alice.nick));
}

#[test]
fn who_for_a_datagram_member_in_a_big_room_comes_in_small_datagrams() {
    let server = chat(&["--udp", "127.0.0.1:0"]);
    // About 3 KiB of nicks: too many for one 1,200-byte datagram.
    let members: Vec<Member> = (0..200).map(|_| Member::join(&server)).collect();
    let udp = Datagram::new(&server);
    udp.say("hi");
    assert_eq!(udp.line(), format!("* welcome {}", udp.nick));
    udp.say("/who");
    let mut want: Vec<String> = members.iter().map(|m| m.nick.clone()).collect();
    want.push(udp.nick.clone());
    let mut listed = Vec::new();
    let mut datagrams = 0;
    while listed.len() < want.len() {
        let mut buf = vec![0; 65536];
        let (n, _) = udp.socket.recv_from(&mut buf).expect("a /who datagram");
        assert!(n <= 1200, "a datagram of {n} bytes");
        let line = std::str::from_utf8(&buf[..n]).expect("utf-8");
        let nicks = line.strip_prefix("* online: ").expect("an online line");
        listed.extend(nicks.split(' ').map(str::to_owned));
        datagrams += 1;
    }
    assert!(datagrams >= 3, "{datagrams} datagrams");
    assert_eq!(listed, want, "every member, in join order, once");
    udp.expect_silence();
}

#[test]
fn a_greeting_not_confirmed_in_time_is_forgotten_silently() {
    // One datagram slot (half of 2); greetings last the idle timeout, 1 s.
    let server = chat(&[
        "--udp",
        "127.0.0.1:0",
        "--max-clients",
        "2",
        "--idle-timeout",
        "1",
    ]);
    let mut alice = Member::join(&server);
    let first = Datagram::new(&server);
    first.say("hi");
    assert_eq!(first.line(), format!("* welcome {}", first.nick));
    // The slot is held meanwhile; once the greeting lapses, the next
    // stranger is admitted. Poll for that, each try one datagram. Alice's
    // /who keeps her from idling out, and shows that nobody saw the first
    // stranger come or go: the answer is always the next line she gets.
    let alone = format!("* online: {}", alice.nick);
    let second = Datagram::new(&server);
    let deadline = Instant::now() + STEP;
    loop {
        assert!(Instant::now() < deadline, "the greeted slot was never freed");
        alice.say("/who");
        alice.expect(&alone);
        second.say("knock");
        let answer = second.line();
        if answer == format!("* welcome {}", second.nick) {
            break;
        }
        assert_eq!(answer, "* error: room is full");
        std::thread::sleep(Duration::from_millis(50)); // pacing only
    }
    // Its late datagram does not confirm it: it is a stranger again, and
    // the slot is the second's now.
    first.say("too late");
    assert_eq!(first.line(), "* error: room is full");
    alice.say("/who");
    alice.expect(&alone);
}
