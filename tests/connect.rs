//! Outbound connections: made by the reactor's owner (`Reactor::connect_tcp`)
//! or by a handler (`Context::connect`), to std listeners; bytes both ways;
//! a refused connect reported to the handler; output queued while the
//! connect is still in progress; a connect that meets its own socket
//! refused; and `ConnectOptions`: a connect timeout,
//! the connection's own options, a socket hook run before the SYN, and
//! the socket's descriptor.
mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use evloop::{Addr, CloseReason, ConnState, ConnectOptions, ConnectionOptions, Context, StreamHandler};

/// Greets once connected, reports each event, closes after one reply.
struct Outbound(mpsc::Sender<String>);

impl StreamHandler for Outbound {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let _ = self.0.send(format!("open {:?}", cx.state()));
        cx.send(b"from evloop");
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let _ = self.0.send(String::from_utf8_lossy(data).into_owned());
        cx.close();
        data.len()
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.0.send(format!("close {reason:?}"));
    }
}

#[track_caller]
fn next(rx: &mpsc::Receiver<String>) -> String {
    rx.recv_timeout(STEP).expect("an event from the handler")
}

#[test]
fn outbound_connection_opens_and_carries_bytes_both_ways() {
    let peer = TcpListener::bind(any_port()).expect("bind");
    let peer_addr = peer.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let key = reactor.connect_tcp(peer_addr, Outbound(tx)).expect("connect");
        assert_eq!(reactor.connection_state(key), Some(ConnState::Connecting));
    });
    let (mut stream, _) = peer.accept().expect("accept");
    stream.set_read_timeout(Some(STEP)).expect("timeout");
    assert_eq!(next(&rx), "open Some(Open)");
    assert_eq!(read_exact(&mut stream, 11), b"from evloop");
    write_all(&mut stream, b"from std");
    assert_eq!(next(&rx), "from std");
    assert_eq!(read_to_end(&mut stream), b"", "closed after the reply");
    drop(stream);
    assert_eq!(next(&rx), "close Closed");
    assert_eq!(server.shutdown(STEP), 0);
}

/// For each accepted client, connects out to `upstream` and relays the
/// client's first message there.
struct Relay {
    upstream: SocketAddr,
    events: mpsc::Sender<String>,
}

impl StreamHandler for Relay {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let out = cx
            .connect(self.upstream, Outbound(self.events.clone()))
            .expect("connect from a handler");
        // Queued while the connect is in progress, written once it is made.
        assert!(cx.source(out).send(data));
        data.len()
    }
}

#[test]
fn handler_connects_out_and_output_queued_while_connecting_is_sent() {
    let upstream = TcpListener::bind(any_port()).expect("bind");
    let upstream_addr = upstream.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let relay = move |_: &Addr| Relay {
            upstream: upstream_addr,
            events: tx.clone(),
        };
        let key = reactor.listen_tcp(any_port(), relay).expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let mut client = connect(server.info);
    write_all(&mut client, b"relayed;");
    let (mut stream, _) = upstream.accept().expect("the relay connected");
    stream.set_read_timeout(Some(STEP)).expect("timeout");
    assert_eq!(next(&rx), "open Some(Open)");
    assert_eq!(
        read_exact(&mut stream, 19),
        b"relayed;from evloop",
        "queued bytes first"
    );
    drop((client, stream));
    assert_eq!(server.shutdown(STEP), 0);
}

