//! The idle mode: what an open connection that does nothing costs a server.
//!
//! ```text
//! loadgen idle --tcp ADDR --conns N --hold SECS --pid PID[,PID...]
//!              [--timeout SECS] [--batch B]
//! ```
//!
//! # How it measures
//!
//! The server's open descriptors (the entries of `/proc/PID/fd`) and its
//! resident memory (`VmRSS` in `/proc/PID/status`) are read first, once
//! the descriptors hold still (a server may still be closing the
//! connections of a run that just ended). Then
//! `--conns` TCP connections are opened, and none of them ever sends a
//! byte. A connection is complete for the client as soon as the kernel
//! has it in the server's accept queue, before the server has accepted it;
//! so the count that tells how many the server really holds is its
//! descriptors, which the clock reads every [`POLL`] until they have grown
//! by `--conns` (or `--timeout` passes). The connections then stay open,
//! idle, for `--hold` seconds, which leaves time for anything the server
//! does lazily; then its memory is read again. The growth divided by the
//! connections is what one idle connection costs: socket buffers are the
//! kernel's and do not count, the server's own bookkeeping does.
//!
//! With several `--pid`, their memory and descriptors are summed.
//!
//! Measure a freshly started server: the memory a server used for the
//! connections of an earlier run is usually still its own (its allocator
//! keeps freed memory for reuse), and a second run then shows little or
//! no growth.
//!
//! # Opening many connections
//!
//! A listener's accept queue is bounded (its backlog: 128 for a listener
//! bound by Rust's standard library, mio or tokio). When it is full, a SYN
//! is dropped and tried again a second later, and worse, the last ACK of a
//! handshake is dropped: the client holds a connection the server never
//! gets until its kernel resends the SYN-ACK, which may take longer than
//! the run. A connect completes for the client when the connection enters
//! that queue, before the server has accepted it, so the client cannot
//! see the queue fill. So the connections are opened in batches of
//! `--batch` (default 100, under 128), and the next batch waits until
//! every connect of the one before has an outcome *and* the server's
//! descriptors show it has accepted every connection open so far.
//! A connect refused outright (`ECONNREFUSED`), or one the client's kernel
//! cannot start for now (`EAGAIN`), is tried again a tick ([`TICK`]) later,
//! up to [`ATTEMPTS`] times.
//!
//! # Output
//!
//! One JSON line: `mode` (`idle`), `addr`, `conns`, `accepted` (the growth
//! of the server's descriptors at the end), `open` (connections still open
//! on this side at the end), `rss_before_kib`, `rss_after_kib`,
//! `bytes_per_conn` (the growth of the server's memory per connection, in
//! bytes, rounded; negative if it shrank), `hold_s`, `ok` (every
//! connection was accepted and none was closed), `errors`. The exit status
//! is 1 when not `ok`.

use std::cell::RefCell;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use clap::Args;
use evloop::{CloseReason, Context, Interest, Reactor, StreamHandler, TimerId};

use crate::driver::{Driver, Script};
use crate::{common, raise_nofile, Json, Shown, MAX_CONNS};

/// How often the clock opens the next batch and retries refused connects.
const TICK: Duration = Duration::from_millis(5);

/// How often the server's descriptors are counted while waiting for them.
const POLL: Duration = Duration::from_millis(50);

/// The longest wait for the server's descriptors to hold still before the
/// first connect.
const STEADY_WAIT: Duration = Duration::from_secs(2);

/// Connects tried per connection before a refusal counts as an error.
const ATTEMPTS: u32 = 100;

