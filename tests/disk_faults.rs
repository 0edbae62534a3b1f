//! Disk and file faults under the file server, and a shutdown in the
//! middle of traffic (docs/programs.md: file_server, file_client, chat): a file that
//! shrinks or is deleted while it is streamed, an unreadable file, a root
//! that disappears, and SIGTERM with downloads and chat in flight. Every
//! download either ends whole or ends visibly cut; the server goes on (or
//! exits 0 on SIGTERM).
mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const BIG: usize = 48 * 1024 * 1024;

fn serve(root: &std::path::Path, extra: &[&str]) -> ServerProcess {
    let root = root.to_str().expect("utf-8");
    let mut args = vec!["--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--root", root];
    args.extend_from_slice(extra);
    ServerProcess::start("file_server", &args, 2)
}

/// Reads until end of file or an error; returns the bytes and whether it
/// ended in an error (a reset) rather than a clean end of file.
fn read_all(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, false),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (got, true),
        }
    }
}

/// The body of an HTTP answer read whole, and its Content-Length.
fn http_body(answer: &[u8]) -> (usize, &[u8]) {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&answer[..end]);
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    (length, &answer[end..])
}

/// Starts a download on `addr` and reads its first `n` bytes, so the server
/// is streaming when the test changes the file.
fn start_download(addr: SocketAddr, request: &[u8], n: usize) -> (TcpStream, Vec<u8>) {
    let mut stream = connect(addr);
    write_all(&mut stream, request);
    let first = read_exact(&mut stream, n);
    (stream, first)
}

#[test]
fn a_file_that_shrinks_while_streamed_ends_cut_never_padded() {
    let dir = TempDir::new("disk-shrink");
    let content = pattern(BIG, 21);
    for name in ["plain.bin", "http.bin"] {
        std::fs::write(dir.0.join(name), &content).expect("file");
    }
    let server = serve(&dir.0, &[]);

    let (mut plain, mut plain_got) = start_download(server.socket_addr("tcp"), b"plain.bin\n", 4096);
    let request = b"GET /http.bin HTTP/1.1\r\nHost: t\r\n\r\n";
    let (mut http, mut http_got) = start_download(server.socket_addr("http"), request, 4096);
    // Shrink both files to a tenth, in place, while the server streams them.
    for name in ["plain.bin", "http.bin"] {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.0.join(name))
            .expect("open");
        file.set_len((BIG / 10) as u64).expect("truncate");
    }

    let (rest, plain_reset) = read_all(&mut plain);
    plain_got.extend_from_slice(&rest);
    assert!(plain_got.len() < BIG, "the plain download passed off as whole");
    assert!(
        plain_reset,
        "a cut plain download must end in a reset, not a clean end of file"
    );
    assert!(
        plain_got[..] == content[..plain_got.len()],
        "every byte is the file's: no padding"
    );

    let (rest, _) = read_all(&mut http);
    http_got.extend_from_slice(&rest);
    let (length, body) = http_body(&http_got);
    assert_eq!(length, BIG, "the length announced before the file shrank");
    assert!(
        body.len() < length,
        "the HTTP body is cut short of its Content-Length"
    );
    assert!(
        body[..] == content[..body.len()],
        "every byte is the file's: no padding"
    );

    // The server goes on.
    std::fs::write(dir.0.join("after.txt"), b"still here\n").expect("file");
    let mut stream = connect(server.socket_addr("tcp"));
    write_all(&mut stream, b"after.txt\n");
    assert_eq!(read_to_end(&mut stream), b"still here\n");
}

#[test]
fn a_file_deleted_while_streamed_is_still_sent_whole() {
    let dir = TempDir::new("disk-deleted");
    let content = pattern(BIG, 22);
    std::fs::write(dir.0.join("gone.bin"), &content).expect("file");
    let server = serve(&dir.0, &[]);
    let (mut stream, mut got) = start_download(server.socket_addr("tcp"), b"gone.bin\n", 4096);
    std::fs::remove_file(dir.0.join("gone.bin")).expect("unlink");
    let (rest, reset) = read_all(&mut stream);
    got.extend_from_slice(&rest);
    assert!(!reset);
    assert!(
        got == content,
        "the open file is streamed whole after its name is gone"
    );
    // A new request for it finds nothing.
    let mut again = connect(server.socket_addr("tcp"));
    write_all(&mut again, b"gone.bin\n");
    assert_eq!(read_to_end(&mut again), b"no_file");
}

