//! Paced echo (`echo --rate R`): requests go out on a schedule, not when
//! answers come back.
//!
//! # Why pace
//!
//! The closed loop measures how fast a server can go; it cannot say what a
//! server costs at a given load, nor how long a request waits when the
//! server falls behind: a closed loop that stalls simply stops asking, and
//! the requests it did not send are never timed (coordinated omission). A
//! paced run asks at a fixed rate whatever happens, so the server's CPU per
//! request can be compared between servers at the same rate, and a stall
//! shows up in the latencies of every request it delayed.
//!
//! # The schedule ([`Pace`])
//!
//! The run has one schedule for all connections: request `k` (counting
//! over all of them) is due at `start + k / R` and belongs to connection
//! `k % conns`. So each connection asks at `R / conns` per second, and
//! connection `i` starts `i / R` after the others' starts: their requests
//! interleave evenly instead of leaving in bursts. The schedule starts once
//! every connection is open.
//!
//! A request that falls due while its connection already has `--depth`
//! requests in flight waits, and is counted in `late_issues`; it goes out
//! as soon as an answer makes room. Its latency, like every paced
//! request's, runs from the time it was *due*, not from the time it was
//! sent: the wait is part of what the server cost it, and a server that
//! stalls for 100 ms shows 100 ms on every request scheduled meanwhile
//! rather than on one.
//!
//! # Sending on time, cheaply ([`Pacer`], [`Pace::catch_up`])
//!
//! evloop's timers fire when the loop turns, and an idle loop sleeps in
//! `epoll_wait`, whose timeout is in whole milliseconds: a request due in
//! 0.3 ms would leave up to a millisecond late, and since latency counts
//! from the due time, that lateness would be measured as the server's. So
//! the pacer is a custom source of its own over a `timerfd`, a descriptor
//! the kernel makes readable at a deadline to the microsecond.
//!
//! Waking up for every request would be precise but dear: at 50,000
//! requests per second that is a wake-up every 20 us, and a wake-up costs
//! the client more than the request it sends (on a virtual machine, far
//! more). But a loaded loop is awake anyway: answers keep arriving. So
//! every answer also sends whatever has fallen due meanwhile, on any
//! connection ([`Pace::catch_up`]), and the timer is only there for the
//! quiet gaps: it is set for the next due time, but never sooner than
//! [`MIN_GAP`] from the moment it is set. At a low rate every request is
//! woken for, on time; at a high one the answers send nearly all of them
//! and the timer wakes the loop at most 5,000 times a second. Either way
//! requests are sent in schedule order, and a late wake-up catches up
//! rather than loses requests.
//!
//! A connection's state (its byte stream, its requests in flight and how
//! many are due) is a [`Lane`], shared by whoever catches the schedule up
//! (the pacer, or the handler of any connection an answer came to), which
//! sends the requests that fall due through
//! [`Context::source`](evloop::Context::source) with the lane's key, and
//! the connection's own handler ([`PacedEcho`] inside the closed loop's
//! `Client`), which checks its answers and sends what was waiting for
//! room. All of them run on the one thread, one callback at a time, so a
//! `RefCell` per lane is all the sharing needs. The bytes are the closed
//! loop's: the same pattern, checked the same way.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use evloop::{Context, Event, FdSource, Key, SourceHandler};

use crate::{EchoStream, Exchange, Plan, Run};

/// The highest `--rate`, requests per second.
pub(crate) const MAX_RATE: f64 = 10_000_000.0;

/// The shortest time between two wake-ups of the pacer's timer: while the
/// load keeps the loop busy, answers do the precise work (see
/// [`Pace::catch_up`]), and the timer only fills the gaps.
const MIN_GAP: Duration = Duration::from_micros(200);

/// How often the pacer looks whether every connection is open, before the
/// schedule starts.
const WAITING_TICK: Duration = Duration::from_millis(1);

/// The schedule every paced connection follows, and their lanes.
pub(crate) struct Pace {
    /// Seconds between two requests of the run: `1 / rate`.
    interval: f64,
    depth: usize,
    /// When request 0 was due; `None` until every connection is open.
    start: Cell<Option<Instant>>,
    /// The next request of the schedule to fall due, counted over all
    /// connections.
    next: Cell<u64>,
    /// One per connection, by number.
    lanes: Vec<RefCell<Lane>>,
}

