//! Tokens that cannot lie: an event still queued for a connection closed
//! earlier in the same batch is dropped, even when a new connection has
//! taken the closed one's slot.
mod common;

use std::cell::RefCell;
use std::io::Read;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use evloop::{Addr, CloseReason, Context, Key, Reactor, StreamHandler};

struct Log {
    listen: SocketAddr,
    opened: Vec<Key>,
    data: Vec<(Key, Vec<u8>)>,
    /// (aborted connection, the connection that took its slot)
    reused: Option<(Key, Key)>,
}

/// Records opens and input. On `kill` it aborts the other accepted
/// connection; an aborted probe, in its `on_close`, opens an outbound
/// connection at once, which takes the slot just freed.
struct Probe(Rc<RefCell<Log>>);

impl StreamHandler for Probe {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.0.borrow_mut().opened.push(cx.key());
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let me = cx.key();
        let other = {
            let mut log = self.0.borrow_mut();
            log.data.push((me, data.to_vec()));
            log.opened.iter().take(2).copied().find(|k| *k != me)
        };
        if let (b"kill", Some(other)) = (data, other) {
            if cx.is_open(other) {
                cx.abort_source(other);
            }
        }
        data.len()
    }
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        if matches!(reason, CloseReason::Aborted) {
            let listen = self.0.borrow().listen;
            let newcomer = cx
                .connect(listen, Probe(Rc::clone(&self.0)))
                .expect("outbound connect");
            self.0.borrow_mut().reused = Some((cx.key(), newcomer));
        }
    }
}

#[track_caller]
fn turn_until(reactor: &mut Reactor, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        reactor.run_once(Some(Duration::from_millis(10))).expect("turn");
    }
}

#[test]
fn stale_event_after_slot_reuse_is_dropped() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut reactor = Reactor::new().expect("reactor");
    let log = Rc::new(RefCell::new(Log {
        listen: any_port(),
        opened: Vec::new(),
        data: Vec::new(),
        reused: None,
    }));
    let factory_log = Rc::clone(&log);
    let listener = reactor
        .listen_tcp(any_port(), move |_: &Addr| Probe(Rc::clone(&factory_log)))
        .expect("listen");
    let addr = reactor
        .local_addr(listener)
        .and_then(|a| a.as_inet())
        .expect("addr");
    log.borrow_mut().listen = addr;

    let mut a = connect(addr);
    let mut b = connect(addr);
    turn_until(&mut reactor, "A and B open", || log.borrow().opened.len() == 2);

    // On loopback, each write has made its socket readable by the time it
    // returns, so the next poll reports both in one batch, in some order.
    write_all(&mut a, b"kill");
    write_all(&mut b, b"kill");
    reactor.run_once(Some(STEP)).expect("the turn with both events");

    {
        let log = log.borrow();
        let (victim, newcomer) = log.reused.expect("one connection was aborted");
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
        assert_eq!(
            log.data.len(),
            1,
            "only the first connection's input was delivered"
        );
        assert_ne!(log.data[0].0, victim);
    }

    // The newcomer is a connection of its own: it opens and works.
    turn_until(&mut reactor, "newcomer and its accepted peer open", || {
        log.borrow().opened.len() == 4
    });
    let victim = log.borrow().reused.expect("set").0;
    let victim_client = if log.borrow().opened[0] == victim {
        &mut a
    } else {
        &mut b
    };
    victim_client.set_read_timeout(Some(STEP)).expect("timeout");
    let mut buf = [0; 8];
    assert!(
        matches!(victim_client.read(&mut buf), Ok(0) | Err(_)),
        "the victim was reset"
    );
}