#[test]
fn an_unreadable_file_and_a_vanished_root_get_clear_answers() {
    let dir = TempDir::new("disk-perm");
    let root = dir.0.join("root");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(root.join("locked.txt"), b"secret").expect("file");
    std::fs::write(root.join("open.txt"), b"open\n").expect("file");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("locked.txt"), std::fs::Permissions::from_mode(0o000)).expect("chmod");
    // Root reads any file, so a root test runs the server as nobody.
    let mut command = Command::new(example_path("file_server"));
    command.args([
        "--tcp",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--root",
        root.to_str().expect("utf-8"),
    ]);
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        use std::os::unix::process::CommandExt;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        command.uid(65534).gid(65534);
    }
    let server = ServerProcess::start_with(&mut command, 2);
    let (plain, http) = (server.socket_addr("tcp"), server.socket_addr("http"));

    let mut stream = connect(plain);
    write_all(&mut stream, b"locked.txt\n");
    assert_eq!(read_to_end(&mut stream), b"no_file");
    let mut stream = connect(http);
    write_all(
        &mut stream,
        b"GET /locked.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let answer = read_to_end(&mut stream);
    assert!(
        answer.starts_with(b"HTTP/1.1 403 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // The root disappears: answers say so, and the server stays up.
    std::fs::remove_dir_all(&root).expect("remove the root");
    let mut stream = connect(plain);
    write_all(&mut stream, b"open.txt\n");
    assert_eq!(read_to_end(&mut stream), b"no_file");
    for target in ["/open.txt", "/"] {
        let mut stream = connect(http);
        write_all(
            &mut stream,
            format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let answer = read_to_end(&mut stream);
        assert!(
            answer.starts_with(b"HTTP/1.1 404 "),
            "{target}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    // It comes back: served again.
    std::fs::create_dir_all(&root).expect("root again");
    std::fs::write(root.join("open.txt"), b"open\n").expect("file");
    let mut stream = connect(plain);
    write_all(&mut stream, b"open.txt\n");
    assert_eq!(read_to_end(&mut stream), b"open\n");
}

#[test]
fn sigterm_under_load_finishes_or_cuts_every_transfer_and_exits_zero() {
    let dir = TempDir::new("disk-sigterm");
    let root = dir.0.join("root");
    let out = dir.0.join("out");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::create_dir_all(&out).expect("out");
    let content = pattern(BIG, 23);
    std::fs::write(root.join("big.bin"), &content).expect("file");
    let mut server = serve(&root, &["--shutdown-timeout", "2"]);
    let chat = ServerProcess::start("chat", &["--tcp", "127.0.0.1:0"], 1);
    let (plain, http) = (server.socket_addr("tcp"), server.socket_addr("http"));

    // In flight at the signal: file_client downloads, raw downloads that
    // read at full speed, one that has stopped reading, and chat traffic.
    let clients: Vec<_> = (0..4)
        .map(|i| {
            Command::new(example_path("file_client"))
                .arg(plain.to_string())
                .arg("big.bin")
                .arg("-o")
                .arg(out.join(format!("copy{i}.bin")))
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("file_client")
        })
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let (addr, request): (SocketAddr, &[u8]) = if i % 2 == 0 {
                (plain, b"big.bin\n")
            } else {
                (http, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            };
            let (mut stream, first) = start_download(addr, request, 1024);
            std::thread::spawn(move || {
                let (rest, reset) = read_all(&mut stream);
                (i, [first, rest].concat(), reset)
            })
        })
        .collect();
    let (mut stalled, _) = start_download(plain, b"big.bin\n", 1024);
    let mut member = BufReader::new(connect(chat.socket_addr("tcp")));
    let mut line = String::new();
    member.read_line(&mut line).expect("welcome");
    for _ in 0..100 {
        write_all(member.get_mut(), b"traffic\n");
    }

    server.signal(libc::SIGTERM);
    // No new connections once the listeners are closed.
    let deadline = Instant::now() + STEP;
    while TcpStream::connect(plain).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Exit 0 within the shutdown timeout (plus start-up slack), even with
    // a reader that never reads again.
    assert!(server.wait().success(), "file_server exits 0");

    for reader in readers {
        let (i, got, reset) = reader.join().expect("reader");
        if i % 2 == 0 {
            assert!(got == content || reset, "plain reader {i}: cut without a reset");
        } else {
            let (length, body) = http_body(&got);
            assert!(
                body.len() == length || reset,
                "http reader {i}: cut without a reset"
            );
            assert!(body[..] == content[..body.len()]);
        }
    }
    for (i, mut client) in clients.into_iter().enumerate() {
        let status = client.wait().expect("file_client exits");
        let path = out.join(format!("copy{i}.bin"));
        if status.success() {
            assert!(
                std::fs::read(&path).expect("saved") == content,
                "copy{i} is whole"
            );
        } else {
            assert!(!path.exists(), "a failed download left copy{i}.bin behind");
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .expect("out")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|name| !name.starts_with("copy"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let (_, _) = read_all(&mut stalled);

    // Chat shuts down as well, with its traffic in flight.
    let mut chat = chat;
    assert!(chat.terminate().success(), "chat exits 0");
}

#[test]
fn a_client_still_naming_its_file_at_shutdown_is_reset_not_given_an_empty_file() {
    let dir = TempDir::new("disk-unnamed");
    std::fs::write(dir.0.join("f.txt"), b"content").expect("file");
    let mut server = serve(&dir.0, &[]);
    let baseline = server.fd_count();
    let mut waiting = connect(server.socket_addr("tcp"));
    // Accepted once the server holds one more descriptor.
    let deadline = Instant::now() + STEP;
    while server.fd_count() <= baseline {
        assert!(Instant::now() < deadline, "never accepted");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.signal(libc::SIGTERM);
    let mut buf = [0u8; 16];
    match waiting.read(&mut buf) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        Ok(n) => panic!("a clean end after {n} bytes reads as a file"),
    }
    assert!(server.wait().success());
}
