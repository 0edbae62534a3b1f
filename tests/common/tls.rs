//! TLS from the outside, for the tests of the servers' `--tls` and
//! `--https` listeners: certificates made with the `openssl` CLI, and a TLS
//! client that is a real, independent implementation (Python's `ssl`, that
//! is OpenSSL), driven through pipes with every wait bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::{TempDir, STEP};

/// The `openssl` binary (`.ci/run` installs it).
pub const OPENSSL: &str = "/usr/bin/openssl";
/// The Python that runs the TLS clients (`.ci/run` installs it).
pub const PYTHON: &str = "python3";

/// A self-signed ECDSA P-256 certificate for `localhost` and `127.0.0.1`
/// with its key, and a second, unrelated pair (for a key that does not
/// match), in a temp dir of their own that is removed on drop.
pub struct Certs {
    /// The certificate (PEM), also the CA file a client trusts.
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Another certificate, for another key.
    pub other_cert: PathBuf,
    /// The other certificate's key: not `cert`'s.
    pub other_key: PathBuf,
    dir: TempDir,
}

impl Certs {
    /// Makes both pairs under a fresh temp dir named after `tag`.
    #[track_caller]
    pub fn new(tag: &str) -> Certs {
        assert!(
            Path::new(OPENSSL).exists(),
            "{OPENSSL} is missing: install openssl (.ci/run does)"
        );
        let dir = TempDir::new(&format!("tls-{tag}"));
        let (cert, key) = self_signed(&dir.0, "");
        let (other_cert, other_key) = self_signed(&dir.0, "other-");
        Certs {
            cert,
            key,
            other_cert,
            other_key,
            dir,
        }
    }

    /// The temp dir the files are in (removed with `self`).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// `--cert CERT --key KEY`, as arguments.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--cert".into(),
            self.cert.to_str().expect("utf-8 temp path").into(),
            "--key".into(),
            self.key.to_str().expect("utf-8 temp path").into(),
        ]
    }
}

