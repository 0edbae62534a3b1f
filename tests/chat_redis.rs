//! Chat servers sharing a Redis server, from the outside: the contract's
//! "chat across machines (`--redis`)". Each case runs real `redis-server`s
//! (`common::redis`) and chat example processes on loopback, each in a room
//! of its own name, and checks the chat section's rules across servers,
//! then what happens when Redis or a server goes away.
//!
//! Joins on different servers may cross: a member that joins one server
//! just after a member of another may be told of that one's join too (its
//! notice was on its way). [`in_step`] allows exactly that, and nothing else,
//! before the checks start.
mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::chat::*;
use common::redis::*;
use common::*;

/// How soon, once Redis is back, every server must be in the room again.
const REJOIN: Duration = Duration::from_secs(5);
/// How soon the members of a SIGKILLed server must leave the others' room.
const KILLED_LEAVE: Duration = Duration::from_secs(8);
/// How soon the members of a SIGTERMed server must leave the others' room.
const TERMINATED_LEAVE: Duration = Duration::from_secs(1);
/// What a busy test machine gets on top of a stated bound.
const SLACK: Duration = Duration::from_secs(2);

/// A chat server in a Redis room, its log (stderr) going to a file.
struct Node {
    server: ServerProcess,
    log: PathBuf,
    room: String,
    redis: String,
}

impl Node {
    /// Starts the chat example on a `:0` TCP port in `room` over Redis at
    /// `redis`, logging at `RUST_LOG=info` to `NAME.log` in `dir`. It does
    /// not wait for the room: see [`Node::wait_in_room`].
    #[track_caller]
    fn start(redis: &str, room: &str, dir: &TempDir, name: &str) -> Node {
        Node::start_logging(redis, room, dir, name, Some("info"))
    }

    /// Like [`Node::start`], at log level `level` (`None`: the default).
    #[track_caller]
    fn start_logging(redis: &str, room: &str, dir: &TempDir, name: &str, level: Option<&str>) -> Node {
        let log = dir.0.join(format!("{name}.log"));
        let mut command = Command::new(example_path("chat"));
        command.args(["--tcp", "127.0.0.1:0", "--redis", redis, "--room", room]);
        match level {
            Some(level) => command.env("RUST_LOG", level),
            None => command.env_remove("RUST_LOG"),
        };
        let stderr = std::fs::File::create(&log).expect("log file");
        let server = ServerProcess::start_logging_to(&mut command, 1, Stdio::from(stderr));
        Node {
            server,
            log,
            room: room.to_owned(),
            redis: redis.to_owned(),
        }
    }

    /// Starts `count` servers in `room` and waits until each is in it.
    #[track_caller]
    fn many(redis: &RedisServer, room: &str, dir: &TempDir, count: usize) -> Vec<Node> {
        let nodes: Vec<Node> = (0..count)
            .map(|i| Node::start(&redis.addr(), room, dir, &format!("node{i}")))
            .collect();
        for node in &nodes {
            node.wait_in_room(1);
        }
        nodes
    }

