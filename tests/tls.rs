//! The servers' TLS listeners from the outside (the contract's "Across the
//! servers: cores, TLS, the admin port"; docs/programs.md once documented
//! there): `echo --tls`, `chat --tls`, `file_server --tls` (the plain file
//! protocol) and `file_server --https`, each driven by real clients that
//! are not rustls: `openssl s_client`, Python's `ssl` (OpenSSL), `curl` and
//! `wget`, against a self-signed certificate made by the `openssl` CLI for
//! the test. Bulk echo and downloads are byte-exact; a client's
//! close_notify is its FIN and the server ends with its own; handshakes
//! that stall are cut at `--handshake-timeout`, bytes that are not TLS at
//! once, and neither, nor a client that resets halfway, disturbs anyone
//! else; a client that does not read costs the server no memory; bad
//! certificate and key files are one line naming the file.
mod common;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::chat::Member;
use common::tls::{client_hello, half_close, run_bounded, Certs, CloseNotify, TlsClient, OPENSSL, PYTHON};
use common::*;

/// The real curl binary.
const CURL: &str = "/usr/bin/curl";
/// The real wget binary.
const WGET: &str = "/usr/bin/wget";

/// Starts example `name` with `args`, the certificate flags of `certs`
/// after them, and waits for `announces` announce lines.
#[track_caller]
fn start(name: &str, args: &[&str], certs: &Certs, announces: usize) -> ServerProcess {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(certs.args());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    ServerProcess::start(name, &all, announces)
}

/// echo on a plain TCP port and a TLS port, with `extra` flags.
#[track_caller]
fn echo(certs: &Certs, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--tcp", "127.0.0.1:0", "--tls", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    start("echo", &args, certs, 2)
}

/// A child process killed (and reaped) when dropped, even on a failure.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines of a child's stdout, as they come.
fn lines_of(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads from a raw TCP client until the server closes it, for at most
/// `limit`: what came, and `eof` or `reset`.
#[track_caller]
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, &'static str) {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, "eof"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, "reset"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("still open after {limit:?} ({} bytes came)", got.len())
            }
            Err(e) => panic!("read: {e}"),
        }
        assert!(Instant::now() < deadline, "still sending after {limit:?}");
    }
}

// ---------------------------------------------------------------- echo

/// `openssl s_client` against `addr` at `version` (`-tls1_2`, `-tls1_3`):
/// each of `lines` must come back; the client's stderr on failure.
fn s_client_echoes(addr: &str, certs: &Certs, version: &str, lines: &[&str]) -> Result<(), String> {
    let child = Command::new(OPENSSL)
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .args([
            "-verify_hostname",
            "localhost",
            "-verify_return_error",
            "-quiet",
            version,
        ])
        .arg("-CAfile")
        .arg(&certs.cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run {OPENSSL}: {e}"))?;
    let mut child = Reaped(child);
    let mut stdin = child.0.stdin.take().expect("piped stdin");
    let mut stderr = child.0.stderr.take().expect("piped stderr");
    let rx = lines_of(child.0.stdout.take().expect("piped stdout"));
    let mut failure = None;
    for &line in lines {
        if let Err(e) = writeln!(stdin, "{line}") {
            failure = Some(format!("write {line:?}: {e}"));
            break;
        }
        match rx.recv_timeout(STEP) {
            Ok(back) if back == line => {}
            other => {
                failure = Some(format!("sent {line:?}, got {other:?}"));
                break;
            }
        }
    }
    drop(stdin);
    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut log = String::new();
    let _ = stderr.read_to_string(&mut log);
    match failure {
        None => Ok(()),
        Some(why) => Err(format!("s_client {version}: {why}; its stderr: {log}")),
    }
}

#[test]
fn echo_answers_openssl_s_client_at_tls_1_2_and_1_3() {
    let certs = Certs::new("sclient");
    let server = echo(&certs, &[]);
    let addr = server.addr("tls");
    for version in ["-tls1_2", "-tls1_3"] {
        s_client_echoes(&addr, &certs, version, &["first line", "second line", ""])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // The plain listener of the same process is plain.
    let mut plain = connect(server.socket_addr("tcp"));
    write_all(&mut plain, b"plain\n");
    assert_eq!(read_exact(&mut plain, 6), b"plain\n");
}

#[test]
fn echo_over_tls_on_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let certs = Certs::new("ipv6");
    let server = start("echo", &["--tls", "[::1]:0"], &certs, 1);
    let addr = server.socket_addr("tls");
    assert!(addr.is_ipv6(), "announced {addr}");
    // The certificate is for the name localhost, whatever the address.
    let mut client = TlsClient::connect(addr, &certs);
    client.send(b"over v6\n");
    client.expect("over v6");
}

#[test]
fn echo_sends_back_16_mib_byte_identical_while_it_is_still_sending() {
    const SIZE: usize = 16 * 1024 * 1024;
    let certs = Certs::new("bulk");
    let server = echo(&certs, &[]);
    let data = pattern(SIZE, 51);
    let mut client = TlsClient::connect(server.socket_addr("tls"), &certs);
    assert_eq!(client.version, "TLSv1.3");
    assert_eq!(client.alpn, "-", "echo offers no ALPN");
    let mut input = client.take_input();
    let to_send = data.clone();
    // Written and read at once: the echo comes back while more goes out.
    let writer = std::thread::spawn(move || input.write_all(&to_send).map(|()| input));
    let got = client.read_exact_within(SIZE, Duration::from_secs(60));
    let mut input = writer.join().expect("writer thread").expect("all 16 MiB written");
    assert_same_bytes(&got, &data, "16 MiB echoed over TLS");
    // A line after the bulk still comes back.
    input.write_all(b"\nafter the bulk\n").expect("write");
    input.flush().expect("flush");
    client.expect("");
    client.expect("after the bulk");
}

#[test]
fn a_close_notify_ends_the_echo_as_a_fin_does() {
    let certs = Certs::new("halfclose");
    let server = echo(&certs, &[]);
    let addr = server.socket_addr("tls");
    // The client's close_notify is its FIN: the server sends what it owes,
    // then its own close_notify.
    assert_eq!(
        half_close(addr, &certs, b"", 0, CloseNotify::AfterAnswer),
        (Vec::new(), "eof clean".to_string()),
        "close_notify right after the handshake"
    );
    assert_eq!(
        half_close(addr, &certs, b"first\n", 6, CloseNotify::AfterAnswer),
        (b"first\n".to_vec(), "eof clean".to_string()),
        "close_notify in a record of its own, after the echo came back"
    );
    // Data and close_notify in one segment: one read of the socket takes
    // both, and the end of input must not wait for another event.
    assert_eq!(
        half_close(addr, &certs, b"second\n", 7, CloseNotify::WithData),
        (b"second\n".to_vec(), "eof clean".to_string()),
        "close_notify in the same write as the data"
    );
}

/// Sends over TLS without reading until the server stops taking input
/// (no progress for 300 ms), says `stalled SENT` on stdout, waits for a
/// line on stdin, then reads the echo back and says `read N`.
const SEND_WITHOUT_READING: &str = r#"
import select, socket, ssl, sys, time
host, port, cafile = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=cafile)
s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname="localhost")
s.setblocking(False)
block = bytes(range(256)) * 64
sent = 0
give_up = time.monotonic() + 10
while time.monotonic() < give_up:
    try:
        sent += s.send(block)
    except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
        if not select.select([], [s], [], 0.3)[1]:
            break
