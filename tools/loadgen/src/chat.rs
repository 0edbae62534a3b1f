//! The chat mode: a room of `--receivers` members that listen and
//! `--senders` members that also speak, on a chat server over TCP; the
//! senders post `--rate` lines per second between them, and every delivery
//! of every line to every other member is checked and timed.
//!
//! ```text
//! loadgen chat --tcp ADDR [--tcp ADDR...] --receivers N --senders S --rate R --duration SECS
//!              [--grace SECS] [--timeout SECS] [--pid PID[,PID...]]
//! ```
//!
//! # One room over several servers
//!
//! `--tcp` may be given more than once: chat servers that form one room
//! between them (`chat --redis`), or several listeners of one server.
//! Member `i` (senders first, then receivers) connects to address
//! `i mod A` of the A addresses, so senders and receivers alike are spread
//! evenly, in turn. Each delivery is then of one of two kinds: *within* one
//! server, when the receiver connected to the same address as the line's
//! sender, or *across* servers otherwise. "The same server" is the same
//! address: an address given twice is one server, two listeners of one
//! process are two. Each kind has its own latencies and its own count of
//! expected and received deliveries (see Output); the room, the schedule
//! and every check are the same as with one address.
//!
//! # The part of the protocol it uses
//!
//! Only what every chat server of the contract does the same way: a member
//! that connects gets `* welcome NICK`, and the members already there get
//! `* NICK joined`; a line TEXT from NICK reaches every *other* member as
//! `NICK: TEXT`; `/quit` gets `* bye` and a close. Any other line from the
//! server that starts with `* ` is a notice and is skipped. No `/nick`, no
//! `/who`, no UDP. The room should be the run's own: a stranger's line
//! would be counted as a bad line. Receivers never send a line, so a run
//! must be shorter than the server's idle timeout (600 s for the chat
//! example).
//!
//! # The phases of a run ([`Phase`], [`Conductor`])
//!
//! 1. *Joining.* The members connect, senders first, at most
//!    [`CONNECTING_AT_ONCE`] at a time between the connect and the welcome,
//!    so that the server's listen backlog never overflows. The room is
//!    complete when every member has its welcome and the `joined` notices
//!    received add up to M(M-1)/2 for M members: of any two members, the
//!    one that came first is told of the other, exactly once. (At least
//!    M(M-1)/2: over several servers, two members that join different
//!    servers at about the same moment may each be told of the other.)
//!    Only then does the clock start, so no line is sent to a half-built
//!    room.
//! 2. *Sending* (`--duration`). Line `k` of the run (from 0) is due
//!    `k / R` seconds into the window, and goes to sender `k mod S` as that
//!    sender's line number `k div S`. The conductor wakes when the next
//!    line is due and sends every line due by then: one write per sender.
//! 3. *Grace* (`--grace`). Nothing more is sent; deliveries still on their
//!    way are counted, until all expected ones have arrived or the grace
//!    runs out.
//! 4. *Quitting.* Every member sends `/quit`, and the run ends when the
//!    server has closed them all (or after [`QUIT_WAIT`]).
//!
//! A member dropped while the room fills ends the run at once: the room
//! could never be complete. The hard deadline (`--timeout`) ends a run
//! stuck in any phase before the quitting one.
//!
//! # A line and its receipt ([`Receipt`])
//!
//! A sender's line is `lg STAMP SENDER SEQ`: STAMP is the time the line was
//! written, in nanoseconds since the run started; SENDER the sender's
//! number; SEQ its line number. It comes back to each other member as
//! `NICK: lg STAMP SENDER SEQ`, and a delivery's latency is the time it is
//! read minus STAMP.
//!
//! The senders keep to a schedule whatever the server does: a line is
//! written when it is due, into the socket's buffer, not when the server
//! has answered anything. A server that stalls therefore cannot hold lines
//! back from being sent (which a closed loop would hide, coordinated
//! omission): its stall shows in the latency of every line that waits in
//! it. What the schedule cannot control is this program's own lateness:
//! the conductor wakes on an [`Alarm`] (a `timerfd`, precise to
//! microseconds, not an evloop timer, whose loop sleeps in whole
//! milliseconds), yet on a virtual machine a sleeping process is woken up
//! to a few milliseconds late now and then, even when it is nearly idle
//! (1 receiver and 10 senders at 1,000 lines a second: a line left up to
//! 4.4 ms after it was due). Timing from the schedule would count that
//! lateness as the server's, so the stamp is the time the line was
//! written, and the lateness is reported apart (`send_lag_p99_us`,
//! `send_lag_max_us`).
//!
//! Each receipt is checked: the nick is the one the sender was welcomed
//! with, the sender is not the receiving member itself, the line was sent
//! (its number is below the lines issued), its stamp is no earlier than its
//! line's due time, and from each sender its lines come in order, each once (the next
//! SEQ from a sender is one more than the last). A receipt that fails is a
//! bad line. A line missing from a sender's sequence is not: it shows in
//! `delivered`.
//!
//! # Costs
//!
//! 1,000 receivers and 200 lines a second make 200,000 deliveries a
//! second, nearly all one line per read. So a member reads the clock once
//! per `on_data`, not per line, finds each line end and then the last `:`
//! of the line (a nick may hold colons, the line's text never does), and
//! parses three numbers in place: nothing is allocated per line, and no
//! input is kept but an unfinished line. Sending is one formatted line per
//! due line into a buffer kept per sender.
//!
//! # Output
//!
//! `mode` (`chat`), `addr` (the `--tcp` addresses, joined by commas),
//! `receivers`, `senders`, `rate`, `seconds` (the
//! sending window); `sent` (lines), `expected` (deliveries: `sent` x
//! (M - 1)), `received` (deliveries checked by the end of the grace),
//! `delivered` (`received / expected`), `deliveries_per_s` (those received
//! during the window, per second of it); `p50_us`, `p99_us`, `p999_us`,
//! `max_us` of the deliveries' latencies; `send_lag_p99_us`,
//! `send_lag_max_us`; `errors` (`dropped` members and `bad_lines`);
//! `timed_out`; and for a window of half a second or more `client_cpu`,
//! `server_cpu` (with `--pid`, the processes' sum) and `other_cpu`, shares
//! of one core over the window, and `server_us_per_line`: the server's CPU
//! time over the window per line sent, in microseconds.
//!
//! Then the split by server: `servers` (distinct addresses),
//! `members_per_server` (comma-separated, in the order of the addresses'
//! first appearance), `missing` (`expected - received`), and for each kind
//! K of `within` and `across`: `K_expected`, `K_received`, `K_missing`,
//! `K_delivered`, `K_p50_us`, `K_p99_us`, `K_p999_us`, `K_max_us`. A kind
//! with nothing expected (`across` with one address) has `null` for its
//! share and latencies. With `--pid` and a window of half a second or more,
//! `server_cpu_each` and `server_us_per_line_each` give the same two
//! figures for each process alone, comma-separated in `--pid` order (say,
//! two chat servers and their Redis).
//!
//! The client's and the server's shares are exact (the kernel's own
//! account of each process); `other_cpu` comes from `/proc/stat`, which
//! the kernel samples at its tick, and a load that wakes in short bursts a
//! few hundred times a second, as this one does, can skew that sample by
//! as much as a core either way (a negative share is one sign of it): read
//! it as a hint of other load, not as a measurement.
//!
//! The run fails (exit 1) when a member was dropped, a line was bad, a
//! delivery is missing after the grace, or the hard deadline passed.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;
use evloop::{CloseReason, Context, Event, FdSource, Interest, Key, Reactor, SourceHandler, StreamHandler};

