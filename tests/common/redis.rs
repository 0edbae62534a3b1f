//! A Redis server of the test's own, for the chat example's `--redis` room:
//! Debian's `redis-server` on a free loopback port, with no config file and
//! nothing saved to disk. It answers PING before [`RedisServer::start`]
//! returns; [`RedisServer::kill`] SIGKILLs it and [`RedisServer::restart`]
//! brings it back on the same port. Dropping it kills it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::STEP;

/// How many ports [`RedisServer::start`] tries before it gives up.
const ATTEMPTS: usize = 4;

/// A `redis-server` child process listening on `127.0.0.1:port`.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis on a free loopback port, trying another port if it
    /// does not come up (another process took the port meanwhile).
    ///
    /// # Panics
    /// If `redis-server` is not installed, or no attempt answers PING.
    #[track_caller]
    pub fn start() -> RedisServer {
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            let port = free_port();
            match spawn(port) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        child: Some(child),
                    }
                }
                Err(why) => failures.push(format!("port {port}: {why}")),
            }
        }
        panic!("redis-server did not come up: {failures:?}");
    }

    /// Starts Redis on `port` (one found free earlier, where a server was
    /// told to look for it).
    ///
    /// # Panics
    /// If `redis-server` is not installed or does not answer PING in time.
    #[track_caller]
    pub fn start_on(port: u16) -> RedisServer {
        let mut redis = RedisServer { port, child: None };
        redis.restart();
        redis
    }

    /// The address to give `chat --redis`: `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it.
    #[track_caller]
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("redis-server is running");
        // SAFETY: kill(2) with the pid of a child this process started and
        // has not reaped yet; it cannot affect memory safety.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill redis-server: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + STEP;
        while child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "redis-server outlived SIGKILL");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends it `signal` (SIGSTOP to freeze it with its connections open,
    /// SIGCONT to let it go on).
    #[track_caller]
    pub fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("redis-server is running");
        // SAFETY: kill(2) with the pid of a child this process started and
        // has not reaped yet; it cannot affect memory safety.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal redis-server: {}", std::io::Error::last_os_error());
    }

    /// Starts it again on the same port (after [`RedisServer::kill`]),
    /// empty, and waits until it answers PING. The port is retried until
    /// [`STEP`] passes, in case it is not free again at once.
    ///
    /// # Panics
    /// If it is still running, or does not come up in time.
    #[track_caller]
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is still running");
        let deadline = Instant::now() + STEP;
        loop {
            match spawn(self.port) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(why) => assert!(
                    Instant::now() < deadline,
                    "redis-server did not come back on port {}: {why}",
                    self.port
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nothing listens on right now (the kernel's pick for
/// `127.0.0.1:0`, released again).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Whether Redis at `addr` answers `PING` with `+PONG` within `wait`.
pub fn answers_ping(addr: SocketAddr, wait: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, wait) else {
        return false;
    };
    if stream.set_read_timeout(Some(wait)).is_err() || stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let mut buf = [0; 64];
    while !reply.ends_with(b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    reply == b"+PONG\r\n"
}

/// Runs `redis-server` on `port` and waits (within [`STEP`]) until it
/// answers PING; the reason if it exits first or stays silent.
#[track_caller]
fn spawn(port: u16) -> Result<Child, String> {
    let port_arg = port.to_string();
    let spawned = Command::new("redis-server")
        .args(["--port", &port_arg, "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("redis-server is not installed (Debian: apt-get install redis-server): {e}")
        }
        Err(e) => panic!("cannot run redis-server: {e}"),
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Err(format!("exited with {status}"));
        }
        if answers_ping(addr, Duration::from_millis(200)) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no answer to PING".to_string());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
