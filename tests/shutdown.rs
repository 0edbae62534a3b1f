//! Stopping a running reactor from another thread: a graceful shutdown
//! (listeners close, queued output is flushed, then EOF, then `run`
//! returns with nothing left), a handler that ignores it and is cut at the
//! deadline, `Handle::stop`, and closures run on the reactor thread.
mod common;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use evloop::protocols::echo::Echo;
use evloop::{Addr, CloseReason, Context, StreamHandler};

const GREETING: usize = 4 * 1024 * 1024;

/// Queues 4 MiB at once: far more than the socket buffers hold.
struct BigGreeting;

impl StreamHandler for BigGreeting {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        assert!(cx.send_vec(pattern(GREETING, 30)));
    }
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        data.len()
    }
}

#[test]
fn shutdown_from_another_thread_flushes_queued_output_then_eof_and_refuses_new_clients() {
    let mut server = start(|reactor| {
        let echo = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        let big = reactor
            .listen_tcp(any_port(), |_: &Addr| BigGreeting)
            .expect("listen");
        let addr = |key| reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr");
        (echo, addr(echo), addr(big))
    });
    let (echo, echo_addr, big_addr) = server.info;
    let mut clients: Vec<TcpStream> = (0..10).map(|_| connect(echo_addr)).collect();
    for client in &mut clients {
        write_all(client, b"served");
        assert_eq!(read_exact(client, 6), b"served");
    }
    let mut slow = connect(big_addr);
    server.wait_until("the greeting queued", |r| r.source_count() == 13);

    assert!(server.handle.shutdown(STEP));
    server.wait_until("the listeners closed", move |r| !r.contains(echo));
    // The slow client has not read yet, so the reactor is still running.
    let refused = TcpStream::connect(echo_addr).map(|_| ()).map_err(|e| e.kind());
    assert_eq!(refused, Err(ErrorKind::ConnectionRefused));

    let greeting = read_to_end(&mut slow);
    assert_eq!(greeting.len(), GREETING, "queued output flushed before EOF");
    assert!(greeting == pattern(GREETING, 30), "flushed bytes changed");
    for client in &mut clients {
        assert_eq!(read_to_end(client), b"", "EOF after shutdown");
    }
    // Our FINs end the server's linger: `run` returns without waiting it out.
    drop((clients, slow));
    let begun = Instant::now();
    assert_eq!(server.join(), 0, "every source is gone");
    assert!(begun.elapsed() < Duration::from_secs(1), "run returned promptly");
    assert!(!server.handle.stop(), "the reactor is gone");
}

/// Greets, then ignores shutdown requests.
struct Stubborn(mpsc::Sender<String>);

impl StreamHandler for Stubborn {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.send(b"hi\n");
    }
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        data.len()
    }
    fn on_shutdown(&mut self, _cx: &mut Context<'_>) {
        let _ = self.0.send("told".into());
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.0.send(format!("close {reason:?}"));
    }
}

#[test]
fn handler_ignoring_shutdown_is_cut_at_the_deadline() {
    const GRACE: Duration = Duration::from_millis(300);
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let key = reactor
            .listen_tcp(any_port(), move |_: &Addr| Stubborn(tx.clone()))
            .expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let mut client = connect(server.info);
    assert_eq!(read_exact(&mut client, 3), b"hi\n");
    let begun = Instant::now();
    assert_eq!(server.shutdown(GRACE), 0, "cut, so nothing is left");
    let took = begun.elapsed();
    assert!(took >= GRACE, "returned before the deadline: {took:?}");
    assert!(
        took < GRACE + Duration::from_secs(1),
        "returned long after it: {took:?}"
    );
    assert_eq!(rx.recv_timeout(STEP).expect("told"), "told");
    assert_eq!(rx.recv_timeout(STEP).expect("closed"), "close Shutdown");
    let mut buf = [0; 8];
    let read = client.read(&mut buf).map_err(|e| e.kind());
    assert_eq!(read, Err(ErrorKind::ConnectionReset), "cut with a reset");
}

#[test]
fn shutdown_with_nothing_to_finish_returns_at_once() {
    let server = start(|reactor| {
        reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
    });
    let begun = Instant::now();
    assert_eq!(server.shutdown(STEP), 0);
    assert!(begun.elapsed() < Duration::from_secs(1), "waited for nothing");
}

#[test]
fn closures_run_on_the_reactor_thread_and_stop_leaves_sources_open() {
    let mut server = start(|_reactor| std::thread::current().id());
    let reactor_thread = server.info;
    // A closure may do anything the owner of the reactor may: add a listener.
    let (thread, addr) = server.query(|reactor| {
        let key = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr");
        (std::thread::current().id(), addr)
    });
    assert_eq!(thread, reactor_thread);
    assert_ne!(thread, std::thread::current().id());
    let mut client = connect(addr);
    write_all(&mut client, b"added later");
    assert_eq!(read_exact(&mut client, 11), b"added later");

    assert!(server.handle.stop());
    assert_eq!(server.join(), 2, "stop leaves the listener and the connection");
    assert!(!server.handle.run(|_| panic!("runs on a reactor that is gone")));
}