impl Pace {
    /// A schedule of `rate` requests per second over the plan's
    /// connections, each with its echo stream.
    pub(crate) fn new(rate: f64, plan: &Plan, pattern: &Rc<[u8]>) -> Rc<Pace> {
        let lanes = (0..plan.conns as u64)
            .map(|id| {
                RefCell::new(Lane {
                    id,
                    key: None,
                    gone: false,
                    due: 0,
                    issued: 0,
                    echo: EchoStream::new(id, plan, pattern),
                })
            })
            .collect();
        Rc::new(Pace {
            interval: 1.0 / rate,
            depth: plan.depth,
            start: Cell::new(None),
            next: Cell::new(0),
            lanes,
        })
    }

    /// When request `k` of the run is due (the schedule has started).
    fn due_at(&self, start: Instant, k: u64) -> Instant {
        start + Duration::from_secs_f64(k as f64 * self.interval)
    }

    /// When the next request of the schedule falls due.
    fn next_due(&self) -> Option<Instant> {
        self.start.get().map(|start| self.due_at(start, self.next.get()))
    }

    /// Makes due every request of the schedule whose time has come by
    /// `now`, in order, and sends each that its connection has room for.
    /// Called by the pacer's tick, and after answers: the loop is awake
    /// then anyway, and a request sent then need not wait for the tick.
    fn catch_up(&self, cx: &mut Context<'_>, run: &mut Run, now: Instant) {
        let Some(start) = self.start.get() else {
            return;
        };
        let conns = self.lanes.len() as u64;
        let mut next = self.next.get();
        while !run.over && self.due_at(start, next) <= now {
            let id = next % conns;
            next += 1;
            let mut lane = self.lanes[id as usize].borrow_mut();
            let Some(key) = lane.key.filter(|_| !lane.gone) else {
                continue;
            };
            lane.due += 1;
            if lane.echo.in_flight() >= self.depth && run.measuring && !run.over {
                run.late_issues += 1;
            }
            // A refused send means the connection is closing: its handler
            // hears of that and counts it.
            lane.issue_due(self, run, |bytes| cx.source(key).send(bytes));
        }
        self.next.set(next);
    }
}

/// One paced connection's state, shared by the connection's handler and
/// whoever catches the schedule up.
struct Lane {
    /// The connection's number: its requests are those `k` of the run
    /// with `k % conns == id`.
    id: u64,
    /// Known once the connection is open.
    key: Option<Key>,
    /// The connection is closed (or failed): no more requests fall due.
    gone: bool,
    /// This connection's requests due so far, and issued so far; the ones
    /// between wait for room.
    due: u64,
    issued: u64,
    /// The byte stream, and the due times of the requests in flight.
    echo: EchoStream,
}

impl Lane {
    /// Issues the requests that are due and fit under `--depth`, each
    /// counted from its due time, as one send through `send`. Returns
    /// `false` if the connection refused the bytes.
    fn issue_due(&mut self, pace: &Pace, run: &mut Run, send: impl FnMut(&[u8]) -> bool) -> bool {
        let Some(start) = pace.start.get() else {
            return true;
        };
        let room = pace.depth.saturating_sub(self.echo.in_flight()) as u64;
        let conns = pace.lanes.len() as u64;
        let mut count = 0;
        while count < room && self.issued < self.due {
            let due = pace.due_at(start, self.id + self.issued * conns);
            if self.echo.admit(run, 1, due) == 0 {
                break; // the run wants no more (`--requests`)
            }
            self.issued += 1;
            count += 1;
        }
        self.echo.send_requests(count as usize, send)
    }
}

/// The exchange of a paced connection, inside the closed loop's `Client`
/// (which opens, fails and closes it like any other): answers are checked
/// by its [`EchoStream`], and each answer makes room for a request that
/// was waiting, and catches the schedule up. Requests that fall due while
/// no answer comes are sent by the [`Pacer`].
pub(crate) struct PacedEcho {
    pace: Rc<Pace>,
    id: usize,
}

impl PacedEcho {
    /// The exchange of connection `id`.
    pub(crate) fn new(pace: &Rc<Pace>, id: u64) -> PacedEcho {
        PacedEcho {
            pace: Rc::clone(pace),
            id: id as usize,
        }
    }
}

