//! Embedding evloop in a host program (docs/embedding.md): the `embedded`
//! example driven through its stdin, and the same pattern at library level,
//! a reactor built on its own thread and reached only through its `Handle`.
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use evloop::protocols::echo::Echo;
use evloop::{Addr, Reactor};

/// The `embedded` example as a child process, its stdin and stdout piped.
struct Host(ServerProcess);

impl Host {
    /// Starts the host on a free port and returns it with its announced
    /// address.
    #[track_caller]
    fn start() -> (Host, std::net::SocketAddr) {
        let server = ServerProcess::start_with_stdin(
            Command::new(example_path("embedded")).args(["--tcp", "127.0.0.1:0", "--shutdown-timeout", "5"]),
            1,
        );
        let addr = server.socket_addr("tcp");
        (Host(server), addr)
    }

    /// The next stdout line.
    #[track_caller]
    fn line(&self) -> String {
        self.0.next_stdout_line(STEP).expect("a line on stdout")
    }

    /// Sends one command and returns the one line it answers.
    #[track_caller]
    fn ask(&mut self, command: &str) -> String {
        self.send(command);
        self.line()
    }

    /// Sends one command line.
    #[track_caller]
    fn send(&mut self, command: &str) {
        let stdin = self.0.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{command}").expect("write command");
        stdin.flush().expect("flush command");
    }

    /// Closes the host's stdin: its end-of-input.
    fn close_stdin(&mut self) {
        drop(self.0.stdin.take());
    }
}

/// Connects and makes one echo round trip: once it is back, the reactor
/// has accepted the connection and counts it.
#[track_caller]
fn echo_client(addr: std::net::SocketAddr) -> TcpStream {
    let mut client = connect(addr);
    write_all(&mut client, b"hi\n");
    assert_eq!(read_exact(&mut client, 3), b"hi\n");
    client
}

#[test]
fn stats_and_broadcast_reach_the_reactor_and_the_end_of_stdin_shuts_it_down() {
    let (mut host, addr) = Host::start();
    assert_eq!(host.ask("stats"), "connections 0");

    let mut clients: Vec<TcpStream> = (0..3).map(|_| echo_client(addr)).collect();
    assert_eq!(host.ask("stats"), "connections 3");

    assert_eq!(host.ask("broadcast hello, everyone"), "broadcast 3");
    for client in &mut clients {
        assert_eq!(read_exact(client, 16), b"hello, everyone\n");
    }

    // The counters, read through the handle: three clients, each a 3-byte
    // echo and the 16-byte broadcast.
    let metrics = host.ask("metrics");
    let field = |name: &str| -> u64 {
        let prefix = format!("{name}=");
        let value = metrics.split(' ').find_map(|w| w.strip_prefix(prefix.as_str()));
        value
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics:?}"))
    };
    assert!(metrics.starts_with("metrics "), "{metrics}");
    assert_eq!((field("accepted"), field("open")), (3, 3), "{metrics}");
    assert_eq!((field("read"), field("written")), (9, 9 + 3 * 16), "{metrics}");
    assert!(field("turns") > 0 && field("turn_p99_us") > 0, "{metrics}");

    // The end of stdin: a graceful shutdown. Every client gets its FIN (and
    // nothing more), then closes its own side, which ends the connection.
    host.close_stdin();
    for client in &mut clients {
        assert_eq!(read_to_end(client), b"", "EOF, nothing after the broadcast");
    }
    drop(clients);
    let status = host.0.wait();
    assert_eq!(status.code(), Some(0), "graceful exit");
    assert_eq!(
        host.0.next_stdout_line(Duration::ZERO),
        None,
        "nothing more on stdout"
    );
}

#[test]
fn quit_and_sigterm_both_end_the_host_with_exit_0() {
    let (mut host, addr) = Host::start();
    let mut client = echo_client(addr);
    host.send("quit");
    assert_eq!(read_to_end(&mut client), b"");
    drop(client);
    assert_eq!(host.0.wait().code(), Some(0), "quit");

    // SIGTERM, with stdin still open: the reactor shuts itself down, and
    // the host hears of it through its channel.
    let (mut host, addr) = Host::start();
    let mut client = echo_client(addr);
    host.0.signal(libc::SIGTERM);
    assert_eq!(read_to_end(&mut client), b"");
    drop(client);
    assert_eq!(host.0.wait().code(), Some(0), "SIGTERM");
}

