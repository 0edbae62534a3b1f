//! The file_server example over the plain TCP protocol, from the outside
//! (docs/programs.md: file_server), including the classic Python client's habits:
//! a bare name with no newline, then `recv(1024)` until it returns nothing.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// A temporary root with a few files, removed on drop.
struct Tree(PathBuf);

impl Tree {
    fn new(tag: &str) -> Tree {
        let dir = std::env::temp_dir().join(format!("evloop-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).expect("root");
        std::fs::write(dir.join("hello.txt"), b"hello, file\n").expect("file");
        std::fs::write(dir.join("empty"), b"").expect("file");
        std::fs::write(dir.join("exact1024"), pattern(1024, 5)).expect("file");
        std::fs::write(dir.join("sub/big.bin"), pattern(3 * 1024 * 1024 + 17, 6)).expect("file");
        Tree(dir)
    }

    fn serve(&self) -> ServerProcess {
        let root = self.0.to_str().expect("utf-8 path");
        ServerProcess::start("file_server", &["--tcp", "127.0.0.1:0", "--root", root], 1)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the Python client does: send the name as is, then `recv(1024)`
/// until the server closes.
#[track_caller]
fn python_style_get(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    write_all(&mut stream, request);
    let mut got = Vec::new();
    let mut buf = [0; 1024];
    loop {
        let n = stream.read(&mut buf).expect("recv");
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn bare_name_without_newline_gets_the_file_then_close() {
    let tree = Tree::new("bare");
    let server = tree.serve();
    let addr = server.socket_addr("tcp");
    assert_eq!(python_style_get(addr, b"hello.txt"), b"hello, file\n");
    assert_eq!(python_style_get(addr, b"hello.txt\n"), b"hello, file\n");
    assert_eq!(python_style_get(addr, b"hello.txt\r\n"), b"hello, file\n");
    assert_eq!(
        python_style_get(addr, b"sub/big.bin"),
        pattern(3 * 1024 * 1024 + 17, 6)
    );
    assert_eq!(python_style_get(addr, b"empty"), b"");
    assert_eq!(python_style_get(addr, b"exact1024"), pattern(1024, 5));
}

#[test]
fn anything_not_served_gets_exactly_no_file() {
    let tree = Tree::new("refused");
    let outside = Tree::new("refused-outside");
    std::os::unix::fs::symlink(outside.0.join("hello.txt"), tree.0.join("escape")).expect("symlink");
    let server = tree.serve();
    let addr = server.socket_addr("tcp");
    let long_name = vec![b'a'; 1025];
    let cases: [&[u8]; 9] = [
        b"missing.txt",
        b"sub",
        b"../hello.txt",
        b"sub/../../etc/passwd",
        b"/etc/passwd",
        b"hello.txt\0",
        b"escape",
        b"\xff\xfe",
        &long_name,
    ];
    for request in cases {
        assert_eq!(
            python_style_get(addr, request),
            b"no_file",
            "request {:?}",
            String::from_utf8_lossy(request)
        );
    }
}

#[test]
fn twenty_downloads_at_once_are_each_byte_exact() {
    let tree = Tree::new("many");
    let server = tree.serve();
    let addr = server.socket_addr("tcp");
    let downloads: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || python_style_get(addr, b"sub/big.bin\n")))
        .collect();
    let expected = pattern(3 * 1024 * 1024 + 17, 6);
    for download in downloads {
        assert!(download.join().expect("client thread") == expected);
    }
}

#[test]
fn slow_reader_does_not_hold_back_another_download() {
    let tree = Tree::new("slow");
    let server = tree.serve();
    let addr = server.socket_addr("tcp");
    let mut slow = connect(addr);
    write_all(&mut slow, b"sub/big.bin\n");
    let mut first = [0; 1024];
    slow.read_exact(&mut first).expect("the slow download started");
    // The slow client now reads nothing while a full download completes.
    assert_eq!(
        python_style_get(addr, b"sub/big.bin"),
        pattern(3 * 1024 * 1024 + 17, 6)
    );
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).expect("the slow one finishes too");
    assert_eq!(first.len() + rest.len(), 3 * 1024 * 1024 + 17);
}

#[test]
fn sixty_four_mib_to_a_slow_reader_keeps_server_memory_flat() {
    const SIZE: usize = 64 * 1024 * 1024;
    const PIECE: usize = 64 * 1024;
    let tree = Tree::new("flat");
    std::fs::write(tree.0.join("large"), pattern(SIZE, 7)).expect("64 MiB file");
    let server = tree.serve();
    let before_kib = server.rss_kib();
    let mut client = connect(server.socket_addr("tcp"));
    write_all(&mut client, b"large");
    let mut buf = vec![0; PIECE];
    let mut received = 0usize;
    let mut peak_kib = before_kib;
    // Bounded: one pass per 64 KiB piece, and a few spare for short reads.
    for _ in 0..4 * SIZE / PIECE {
        let n = read_piece(&mut client, &mut buf);
        if n == 0 {
            break;
        }
        received += n;
        // A slow reader: the server's queue stays full for the whole file.
        std::thread::sleep(Duration::from_millis(1));
        peak_kib = peak_kib.max(server.rss_kib());
    }
    assert_eq!(received, SIZE, "the whole file, then end-of-file");
    let growth_kib = peak_kib.saturating_sub(before_kib);
    assert!(
        growth_kib < 4 * 1024,
        "server RSS grew by {growth_kib} KiB for a 64 MiB download"
    );
}

/// Reads up to a full piece (fewer only at end-of-file).
#[track_caller]
fn read_piece(stream: &mut TcpStream, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]).expect("read") {
            0 => break,
            n => filled += n,
        }
    }
    filled
}