impl Exchange for PacedEcho {
    /// Called when the connection opens and after answers: sends whatever
    /// is due and fits (`n` and `now` do not matter here; the schedule
    /// does). The first call tells the lane its connection's key.
    fn issue(&mut self, cx: &mut Context<'_>, run: &mut Run, _n: usize, now: Instant) -> bool {
        let mut lane = self.pace.lanes[self.id].borrow_mut();
        lane.key.get_or_insert(cx.key());
        if !lane.issue_due(&self.pace, run, |bytes| cx.send(bytes)) {
            return false;
        }
        drop(lane);
        self.pace.catch_up(cx, run, now);
        true
    }

    fn receive(&mut self, run: &mut Run, data: &[u8], now: Instant) -> Result<(usize, usize), String> {
        self.pace.lanes[self.id].borrow_mut().echo.receive(run, data, now)
    }

    fn drop_in_flight(&mut self) -> u64 {
        let mut lane = self.pace.lanes[self.id].borrow_mut();
        lane.gone = true;
        lane.echo.drop_in_flight()
    }
}

/// The source that makes requests due when no answer does: a `timerfd`,
/// ticking every [`WAITING_TICK`] until every connection is open, then set
/// for each next due time (at least [`MIN_GAP`] ahead).
pub(crate) struct Pacer {
    /// What is registered: the timer's descriptor, borrowed from `timer`.
    source: FdSource,
    timer: OwnedFd,
    pace: Rc<Pace>,
    run: Rc<RefCell<Run>>,
}

impl Pacer {
    /// A pacer for `pace`, its timer ticking while it waits for the
    /// connections.
    ///
    /// # Errors
    ///
    /// The timer could not be made (out of descriptors).
    pub(crate) fn new(pace: &Rc<Pace>, run: &Rc<RefCell<Run>>) -> io::Result<Pacer> {
        // SAFETY: timerfd_create takes no pointers; it returns a new
        // descriptor or -1.
        let fd =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let timer = unsafe { OwnedFd::from_raw_fd(fd) };
        let pacer = Pacer {
            source: FdSource::new(timer.as_raw_fd()),
            timer,
            pace: Rc::clone(pace),
            run: Rc::clone(run),
        };
        pacer.arm(WAITING_TICK, WAITING_TICK)?;
        Ok(pacer)
    }

    /// Makes the timer fire `after` from now, and then every `every`
    /// (zero: once). A zero `after` stops it.
    fn arm(&self, after: Duration, every: Duration) -> io::Result<()> {
        let spec = |d: Duration| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        };
        let value = libc::itimerspec {
            it_interval: spec(every),
            it_value: spec(after),
        };
        // SAFETY: timerfd_settime on a timer this pacer owns; it reads the
        // initialised `value` and, given null, writes nothing back.
        let rc = unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &value, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the timer's count of ticks, which makes it quiet until the
    /// next one (its value does not matter: the schedule says what is due).
    fn drain(&self) {
        let mut ticks = [0u8; 8];
        // SAFETY: read(2) into a buffer of exactly the length given, from a
        // descriptor this pacer owns.
        unsafe { libc::read(self.timer.as_raw_fd(), ticks.as_mut_ptr().cast(), ticks.len()) };
    }
}

impl SourceHandler for Pacer {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.source
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
        self.drain();
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        let now = Instant::now();
        if self.pace.start.get().is_none() {
            if run.warm_end.is_none() {
                return; // some connection is still opening
            }
            // Every connection is open (or failed): the schedule starts.
            self.pace.start.set(Some(now));
        }
        self.pace.catch_up(cx, &mut run, now);
        run.observe(now);
        if run.over {
            let _ = self.arm(Duration::ZERO, Duration::ZERO);
            return cx.stop();
        }
        // Wake up when the next request falls due, but not before MIN_GAP
        // has passed: if the load keeps the loop busy, answers will have
        // sent it by then.
        let next = self.pace.next_due().unwrap_or(now);
        let after = next.saturating_duration_since(Instant::now()).max(MIN_GAP);
        if let Err(err) = self.arm(after, Duration::ZERO) {
            run.error(format_args!("cannot set the pacer's timer: {err}"));
            run.time_out(now);
            cx.stop();
        }
    }
}