use crate::common;
use crate::{raise_nofile, CpuMeter, CpuShares, Histogram, Json, Shown, MIN_CPU_WINDOW};

/// How often the conductor looks at the run when no line is due: while
/// the room fills, in the grace and while the members quit.
const CHECK_EVERY: Duration = Duration::from_millis(1);

/// Members between their connect and their welcome, at most: well under
/// any listen backlog (Linux's smallest default is 128).
const CONNECTING_AT_ONCE: usize = 64;

/// The most members of one run.
const MAX_MEMBERS: usize = 100_000;

/// The most input kept for one unfinished line; past it the member is
/// dropped. A server's longest line (4 KiB by default) and a nick fit.
const MAX_PENDING_LINE: usize = 64 * 1024;

/// How long the run waits for the server to close the members after their
/// `/quit`.
const QUIT_WAIT: Duration = Duration::from_secs(5);

/// The chat mode's command line.
#[derive(Args)]
pub(crate) struct ChatFlags {
    /// Chat server's TCP address; repeat it for a room over several servers
    /// (members go to each address in turn)
    #[arg(long, value_name = "ADDR", required = true)]
    tcp: Vec<SocketAddr>,
    /// Members that only listen
    #[arg(long, value_name = "N")]
    receivers: usize,
    /// Members that send lines (they receive the others' lines too)
    #[arg(long, value_name = "S")]
    senders: usize,
    /// Lines per second, all senders together
    #[arg(long, value_name = "R")]
    rate: u64,
    /// Seconds of sending, once the room is complete
    #[arg(long, value_name = "SECS", value_parser = common::seconds)]
    duration: Duration,
    /// Seconds to wait after the sending for deliveries still on their way
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = common::seconds)]
    grace: Duration,
    /// Hard deadline for the whole run [default: 30 s + duration + grace]
    #[arg(long, value_name = "SECS", value_parser = common::seconds)]
    timeout: Option<Duration>,
    /// The server's process ids, to report their CPU use over the window
    /// (summed)
    #[arg(long, value_name = "PID[,PID...]", value_delimiter = ',')]
    pid: Vec<u32>,
}

/// The checked command line.
#[derive(Clone, Debug)]
struct ChatPlan {
    /// The `--tcp` addresses, in order: member `i` connects to
    /// `addrs[i % addrs.len()]`.
    addrs: Vec<SocketAddr>,
    /// For each address, its server: the index of the first address equal
    /// to it (an address given twice is one server).
    server_of_addr: Vec<usize>,
    receivers: usize,
    senders: usize,
    rate: u64,
    duration: Duration,
    grace: Duration,
    timeout: Duration,
    pids: Vec<u32>,
}

