//! The chat example at `--threads 1` and `--threads 2`: one room across
//! reactors (docs/programs.md, chat; the contract's `--threads` bullet).
//! With `SO_REUSEPORT` the kernel picks each connection's reactor, so each
//! test opens enough members (12) that both reactors hold some; what is
//! checked is the contract itself: the room behaves as one room.
mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, Write};

use common::chat::*;
use common::*;

at_1_and_2_threads!(
    notices_and_lines_reach_every_member,
    who_lists_every_member_in_join_order,
    nick_races_have_exactly_one_winner,
    max_clients_counts_the_whole_room,
    each_senders_lines_arrive_in_order,
    datagram_members_share_the_room,
);

/// The chat example with `--threads N` and `extra`.
fn server(threads: usize, extra: &[&str]) -> ServerProcess {
    let threads = threads.to_string();
    let mut args = vec!["--threads", threads.as_str()];
    args.extend_from_slice(extra);
    chat(&args)
}

/// `n` members, joined one after the other; each has read the join
/// notices of those after it (in any order: joins on different reactors
/// may cross).
fn members(server: &ServerProcess, n: usize) -> Vec<Member> {
    let mut all: Vec<Member> = (0..n).map(|_| Member::join(server)).collect();
    let nicks: Vec<String> = all.iter().map(|m| m.nick.clone()).collect();
    for (i, member) in all.iter_mut().enumerate() {
        let want = nicks[i + 1..].iter().map(|nick| format!("* {nick} joined"));
        expect_set(member, want.collect());
    }
    all
}

/// Reads as many lines as `want` holds and checks they are `want`, in any
/// order.
#[track_caller]
fn expect_set(member: &mut Member, want: BTreeSet<String>) {
    let got: BTreeSet<String> = (0..want.len()).map(|_| member.line()).collect();
    assert_eq!(got, want, "lines seen by {}", member.nick);
}

fn notices_and_lines_reach_every_member(threads: usize) {
    let server = server(threads, &[]);
    // The contract's `--threads`: the process runs exactly N threads.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.child.id()))
        .expect("/proc/PID/task")
        .count();
    assert_eq!(tasks, threads, "threads of the chat server");
    let mut all = members(&server, 12);
    all[0].say("hello room");
    let hello = format!("{}: hello room", all[0].nick);
    for member in &mut all[1..] {
        member.expect(&hello);
    }
    let last = all.len() - 1;
    all[last].say("/nick zed");
    let renamed = format!("* {} is now zed", all[last].nick);
    for member in &mut all {
        member.expect(&renamed);
    }
    let mut quitter = all.pop().expect("twelve");
    quitter.say("/quit");
    assert_eq!(quitter.until_closed(), ["* bye"]);
    for member in &mut all {
        member.expect("* zed left");
    }
    all[0].expect_silence();
}

fn who_lists_every_member_in_join_order(threads: usize) {
    let server = server(threads, &[]);
    let mut all = members(&server, 12);
    let online = format!(
        "* online: {}",
        all.iter().map(|m| m.nick.as_str()).collect::<Vec<_>>().join(" ")
    );
    for member in &mut all {
        member.say("/who");
        member.expect(&online);
    }
}

fn nick_races_have_exactly_one_winner(threads: usize) {
    let server = server(threads, &[]);
    let mut all = members(&server, 8);
    for round in 0..50 {
        // Every member claims the same nick, in its own ASCII case, at once.
        let claims: Vec<String> = (0..all.len())
            .map(|i| match i % 2 {
                0 => format!("RACE{round}"),
                _ => format!("race{round}"),
            })
            .collect();
        for (member, claim) in all.iter_mut().zip(&claims) {
            member
                .writer
                .write_all(format!("/nick {claim}\n").as_bytes())
                .expect("write");
        }
        let key = format!("race{round}");
        let mut winners = BTreeSet::new();
        let mut losers = 0;
        let mut new_nick = String::new();
        for member in &mut all {
            let mut notice: Option<(String, String)> = None;
            let mut refused = false;
            loop {
                let line = member.line();
                if let Some(rest) = line.strip_prefix("* error: nick ") {
                    assert!(rest.to_ascii_lowercase() == format!("{key} is taken"), "{line}");
                    assert!(!refused, "refused twice: {line}");
                    refused = true;
                    losers += 1;
                } else if let Some((old, new)) =
                    line.strip_prefix("* ").and_then(|l| l.split_once(" is now "))
                {
                    assert_eq!(new.to_ascii_lowercase(), key, "{line}");
                    assert!(notice.is_none(), "two renames in round {round}: {line}");
                    notice = Some((old.to_owned(), new.to_owned()));
                } else {
                    panic!("round {round}: unexpected line {line:?}");
                }
                if let Some((old, _)) = &notice {
                    if refused || *old == member.nick {
                        break;
                    }
                }
            }
            let (old, new) = notice.expect("a rename");
            assert!(!(refused && old == member.nick), "the winner was refused");
            winners.insert(old);
            new_nick = new;
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: every member saw the same winner"
        );
        assert_eq!(losers, all.len() - 1, "round {round}: all but one refused");
        let winner = winners.into_iter().next().expect("one");
        let member = all
            .iter_mut()
            .find(|m| m.nick == winner)
            .expect("the winner is a member");
        member.nick = new_nick;
    }
    all[0].expect_silence();
}

