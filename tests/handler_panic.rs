//! A handler that panics takes down its own source only: its connection is
//! reset (or its socket or source removed), it gets no `on_close`, and the
//! reactor goes on serving every other source, then shuts down clean.
//!
//! Without the reactor's `catch_unwind`, each panic would unwind through
//! `Reactor::run` and end the reactor's thread: every other connection
//! would be closed, the clients here would read end-of-file instead of a
//! reset, and `Running::shutdown` would find no reactor to ask.
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use evloop::protocols::echo::{Echo, EchoDatagram};
use evloop::{
    Addr, CloseReason, Context, DatagramHandler, Event, Interest, Key, SourceHandler, StreamHandler,
};
use evloop::{StreamFactory, TimerId};

/// Where a [`Fragile`] handler panics.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PanicIn {
    /// `on_data`, when the input holds `boom` (a `String` payload).
    Data,
    /// `on_open` (a `&str` payload).
    Open,
    /// `on_timer`, armed by the input `arm`.
    Timer,
    /// `on_close`.
    Close,
    /// `on_shutdown`.
    Shutdown,
}

/// How many handlers got `on_close`, and how many were dropped.
#[derive(Default)]
struct Tally {
    closed: AtomicUsize,
    dropped: AtomicUsize,
}

/// Echo that panics where it is told to; counts its `on_close` and drop.
struct Fragile {
    panic_in: PanicIn,
    tally: Arc<Tally>,
}

impl StreamHandler for Fragile {
    fn on_open(&mut self, _cx: &mut Context<'_>) {
        if self.panic_in == PanicIn::Open {
            panic!("fragile handler: on_open");
        }
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        if self.panic_in == PanicIn::Data && data.windows(4).any(|w| w == b"boom") {
            panic!("fragile handler: {} bytes of input", data.len());
        }
        if self.panic_in == PanicIn::Timer && data.windows(3).any(|w| w == b"arm") {
            cx.set_timer(Duration::ZERO).expect("timer");
            return data.len();
        }
        cx.send(data);
        data.len()
    }

    fn on_timer(&mut self, _cx: &mut Context<'_>, _timer: TimerId) {
        panic!("fragile handler: on_timer");
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        if self.panic_in == PanicIn::Shutdown {
            panic!("fragile handler: on_shutdown");
        }
        cx.close();
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, _reason: &CloseReason) {
        self.tally.closed.fetch_add(1, Ordering::SeqCst);
        if self.panic_in == PanicIn::Close {
            panic!("fragile handler: on_close");
        }
    }
}

