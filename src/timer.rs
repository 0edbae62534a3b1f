//! Timers: a binary heap of deadlines over a registry of timer entries.
//!
//! Always true:
//! - a [`TimerId`] is a [`crate::Key`] into the timer registry, so an id
//!   kept after its timer fired (one-shot) or was cancelled never touches a
//!   timer made later in the same slot;
//! - timers with equal deadlines fire in the order they were set (or last
//!   reset);
//! - a timer set or reset while timers are expiring fires on a later pass,
//!   never in the pass that is running, even with a zero delay;
//! - a timer cancelled or reset by an earlier callback of the same pass does
//!   not fire in that pass;
//! - a repeating timer fires at most once per pass, whatever its period
//!   (zero included).
//!
//! Costs: set is O(log n). Reset to a *later* deadline, the common case for
//! idle timeouts pushed back on every message, is O(1): the heap keeps the
//! old deadline and the entry is moved when that deadline comes up. Reset to
//! an earlier deadline pushes a new heap item and leaves the old one to be
//! skipped. Cancel is O(1) and its heap item is skipped when it surfaces.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::registry::Registry;
use crate::token::Key;

/// Names one timer. Returned when a timer is set; passed back to the
/// handler when it fires; used to reset or cancel it.
///
/// Timers belong to a source and are set through its [`crate::Context`].
/// Here a connection sets three when it opens; they fire in deadline order,
/// equal deadlines in the order they were set, and the last stops the loop:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::cell::RefCell;
/// use std::net::TcpStream;
/// use std::rc::Rc;
/// use std::time::Duration;
/// use evloop::{Addr, Context, Reactor, StreamHandler, TimerId};
///
/// struct Timed {
///     names: Vec<(TimerId, &'static str)>,
///     fired: Rc<RefCell<Vec<&'static str>>>,
/// }
///
/// impl StreamHandler for Timed {
///     fn on_open(&mut self, cx: &mut Context<'_>) {
///         for (ms, name) in [(30, "slow"), (10, "fast"), (10, "fast, set later")] {
///             if let Some(id) = cx.set_timer(Duration::from_millis(ms)) {
///                 self.names.push((id, name));
///             }
///         }
///     }
///
///     fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
///         data.len()
///     }
///
///     fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
///         if let Some(&(_, name)) = self.names.iter().find(|(id, _)| *id == timer) {
///             self.fired.borrow_mut().push(name);
///             if name == "slow" {
///                 cx.stop();
///             }
///         }
///     }
/// }
///
/// let fired = Rc::new(RefCell::new(Vec::new()));
/// let log = Rc::clone(&fired);
/// let mut reactor = Reactor::new()?;
/// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, move |_: &Addr| Timed {
///     names: Vec::new(),
///     fired: Rc::clone(&log),
/// })?;
/// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
///
/// let _client = TcpStream::connect(addr)?; // its connection owns the timers
/// reactor.run()?;
/// assert_eq!(*fired.borrow(), ["fast", "fast, set later", "slow"]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(pub(crate) Key);

#[derive(Debug)]
struct Entry<T> {
    /// When the timer should fire.
    deadline: Instant,
    /// Order among equal deadlines: taken from a counter when set or reset.
    seq: u64,
    /// The deadline of this entry's live heap item, if it has one.
    queued: Option<Instant>,
    /// The period of a repeating timer.
    every: Option<Duration>,
    payload: T,
}

/// A heap item: `(deadline, seq, key)`, smallest first. It is live only if
/// its deadline equals the entry's `queued`; the first live item to surface
/// clears `queued`, so a duplicate is skipped.
type Item = Reverse<(Instant, u64, Key)>;

/// The set of pending timers of one reactor.
#[derive(Debug)]
pub(crate) struct Timers<T> {
    entries: Registry<Entry<T>>,
    heap: BinaryHeap<Item>,
    next_seq: u64,
}

