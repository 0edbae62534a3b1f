//! A reactor inside another program's loop, which never calls `run`: the
//! host waits until the reactor's descriptor is readable or
//! `Reactor::next_timeout` has passed, then runs one turn that does not
//! wait. Two hosts, each serving an echo connection, a reactor timer and a
//! command from a `Handle` this way: a `poll(2)` loop, and a tokio task
//! on a current-thread runtime (`AsyncFd` on the descriptor).
mod common;

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use evloop::{protocols::echo::Echo, Addr, Reactor};
use tokio::io::unix::AsyncFd;

/// How long a host gives the whole exchange before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// A reactor with an echo listener and a reactor timer, and a client on a
/// thread that sends a line, reads it back, then tells the reactor it is
/// done through its handle (which wakes the reactor's descriptor too).
struct Scenario {
    reactor: Reactor,
    timer_fired: Rc<Cell<bool>>,
    client_done: Arc<AtomicBool>,
    client: JoinHandle<io::Result<Vec<u8>>>,
}

impl Scenario {
    fn new() -> Scenario {
        let _ = env_logger::builder().is_test(true).try_init();
        let mut reactor = Reactor::new().expect("reactor");
        let key = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr");
        let timer_fired = Rc::new(Cell::new(false));
        let flag = Rc::clone(&timer_fired);
        reactor
            .set_timer(Duration::from_millis(30), move |_| flag.set(true))
            .expect("timer");
        let client_done = Arc::new(AtomicBool::new(false));
        let (handle, done) = (reactor.handle(), Arc::clone(&client_done));
        let client = std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(DEADLINE))?;
            stream.write_all(b"ping\n")?;
            let mut reply = vec![0; 5];
            stream.read_exact(&mut reply)?;
            // A command: run on the reactor's thread, in the host's turn.
            handle.run(move |_| done.store(true, Ordering::Release));
            Ok(reply)
        });
        Scenario {
            reactor,
            timer_fired,
            client_done,
            client,
        }
    }

    /// Whether the timer fired and the client's command ran.
    fn done(&self) -> bool {
        self.timer_fired.get() && self.client_done.load(Ordering::Acquire)
    }

    #[track_caller]
    fn check(self) {
        let reply = self.client.join().expect("client thread");
        assert_eq!(reply.expect("echo"), b"ping\n");
    }
}

/// Waits until `fd` is readable or `timeout` has passed (`None`: no
/// limit), as a host's own `poll(2)` loop would. The timeout is rounded
/// up to whole milliseconds, so the wait never ends before a deadline.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> bool {
    let ms = match timeout {
        None => -1,
        Some(t) => i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
    };
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid `pollfd`, borrowed for the length of the call.
    let rc = unsafe { libc::poll(&mut pollfd, 1, ms) };
    assert!(
        rc >= 0 || io::Error::last_os_error().kind() == io::ErrorKind::Interrupted,
        "poll: {}",
        io::Error::last_os_error()
    );
    rc > 0
}

#[test]
fn a_poll_loop_serves_an_echo_connection_a_timer_and_a_command_without_run() {
    let mut scenario = Scenario::new();
    let deadline = Instant::now() + DEADLINE;
    let (mut turns, mut woken) = (0, 0);
    while !scenario.done() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out");
        let reactor = &mut scenario.reactor;
        let wait = reactor.next_timeout().map_or(left, |t| t.min(left));
        if wait_readable(reactor.as_fd(), Some(wait)) {
            woken += 1;
        }
        reactor.run_once(Some(Duration::ZERO)).expect("turn");
        turns += 1;
    }
    assert!(woken > 0, "the descriptor woke the host");
    // A host that spun would turn thousands of times in the timer's 30 ms.
    assert!(turns < 200, "{turns} turns: the host spun");
    scenario.check();
}

/// Drives `reactor` from a tokio task until `done`: waits until its
/// descriptor is readable or its next timeout has passed, then runs one
/// turn that does not wait. The reactor never blocks the runtime's
/// thread, and other tasks run between its turns.
async fn drive_reactor(reactor: Reactor, done: impl Fn() -> bool) -> Result<Reactor, evloop::Error> {
    // SAFETY: a reactor's descriptor is one epoll instance, open for the
    // reactor's whole life; the `AsyncFd` owns the reactor, so it is open
    // until the `AsyncFd` has let go of it.
    let registered = unsafe { AsyncFd::register_with_interest(reactor, tokio::io::Interest::READABLE) };
    let mut fd = registered.map_err(io::Error::from)?;
    while !done() {
        let wait = fd.get_mut().next_timeout();
        let readable = fd.readable();
        match wait {
            None => readable.await?.clear_ready(),
            Some(wait) => {
                if let Ok(guard) = tokio::time::timeout(wait, readable).await {
                    // Cleared before the turn: whatever arrives during
                    // it makes the descriptor readable anew.
                    guard?.clear_ready();
                }
            }
        }
        fd.get_mut().run_once(Some(Duration::ZERO))?;
    }
    Ok(fd.into_inner())
}

#[test]
fn a_tokio_task_serves_an_echo_connection_a_timer_and_a_command_without_run() {
    let Scenario {
        reactor,
        timer_fired,
        client_done,
        client,
    } = Scenario::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A `Reactor` is not `Send`: its task is local to this thread.
    let local = tokio::task::LocalSet::new();
    let (fired, commanded) = (Rc::clone(&timer_fired), Arc::clone(&client_done));
    let done = move || fired.get() && commanded.load(Ordering::Acquire);
    let ticks = Rc::new(Cell::new(0u32));
    let reactor = local.block_on(&runtime, async {
        // Another task of the host's, on the same thread, meanwhile.
        let count = Rc::clone(&ticks);
        let ticker = tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                count.set(count.get() + 1);
            }
        });
        let driven = tokio::time::timeout(DEADLINE, tokio::task::spawn_local(drive_reactor(reactor, done)));
        let reactor = driven.await.expect("timed out").expect("the reactor's task");
        ticker.abort();
        reactor
    });
    let reactor = reactor.expect("turns");
    assert!(ticks.get() > 0, "the host's other task ran");
    Scenario {
        reactor,
        timer_fired,
        client_done,
        client,
    }
    .check();
}
