//! Shared by the integration tests: a reactor on its own thread, std clients
//! with timeouts, and a clean stop that checks every source is gone.
#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use evloop::{Handle, Reactor};

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