/// Closing a connection before its connect completes must still flush what
/// was queued, as every close does.
#[test]
fn close_while_connecting_flushes_queued_output_once_connected() {
    let peer = TcpListener::bind(any_port()).expect("bind");
    let peer_addr = peer.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let key = reactor.connect_tcp(peer_addr, Outbound(tx)).expect("connect");
        assert!(reactor.send_to(key, b"queued before the connect completed"));
        reactor.close(key);
        assert_eq!(reactor.connection_state(key), Some(ConnState::Connecting));
        assert!(
            !reactor.send_to(key, b" and after the close"),
            "closed: no more sends"
        );
    });
    let (mut stream, _) = peer.accept().expect("accept");
    stream.set_read_timeout(Some(STEP)).expect("timeout");
    assert_eq!(read_to_end(&mut stream), b"queued before the connect completed");
    drop(stream);
    assert_eq!(next(&rx), "close Closed", "no on_open after the handler closed");
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn outbound_connect_to_a_closed_port_reports_the_error_to_the_handler() {
    let closed = {
        let probe = TcpListener::bind(any_port()).expect("bind");
        probe.local_addr().expect("addr")
    };
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        reactor
            .connect_tcp(closed, Outbound(tx))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    // Exactly one of two outcomes: the refusal reported later to the handler
    // as `ConnectFailed`, or `connect_tcp` failing at once (and the handler,
    // dropped unused, hearing nothing). Linux does the first: a non-blocking
    // connect returns EINPROGRESS even on loopback, and the RST's refusal
    // is a socket error when the socket turns writable.
    match &server.info {
        Ok(()) => {
            let message = next(&rx);
            assert!(message.starts_with("close ConnectFailed"), "{message}");
            assert!(message.contains("ConnectionRefused"), "{message}");
        }
        Err(error) => assert!(error.contains("refused"), "{error}"),
    }
    // Shutting down runs every pending callback: none may report again.
    assert_eq!(server.shutdown(STEP), 0);
    assert_eq!(rx.try_recv().ok(), None, "one report only");
}

/// A socket bound to a free port and connected to that same address meets
/// itself (TCP's simultaneous open): what a connect to a free local port
/// can also get by chance, when the kernel picks that port as its own.
/// Nothing listens there: the handler hears of a refused connect, never
/// of an open connection that echoes its own bytes.
#[test]
fn a_connect_that_reaches_its_own_socket_is_refused() {
    let free = {
        let probe = TcpListener::bind(any_port()).expect("bind");
        probe.local_addr().expect("addr")
    };
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let options = ConnectOptions::new().bind(free);
        reactor
            .connect_tcp_with(free, &options, Outbound(tx))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    server.info.as_ref().expect("the connect starts");
    let message = next(&rx);
    assert!(message.starts_with("close ConnectFailed"), "{message}");
    assert!(
        message.contains("ConnectionRefused") && message.contains("itself"),
        "{message}"
    );
    assert_eq!(server.shutdown(STEP), 0);
    assert_eq!(rx.try_recv().ok(), None, "one report only");
}

/// For each accepted client, connects out, sends the client's first message
/// and shuts the outbound write half at once, while still connecting.
struct HalfCloseRelay {
    upstream: SocketAddr,
    events: mpsc::Sender<String>,
}

impl StreamHandler for HalfCloseRelay {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let out = cx
            .connect(self.upstream, Outbound(self.events.clone()))
            .expect("connect from a handler");
        assert!(cx.source(out).send(data));
        cx.source(out).shutdown_write();
        data.len()
    }
}

/// A write-half shutdown asked for while the connect is in progress is
/// not lost: once connected, the queued bytes go out, then the FIN.
#[test]
fn shutdown_write_while_connecting_sends_eof_once_connected() {
    let upstream = TcpListener::bind(any_port()).expect("bind");
    let upstream_addr = upstream.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let relay = move |_: &Addr| HalfCloseRelay {
            upstream: upstream_addr,
            events: tx.clone(),
        };
        let key = reactor.listen_tcp(any_port(), relay).expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let mut client = connect(server.info);
    write_all(&mut client, b"request");
    let (mut stream, _) = upstream.accept().expect("the relay connected");
    stream.set_read_timeout(Some(STEP)).expect("timeout");
    // The queued request is still flushing when the handler hears of the
    // open; its own greeting is refused, the write half being shut.
    assert_eq!(
        next(&rx),
        "open Some(WriteClosing)",
        "opened, write half shutting"
    );
    assert_eq!(read_to_end(&mut stream), b"request", "queued bytes, then EOF");
    // The read half stays open: the reply still reaches the handler.
    write_all(&mut stream, b"reply");
    assert_eq!(next(&rx), "reply");
    drop((client, stream));
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn a_connect_that_is_not_done_in_time_fails_with_timed_out() {
    let silent = SilentListener::new();
    let addr = silent.addr;
    let (tx, rx) = mpsc::channel();
    let started = std::time::Instant::now();
    let server = start(move |reactor| {
        let options = ConnectOptions::new().timeout(Duration::from_millis(300));
        reactor
            .connect_tcp_with(addr, &options, Outbound(tx))
            .expect("connect started");
    });
    let closed = next(&rx);
    let waited = started.elapsed();
    assert!(
        closed.starts_with("close ConnectFailed") && closed.contains("TimedOut"),
        "{closed}"
    );
    assert!(waited >= Duration::from_millis(250), "gave up after {waited:?}");
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn a_connection_that_connects_in_time_keeps_no_timer() {
    let peer = TcpListener::bind(any_port()).expect("bind");
    let peer_addr = peer.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let options = ConnectOptions::new().timeout(Duration::from_secs(60));
        reactor
            .connect_tcp_with(peer_addr, &options, Outbound(tx))
            .expect("connect started");
    });
    assert_eq!(next(&rx), "open Some(Open)");
    let (_conn, _) = peer.accept().expect("accept");
    assert_eq!(
        server.query(|r| r.timer_count()),
        0,
        "the connect timer went with the connect"
    );
    drop(server);
}