print("stalled", sent, flush=True)
sys.stdin.readline()
s.setblocking(True)
s.settimeout(10)
got = 0
while got < sent:
    chunk = s.recv(1 << 16)
    if not chunk:
        break
    got += len(chunk)
print("read", got, flush=True)
"#;

#[test]
fn a_tls_client_that_sends_but_never_reads_is_not_read_from_and_gets_it_all_later() {
    let certs = Certs::new("noread");
    let server = echo(&certs, &[]);
    let tls_addr = server.socket_addr("tls");
    // Once over TLS before measuring, so TLS's own allocations are in.
    let mut warm = TlsClient::connect(tls_addr, &certs);
    warm.send(b"warm\n");
    warm.expect("warm");
    let before_kib = server.rss_kib();

    let child = Command::new(PYTHON)
        .args(["-c", SEND_WITHOUT_READING, "127.0.0.1"])
        .arg(tls_addr.port().to_string())
        .arg(&certs.cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python3");
    let mut pusher = Reaped(child);
    let mut go = pusher.0.stdin.take().expect("piped stdin");
    let said = lines_of(pusher.0.stdout.take().expect("piped stdout"));
    let stalled = said
        .recv_timeout(Duration::from_secs(15))
        .expect("the client stalled");
    let sent: usize = stalled
        .strip_prefix("stalled ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("client said {stalled:?}"));
    // What the kernel's buffers hold both ways, and about 64 KiB in the
    // server; a server that went on reading would take far more.
    assert!(
        sent < 48 * 1024 * 1024,
        "the server took {sent} bytes from a client that reads nothing"
    );
    let growth_kib = server.rss_kib().saturating_sub(before_kib);
    assert!(
        growth_kib < 8 * 1024,
        "server RSS grew by {growth_kib} KiB for a client that does not read"
    );
    // Others are served meanwhile.
    warm.send(b"still here\n");
    warm.expect("still here");
    // Then it reads, and every byte it sent comes back.
    writeln!(go).expect("tell the client to read");
    assert_eq!(
        said.recv_timeout(Duration::from_secs(15))
            .expect("the client read the echo"),
        format!("read {sent}")
    );
}

/// A TLS client whose every write is `PIECE` bytes (with `TCP_NODELAY`
/// and a 2 ms pause), the ClientHello included: sends a line, prints the
/// version and the line that came back.
const FRAGMENTED: &str = r#"
import socket, ssl, sys, time
host, port, cafile, piece = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=cafile)
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
raw = socket.create_connection((host, port), timeout=10)
raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def send(data):
    for i in range(0, len(data), piece):
        raw.sendall(data[i:i + piece])
        time.sleep(0.002)
def pump():
    chunk = raw.recv(1 << 16)
    if not chunk:
        sys.exit("closed by the server")
    incoming.write(chunk)
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        send(outgoing.read())
        pump()
send(outgoing.read())
line = b"a record in pieces\n"
tls.write(line)
send(outgoing.read())
got = b""
while len(got) < len(line):
    try:
        got += tls.read(1 << 16)
    except ssl.SSLWantReadError:
        pump()
print(tls.version(), got.decode().strip())
"#;

#[test]
fn a_client_hello_and_records_that_come_a_few_bytes_at_a_time_are_put_together() {
    let certs = Certs::new("fragments");
    let server = echo(&certs, &[]);
    let port = server.socket_addr("tls").port().to_string();
    let out = run_bounded(
        Command::new(PYTHON)
            .args(["-c", FRAGMENTED, "127.0.0.1", &port])
            .arg(&certs.cert)
            .arg("9"),
        STEP,
    );
    assert!(
        out.status.success(),
        "the fragmenting client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "TLSv1.3 a record in pieces"
    );
}

#[test]
fn a_stalled_handshake_is_cut_after_the_timeout_while_others_are_served() {
    let certs = Certs::new("stall");
    let server = echo(&certs, &["--handshake-timeout", "1"]);
    let tls_addr = server.socket_addr("tls");
    // Done with its handshake before the others stall: the timeout is for
    // handshakes only, so it is still served after it.
    let mut done = TlsClient::connect(tls_addr, &certs);
    done.send(b"before\n");
    done.expect("before");

    let hello = client_hello();
    let start = Instant::now();
    let stalls = [
        ("silent after connecting", Vec::new()),
        ("10 bytes of a ClientHello", hello[..10].to_vec()),
        ("a whole ClientHello, then nothing", hello.clone()),
    ];
    let stalled: Vec<_> = stalls
        .into_iter()
        .map(|(what, sent)| {
            let mut stream = connect(tls_addr);
            let connected = Instant::now();
            write_all(&mut stream, &sent);
            let closed = std::thread::spawn(move || {
                let (_, how) = read_until_closed(&mut stream, Duration::from_secs(5));
                (connected.elapsed(), how)
            });
            (what, closed)
        })
        .collect();

    // Meanwhile the plain listener of the same process echoes.
    let mut plain = connect(server.socket_addr("tcp"));
    write_all(&mut plain, b"plain while they stall\n");
    assert_eq!(read_exact(&mut plain, 23), b"plain while they stall\n");
    let echoed_at = start.elapsed();

    for (what, closed) in stalled {
        let (after, how) = closed
            .join()
            .unwrap_or_else(|_| panic!("{what}: not closed within 5 s of a 1 s handshake timeout"));
        assert!(
            after >= Duration::from_millis(500) && after < Duration::from_secs(5),
            "{what}: closed ({how}) {after:?} after connecting, with --handshake-timeout 1"
        );
        assert!(
            echoed_at < after,
            "{what}: the plain echo came at {echoed_at:?}, the close at {after:?}"
        );
    }
    write_all(&mut plain, b"after\n");
    assert_eq!(read_exact(&mut plain, 6), b"after\n");
    done.send(b"after the others were cut\n");
    done.expect("after the others were cut");
}

#[test]
fn bytes_that_are_not_tls_are_closed_at_once_and_a_good_client_is_served_after() {
    let certs = Certs::new("garbage");
    // A long handshake timeout: these must be closed for what they sent.
    let server = echo(&certs, &["--handshake-timeout", "30"]);
    let tls_addr = server.socket_addr("tls");
    let mut noise = pattern(4096, 3);
    noise[0] = 0x42;
    let cases: [(&str, Vec<u8>); 5] = [
        (
            "plaintext HTTP",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        ("an SSH banner", b"SSH-2.0-OpenSSH_9.2p1\r\n".to_vec()),
        ("64 zero bytes", vec![0; 64]),
        ("4 KiB of noise", noise),
        (
            "a handshake record header with a length past any record's",
            b"\x16\x03\x01\xff\xff".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let start = Instant::now();
        let mut stream = connect(tls_addr);
        let _ = stream.write_all(&bytes);
        let (answer, how) = read_until_closed(&mut stream, Duration::from_secs(5));
        let after = start.elapsed();
        assert!(
            after < Duration::from_secs(3),
            "{what}: closed ({how}) only after {after:?}"
        );
        assert!(
            answer.is_empty() || answer[0] == 0x15,
            "{what}: the server answered {answer:02x?}, not a TLS alert"
        );
    }
    let mut good = TlsClient::connect(tls_addr, &certs);
    good.send(b"still served\n");
    good.expect("still served");
}

#[test]
fn clients_that_reset_or_leave_mid_handshake_leave_the_server_serving() {
    let certs = Certs::new("reset");
    let mut server = echo(&certs, &["--handshake-timeout", "30"]);
    let tls_addr = server.socket_addr("tls");
    let hello = client_hello();
    for cut in [1, 5, 10, hello.len() / 2, hello.len() - 1, hello.len()] {
        for _ in 0..3 {
            let mut stream = connect(tls_addr);
            write_all(&mut stream, &hello[..cut]);
            reset_on_close(&stream);
        }
    }
    // One that gets the server's first flight, then resets.
    let mut stream = connect(tls_addr);
    write_all(&mut stream, &hello);
    let mut first = [0; 1];
    stream.read_exact(&mut first).expect("the server's first flight");
    assert_eq!(first[0], 0x16, "a handshake record");
    reset_on_close(&stream);
    drop(stream);
    // One that half-closes mid-handshake: nothing more can come, so it is
    // closed at once, not at the handshake timeout.
    let mut stream = connect(tls_addr);
    write_all(&mut stream, &hello[..10]);
    stream.shutdown(Shutdown::Write).expect("half-close");
    let start = Instant::now();
    let (_, how) = read_until_closed(&mut stream, Duration::from_secs(5));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "a client that left mid-handshake was closed ({how}) only after {:?}",
        start.elapsed()
    );

    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "the server exited: {:?}",
        server.child.try_wait()
    );
    let mut good = TlsClient::connect(tls_addr, &certs);
    good.send(b"next client\n");
    good.expect("next client");
    let mut plain = connect(server.socket_addr("tcp"));
    write_all(&mut plain, b"plain\n");
    assert_eq!(read_exact(&mut plain, 6), b"plain\n");
}

// ------------------------------------------------------------ bad files

/// Runs `server` with `args` (no RUST_LOG) and requires exit `code`, no
/// announce, and exactly one line on stderr, naming `names` if given.
#[track_caller]
fn expect_refusal(server: &str, args: &[String], code: i32, names: Option<&Path>) {
    let out: Output = run_bounded(
        Command::new(example_path(server))
            .args(args)
            .env_remove("RUST_LOG"),
        STEP,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{server} {args:?}: exit {}, stderr {stderr:?}",
        out.status
    );
    assert!(
        out.stdout.is_empty(),
        "{server} {args:?} announced {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{server} {args:?}: one line on stderr, got {stderr:?}"
    );
    if let Some(path) = names {
        let path = path.to_str().expect("utf-8 temp path");
        assert!(
            stderr.contains(path),
            "{server} {args:?}: stderr {stderr:?} does not name {path}"
        );
    }
}

#[test]
fn unusable_certificate_or_key_files_are_one_line_naming_the_file() {
    let certs = Certs::new("badfiles");
    let dir = certs.dir();
    let missing_cert = dir.join("missing-cert.pem");
    let missing_key = dir.join("missing-key.pem");
    let junk_cert = dir.join("junk-cert.pem");
    let junk_key = dir.join("junk-key.pem");
    let dir_key = dir.join("a-directory-key.pem");
    std::fs::write(&junk_cert, b"not a certificate\n").expect("junk");
    std::fs::write(&junk_key, b"not a key\n").expect("junk");
    std::fs::create_dir(&dir_key).expect("directory");
    let root = dir.to_str().expect("utf-8 temp path");
    let path = |p: &Path| p.to_str().expect("utf-8 temp path").to_string();

    let servers: [(&str, &str, &[&str]); 4] = [
        ("echo", "--tls", &[]),
        ("chat", "--tls", &[]),
        ("file_server", "--tls", &["--root", root]),
        ("file_server", "--https", &["--root", root]),
    ];
    for (server, flag, extra) in servers {
        let with = |cert: Option<&Path>, key: Option<&Path>| {
            let mut args = vec![flag.to_string(), "127.0.0.1:0".to_string()];
            args.extend(extra.iter().map(|a| a.to_string()));
            if let Some(cert) = cert {
                args.extend(["--cert".to_string(), path(cert)]);
            }
            if let Some(key) = key {
                args.extend(["--key".to_string(), path(key)]);
            }
            args
        };
        let (cert, key) = (Some(certs.cert.as_path()), Some(certs.key.as_path()));
        let refusals = [
            (with(Some(&missing_cert), key), &missing_cert),
            (with(cert, Some(&missing_key)), &missing_key),
            (with(Some(&junk_cert), key), &junk_cert),
            (with(cert, Some(&junk_key)), &junk_key),
            (with(cert, Some(&dir_key)), &dir_key),
            // A PEM file with no key in it.
            (with(cert, cert), &certs.cert),
            // A key, but not the certificate's.
            (with(cert, Some(&certs.other_key)), &certs.other_key),
        ];
        for (args, named) in &refusals {
            expect_refusal(server, args, 1, Some(named));
        }
        let mut bad_timeout = with(cert, key);
        bad_timeout.extend(["--handshake-timeout".to_string(), "soon".to_string()]);
        for args in [with(None, None), with(cert, None), with(None, key), bad_timeout] {
            expect_refusal(server, &args, 2, None);
        }
    }
}

// ---------------------------------------------------------------- chat

fn chat_over_tls_and_tcp_is_one_room(threads: usize) {
    let certs = Certs::new(&format!("chat{threads}"));
    let threads = threads.to_string();
    let args = [
        "--tcp",
        "127.0.0.1:0",
        "--tls",
        "127.0.0.1:0",
        "--threads",
        &threads,
    ];
    let server = start("chat", &args, &certs, 2);
    let mut secure = TlsClient::connect(server.socket_addr("tls"), &certs);
    let nick = secure.local_addr.clone();
    secure.expect(&format!("* welcome {nick}"));
    let mut plain = Member::join(&server);
    secure.expect(&format!("* {} joined", plain.nick));

    plain.say("hello from tcp");
    secure.expect(&format!("{}: hello from tcp", plain.nick));
    secure.send(b"hello from tls\n");
    plain.expect(&format!("{nick}: hello from tls"));

    secure.send(b"/nick secure\n");
    secure.expect(&format!("* {nick} is now secure"));
    plain.expect(&format!("* {nick} is now secure"));
    plain.say("/who");
    let who = plain.line();
    let mut online: Vec<&str> = who
        .strip_prefix("* online: ")
        .unwrap_or_else(|| panic!("/who answer {who:?}"))
        .split(' ')
        .collect();
    online.sort_unstable();
    let mut want = vec!["secure", plain.nick.as_str()];
    want.sort_unstable();
    assert_eq!(online, want);

    secure.send(b"/quit\n");
    secure.expect("* bye");
    let (rest, end) = secure.read_to_end();
    assert_eq!(rest, b"", "nothing after * bye");
    assert_eq!(end, "eof clean", "the server ends with close_notify");
    plain.expect("* secure left");
}

common::chat::at_1_and_2_threads!(chat_over_tls_and_tcp_is_one_room);

#[test]
fn chat_members_see_no_one_join_before_a_tls_handshake_is_done() {
    let certs = Certs::new("chatjoin");
    let args = [
        "--tcp",
        "127.0.0.1:0",
        "--tls",
        "127.0.0.1:0",
        "--handshake-timeout",
        "2",
    ];
    let server = start("chat", &args, &certs, 2);
    let tls_addr = server.socket_addr("tls");
    let mut member = Member::join(&server);
    // Connected to the TLS port, not through a handshake: not in the room.
    let mut stalled = connect(tls_addr);
    let mut scanner = connect(tls_addr);
    write_all(&mut scanner, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    read_until_closed(&mut scanner, Duration::from_secs(5));
    member.expect_silence();
    member.say("/who");
    member.expect(&format!("* online: {}", member.nick));

    // Through its handshake, it joins.
    let mut secure = TlsClient::connect(tls_addr, &certs);
    let nick = secure.local_addr.clone();
    secure.expect(&format!("* welcome {nick}"));
    member.expect(&format!("* {nick} joined"));
    // The stalled one is cut at the handshake timeout, without a word.
    read_until_closed(&mut stalled, Duration::from_secs(5));
    member.expect_silence();
}

// --------------------------------------------------------- file_server

/// A file_server with a TLS listener (plain protocol) and an HTTPS one
/// over a root holding `big.bin` (5 MiB and a bit) and `hello.txt`.
struct Files {
    server: ServerProcess,
    certs: Certs,
    big: Vec<u8>,
    /// Kept only to be removed after the server is stopped.
    _root: TempDir,
}

impl Files {
    #[track_caller]
    fn start(tag: &str) -> Files {
        let certs = Certs::new(tag);
        let root = TempDir::new(&format!("tls-root-{tag}"));
        let big = pattern(5 * 1024 * 1024 + 17, 61);
        std::fs::write(root.0.join("big.bin"), &big).expect("file");
        std::fs::write(root.0.join("hello.txt"), b"hello over tls\n").expect("file");
        let root_arg = root.0.to_str().expect("utf-8 temp path").to_owned();
        let args = [
            "--tls",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--root",
            &root_arg,
        ];
        let server = start("file_server", &args, &certs, 2);
        Files {
            server,
            certs,
            big,
            _root: root,
        }
    }

    fn https_port(&self) -> u16 {
        self.server.socket_addr("https").port()
    }

    /// `https://localhost:PORT/NAME`.
    fn url(&self, name: &str) -> String {
        format!("https://localhost:{}/{name}", self.https_port())
    }

    /// Runs curl with a time limit, trusting the test's certificate and
    /// resolving `localhost` to the listener; requires success.
    #[track_caller]
    fn curl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let resolve = format!("localhost:{}:127.0.0.1", self.https_port());
        let output = run_bounded(
            Command::new(CURL)
                .args([
                    "--max-time",
                    "20",
                    "-sS",
                    "--fail",
                    "--resolve",
                    &resolve,
                    "--cacert",
                ])
                .arg(&self.certs.cert)
                .args(&args),
            Duration::from_secs(25),
        );
        assert!(
            output.status.success(),
            "curl {args:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

#[test]
fn file_server_plain_protocol_over_tls_is_byte_exact_and_ends_with_close_notify() {
    let files = Files::start("plainfiles");
    let addr = files.server.socket_addr("tls");
    // Only the listeners named: no default plain TCP port besides.
    assert_eq!(
        files.server.next_stdout_line(Duration::from_millis(200)),
        None,
        "a third listener was announced"
    );

    let mut client = TlsClient::connect(addr, &files.certs);
    assert_eq!(client.alpn, "-", "the plain protocol has no ALPN");
    client.send(b"big.bin\n");
    let (got, end) = client.read_to_end();
    assert_same_bytes(&got, &files.big, "big.bin over the plain protocol and TLS");
    assert_eq!(
        end, "eof clean",
        "a download ends with close_notify, so a cut one shows"
    );

    // The classic client's bare name, with no newline.
    let mut client = TlsClient::connect(addr, &files.certs);
    client.send(b"hello.txt");
    assert_eq!(
        client.read_to_end(),
        (b"hello over tls\n".to_vec(), "eof clean".to_string())
    );

    let mut client = TlsClient::connect(addr, &files.certs);
    client.send(b"missing.bin\n");
    assert_eq!(
        client.read_to_end(),
        (b"no_file".to_vec(), "eof clean".to_string())
    );

    // A client that half-closes (close_notify) right after its name still
    // gets the file.
    assert_eq!(
        half_close(addr, &files.certs, b"hello.txt\n", 15, CloseNotify::WithData),
        (b"hello over tls\n".to_vec(), "eof clean".to_string())
    );
}

#[test]
fn curl_downloads_over_https_with_alpn_http_1_1_byte_exact() {
    let files = Files::start("curlfull");
    let out_dir = TempDir::new("tls-curl-full-out");
    let out = out_dir.0.join("big.bin");
    // curl offers h2 and http/1.1 by ALPN: the server picks http/1.1.
    let got = files.curl([
        OsString::from("-v"),
        "-w".into(),
        "%{http_code} %{http_version}".into(),
        "-o".into(),
        out.clone().into(),
        files.url("big.bin").into(),
    ]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "200 1.1");
    let log = String::from_utf8_lossy(&got.stderr);
    assert!(
        log.lines()
            .any(|l| l.contains("ALPN") && l.contains("accepted") && l.contains("http/1.1")),
        "curl -v does not show ALPN http/1.1 accepted: {log}"
    );
    assert_same_bytes(&read_file(&out), &files.big, "curl of a 5 MiB file over HTTPS");

    // Keep-alive over TLS: two requests on one connection.
    let two = files.curl([
        "-v",
        "--http1.1",
        &files.url("hello.txt"),
        &files.url("hello.txt"),
    ]);
    assert_eq!(two.stdout, b"hello over tls\nhello over tls\n");
    let log = String::from_utf8_lossy(&two.stderr);
    assert!(
        log.contains("Re-using existing connection"),
        "curl did not reuse the connection: {log}"
    );

    let head = files.curl(["--http1.1", "-I", &files.url("big.bin")]);
    let head = String::from_utf8_lossy(&head.stdout);
    assert!(head.starts_with("HTTP/1.1 200"), "HEAD answer: {head:?}");
    let length = format!("content-length: {}", files.big.len());
    assert!(
        head.to_ascii_lowercase().lines().any(|l| l.trim_end() == length),
        "HEAD answer without {length}: {head:?}"
    );

    // Python's ssl offering h2 first gets http/1.1 too.
    let client = TlsClient::connect_with(
        files.server.socket_addr("https"),
        &files.certs.cert,
        "localhost",
        &["h2", "http/1.1"],
    )
    .unwrap_or_else(|e| panic!("TLS connect: {e}"));
    assert_eq!(client.alpn, "http/1.1");
}

#[test]
fn curl_range_and_resume_over_https_get_exactly_those_bytes() {
    let files = Files::start("curlrange");
    let out_dir = TempDir::new("tls-curl-range-out");
    let out = out_dir.0.join("part");
    let url = files.url("big.bin");
    let got = files.curl([
        OsString::from("-w"),
        "%{http_code}".into(),
        "-r".into(),
        "100-199".into(),
        "-o".into(),
        out.clone().into(),
        url.clone().into(),
    ]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "206");
    assert_same_bytes(&read_file(&out), &files.big[100..200], "curl -r 100-199");

    // What a cut download leaves behind, then `curl -C -` for the rest.
    let out = out_dir.0.join("resume.bin");
    std::fs::write(&out, &files.big[..1_234_567]).expect("partial file");
    let got = files.curl([
        OsString::from("-w"),
        "%{http_code}".into(),
        "-C".into(),
        "-".into(),
        "-o".into(),
        out.clone().into(),
        url.into(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "206",
        "status of the resumed part"
    );
    assert_same_bytes(&read_file(&out), &files.big, "curl -C - over HTTPS");
}

#[test]
fn wget_downloads_over_https_checking_the_ip_address_in_the_certificate() {
    let files = Files::start("wget");
    let out_dir = TempDir::new("tls-wget-out");
    let out = out_dir.0.join("big.bin");
    // By address: the certificate names 127.0.0.1 too.
    let url = format!("https://127.0.0.1:{}/big.bin", files.https_port());
    let mut ca = OsString::from("--ca-certificate=");
    ca.push(&files.certs.cert);
    let result = run_bounded(
        Command::new(WGET)
            .args(["--tries=1", "--timeout=20", "--no-verbose"])
            .arg(ca)
            .arg("-O")
            .arg(&out)
            .arg(&url),
        Duration::from_secs(25),
    );
    assert!(
        result.status.success(),
        "wget {url}: {}: {}",
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    assert_same_bytes(&read_file(&out), &files.big, "wget over HTTPS");
}

/// Requests `/NAME` over HTTPS, reads the head and what came with it, says
/// `started STATUS LENGTH` on stdout, then reads nothing more until a line
/// comes on stdin; then reads the rest of the body and says `read N`.
const SLOW_READER: &str = r#"
import socket, ssl, sys
host, port, cafile, name = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
raw = socket.create_connection((host, int(port)), timeout=20)
s = ctx.wrap_socket(raw, server_hostname="localhost")
s.sendall(("GET /%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % name).encode())
data = b""
while b"\r\n\r\n" not in data:
    chunk = s.recv(1 << 14)
    if not chunk:
        sys.exit("closed before the end of the head: %r" % data)
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
lines = head.decode("latin-1").split("\r\n")
length = [int(l.split(":", 1)[1]) for l in lines if l.lower().startswith("content-length:")][0]
print("started", lines[0].split(" ")[1], length, flush=True)
sys.stdin.readline()
got = len(body)
while got < length:
    chunk = s.recv(1 << 16)
    if not chunk:
        break
    got += len(chunk)
print("read", got, flush=True)
"#;

#[test]
fn a_slow_https_reader_of_64_mib_keeps_server_memory_flat_and_others_are_served() {
    const SIZE: u64 = 64 * 1024 * 1024;
    let files = Files::start("slow");
    // Sparse: 64 MiB of zeros without writing them.
    let large = std::fs::File::create(files._root.0.join("large.bin")).expect("file");
    large.set_len(SIZE).expect("64 MiB");
    drop(large);
    // Once over HTTPS before measuring, so TLS's own allocations are in.
    files.curl(["-o", "/dev/null", &files.url("hello.txt")]);
    let before_kib = files.server.rss_kib();

    let child = Command::new(PYTHON)
        .args(["-c", SLOW_READER, "127.0.0.1"])
        .arg(files.https_port().to_string())
        .arg(&files.certs.cert)
        .arg("large.bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python3");
    let mut slow = Reaped(child);
    let mut go = slow.0.stdin.take().expect("piped stdin");
    let said = lines_of(slow.0.stdout.take().expect("piped stdout"));
    assert_eq!(
        said.recv_timeout(STEP).expect("the slow reader started"),
        format!("started 200 {SIZE}")
    );

    // For about a second it reads nothing; others are served meanwhile.
    let mut peak_kib = before_kib;
    let watch = Instant::now();
    let mut served = 0;
    while watch.elapsed() < Duration::from_secs(1) {
        let out = files.curl([&files.url("hello.txt")]);
        assert_eq!(out.stdout, b"hello over tls\n");
        let mut client = TlsClient::connect(files.server.socket_addr("tls"), &files.certs);
        client.send(b"hello.txt\n");
        assert_eq!(client.read_to_end().0, b"hello over tls\n");
        served += 1;
        peak_kib = peak_kib.max(files.server.rss_kib());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served > 0);
    let growth_kib = peak_kib.saturating_sub(before_kib);
    assert!(
        growth_kib < 8 * 1024,
        "server RSS grew by {growth_kib} KiB while a client did not read a 64 MiB download"
    );

    // Then it reads on, and gets the whole body.
    writeln!(go).expect("tell the slow reader to read on");
    assert_eq!(
        said.recv_timeout(Duration::from_secs(60))
            .expect("the slow reader finished"),
        format!("read {SIZE}")
    );
}

#[test]
fn file_client_over_tls_verifies_the_name_and_leaves_no_file_when_it_does_not() {
    let files = Files::start("fileclient");
    let addr = files.server.socket_addr("tls").to_string();
    let out = TempDir::new("tls-fileclient-out");
    let cacert = files.certs.cert.to_str().expect("utf-8 temp path").to_owned();
    let run = |name: &str, to: &Path, extra: &[&str]| {
        let mut command = Command::new(example_path("file_client"));
        command
            .arg(&addr)
            .arg(name)
            .arg("-o")
            .arg(to)
            .arg("--tls")
            .args(extra);
        run_bounded(&mut command, Duration::from_secs(20))
    };

    // The certificate names 127.0.0.1 (the host of ADDR, the default name)
    // and localhost.
    let saved = out.0.join("big.bin");
    let done = run("big.bin", &saved, &["--cacert", &cacert]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_same_bytes(
        &read_file(&saved),
        &files.big,
        "big.bin through file_client --tls",
    );
    let named = out.0.join("named.bin");
    let done = run(
        "hello.txt",
        &named,
        &["--cacert", &cacert, "--server-name", "localhost"],
    );
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(read_file(&named), b"hello over tls\n");

    // A name the certificate does not carry: one line, exit 1, no file.
    let refused = out.0.join("refused.bin");
    let done = run(
        "hello.txt",
        &refused,
        &["--cacert", &cacert, "--server-name", "other.example"],
    );
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("other.example"), "{stderr}");
    assert!(
        !refused.exists(),
        "no file for a certificate that does not verify"
    );
    // Roots that do not hold the server's certificate: refused the same way.
    let other = files.certs.other_cert.to_str().expect("utf-8 temp path");
    let done = run("hello.txt", &refused, &["--cacert", other]);
    assert_eq!(
        done.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(!refused.exists());
    // A missing roots file is one line naming it.
    let missing = out.0.join("no-such-ca.pem");
    let done = run(
        "hello.txt",
        &refused,
        &["--cacert", missing.to_str().expect("utf-8")],
    );
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-ca.pem"), "{stderr}");
}

#[test]
fn chat_client_over_tls_joins_the_room_and_refuses_a_wrong_name() {
    let certs = Certs::new("chatclient");
    let server = start(
        "chat",
        &["--tcp", "127.0.0.1:0", "--tls", "127.0.0.1:0"],
        &certs,
        2,
    );
    let tls = server.socket_addr("tls").to_string();
    let cacert = certs.cert.to_str().expect("utf-8 temp path");
    let mut plain = Member::join(&server);

    let mut client = Command::new(example_path("chat_client"));
    client
        .args([tls.as_str(), "--tls", "--cacert", cacert])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Reaped(client.spawn().expect("chat_client"));
    let lines = lines_of(child.0.stdout.take().expect("piped stdout"));
    let welcome = lines.recv_timeout(STEP).expect("a welcome over TLS");
    assert!(welcome.starts_with("* welcome "), "{welcome:?}");
    let nick = welcome.trim_start_matches("* welcome ").to_owned();
    plain.expect(&format!("* {nick} joined"));
    let mut input = child.0.stdin.take().expect("piped stdin");
    input.write_all(b"hello from tls\n").expect("write");
    plain.expect(&format!("{nick}: hello from tls"));
    plain.say("hello back");
    let got = lines.recv_timeout(STEP).expect("a line from the plain member");
    assert_eq!(got, format!("{}: hello back", plain.nick));
    // The end of stdin: close_notify, FIN, the server closes; exit 0.
    drop(input);
    plain.expect(&format!("* {nick} left"));
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "chat_client did not end");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "chat_client exit {status:?}");

    // A wrong name: one line, exit 1, and the room never saw it.
    let mut wrong = Command::new(example_path("chat_client"));
    wrong.args([
        tls.as_str(),
        "--tls",
        "--cacert",
        cacert,
        "--server-name",
        "other.example",
    ]);
    let done = run_bounded(&mut wrong, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("other.example"), "{stderr}");
    plain.expect_silence();
}

#[test]
fn a_handshake_timeout_of_zero_is_a_bad_argument() {
    let certs = Certs::new("zero");
    let mut args = vec![
        "--tls".to_string(),
        "127.0.0.1:0".into(),
        "--handshake-timeout".into(),
        "0".into(),
    ];
    args.extend(certs.args());
    let mut command = Command::new(example_path("echo"));
    command.args(&args);
    let done = run_bounded(&mut command, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("more than 0"), "{stderr}");
}

#[test]
fn plaintext_http_to_the_https_port_is_closed_at_once_and_https_goes_on() {
    let files = Files::start("plainhttp");
    let https = files.server.socket_addr("https");
    let start = Instant::now();
    let mut stream = connect(https);
    write_all(&mut stream, b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (answer, how) = read_until_closed(&mut stream, Duration::from_secs(5));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "closed ({how}) only after {:?}",
        start.elapsed()
    );
    assert!(
        !answer.windows(5).any(|w| w == b"HTTP/"),
        "a plaintext request got a plaintext answer: {answer:02x?}"
    );
    let mut curl = Command::new(CURL);
    curl.args(["-sS", "--fail", "--cacert"])
        .arg(&files.certs.cert)
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", https.port()))
        .arg(files.url("hello.txt"));
    let done = run_bounded(&mut curl, Duration::from_secs(20));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(done.stdout, b"hello over tls\n");
}

/// Reads a file over TLS to its end (the server's close_notify), then
/// sends a bad record on the raw socket while the server lingers for the
/// FIN.
const BAD_RECORD_AFTER_CLOSE: &str = r#"
import socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection((host, port)), server_hostname="localhost")
s.sendall(b"hello.txt\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
raw = socket.fromfd(s.fileno(), socket.AF_INET, socket.SOCK_STREAM)
raw.sendall(b"\x17\x03\x03\x00\x20" + b"x" * 32)
raw.shutdown(socket.SHUT_WR)
raw.settimeout(5)
try:
    while raw.recv(4096):
        pass
except OSError:
    pass
print(data.decode())
"#;

#[test]
fn a_bad_record_after_our_close_notify_is_dropped_and_the_server_goes_on() {
    let files = Files::start("afterclose");
    let addr = files.server.socket_addr("tls");
    let mut python = Command::new(PYTHON);
    python
        .arg("-c")
        .arg(BAD_RECORD_AFTER_CLOSE)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(&files.certs.cert);
    let done = run_bounded(&mut python, Duration::from_secs(20));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(done.stdout, b"hello over tls\n\n");
    let mut next = TlsClient::connect(addr, &files.certs);
    next.send(b"hello.txt\n");
    assert_eq!(
        next.read_to_end(),
        (b"hello over tls\n".to_vec(), "eof clean".to_string())
    );
}
