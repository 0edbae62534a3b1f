//! Timers of the reactor itself (`Reactor::set_timer`, `set_repeating`)
//! and `on_start` hooks: one deadline order with the handlers' timers,
//! cancel and reset (also from an earlier callback of the same pass), a
//! zero delay set while timers fire, a panicking closure, output to
//! connections, a handle, and a graceful shutdown with a repeating timer
//! pending.
//!
//! The loop runs on the test thread, one turn at a time, so what fired is
//! recorded in an `Rc<RefCell<..>>` the test reads directly.
mod common;

use std::cell::{Cell, RefCell};
use std::io::Read;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use evloop::{Addr, Context, Key, Reactor, ReactorTimer, StreamHandler, TimerId};

type Fired = Rc<RefCell<Vec<&'static str>>>;

const STEP: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn reactor() -> Reactor {
    let _ = env_logger::builder().is_test(true).try_init();
    Reactor::new().expect("reactor")
}

/// Turns the loop until `done`, for at most [`STEP`].
#[track_caller]
fn turn_until(reactor: &mut Reactor, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        reactor.run_once(Some(ms(50))).expect("turn");
    }
}

/// Records `label` into `fired` when called.
fn record(fired: &Fired, label: &'static str) -> impl FnOnce(&mut Reactor) + 'static {
    let fired = Rc::clone(fired);
    move |_| fired.borrow_mut().push(label)
}

/// A connection's handler: records its key when it opens, and sets one
/// handler timer of `timer_ms`, recorded as "handler" when it fires.
struct Member {
    keys: Rc<RefCell<Vec<Key>>>,
    fired: Fired,
    timer_ms: Option<u64>,
}

impl StreamHandler for Member {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.keys.borrow_mut().push(cx.key());
        if let Some(after) = self.timer_ms {
            cx.set_timer(ms(after)).expect("timer set");
        }
    }
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        data.len()
    }
    fn on_timer(&mut self, _cx: &mut Context<'_>, _timer: TimerId) {
        self.fired.borrow_mut().push("handler");
    }
}

/// A listener of `Member`s; returns its key, its address and the keys of
/// the connections it opened.
fn listen(
    reactor: &mut Reactor,
    fired: &Fired,
    timer_ms: Option<u64>,
) -> (Key, std::net::SocketAddr, Rc<RefCell<Vec<Key>>>) {
    let keys: Rc<RefCell<Vec<Key>>> = Rc::default();
    let (opened, fired) = (Rc::clone(&keys), Rc::clone(fired));
    let listener = reactor
        .listen_tcp(any_port(), move |_: &Addr| Member {
            keys: Rc::clone(&opened),
            fired: Rc::clone(&fired),
            timer_ms,
        })
        .expect("listen");
    let addr = reactor
        .local_addr(listener)
        .and_then(|a| a.as_inet())
        .expect("addr");
    (listener, addr, keys)
}

#[test]
fn reactor_timers_fire_in_deadline_order_with_the_handlers_timers() {
    let mut reactor = reactor();
    let fired: Fired = Rc::default();
    let (_, addr, keys) = listen(&mut reactor, &fired, Some(60));
    let _client = connect(addr);
    let opened = Rc::clone(&keys);
    turn_until(&mut reactor, "the connection opened", move || {
        opened.borrow().len() == 1
    });
    // The handler's timer is due 60 ms after its connection opened: after
    // the first of these, before the last.
    reactor.set_timer(ms(120), record(&fired, "120")).expect("set");
    reactor.set_timer(ms(0), record(&fired, "0")).expect("set");
    reactor
        .set_timer(ms(120), record(&fired, "120, set later"))
        .expect("set");
    let done = Rc::clone(&fired);
    turn_until(&mut reactor, "four timers", move || done.borrow().len() == 4);
    assert_eq!(*fired.borrow(), ["0", "handler", "120", "120, set later"]);
    assert_eq!(reactor.timer_count(), 0, "one-shot timers are gone once fired");
}