impl Drop for Fragile {
    fn drop(&mut self) {
        self.tally.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// A listener whose handlers panic in `panic_in`.
fn listen_fragile(reactor: &mut evloop::Reactor, panic_in: PanicIn, tally: &Arc<Tally>) -> (Key, SocketAddr) {
    let tally = Arc::clone(tally);
    let key = reactor
        .listen_tcp(any_port(), move |_: &Addr| Fragile {
            panic_in,
            tally: Arc::clone(&tally),
        })
        .expect("listen");
    (key, inet(reactor, key))
}

fn inet(reactor: &evloop::Reactor, key: Key) -> SocketAddr {
    reactor
        .local_addr(key)
        .and_then(|a| a.as_inet())
        .expect("an inet address")
}

/// One echo round trip.
#[track_caller]
fn assert_echoes(stream: &mut TcpStream, data: &[u8]) {
    write_all(stream, data);
    assert_eq!(read_exact(stream, data.len()), data);
}

/// The server reset the connection: the next read fails with a reset.
#[track_caller]
fn assert_reset(stream: &mut TcpStream) {
    let mut buf = [0; 64];
    match stream.read(&mut buf) {
        Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected a reset, got {other:?}"),
    }
}

#[test]
fn a_handler_that_panics_on_data_loses_its_connection_and_no_other() {
    let tally = Arc::new(Tally::default());
    let server = start({
        let tally = Arc::clone(&tally);
        move |reactor| listen_fragile(reactor, PanicIn::Data, &tally)
    });
    let (listener, addr) = server.info;
    let mut before = connect(addr);
    assert_echoes(&mut before, b"first\n");

    let mut victim = connect(addr);
    assert_echoes(&mut victim, b"fine so far\n");
    write_all(&mut victim, b"boom\n");
    assert_reset(&mut victim);

    // The connection opened before goes on, and the listener takes new ones.
    assert_echoes(&mut before, b"still here\n");
    let mut after = connect(addr);
    assert_echoes(&mut after, b"after\n");
    server.wait_until("the reset connection is gone", move |r| {
        r.connection_count(listener) == 2
    });
    // The handler that panicked was dropped, and got no `on_close`.
    assert_eq!(tally.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(tally.closed.load(Ordering::SeqCst), 0);

    drop((before, after));
    assert_eq!(server.shutdown(STEP), 0);
    assert_eq!(
        tally.closed.load(Ordering::SeqCst),
        2,
        "the others closed normally"
    );
    assert_eq!(tally.dropped.load(Ordering::SeqCst), 3);
}

#[test]
fn a_panic_in_on_open_resets_that_connection_and_the_listener_goes_on() {
    let tally = Arc::new(Tally::default());
    let server = start({
        let tally = Arc::clone(&tally);
        move |reactor| {
            let (_, fragile) = listen_fragile(reactor, PanicIn::Open, &tally);
            let echo = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
            (fragile, inet(reactor, echo))
        }
    });
    let (fragile, echo) = server.info;
    let mut before = connect(echo);
    assert_echoes(&mut before, b"before\n");
    for _ in 0..3 {
        // Each connection is accepted (no refusal: the listener lives) and reset.
        let mut victim = connect(fragile);
        assert_reset(&mut victim);
    }
    assert_echoes(&mut before, b"still here\n");
    let mut after = connect(echo);
    assert_echoes(&mut after, b"after\n");
    drop((before, after));
    assert_eq!(server.shutdown(STEP), 0);
    assert_eq!(tally.dropped.load(Ordering::SeqCst), 3);
    assert_eq!(tally.closed.load(Ordering::SeqCst), 0);
}

#[test]
fn a_panic_in_on_timer_resets_that_connection_and_no_other() {
    let tally = Arc::new(Tally::default());
    let server = start({
        let tally = Arc::clone(&tally);
        move |reactor| listen_fragile(reactor, PanicIn::Timer, &tally)
    });
    let (listener, addr) = server.info;
    let mut other = connect(addr);
    let mut victim = connect(addr);
    assert_echoes(&mut victim, b"echo first\n");
    write_all(&mut victim, b"arm\n");
    assert_reset(&mut victim);
    assert_echoes(&mut other, b"unaffected\n");
    server.wait_until("the reset connection is gone", move |r| {
        r.connection_count(listener) == 1 && r.timer_count() == 0
    });
    drop(other);
    assert_eq!(server.shutdown(STEP), 0);
    assert_eq!(tally.closed.load(Ordering::SeqCst), 1);
    assert_eq!(tally.dropped.load(Ordering::SeqCst), 2);
}

/// Echo handlers, except that the second call panics (with a `String`).
struct FlakyFactory {
    calls: usize,
}

impl StreamFactory for FlakyFactory {
    fn new_handler(&mut self, peer: &Addr) -> Box<dyn StreamHandler> {
        self.calls += 1;
        if self.calls == 2 {
            panic!("factory: no handler for {peer}");
        }
        Box::new(Echo)
    }
}

#[test]
fn a_factory_that_panics_costs_one_connection_and_the_listener_goes_on() {
    let server = start(|reactor| {
        let key = reactor
            .listen_tcp(any_port(), FlakyFactory { calls: 0 })
            .expect("listen");
        (key, inet(reactor, key))
    });
    let (listener, addr) = server.info;
    let mut first = connect(addr);
    assert_echoes(&mut first, b"first\n");
    let mut second = connect(addr);
    assert_reset(&mut second);
    let mut third = connect(addr);
    assert_echoes(&mut third, b"third\n");
    assert_echoes(&mut first, b"first again\n");
    assert!(server.query(move |r| r.contains(listener) && r.connection_count(listener) == 2));
    drop((first, third));
    assert_eq!(server.shutdown(STEP), 0);
}

/// UDP echo that panics on a datagram holding `boom`.
struct FragileDatagram;

impl DatagramHandler for FragileDatagram {
    fn on_datagram(&mut self, cx: &mut Context<'_>, data: &[u8], from: &Addr) {
        if data == b"boom" {
            panic!("datagram handler: {} bytes from {from}", data.len());
        }
        cx.send_datagram(from, data);
    }
}

#[test]
fn a_datagram_handler_that_panics_loses_its_socket_and_no_other() {
    let server = start(|reactor| {
        let fragile = reactor.bind_udp(any_port(), FragileDatagram).expect("bind");
        let echo = reactor.bind_udp(any_port(), EchoDatagram).expect("bind");
        let tcp = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        (
            fragile,
            inet(reactor, fragile),
            inet(reactor, echo),
            inet(reactor, tcp),
        )
    });
    let (fragile, fragile_addr, echo_addr, tcp_addr) = server.info;
    let mut stream = connect(tcp_addr);
    let client = UdpSocket::bind(any_port()).expect("client");
    client.set_read_timeout(Some(STEP)).expect("timeout");
    let round_trip = |to: SocketAddr, data: &[u8]| {
        client.send_to(data, to).expect("send");
        let mut buf = [0; 64];
        let (n, from) = client.recv_from(&mut buf).expect("reply");
        assert_eq!((&buf[..n], from), (data, to));
    };
    round_trip(fragile_addr, b"hello");
    client.send_to(b"boom", fragile_addr).expect("send");
    server.wait_until("the socket whose handler panicked is gone", move |r| {
        !r.contains(fragile)
    });
    round_trip(echo_addr, b"the other socket");
    assert_echoes(&mut stream, b"and streams\n");
    drop(stream);
    assert_eq!(server.shutdown(STEP), 0);
}

/// A pipe's reader that panics on its first event.
struct FragilePipe {
    pipe: evloop::mio::unix::pipe::Receiver,
}

impl SourceHandler for FragilePipe {
    fn source(&mut self) -> &mut dyn evloop::mio::event::Source {
        &mut self.pipe
    }
    fn on_ready(&mut self, _cx: &mut Context<'_>, _event: &Event) {
        panic!("custom source: on_ready");
    }
}

#[test]
fn a_custom_source_that_panics_is_removed_and_the_rest_goes_on() {
    let (mut sender, receiver) = evloop::mio::unix::pipe::new().expect("pipe");
    let server = start(move |reactor| {
        let pipe = reactor
            .register(FragilePipe { pipe: receiver }, Interest::READABLE)
            .expect("register");
        let tcp = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        (pipe, inet(reactor, tcp))
    });
    let (pipe, tcp) = server.info;
    sender.write_all(b"wake up").expect("write to the pipe");
    server.wait_until("the pipe source is gone", move |r| !r.contains(pipe));
    let mut stream = connect(tcp);
    assert_echoes(&mut stream, b"still serving\n");
    drop(stream);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn panics_in_on_close_and_on_shutdown_do_not_stop_the_shutdown() {
    let tally = Arc::new(Tally::default());
    let mut server = start({
        let tally = Arc::clone(&tally);
        move |reactor| {
            let (_, closing) = listen_fragile(reactor, PanicIn::Close, &tally);
            let (_, shutting) = listen_fragile(reactor, PanicIn::Shutdown, &tally);
            (closing, shutting)
        }
    });
    let (closing, shutting) = server.info;
    // Closed by the client: `on_close` panics after the connection is gone.
    let mut gone = connect(closing);
    assert_echoes(&mut gone, b"bye\n");
    gone.shutdown(std::net::Shutdown::Write).expect("half-close");
    assert_eq!(read_to_end(&mut gone), b"");
    let mut stays = connect(closing);
    assert_echoes(&mut stays, b"still here\n");
    // Open at shutdown: one handler panics in `on_shutdown` (reset), the
    // other in `on_close` after closing normally.
    let mut shut = connect(shutting);
    assert_echoes(&mut shut, b"until shutdown\n");
    assert!(server.handle.shutdown(STEP), "reactor still running");
    assert_reset(&mut shut);
    assert_eq!(read_to_end(&mut stays), b"");
    drop(stays);
    assert_eq!(server.join(), 0);
    assert_eq!(
        tally.closed.load(Ordering::SeqCst),
        2,
        "the two on_close calls that panicked"
    );
    assert_eq!(tally.dropped.load(Ordering::SeqCst), 3);
}
