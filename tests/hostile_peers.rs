//! Hostile and broken peers against the example servers, from the outside:
//! slowloris trickles, connections reset halfway, consumers that stop
//! reading, and garbage. Each test has a bounded count and duration, talks
//! to loopback only, and checks that a normal client is still served and
//! that the server's descriptors and memory come back.
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// A served root with a small file and a big one.
struct Files {
    dir: TempDir,
}

const BIG: usize = 32 * 1024 * 1024;

impl Files {
    fn new(tag: &str) -> Files {
        let dir = TempDir::new(&format!("hostile-{tag}"));
        std::fs::write(dir.0.join("small.txt"), b"small and whole\n").expect("file");
        std::fs::write(dir.0.join("big.bin"), pattern(BIG, 3)).expect("file");
        Files { dir }
    }

    fn serve(&self, extra: &[&str]) -> ServerProcess {
        let root = self.dir.0.to_str().expect("utf-8");
        let mut args = vec!["--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--root", root];
        args.extend_from_slice(extra);
        ServerProcess::start("file_server", &args, 2)
    }
}

/// A normal plain-protocol download of `small.txt`.
#[track_caller]
fn plain_download_works(addr: SocketAddr) {
    let mut stream = connect(addr);
    write_all(&mut stream, b"small.txt\n");
    assert_eq!(read_to_end(&mut stream), b"small and whole\n");
}