/// The idle mode's command line.
#[derive(Args)]
pub(crate) struct IdleFlags {
    /// Server's TCP address
    #[arg(long, value_name = "ADDR")]
    tcp: SocketAddr,
    /// Connections to open and keep idle
    #[arg(long, value_name = "N")]
    conns: usize,
    /// Seconds to keep them open once the server holds them all, before
    /// its memory is read again
    #[arg(long, value_name = "SECS", value_parser = common::seconds)]
    hold: Duration,
    /// The server's process ids: their memory and descriptors are read
    /// (summed)
    #[arg(long, value_name = "PID[,PID...]", value_delimiter = ',', required = true)]
    pid: Vec<u32>,
    /// Seconds the server gets to accept every connection
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = common::seconds)]
    timeout: Duration,
    /// Connects in flight at once
    #[arg(long, value_name = "B", default_value_t = 100)]
    batch: usize,
    #[command(flatten)]
    tls: crate::tls::TlsFlags,
}

/// Where the run stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Connections are being opened.
    Opening,
    /// Every connect has an outcome; waiting for the server's descriptors.
    Waiting,
    /// The server holds them all; time passes.
    Holding,
}

/// The state of the run, shared by the clock and the connections.
struct IdleRun {
    addr: SocketAddr,
    /// TLS (`--tls`): each connection makes its handshake, then is idle.
    tls: Option<crate::tls::Tls>,
    conns: usize,
    /// Connections not opened yet, last first, with the attempts so far.
    waiting: Vec<(usize, u32)>,
    /// Refused connects to try again at the next tick.
    retry: Vec<(usize, u32)>,
    /// Connects started and not yet answered.
    connecting: usize,
    /// Connections open now.
    open: usize,
    /// Connections that could not be opened.
    failed: usize,
    /// Open connections that were closed (by the server, or by an error).
    closed: usize,
    /// The growth of the server's descriptors at the last count.
    accepted: u64,
    /// `--timeout` passed before the server held every connection.
    timed_out: bool,
    errors: u64,
    shown: Shown,
    /// The run is over: what happens to connections now is not counted.
    over: bool,
}

impl IdleRun {
    /// Counts an error and prints it (the first few).
    fn error(&mut self, what: std::fmt::Arguments<'_>) {
        if self.over {
            return;
        }
        self.errors += 1;
        self.shown.print(what);
    }

    /// Starts the connect of connection `id` (attempt `attempts + 1`).
    fn connect(&mut self, run: &Rc<RefCell<IdleRun>>, cx: &mut Context<'_>, id: usize, attempts: u32) {
        let conn = IdleConn {
            id,
            attempts: attempts + 1,
            opened: false,
            run: Rc::clone(run),
        };
        match crate::tls::connect(cx, self.addr, self.tls.as_ref(), conn) {
            Ok(_) => self.connecting += 1,
            Err(err) => self.refused(id, attempts + 1, &err),
        }
    }

    /// A connect of `id` failed after `attempts`: tried again later if the
    /// failure is one that passes and attempts are left, else an error.
    fn refused(&mut self, id: usize, attempts: u32, err: &io::Error) {
        let passing =
            err.kind() == io::ErrorKind::ConnectionRefused || err.kind() == io::ErrorKind::WouldBlock;
        if passing && attempts < ATTEMPTS && !self.over {
            self.retry.push((id, attempts));
        } else {
            self.failed += 1;
            let addr = self.addr;
            self.error(format_args!(
                "connection {id} to {addr}: cannot connect ({attempts} attempts): {err}"
            ));
        }
    }
}

/// One idle connection: it never sends, and expects nothing.
struct IdleConn {
    id: usize,
    attempts: u32,
    opened: bool,
    run: Rc<RefCell<IdleRun>>,
}

impl StreamHandler for IdleConn {
    fn on_open(&mut self, _cx: &mut Context<'_>) {
        let mut run = self.run.borrow_mut();
        self.opened = true;
        run.connecting -= 1;
        run.open += 1;
    }

    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        data.len() // nothing is asked, so nothing should come; it is not kept
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        cx.close(); // on_close counts it
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        if self.opened {
            run.open -= 1;
            if !run.over {
                run.closed += 1;
                let (id, addr) = (self.id, run.addr);
                run.error(format_args!("connection {id} to {addr}: {reason}"));
            }
            return;
        }
        run.connecting -= 1;
        match reason {
            CloseReason::ConnectFailed(err) => run.refused(self.id, self.attempts, err),
            reason => {
                run.failed += 1;
                let (id, addr) = (self.id, run.addr);
                run.error(format_args!("connection {id} to {addr}: {reason}"));
            }
        }
    }
}

