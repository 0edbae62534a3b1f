//! The chat example server, from the outside: each line of docs/programs.md's
//! chat section over TCP (datagram members: `tests/chat_datagram.rs`). Every
//! case runs at `--threads 1` and at `--threads 2 --balance`: balanced, the
//! members joined one after another alternate between the two reactors, so
//! alice and bob are on different ones and what one does reaches the other
//! across reactors (many members at two threads: `tests/chat_threads.rs`).
mod common;

use std::io::{BufRead, Write};
use std::time::Duration;

use common::chat::*;
use common::*;

at_1_and_2_threads!(
    join_say_and_leave_notices,
    nick_who_and_quit,
    invalid_utf8_is_replaced_not_fatal,
    line_too_long_is_an_error_and_a_disconnect,
    room_full_refuses_the_extra_member,
    silent_member_is_disconnected_after_the_idle_timeout,
    member_that_does_not_read_is_cut_at_the_output_cap_and_the_room_goes_on,
    sigterm_closes_every_member_and_exits_zero,
    left_is_announced_exactly_once_whatever_the_reason,
    a_line_too_long_is_refused_before_its_newline_arrives,
    a_max_line_above_a_mebibyte_is_honoured,
    crlf_lines_and_commands_work,
    control_characters_are_replaced_so_no_member_can_forge_a_notice,
    nicks_are_unique_without_regard_to_ascii_case,
);

/// The chat example with `extra` flags at `threads` threads; with more than
/// one, `--balance`: a member accepted by either reactor is served by the
/// one holding fewer members, so consecutive joins alternate reactors.
fn server(threads: usize, extra: &[&str]) -> ServerProcess {
    let count = threads.to_string();
    let mut args = vec!["--threads", count.as_str()];
    if threads > 1 {
        args.push("--balance");
    }
    args.extend_from_slice(extra);
    chat(&args)
}