/// `PREFIXcert.pem` and `PREFIXkey.pem` in `dir`: a self-signed end-entity
/// certificate (not a CA) for `localhost` and `127.0.0.1`, valid two days.
#[track_caller]
fn self_signed(dir: &Path, prefix: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{prefix}cert.pem"));
    let key = dir.join(format!("{prefix}key.pem"));
    let mut command = Command::new(OPENSSL);
    command
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
    let out = run_bounded(&mut command, STEP);
    assert!(
        out.status.success() && cert.exists() && key.exists(),
        "openssl req failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Runs `command` to its end with stdin closed and stdout and stderr
/// captured; one still running after `limit` is killed (and its status
/// then says so).
#[track_caller]
pub fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    // Drain both pipes meanwhile, so a chatty child cannot block on them.
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

/// The TLS client: stdin goes to the server, what the server sends comes
/// out on stdout, and events are lines on stderr: `connected VERSION ALPN
/// LOCAL_ADDR` once the handshake is done (the certificate verified against
/// the CA file for the name), then at the end one of `eof clean`
/// (close_notify), `eof ragged` (a TCP close without close_notify), `eof
/// reset`, `error ...` or `timeout` (nothing happened for TIMEOUT
/// seconds). One thread, non-blocking, so reading and writing go on at once.
const BRIDGE: &str = r#"
import os, select, socket, ssl, sys
host, port, cafile, name, alpn, timeout = sys.argv[1:7]
timeout = float(timeout)
def event(*words):
    print(*words, file=sys.stderr, flush=True)
ctx = ssl.create_default_context(cafile=cafile)
if alpn != "-":
    ctx.set_alpn_protocols(alpn.split(","))
try:
    raw = socket.create_connection((host, int(port)), timeout=timeout)
    s = ctx.wrap_socket(raw, server_hostname=name, suppress_ragged_eofs=False)
except Exception as e:
    event("error", type(e).__name__, str(e).replace("\n", " "))
    sys.exit(1)
local = s.getsockname()
event("connected", s.version(), s.selected_alpn_protocol() or "-", "%s:%d" % (local[0], local[1]))
s.setblocking(False)
out = b""
stdin_open = True
def emit(data):
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]
while True:
    if s.pending() == 0:
        rl = [s]
        if stdin_open and not out:
            rl.append(0)
        r, w, _ = select.select(rl, [s] if out else [], [], timeout)
        if not r and not w:
            event("timeout")
            sys.exit(3)
        if 0 in r:
            data = os.read(0, 1 << 16)
            if data:
                out = data
            else:
                stdin_open = False
    try:
        if out:
            try:
                # A retry after WantWrite passes the same bytes, as OpenSSL needs.
                out = out[s.send(out[:1 << 14]):]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        while True:
            data = s.recv(1 << 16)
            if not data:
                event("eof", "clean")
                sys.exit(0)
            emit(data)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        pass
    except ssl.SSLEOFError:
        event("eof", "ragged")
        sys.exit(0)
    except (ConnectionResetError, BrokenPipeError):
        event("eof", "reset")
        sys.exit(0)
    except Exception as e:
        event("error", type(e).__name__, str(e).replace("\n", " "))
        sys.exit(1)
"#;

/// A TLS connection through Python's `ssl` (see [`BRIDGE`]): it reads all
/// the time, so a large echo can go both ways at once; every read here is
/// bounded by [`STEP`].
pub struct TlsClient {
    child: Child,
    stdin: Option<ChildStdin>,
    data: Receiver<Vec<u8>>,
    events: Receiver<String>,
    buffered: Vec<u8>,
    /// The protocol version (`TLSv1.3`, `TLSv1.2`).
    pub version: String,
    /// The protocol agreed by ALPN, or `-`.
    pub alpn: String,
    /// The client's own address, `ip:port` (a chat nick).
    pub local_addr: String,
}

impl TlsClient {
    /// Connects to `addr` trusting `certs.cert`, verifying the name
    /// `localhost`, without ALPN; panics if the handshake fails.
    #[track_caller]
    pub fn connect(addr: SocketAddr, certs: &Certs) -> TlsClient {
        TlsClient::connect_with(addr, &certs.cert, "localhost", &[])
            .unwrap_or_else(|event| panic!("TLS connect to {addr}: {event}"))
    }

    /// Connects to `addr` trusting `cafile` for `server_name`, offering
    /// `alpn`: the client, or the event that ended it before its handshake
    /// was done (`error ...`).
    #[track_caller]
    pub fn connect_with(
        addr: SocketAddr,
        cafile: &Path,
        server_name: &str,
        alpn: &[&str],
    ) -> Result<TlsClient, String> {
        let alpn = if alpn.is_empty() {
            "-".to_string()
        } else {
            alpn.join(",")
        };
        let mut child = Command::new(PYTHON)
            .arg("-c")
            .arg(BRIDGE)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(cafile)
            .arg(server_name)
            .arg(alpn)
            .arg(STEP.as_secs().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {PYTHON}: {e}"));
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (data_tx, data) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0; 1 << 16];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if data_tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let (event_tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if event_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut client = TlsClient {
            child,
            stdin,
            data,
            events,
            buffered: Vec::new(),
            version: String::new(),
            alpn: String::new(),
            local_addr: String::new(),
        };
        let first = client.event();
        let words: Vec<&str> = first.split(' ').collect();
        match words[..] {
            ["connected", version, alpn, local] => {
                client.version = version.to_string();
                client.alpn = alpn.to_string();
                client.local_addr = local.to_string();
                Ok(client)
            }
            _ => Err(first),
        }
    }

    /// The next event line (`eof clean`, ...), within [`STEP`]; a Python
    /// traceback comes whole.
    #[track_caller]
    pub fn event(&mut self) -> String {
        match self.events.recv_timeout(STEP) {
            Ok(line) if line.starts_with("Traceback") => {
                let mut all = line;
                while let Ok(more) = self.events.recv_timeout(Duration::from_millis(200)) {
                    all.push('\n');
                    all.push_str(&more);
                }
                all
            }
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("no event from the TLS client within {STEP:?}"),
            Err(RecvTimeoutError::Disconnected) => "exited".to_string(),
        }
    }

    /// Sends `data` (blocks while the client is not taking it, at most
    /// until the client's own idle timeout ends it).
    #[track_caller]
    pub fn send(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("input still open");
        stdin.write_all(data).expect("write to the TLS client");
        stdin.flush().expect("flush to the TLS client");
    }

    /// The input side, for a thread of its own to write a lot through.
    pub fn take_input(&mut self) -> ChildStdin {
        self.stdin.take().expect("input still open")
    }

    /// Ends the input: nothing more is sent (the connection stays open).
    pub fn close_input(&mut self) {
        self.stdin = None;
    }

    /// Waits for more data, at most until `deadline`: false at the end.
    #[track_caller]
    fn fill(&mut self, deadline: Instant, what: &str) -> bool {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.data.recv_timeout(wait) {
            Ok(chunk) => {
                self.buffered.extend_from_slice(&chunk);
                true
            }
            Err(RecvTimeoutError::Disconnected) => false,
            Err(RecvTimeoutError::Timeout) => panic!(
                "TLS client: timed out waiting for {what} ({} bytes buffered)",
                self.buffered.len()
            ),
        }
    }

    /// Exactly `n` bytes, within `limit`.
    #[track_caller]
    pub fn read_exact_within(&mut self, n: usize, limit: Duration) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        while self.buffered.len() < n {
            if !self.fill(deadline, &format!("{n} bytes")) {
                let end = self.event();
                panic!(
                    "TLS connection ended ({end}) after {} of {n} bytes",
                    self.buffered.len()
                );
            }
        }
        self.buffered.drain(..n).collect()
    }

    /// Exactly `n` bytes, within [`STEP`].
    #[track_caller]
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        self.read_exact_within(n, STEP)
    }

    /// The next line, without its newline.
    #[track_caller]
    pub fn line(&mut self) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(end) = self.buffered.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffered.drain(..=end).collect();
                return String::from_utf8_lossy(&line[..end]).into_owned();
            }
            if !self.fill(deadline, "a line") {
                let end = self.event();
                panic!(
                    "TLS connection ended ({end}) while a line was expected; got {:?}",
                    String::from_utf8_lossy(&self.buffered)
                );
            }
        }
    }

    /// Asserts the next line is `want`.
    #[track_caller]
    pub fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want);
    }

    /// Everything up to the end of the connection, and how it ended (the
    /// last event: `eof clean` when the server sent close_notify).
    #[track_caller]
    pub fn read_to_end(&mut self) -> (Vec<u8>, String) {
        let deadline = Instant::now() + STEP;
        while self.fill(deadline, "the end of the connection") {}
        let end = self.event();
        (std::mem::take(&mut self.buffered), end)
    }

    /// Whether the client is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for TlsClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real ClientHello (one TLS record, or more) as Python's `ssl` sends it