impl ChatPlan {
    /// Checks what clap cannot; a bad value is a usage error (exit 2).
    fn from_flags(flags: ChatFlags) -> ChatPlan {
        if flags.senders == 0 {
            common::usage_error("--senders must be at least 1");
        }
        let members = flags.receivers.saturating_add(flags.senders);
        if members < 2 {
            common::usage_error("the room needs two members at least: --receivers + --senders >= 2");
        }
        if members > MAX_MEMBERS {
            common::usage_error(&format!("--receivers + --senders must be at most {MAX_MEMBERS}"));
        }
        if flags.rate == 0 || flags.rate > 10_000_000 {
            common::usage_error("--rate must be 1 to 10000000 lines per second");
        }
        if flags.duration.is_zero() {
            common::usage_error("--duration must be above 0");
        }
        let timeout = flags
            .timeout
            .unwrap_or(Duration::from_secs(30) + flags.duration + flags.grace);
        let server_of_addr = (0..flags.tcp.len())
            .map(|i| flags.tcp.iter().position(|a| *a == flags.tcp[i]).unwrap_or(i))
            .collect();
        ChatPlan {
            addrs: flags.tcp,
            server_of_addr,
            receivers: flags.receivers,
            senders: flags.senders,
            rate: flags.rate,
            duration: flags.duration,
            grace: flags.grace,
            timeout,
            pids: flags.pid,
        }
    }

    fn members(&self) -> usize {
        self.receivers + self.senders
    }

    /// The address member `id` connects to (senders are members 0 to
    /// S - 1, so sender `s` is member `s`).
    fn addr_of(&self, id: usize) -> SocketAddr {
        self.addrs[id % self.addrs.len()]
    }

    /// The server of member `id`: the index of its address's first
    /// appearance.
    fn server_of(&self, id: usize) -> usize {
        self.server_of_addr[id % self.addrs.len()]
    }

    /// The `--tcp` addresses, joined by commas.
    fn addr_list(&self) -> String {
        let addrs: Vec<String> = self.addrs.iter().map(SocketAddr::to_string).collect();
        addrs.join(",")
    }
}

/// Whether a delivery stayed on the sender's server or crossed to
/// another; indexes [`ChatRun::kinds`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Within = 0,
    Across = 1,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Within, Kind::Across];

    fn of(sender_server: usize, receiver_server: usize) -> Kind {
        if sender_server == receiver_server {
            Kind::Within
        } else {
            Kind::Across
        }
    }

    /// The prefix of its fields in the result line.
    fn name(self) -> &'static str {
        match self {
            Kind::Within => "within",
            Kind::Across => "across",
        }
    }
}

/// The deliveries of one [`Kind`]: counted and timed.
struct KindTally {
    received: u64,
    latency: Histogram,
}

/// Runs the chat mode: the whole program once the command line is parsed.
pub(crate) fn run(flags: ChatFlags) -> ExitCode {
    let plan = ChatPlan::from_flags(flags);
    raise_nofile(plan.members() as u64 + 64);
    let mut reactor = Reactor::new().unwrap_or_else(|err| common::fail(&err));
    let run = Rc::new(RefCell::new(ChatRun::new(&plan)));
    let conductor = Conductor::new(&plan, &run).unwrap_or_else(|err| common::fail(&err));
    if let Err(err) = reactor.register(conductor, Interest::READABLE) {
        common::fail(&err);
    }
    let looped = reactor.run();

    let run = run.borrow();
    // A closed stdout loses the line; it is no reason to panic.
    let _ = writeln!(io::stdout().lock(), "{}", run.json(&plan));
    if let Err(err) = looped {
        eprintln!("loadgen: {err}");
        return ExitCode::FAILURE;
    }
    if run.verdict(&plan) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Where the run is. The [`Conductor`] makes every move.
///
/// ```text
///  Joining  --every member welcomed, every join seen--> Sending { end }
///  Joining  --a member dropped, deadline-------------> Over
///  Sending  --end of the window----------------------> Grace { until }
///  Grace    --every delivery in, or until------------> Quitting { until }   (/quit to every member)
///  Sending, Grace --deadline-------------------------> Over
///  Quitting --every member closed, or until----------> Over
///  any      --every member gone-----------------------> Over
/// ```
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Members connect and wait for the room to be complete; nothing is
    /// sent, and a line received is a bad one.
    Joining,
    /// The measured window: lines go out on schedule until `end`.
    Sending { end: Instant },
    /// No more lines; deliveries are still counted until `until`.
    Grace { until: Instant },
    /// Every member was sent `/quit`; nothing is counted any more, and the
    /// server's closes are expected, until `until`.
    Quitting { until: Instant },
    /// The reactor is stopping.
    Over,
}

impl Phase {
    /// Whether the run still judges the server: a member lost now was
    /// dropped (rather than let go), and a line received is checked (and,
    /// from the window on, counted). True until the members quit.
    fn judges(self) -> bool {
        match self {
            Phase::Joining | Phase::Sending { .. } | Phase::Grace { .. } => true,
            Phase::Quitting { .. } | Phase::Over => false,
        }
    }
}

