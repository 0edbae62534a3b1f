//! Timers through the reactor: order, equal deadlines, cancel, reset,
//! repeat, a timer set while timers fire, and timers of a closed source.
//! The loop is driven on the test thread, one turn at a time.
mod common;

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::STEP;
use evloop::{CloseReason, Context, Event, Interest, Reactor, SourceHandler, TimerId};

type Fired = Rc<RefCell<Vec<&'static str>>>;

/// What a timer owner does when it is first ready and when a timer fires.
enum Plan {
    /// Five timers; one cancelled, one moved earlier.
    Order,
    /// One repeating timer, cancelled after three ticks.
    Repeat,
    /// A timer whose callback sets a zero-delay timer.
    ZeroDelayFromCallback,
}

/// A custom source that never becomes ready: just an owner for timers.
struct TimerOwner {
    pipe: mio::unix::pipe::Receiver,
    sender: mio::unix::pipe::Sender,
    fired: Fired,
    labels: Vec<(TimerId, &'static str)>,
    plan: Plan,
    repeats: usize,
}

impl TimerOwner {
    fn new(fired: &Fired, plan: Plan) -> TimerOwner {
        let (sender, pipe) = mio::unix::pipe::new().expect("pipe");
        TimerOwner {
            pipe,
            sender,
            fired: Rc::clone(fired),
            labels: Vec::new(),
            plan,
            repeats: 0,
        }
    }

    fn label(&self, id: TimerId) -> &'static str {
        self.labels.iter().find(|(t, _)| *t == id).map_or("?", |(_, l)| l)
    }
}

impl SourceHandler for TimerOwner {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.pipe
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
        // The first readiness report is our cue to set the timers: the
        // handler needs a context to set them.
        if !self.labels.is_empty() {
            return;
        }
        let ms = Duration::from_millis;
        match self.plan {
            Plan::Order => {
                for (label, delay) in [("c30", 30), ("a10", 10), ("b20a", 20), ("b20b", 20), ("x15", 15)] {
                    let id = cx.set_timer(ms(delay)).expect("timer");
                    self.labels.push((id, label));
                }
                let cancelled = self.labels[4].0;
                assert!(cx.cancel_timer(cancelled));
                assert!(!cx.cancel_timer(cancelled), "cancelling twice finds nothing");
                let moved = self.labels[0].0;
                assert!(cx.reset_timer(moved, ms(5)), "c30 moves to 5 ms");
            }
            Plan::Repeat => {
                let id = cx.set_repeating(ms(5)).expect("timer");
                self.labels.push((id, "tick"));
            }
            Plan::ZeroDelayFromCallback => {
                let id = cx.set_timer(ms(1)).expect("timer");
                self.labels.push((id, "first"));
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let label = self.label(timer);
        self.fired.borrow_mut().push(label);
        match self.plan {
            Plan::Order => {}
            Plan::Repeat => {
                self.repeats += 1;
                if self.repeats == 3 {
                    assert!(cx.cancel_timer(timer));
                }
            }
            Plan::ZeroDelayFromCallback => {
                if label == "first" {
                    let id = cx.set_timer(Duration::ZERO).expect("timer");
                    self.labels.push((id, "second"));
                    self.fired.borrow_mut().push("turn-end-marker");
                }
            }
        }
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, _reason: &CloseReason) {
        self.fired.borrow_mut().push("closed");
    }
}

/// Registers a timer owner and makes its pipe readable once, so that its
/// `on_ready` runs on the first turn and sets the plan's timers.
fn owner(reactor: &mut Reactor, fired: &Fired, plan: Plan) -> evloop::Key {
    let mut handler = TimerOwner::new(fired, plan);
    handler.sender.write_all(b"!").expect("pipe write");
    reactor.register(handler, Interest::READABLE).expect("register")
}

#[track_caller]
fn turn_until(reactor: &mut Reactor, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        reactor.run_once(Some(Duration::from_millis(50))).expect("turn");
    }
}

#[test]
fn timers_fire_in_deadline_order_equal_ones_in_set_order_cancelled_never() {
    let mut reactor = Reactor::new().expect("reactor");
    let fired: Fired = Rc::default();
    owner(&mut reactor, &fired, Plan::Order);
    turn_until(&mut reactor, "four timers", || fired.borrow().len() == 4);
    assert_eq!(*fired.borrow(), ["c30", "a10", "b20a", "b20b"]);
    // Nothing else is pending: the cancelled one is gone for good.
    assert_eq!(reactor.timer_count(), 0);
}

#[test]
fn repeating_timer_fires_until_cancelled() {
    let mut reactor = Reactor::new().expect("reactor");
    let fired: Fired = Rc::default();
    owner(&mut reactor, &fired, Plan::Repeat);
    turn_until(&mut reactor, "three ticks", || fired.borrow().len() == 3);
    assert_eq!(reactor.timer_count(), 0, "cancelled after the third tick");
    let end = Instant::now() + Duration::from_millis(30);
    while Instant::now() < end {
        reactor.run_once(Some(Duration::from_millis(10))).expect("turn");
    }
    assert_eq!(fired.borrow().len(), 3);
}

#[test]
fn zero_delay_timer_set_while_timers_fire_waits_for_a_later_turn() {
    let mut reactor = Reactor::new().expect("reactor");
    let fired: Fired = Rc::default();
    owner(&mut reactor, &fired, Plan::ZeroDelayFromCallback);
    turn_until(&mut reactor, "first timer", || !fired.borrow().is_empty());
    assert_eq!(
        *fired.borrow(),
        ["first", "turn-end-marker"],
        "not in the same pass"
    );
    reactor.run_once(Some(Duration::ZERO)).expect("turn");
    assert_eq!(*fired.borrow(), ["first", "turn-end-marker", "second"]);
}

#[test]
fn timers_of_a_closed_source_never_fire() {
    let mut reactor = Reactor::new().expect("reactor");
    let fired: Fired = Rc::default();
    let key = owner(&mut reactor, &fired, Plan::Order);
    let deadline = Instant::now() + STEP;
    while reactor.timer_count() == 0 {
        assert!(Instant::now() < deadline, "timers were never set");
        reactor.run_once(Some(Duration::from_millis(10))).expect("turn");
    }
    reactor.close(key);
    assert_eq!(*fired.borrow(), ["closed"]);
    assert_eq!(reactor.timer_count(), 0, "closing cancels the source's timers");
    let end = Instant::now() + Duration::from_millis(50);
    while Instant::now() < end {
        reactor.run_once(Some(Duration::from_millis(10))).expect("turn");
    }
    assert_eq!(*fired.borrow(), ["closed"]);
}