    /// What the server has logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).expect("read log")
    }

    /// How many times the server has logged that it (re)joined the room.
    fn times_in_room(&self) -> usize {
        let joined = format!("chat: in room {} over Redis at {}", self.room, self.redis);
        self.log().lines().filter(|l| l.contains(&joined)).count()
    }

    /// The warning lines that mention Redis.
    fn redis_warnings(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("WARN") && l.to_ascii_lowercase().contains("redis"))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the server has logged its `times`-th join of the room.
    #[track_caller]
    fn wait_in_room(&self, times: usize) {
        let deadline = Instant::now() + STEP;
        while self.times_in_room() < times {
            assert!(
                Instant::now() < deadline,
                "server never logged joining room {} for time {times}; its log:\n{}",
                self.room,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the server has logged a warning that mentions Redis.
    #[track_caller]
    fn wait_redis_warning(&self) {
        let deadline = Instant::now() + STEP;
        while self.redis_warnings().is_empty() {
            assert!(
                Instant::now() < deadline,
                "no Redis warning; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asserts the server logged exactly one warning about Redis, naming
    /// its address.
    #[track_caller]
    fn assert_one_redis_warning(&self) {
        let warnings = self.redis_warnings();
        assert_eq!(
            warnings.len(),
            1,
            "Redis warnings: {warnings:#?}\nlog:\n{}",
            self.log()
        );
        assert!(
            warnings[0].contains(&self.redis),
            "{warnings:?} do not name {}",
            self.redis
        );
    }

    /// A new member, welcomed.
    #[track_caller]
    fn join(&self) -> Member {
        Member::join(&self.server)
    }
}

/// Brings members in step after they joined one after another (`members`,
/// each with the index of its server, in join order): each reads the join
/// notices of those after it and an `in step` line from every other one.
/// Before those, a member may also be told, once, of the join of a member
/// of *another* server that joined before it (that notice was on its way
/// when it joined); nothing else may come.
#[track_caller]
fn in_step(members: &mut [(usize, &mut Member)]) {
    let nicks: Vec<(usize, String)> = members.iter().map(|(s, m)| (*s, m.nick.clone())).collect();
    for (_, member) in members.iter_mut() {
        member.say("in step");
    }
    for (i, (server, member)) in members.iter_mut().enumerate() {
        let mut want: BTreeSet<String> = nicks[i + 1..]
            .iter()
            .map(|(_, n)| format!("* {n} joined"))
            .collect();
        want.extend(
            nicks
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, n))| format!("{n}: in step")),
        );
        let mut may: BTreeSet<String> = nicks[..i]
            .iter()
            .filter(|(s, _)| s != server)
            .map(|(_, n)| format!("* {n} joined"))
            .collect();
        while !want.is_empty() {
            let line = member.line();
            assert!(
                want.remove(&line) || may.remove(&line),
                "{} got {line:?}; still waiting for {want:?}",
                member.nick
            );
        }
    }
}

/// The member's `/who` answer, as a set of nicks. Any other line fails.
#[track_caller]
fn who(member: &mut Member) -> BTreeSet<String> {
    member.say("/who");
    let line = member.line();
    let online = line
        .strip_prefix("* online: ")
        .unwrap_or_else(|| panic!("{} got {line:?} for /who", member.nick));
    online.split(' ').map(str::to_owned).collect()
}

/// Asks `/who` until the answer is `want` (before `deadline`). Any line
/// but a `/who` answer fails: members come and go from `/who` silently
/// when Redis goes or comes back.
#[track_caller]
fn who_until(member: &mut Member, want: &BTreeSet<String>, deadline: Instant) {
    loop {
        let got = who(member);
        if got == *want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}'s /who is still {got:?}, not {want:?}",
            member.nick
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The set of `nicks`.
fn set_of(nicks: &[&str]) -> BTreeSet<String> {
    nicks.iter().map(|n| n.to_string()).collect()
}

/// The next line, waited for up to `wait`.
#[track_caller]
fn line_within(member: &mut Member, wait: Duration) -> String {
    let stream = member.reader.get_ref();
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut line = String::new();
    let got = member.reader.read_line(&mut line);
    member
        .reader
        .get_ref()
        .set_read_timeout(Some(STEP))
        .expect("timeout");
    match got {
        Ok(n) if n > 0 => line.trim_end_matches('\n').to_owned(),
        Ok(_) => panic!("{}: closed while a line was expected", member.nick),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("{}: no line within {wait:?}", member.nick)
        }
        Err(e) => panic!("{}: read: {e}", member.nick),
    }
}

/// Closes both ends of `member`'s connection.
fn hang_up(member: Member) {
    let _ = member.writer.shutdown(std::net::Shutdown::Both);
}

#[test]
fn two_servers_are_one_room() {
    let redis = RedisServer::start();
    let dir = TempDir::new("chat-redis-two");
    let nodes = Node::many(&redis, "two-servers", &dir, 2);
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut alice = a.join();
    let mut bob = b.join();
    let mut carol = a.join();
    let mut dave = b.join();
    in_step(&mut [(0, &mut alice), (1, &mut bob), (0, &mut carol), (1, &mut dave)]);

    // A line reaches the members of both servers, and not its sender.
    alice.say("hello from a");
    let hello = format!("{}: hello from a", alice.nick);
    for member in [&mut bob, &mut carol, &mut dave] {
        member.expect(&hello);
    }
    bob.say("hi from b");
    let hi = format!("{}: hi from b", bob.nick);
    for member in [&mut alice, &mut carol, &mut dave] {
        member.expect(&hi);
    }
    alice.expect_silence();
    bob.expect_silence();

    // A rename reaches everyone, the renamed one included.
    alice.say("/nick alice");
    let renamed = format!("* {} is now alice", alice.nick);
    for member in [&mut alice, &mut bob, &mut carol, &mut dave] {
        member.expect(&renamed);
    }
    alice.nick = "alice".into();

    // A nick held on A is taken on B, without regard to ASCII case; the
    // refusal goes to the asker alone.
    for asked in ["alice", "Alice", "ALICE"] {
        bob.say(&format!("/nick {asked}"));
        bob.expect(&format!("* error: nick {asked} is taken"));
    }
    alice.expect_silence();
    dave.expect_silence();
    bob.say("/nick bob");
    let renamed = format!("* {} is now bob", bob.nick);
    for member in [&mut alice, &mut bob, &mut carol, &mut dave] {
        member.expect(&renamed);
    }
    bob.nick = "bob".into();

    // `/who` lists the members of both servers, on either.
    let everyone = set_of(&[&alice.nick, &bob.nick, &carol.nick, &dave.nick]);
    for member in [&mut alice, &mut bob, &mut carol, &mut dave] {
        assert_eq!(who(member), everyone, "/who of {}", member.nick);
    }

    // Many lines from one sender arrive on the other server in order,
    // each once.
    let lines: Vec<String> = (0..500).map(|i| format!("line {i}")).collect();
    carol.say_all(&lines);
    for line in &lines {
        let want = format!("{}: {line}", carol.nick);
        bob.expect(&want);
        dave.expect(&want);
        alice.expect(&want);
    }
    bob.expect_silence();
    dave.expect_silence();
    carol.expect_silence();

    // `/quit` on B: bye to the quitter, left on A.
    bob.say("/quit");
    assert_eq!(bob.until_closed(), ["* bye"]);
    for member in [&mut alice, &mut carol, &mut dave] {
        member.expect("* bob left");
    }
    // A member of A hangs up: left on B.
    let carol_nick = carol.nick.clone();
    hang_up(carol);
    for member in [&mut alice, &mut dave] {
        member.expect(&format!("* {carol_nick} left"));
    }
    assert_eq!(who(&mut dave), set_of(&[&alice.nick, &dave.nick]));
    alice.expect_silence();
    dave.expect_silence();
}

#[test]
fn three_servers_are_one_room() {
    let redis = RedisServer::start();
    let dir = TempDir::new("chat-redis-three");
    let nodes = Node::many(&redis, "three-servers", &dir, 3);
    let mut members: Vec<Member> = nodes.iter().map(Node::join).collect();
    {
        let [x, y, z] = &mut members[..] else {
            unreachable!("three members")
        };
        in_step(&mut [(0, x), (1, y), (2, z)]);
    }
    let everyone: BTreeSet<String> = members.iter().map(|m| m.nick.clone()).collect();
    for i in 0..members.len() {
        let text = format!("from server {i}");
        members[i].say(&text);
        let want = format!("{}: {text}", members[i].nick);
        for (j, other) in members.iter_mut().enumerate() {
            if j != i {
                other.expect(&want);
            }
        }
    }
    for member in &mut members {
        assert_eq!(who(member), everyone, "/who of {}", member.nick);
        member.expect_silence();
    }
}

#[test]
fn peer_address_nicks_that_clash_across_servers_get_a_suffix() {
    use socket2::{Domain, Socket, Type};
    let redis = RedisServer::start();
    let dir = TempDir::new("chat-redis-clash");
    let nodes = Node::many(&redis, "clash", &dir, 2);
    // Two connections from one address and port, one to each server: both
    // peer addresses, so both nicks, are the same.
    let mut members = Vec::new();
    let mut local = any_port();
    for node in &nodes {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket
            .bind(&local.into())
            .expect("bind the shared client address");
        socket
            .connect(&node.server.socket_addr("tcp").into())
            .expect("connect");
        let stream: std::net::TcpStream = socket.into();
        stream.set_read_timeout(Some(STEP)).expect("timeout");
        local = stream.local_addr().expect("address");
        let mut member = Member {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
            nick: String::new(),
        };
        let welcome = member.line();
        member.nick = welcome
            .strip_prefix("* welcome ")
            .unwrap_or_else(|| panic!("{welcome:?} is not a welcome"))
            .to_owned();
        members.push(member);
    }
    let [first, second] = &mut members[..] else {
        unreachable!("two members")
    };
    assert_eq!(first.nick, local.to_string());
    let suffix = second.nick.strip_prefix(&format!("{local}#"));
    assert!(
        suffix.is_some_and(|n| n.parse::<u32>().is_ok()),
        "the second {local} is {:?}, not {local}#N",
        second.nick
    );
    in_step(&mut [(0, &mut *first), (1, &mut *second)]);
    let both = set_of(&[&first.nick, &second.nick]);
    assert_eq!(who(first), both);
    assert_eq!(who(second), both);
}

#[test]
fn redis_killed_and_restarted_each_server_goes_on_alone_then_rejoins() {
    let mut redis = RedisServer::start();
    let dir = TempDir::new("chat-redis-restart");
    let nodes = Node::many(&redis, "restart", &dir, 2);
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut alice = a.join();
    let mut bob = b.join();
    let mut carol = a.join();
    in_step(&mut [(0, &mut alice), (1, &mut bob), (0, &mut carol)]);

    redis.kill();
    // Each server is a room of its own: the other's members leave its
    // `/who` silently.
    let deadline = Instant::now() + STEP;
    let (on_a, on_b) = (set_of(&[&alice.nick, &carol.nick]), set_of(&[&bob.nick]));
    who_until(&mut alice, &on_a, deadline);
    who_until(&mut bob, &on_b, deadline);
    // Each goes on serving its own members: lines, joins.
    carol.say("while redis is down");
    alice.expect(&format!("{}: while redis is down", carol.nick));
    let mut dave = a.join();
    for member in [&mut alice, &mut carol] {
        member.expect(&format!("* {} joined", dave.nick));
    }
    let mut erin = b.join();
    bob.expect(&format!("* {} joined", erin.nick));
    erin.say("b alone");
    bob.expect(&format!("{}: b alone", erin.nick));

    redis.restart();
    let back = Instant::now();
    let deadline = back + REJOIN + Duration::from_secs(5);
    let everyone = set_of(&[&alice.nick, &bob.nick, &carol.nick, &dave.nick, &erin.nick]);
    who_until(&mut alice, &everyone, deadline);
    let on_a = back.elapsed();
    who_until(&mut erin, &everyone, deadline);
    let on_b = back.elapsed();
    eprintln!("room whole again {on_a:?} (A) and {on_b:?} (B) after Redis came back");
    assert!(
        on_a.max(on_b) <= REJOIN + SLACK,
        "rejoined after {on_a:?} (A) and {on_b:?} (B), not within {REJOIN:?}"
    );
    // Lines flow again; what was said while Redis was away is not
    // replayed, and no join notices come: the first line the other side
    // sees is the one said after the return.
    alice.say("after the return");
    let after = format!("{}: after the return", alice.nick);
    for member in [&mut bob, &mut erin, &mut carol, &mut dave] {
        member.expect(&after);
    }
    bob.say("welcome back");
    let back_line = format!("{}: welcome back", bob.nick);
    for member in [&mut alice, &mut carol, &mut dave, &mut erin] {
        member.expect(&back_line);
    }
    for member in [&mut alice, &mut bob, &mut carol, &mut dave, &mut erin] {
        member.expect_silence();
    }
    for node in &nodes {
        node.assert_one_redis_warning();
        node.wait_in_room(2);
        assert_eq!(node.times_in_room(), 2, "log:\n{}", node.log());
    }
}

#[test]
fn a_nick_taken_on_both_sides_while_redis_was_away_is_kept_by_one() {
    let mut redis = RedisServer::start();
    let dir = TempDir::new("chat-redis-nick-split");
    let nodes = Node::many(&redis, "nick-split", &dir, 2);
    let mut alice = nodes[0].join();
    let mut carol = nodes[0].join();
    let mut bob = nodes[1].join();
    in_step(&mut [(0, &mut alice), (0, &mut carol), (1, &mut bob)]);

    redis.kill();
    let deadline = Instant::now() + STEP;
    let (on_a, on_b) = (set_of(&[&alice.nick, &carol.nick]), set_of(&[&bob.nick]));
    who_until(&mut alice, &on_a, deadline);
    who_until(&mut bob, &on_b, deadline);
    // Both take the name, each in its own case, each alone in its room.
    alice.say("/nick sam");
    let renamed = format!("* {} is now sam", alice.nick);
    alice.expect(&renamed);
    carol.expect(&renamed);
    alice.nick = "sam".into();
    bob.say("/nick SAM");
    bob.expect(&format!("* {} is now SAM", bob.nick));
    bob.nick = "SAM".into();

    redis.restart();
    // One keeps it; the other is told and renamed, and the whole room
    // gets the rename. Alice's first line says which lost.
    let first = alice.line();
    let alice_lost = first.starts_with("* nick sam ") || first.starts_with("* sam is now ");
    assert!(
        alice_lost || first.starts_with("* SAM is now "),
        "alice (sam) got {first:?}"
    );
    let (winner, loser, mut loser_lines, winner_lines) = if alice_lost {
        let second = alice.line();
        let seen_by_bob = bob.line();
        (&mut bob, &mut alice, vec![first, second], vec![seen_by_bob])
    } else {
        let lines = vec![bob.line(), bob.line()];
        (&mut alice, &mut bob, lines, vec![first])
    };
    let old = loser.nick.clone();
    eprintln!("{} kept the nick, {old} lost it", winner.nick);
    let held_prefix = format!("* nick {old} is held by another member of the room; you are now ");
    let renamed_prefix = format!("* {old} is now ");
    loser_lines.sort();
    let new = loser_lines
        .iter()
        .find_map(|l| l.strip_prefix(&held_prefix))
        .unwrap_or_else(|| panic!("{old} was not told: {loser_lines:?}"))
        .to_owned();
    assert!(
        !new.eq_ignore_ascii_case("sam"),
        "{old}'s new nick {new:?} clashes"
    );
    let mut want = vec![format!("{held_prefix}{new}"), format!("{renamed_prefix}{new}")];
    want.sort();
    assert_eq!(loser_lines, want, "the loser's lines");
    assert_eq!(
        winner_lines,
        [format!("{renamed_prefix}{new}")],
        "the winner's lines"
    );
    carol.expect(&format!("{renamed_prefix}{new}"));
    loser.nick = new;
    let everyone = set_of(&[&winner.nick, &loser.nick, &carol.nick]);
    let deadline = Instant::now() + STEP;
    who_until(winner, &everyone, deadline);
    who_until(loser, &everyone, deadline);
    who_until(&mut carol, &everyone, deadline);
    winner.say("one sam");
    loser.expect(&format!("{}: one sam", winner.nick));
    carol.expect(&format!("{}: one sam", winner.nick));
    winner.expect_silence();
    carol.expect_silence();
}

#[test]
fn redis_unreachable_at_start_then_up_the_servers_join_the_room() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = TempDir::new("chat-redis-late");
    let started = Instant::now();
    // A at the default log level (its warning must show there), B at info.
    let a = Node::start_logging(&addr, "late", &dir, "a", None);
    let b = Node::start(&addr, "late", &dir, "b");
    a.wait_redis_warning();
    b.wait_redis_warning();
    // Each serves its own members meanwhile.
    let mut alice = a.join();
    let mut carol = a.join();
    alice.expect(&format!("* {} joined", carol.nick));
    carol.say("nobody else here");
    alice.expect(&format!("{}: nobody else here", carol.nick));
    let mut bob = b.join();
    assert_eq!(who(&mut bob), set_of(&[&bob.nick]));
    assert_eq!(who(&mut alice), set_of(&[&alice.nick, &carol.nick]));
    // Retries (100 ms doubling) do not warn again: watch the logs for a
    // second after the start, long enough for a few.
    while started.elapsed() < Duration::from_secs(1) {
        assert!(a.redis_warnings().len() <= 1, "log:\n{}", a.log());
        assert!(b.redis_warnings().len() <= 1, "log:\n{}", b.log());
        std::thread::sleep(Duration::from_millis(50));
    }

    let _redis = RedisServer::start_on(port);
    let up = Instant::now();
    let deadline = up + REJOIN + Duration::from_secs(5);
    let everyone = set_of(&[&alice.nick, &carol.nick, &bob.nick]);
    who_until(&mut alice, &everyone, deadline);
    who_until(&mut bob, &everyone, deadline);
    let took = up.elapsed();
    eprintln!("one room {took:?} after Redis came up");
    assert!(
        took <= REJOIN + SLACK,
        "joined the room after {took:?}, not within {REJOIN:?}"
    );
    b.wait_in_room(1);
    assert_eq!(b.times_in_room(), 1, "log:\n{}", b.log());
    // Nothing said before is replayed, no join notices: the first line
    // across is the one said now.
    carol.say("now across");
    bob.expect(&format!("{}: now across", carol.nick));
    alice.expect(&format!("{}: now across", carol.nick));
    bob.say("hello a");
    alice.expect(&format!("{}: hello a", bob.nick));
    carol.expect(&format!("{}: hello a", bob.nick));
    bob.expect_silence();
    a.assert_one_redis_warning();
    b.assert_one_redis_warning();
}

#[test]
fn lines_sent_before_the_welcome_are_handled_after_it() {
    let redis = RedisServer::start();
    let dir = TempDir::new("chat-redis-early");
    let nodes = Node::many(&redis, "early", &dir, 2);
    let mut alice = nodes[0].join();
    let mut bob = nodes[1].join();
    in_step(&mut [(0, &mut alice), (1, &mut bob)]);
    // A newcomer on A talks, and renames itself, before its nick is
    // claimed in Redis and it is welcomed: held, then handled in order.
    let mut writer = connect(nodes[0].server.socket_addr("tcp"));
    writer
        .write_all(b"first words\n/nick early\nsecond words\n")
        .expect("write");
    let mut eve = Member {
        reader: BufReader::new(writer.try_clone().expect("clone")),
        nick: writer.local_addr().expect("address").to_string(),
        writer,
    };
    let peer = eve.nick.clone();
    eve.expect(&format!("* welcome {peer}"));
    eve.expect(&format!("* {peer} is now early"));
    for member in [&mut alice, &mut bob] {
        member.expect(&format!("* {peer} joined"));
        member.expect(&format!("{peer}: first words"));
        member.expect(&format!("* {peer} is now early"));
        member.expect("early: second words");
        member.expect_silence();
    }
    eve.expect_silence();
}

#[test]
fn a_redis_that_never_answers_does_not_hold_up_the_room() {
    // Connects to this address neither succeed nor fail.
    let silent = SilentListener::new();
    let dir = TempDir::new("chat-redis-silent");
    let start = Instant::now();
    let node = Node::start(&silent.addr.to_string(), "silent", &dir, "a");
    // The server does not wait for Redis to announce its listener.
    let announced = start.elapsed();
    assert!(
        announced < Duration::from_secs(1),
        "announced after {announced:?}"
    );
    let mut alice = node.join();
    let mut bob = node.join();
    alice.expect(&format!("* {} joined", bob.nick));
    bob.say("still served");
    alice.expect(&format!("{}: still served", bob.nick));
    assert_eq!(who(&mut bob), set_of(&[&alice.nick, &bob.nick]));
}

#[test]
fn a_sigkilled_servers_members_leave_the_room_within_the_bound() {
    let redis = RedisServer::start();
    let dir = TempDir::new("chat-redis-sigkill");
    let nodes = Node::many(&redis, "sigkill", &dir, 2);
    let mut alice = nodes[0].join();
    let mut bob = nodes[1].join();
    let mut bert = nodes[1].join();
    in_step(&mut [(0, &mut alice), (1, &mut bob), (1, &mut bert)]);

    nodes[1].server.signal(libc::SIGKILL);
    let killed = Instant::now();
    let wait = KILLED_LEAVE + Duration::from_secs(4);
    let first = line_within(&mut alice, wait);
    let rest = wait
        .saturating_sub(killed.elapsed())
        .max(Duration::from_millis(1));
    let second = line_within(&mut alice, rest);
    let took = killed.elapsed();
    eprintln!("members of the SIGKILLed server left after {took:?}");
    let got: BTreeSet<String> = [first, second].into();
    let want: BTreeSet<String> = [format!("* {} left", bob.nick), format!("* {} left", bert.nick)].into();
    assert_eq!(got, want);
    assert!(
        took <= KILLED_LEAVE + SLACK,
        "left after {took:?}, not within {KILLED_LEAVE:?}"
    );
    assert_eq!(who(&mut alice), set_of(&[&alice.nick]));
    alice.expect_silence();
}

#[test]
fn a_sigtermed_servers_members_leave_the_room_at_once() {
    let redis = RedisServer::start();
    let dir = TempDir::new("chat-redis-sigterm");
    let mut nodes = Node::many(&redis, "sigterm", &dir, 2);
    let mut alice = nodes[0].join();
    let mut bob = nodes[1].join();
    let mut bert = nodes[1].join();
    in_step(&mut [(0, &mut alice), (1, &mut bob), (1, &mut bert)]);

    nodes[1].server.signal(libc::SIGTERM);
    let terminated = Instant::now();
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        got.insert(line_within(&mut alice, STEP));
    }
    let took = terminated.elapsed();
    eprintln!("members of the SIGTERMed server left after {took:?}");
    let want: BTreeSet<String> = [format!("* {} left", bob.nick), format!("* {} left", bert.nick)].into();
    assert_eq!(got, want);
    assert!(took <= TERMINATED_LEAVE, "left after {took:?}, not at once");
    assert_eq!(who(&mut alice), set_of(&[&alice.nick]));
    // The stopped server closed its members and exits 0.
    assert_eq!(bob.until_closed(), Vec::<String>::new());
    assert_eq!(bert.until_closed(), Vec::<String>::new());
    drop((bob, bert));
    let status = nodes[1].server.wait();
    assert!(status.success(), "{status:?}");
    alice.expect_silence();
}

