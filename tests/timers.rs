//! Handler timers through the reactor: deadline order (equal deadlines in
//! the order set), cancel, stale ids, reset, repeat, a zero-delay timer set
//! while timers fire, and timers of a closed connection.
//!
//! The loop runs on the test thread, one turn at a time, so the fire order
//! is recorded in an `Rc<RefCell<..>>` the test reads directly, and "not in
//! this turn" can be asserted exactly.
mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use evloop::{Addr, CloseReason, Context, Key, Reactor, StreamHandler, TimerId};

type Fired = Rc<RefCell<Vec<&'static str>>>;

/// The timers a handler set, by label, with the deadline each must not
/// fire before.
#[derive(Default)]
struct Labels(Vec<(TimerId, &'static str, Instant)>);

impl Labels {
    #[track_caller]
    fn set(&mut self, cx: &mut Context<'_>, label: &'static str, ms: u64) -> TimerId {
        let after = Duration::from_millis(ms);
        let id = cx.set_timer(after).expect("timer set");
        self.0.push((id, label, cx.now() + after));
        id
    }

    #[track_caller]
    fn repeating(&mut self, cx: &mut Context<'_>, label: &'static str, ms: u64) -> TimerId {
        let every = Duration::from_millis(ms);
        let id = cx.set_repeating(every).expect("timer set");
        self.0.push((id, label, cx.now() + every));
        id
    }

    #[track_caller]
    fn id(&self, label: &str) -> TimerId {
        self.0
            .iter()
            .find(|(_, l, _)| *l == label)
            .expect("a label set")
            .0
    }

    /// Moves a timer and the earliest time it may fire.
    fn reset(&mut self, cx: &mut Context<'_>, label: &str, ms: u64) -> bool {
        let after = Duration::from_millis(ms);
        let Some(entry) = self.0.iter_mut().find(|(_, l, _)| *l == label) else {
            return false;
        };
        entry.2 = cx.now() + after;
        cx.reset_timer(entry.0, after)
    }
}

type Setup = Box<dyn FnOnce(&mut Context<'_>, &mut Labels)>;
type Hook = Box<dyn FnMut(&mut Context<'_>, &mut Labels, &'static str)>;

/// Sets its timers when it opens and records each firing; `hook` reacts
/// to a firing (cancel, reset, set more).
struct Owner {
    fired: Fired,
    labels: Labels,
    setup: Option<Setup>,
    hook: Hook,
}

impl StreamHandler for Owner {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let setup = self.setup.take().expect("opened once");
        setup(cx, &mut self.labels);
    }
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        data.len()
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let &(_, label, not_before) = self
            .labels
            .0
            .iter()
            .find(|(id, _, _)| *id == timer)
            .expect("a timer this handler set");
        assert!(cx.now() >= not_before, "{label} fired early");
        self.fired.borrow_mut().push(label);
        (self.hook)(cx, &mut self.labels, label);
    }
    fn on_close(&mut self, cx: &mut Context<'_>, _reason: &CloseReason) {
        self.fired.borrow_mut().push("closed");
        // A source that is gone can own no timer.
        assert!(cx.set_timer(Duration::ZERO).is_none(), "timer set in on_close");
    }
}

/// A reactor, driven here, with one listener whose connections get
/// `Owner`s made by `make`.
struct Rig {
    reactor: Reactor,
    addr: std::net::SocketAddr,
    owners: Rc<RefCell<VecDeque<Owner>>>,
    opened: Rc<RefCell<Vec<Key>>>,
    clients: Vec<TcpStream>,
}

impl Rig {
    fn new() -> Rig {
        let _ = env_logger::builder().is_test(true).try_init();
        let mut reactor = Reactor::new().expect("reactor");
        let owners: Rc<RefCell<VecDeque<Owner>>> = Rc::default();
        let opened: Rc<RefCell<Vec<Key>>> = Rc::default();
        let (queue, keys) = (Rc::clone(&owners), Rc::clone(&opened));
        let listener = reactor
            .listen_tcp(any_port(), move |_: &Addr| {
                let owner = queue.borrow_mut().pop_front().expect("an owner for each client");
                Recorded(owner, Rc::clone(&keys))
            })
            .expect("listen");
        let addr = reactor
            .local_addr(listener)
            .and_then(|a| a.as_inet())
            .expect("addr");
        Rig {
            reactor,
            addr,
            owners,
            opened,
            clients: Vec::new(),
        }
    }

    /// Opens a connection served by an owner that runs `setup` on open
    /// and `hook` on each firing. Returns the connection's key.
    #[track_caller]
    fn owner(
        &mut self,
        fired: &Fired,
        setup: impl FnOnce(&mut Context<'_>, &mut Labels) + 'static,
        hook: impl FnMut(&mut Context<'_>, &mut Labels, &'static str) + 'static,
    ) -> Key {
        self.owners.borrow_mut().push_back(Owner {
            fired: Rc::clone(fired),
            labels: Labels::default(),
            setup: Some(Box::new(setup)),
            hook: Box::new(hook),
        });
        self.clients.push(connect(self.addr));
        let want = self.clients.len();
        let opened = Rc::clone(&self.opened);
        self.turn_until("the owner opened", || opened.borrow().len() == want);
        let key = self.opened.borrow()[want - 1];
        key
    }

    #[track_caller]
    fn turn_until(&mut self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + STEP;
        while !done() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            self.reactor
                .run_once(Some(Duration::from_millis(50)))
                .expect("turn");
        }
    }
}

/// An owner that also records its key when it opens.
struct Recorded(Owner, Rc<RefCell<Vec<Key>>>);

impl StreamHandler for Recorded {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.1.borrow_mut().push(cx.key());
        self.0.on_open(cx);
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        self.0.on_data(cx, data)
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        self.0.on_timer(cx, timer);
    }
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        self.0.on_close(cx, reason);
    }
}