#[test]
fn the_socket_hook_runs_before_the_connect_and_its_error_fails_it() {
    let peer = TcpListener::bind(any_port()).expect("bind");
    let peer_addr = peer.local_addr().expect("addr");
    let server = start(move |reactor| {
        let seen = std::rc::Rc::new(std::cell::Cell::new(false));
        let saw = std::rc::Rc::clone(&seen);
        let hooked = ConnectOptions::new().configure(move |fd| {
            // Not connected yet: the hook comes before the SYN.
            let sock = socket2::SockRef::from(&fd);
            saw.set(sock.peer_addr().is_err());
            sock.set_keepalive(true)
        });
        let (tx, _rx) = mpsc::channel();
        let key = reactor
            .connect_tcp_with(peer_addr, &hooked, Outbound(tx))
            .expect("connect");
        let failing = ConnectOptions::new().configure(|_| Err(std::io::Error::other("refused by the hook")));
        let (tx, _rx) = mpsc::channel();
        let failed = reactor
            .connect_tcp_with(peer_addr, &failing, Outbound(tx))
            .map_err(|e| e.to_string());
        (seen.get(), failed.err(), key)
    });
    let (before_connect, failed, _) = &server.info;
    assert!(*before_connect, "the hook saw a connected socket");
    assert!(
        failed.as_ref().is_some_and(|e| e.contains("refused by the hook")),
        "{failed:?}"
    );
    drop(server);
}

#[test]
fn an_outbound_connection_takes_its_own_options() {
    let peer = TcpListener::bind(any_port()).expect("bind");
    let peer_addr = peer.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let small = ConnectionOptions {
            max_queued: 1024,
            ..ConnectionOptions::default()
        };
        let options = ConnectOptions::new().connection(small);
        let key = reactor
            .connect_tcp_with(peer_addr, &options, Outbound(tx))
            .expect("connect");
        // Still connecting: 4 KiB queued is over this connection's cap.
        reactor.send_to(key, &[0; 4096])
    });
    assert!(!server.info, "the send over the cap was taken");
    assert_eq!(next(&rx), "close Overflow");
    assert_eq!(server.shutdown(STEP), 0);
}

/// Reports the local address its descriptor has, then closes.
struct Described(mpsc::Sender<(Option<SocketAddr>, Option<SocketAddr>)>);

impl StreamHandler for Described {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let through_fd = cx
            .fd()
            .and_then(|fd| socket2::SockRef::from(&fd).local_addr().ok())
            .and_then(|a| a.as_socket());
        let known = cx.local_addr().and_then(|a| a.as_inet());
        let _ = self.0.send((through_fd, known));
        cx.close();
    }
    fn on_data(&mut self, _: &mut Context<'_>, data: &[u8]) -> usize {
        data.len()
    }
}

#[test]
fn a_connection_s_descriptor_is_its_socket() {
    let peer = TcpListener::bind(any_port()).expect("bind");
    let peer_addr = peer.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        reactor.connect_tcp(peer_addr, Described(tx)).expect("connect");
    });
    let (through_fd, known) = rx.recv_timeout(STEP).expect("opened");
    assert!(through_fd.is_some());
    assert_eq!(through_fd, known);
    assert_eq!(server.shutdown(STEP), 0);
}