/// The state of the whole run, shared by the conductor and every member
/// (one thread, so an `Rc<RefCell>`; nobody holds the borrow across a
/// callback).
struct ChatRun {
    phase: Phase,
    /// STAMPs count nanoseconds from here.
    base: Instant,
    members: usize,
    senders: usize,
    /// Nanoseconds between two due lines: 10^9 / rate.
    interval_ns: f64,
    /// The room filling: members welcomed, members welcomed or gone before
    /// their welcome, `joined` notices seen, and how many make a complete
    /// room.
    welcomed: usize,
    settled: usize,
    joins: u64,
    joins_expected: u64,
    /// Members whose connection is not closed yet (connecting included).
    live: usize,
    /// Each sender's nick, from its welcome.
    nicks: Vec<Option<Box<[u8]>>>,
    /// Each sender's server.
    sender_server: Vec<usize>,
    /// Members on each server (by server index; 0 for an address that
    /// repeats an earlier one).
    per_server: Vec<u64>,
    /// Lines sent by the senders of each server.
    sent_from: Vec<u64>,
    /// The deliveries of each kind, by [`Kind`].
    kinds: [KindTally; 2],
    /// The sending window, in nanoseconds since `base` (`end` is
    /// `u64::MAX` until the window starts).
    window_start_ns: u64,
    window_end_ns: u64,
    /// Lines numbered so far (the next line's `k`), and of those the ones
    /// a sender's connection took.
    issued: u64,
    sent: u64,
    /// Deliveries checked, and of those the ones read during the window.
    received: u64,
    received_in_window: u64,
    /// Delivery latencies, and how late each line went out on the schedule
    /// (nanoseconds).
    latency: Histogram,
    lag: Histogram,
    dropped: u64,
    bad_lines: u64,
    timed_out: bool,
    /// Error lines printed so far.
    shown: Shown,
    pids: Vec<u32>,
    /// CPU readings over the window: all `pids` together, and each alone.
    cpu: Option<CpuMeter>,
    cpu_shares: Option<CpuShares>,
    cpu_each: Vec<CpuMeter>,
    cpu_shares_each: Vec<CpuShares>,
}

impl ChatRun {
    fn new(plan: &ChatPlan) -> ChatRun {
        let members = plan.members() as u64;
        let mut per_server = vec![0; plan.addrs.len()];
        for id in 0..plan.members() {
            per_server[plan.server_of(id)] += 1;
        }
        let tally = || KindTally {
            received: 0,
            latency: Histogram::new(),
        };
        ChatRun {
            phase: Phase::Joining,
            base: Instant::now(),
            members: plan.members(),
            senders: plan.senders,
            interval_ns: 1e9 / plan.rate as f64,
            welcomed: 0,
            settled: 0,
            joins: 0,
            joins_expected: members * (members - 1) / 2,
            live: 0,
            nicks: vec![None; plan.senders],
            sender_server: (0..plan.senders).map(|s| plan.server_of(s)).collect(),
            per_server,
            sent_from: vec![0; plan.addrs.len()],
            kinds: [tally(), tally()],
            window_start_ns: 0,
            window_end_ns: u64::MAX,
            issued: 0,
            sent: 0,
            received: 0,
            received_in_window: 0,
            latency: Histogram::new(),
            lag: Histogram::new(),
            dropped: 0,
            bad_lines: 0,
            timed_out: false,
            shown: Shown::default(),
            pids: plan.pids.clone(),
            cpu: None,
            cpu_shares: None,
            cpu_each: Vec::new(),
            cpu_shares_each: Vec::new(),
        }
    }