#[test]
fn a_repeating_timer_fires_until_its_closure_cancels_it() {
    let mut reactor = reactor();
    let ticks = Rc::new(Cell::new(0));
    let own: Rc<Cell<Option<ReactorTimer>>> = Rc::default();
    let (count, me) = (Rc::clone(&ticks), Rc::clone(&own));
    let timer = reactor
        .set_repeating(ms(2), move |reactor| {
            count.set(count.get() + 1);
            if count.get() == 3 {
                let me = me.get().expect("its id");
                assert!(reactor.cancel_timer(me), "pending while it runs");
            }
        })
        .expect("set");
    own.set(Some(timer));
    let done = Rc::clone(&ticks);
    turn_until(&mut reactor, "three ticks", move || done.get() == 3);
    assert_eq!(reactor.timer_count(), 0);
    assert!(!reactor.cancel_timer(timer), "gone");
    assert!(!reactor.reset_timer(timer, ms(1)), "gone");
    // Well past another period: no fourth tick.
    reactor.run_once(Some(ms(20))).expect("turn");
    assert_eq!(ticks.get(), 3);
    drop(own);
    assert_eq!(Rc::strong_count(&ticks), 1, "its closure was dropped");
}

#[test]
fn a_zero_delay_timer_set_while_timers_fire_waits_for_a_later_turn() {
    let mut reactor = reactor();
    let fired: Fired = Rc::default();
    let log = Rc::clone(&fired);
    reactor
        .set_timer(Duration::ZERO, move |reactor| {
            log.borrow_mut().push("first");
            reactor
                .set_timer(Duration::ZERO, record(&log, "second"))
                .expect("set");
        })
        .expect("set");
    let done = Rc::clone(&fired);
    turn_until(&mut reactor, "the first timer", move || !done.borrow().is_empty());
    assert_eq!(*fired.borrow(), ["first"], "not in the pass that set it");
    // Due already, so this turn does not wait, and fires it.
    reactor.run_once(Some(STEP)).expect("turn");
    assert_eq!(*fired.borrow(), ["first", "second"]);
}

#[test]
fn a_timer_cancelled_or_reset_by_an_earlier_closure_of_the_pass_does_not_fire_in_it() {
    let mut reactor = reactor();
    let fired: Fired = Rc::default();
    let victims: Rc<RefCell<Vec<ReactorTimer>>> = Rc::default();
    let (log, targets) = (Rc::clone(&fired), Rc::clone(&victims));
    reactor
        .set_timer(ms(1), move |reactor| {
            log.borrow_mut().push("first");
            let targets = targets.borrow();
            assert!(reactor.cancel_timer(targets[0]));
            assert!(reactor.reset_timer(targets[1], ms(30)));
        })
        .expect("set");
    victims.borrow_mut().push(
        reactor
            .set_timer(ms(2), record(&fired, "cancelled"))
            .expect("set"),
    );
    victims
        .borrow_mut()
        .push(reactor.set_timer(ms(3), record(&fired, "reset")).expect("set"));
    // All three are due before the first turn: one pass collects them.
    std::thread::sleep(ms(5));
    reactor.run_once(Some(Duration::ZERO)).expect("turn");
    assert_eq!(*fired.borrow(), ["first"]);
    let done = Rc::clone(&fired);
    turn_until(&mut reactor, "the reset timer", move || done.borrow().len() == 2);
    assert_eq!(*fired.borrow(), ["first", "reset"]);
    assert_eq!(reactor.timer_count(), 0);
}

#[test]
fn a_panicking_closure_is_contained_and_its_repeating_timer_cancelled() {
    let mut reactor = reactor();
    let fired: Fired = Rc::default();
    reactor
        .set_timer(ms(1), |_| panic!("a one-shot timer's closure panics"))
        .expect("set");
    let calls = Rc::new(Cell::new(0));
    let count = Rc::clone(&calls);
    reactor
        .set_repeating(ms(1), move |_| {
            count.set(count.get() + 1);
            panic!("a repeating timer's closure panics");
        })
        .expect("set");
    reactor.set_timer(ms(40), record(&fired, "after")).expect("set");
    let done = Rc::clone(&fired);
    turn_until(&mut reactor, "the timer after the panics", move || {
        !done.borrow().is_empty()
    });
    assert_eq!(calls.get(), 1, "cancelled after its panic");
    assert_eq!(reactor.timer_count(), 0);
    assert_eq!(Rc::strong_count(&calls), 1, "the panicked closure was dropped");
}

