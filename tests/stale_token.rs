//! Tokens that cannot lie: an event still queued for a connection that was
//! aborted earlier in the same batch is dropped, even though a new
//! connection has already taken the aborted one's slot.
//!
//! The loop is driven on the test thread, so the batch is known to hold
//! both events: both clients write before the one turn that handles them.
mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use evloop::{Addr, CloseReason, ConnState, Context, Key, Reactor, StreamHandler};

#[derive(Default)]
struct Log {
    /// Accepted connections, in the order they opened.
    accepted: Vec<Key>,
    /// Everything each connection's handler received.
    data: HashMap<Key, Vec<u8>>,
    closed: HashMap<Key, String>,
    /// (aborted connection, the outbound connection made in its `on_close`)
    reused: Option<(Key, Key)>,
    /// Where that outbound connection goes: a std listener of the test.
    outbound_to: Option<SocketAddr>,
}

/// Records input and closes. On `kill`, aborts the other accepted
/// connection; the aborted one, in its `on_close`, connects out at once,
/// and that connection takes the slot just freed.
struct Probe(Rc<RefCell<Log>>);

impl StreamHandler for Probe {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        if cx.listener().is_some() {
            self.0.borrow_mut().accepted.push(cx.key());
        }
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let me = cx.key();
        let other = {
            let mut log = self.0.borrow_mut();
            assert!(!log.closed.contains_key(&me), "{me:?} got data after on_close");
            log.data.entry(me).or_default().extend_from_slice(data);
            log.accepted.iter().copied().find(|k| *k != me)
        };
        if data == b"kill" {
            let other = other.expect("two accepted connections");
            if cx.source(other).is_open() {
                cx.source(other).abort();
            }
        }
        data.len()
    }
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let me = cx.key();
        let to = {
            let mut log = self.0.borrow_mut();
            assert!(
                log.closed.insert(me, format!("{reason:?}")).is_none(),
                "on_close twice"
            );
            log.outbound_to
        };
        if let (CloseReason::Aborted, Some(to)) = (reason, to) {
            let newcomer = cx
                .connect(to, Probe(Rc::clone(&self.0)))
                .expect("outbound connect");
            self.0.borrow_mut().reused = Some((me, newcomer));
        }
    }
}

/// Waits until the peer's kernel has acknowledged everything `stream`
/// sent (`tcpi_unacked` of `TCP_INFO` is 0): the bytes are then in the
/// peer socket's receive queue, readable, whether or not anyone reads.
#[track_caller]
fn wait_until_acked(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let deadline = Instant::now() + STEP;
    loop {
        // SAFETY: `tcp_info` is plain data, so all zeroes is a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: the fd is a live socket owned by `stream`; `info` and
        // `len` are valid, exclusively borrowed, and `len` is its size.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        if info.tcpi_unacked == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the server's kernel never acked");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[track_caller]
fn turn_until(reactor: &mut Reactor, what: &str, done: impl Fn(&Reactor) -> bool) {
    let deadline = Instant::now() + STEP;
    while !done(reactor) {
        assert!(Instant::now() < deadline, "timed out: {what}");
        reactor.run_once(Some(Duration::from_millis(10))).expect("turn");
    }
}

#[test]
fn stale_event_after_slot_reuse_is_dropped() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut reactor = Reactor::new().expect("reactor");
    let outside = TcpListener::bind(any_port()).expect("bind the test's listener");
    let log = Rc::new(RefCell::new(Log {
        outbound_to: Some(outside.local_addr().expect("addr")),
        ..Log::default()
    }));
    let factory_log = Rc::clone(&log);
    let listener = reactor
        .listen_tcp(any_port(), move |_: &Addr| Probe(Rc::clone(&factory_log)))
        .expect("listen");
    let addr = reactor
        .local_addr(listener)
        .and_then(|a| a.as_inet())
        .expect("addr");

    let mut clients = [connect(addr), connect(addr)];
    turn_until(&mut reactor, "A and B open", |_| log.borrow().accepted.len() == 2);
    assert_eq!(reactor.stale_events(), 0);

    // Both server sockets must hold their bytes before the turn, so that the
    // one poll reports both in one batch. A byte the server's kernel has
    // acknowledged is in that socket's receive queue: wait for the ACKs
    // (the reactor does not turn meanwhile, so nothing reads them).
    // Whichever event is handled first aborts the other connection, whose
    // event is still queued behind it.
    for client in &mut clients {
        write_all(client, b"kill");
    }
    for client in &clients {
        wait_until_acked(client);
    }
    reactor.run_once(Some(STEP)).expect("the turn with both events");

    let (victim, newcomer, killer) = {
        let log = log.borrow();
        let (victim, newcomer) = log.reused.expect("one connection was aborted");
        let killer = *log
            .accepted
            .iter()
            .find(|k| **k != victim)
            .expect("the other one");
        (victim, newcomer, killer)
    };
    assert_eq!(
        newcomer.index(),
        victim.index(),
        "the newcomer took the victim's slot"
    );
    assert_ne!(newcomer.generation(), victim.generation());
    assert!(
        !reactor.contains(victim),
        "the victim's key names nothing any more"
    );
    assert!(reactor.contains(newcomer));
    assert_eq!(reactor.stale_events(), 1, "the victim's queued event was dropped");
    {
        let log = log.borrow();
        assert_eq!(log.data.get(&killer).map(Vec::as_slice), Some(&b"kill"[..]));
        assert_eq!(log.data.get(&victim), None, "the victim never got its input");
        assert_eq!(log.data.get(&newcomer), None, "the newcomer got nobody's input");
        assert_eq!(log.closed.get(&victim).map(String::as_str), Some("Aborted"));
    }

    // The newcomer is a connection of its own: it hears its own peer, and
    // only that.
    let (mut peer, _) = outside.accept().expect("the newcomer connected");
    turn_until(&mut reactor, "the newcomer opens", |r| {
        r.connection_state(newcomer) == Some(ConnState::Open)
    });
    write_all(&mut peer, b"newcomer's own");
    turn_until(&mut reactor, "the newcomer hears its peer", |_| {
        log.borrow().data.get(&newcomer).is_some_and(|d| d.len() == 14)
    });
    assert_eq!(log.borrow().data[&newcomer], b"newcomer's own");
    assert_eq!(reactor.stale_events(), 1);

    // And the victim's client sees its connection end.
    let victim_client = if log.borrow().accepted[0] == victim { 0 } else { 1 };
    let mut buf = [0; 8];
    let read = clients[victim_client].read(&mut buf);
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the victim's client read {read:?}"
    );
}