    /// `at` in nanoseconds since the run started.
    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
    }

    /// When line `k` is due, in nanoseconds since the run started. The
    /// sender and every receiver compute it alike.
    fn due_ns(&self, k: u64) -> u64 {
        self.window_start_ns + (k as f64 * self.interval_ns) as u64
    }

    /// Expected deliveries: every line sent, to every member but its sender.
    fn expected(&self) -> u64 {
        self.sent * (self.members as u64 - 1)
    }

    /// Expected deliveries of one kind: each line to the other members of
    /// its sender's server (within), or to the members of the other
    /// servers (across). The two add up to [`ChatRun::expected`].
    fn expected_of(&self, kind: Kind) -> u64 {
        let members = self.members as u64;
        self.sent_from
            .iter()
            .zip(&self.per_server)
            .map(|(&sent, &here)| match kind {
                Kind::Within => sent * here.saturating_sub(1),
                Kind::Across => sent * (members - here),
            })
            .sum()
    }

    /// `lines` more lines sent by sender `sender`.
    fn count_sent(&mut self, sender: usize, lines: u64) {
        self.sent += lines;
        self.sent_from[self.sender_server[sender]] += lines;
    }

    /// Prints one error line on stderr; past the first few they are only
    /// counted (the totals are printed at the end).
    fn report(&mut self, what: fmt::Arguments<'_>) {
        self.shown.print(what);
    }

    /// A member got its welcome, as `nick`; `sender` is its sender number
    /// if it sends.
    fn welcome(&mut self, sender: Option<usize>, nick: &[u8]) {
        self.welcomed += 1;
        self.settled += 1;
        if let Some(s) = sender {
            self.nicks[s] = Some(nick.into());
        }
    }

    /// The room is complete: the window starts now.
    fn start_window(&mut self, now: Instant, duration: Duration) {
        self.window_start_ns = self.ns(now);
        self.window_end_ns = self.window_start_ns + duration.as_nanos() as u64;
        self.phase = Phase::Sending { end: now + duration };
        self.cpu = Some(CpuMeter::start(&self.pids));
        self.cpu_each = self.pids.iter().map(|&pid| CpuMeter::start(&[pid])).collect();
    }

    /// The window is over: no more lines, the grace starts.
    fn end_window(&mut self, now: Instant, grace: Duration) {
        self.phase = Phase::Grace { until: now + grace };
        if let Some(cpu) = self.cpu.take() {
            self.cpu_shares = Some(cpu.finish());
        }
        self.cpu_shares_each = self.cpu_each.drain(..).map(CpuMeter::finish).collect();
    }

    /// Checks one relayed line received by a member (`own`: its sender
    /// number, if it sends; `server`: its server; `next_seq`: the next SEQ
    /// it expects from each sender) at `now_ns`, and counts it. Returns
    /// what was wrong with it.
    fn take_receipt(
        &mut self,
        own: Option<usize>,
        server: usize,
        next_seq: &mut [u64],
        line: &[u8],
        now_ns: u64,
    ) -> Result<(), &'static str> {
        let receipt = Receipt::parse(line).ok_or("not a line of this run")?;
        let sender = receipt.sender;
        if sender >= self.senders {
            return Err("from a sender this run does not have");
        }
        if own == Some(sender) {
            return Err("its own line came back");
        }
        if self.nicks[sender].as_deref() != Some(receipt.nick) {
            return Err("not under its sender's nick");
        }
        let k = receipt
            .seq
            .saturating_mul(self.senders as u64)
            .saturating_add(sender as u64);
        if k >= self.issued {
            return Err("a line that was never sent");
        }
        if receipt.stamp < self.due_ns(k) || receipt.stamp > now_ns {
            return Err("not the stamp of its line");
        }
        let next = &mut next_seq[sender];
        if receipt.seq < *next {
            return Err("a line again, or out of order");
        }
        if receipt.seq > *next {
            let missed = receipt.seq - *next;
            self.report(format_args!(
                "{missed} line(s) of sender {sender} skipped by a member"
            ));
        }
        *next = receipt.seq + 1;
        self.received += 1;
        if now_ns < self.window_end_ns {
            self.received_in_window += 1;
        }
        let latency = now_ns.saturating_sub(receipt.stamp);
        self.latency.record(latency);
        let tally = &mut self.kinds[Kind::of(self.sender_server[sender], server) as usize];
        tally.received += 1;
        tally.latency.record(latency);
        Ok(())
    }

    /// The result line.
    fn json(&self, plan: &ChatPlan) -> String {
        let secs = plan.duration.as_secs_f64();
        let us = |ns: u64| ns as f64 / 1000.0;
        let expected = self.expected();
        let share = |n: u64, of: u64| if of > 0 { n as f64 / of as f64 } else { 0.0 };
        let mut j = Json::new("chat");
        j.s("addr", &plan.addr_list());
        j.u("receivers", plan.receivers as u64);
        j.u("senders", plan.senders as u64);
        j.u("rate", plan.rate);
        j.f("seconds", secs, 3);
        j.u("sent", self.sent);
        j.u("expected", expected);
        j.u("received", self.received);
        j.f("delivered", share(self.received, expected), 4);
        j.f("deliveries_per_s", self.received_in_window as f64 / secs, 0);
        j.f("p50_us", us(self.latency.quantile(0.50)), 1);
        j.f("p99_us", us(self.latency.quantile(0.99)), 1);
        j.f("p999_us", us(self.latency.quantile(0.999)), 1);
        j.f("max_us", us(self.latency.max), 1);
        j.f("send_lag_p99_us", us(self.lag.quantile(0.99)), 1);
        j.f("send_lag_max_us", us(self.lag.max), 1);
        j.u("errors", self.dropped + self.bad_lines);
        j.u("dropped", self.dropped);
        j.u("bad_lines", self.bad_lines);
        j.b("timed_out", self.timed_out);
        if let Some(cpu) = self.cpu_shares.as_ref().filter(|_| secs >= MIN_CPU_WINDOW) {
            cpu.write(&mut j, "server_us_per_line", self.sent);
        }
        self.write_split(&mut j, plan);
        j.finish()
    }

    /// The result line's split by server: within one server and across.
    fn write_split(&self, j: &mut Json, plan: &ChatPlan) {
        let servers: Vec<String> = (0..plan.addrs.len())
            .filter(|&i| plan.server_of_addr[i] == i)
            .map(|i| self.per_server[i].to_string())
            .collect();
        j.u("servers", servers.len() as u64);
        j.s("members_per_server", &servers.join(","));
        j.u("missing", self.expected().saturating_sub(self.received));
        // No deliveries of a kind: null share and latencies, not zeros.
        let us = |hist: &Histogram, q: Option<f64>| match (hist.total, q) {
            (0, _) => f64::NAN,
            (_, Some(q)) => hist.quantile(q) as f64 / 1000.0,
            (_, None) => hist.max as f64 / 1000.0,
        };
        for kind in Kind::ALL {
            let tally = &self.kinds[kind as usize];
            let expected = self.expected_of(kind);
            let name = kind.name();
            j.u(&format!("{name}_expected"), expected);
            j.u(&format!("{name}_received"), tally.received);
            j.u(
                &format!("{name}_missing"),
                expected.saturating_sub(tally.received),
            );
            let share = if expected > 0 {
                tally.received as f64 / expected as f64
            } else {
                f64::NAN
            };
            j.f(&format!("{name}_delivered"), share, 4);
            j.f(&format!("{name}_p50_us"), us(&tally.latency, Some(0.50)), 1);
            j.f(&format!("{name}_p99_us"), us(&tally.latency, Some(0.99)), 1);
            j.f(&format!("{name}_p999_us"), us(&tally.latency, Some(0.999)), 1);
            j.f(&format!("{name}_max_us"), us(&tally.latency, None), 1);
        }
        let secs = plan.duration.as_secs_f64();
        if !self.cpu_shares_each.is_empty() && secs >= MIN_CPU_WINDOW {
            let each = |f: &dyn Fn(&CpuShares) -> Option<f64>| {
                let all: Vec<String> = self
                    .cpu_shares_each
                    .iter()
                    .map(|c| f(c).map_or_else(|| "-".to_string(), |v| format!("{v:.2}")))
                    .collect();
                all.join(",")
            };
            j.s("server_cpu_each", &each(&|c| c.server));
            let sent = self.sent;
            j.s(
                "server_us_per_line_each",
                &each(&|c| c.server_secs.filter(|_| sent > 0).map(|s| s / sent as f64 * 1e6)),
            );
        }
    }

    /// Whether every check passed; says on stderr why not.
    fn verdict(&self, plan: &ChatPlan) -> bool {
        let mut ok = true;
        if self.timed_out {
            eprintln!(
                "loadgen: the run did not finish within its hard deadline of {:.1} s",
                plan.timeout.as_secs_f64()
            );
            ok = false;
        }
        if self.window_end_ns == u64::MAX {
            eprintln!(
                "loadgen: the room never was complete: {} of {} members welcomed, {} of {} joins seen",
                self.welcomed, self.members, self.joins, self.joins_expected
            );
            ok = false;
        }
        if self.dropped > 0 {
            eprintln!("loadgen: {} member(s) dropped during the run", self.dropped);
            ok = false;
        }
        if self.bad_lines > 0 {
            eprintln!("loadgen: {} bad line(s) received", self.bad_lines);
            ok = false;
        }
        let expected = self.expected();
        if self.received < expected {
            let split: Vec<String> = Kind::ALL
                .iter()
                .map(|&kind| {
                    let want = self.expected_of(kind);
                    let missing = want.saturating_sub(self.kinds[kind as usize].received);
                    format!("{}: {missing} of {want}", kind.name())
                })
                .collect();
            eprintln!(
                "loadgen: {} of {expected} deliveries missing after the grace ({})",
                expected - self.received,
                split.join(", ")
            );
            ok = false;
        }
        if self.sent == 0 && self.window_end_ns != u64::MAX {
            eprintln!("loadgen: no line was sent");
            ok = false;
        }
        ok
    }
}