/// A normal HTTP request for `small.txt`, on its own connection.
#[track_caller]
fn http_get_works(addr: SocketAddr) {
    let mut stream = connect(addr);
    write_all(
        &mut stream,
        b"GET /small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let answer = read_to_end(&mut stream);
    assert!(
        answer.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(answer.ends_with(b"\r\n\r\nsmall and whole\n"));
}

/// Two chat members exchange a line.
#[track_caller]
fn chat_works(addr: SocketAddr) {
    use std::io::{BufRead, BufReader};
    let mut a = BufReader::new(connect(addr));
    let mut b = BufReader::new(connect(addr));
    let mut line = String::new();
    a.read_line(&mut line).expect("welcome a");
    line.clear();
    b.read_line(&mut line).expect("welcome b");
    write_all(a.get_mut(), b"are you there?\n");
    loop {
        line.clear();
        b.read_line(&mut line).expect("line for b");
        if line.ends_with(": are you there?\n") {
            break;
        }
        assert!(line.starts_with("* "), "unexpected line {line:?}");
    }
}

/// Reads what is there without blocking; whether the peer has closed
/// (end of file or a reset).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Polls `f` until it holds, for at most [`STEP`].
#[track_caller]
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn slowloris_connections_are_cut_by_their_timeouts_while_others_are_served() {
    let files = Files::new("slowloris");
    let file_server = files.serve(&["--idle-timeout", "1"]);
    let chat = ServerProcess::start("chat", &["--tcp", "127.0.0.1:0", "--idle-timeout", "1"], 1);
    let (http, plain, room) = (
        file_server.socket_addr("http"),
        file_server.socket_addr("tcp"),
        chat.socket_addr("tcp"),
    );

    // 300 trickling connections: an HTTP head that never ends, a chat line
    // that never ends, and plain-protocol clients that never name a file.
    let mut slow: Vec<(TcpStream, &[u8])> = Vec::new();
    for i in 0..300 {
        let (addr, first, trickle): (SocketAddr, &[u8], &[u8]) = match i % 3 {
            0 => (http, b"GET /small.txt HTTP/1.1\r\nX-Slow: ", b"a"),
            1 => (room, b"never ending", b"."),
            _ => (plain, b"", b""),
        };
        let mut stream = connect(addr);
        write_all(&mut stream, first);
        stream.set_nonblocking(true).expect("nonblocking");
        slow.push((stream, trickle));
    }

    // Normal clients are served meanwhile.
    http_get_works(http);
    plain_download_works(plain);
    chat_works(room);

    // Keep trickling a byte per connection every 100 ms until the server
    // has cut each one (the timeouts are 1 s); give up after 15 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut open: Vec<bool> = vec![true; slow.len()];
    while open.iter().any(|o| *o) && Instant::now() < deadline {
        for (i, (stream, trickle)) in slow.iter_mut().enumerate() {
            if !open[i] {
                continue;
            }
            if closed_by_server(stream) {
                open[i] = false;
            } else if !trickle.is_empty() {
                let _ = stream.write(trickle);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let still_open = open.iter().filter(|o| **o).count();
    assert_eq!(still_open, 0, "slowloris connections never cut");

    // And the servers still serve.
    http_get_works(http);
    plain_download_works(plain);
    chat_works(room);
}

#[test]
fn a_thousand_resets_and_aborts_leave_no_descriptor_or_memory_behind() {
    let files = Files::new("resets");
    let file_server = files.serve(&[]);
    let chat = ServerProcess::start("chat", &["--tcp", "127.0.0.1:0"], 1);
    let (http, plain, room) = (
        file_server.socket_addr("http"),
        file_server.socket_addr("tcp"),
        chat.socket_addr("tcp"),
    );
    let base = (file_server.fd_count(), chat.fd_count());
    let round = |count: usize| {
        for i in 0..count {
            let (addr, request): (SocketAddr, &[u8]) = match i % 4 {
                0 => (http, b"GET /small.txt HTTP/1.1\r\nHo"),
                1 => (http, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n"),
                2 => (plain, b"big.bin\n"),
                _ => (room, b"half a line"),
            };
            let mut stream = connect(addr);
            write_all(&mut stream, request);
            if i % 4 == 1 || i % 4 == 2 {
                // Mid-download: take a little of the body first.
                let mut some = [0u8; 1024];
                stream.read_exact(&mut some).expect("start of the download");
            }
            reset_on_close(&stream);
            drop(stream);
        }
    };
    // A first round warms up the allocator and the slab.
    round(200);
    eventually("the first round's connections are gone", || {
        (file_server.fd_count(), chat.fd_count()) == base
    });
    let fds = (file_server.fd_count(), chat.fd_count());
    let rss = (file_server.rss_kib(), chat.rss_kib());

    round(1000);
    eventually("descriptors back at the baseline", || {
        (file_server.fd_count(), chat.fd_count()) == fds
    });
    let grown = (
        file_server.rss_kib().saturating_sub(rss.0),
        chat.rss_kib().saturating_sub(rss.1),
    );
    assert!(grown.0 < 2048 && grown.1 < 2048, "RSS grew by {grown:?} KiB");
    http_get_works(http);
    plain_download_works(plain);
    chat_works(room);
}

#[test]
fn a_reader_that_stops_is_cut_and_others_download_at_full_speed() {
    let files = Files::new("slowreader");
    let server = files.serve(&["--idle-timeout", "1"]);
    let http = server.socket_addr("http");
    let rss_before = server.rss_kib();
    let base_fds = server.fd_count();

    // Ten HTTP readers and ten plain ones that take one byte, then nothing.
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut stream = connect(if i % 2 == 0 {
            http
        } else {
            server.socket_addr("tcp")
        });
        if i % 2 == 0 {
            write_all(&mut stream, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        } else {
            write_all(&mut stream, b"big.bin\n");
        }
        let mut one = [0u8; 1];
        stream.read_exact(&mut one).expect("first byte");
        stalled.push(stream);
    }

    // A normal reader gets the whole big file meanwhile.
    let mut normal = connect(server.socket_addr("tcp"));
    write_all(&mut normal, b"big.bin\n");
    let body = read_to_end(&mut normal);
    assert!(body == pattern(BIG, 3), "the normal download is whole");

    // The stalled ones are cut (reset by the drain timeout) while they
    // read nothing: the server's descriptors fall back to the baseline.
    eventually("the stalled connections are cut", || {
        server.fd_count() <= base_fds
    });
    // Whatever they read now is less than the file, ending in a reset or
    // an end of file: a cut download is never passed off as whole.
    for mut stream in stalled {
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        assert!(got.len() + 1 < BIG, "a stalled reader got the whole file");
    }
    // Queued file regions cost no memory: twenty stalled 32 MiB downloads
    // did not grow the server by anything like their size.
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB");
}

/// Sends `bytes` (ignoring a write cut short by the server) and reads
/// until the server closes; returns what came back.
fn throw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

#[test]
fn garbage_gets_an_error_or_a_close_never_a_crash() {
    let files = Files::new("garbage");
    let file_server = files.serve(&[]);
    let chat = ServerProcess::start("chat", &["--tcp", "127.0.0.1:0"], 1);
    let echo = ServerProcess::start("echo", &["--tcp", "127.0.0.1:0"], 1);
    let (http, plain, room) = (
        file_server.socket_addr("http"),
        file_server.socket_addr("tcp"),
        chat.socket_addr("tcp"),
    );
    let rss = (file_server.rss_kib(), chat.rss_kib());

    let random = pattern(1024 * 1024, 77);
    let huge_line = vec![b'x'; 10 * 1024 * 1024];
    let invalid_utf8: Vec<u8> = (0..4096).map(|i| [0xff, 0xfe, 0xc3, b'\n'][i % 4]).collect();
    let long_name = vec![b'n'; 64 * 1024];
    let nuls = vec![0u8; 100_000];
    let many_headers: Vec<u8> = {
        let mut head = b"GET /small.txt HTTP/1.1\r\nHost: t\r\n".to_vec();
        for i in 0..10_000 {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    };
    let all: [&[u8]; 6] = [
        &random,
        &huge_line,
        &invalid_utf8,
        &long_name,
        &nuls,
        &many_headers,
    ];

    for bytes in all {
        // HTTP: a 400 or a 431, then a close.
        let answer = throw(http, bytes);
        assert!(
            answer.starts_with(b"HTTP/1.1 400 ") || answer.starts_with(b"HTTP/1.1 431 "),
            "HTTP answered {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(80)])
        );
        // The plain protocol: no_file, or nothing (an empty name).
        let answer = throw(plain, bytes);
        assert!(
            answer == b"no_file" || answer.is_empty(),
            "plain answered {} bytes",
            answer.len()
        );
        // Chat: whatever notices, then a close (line too long, or the FIN).
        let answer = throw(room, bytes);
        assert!(
            answer.starts_with(b"* welcome "),
            "chat answered {:?}",
            &answer[..answer.len().min(40)]
        );
        // Echo: every byte back.
        let mut stream = connect(echo.socket_addr("tcp"));
        let writer = {
            let mut stream = stream.try_clone().expect("clone");
            let bytes = bytes.to_vec();
            std::thread::spawn(move || {
                stream.write_all(&bytes).expect("echo write");
                stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
            })
        };
        let back = read_to_end(&mut stream);
        writer.join().expect("writer");
        assert!(
            back == bytes,
            "echo gave back {} of {} bytes",
            back.len(),
            bytes.len()
        );
    }
    // The long line in chat is refused at the limit, not buffered whole.
    let answer = throw(room, &huge_line);
    assert!(String::from_utf8_lossy(&answer).contains("* error: line too long"));

    let grown = (
        file_server.rss_kib().saturating_sub(rss.0),
        chat.rss_kib().saturating_sub(rss.1),
    );
    assert!(
        grown.0 < 8 * 1024 && grown.1 < 8 * 1024,
        "RSS grew by {grown:?} KiB"
    );
    http_get_works(http);
    plain_download_works(plain);
    chat_works(room);
}