#[test]
fn a_bad_address_is_one_line_and_a_failed_bind_exits_1() {
    let out = Command::new(example_path("embedded"))
        .args(["--tcp", "not-an-address"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end().lines().count(), 1);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(example_path("embedded"))
        .args(["--tcp", &addr])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "names the address: {stderr}");
    assert!(out.stdout.is_empty(), "no announce line");
}

/// What the reactor thread hands back: all of it `Send`.
type Started = (evloop::Handle, evloop::Key, std::net::SocketAddr);

/// Builds a reactor with an echo listener on a new thread (a `Reactor` is
/// not `Send`, so it is made where it runs) and returns what the thread
/// sent back, with the thread. Once `run` has returned, the thread says so
/// on `ended`, then keeps the reactor until `release` says to drop it (or
/// is dropped).
fn spawn_reactor(
    ended: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
) -> (Started, std::thread::JoinHandle<Result<(), evloop::Error>>) {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || -> Result<(), evloop::Error> {
        let mut reactor = Reactor::new()?;
        let listener = reactor.listen_tcp(any_port(), |_: &Addr| Echo)?;
        let addr = reactor
            .local_addr(listener)
            .and_then(|a| a.as_inet())
            .expect("tcp");
        tx.send((reactor.handle(), listener, addr)).expect("test waits");
        let result = reactor.run();
        let _ = ended.send(());
        let _ = release.recv();
        drop(reactor);
        result
    });
    (rx.recv_timeout(STEP).expect("reactor started"), thread)
}

#[test]
fn a_reactor_on_its_own_thread_answers_run_closures_and_shuts_down() {
    let (ended, _) = mpsc::channel();
    let (release_tx, release) = mpsc::channel();
    drop(release_tx); // the thread drops the reactor as soon as `run` returns
    let ((handle, listener, addr), thread) = spawn_reactor(ended, release);

    let count = |handle: &evloop::Handle| {
        let (tx, rx) = mpsc::channel();
        assert!(handle.run(move |reactor| {
            let _ = tx.send(reactor.connection_count(listener));
        }));
        rx.recv_timeout(STEP).expect("the reactor answered")
    };
    assert_eq!(count(&handle), 0);
    let mut client = echo_client(addr);
    assert_eq!(count(&handle), 1);

    assert!(handle.shutdown(STEP), "the reactor is running");
    assert_eq!(read_to_end(&mut client), b"", "EOF from the graceful close");
    drop(client);
    thread.join().expect("no panic").expect("run returned Ok");

    // The reactor is gone: every command says so, and a closure never runs.
    let (tx, rx) = mpsc::channel::<()>();
    assert!(!handle.run(move |_| {
        let _ = tx.send(());
    }));
    assert_eq!(
        rx.try_recv(),
        Err(mpsc::TryRecvError::Disconnected),
        "dropped unrun"
    );
    assert!(!handle.stop());
    assert!(!handle.shutdown(STEP));
}

#[test]
fn a_closure_sent_after_run_returned_is_dropped_with_the_reactor() {
    let (ended_tx, ended) = mpsc::channel();
    let (release_tx, release) = mpsc::channel();
    let ((handle, _, _), thread) = spawn_reactor(ended_tx, release);
    assert!(handle.stop());
    ended.recv_timeout(STEP).expect("run returned");

    // `run` has returned but the reactor still exists: the command is
    // accepted (`true`) and waits in its channel.
    let (tx, rx) = mpsc::channel::<()>();
    assert!(handle.run(move |_| {
        let _ = tx.send(());
    }));
    // Dropping the reactor drops the closure unrun, and its sender with it:
    // a waiting reply channel ends rather than hangs.
    release_tx.send(()).expect("thread waits");
    assert_eq!(rx.recv_timeout(STEP), Err(mpsc::RecvTimeoutError::Disconnected));
    thread.join().expect("no panic").expect("run returned Ok");
    assert!(!handle.stop(), "gone now");
}