impl<T: Copy> Timers<T> {
    pub(crate) fn new() -> Self {
        Timers {
            entries: Registry::new(),
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }

    fn take_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Sets a timer; `every` makes it repeat with that period. Returns
    /// `None` only when the timer table is full.
    pub(crate) fn set(&mut self, deadline: Instant, every: Option<Duration>, payload: T) -> Option<TimerId> {
        let seq = self.take_seq();
        let entry = Entry {
            deadline,
            seq,
            queued: Some(deadline),
            every,
            payload,
        };
        let key = self.entries.insert(entry).ok()?;
        self.heap.push(Reverse((deadline, seq, key)));
        Some(TimerId(key))
    }

    /// Moves a pending timer to a new deadline (a repeating one keeps its
    /// period from there). Returns false if the timer is gone.
    pub(crate) fn reset(&mut self, id: TimerId, deadline: Instant) -> bool {
        let seq = self.take_seq();
        let Some(entry) = self.entries.get_mut(id.0) else {
            return false;
        };
        entry.deadline = deadline;
        entry.seq = seq;
        match entry.queued {
            // The live item surfaces no later than the new deadline; it is
            // moved then (see `collect_due`). O(1), the idle-timeout case.
            Some(queued) if queued <= deadline => {}
            // Earlier, or not in the heap at all (collected this pass).
            _ => self.push(id.0, deadline, seq),
        }
        true
    }

    fn push(&mut self, key: Key, deadline: Instant, seq: u64) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.queued = Some(deadline);
            self.heap.push(Reverse((deadline, seq, key)));
        }
    }

    /// Cancels a timer. Returns its payload, or `None` if it was gone.
    pub(crate) fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.entries.remove(id.0).map(|entry| entry.payload)
    }

    /// Whether the timer is still pending.
    pub(crate) fn contains(&self, id: TimerId) -> bool {
        self.entries.contains(id.0)
    }

    /// How many timers are pending.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The earliest deadline of a pending timer. Items of cancelled or
    /// moved timers may make this earlier than the truth; the cost is one
    /// early wakeup that fires nothing.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((_, _, key))) = self.heap.peek() {
            if self.entries.contains(*key) {
                break;
            }
            self.heap.pop();
        }
        self.heap.peek().map(|Reverse((deadline, _, _))| *deadline)
    }

    /// Collects the timers due at `now` into `due`, in firing order, as
    /// `(id, seq)` pairs for [`Timers::take_due`]. Repeating timers are
    /// rescheduled here, one period on (or one period after `now`, if the
    /// loop fell that far behind, so a late loop does not fire a burst).
    pub(crate) fn collect_due(&mut self, now: Instant, due: &mut Vec<(TimerId, u64)>) {
        while let Some(&Reverse((deadline, _, key))) = self.heap.peek() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            let Some(entry) = self.entries.get_mut(key) else {
                continue; // cancelled
            };
            if entry.queued != Some(deadline) {
                continue; // a newer item for this entry is in the heap
            }
            entry.queued = None;
            if entry.deadline != deadline {
                // Reset while this item waited: move it to the real deadline,
                // which keeps equal deadlines in the order they were set.
                let (deadline, seq) = (entry.deadline, entry.seq);
                self.push(key, deadline, seq);
                continue;
            }
            let fire_seq = entry.seq;
            if let Some(every) = entry.every {
                let mut next = entry.deadline + every;
                if next <= now {
                    // Strictly after `now`, even with a zero period: this
                    // loop would otherwise collect the timer again, forever.
                    next = now + every.max(Duration::from_nanos(1));
                }
                entry.deadline = next;
                let seq = self.take_seq();
                if let Some(entry) = self.entries.get_mut(key) {
                    entry.seq = seq;
                }
                self.push(key, next, seq);
                due.push((TimerId(key), seq));
            } else {
                due.push((TimerId(key), fire_seq));
            }
        }
    }

    /// Takes one timer collected by [`Timers::collect_due`] for firing:
    /// its payload, if it was neither cancelled nor reset since. A one-shot
    /// timer is removed.
    pub(crate) fn take_due(&mut self, id: TimerId, seq: u64) -> Option<T> {
        let entry = self.entries.get(id.0)?;
        if entry.seq != seq {
            return None;
        }
        let payload = entry.payload;
        if entry.every.is_none() {
            self.entries.remove(id.0);
        }
        Some(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(timers: &mut Timers<u32>, now: Instant) -> Vec<u32> {
        let mut due = Vec::new();
        timers.collect_due(now, &mut due);
        due.into_iter()
            .filter_map(|(id, seq)| timers.take_due(id, seq))
            .collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fires_in_deadline_order_and_equal_deadlines_in_set_order() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.set(t0 + ms(20), None, 1);
        timers.set(t0 + ms(10), None, 2);
        timers.set(t0 + ms(20), None, 3);
        timers.set(t0 + ms(10), None, 4);
        assert_eq!(timers.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(fire(&mut timers, t0 + ms(5)), Vec::<u32>::new());
        assert_eq!(fire(&mut timers, t0 + ms(30)), vec![2, 4, 1, 3]);
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn cancelled_timer_does_not_fire_and_its_id_goes_stale() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let a = timers.set(t0 + ms(10), None, 1).unwrap();
        assert_eq!(timers.cancel(a), Some(1));
        let b = timers.set(t0 + ms(10), None, 2).unwrap();
        assert_eq!(a.0.index(), b.0.index(), "slot reused");
        assert_eq!(timers.cancel(a), None, "stale id cancels nothing");
        assert!(!timers.reset(a, t0), "stale id resets nothing");
        assert_eq!(fire(&mut timers, t0 + ms(10)), vec![2]);
    }

    #[test]
    fn reset_later_moves_the_deadline() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let a = timers.set(t0 + ms(10), None, 1).unwrap();
        assert!(timers.reset(a, t0 + ms(50)));
        assert_eq!(fire(&mut timers, t0 + ms(20)), Vec::<u32>::new());
        assert!(timers.contains(a));
        assert_eq!(timers.next_deadline(), Some(t0 + ms(50)));
        assert_eq!(fire(&mut timers, t0 + ms(50)), vec![1]);
    }

    #[test]
    fn reset_earlier_moves_the_deadline() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let a = timers.set(t0 + ms(50), None, 1).unwrap();
        assert!(timers.reset(a, t0 + ms(10)));
        assert_eq!(fire(&mut timers, t0 + ms(10)), vec![1]);
        assert_eq!(fire(&mut timers, t0 + ms(60)), Vec::<u32>::new());
    }

    #[test]
    fn many_resets_keep_the_heap_small() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let a = timers.set(t0 + ms(10), None, 1).unwrap();
        for i in 0..10_000 {
            timers.reset(a, t0 + ms(10 + i));
        }
        assert_eq!(timers.heap.len(), 1);
    }

    #[test]
    fn repeating_timer_fires_once_per_pass_and_keeps_its_period() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let a = timers.set(t0 + ms(10), Some(ms(10)), 7).unwrap();
        assert_eq!(fire(&mut timers, t0 + ms(10)), vec![7]);
        assert_eq!(timers.next_deadline(), Some(t0 + ms(20)));
        // A loop that fell far behind fires once, not a burst.
        assert_eq!(fire(&mut timers, t0 + ms(100)), vec![7]);
        assert_eq!(timers.next_deadline(), Some(t0 + ms(110)));
        assert_eq!(timers.cancel(a), Some(7));
        assert_eq!(fire(&mut timers, t0 + ms(200)), Vec::<u32>::new());
    }

    #[test]
    fn repeating_timer_with_a_zero_period_fires_once_per_pass() {
        let t0 = Instant::now();
        // On a thread, so that a pass that never ends fails the test
        // instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut timers = Timers::new();
            timers.set(t0, Some(Duration::ZERO), 7);
            let passes = [t0, t0, t0 + ms(1)].map(|now| fire(&mut timers, now));
            let _ = tx.send(passes);
        });
        let passes = rx.recv_timeout(Duration::from_secs(5)).expect("every pass ended");
        assert_eq!(passes, [vec![7], vec![], vec![7]]);
    }

    #[test]
    fn timer_cancelled_by_an_earlier_callback_of_the_pass_does_not_fire() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let a = timers.set(t0 + ms(10), None, 1).unwrap();
        let b = timers.set(t0 + ms(10), None, 2).unwrap();
        let mut due = Vec::new();
        timers.collect_due(t0 + ms(10), &mut due);
        assert_eq!(timers.take_due(due[0].0, due[0].1), Some(1));
        timers.cancel(b); // what the first callback did
        assert_eq!(timers.take_due(due[1].0, due[1].1), None);
        assert!(!timers.contains(a));
    }

    #[test]
    fn timer_set_during_expiry_fires_on_a_later_pass() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.set(t0, None, 1);
        let mut due = Vec::new();
        timers.collect_due(t0, &mut due);
        // A callback sets a zero-delay timer while the pass runs.
        timers.set(t0, None, 2);
        let fired: Vec<u32> = due
            .into_iter()
            .filter_map(|(id, seq)| timers.take_due(id, seq))
            .collect();
        assert_eq!(fired, vec![1]);
        assert_eq!(fire(&mut timers, t0), vec![2]);
    }

    #[test]
    fn reset_of_a_collected_timer_defers_it() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let a = timers.set(t0, None, 1).unwrap();
        let mut due = Vec::new();
        timers.collect_due(t0, &mut due);
        assert!(timers.reset(a, t0 + ms(5)));
        assert_eq!(timers.take_due(due[0].0, due[0].1), None);
        assert_eq!(fire(&mut timers, t0 + ms(5)), vec![1]);
    }
}