#[test]
fn bytes_after_the_name_are_ignored() {
    let tree = Tree::new("trailing");
    let server = tree.serve();
    let addr = server.socket_addr("tcp");
    assert_eq!(
        python_style_get(addr, b"hello.txt\nmore\nstuff"),
        b"hello, file\n"
    );
    let mut stream = connect(addr);
    write_all(&mut stream, b"hello.txt\n");
    let _ = stream.write_all(b"late bytes after the name");
    assert_eq!(read_to_end(&mut stream), b"hello, file\n");
}

#[test]
fn long_name_with_newline_gets_no_file() {
    let tree = Tree::new("longnl");
    let server = tree.serve();
    let mut request = vec![b'a'; 1025];
    request.push(b'\n');
    assert_eq!(python_style_get(server.socket_addr("tcp"), &request), b"no_file");
}

#[test]
fn stalled_reader_is_cut_after_the_idle_timeout() {
    let tree = Tree::new("stall");
    std::fs::write(tree.0.join("large"), pattern(16 * 1024 * 1024, 8)).expect("file");
    let root = tree.0.to_str().expect("utf-8 path");
    let server = ServerProcess::start(
        "file_server",
        &["--tcp", "127.0.0.1:0", "--root", root, "--idle-timeout", "0.3"],
        1,
    );
    let mut stalled = connect(server.socket_addr("tcp"));
    // Loopback buffers can grow to tens of MiB: keep this one small, so
    // the kernel cannot take the whole file for a reader that reads nothing.
    set_receive_buffer(&stalled, 32 * 1024);
    write_all(&mut stalled, b"large\n");
    // The client reads nothing: the watchdog hands the rest to the close,
    // whose drain timeout resets the connection. The reset shows as the
    // socket's pending error, seen without reading (bounded poll).
    let mut reset = None;
    for _ in 0..500 {
        if let Some(err) = stalled.take_error().expect("SO_ERROR") {
            reset = Some(err.kind());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(reset, Some(std::io::ErrorKind::ConnectionReset));
}

/// Caps a socket's receive buffer (`SO_RCVBUF`), which also stops the
/// kernel from growing it.
fn set_receive_buffer(stream: &TcpStream, bytes: libc::c_int) {
    // SAFETY: setsockopt on a live socket with a valid `c_int` value and
    // its exact size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF");
}

#[test]
fn sigterm_lets_a_multi_region_download_finish() {
    const SIZE: usize = 12 * 1024 * 1024;
    let tree = Tree::new("termbig");
    std::fs::write(tree.0.join("large"), pattern(SIZE, 9)).expect("file");
    let mut server = tree.serve();
    let mut client = connect(server.socket_addr("tcp"));
    write_all(&mut client, b"large");
    let first = read_exact(&mut client, 1024);
    server.signal(libc::SIGTERM);
    let rest = read_to_end(&mut client);
    assert_eq!(first.len() + rest.len(), SIZE);
    assert!([first, rest].concat() == pattern(SIZE, 9), "byte-exact");
    drop(client); // our FIN ends the server's linger at once
    assert!(server.wait().success());
}

#[test]
fn silent_connection_is_closed_after_the_idle_timeout() {
    let tree = Tree::new("idle");
    let root = tree.0.to_str().expect("utf-8 path");
    let server = ServerProcess::start(
        "file_server",
        &["--tcp", "127.0.0.1:0", "--root", root, "--idle-timeout", "0.2"],
        1,
    );
    let mut silent = connect(server.socket_addr("tcp"));
    assert_eq!(read_to_end(&mut silent), b"", "closed with nothing sent");
}

#[test]
fn bad_roots_and_addresses_are_usage_errors() {
    for args in [
        &["--root", "/nonexistent/evloop"][..],
        &["--http", "localhost:http"][..],
    ] {
        let out = std::process::Command::new(example_path("file_server"))
            .args(args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end().lines().count(), 1);
    }
}

#[test]
fn sigterm_during_downloads_exits_zero() {
    let tree = Tree::new("term");
    let mut server = tree.serve();
    let mut client = TcpStream::connect(server.socket_addr("tcp")).expect("connect");
    write_all(&mut client, b"hello.txt");
    assert_eq!(read_to_end(&mut client), b"hello, file\n");
    drop(client);
    assert!(server.terminate().success());
}

#[test]
fn name_of_exactly_1024_bytes_is_served() {
    let tree = Tree::new("maxname");
    // A component is at most 255 bytes: four directories of 200 bytes
    // (with their slashes, 804) and a 220-byte file make 1024.
    let dirs = vec!["d".repeat(200); 4].join("/");
    let name = format!("{dirs}/{}", "f".repeat(220));
    assert_eq!(name.len(), 1024);
    std::fs::create_dir_all(tree.0.join(&dirs)).expect("deep directories");
    std::fs::write(tree.0.join(&name), b"at the limit\n").expect("file");
    let server = tree.serve();
    let addr = server.socket_addr("tcp");
    assert_eq!(python_style_get(addr, name.as_bytes()), b"at the limit\n");
    // The line ending is not part of the name, so it does not count.
    let crlf = format!("{name}\r\n");
    assert_eq!(python_style_get(addr, crlf.as_bytes()), b"at the limit\n");
}

#[test]
fn client_that_half_closes_after_its_name_still_gets_the_file() {
    let tree = Tree::new("halfclose");
    let server = tree.serve();
    let mut stream = connect(server.socket_addr("tcp"));
    write_all(&mut stream, b"hello.txt\n");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown write");
    assert_eq!(read_to_end(&mut stream), b"hello, file\n");
}

#[test]
fn every_answer_releases_its_file_and_socket() {
    let tree = Tree::new("fds");
    let outside = Tree::new("fds-outside");
    std::os::unix::fs::symlink(outside.0.join("hello.txt"), tree.0.join("escape")).expect("symlink");
    let server = tree.serve();
    let addr = server.socket_addr("tcp");
    let baseline = server.fd_count();
    for _ in 0..5 {
        assert_eq!(python_style_get(addr, b"hello.txt"), b"hello, file\n");
        assert_eq!(python_style_get(addr, b"sub"), b"no_file");
        assert_eq!(python_style_get(addr, b"escape"), b"no_file");
        assert_eq!(python_style_get(addr, b"missing"), b"no_file");
    }
    // The server closes its side after the client's FIN arrives: poll,
    // bounded, until every descriptor is back.
    let deadline = std::time::Instant::now() + STEP;
    while server.fd_count() != baseline {
        assert!(
            std::time::Instant::now() < deadline,
            "{} descriptors open, {baseline} before",
            server.fd_count()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
