//! Timers of the reactor itself: [`Reactor::set_timer`] and
//! [`Reactor::set_repeating`], with a closure that gets the reactor. A
//! program that needs a timer no source owns (a periodic sweep, a
//! deadline for the whole server) sets one here, with no source to hang it
//! on.
//!
//! They live on the loop's one timer heap (`src/timer.rs`) as
//! [`TimerTask::Reactor`], beside the handlers' timers: they fire at step
//! 6, in deadline order with the others, and obey the heap's rules (a
//! timer set while timers fire fires on a later pass; one cancelled or
//! reset by an earlier callback of the pass does not fire in it; a
//! repeating timer fires at most once per pass). The heap's payloads are
//! plain values, so the closures are kept here, by timer id.
//!
//! Always true:
//! - a closure runs on the reactor's thread, at step 6, with the whole
//!   reactor, and is followed by the deferred work it caused;
//! - a one-shot timer's closure runs at most once and is dropped after it
//!   ran or when the timer is cancelled; a repeating timer's, when it is
//!   cancelled, when it panics, or with the reactor;
//! - a closure that panics is caught like a handler (`src/handler.rs`):
//!   logged at error level, and the loop goes on; a repeating timer whose
//!   closure panicked is cancelled;
//! - timers never hold a graceful shutdown open: they go on firing while
//!   connections drain, and when the shutdown completes every reactor
//!   timer still pending is cancelled, as every source is removed.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::handler::guarded;
use crate::services::TimerTask;
use crate::{Error, Reactor, TimerId};

/// Names a timer of the reactor, set with [`Reactor::set_timer`] or
/// [`Reactor::set_repeating`]: to reset or cancel it. Like a [`TimerId`],
/// an id kept after its timer is gone (fired once, or cancelled) names
/// nothing, never a timer set later. It is a plain value (`Send`), so a
/// [`crate::Handle::run`] closure may send it to another thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReactorTimer(TimerId);

/// The closure of a reactor timer.
pub(super) enum Callback {
    Once(Box<dyn FnOnce(&mut Reactor)>),
    Every(Box<dyn FnMut(&mut Reactor)>),
}

/// The closures of the pending reactor timers, by timer id.
pub(super) type Callbacks = HashMap<TimerId, Callback>;

/// How a reactor timer is named in the log line of a caught panic.
struct Named(TimerId);

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reactor timer {}", self.0 .0)
    }
}