fn join_say_and_leave_notices(threads: usize) {
    let server = server(threads, &[]);
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

fn nick_who_and_quit(threads: usize) {
    let server = server(threads, &[]);
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

fn invalid_utf8_is_replaced_not_fatal(threads: usize) {
    let server = server(threads, &[]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    bob.writer.write_all(b"caf\xe9 ok\n").expect("write");
    alice.expect(&format!("{}: caf\u{fffd} ok", bob.nick));
    bob.say("still here");
    alice.expect(&format!("{}: still here", bob.nick));
}

fn line_too_long_is_an_error_and_a_disconnect(threads: usize) {
    let server = server(threads, &["--max-line", "64"]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    bob.say(&"y".repeat(64));
    alice.expect(&format!("{}: {}", bob.nick, "y".repeat(64)));
    bob.say(&"z".repeat(65));
    assert_eq!(bob.until_closed(), ["* error: line too long"]);
    alice.expect(&format!("* {} left", bob.nick));
}

fn room_full_refuses_the_extra_member(threads: usize) {
    // Two members fill the room; at two threads they are on different
    // reactors, one each, so the room, not a reactor, must be full.
    let server = server(threads, &["--max-clients", "2"]);
    let _alice = Member::join(&server);
    let _bob = Member::join(&server);
    // Whichever reactor the kernel gives each newcomer, it is refused.
    for _ in 0..8 {
        let mut third = connect(server.socket_addr("tcp"));
        assert_eq!(read_to_end(&mut third), b"* error: room is full\n");
    }
}

fn silent_member_is_disconnected_after_the_idle_timeout(threads: usize) {
    let server = server(threads, &["--idle-timeout", "0.5"]);
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

fn member_that_does_not_read_is_cut_at_the_output_cap_and_the_room_goes_on(threads: usize) {
    let server = server(threads, &["--max-outbuf", "65536", "--max-line", "4096"]);
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

fn sigterm_closes_every_member_and_exits_zero(threads: usize) {
    let mut server = server(threads, &[]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    bob.say("before the end");
    alice.expect(&format!("{}: before the end", bob.nick));
    server.signal(libc::SIGTERM);
    // Members closing together are not told of each other: the room never
    // sends to a member already on its way out (at two threads, not even
    // one on the other reactor, shut down by the same signal).
    assert_eq!(alice.until_closed(), Vec::<String>::new());
    assert_eq!(bob.until_closed(), Vec::<String>::new());
    // Closing our ends too spares the server its wait for our FIN.
    drop((alice, bob));
    let status = server.wait();
    assert!(status.success(), "{status:?}");
}

fn left_is_announced_exactly_once_whatever_the_reason(threads: usize) {
    let server = server(threads, &["--max-line", "64"]);
    let mut watcher = Member::join(&server);
    let mut others: Vec<Member> = (0..4).map(|_| Member::join(&server)).collect();
    // Their joins: in join order at one thread; at two, joins on different
    // reactors may cross (the room orders each sender's lines, not the
    // senders), so each once, in any order.
    let mut joined: Vec<String> = (0..others.len()).map(|_| watcher.line()).collect();
    let mut want: Vec<String> = others.iter().map(|o| format!("* {} joined", o.nick)).collect();
    if threads > 1 {
        joined.sort();
        want.sort();
    }
    assert_eq!(joined, want);
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

fn a_line_too_long_is_refused_before_its_newline_arrives(threads: usize) {
    let server = server(threads, &["--max-line", "64"]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    // 65 bytes and no newline yet: already over the limit.
    bob.writer.write_all(&[b'z'; 65]).expect("write");
    assert_eq!(bob.until_closed(), ["* error: line too long"]);
    alice.expect(&format!("* {} left", bob.nick));
}

fn a_max_line_above_a_mebibyte_is_honoured(threads: usize) {
    // Past the reactor's default cap on unconsumed input (1 MiB): the chat's
    // listener options make room for a partial line of --max-line.
    let server = server(threads, &["--max-line", "2000000"]);
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

fn crlf_lines_and_commands_work(threads: usize) {
    let server = server(threads, &[]);
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

fn control_characters_are_replaced_so_no_member_can_forge_a_notice(threads: usize) {
    let server = server(threads, &[]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    // A bare \r would return the cursor and draw "* x is now admin" over
    // bob's nick; ESC starts ANSI and OSC sequences; the others break or
    // blank lines in one terminal or another. Tab is kept.
    let attack = "hi\r* x is now admin\x1b[2J\x1b]0;owned\x07\u{2028}\0\x0b\x0c\x7f\u{85}\u{9b}\u{2029}\tend";
    bob.say(attack);
    let r = '\u{fffd}';
    alice.expect(&format!(
        "{}: hi{r}* x is now admin{r}[2J{r}]0;owned{r}{r}{r}{r}{r}{r}{r}{r}{r}\tend",
        bob.nick
    ));
    // Raw bytes make no difference: C1 as UTF-8, and a CR before the end.
    bob.writer.write_all(b"a\xc2\x85b\rc\r\n").expect("write");
    alice.expect(&format!("{}: a{r}b{r}c", bob.nick));
    // The rule holds in an echoed command word too.
    bob.say("/x\x1b[31m");
    assert!(bob
        .line()
        .starts_with(&format!("* error: unknown command /x{r}[31m")));
    alice.expect_silence();
}

fn nicks_are_unique_without_regard_to_ascii_case(threads: usize) {
    let server = server(threads, &[]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.expect(&format!("* {} joined", bob.nick));
    alice.say("/nick alice");
    let renamed = format!("* {} is now alice", alice.nick);
    alice.expect(&renamed);
    bob.expect(&renamed);
    for other_case in ["Alice", "ALICE", "aLiCe"] {
        bob.say(&format!("/nick {other_case}"));
        bob.expect(&format!("* error: nick {other_case} is taken"));
    }
    alice.expect_silence();
    // The holder may change the case of its own nick; the old case is
    // then not free either.
    alice.say("/nick Alice");
    alice.expect("* alice is now Alice");
    bob.expect("* alice is now Alice");
    bob.say("/nick alice");
    bob.expect("* error: nick alice is taken");
    bob.say("/who");
    bob.expect(&format!("* online: Alice {}", bob.nick));
}