/// for `localhost`, made without a server: for clients that stop or reset
/// partway through one.
#[track_caller]
pub fn client_hello() -> Vec<u8> {
    const SCRIPT: &str = r#"
import ssl, sys
ctx = ssl.create_default_context()
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
sys.stdout.buffer.write(outgoing.read())
"#;
    let out = run_bounded(Command::new(PYTHON).args(["-c", SCRIPT]), STEP);
    assert!(
        out.status.success(),
        "ClientHello from {PYTHON}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hello = out.stdout;
    assert!(
        hello.len() > 50 && hello[0] == 0x16,
        "a handshake record: {hello:02x?}"
    );
    hello
}

/// How [`half_close`] sends its close_notify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseNotify {
    /// After the answer to the data has come: a record of its own.
    AfterAnswer,
    /// In the same write as the data: the server reads both at once.
    WithData,
}

/// The TLS half-close (RFC 8446 §6.1): sends `data`, then close_notify
/// (`how`), and keeps reading. What came back (everything, `answer_len`
/// bytes of it before the close_notify when `AfterAnswer`), and how the
/// connection ended: `eof clean` (the server's close_notify), `eof
/// ragged`, or `timeout` (still open 3 s after the close_notify).
#[track_caller]
pub fn half_close(
    addr: SocketAddr,
    certs: &Certs,
    data: &[u8],
    answer_len: usize,
    how: CloseNotify,
) -> (Vec<u8>, String) {
    const SCRIPT: &str = r#"
import os, socket, ssl, sys
host, port, cafile, data, answer_len, together = sys.argv[1:7]
data, answer_len, together = bytes.fromhex(data), int(answer_len), together == "1"
ctx = ssl.create_default_context(cafile=cafile)
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
raw = socket.create_connection((host, int(port)), timeout=3)
def pump():
    chunk = raw.recv(1 << 16)
    if chunk:
        incoming.write(chunk)
    else:
        incoming.write_eof()
    return chunk
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        raw.sendall(outgoing.read())
        if not pump():
            sys.exit("closed during the handshake")
raw.sendall(outgoing.read())
got = b""
def close_notify():
    try:
        tls.unwrap()
    except ssl.SSLWantReadError:
        pass
if data:
    tls.write(data)
if together:
    close_notify()
raw.sendall(outgoing.read())
sent = together
end = None
try:
    while end is None:
        if not sent and len(got) >= answer_len:
            close_notify()
            raw.sendall(outgoing.read())
            sent = True
        try:
            chunk = tls.read(1 << 16)
            if not chunk:
                end = "eof clean"
            got += chunk
        except ssl.SSLWantReadError:
            if not pump():
                end = "eof ragged"
        except ssl.SSLZeroReturnError:
            end = "eof clean"
        except ssl.SSLEOFError:
            end = "eof ragged"
except socket.timeout:
    end = "timeout"
except ConnectionResetError:
    end = "eof reset"
os.write(1, got)
print(end, file=sys.stderr)
"#;
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    let together = if how == CloseNotify::WithData { "1" } else { "0" };
    let out = run_bounded(
        Command::new(PYTHON)
            .args(["-c", SCRIPT, &addr.ip().to_string(), &addr.port().to_string()])
            .arg(&certs.cert)
            .args([hex.as_str(), &answer_len.to_string(), together]),
        STEP,
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the half-closing TLS client failed: {log}");
    (out.stdout, log.trim_end().to_string())
}