/// A relayed line of this run, `NICK: lg STAMP SENDER SEQ`, parsed in
/// place.
#[derive(Debug, PartialEq)]
struct Receipt<'a> {
    nick: &'a [u8],
    stamp: u64,
    sender: usize,
    seq: u64,
}

impl<'a> Receipt<'a> {
    /// Parses a line (without its line end), or `None` if it is not one of
    /// this run's. The text after the nick holds no `:`, so the last one
    /// ends the nick, whatever colons the nick has.
    fn parse(line: &'a [u8]) -> Option<Receipt<'a>> {
        let colon = line.iter().rposition(|&b| b == b':')?;
        let text = line[colon + 1..].strip_prefix(b" lg ")?;
        let mut fields = text.split(|&b| b == b' ');
        let stamp = decimal(fields.next()?)?;
        let sender = usize::try_from(decimal(fields.next()?)?).ok()?;
        let seq = decimal(fields.next()?)?;
        if fields.next().is_some() {
            return None;
        }
        Some(Receipt {
            nick: &line[..colon],
            stamp,
            sender,
            seq,
        })
    }
}

/// A decimal number of ASCII digits only, or `None` (empty, another byte,
/// or above `u64::MAX`).
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Where a member stands in the room.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Standing {
    /// Connecting, or connected without its welcome yet.
    Arriving,
    /// Welcomed: a member of the room.
    Present,
    /// Its connection is closed (`on_close` came).
    Gone,
}

/// One member of the room: counts its welcome and the `joined` notices,
/// and checks and times every line it receives.
struct Member {
    /// The member's number: senders are 0 to S - 1, receivers follow.
    id: usize,
    run: Rc<RefCell<ChatRun>>,
    /// Its sender number, if it sends.
    sender: Option<usize>,
    /// Its server: see [`ChatPlan::server_of`].
    server: usize,
    standing: Standing,
    /// The member's loss was counted (once).
    failed: bool,
    /// The next SEQ expected from each sender.
    next_seq: Box<[u64]>,
}

impl Member {
    fn new(id: usize, plan: &ChatPlan, run: &Rc<RefCell<ChatRun>>) -> Member {
        Member {
            id,
            run: Rc::clone(run),
            sender: (id < plan.senders).then_some(id),
            server: plan.server_of(id),
            standing: Standing::Arriving,
            failed: false,
            next_seq: vec![0; plan.senders].into_boxed_slice(),
        }
    }

    /// Counts this member as dropped (once, and only while a loss matters),
    /// with a reason for stderr.
    fn fail(&mut self, run: &mut ChatRun, what: fmt::Arguments<'_>) {
        if !self.failed && run.phase.judges() {
            self.failed = true;
            run.dropped += 1;
            run.report(format_args!("member {}: {what}", self.id));
        }
    }