#[test]
fn a_closure_sends_to_one_connection_and_broadcasts_to_all() {
    let mut reactor = reactor();
    let fired: Fired = Rc::default();
    let (listener, addr, keys) = listen(&mut reactor, &fired, None);
    let mut clients = [connect(addr), connect(addr)];
    let opened = Rc::clone(&keys);
    turn_until(&mut reactor, "two connections", move || {
        opened.borrow().len() == 2
    });
    let first = keys.borrow()[0];
    let sent = Rc::new(Cell::new((false, 0)));
    let result = Rc::clone(&sent);
    reactor
        .set_timer(ms(1), move |reactor| {
            let one = reactor.send_to(first, b"one ");
            let all = reactor.broadcast(listener, &Rc::from(&b"all"[..]));
            result.set((one, all));
        })
        .expect("set");
    let done = Rc::clone(&sent);
    turn_until(&mut reactor, "the timer", move || done.get().0);
    assert_eq!(sent.get(), (true, 2));
    // The output went out in the timer's turn; nothing else is needed.
    let [first, second] = &mut clients;
    assert_eq!(read_exact(first, 7), b"one all");
    assert_eq!(read_exact(second, 3), b"all");
}

#[test]
fn a_timer_set_through_a_handle_fires_and_is_cancelled_through_it() {
    let mut reactor = reactor();
    let handle = reactor.handle();
    let (tx, timers) = mpsc::channel();
    let fired = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for after in [ms(1), Duration::from_secs(3600)] {
        let (tx, fired) = (tx.clone(), std::sync::Arc::clone(&fired));
        assert!(handle.run(move |reactor| {
            let timer = reactor.set_timer(after, move |_| {
                fired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
            let _ = tx.send(timer.expect("set"));
        }));
    }
    reactor.run_once(Some(STEP)).expect("turn: the commands");
    let (_soon, late): (ReactorTimer, ReactorTimer) =
        (timers.recv().expect("id"), timers.recv().expect("id"));
    let count = std::sync::Arc::clone(&fired);
    turn_until(&mut reactor, "the first timer", move || {
        count.load(std::sync::atomic::Ordering::Relaxed) == 1
    });
    let (tx, cancelled) = mpsc::channel();
    assert!(handle.run(move |reactor| {
        let _ = tx.send(reactor.cancel_timer(late));
    }));
    reactor.run_once(Some(STEP)).expect("turn: the command");
    assert_eq!(cancelled.recv_timeout(STEP), Ok(true));
    assert_eq!(reactor.timer_count(), 0);
}

#[test]
fn a_shutdown_ends_the_loop_with_a_repeating_timer_pending_and_cancels_it() {
    let mut reactor = reactor();
    let fired: Fired = Rc::default();
    let (_, addr, keys) = listen(&mut reactor, &fired, None);
    let client = connect(addr);
    let opened = Rc::clone(&keys);
    turn_until(&mut reactor, "the connection opened", move || {
        opened.borrow().len() == 1
    });
    let ticks = Rc::new(Cell::new(0u32));
    let count = Rc::clone(&ticks);
    reactor
        .set_repeating(ms(1), move |_| count.set(count.get() + 1))
        .expect("set");

    reactor.shutdown(STEP);
    // The client has not closed: the connection lingers, waiting for its
    // FIN, and the timer goes on firing meanwhile.
    let before = ticks.get();
    let count = Rc::clone(&ticks);
    turn_until(&mut reactor, "a tick during the shutdown", move || {
        count.get() > before
    });
    assert!(reactor.is_shutting_down());

    // The client reads the server's FIN and closes: nothing is left but
    // the timer, which does not hold the loop.
    let mut client = client;
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("the server's FIN");
    drop(client);
    reactor.run().expect("run"); // returns once the connection is gone
    assert!(!reactor.is_shutting_down());
    assert_eq!(reactor.timer_count(), 0, "cancelled when the shutdown completed");
    assert_eq!(Rc::strong_count(&ticks), 1, "its closure was dropped");
}

#[test]
fn start_hooks_run_once_in_order_before_the_first_poll() {
    let mut reactor = reactor();
    let fired: Fired = Rc::default();
    reactor.on_start(record(&fired, "first"));
    let log = Rc::clone(&fired);
    reactor.on_start(move |reactor| {
        log.borrow_mut().push("second");
        // Due at once: fires in this same turn, at step 6.
        reactor
            .set_timer(Duration::ZERO, record(&log, "timer"))
            .expect("set");
        // Added once started: runs at the start of the next turn.
        reactor.on_start(record(&log, "added by a hook"));
    });
    assert_eq!(reactor.next_timeout(), Some(Duration::ZERO), "hooks to run");
    reactor.run_once(Some(STEP)).expect("turn");
    assert_eq!(*fired.borrow(), ["first", "second", "timer"]);
    assert_eq!(reactor.next_timeout(), Some(Duration::ZERO), "a hook to run");
    reactor.run_once(Some(Duration::ZERO)).expect("turn");
    assert_eq!(*fired.borrow(), ["first", "second", "timer", "added by a hook"]);
}