fn nothing(_: &mut Context<'_>, _: &mut Labels, _: &'static str) {}

#[test]
fn timers_fire_in_deadline_order_and_equal_deadlines_in_set_order() {
    let mut rig = Rig::new();
    let fired: Fired = Rc::default();
    rig.owner(
        &fired,
        |cx, t| {
            for (label, ms) in [
                ("c30", 30),
                ("a10", 10),
                ("b20-1", 20),
                ("b20-2", 20),
                ("b20-3", 20),
                ("z0", 0),
            ] {
                t.set(cx, label, ms);
            }
        },
        nothing,
    );
    let done = Rc::clone(&fired);
    rig.turn_until("six timers", move || done.borrow().len() == 6);
    assert_eq!(*fired.borrow(), ["z0", "a10", "b20-1", "b20-2", "b20-3", "c30"]);
    assert_eq!(
        rig.reactor.timer_count(),
        0,
        "one-shot timers are gone once fired"
    );
}

#[test]
fn cancelled_timer_never_fires_and_stale_ids_cancel_nothing() {
    let mut rig = Rig::new();
    let fired: Fired = Rc::default();
    rig.owner(
        &fired,
        |cx, t| {
            let doomed = t.set(cx, "doomed", 10);
            assert!(cx.cancel_timer(doomed));
            assert!(!cx.cancel_timer(doomed), "cancelling twice finds nothing");
            // Most likely in the cancelled timer's slot: the stale id must
            // not reach it.
            t.set(cx, "after", 20);
            assert!(!cx.cancel_timer(doomed), "a stale id cancels nothing");
            assert!(
                !cx.reset_timer(doomed, Duration::ZERO),
                "a stale id resets nothing"
            );
            t.set(cx, "first", 5);
        },
        |cx, t, label| {
            if label == "first" {
                let first = t.id("first");
                assert!(!cx.cancel_timer(first), "a fired one-shot is gone");
                assert!(!cx.reset_timer(first, Duration::ZERO));
            }
        },
    );
    let done = Rc::clone(&fired);
    rig.turn_until("both live timers", move || done.borrow().len() == 2);
    assert_eq!(*fired.borrow(), ["first", "after"]);
    assert_eq!(rig.reactor.timer_count(), 0);
}