fn max_clients_counts_the_whole_room(threads: usize) {
    let server = server(threads, &["--max-clients", "4"]);
    let mut all = members(&server, 4);
    // Whatever reactor each lands on, the room is full.
    for _ in 0..8 {
        let mut extra = connect(server.socket_addr("tcp"));
        assert_eq!(read_to_end(&mut extra), b"* error: room is full\n");
    }
    let mut quitter = all.pop().expect("four");
    quitter.say("/quit");
    assert_eq!(quitter.until_closed(), ["* bye"]);
    // A slot is free again, wherever the newcomer lands; then full again.
    let newcomer = Member::join(&server);
    for member in &mut all {
        expect_set(
            member,
            [
                format!("* {} left", quitter.nick),
                format!("* {} joined", newcomer.nick),
            ]
            .into(),
        );
    }
    for _ in 0..4 {
        let mut extra = connect(server.socket_addr("tcp"));
        assert_eq!(read_to_end(&mut extra), b"* error: room is full\n");
    }
}

fn each_senders_lines_arrive_in_order(threads: usize) {
    const SENDERS: usize = 4;
    const LINES: usize = 200;
    let server = server(threads, &[]);
    let mut all = members(&server, SENDERS + 8);
    let receivers = all.split_off(SENDERS);
    let senders: Vec<std::thread::JoinHandle<Member>> = all
        .into_iter()
        .map(|mut sender| {
            std::thread::spawn(move || {
                let mut text = String::new();
                for i in 0..LINES {
                    text.push_str(&format!("line {i}\n"));
                }
                sender.writer.write_all(text.as_bytes()).expect("write");
                sender
            })
        })
        .collect();
    let senders: Vec<Member> = senders
        .into_iter()
        .map(|t| t.join().expect("sender thread"))
        .collect();
    let sender_nicks: BTreeSet<&str> = senders.iter().map(|m| m.nick.as_str()).collect();
    for mut receiver in receivers {
        let mut next: HashMap<String, usize> = HashMap::new();
        let mut seen = 0;
        while seen < SENDERS * LINES {
            let mut line = String::new();
            let n = receiver.reader.read_line(&mut line).expect("read line");
            assert!(n > 0, "closed after {seen} lines");
            let (nick, text) = line.trim_end().split_once(": ").expect("a said line");
            assert!(sender_nicks.contains(nick), "{line:?}");
            let i: usize = text
                .strip_prefix("line ")
                .and_then(|i| i.parse().ok())
                .expect("line N");
            let want = next.entry(nick.to_owned()).or_insert(0);
            assert_eq!(i, *want, "{} got {nick}'s lines out of order", receiver.nick);
            *want += 1;
            seen += 1;
        }
        assert!(next.values().all(|&n| n == LINES), "{next:?}");
    }
    drop(senders);
}

/// Datagram members (on whichever reactor the kernel hashes their port to)
/// and stream members are one room: joins, lines both ways.
fn datagram_members_share_the_room(threads: usize) {
    let server = server(threads, &["--udp", "127.0.0.1:0"]);
    let mut tcp = members(&server, 8);
    let mut udp: Vec<Datagram> = Vec::new();
    for _ in 0..4 {
        let member = Datagram::join(&server);
        let joined = format!("* {} joined", member.nick);
        for m in &mut tcp {
            m.expect(&joined);
        }
        for earlier in &udp {
            assert_eq!(earlier.line(), joined, "seen by {}", earlier.nick);
        }
        udp.push(member);
    }
    udp[0].say("hi");
    let hi = format!("{}: hi", udp[0].nick);
    for m in &mut tcp {
        m.expect(&hi);
    }
    for d in &udp[1..] {
        assert_eq!(d.line(), hi, "seen by {}", d.nick);
    }
    tcp[0].say("yo");
    let yo = format!("{}: yo", tcp[0].nick);
    for m in &mut tcp[1..] {
        m.expect(&yo);
    }
    for d in &udp {
        assert_eq!(d.line(), yo, "seen by {}", d.nick);
    }
}