#[test]
fn a_nick_claimed_on_two_servers_at_once_has_exactly_one_winner() {
    let redis = RedisServer::start();
    let dir = TempDir::new("chat-redis-nick-race");
    let nodes = Node::many(&redis, "nick-race", &dir, 2);
    let mut alice = nodes[0].join();
    let mut bob = nodes[1].join();
    in_step(&mut [(0, &mut alice), (1, &mut bob)]);
    let mut wins = [0; 2];
    for round in 0..20 {
        let key = format!("race{round}");
        // On odd rounds the two ask in different ASCII cases.
        let claims = [
            key.clone(),
            if round % 2 == 1 {
                key.to_uppercase()
            } else {
                key.clone()
            },
        ];
        // Both claims are written before either answer is read.
        alice
            .writer
            .write_all(format!("/nick {}\n", claims[0]).as_bytes())
            .expect("write");
        bob.writer
            .write_all(format!("/nick {}\n", claims[1]).as_bytes())
            .expect("write");
        let mut winners = BTreeSet::new();
        let mut refused = [false; 2];
        let mut new_nick = String::new();
        for (i, member) in [&mut alice, &mut bob].into_iter().enumerate() {
            let mut notice: Option<(String, String)> = None;
            loop {
                let line = member.line();
                if let Some(rest) = line.strip_prefix("* error: nick ") {
                    assert_eq!(rest, format!("{} is taken", claims[i]), "round {round}");
                    assert!(!refused[i], "refused twice in round {round}");
                    refused[i] = true;
                } else if let Some((old, new)) =
                    line.strip_prefix("* ").and_then(|l| l.split_once(" is now "))
                {
                    assert_eq!(new.to_ascii_lowercase(), key, "round {round}: {line}");
                    assert!(notice.is_none(), "two renames in round {round}: {line}");
                    notice = Some((old.to_owned(), new.to_owned()));
                } else {
                    panic!("round {round}: {} got {line:?}", member.nick);
                }
                if let Some((old, _)) = &notice {
                    if refused[i] || *old == member.nick {
                        break;
                    }
                }
            }
            let (old, new) = notice.expect("a rename");
            assert!(
                !(refused[i] && old == member.nick),
                "round {round}: the winner was refused"
            );
            winners.insert(old);
            new_nick = new;
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: both saw the same winner: {winners:?}"
        );
        assert_eq!(
            refused.iter().filter(|r| **r).count(),
            1,
            "round {round}: one refused"
        );
        let winner = winners.into_iter().next().expect("one");
        if alice.nick == winner {
            alice.nick = new_nick;
            wins[0] += 1;
        } else {
            assert_eq!(bob.nick, winner, "round {round}: the winner is a member");
            bob.nick = new_nick;
            wins[1] += 1;
        }
    }
    eprintln!("nick races won: {wins:?} (A, B)");
    alice.expect_silence();
    bob.expect_silence();
    let both = set_of(&[&alice.nick, &bob.nick]);
    assert_eq!(both.len(), 2);
    assert_eq!(who(&mut alice), both);
    assert_eq!(who(&mut bob), both);
}

#[test]
fn room_flags_are_checked() {
    let redis = format!("127.0.0.1:{}", free_port());
    let long = "r".repeat(65);
    let longest = "r".repeat(64);
    let bad: [&[&str]; 5] = [
        &["--room", "lonely"],
        &["--redis", &redis, "--room", "not a room"],
        &["--redis", &redis, "--room", ""],
        &["--redis", &redis, "--room", &long],
        &["--redis", "not-an-address"],
    ];
    for args in bad {
        let out = Command::new(example_path("chat"))
            .args(["--tcp", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run chat");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // Every allowed character, at the longest length, is a room.
    let mut room = String::from("Az09_-.:");
    room.push_str(&longest[room.len()..]);
    let dir = TempDir::new("chat-redis-flags");
    let mut node = Node::start_logging(&redis, &room, &dir, "a", Some("warn"));
    assert!(node.server.terminate().success());
}