#[test]
fn reset_moves_a_timer_later_or_earlier() {
    let mut rig = Rig::new();
    let fired: Fired = Rc::default();
    rig.owner(
        &fired,
        |cx, t| {
            t.set(cx, "late", 10);
            t.set(cx, "middle", 25);
            t.set(cx, "early", 40);
            assert!(t.reset(cx, "late", 50), "later");
            assert!(t.reset(cx, "early", 5), "earlier");
        },
        nothing,
    );
    let done = Rc::clone(&fired);
    rig.turn_until("three timers", move || done.borrow().len() == 3);
    assert_eq!(*fired.borrow(), ["early", "middle", "late"]);
}

#[test]
fn repeating_timer_fires_until_cancelled() {
    let mut rig = Rig::new();
    let fired: Fired = Rc::default();
    let mut ticks = 0;
    rig.owner(
        &fired,
        |cx, t| {
            t.repeating(cx, "tick", 5);
        },
        move |cx, t, label| {
            if label == "tick" {
                ticks += 1;
                if ticks == 3 {
                    let tick = t.id("tick");
                    assert!(cx.cancel_timer(tick));
                    // Fires well after another tick would have: when it
                    // does, the ticks have had every chance to go on.
                    t.set(cx, "sentinel", 30);
                }
            }
        },
    );
    let done = Rc::clone(&fired);
    rig.turn_until("the sentinel", move || done.borrow().last() == Some(&"sentinel"));
    assert_eq!(*fired.borrow(), ["tick", "tick", "tick", "sentinel"]);
    assert_eq!(rig.reactor.timer_count(), 0);
}

#[test]
fn zero_delay_timer_set_while_timers_fire_waits_for_a_later_turn() {
    let mut rig = Rig::new();
    let fired: Fired = Rc::default();
    rig.owner(
        &fired,
        |cx, t| {
            t.set(cx, "first", 1);
        },
        |cx, t, label| {
            if label == "first" {
                t.set(cx, "second", 0);
            }
        },
    );
    let done = Rc::clone(&fired);
    rig.turn_until("the first timer", move || !done.borrow().is_empty());
    assert_eq!(*fired.borrow(), ["first"], "not in the pass that set it");
    // Due already, so this turn does not wait, and fires it.
    rig.reactor.run_once(Some(STEP)).expect("turn");
    assert_eq!(*fired.borrow(), ["first", "second"]);
}

#[test]
fn timers_of_a_closed_connection_never_fire() {
    let mut rig = Rig::new();
    let closed_by_us: Fired = Rc::default();
    let closed_by_peer: Fired = Rc::default();
    let witness: Fired = Rc::default();
    let setup = |cx: &mut Context<'_>, t: &mut Labels| {
        t.set(cx, "one-shot", 20);
        t.repeating(cx, "repeating", 5);
    };
    let ours = rig.owner(&closed_by_us, setup, nothing);
    rig.owner(&closed_by_peer, setup, nothing);
    rig.owner(
        &witness,
        |cx, t| {
            t.set(cx, "witness", 100);
        },
        nothing,
    );

    // Closed by the server (the client's FIN ends the linger at once), and
    // closed by the peer (its FIN; the default `on_read_closed` closes).
    rig.reactor.close(ours);
    rig.clients.drain(..2);
    let done = (Rc::clone(&closed_by_us), Rc::clone(&closed_by_peer));
    rig.turn_until("both closed", move || {
        done.0.borrow().contains(&"closed") && done.1.borrow().contains(&"closed")
    });
    let witness_pending = usize::from(witness.borrow().is_empty());
    assert_eq!(
        rig.reactor.timer_count(),
        witness_pending,
        "only the witness is left"
    );

    let done = Rc::clone(&witness);
    rig.turn_until("the witness", move || !done.borrow().is_empty());
    assert_eq!(*witness.borrow(), ["witness"]);
    for fired in [&closed_by_us, &closed_by_peer] {
        assert_eq!(
            fired.borrow().last(),
            Some(&"closed"),
            "fired after on_close: {:?}",
            fired.borrow()
        );
    }
}
