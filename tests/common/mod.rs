//! Shared by the integration tests: a reactor on its own thread, std clients
//! with timeouts, and a clean stop that checks every source is gone.
#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use evloop::{Handle, Reactor};

pub mod chat;
pub mod http;
pub mod loadgen;
pub mod redis;
pub mod tls;

/// How long any single blocking step of a test may take before it fails.
pub const STEP: Duration = Duration::from_secs(10);

/// A reactor running on a thread of its own.
pub struct Running<T> {
    pub handle: Handle,
    pub info: T,
    thread: Option<JoinHandle<Result<usize, evloop::Error>>>,
}

/// Starts a reactor on a thread: `setup` runs there first (bind listeners,
/// register sources) and returns what the test needs to know (addresses).
#[track_caller]
pub fn start<T, F>(setup: F) -> Running<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Reactor) -> T + Send + 'static,
{
    let _ = env_logger::builder().is_test(true).try_init();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut reactor = Reactor::new()?;
        let info = setup(&mut reactor);
        tx.send((reactor.handle(), info)).expect("test waits for setup");
        reactor.run()?;
        Ok(reactor.source_count())
    });
    let (handle, info) = rx.recv_timeout(STEP).expect("reactor setup finished");
    Running {
        handle,
        info,
        thread: Some(thread),
    }
}

impl<T> Running<T> {
    /// Shuts down gracefully and returns how many sources were left after
    /// `run` returned (0 when everything closed).
    #[track_caller]
    pub fn shutdown(mut self, timeout: Duration) -> usize {
        assert!(self.handle.shutdown(timeout), "reactor still running");
        self.join()
    }

    /// Waits for `run` to return (after a stop or a shutdown).
    #[track_caller]
    pub fn join(&mut self) -> usize {
        let thread = self.thread.take().expect("joined once");
        let deadline = Instant::now() + STEP;
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "reactor did not stop in time");
            std::thread::sleep(Duration::from_millis(5));
        }
        thread
            .join()
            .expect("reactor thread panicked")
            .expect("run returned an error")
    }

    /// Runs `f` on the reactor thread and returns its answer.
    #[track_caller]
    pub fn query<R, F>(&self, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&mut Reactor) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        assert!(self.handle.run(move |reactor| {
            let _ = tx.send(f(reactor));
        }));
        rx.recv_timeout(STEP).expect("reactor answered")
    }

    /// Polls `f` on the reactor thread until it holds (or the step times out).
    #[track_caller]
    pub fn wait_until<F>(&self, what: &str, f: F)
    where
        F: Fn(&mut Reactor) -> bool + Send + Sync + Clone + 'static,
    {
        let deadline = Instant::now() + STEP;
        loop {
            if self.query(f.clone()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.stop();
            let _ = thread.join();
        }
    }
}

/// A blocking TCP client with read and write timeouts.
#[track_caller]
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(STEP)).expect("timeout");
    stream.set_write_timeout(Some(STEP)).expect("timeout");
    stream
}

/// Reads exactly `n` bytes.
#[track_caller]
pub fn read_exact(stream: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until end-of-file.
#[track_caller]
pub fn read_to_end(stream: &mut impl Read) -> Vec<u8> {
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).expect("read_to_end");
    buf
}

/// Writes all of `data`.
#[track_caller]
pub fn write_all(stream: &mut impl Write, data: &[u8]) {
    stream.write_all(data).expect("write_all");
}

/// Sets `SO_LINGER` to zero on `stream`: closing it then sends a reset
/// instead of a FIN, as a crashing or aborting peer would.
#[track_caller]
pub fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is a live socket owned by `stream`; the option value is
    // an initialised `linger` and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

/// A deterministic pseudo-random byte stream.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The IPv4 loopback with port 0.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("valid address")
}