/// The idle mode's clock: opens the batches, counts the server's
/// descriptors, and ends the hold.
struct IdleScript {
    run: Rc<RefCell<IdleRun>>,
    pids: Vec<u32>,
    batch: usize,
    hold: Duration,
    timeout: Duration,
    phase: Phase,
    /// The server's descriptors before the first connect.
    fds_before: u64,
    tick: Option<TimerId>,
    poll: Option<TimerId>,
    deadline: Option<TimerId>,
    hold_end: Option<TimerId>,
}

impl IdleScript {
    /// Starts connects up to the batch, from the retries first, once the
    /// last batch has its outcomes and the server has accepted them.
    fn open_batch(&mut self, cx: &mut Context<'_>) {
        let shared = Rc::clone(&self.run);
        let mut run = shared.borrow_mut();
        if run.connecting > 0 {
            return;
        }
        let accepted = fd_count(&self.pids).unwrap_or(0).saturating_sub(self.fds_before);
        if accepted < run.open as u64 {
            return;
        }
        for _ in 0..self.batch {
            let Some((id, attempts)) = run.retry.pop().or_else(|| run.waiting.pop()) else {
                break;
            };
            run.connect(&shared, cx, id, attempts);
        }
    }

    /// Counts the server's descriptors; returns whether it holds them all.
    fn count_fds(&mut self) -> bool {
        let mut run = self.run.borrow_mut();
        let now = fd_count(&self.pids).unwrap_or(0);
        run.accepted = now.saturating_sub(self.fds_before);
        run.accepted >= run.open as u64 && run.open + run.failed + run.closed == run.conns
    }

    fn end(&mut self, cx: &mut Context<'_>) {
        self.run.borrow_mut().over = true;
        cx.stop();
    }
}

impl Script for IdleScript {
    fn start(&mut self, cx: &mut Context<'_>) {
        self.tick = cx.set_repeating(TICK);
        self.poll = cx.set_repeating(POLL);
        self.deadline = cx.set_timer(self.timeout);
        if self.tick.is_none() || self.poll.is_none() || self.deadline.is_none() {
            eprintln!("loadgen: the timer table is full");
            return self.end(cx);
        }
        self.open_batch(cx);
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if Some(timer) == self.tick && self.phase == Phase::Opening {
            self.open_batch(cx);
            let run = self.run.borrow();
            if run.waiting.is_empty() && run.retry.is_empty() && run.connecting == 0 {
                self.phase = Phase::Waiting;
            }
        } else if Some(timer) == self.poll && self.phase == Phase::Waiting {
            if self.count_fds() {
                self.phase = Phase::Holding;
                self.hold_end = cx.set_timer(self.hold);
                if self.hold_end.is_none() {
                    eprintln!("loadgen: the timer table is full");
                    self.end(cx);
                }
            }
        } else if Some(timer) == self.deadline && self.phase != Phase::Holding {
            self.count_fds();
            let mut run = self.run.borrow_mut();
            run.timed_out = true;
            eprintln!(
                "loadgen: after {:.1} s, {} of {} connections open and the server's descriptors grew by {}",
                self.timeout.as_secs_f64(),
                run.open,
                run.conns,
                run.accepted
            );
            drop(run);
            self.end(cx);
        } else if Some(timer) == self.hold_end {
            self.count_fds();
            self.end(cx);
        }
    }
}