    /// Handles one whole line from the server, without its line end.
    fn take_line(&mut self, cx: &mut Context<'_>, run: &mut ChatRun, line: &[u8], now_ns: u64) {
        if let Some(notice) = line.strip_prefix(b"* ") {
            match self.standing {
                Standing::Arriving => match notice.strip_prefix(b"welcome ") {
                    Some(nick) => {
                        self.standing = Standing::Present;
                        run.welcome(self.sender, nick);
                    }
                    None => {
                        let notice = String::from_utf8_lossy(line);
                        self.fail(run, format_args!("refused: {notice}"));
                        cx.abort();
                    }
                },
                Standing::Present if notice.ends_with(b" joined") => run.joins += 1,
                // Others come and go (`left`), and `* bye`: nothing to count.
                Standing::Present | Standing::Gone => {}
            }
            return;
        }
        if !run.phase.judges() {
            return; // after the grace: nothing is counted
        }
        if let Err(what) = run.take_receipt(self.sender, self.server, &mut self.next_seq, line, now_ns) {
            run.bad_lines += 1;
            let line = String::from_utf8_lossy(line);
            run.report(format_args!("member {}: a bad line ({what}): {line:?}", self.id));
        }
    }
}

impl StreamHandler for Member {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        if self.standing == Standing::Gone || self.failed {
            return data.len();
        }
        // One clock reading for every line of this read.
        let now_ns = run.ns(Instant::now());
        let mut used = 0;
        while let Some(len) = data[used..].iter().position(|&b| b == b'\n') {
            if self.failed {
                return data.len();
            }
            let line = &data[used..used + len];
            used += len + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.take_line(cx, &mut run, line, now_ns);
        }
        if data.len() - used > MAX_PENDING_LINE {
            self.fail(&mut run, format_args!("a line of over {MAX_PENDING_LINE} bytes"));
            cx.abort();
            return data.len();
        }
        used
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        self.fail(&mut run, format_args!("the server closed the connection"));
        cx.close();
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        match reason {
            CloseReason::ConnectFailed(err) => self.fail(&mut run, format_args!("cannot connect: {err}")),
            reason => self.fail(&mut run, format_args!("closed: {reason}")),
        }
        if self.standing == Standing::Arriving {
            run.settled += 1;
        }
        self.standing = Standing::Gone;
        run.live -= 1;
    }
}

/// The run's conductor: a custom source over an [`Alarm`]. Each time the
/// alarm goes off it does the phase's work (opens members, sends the lines
/// that are due, ends a phase) and sets the alarm again: for the next due
/// line while sending, [`CHECK_EVERY`] otherwise.
struct Conductor {
    alarm: Alarm,
    run: Rc<RefCell<ChatRun>>,
    plan: ChatPlan,
    /// Every member's connection, by member number.
    keys: Vec<Key>,
    /// The lines of this tick for each sender, and how many there are.
    out: Vec<Vec<u8>>,
    lines: Vec<u64>,
    /// The hard deadline.
    deadline: Instant,
}

impl Conductor {
    /// A conductor whose alarm goes off at once: that first call starts
    /// the run.
    ///
    /// # Errors
    ///
    /// The alarm's timer could not be made (out of descriptors).
    fn new(plan: &ChatPlan, run: &Rc<RefCell<ChatRun>>) -> io::Result<Conductor> {
        let alarm = Alarm::new()?;
        alarm.set(Duration::ZERO)?;
        Ok(Conductor {
            alarm,
            run: Rc::clone(run),
            plan: plan.clone(),
            keys: Vec::with_capacity(plan.members()),
            out: vec![Vec::new(); plan.senders],
            lines: vec![0; plan.senders],
            deadline: Instant::now() + plan.timeout,
        })
    }

    /// One tick: the current phase's work, and the move to the next.
    /// Returns when the conductor wants the next one.
    fn step(&mut self, cx: &mut Context<'_>, now: Instant) -> Duration {
        let mut next = CHECK_EVERY;
        match self.check_ends(now) {
            Phase::Joining => self.fill_room(cx, now),
            Phase::Sending { end } => {
                let run = Rc::clone(&self.run);
                let mut run = run.borrow_mut();
                let due = self.send_due(cx, &mut run, now);
                if now >= end {
                    run.end_window(now, self.plan.grace);
                } else {
                    let wake = run.base + Duration::from_nanos(due);
                    next = wake.min(end).saturating_duration_since(now);
                }
            }
            Phase::Grace { until } => {
                let mut run = self.run.borrow_mut();
                if run.received >= run.expected() || now >= until {
                    run.phase = Phase::Quitting {
                        until: now + QUIT_WAIT,
                    };
                    for &key in &self.keys {
                        cx.source(key).send(b"/quit\n");
                    }
                }
            }
            Phase::Quitting { until } => {
                let mut run = self.run.borrow_mut();
                if now >= until {
                    eprintln!(
                        "loadgen: {} member(s) still open {QUIT_WAIT:?} after /quit",
                        run.live
                    );
                    run.phase = Phase::Over;
                }
            }
            Phase::Over => {}
        }
        next
    }

    /// Ends the run when the hard deadline has passed (before the quitting)
    /// or every member is gone; returns the phase the run is in.
    fn check_ends(&mut self, now: Instant) -> Phase {
        let mut run = self.run.borrow_mut();
        if now >= self.deadline && run.phase.judges() {
            run.timed_out = true;
            run.phase = Phase::Over;
        } else if run.live == 0 && self.keys.len() == run.members {
            run.phase = Phase::Over;
        }
        run.phase
    }

