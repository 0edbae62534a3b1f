//! What a `/metrics` answer allocates does not grow with the connections:
//! the snapshot counts them in one pass over the source table, and the
//! Prometheus text is written from the snapshot alone. This binary counts
//! the allocations its test thread makes (a global allocator that counts
//! per thread) while a reactor on that thread holds a few connections,
//! then many, and renders the exposition each time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use evloop::metrics::write_prometheus;
use evloop::protocols::echo::Echo;
use evloop::{Addr, Reactor};

/// The system allocator, counting the allocations of each thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; the
// count is a thread-local `Cell` with a constant initializer and no
// destructor, which allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as the caller of `realloc` promises.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Turns the reactor until it holds `open` connections.
#[track_caller]
fn run_until_open(reactor: &mut Reactor, open: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while reactor.metrics().connections_open != open {
        assert!(
            Instant::now() < deadline,
            "{} open, not {open}",
            reactor.metrics().connections_open
        );
        reactor.run_once(Some(Duration::from_millis(10))).expect("turn");
    }
}

/// The allocations of one exposition, as the admin port renders it: a
/// snapshot, then the text into a buffer sized beforehand.
fn allocations_of_one_exposition(reactor: &Reactor) -> (u64, usize) {
    let mut out = String::with_capacity(64 * 1024);
    let before = allocations();
    let snapshot = reactor.metrics();
    write_prometheus(std::slice::from_ref(&snapshot), &mut out);
    let made = allocations() - before;
    assert!(out.contains("evloop_connections_open{shard=\"0\"}"), "{out}");
    (made, snapshot.connections_open)
}

#[test]
fn a_metrics_answer_allocates_the_same_for_2_connections_and_for_400() {
    let mut reactor = Reactor::new().expect("reactor");
    let listener = reactor
        .listen_tcp("127.0.0.1:0".parse().expect("address"), |_: &Addr| Echo)
        .expect("listen");
    let addr: SocketAddr = reactor
        .local_addr(listener)
        .and_then(|a| a.as_inet())
        .expect("inet");

    let mut clients: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    run_until_open(&mut reactor, 2);
    // The first rendering may set up what the encoder keeps for good.
    let _ = allocations_of_one_exposition(&reactor);
    let (few, open) = allocations_of_one_exposition(&reactor);
    assert_eq!(open, 2);

    // Many more: each is connected, then accepted by the reactor, which
    // the backlog (at least 128) allows in batches.
    while clients.len() < 400 {
        let more = (400 - clients.len()).min(100);
        for _ in 0..more {
            clients.push(TcpStream::connect(addr).expect("connect"));
        }
        run_until_open(&mut reactor, clients.len());
    }
    let (many, open) = allocations_of_one_exposition(&reactor);
    assert_eq!(open, 400);
    assert_eq!(
        many, few,
        "allocations of one /metrics: {few} with 2 connections, {many} with 400"
    );
    assert!(few < 64, "{few} allocations for one exposition");
    drop(clients);
}