/// Runs `cargo build` with `args` and the profile these tests were built
/// with, into the target directory they were built in. A failure is
/// reported, not fatal: the path lookup that follows says what is missing.
pub fn cargo_build(args: &[&str]) {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/PROFILE/deps/TEST");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(other) => other.to_string(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "--quiet", "--profile", &profile]);
    command.args(args);
    command.arg("--manifest-path");
    command.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    // Build where these tests were built (a `--target-dir` is not in the
    // environment); cargo marks a target directory's root with CACHEDIR.TAG.
    if let Some(target_dir) = profile_dir.parent().filter(|d| d.join("CACHEDIR.TAG").exists()) {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    match command.status() {
        Ok(status) if status.success() => {}
        other => eprintln!("cargo build {args:?} failed: {other:?}"),
    }
}

/// The path of the workspace tool `name` (`tools/NAME`), built once per test
/// process: `cargo test` builds a tool's own tests, not always its binary.
#[track_caller]
pub fn tool_path(name: &str) -> std::path::PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|b| b == name) {
        cargo_build(&["-p", name, "--bin", name]);
        built.push(name.to_owned());
    }
    let exe = std::env::current_exe().expect("test executable path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/PROFILE/deps/TEST")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo build -p {name}` failed",
        path.display()
    );
    path
}

/// Runs example `program` with `args`, one of which binds `taken`, an
/// address already in use: the contract's answer is a non-zero exit and
/// one line on stderr naming the address, with no panic.
#[track_caller]
pub fn assert_taken_address_is_one_line(program: &str, args: &[&str], taken: &str) {
    let out = std::process::Command::new(example_path(program))
        .args(args)
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(taken), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The path of an example binary built by the same `cargo test` run
/// (`cargo test` builds every example; after editing one, a narrower
/// `cargo test --test X` may need `cargo build --examples` first).
#[track_caller]
pub fn example_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/PROFILE/deps/TEST");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (it builds the examples) or `cargo build --examples`",
        path.display()
    );
    path
}

/// An example server running as a child process.
pub struct ServerProcess {
    pub child: std::process::Child,
    /// The server's stdin, when started with [`ServerProcess::start_with_stdin`].
    pub stdin: Option<std::process::ChildStdin>,
    /// The announce lines read so far, as (kind, address).
    pub listening: Vec<(String, String)>,
    lines: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Starts example `name` with `args` and waits for `announces` announce
    /// lines on its stdout. Stderr goes to the test's stderr.
    #[track_caller]
    pub fn start(name: &str, args: &[&str], announces: usize) -> ServerProcess {
        Self::start_with(
            std::process::Command::new(example_path(name)).args(args),
            announces,
        )
    }

    /// Like [`ServerProcess::start`] with a prepared command (env, cwd).
    #[track_caller]
    pub fn start_with(command: &mut std::process::Command, announces: usize) -> ServerProcess {
        Self::start_logging_to(command, announces, std::process::Stdio::inherit())
    }

    /// Like [`ServerProcess::start_with`], with the server's stderr (its
    /// log) going to `stderr`.
    #[track_caller]
    pub fn start_logging_to(
        command: &mut std::process::Command,
        announces: usize,
        stderr: std::process::Stdio,
    ) -> ServerProcess {
        Self::spawn(command.stdin(std::process::Stdio::null()), announces, stderr)
    }

    /// Like [`ServerProcess::start_with`], with the server's stdin piped
    /// and kept in [`ServerProcess::stdin`], for programs driven by it.
    #[track_caller]
    pub fn start_with_stdin(command: &mut std::process::Command, announces: usize) -> ServerProcess {
        Self::spawn(
            command.stdin(std::process::Stdio::piped()),
            announces,
            std::process::Stdio::inherit(),
        )
    }

    #[track_caller]
    fn spawn(
        command: &mut std::process::Command,
        announces: usize,
        stderr: std::process::Stdio,
    ) -> ServerProcess {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn example");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = ServerProcess {
            child,
            stdin,
            listening: Vec::new(),
            lines: rx,
        };
        while server.listening.len() < announces {
            let line = server.lines.recv_timeout(STEP).expect("announce line");
            let mut words = line.split(' ');
            assert_eq!(words.next(), Some("listening"), "stdout line {line:?}");
            let kind = words.next().expect("kind").to_string();
            let addr = words.collect::<Vec<_>>().join(" ");
            server.listening.push((kind, addr));
        }
        server
    }

    /// The address announced for `kind` (`tcp`, `udp`, `unix`, `http`).
    #[track_caller]
    pub fn addr(&self, kind: &str) -> String {
        self.listening
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no {kind} listener announced: {:?}", self.listening))
    }

    /// The announced `kind` address as a socket address.
    #[track_caller]
    pub fn socket_addr(&self, kind: &str) -> SocketAddr {
        self.addr(kind).parse().expect("announced ip:port")
    }

    /// Any further stdout line, if one comes within `wait`.
    pub fn next_stdout_line(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Sends a signal to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with the pid of a child this process started and
        // has not reaped yet; it cannot affect memory safety.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Sends SIGTERM and waits for the exit status (within [`STEP`]).
    #[track_caller]
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait()
    }

    /// Waits for the process to exit (within [`STEP`]).
    #[track_caller]
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// How many descriptors the server has open, from /proc.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A directory of the test's own, removed when dropped (even on failure).
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// Makes `evloop-NAME-PID` under the system's temp directory, empty.
    #[track_caller]
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("evloop-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fails with the lengths and the first differing offset, not a dump of
/// both buffers, when `got` is not `want`.
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}; first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

/// Reads a file a test (or a client it ran) wrote.
#[track_caller]
pub fn read_file(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A listener whose accept queue is full: the kernel drops new SYNs, so a
/// connect to it neither succeeds nor fails until its client gives up. Kept
/// open (with the connections that fill its queue) while it lives.
pub struct SilentListener {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<socket2::Socket>,
}

impl SilentListener {
    pub fn new() -> SilentListener {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        listener.bind(&any_port().into()).expect("bind");
        listener.listen(0).expect("listen");
        let addr = listener.local_addr().expect("address").as_socket().expect("inet");
        let fillers = (0..4)
            .map(|_| {
                let filler = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
                filler.set_nonblocking(true).expect("nonblocking");
                let _ = filler.connect(&addr.into());
                filler
            })
            .collect();
        SilentListener {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }
}