    /// Opens members until [`CONNECTING_AT_ONCE`] are waiting for their
    /// welcome, and starts the window once the room is complete. A member
    /// lost now ends the run.
    fn fill_room(&mut self, cx: &mut Context<'_>, now: Instant) {
        let mut run = self.run.borrow_mut();
        if run.dropped > 0 {
            run.phase = Phase::Over;
            return;
        }
        while self.keys.len() < run.members && self.keys.len() - run.settled < CONNECTING_AT_ONCE {
            let id = self.keys.len();
            let addr = self.plan.addr_of(id);
            match cx.connect(addr, Member::new(id, &self.plan, &self.run)) {
                Ok(key) => {
                    self.keys.push(key);
                    run.live += 1;
                }
                Err(err) => {
                    run.dropped += 1;
                    run.report(format_args!("member {id}: cannot connect to {addr}: {err}"));
                    run.phase = Phase::Over;
                    return;
                }
            }
        }
        if run.welcomed == run.members && run.joins >= run.joins_expected {
            run.start_window(now, self.plan.duration);
        }
    }

    /// Sends every line due by `now` and before the end of the window, one
    /// write per sender. Returns when the next line is due (nanoseconds
    /// since the run started).
    fn send_due(&mut self, cx: &mut Context<'_>, run: &mut ChatRun, now: Instant) -> u64 {
        let now_ns = run.ns(now);
        let senders = self.plan.senders as u64;
        let next_due = loop {
            let k = run.issued;
            let due = run.due_ns(k);
            if due > now_ns || due >= run.window_end_ns {
                break due;
            }
            let sender = (k % senders) as usize;
            // Writing to a Vec cannot fail.
            let _ = writeln!(self.out[sender], "lg {now_ns} {sender} {}", k / senders);
            self.lines[sender] += 1;
            run.lag.record(now_ns - due);
            run.issued += 1;
        };
        for (sender, out) in self.out.iter_mut().enumerate() {
            if !out.is_empty() {
                // A sender that is gone takes nothing: its lines are not sent.
                if cx.source(self.keys[sender]).send(out) {
                    run.count_sent(sender, self.lines[sender]);
                }
                out.clear();
                self.lines[sender] = 0;
            }
        }
        next_due
    }
}

impl SourceHandler for Conductor {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.alarm.source
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
        self.alarm.clear();
        let next = self.step(cx, Instant::now());
        if let Phase::Over = self.run.borrow().phase {
            return cx.stop();
        }
        if let Err(err) = self.alarm.set(next) {
            eprintln!("loadgen: cannot set the conductor's timer: {err}");
            self.run.borrow_mut().phase = Phase::Over;
            cx.stop();
        }
    }
}

/// A one-shot timer with nanosecond resolution: a `timerfd`, readable once
/// its time has come.
///
/// evloop's own timers fire when the loop wakes, and the loop sleeps in
/// `epoll_wait`, whose timeout is in whole milliseconds: a line due 0.3 ms
/// from now would leave up to a millisecond late, and that lateness would
/// be counted in its latency. The kernel wakes the loop for a timerfd
/// within microseconds of its deadline.
struct Alarm {
    /// What is registered: the timer's descriptor, borrowed from `timer`.
    source: FdSource,
    timer: OwnedFd,
}

impl Alarm {
    fn new() -> io::Result<Alarm> {
        // SAFETY: timerfd_create takes no pointers; it returns a new
        // descriptor or -1.
        let fd =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor, owned by nothing else.
        let timer = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Alarm {
            source: FdSource::new(timer.as_raw_fd()),
            timer,
        })
    }

    /// Makes the timer go off once, `after` from now (a zero `after`: at
    /// once; the timer's zero would disarm it, so it is one nanosecond).
    fn set(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: timerfd_settime on the timer this alarm owns reads the
        // initialised `spec` and, given a null pointer, writes nothing.
        if unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the count of expiries, which makes the timer quiet until it
    /// goes off again (readiness comes as an edge).
    fn clear(&self) {
        let mut count = [0u8; 8];
        // SAFETY: read(2) from the timer this alarm owns into a buffer of
        // exactly the length given.
        unsafe { libc::read(self.timer.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}

#[cfg(test)]
mod tests {
    use super::{decimal, Receipt};

    #[test]
    fn a_receipt_is_parsed_after_the_last_colon() {
        let parsed = Receipt::parse(b"127.0.0.1:40123: lg 1500000 3 42");
        let want = Receipt {
            nick: b"127.0.0.1:40123",
            stamp: 1_500_000,
            sender: 3,
            seq: 42,
        };
        assert_eq!(parsed, Some(want));
        let v6 = Receipt::parse(b"[::1]:9: lg 0 0 0").expect("an IPv6 nick");
        assert_eq!(v6.nick, b"[::1]:9");
    }

    #[test]
    fn anything_else_is_not_a_receipt() {
        for line in [
            &b"bob: hello"[..],
            b"bob: lg 1 2",
            b"bob: lg 1 2 3 4",
            b"bob: lg 1 2 3 ",
            b"bob: lg 1  2 3",
            b"bob: lg -1 2 3",
            b"bob: lg 1 2 99999999999999999999",
            b"bob:lg 1 2 3",
            b"lg 1 2 3",
            b"",
        ] {
            assert_eq!(Receipt::parse(line), None, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn decimals_are_digits_only_and_fit() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(decimal(b"18446744073709551616"), None);
        assert_eq!(decimal(b""), None);
        assert_eq!(decimal(b"1a"), None);
        assert_eq!(decimal(b"+1"), None);
    }
}
