//! The udp_chat example, from the outside: two processes talking, each in
//! one thread, stdin piped in; `[ip:port] TEXT` on stdout and nothing else;
//! `bye` or the end of stdin ends both sides as docs/programs.md says.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// A loopback address with a port nobody uses now.
fn free_udp_addr() -> String {
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    probe.local_addr().expect("addr").to_string()
}

struct Party {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Stdout lines, read on a thread so that waits can time out.
    stdout: mpsc::Receiver<String>,
}

impl Party {
    fn start(bind: &str, peer: &str) -> Party {
        let mut child = Command::new(example_path("udp_chat"))
            .args(["--bind", bind, "--peer", peer])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn udp_chat");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Party { child, stdin, stdout }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("type");
        stdin.flush().expect("flush");
    }

    /// The next stdout line, skipping readiness probes.
    fn printed(&mut self) -> String {
        loop {
            let line = self.stdout.recv_timeout(STEP).expect("a stdout line");
            if !line.ends_with("] probe") {
                return line;
            }
        }
    }

    fn exit_code(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "udp_chat did not exit");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Party {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `party` has bound its socket and runs its loop: a probe sent
/// before that is lost, so probes go out until one is printed.
fn wait_bound(party: &mut Party, addr: &str) {
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = probe.local_addr().expect("addr");
    let deadline = std::time::Instant::now() + STEP;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "udp_chat never printed a probe"
        );
        probe.send_to(b"probe", addr).expect("send");
        if let Ok(line) = party.stdout.recv_timeout(Duration::from_millis(100)) {
            assert_eq!(line, format!("[{me}] probe"));
            return;
        }
    }
}

#[test]
fn two_parties_chat_and_bye_ends_both() {
    let (a_addr, b_addr) = (free_udp_addr(), free_udp_addr());
    let mut a = Party::start(&a_addr, &b_addr);
    let mut b = Party::start(&b_addr, &a_addr);
    wait_bound(&mut a, &a_addr);
    wait_bound(&mut b, &b_addr);

    a.type_line("hello from a");
    assert_eq!(b.printed(), format!("[{a_addr}] hello from a"));
    b.type_line("hi a, both ways at once");
    assert_eq!(a.printed(), format!("[{b_addr}] hi a, both ways at once"));

    a.type_line("bye");
    assert_eq!(b.printed(), format!("[{a_addr}] bye"));
    assert_eq!(a.exit_code(), Some(0), "sending bye ends the sender");
    assert_eq!(b.exit_code(), Some(0), "receiving bye ends the receiver");
    let rest: Vec<String> = a.stdout.try_iter().filter(|l| !l.ends_with("] probe")).collect();
    assert!(rest.is_empty(), "nothing else on stdout: {rest:?}");
}

#[test]
fn end_of_stdin_ends_the_program() {
    let (a_addr, b_addr) = (free_udp_addr(), free_udp_addr());
    let mut a = Party::start(&a_addr, &b_addr);
    let listener = UdpSocket::bind(&b_addr).expect("bind the peer");
    listener.set_read_timeout(Some(STEP)).expect("timeout");
    wait_bound(&mut a, &a_addr);
    a.type_line("last words");
    let mut buf = [0; 64];
    let n = listener.recv(&mut buf).expect("datagram");
    assert_eq!(&buf[..n], b"last words", "one datagram per line, no newline");
    drop(a.stdin.take());
    assert_eq!(a.exit_code(), Some(0));
}

#[test]
fn stdin_redirected_from_a_file_is_sent_line_by_line() {
    // epoll refuses regular files; the program feeds the file through a
    // pipe instead, still on one thread.
    let path = std::env::temp_dir().join(format!("udp_chat_stdin_{}.txt", std::process::id()));
    std::fs::write(&path, "from a file\nsecond line\n").expect("write stdin file");
    let listener = UdpSocket::bind("127.0.0.1:0").expect("bind the peer");
    listener.set_read_timeout(Some(STEP)).expect("timeout");
    let peer = listener.local_addr().expect("addr").to_string();
    let file = std::fs::File::open(&path).expect("open stdin file");
    let out = Command::new(example_path("udp_chat"))
        .args(["--bind", &free_udp_addr(), "--peer", &peer])
        .stdin(Stdio::from(file))
        .output()
        .expect("run udp_chat");
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(0), "end of the file ends the program");
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", out.stdout);
    let mut buf = [0; 64];
    let n = listener.recv(&mut buf).expect("first datagram");
    assert_eq!(&buf[..n], b"from a file");
    let n = listener.recv(&mut buf).expect("second datagram");
    assert_eq!(&buf[..n], b"second line");
}

#[test]
fn peer_text_cannot_drive_the_terminal_or_pose_as_a_line() {
    let a_addr = free_udp_addr();
    let mut a = Party::start(&a_addr, &free_udp_addr());
    wait_bound(&mut a, &a_addr);
    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = peer.local_addr().expect("addr");
    // Without care: a cleared screen, a retitled window, and a second
    // line that claims to come from someone else.
    let datagram = "hi\x1b[2J\x1b]0;owned\x07\r\n[10.0.0.1:1] give me your password\u{85}\u{2028}\tend\n";
    peer.send_to(datagram.as_bytes(), &a_addr).expect("send");
    let r = '\u{fffd}';
    assert_eq!(
        a.printed(),
        format!("[{me}] hi{r}[2J{r}]0;owned{r}{r}{r}[10.0.0.1:1] give me your password{r}{r}\tend")
    );
    drop(a.stdin.take());
    assert_eq!(a.exit_code(), Some(0));
    // It has exited, so its stdout is at its end: read all of it.
    let rest: Vec<String> = a.stdout.iter().filter(|l| !l.ends_with("] probe")).collect();
    assert!(rest.is_empty(), "one line per datagram: {rest:?}");
}