/// Runs the idle mode; the exit status says whether it was `ok`.
pub(crate) fn run(flags: IdleFlags) -> ExitCode {
    if flags.conns == 0 || flags.conns > MAX_CONNS {
        common::usage_error(&format!("--conns must be 1 to {MAX_CONNS}"));
    }
    if flags.batch == 0 {
        common::usage_error("--batch must be at least 1");
    }
    raise_nofile(flags.conns as u64 + 64);
    let pids = flags.pid;
    let read = |what: &str, value: Option<u64>| {
        value.unwrap_or_else(|| common::fail(&format!("cannot read the server's {what} in /proc")))
    };
    let fds_before = read("descriptors", steady_fd_count(&pids));
    let rss_before = read("memory", rss_kib(&pids));

    let mut reactor = Reactor::new().unwrap_or_else(|err| common::fail(&err));
    let run = Rc::new(RefCell::new(IdleRun {
        addr: flags.tcp,
        tls: flags.tls.for_addr(&flags.tcp),
        conns: flags.conns,
        waiting: (0..flags.conns).rev().map(|id| (id, 0)).collect(),
        retry: Vec::new(),
        connecting: 0,
        open: 0,
        failed: 0,
        closed: 0,
        accepted: 0,
        timed_out: false,
        errors: 0,
        shown: Shown::default(),
        over: false,
    }));
    let script = IdleScript {
        run: Rc::clone(&run),
        pids: pids.clone(),
        batch: flags.batch,
        hold: flags.hold,
        timeout: flags.timeout,
        phase: Phase::Opening,
        fds_before,
        tick: None,
        poll: None,
        deadline: None,
        hold_end: None,
    };
    let driver = Driver::new(script).unwrap_or_else(|err| common::fail(&err));
    if let Err(err) = reactor.register(driver, Interest::WRITABLE) {
        common::fail(&err);
    }
    if let Err(err) = reactor.run() {
        common::fail(&err);
    }
    let rss_after = read("memory", rss_kib(&pids));

    let run = run.borrow();
    let (accepted, timed_out) = (run.accepted, run.timed_out);
    let growth = (rss_after as f64 - rss_before as f64) * 1024.0;
    let ok = !timed_out && run.errors == 0 && accepted >= flags.conns as u64;
    let mut j = Json::new("idle");
    j.s("addr", &flags.tcp.to_string());
    j.u("conns", flags.conns as u64);
    j.u("accepted", accepted);
    j.u("open", run.open as u64);
    j.u("rss_before_kib", rss_before);
    j.u("rss_after_kib", rss_after);
    j.f("bytes_per_conn", (growth / flags.conns as f64).round(), 0);
    j.f("hold_s", flags.hold.as_secs_f64(), 3);
    j.b("ok", ok);
    j.u("errors", run.errors);
    let _ = writeln!(io::stdout().lock(), "{}", j.finish());
    if !ok && !timed_out && accepted < flags.conns as u64 {
        eprintln!(
            "loadgen: the server's descriptors grew by {accepted}, not {}",
            flags.conns
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The summed resident memory of `pids`, in KiB (`VmRSS`).
fn rss_kib(pids: &[u32]) -> Option<u64> {
    pids.iter()
        .map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .sum()
}

/// The server's descriptors once they hold still: the count, taken every
/// [`POLL`], that is the same twice running (at most [`STEADY_WAIT`]). A
/// server may still be closing the connections of a run that just ended,
/// and those must not count in the baseline. This runs before the loop
/// does, so it may sleep.
fn steady_fd_count(pids: &[u32]) -> Option<u64> {
    let mut last = fd_count(pids)?;
    let deadline = std::time::Instant::now() + STEADY_WAIT;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(POLL);
        let now = fd_count(pids)?;
        if now == last {
            break;
        }
        last = now;
    }
    Some(last)
}

/// The summed open descriptors of `pids` (entries of `/proc/PID/fd`).
fn fd_count(pids: &[u32]) -> Option<u64> {
    pids.iter()
        .map(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .ok()
                .map(|dir| dir.count() as u64)
        })
        .sum()
}