impl Reactor {
    /// Runs `f` once with the reactor, `after` from now (counted from this
    /// call: the reactor may be called between turns). The timer belongs
    /// to the reactor, not to a source: it needs no connection, and
    /// nothing but [`Reactor::cancel_timer`] or a completed shutdown
    /// removes it. It fires at step 6 of a turn, in deadline order with
    /// the handlers' timers. A pending timer is a reason for the poll to
    /// wake, not to go on running: [`Reactor::run`] still returns on
    /// [`Reactor::stop`] or at the end of a shutdown.
    ///
    /// `f` may do anything the reactor's owner can: set or cancel timers,
    /// [`send_to`](Reactor::send_to) or [`broadcast`](Reactor::broadcast)
    /// to connections, stop or shut down the reactor. It must not block,
    /// nor call [`run`](Reactor::run) or [`run_once`](Reactor::run_once).
    /// If it panics, the panic is caught and logged, and the loop goes on.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// use evloop::Reactor;
    ///
    /// let mut reactor = Reactor::new()?;
    /// let fired = Rc::new(Cell::new(false));
    /// let flag = Rc::clone(&fired);
    /// reactor.set_timer(Duration::from_millis(10), move |reactor| {
    ///     flag.set(true);
    ///     reactor.stop(); // `run` returns at the end of this turn
    /// })?;
    /// reactor.run()?; // no source at all: no dummy pipe for the timer
    /// assert!(fired.get());
    /// assert_eq!(reactor.timer_count(), 0); // a one-shot timer is gone
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Full`] if the timer table is full.
    pub fn set_timer(
        &mut self,
        after: Duration,
        f: impl FnOnce(&mut Reactor) + 'static,
    ) -> Result<ReactorTimer, Error> {
        self.add_timer(after, None, Callback::Once(Box::new(f)))
    }

    /// Runs `f` with the reactor every `every`, from `every` after this
    /// call, until the timer is cancelled ([`Reactor::cancel_timer`], a
    /// panic in `f`, or a completed shutdown). A loop that fell behind
    /// runs it once, not in a burst; it runs at most once per turn,
    /// whatever the period. Otherwise as [`Reactor::set_timer`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// use evloop::Reactor;
    ///
    /// let mut reactor = Reactor::new()?;
    /// let ticks = Rc::new(Cell::new(0));
    /// let count = Rc::clone(&ticks);
    /// let timer = reactor.set_repeating(Duration::from_millis(5), move |reactor| {
    ///     count.set(count.get() + 1);
    ///     if count.get() == 3 {
    ///         reactor.stop();
    ///     }
    /// })?;
    /// reactor.run()?;
    /// assert_eq!(ticks.get(), 3);
    /// assert!(reactor.cancel_timer(timer)); // it was still pending
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Full`] if the timer table is full.
    pub fn set_repeating(
        &mut self,
        every: Duration,
        f: impl FnMut(&mut Reactor) + 'static,
    ) -> Result<ReactorTimer, Error> {
        self.add_timer(every, Some(every), Callback::Every(Box::new(f)))
    }

    fn add_timer(
        &mut self,
        after: Duration,
        every: Option<Duration>,
        callback: Callback,
    ) -> Result<ReactorTimer, Error> {
        let deadline = Instant::now() + after;
        let id = self
            .core
            .services
            .timers
            .set(deadline, every, TimerTask::Reactor)
            .ok_or(Error::Full)?;
        self.callbacks.insert(id, callback);
        Ok(ReactorTimer(id))
    }

    /// Moves a pending timer to fire `after` from now (a repeating one
    /// keeps its period from there). Pushing a timer later costs O(1).
    /// Returns `false` if it is gone: fired (one-shot) or cancelled.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use evloop::Reactor;
    ///
    /// let mut reactor = Reactor::new()?;
    /// let timer = reactor.set_timer(Duration::from_millis(1), |_| panic!("it was pushed back"))?;
    /// assert!(reactor.reset_timer(timer, Duration::from_secs(3600)));
    /// reactor.run_once(Some(Duration::from_millis(20)))?; // past the first deadline
    /// assert_eq!(reactor.timer_count(), 1); // still pending, not fired
    /// # Ok(())
    /// # }
    /// ```
    pub fn reset_timer(&mut self, timer: ReactorTimer, after: Duration) -> bool {
        self.core.services.timers.reset(timer.0, Instant::now() + after)
    }

    /// Cancels a timer: it does not fire again (nor at all, if it had not
    /// yet), even if it is due in the pass that is running, and its
    /// closure is dropped, unless it is the closure running now, which
    /// cancels its own timer. Returns `false` if it was already gone.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use evloop::Reactor;
    ///
    /// let mut reactor = Reactor::new()?;
    /// let timer = reactor.set_timer(Duration::from_secs(3600), |_| unreachable!("cancelled"))?;
    /// assert_eq!(reactor.timer_count(), 1);
    /// assert!(reactor.cancel_timer(timer));
    /// assert!(!reactor.cancel_timer(timer), "already gone");
    /// assert_eq!(reactor.timer_count(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn cancel_timer(&mut self, timer: ReactorTimer) -> bool {
        self.callbacks.remove(&timer.0);
        self.core.services.timers.cancel(timer.0).is_some()
    }

    /// Step 6 for a reactor timer that is due: runs its closure under the
    /// panic guard. A repeating timer's closure is taken out while it
    /// runs and put back if its timer is still pending after.
    pub(super) fn fire_reactor_timer(&mut self, id: TimerId) {
        let Some(callback) = self.callbacks.remove(&id) else {
            return;
        };
        match callback {
            Callback::Once(f) => {
                let started = self.core.callback_start();
                let back = guarded(Named(id), "set_timer", "the timer is gone", || f(self));
                self.core.callback_done(started, None, "set_timer");
                if back.is_none() {
                    self.core.note_panic(None, "set_timer");
                }
            }
            Callback::Every(mut f) => {
                let started = self.core.callback_start();
                let back = guarded(Named(id), "set_repeating", "cancelling the timer", || {
                    f(self);
                    f
                });
                self.core.callback_done(started, None, "set_repeating");
                if back.is_none() {
                    self.core.note_panic(None, "set_repeating");
                }
                match back {
                    Some(f) if self.core.services.timers.contains(id) => {
                        self.callbacks.insert(id, Callback::Every(f));
                    }
                    // It cancelled itself: dropped here.
                    Some(_) => {}
                    None => {
                        self.core.services.timers.cancel(id);
                    }
                }
            }
        }
        self.core.run_deferred();
    }

    /// Cancels every reactor timer, at the end of a shutdown.
    pub(super) fn cancel_reactor_timers(&mut self) {
        for (id, _) in std::mem::take(&mut self.callbacks) {
            self.core.services.timers.cancel(id);
        }
    }
}
