//! Load generator for the example servers, built on evloop itself: echo
//! over TCP, over a Unix stream socket, and over UDP, closed-loop or paced;
//! GET and SET against the `kv` example over TCP or a Unix stream socket;
//! idle connections, and file downloads from the `file_server` example.
//!
//! ```text
//! loadgen echo (--tcp ADDR | --unix PATH | --udp ADDR) --conns N --size BYTES [--depth D]
//!              (--requests TOTAL | --duration SECS) [--rate R] [--warmup SECS]
//!              [--timeout SECS] [--loss-timeout SECS] [--pid PID[,PID...]]
//! loadgen kv (--tcp ADDR | --unix PATH) --conns N [--depth D]
//!            (--requests TOTAL | --duration SECS) [--keys K] [--value-size BYTES]
//!            [--set-percent P] [--warmup SECS] [--timeout SECS] [--pid PID[,PID...]]
//! loadgen idle --tcp ADDR --conns N --hold SECS --pid PID[,PID...]
//!              [--timeout SECS] [--batch B]
//! loadgen download --tcp ADDR --name NAME --conns K --expect-bytes B --duration SECS
//!                  [--proto plain|http] [--warmup SECS] [--pid PID[,PID...]] [--timeout SECS]
//! loadgen chat --tcp ADDR [--tcp ADDR...] --receivers N --senders S --rate R --duration SECS
//!              [--grace SECS] [--timeout SECS] [--pid PID[,PID...]]
//! ```
//!
//! It prints one JSON line on stdout at the end, and exits 1 if any check
//! failed: a wrong byte, a connection refused or dropped, a run that did not
//! complete its requests in time. A bad argument exits 2.
//!
//! Where the shared tool drives raw mio sockets by hand, this one is an
//! evloop program like the servers it measures, and a tour of the client
//! side of the library: outbound connections, datagram sockets and timers.
//!
//! # The closed loop
//!
//! Each of the `--conns` connections keeps `--depth` requests of `--size`
//! bytes in flight: when a whole answer is back, the next request goes out.
//! A request's latency runs from the moment it is issued to the moment its
//! last byte is back and checked.
//!
//! # Paced load: `echo --rate` ([`paced`])
//!
//! With `--rate R` (TCP and Unix), requests go out on a schedule instead:
//! `R` per second over all connections, spread evenly, each connection
//! still with at most `--depth` in flight. A request that falls due while
//! its connection is full waits for room, and is counted in `late_issues`.
//! Latency then runs from the time the request was *due*, not from the
//! time it was sent, so a server that falls behind is charged for the
//! whole wait, as its users would see it, rather than have the client
//! quietly slow down with it (coordinated omission). The bytes and their
//! checks are the closed loop's. The [`paced`] module says how requests
//! are sent on time without the client spending a core on it.
//!
//! # Idle connections and downloads ([`idle`], [`download`])
//!
//! `idle` opens connections that never send and reports how much the
//! server's memory grew per connection; `download` fetches one file over
//! and over from the `file_server` example (its plain protocol or HTTP),
//! checking every length, and reports the throughput. Each has its own
//! module, which says how it works and what its line holds; both run on a
//! small clock of their own ([`driver`]).
//!
//! # Streams: TCP and Unix ([`Client`], [`EchoStream`])
//!
//! Connection `i` sends the byte stream `(offset + i) % 251`, where `offset`
//! counts bytes from the start of the connection. Any slice of that stream
//! is a slice of one table, `k % 251` for `k` below `251 + CHUNK`, so
//! requests are sent straight from the table and every echoed byte is
//! compared with it as it arrives: no buffer per request, no copy of what
//! was sent. Since 251 is prime and the offset keeps counting across
//! requests, bytes that come back twice, out of order, or from another
//! connection all fail the comparison. The handler consumes every byte it
//! is given, so evloop never keeps input for it.
//!
//! The connections are opened with [`Context::connect`] (TCP) and
//! [`Context::connect_unix`]. A TCP connect completes in the background:
//! the handler gets `on_open` when it has, or `on_close` with
//! [`CloseReason::ConnectFailed`] when it has not. A Unix connect is
//! answered at once; when the server's backlog is full it is refused with
//! `WouldBlock`, and the clock tries that connection again a moment later.
//!
//! # Datagrams: UDP ([`DatagramClient`])
//!
//! Each "connection" is a UDP socket of its own, bound with
//! [`Reactor::bind_udp`]. Every datagram is exactly `--size` bytes: a
//! 16-byte header (connection id, slot, sequence number) and then the
//! pattern `(seq + id + k) % 251` for byte `k`, so an answer is checked
//! against the request it claims to answer. A datagram may be lost, so each
//! of the `--depth` slots has a timer: issuing a request moves the slot's
//! timer to `--loss-timeout` from now ([`Context::reset_timer`], O(1) when
//! the deadline moves later, as here); if it fires while the request is
//! still out, the request is counted in `lost` and a new one (new sequence
//! number) takes its place. An answer that comes after that is counted in
//! `late` and otherwise ignored.
//!
//! # Key-value: the kv mode ([`KvStream`])
//!
//! Each connection keeps `--depth` requests in flight, as for echo; each
//! request is a SET (`--set-percent` of them) or a GET, of one of `--keys`
//! keys picked at random. The keys are the connection's own (its number
//! and a nonce of the run are in each key), so what a GET must return is
//! known: the value this connection last SET under that key, or NOT_FOUND
//! if it never did in this run. The server answers a connection's requests
//! in order, so that is true even with many requests in flight, and every
//! reply is checked against it. A value is `--value-size` bytes: the
//! version it was SET with (a counter of the connection, 8 bytes,
//! little-endian), then the pattern `(k + version + id) % 251`, so a stale
//! value, another key's value or a corrupt one all fail the check.
//!
//! # The clock ([`Clock`])
//!
//! evloop's timers belong to a source: the handler that set a timer gets its
//! `on_timer`. The run's own timers (the hard deadline, and a tick that
//! notices the end of the measured window while nothing else happens) need
//! a source to belong to, and the clock is one: a custom source over a pipe.
//! A fresh pipe's write end is writable, and registering it raises one
//! WRITABLE edge, so the clock's `on_ready` runs once, in the loop's first
//! turn; nothing is ever written, so it never runs again. That first call
//! opens the stream connections and sets the timers.
//!
//! A datagram socket's handler has no `on_open`: its first callback is its
//! first datagram. So the clock starts each UDP socket by sending it an
//! empty datagram, through the socket itself, to its own port
//! ([`SourceRef::send_datagram`](evloop::SourceRef::send_datagram)). The requests never are empty.
//!
//! # The run's phases and its end
//!
//! Once every connection is open (or has failed), `--warmup` seconds pass
//! uncounted, then the measured window starts. It ends after `--duration`
//! seconds, or at the `--requests`-th answer (requests are not issued beyond
//! that count). Either way there is a hard deadline (`--timeout`, by default
//! warmup + duration + 10 s, or a generous allowance for `--requests`):
//! when it passes, the run stops and reports a failure rather than hang.
//! A run also ends early when every connection has failed.
//!
//! # Output
//!
//! One JSON object on one line, like the shared TCP-only load generator's
//! (for the kv mode, the differences are listed after this paragraph):
//! `mode` (`echo`), `transport` (`tcp`, `unix`, `udp`), `addr`, `conns`,
//! `size`, `depth`; `requests` answered in the measured window, `seconds`
//! it lasted (with `--requests`, up to the last answer), `rps`, `mb_s`
//! (echoed payload, one direction, 10^6 bytes per second), `p50_us`,
//! `p99_us`, `p999_us`, `max_us`; `errors` (failed connections, or bad
//! datagrams over UDP), `wrong_bytes` (of those, the ones for bytes that
//! were not what was sent), `lost` and `late` (UDP, in the measured window),
//! `timed_out`; and, for windows of half a second or more, `client_cpu`,
//! `server_cpu` (with `--pid`) and `other_cpu`: shares of one core used by
//! this program, the server, and everything else on the machine. With
//! `--pid` there is also `server_us_per_req`: the server's CPU time over
//! the window, in microseconds, per request answered in it. `--pid` may
//! list several processes (`--pid 10,11`), whose CPU time is summed; a
//! process's time counts all its threads.
//!
//! The echo line also has `rate`, the `--rate` asked for (0 for the closed
//! loop), and with `--rate`, `late_issues`: requests that fell due while
//! their connection had `--depth` requests in flight. The rate achieved is
//! `rps`; latencies are then from each request's due time.
//!
//! The kv mode's line has `keys`, `value_size` and `set_percent` instead of
//! `size`, no `mb_s`, `lost` or `late`, `wrong_replies` instead of
//! `wrong_bytes`, and counts of the measured window's `sets`, `hits` (GETs
//! answered VALUE) and `misses` (GETs answered NOT_FOUND).
//!
//! The idle and download modes have lines of their own, described in
//! [`idle`] and [`download`]: `conns`, `accepted`, `rss_before_kib`,
//! `rss_after_kib`, `bytes_per_conn`, `ok`; and `bytes`, `gb_s`,
//! `downloads`, `p50_ms`, `p99_ms`, `wrong_length`, the CPU shares and
//! `server_us_per_download`.
//!
//! The chat mode ([`chat`]) has a line of its own: `receivers`, `senders`,
//! `rate`, `seconds`; `sent` lines, `expected` and `received` deliveries,
//! `delivered` (their ratio) and `deliveries_per_s`; latencies from the time
//! each line was written; `send_lag_p99_us` and `send_lag_max_us`; `errors`
//! (`dropped` members and `bad_lines`), `timed_out`, the CPU shares, and
//! with `--pid` `server_us_per_line`; then the same deliveries split into
//! those within one server and those across servers (`within_*`,
//! `across_*`: with `--tcp` given more than once, the members are spread
//! over the addresses in turn), and with `--pid` each process's CPU alone.
//!
//! Latencies go into a log-linear histogram (16 buckets per power of two,
//! about 3 % resolution), written here so that the example needs nothing
//! beyond evloop's own dependencies.

// The examples' shared flag parsing, logging and exit codes.
#[path = "../../../examples/common/mod.rs"]
mod common;

mod chat;
mod download;
mod driver;
mod idle;
mod paced;
mod tls;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args, Parser, Subcommand};
use evloop::{
    Addr, CloseReason, ConnectionOptions, Context, DatagramHandler, Event, Interest, Key, Reactor,
    SourceHandler, StreamHandler, TimerId,
};

/// The period of the byte pattern: a prime, so that no request size lines
/// up with it.
const PERIOD: usize = 251;

/// The longest slice sent or checked in one piece; the pattern table is
/// `PERIOD + CHUNK` bytes long, so a slice of this length can start at any
/// phase of the pattern.
const CHUNK: usize = 64 * 1024;

/// Bytes of the UDP header: connection id (u32), slot (u32), sequence (u64),
/// little-endian.
const HEADER: usize = 16;

/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

/// The most connections, and the most requests in flight in all: each
/// costs a few dozen bytes of bookkeeping, made up front.
const MAX_CONNS: usize = 1_000_000;

/// How often the clock looks at the time when nothing else happens.
const TICK: Duration = Duration::from_millis(10);

/// How long a Unix connect refused with `WouldBlock` (full backlog) waits
/// before it is tried again.
const RETRY: Duration = Duration::from_millis(1);

/// The shortest measured window whose CPU shares are reported: /proc counts
/// other processes' time in 10 ms ticks.
const MIN_CPU_WINDOW: f64 = 0.5;

/// Error lines printed before the rest are only counted.
const SHOWN_ERRORS: u64 = 5;

/// How many of a run's errors were printed: the first [`SHOWN_ERRORS`] go
/// to stderr, the rest are only counted (the totals are printed at the
/// end).
#[derive(Default)]
pub(crate) struct Shown(u64);

impl Shown {
    /// Prints one error line, or the note that no more will be.
    pub(crate) fn print(&mut self, what: fmt::Arguments<'_>) {
        if self.0 < SHOWN_ERRORS {
            eprintln!("loadgen: {what}");
        } else if self.0 == SHOWN_ERRORS {
            eprintln!("loadgen: (further errors are counted, not shown)");
        }
        self.0 += 1;
    }
}

/// Load generator built on evloop: echo over TCP, Unix stream sockets and
/// UDP; GET and SET against the kv example.
#[derive(Parser)]
#[command(name = "loadgen", subcommand_required = true, arg_required_else_help = false)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Closed-loop echo: every connection keeps --depth requests in flight
    /// and checks every byte that comes back
    Echo(EchoFlags),
    /// Closed-loop GET and SET against the kv example: every connection
    /// keeps --depth requests in flight and checks every reply
    Kv(KvFlags),
    /// Idle connections: opens --conns connections that send nothing and
    /// reports how much the server's resident memory grew per connection
    Idle(idle::IdleFlags),
    /// Downloads: --conns connections fetch one file over and over (plain
    /// file protocol or HTTP), checking each length; reports throughput
    Download(download::DownloadFlags),
    /// Chat room: --receivers members listen while --senders members post
    /// --rate lines per second; times and checks every delivery
    Chat(chat::ChatFlags),
}

#[derive(Args)]
#[command(group(ArgGroup::new("transport").required(true).args(["tcp", "unix", "udp"])))]
#[command(group(ArgGroup::new("limit").required(true).args(["requests", "duration"])))]
struct EchoFlags {
    /// Echo server's TCP address
    #[arg(long, value_name = "ADDR")]
    tcp: Option<SocketAddr>,
    /// Echo server's Unix stream socket
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Echo server's UDP address
    #[arg(long, value_name = "ADDR")]
    udp: Option<SocketAddr>,
    /// Connections (UDP: sockets)
    #[arg(long, value_name = "N")]
    conns: usize,
    /// Bytes per request (UDP: per datagram, header included, 16 to 65507)
    #[arg(long, value_name = "BYTES")]
    size: usize,
    /// Requests in flight per connection
    #[arg(long, value_name = "D", default_value_t = 1)]
    depth: usize,
    /// Stop after this many answers in the measured window
    #[arg(long, value_name = "TOTAL")]
    requests: Option<u64>,
    /// Stop after this many seconds of measuring
    #[arg(long, value_name = "SECS", value_parser = common::seconds)]
    duration: Option<Duration>,
    /// Seconds of load before measuring starts
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = common::seconds)]
    warmup: Duration,
    /// Hard deadline for the whole run [default: warmup + duration + 10 s,
    /// or for --requests warmup + 30 s + 50 us and SIZE / 50 MB/s per request]
    #[arg(long, value_name = "SECS", value_parser = common::seconds)]
    timeout: Option<Duration>,
    /// UDP: seconds without an answer before a request counts as lost and
    /// another takes its place
    #[arg(long, value_name = "SECS", default_value = "0.25", value_parser = common::seconds)]
    loss_timeout: Duration,
    /// Paced load (TCP, Unix): R requests per second over all connections,
    /// each still at most --depth in flight, latency counted from each
    /// request's scheduled time [default: closed loop]
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// The server's process ids, to report their CPU use over the window
    /// (summed)
    #[arg(long, value_name = "PID[,PID...]", value_delimiter = ',')]
    pid: Vec<u32>,
    #[command(flatten)]
    tls: tls::TlsFlags,
}

/// Where the load goes.
#[derive(Clone, Debug)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Udp(SocketAddr),
}

impl Target {
    fn transport(&self) -> &'static str {
        match self {
            Target::Tcp(_) => "tcp",
            Target::Unix(_) => "unix",
            Target::Udp(_) => "udp",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) | Target::Udp(addr) => write!(f, "{addr}"),
            Target::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// When the measured window ends.
#[derive(Clone, Copy, Debug)]
enum Limit {
    Requests(u64),
    Duration(Duration),
}

/// The checked command line.
#[derive(Clone)]
struct Plan {
    target: Target,
    conns: usize,
    size: usize,
    depth: usize,
    limit: Limit,
    warmup: Duration,
    timeout: Duration,
    loss_timeout: Duration,
    /// Paced echo: requests per second over all connections; `None` for
    /// the closed loop.
    rate: Option<f64>,
    /// Server processes whose CPU time is reported, summed.
    pid: Vec<u32>,
    /// What the connections say: echo bytes, or kv requests.
    mode: Mode,
    /// TCP over TLS (`--tls`).
    tls: Option<tls::Tls>,
}

impl Plan {
    /// Checks what clap cannot; a bad value is a usage error (exit 2).
    fn from_flags(flags: EchoFlags) -> Plan {
        let target = match (flags.tcp, flags.unix, flags.udp) {
            (Some(addr), None, None) => Target::Tcp(addr),
            (None, Some(path), None) => Target::Unix(path),
            (None, None, Some(addr)) => Target::Udp(addr),
            _ => common::usage_error("give exactly one of --tcp, --unix, --udp"),
        };
        let limit = match (flags.requests, flags.duration) {
            (Some(total), None) => Limit::Requests(total),
            (None, Some(duration)) => Limit::Duration(duration),
            _ => common::usage_error("give exactly one of --requests, --duration"),
        };
        if flags.conns == 0 || flags.size == 0 || flags.depth == 0 {
            common::usage_error("--conns, --size and --depth must be at least 1");
        }
        match limit {
            Limit::Requests(0) => common::usage_error("--requests must be at least 1"),
            Limit::Duration(d) if d.is_zero() => common::usage_error("--duration must be above 0"),
            _ => {}
        }
        if let Target::Udp(_) = target {
            if !(HEADER..=MAX_DATAGRAM).contains(&flags.size) {
                common::usage_error(&format!(
                    "--size must be {HEADER} to {MAX_DATAGRAM} over UDP (a datagram with its header)"
                ));
            }
            if flags.loss_timeout.is_zero() {
                common::usage_error("--loss-timeout must be above 0");
            }
        }
        if flags.conns > MAX_CONNS || flags.conns.saturating_mul(flags.depth) > MAX_CONNS {
            common::usage_error(&format!(
                "--conns and --conns x --depth must be at most {MAX_CONNS}"
            ));
        }
        let tls = match &target {
            Target::Tcp(addr) => flags.tls.for_addr(addr),
            _ if flags
                .tls
                .for_addr(&SocketAddr::from(([127, 0, 0, 1], 0)))
                .is_some() =>
            {
                common::usage_error("--tls is for --tcp")
            }
            _ => None,
        };
        if let Some(rate) = flags.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= paced::MAX_RATE) {
                common::usage_error(&format!("--rate must be above 0 and at most {}", paced::MAX_RATE));
            }
            if let Target::Udp(_) = target {
                common::usage_error("--rate is for --tcp and --unix");
            }
        }
        let timeout = flags.timeout.unwrap_or_else(|| match limit {
            Limit::Duration(d) => flags.warmup + d + Duration::from_secs(10),
            Limit::Requests(total) => {
                let per_request = 50e-6 + flags.size as f64 / 50e6 + flags.rate.map_or(0.0, |r| 1.0 / r);
                flags.warmup + Duration::from_secs(30) + Duration::from_secs_f64(total as f64 * per_request)
            }
        });
        Plan {
            target,
            conns: flags.conns,
            size: flags.size,
            depth: flags.depth,
            limit,
            warmup: flags.warmup,
            timeout,
            loss_timeout: flags.loss_timeout,
            rate: flags.rate,
            pid: flags.pid,
            mode: Mode::Echo,
            tls,
        }
    }
}

fn main() -> ExitCode {
    let cli: Cli = common::parse();
    common::init_logging();
    let plan = match cli.command {
        Command::Echo(flags) => Plan::from_flags(flags),
        Command::Kv(flags) => Plan::from_kv_flags(flags),
        Command::Idle(flags) => return idle::run(flags),
        Command::Download(flags) => return download::run(flags),
        Command::Chat(flags) => return chat::run(flags),
    };
    raise_nofile(plan.conns as u64 + 64);

    let mut reactor = Reactor::new().unwrap_or_else(|err| common::fail(&err));
    // A connection never has more than depth x size bytes of requests out;
    // let the write queue hold that much whatever the server's pace.
    let in_flight = plan.depth.saturating_mul(plan.size).saturating_add(CHUNK);
    let defaults = ConnectionOptions::default();
    reactor.set_connection_defaults(ConnectionOptions {
        max_queued: defaults.max_queued.max(in_flight),
        ..defaults
    });

    let run = Rc::new(RefCell::new(Run::new(&plan)));
    let pattern: Rc<[u8]> = (0..PERIOD + CHUNK).map(|k| (k % PERIOD) as u8).collect();

    // UDP: one socket per connection, bound now; the clock starts them.
    let mut sockets = Vec::new();
    if let Target::Udp(server) = plan.target {
        let (any, loopback): (IpAddr, IpAddr) = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED.into(), Ipv4Addr::LOCALHOST.into()),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED.into(), Ipv6Addr::LOCALHOST.into()),
        };
        for id in 0..plan.conns {
            let client = DatagramClient::new(id as u32, &plan, server, &run, &pattern);
            let key = reactor
                .bind_udp(SocketAddr::new(any, 0), client)
                .unwrap_or_else(|err| common::fail(&err));
            let port = reactor
                .local_addr(key)
                .and_then(|a| a.as_inet())
                .map_or(0, |a| a.port());
            sockets.push((key, Addr::Inet(SocketAddr::new(loopback, port))));
        }
    }

    // Paced echo: the connections' shared schedule, and the pacer that
    // makes their requests due.
    let pace = plan.rate.map(|rate| paced::Pace::new(rate, &plan, &pattern));
    if let Some(pace) = &pace {
        let pacer = paced::Pacer::new(pace, &run).unwrap_or_else(|err| common::fail(&err));
        if let Err(err) = reactor.register(pacer, Interest::READABLE) {
            common::fail(&err);
        }
    }

    let clock = Clock::new(&plan, &run, &pattern, sockets, pace).unwrap_or_else(|err| common::fail(&err));
    if let Err(err) = reactor.register(clock, Interest::WRITABLE) {
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

/// The state of the whole run, shared by every handler (one thread, so an
/// `Rc<RefCell>`; no handler holds the borrow across a callback).
struct Run {
    limit: Limit,
    size: u64,
    warmup: Duration,
    timeout: Duration,
    /// Where the load goes, for error lines.
    target_name: Rc<str>,
    /// Connections neither open nor failed yet.
    unsettled: usize,
    /// Connections not failed or closed.
    live: usize,
    /// When counting starts: set once every connection is settled.
    warm_end: Option<Instant>,
    /// With `--duration`: when counting stops.
    measure_end: Option<Instant>,
    measuring: bool,
    /// The run is over: nothing more is issued or counted.
    over: bool,
    /// When the run ended.
    ended: Option<Instant>,
    /// When the last counted answer came.
    last: Option<Instant>,
    /// Requests issued and not yet answered, lost or abandoned.
    outstanding: u64,
    /// Answers counted in the measured window.
    requests: u64,
    hist: Histogram,
    /// Failed connections (TCP, Unix) or bad datagrams (UDP).
    errors: u64,
    /// Of those, failures for bytes that were not what was sent.
    wrong: u64,
    lost: u64,
    late: u64,
    timed_out: bool,
    /// Paced echo: requests that fell due while their connection had
    /// `--depth` requests in flight, in the measured window.
    pub(crate) late_issues: u64,
    shown: Shown,
    pid: Vec<u32>,
    cpu: Option<CpuMeter>,
    cpu_shares: Option<CpuShares>,
    /// The kv mode's replies in the measured window.
    kv: KvCounts,
}

impl Run {
    fn new(plan: &Plan) -> Run {
        Run {
            limit: plan.limit,
            size: plan.size as u64,
            warmup: plan.warmup,
            timeout: plan.timeout,
            target_name: plan.target.to_string().into(),
            unsettled: plan.conns,
            live: plan.conns,
            warm_end: None,
            measure_end: None,
            measuring: false,
            over: false,
            ended: None,
            last: None,
            outstanding: 0,
            requests: 0,
            hist: Histogram::new(),
            errors: 0,
            wrong: 0,
            lost: 0,
            late: 0,
            timed_out: false,
            late_issues: 0,
            shown: Shown::default(),
            pid: plan.pid.clone(),
            cpu: None,
            cpu_shares: None,
            kv: KvCounts::default(),
        }
    }

    /// Prints one error line on stderr; past [`SHOWN_ERRORS`] they are only
    /// counted (the totals are printed at the end).
    fn report(&mut self, what: fmt::Arguments<'_>) {
        self.shown.print(what);
    }

    /// A failure that counts in `errors` (unless the run is already over:
    /// what happens to connections after the end is not the server's fault).
    fn error(&mut self, what: fmt::Arguments<'_>) {
        if !self.over {
            self.errors += 1;
            self.report(what);
        }
    }

    /// A failure for bytes that were not what was sent: counted in `errors`
    /// and in `wrong`.
    fn wrong_bytes(&mut self, what: fmt::Arguments<'_>) {
        if !self.over {
            self.wrong += 1;
        }
        self.error(what);
    }

    /// A connection opened, or failed before it could. Once every one has,
    /// the warm-up starts.
    fn settled(&mut self, now: Instant) {
        self.unsettled = self.unsettled.saturating_sub(1);
        if self.unsettled == 0 && self.warm_end.is_none() {
            let warm_end = now + self.warmup;
            self.warm_end = Some(warm_end);
            if let Limit::Duration(d) = self.limit {
                self.measure_end = Some(warm_end + d);
            }
            self.observe(now);
        }
    }

    /// Moves the run along the clock: starts the measured window, ends it.
    fn observe(&mut self, now: Instant) {
        if self.over {
            return;
        }
        if !self.measuring && self.warm_end.is_some_and(|w| now >= w) {
            self.measuring = true;
            self.cpu = Some(CpuMeter::start(&self.pid));
        }
        if let Some(end) = self.measure_end {
            if now >= end {
                self.finish(end);
            }
        }
    }

    /// Whether a connection may issue one more request; if so it is counted
    /// as outstanding. With `--requests`, no more are issued than the count
    /// still needs.
    fn may_issue(&mut self) -> bool {
        if self.over {
            return false;
        }
        if let (Limit::Requests(total), true) = (self.limit, self.measuring) {
            if self.requests + self.outstanding >= total {
                return false;
            }
        }
        self.outstanding += 1;
        true
    }

    /// An answer came back whole and correct at `now`, `latency` after its
    /// request was issued.
    fn complete(&mut self, now: Instant, latency: Duration) {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.observe(now);
        if !self.measuring || self.over {
            return;
        }
        self.requests += 1;
        self.last = Some(now);
        self.hist.record(latency.as_nanos().min(u64::MAX as u128) as u64);
        if let Limit::Requests(total) = self.limit {
            if self.requests >= total {
                self.finish(now);
            }
        }
    }

    /// Requests that will never be answered (lost datagrams, a connection
    /// that went): no longer outstanding.
    fn abandon(&mut self, requests: u64) {
        self.outstanding = self.outstanding.saturating_sub(requests);
    }

    /// A connection is gone with `in_flight` requests unanswered. When the
    /// last one goes, the run is over.
    fn connection_gone(&mut self, now: Instant, in_flight: u64) {
        self.abandon(in_flight);
        self.live = self.live.saturating_sub(1);
        if self.live == 0 && !self.over {
            self.finish(now);
        }
    }

    /// The hard deadline passed.
    fn time_out(&mut self, now: Instant) {
        if !self.over {
            self.timed_out = true;
            self.finish(now);
        }
    }

    fn finish(&mut self, at: Instant) {
        self.over = true;
        self.ended = Some(at);
        if let Some(meter) = self.cpu.take() {
            self.cpu_shares = Some(meter.finish());
        }
    }

    /// The length of the measured window.
    fn seconds(&self) -> f64 {
        let Some(start) = self.warm_end else { return 0.0 };
        let end = match self.limit {
            Limit::Requests(total) if self.requests >= total => self.last,
            _ => self.ended,
        };
        end.map_or(0.0, |end| end.saturating_duration_since(start).as_secs_f64())
    }

    /// The result line.
    fn json(&self, plan: &Plan) -> String {
        let secs = self.seconds();
        let per_sec = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
        let us = |ns: u64| ns as f64 / 1000.0;
        let mut j = Json::new(plan.mode.name());
        j.s("transport", plan.target.transport());
        j.s("addr", &plan.target.to_string());
        j.u("conns", plan.conns as u64);
        match plan.mode {
            Mode::Echo => j.u("size", plan.size as u64),
            Mode::Kv(mix) => {
                j.u("keys", mix.keys as u64);
                j.u("value_size", mix.value_size as u64);
                j.u("set_percent", mix.set_percent);
            }
        }
        j.u("depth", plan.depth as u64);
        if let Mode::Echo = plan.mode {
            let rate = plan.rate.unwrap_or(0.0);
            j.f("rate", rate, if rate.fract() == 0.0 { 0 } else { 3 });
        }
        j.u("requests", self.requests);
        j.f("seconds", secs, 3);
        j.f("rps", per_sec(self.requests as f64), 0);
        if let Mode::Echo = plan.mode {
            j.f("mb_s", per_sec((self.requests * self.size) as f64) / 1e6, 2);
        }
        j.f("p50_us", us(self.hist.quantile(0.50)), 1);
        j.f("p99_us", us(self.hist.quantile(0.99)), 1);
        j.f("p999_us", us(self.hist.quantile(0.999)), 1);
        j.f("max_us", us(self.hist.max), 1);
        j.u("errors", self.errors);
        match plan.mode {
            Mode::Echo => {
                j.u("wrong_bytes", self.wrong);
                j.u("lost", self.lost);
                j.u("late", self.late);
            }
            Mode::Kv(_) => {
                j.u("wrong_replies", self.wrong);
                j.u("sets", self.kv.sets);
                j.u("hits", self.kv.hits);
                j.u("misses", self.kv.misses);
            }
        }
        if plan.rate.is_some() {
            j.u("late_issues", self.late_issues);
        }
        j.b("timed_out", self.timed_out);
        if let Some(cpu) = self.cpu_shares.as_ref().filter(|_| secs >= MIN_CPU_WINDOW) {
            cpu.write(&mut j, "server_us_per_req", self.requests);
        }
        j.finish()
    }

    /// Whether every check passed; says on stderr why not.
    fn verdict(&self, plan: &Plan) -> bool {
        let mut ok = true;
        if self.timed_out {
            eprintln!(
                "loadgen: the run did not finish within its hard deadline of {:.1} s",
                self.timeout.as_secs_f64()
            );
            ok = false;
        }
        if self.wrong > 0 {
            match plan.mode {
                Mode::Echo => eprintln!("loadgen: the server sent back bytes that were not sent to it"),
                Mode::Kv(_) => eprintln!("loadgen: the server sent {} wrong replies", self.wrong),
            }
        }
        if self.errors > 0 {
            let what = match plan.target {
                Target::Udp(_) => "bad datagram(s) came back",
                _ => "connection(s) failed during the run",
            };
            eprintln!("loadgen: {} {what}", self.errors);
            ok = false;
        }
        match self.limit {
            Limit::Requests(total) if self.requests < total => {
                eprintln!("loadgen: only {} of {total} requests completed", self.requests);
                ok = false;
            }
            Limit::Duration(_) if self.requests == 0 => {
                eprintln!("loadgen: no request completed in the measured window");
                ok = false;
            }
            _ => {}
        }
        if ok && self.lost > 0 {
            eprintln!(
                "loadgen: {} datagram(s) lost ({} answered late)",
                self.lost, self.late
            );
        }
        ok
    }
}

/// What a closed-loop stream client exchanges with its server: the part
/// that differs between the echo and kv modes. [`Client`] does the rest.
trait Exchange {
    /// Issues up to `n` requests at `now` as one send. Returns `false` if
    /// the connection refused the bytes (it is closing).
    fn issue(&mut self, cx: &mut Context<'_>, run: &mut Run, n: usize, now: Instant) -> bool;

    /// Checks `data` and completes the requests it answers (through
    /// [`Run::complete`]). Returns the bytes used and the requests
    /// completed, or what was wrong with the answer.
    fn receive(&mut self, run: &mut Run, data: &[u8], now: Instant) -> Result<(usize, usize), String>;

    /// Forgets the requests in flight; returns how many there were.
    fn drop_in_flight(&mut self) -> u64;
}

/// One TCP or Unix stream connection of the closed loop: the life every
/// stream client shares (open, answers, failure, close), around an
/// [`Exchange`] that knows the protocol.
struct Client<E> {
    /// The connection's number, for messages.
    id: u64,
    run: Rc<RefCell<Run>>,
    depth: usize,
    exchange: E,
    opened: bool,
    /// A failure was counted for this connection.
    failed: bool,
    /// The run no longer counts this connection as live.
    gone: bool,
}

impl<E: Exchange> Client<E> {
    fn new(id: u64, plan: &Plan, run: &Rc<RefCell<Run>>, exchange: E) -> Client<E> {
        Client {
            id,
            run: Rc::clone(run),
            depth: plan.depth,
            exchange,
            opened: false,
            failed: false,
            gone: false,
        }
    }

    /// Counts this connection as failed (once), with a reason for stderr;
    /// `wrong` for a wrong answer, otherwise an error.
    fn fail(&mut self, run: &mut Run, wrong: bool, what: fmt::Arguments<'_>) {
        if !self.failed {
            self.failed = true;
            let target = Rc::clone(&run.target_name);
            let what = format_args!("connection {} to {target}: {what}", self.id);
            if wrong {
                run.wrong_bytes(what);
            } else {
                run.error(what);
            }
        }
    }

    /// Takes this connection out of the run (once).
    fn leave(&mut self, run: &mut Run, now: Instant) {
        if !self.opened {
            self.opened = true;
            run.settled(now);
        }
        if !self.gone {
            self.gone = true;
            let in_flight = self.exchange.drop_in_flight();
            run.connection_gone(now, in_flight);
        }
    }

    /// Issues `n` more requests; a refusal fails the connection.
    fn issue(&mut self, cx: &mut Context<'_>, run: &mut Run, n: usize, now: Instant) {
        if !self.exchange.issue(cx, run, n, now) {
            self.fail(run, false, format_args!("the connection refused a request"));
            cx.abort();
        }
    }
}

impl<E: Exchange> StreamHandler for Client<E> {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        let now = Instant::now();
        self.opened = true;
        run.settled(now);
        self.issue(cx, &mut run, self.depth, now);
        if run.over {
            cx.stop();
        }
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        if self.failed {
            return data.len();
        }
        let now = Instant::now();
        run.observe(now);
        let used = match self.exchange.receive(&mut run, data, now) {
            Ok((used, done)) => {
                if done > 0 {
                    self.issue(cx, &mut run, done, now);
                }
                used
            }
            Err(what) => {
                self.fail(&mut run, true, format_args!("{what}"));
                cx.abort();
                data.len()
            }
        };
        if run.over {
            cx.stop();
        }
        used
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        self.fail(&mut run, false, format_args!("the server closed the connection"));
        cx.close();
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        match reason {
            CloseReason::ConnectFailed(err) => {
                self.fail(&mut run, false, format_args!("cannot connect: {err}"));
            }
            reason => self.fail(&mut run, false, format_args!("closed: {reason}")),
        }
        self.leave(&mut run, cx.now());
        if run.over {
            cx.stop();
        }
    }
}

/// The echo mode's exchange: a byte pattern out, the same pattern back.
struct EchoStream {
    /// The connection's number: the phase of its byte pattern.
    id: u64,
    /// `k % 251` for `k` below `PERIOD + CHUNK`, shared by every connection.
    pattern: Rc<[u8]>,
    size: u64,
    /// Bytes of requests sent (handed to evloop, which writes them or
    /// queues what the socket does not take).
    sent: u64,
    /// Bytes echoed back and checked.
    received: u64,
    /// When each request in flight was issued, oldest first; room for
    /// `depth` is made once, so issuing allocates nothing.
    issued: VecDeque<Instant>,
}

impl EchoStream {
    fn new(id: u64, plan: &Plan, pattern: &Rc<[u8]>) -> EchoStream {
        EchoStream {
            id,
            pattern: Rc::clone(pattern),
            size: plan.size as u64,
            sent: 0,
            received: 0,
            issued: VecDeque::with_capacity(plan.depth),
        }
    }

    /// Checks `data`, the next bytes of the echoed stream, against the
    /// pattern. Returns the offset in the stream of the first wrong byte,
    /// with the byte and what it should have been.
    fn check(&self, data: &[u8]) -> Result<(), (u64, u8, u8)> {
        let mut pos = 0;
        while pos < data.len() {
            let offset = self.received + pos as u64;
            let phase = ((offset + self.id) % PERIOD as u64) as usize;
            let take = (data.len() - pos).min(CHUNK);
            let got = &data[pos..pos + take];
            let want = &self.pattern[phase..phase + take];
            if got != want {
                let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                return Err((offset + i as u64, got[i], want[i]));
            }
            pos += take;
        }
        Ok(())
    }
}

impl EchoStream {
    /// Counts up to `n` new requests in flight, issued (or, paced, due) at
    /// `at`, as far as the run wants them. Returns how many.
    pub(crate) fn admit(&mut self, run: &mut Run, n: usize, at: Instant) -> usize {
        let mut count = 0;
        while count < n && run.may_issue() {
            self.issued.push_back(at);
            count += 1;
        }
        count
    }

    /// Sends the bytes of `count` requests, `count x size` bytes of the
    /// pattern from where the stream stands, through `send` (a context's or
    /// a [`SourceRef`](evloop::SourceRef)'s). Returns `false` if the
    /// connection refused them.
    pub(crate) fn send_requests(&mut self, count: usize, mut send: impl FnMut(&[u8]) -> bool) -> bool {
        let mut left = count as u64 * self.size;
        while left > 0 {
            let phase = ((self.sent + self.id) % PERIOD as u64) as usize;
            let take = left.min(CHUNK as u64) as usize;
            if !send(&self.pattern[phase..phase + take]) {
                return false;
            }
            self.sent += take as u64;
            left -= take as u64;
        }
        true
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.issued.len()
    }
}

impl Exchange for EchoStream {
    /// `n x size` bytes of the pattern, from where the stream stands.
    fn issue(&mut self, cx: &mut Context<'_>, run: &mut Run, n: usize, now: Instant) -> bool {
        let count = self.admit(run, n, now);
        self.send_requests(count, |bytes| cx.send(bytes))
    }

    fn receive(&mut self, run: &mut Run, data: &[u8], now: Instant) -> Result<(usize, usize), String> {
        let end = self.received + data.len() as u64;
        if end > self.sent {
            return Err(format!("{end} bytes came back, only {} were sent", self.sent));
        }
        if let Err((offset, got, want)) = self.check(data) {
            return Err(format!("wrong byte at offset {offset}: {got} instead of {want}"));
        }
        // Requests whose last byte is in `data`.
        let done = (end / self.size - self.received / self.size) as usize;
        self.received = end;
        for _ in 0..done {
            if let Some(issued) = self.issued.pop_front() {
                run.complete(now, now.saturating_duration_since(issued));
            }
        }
        Ok((data.len(), done))
    }

    fn drop_in_flight(&mut self) -> u64 {
        let n = self.issued.len() as u64;
        self.issued.clear();
        n
    }
}

/// One request slot of a UDP socket.
struct Slot {
    /// A request is out and unanswered.
    busy: bool,
    /// Its sequence number.
    seq: u64,
    issued: Instant,
    /// The slot's loss timer, moved at every request; `None` once it fired.
    timer: Option<TimerId>,
}

/// One UDP socket of the closed loop.
struct DatagramClient {
    id: u32,
    run: Rc<RefCell<Run>>,
    pattern: Rc<[u8]>,
    server: Addr,
    /// Bytes per datagram, header included.
    size: usize,
    /// The datagram being built; one buffer, rewritten for every request.
    out: Vec<u8>,
    slots: Vec<Slot>,
    next_seq: u64,
    started: bool,
    loss_timeout: Duration,
}

impl DatagramClient {
    fn new(
        id: u32,
        plan: &Plan,
        server: SocketAddr,
        run: &Rc<RefCell<Run>>,
        pattern: &Rc<[u8]>,
    ) -> DatagramClient {
        let now = Instant::now();
        let slots = (0..plan.depth)
            .map(|_| Slot {
                busy: false,
                seq: 0,
                issued: now,
                timer: None,
            })
            .collect();
        DatagramClient {
            id,
            run: Rc::clone(run),
            pattern: Rc::clone(pattern),
            server: Addr::Inet(server),
            size: plan.size,
            out: vec![0; plan.size],
            slots,
            next_seq: 0,
            started: false,
            loss_timeout: plan.loss_timeout,
        }
    }

    /// The pattern bytes of datagram `seq` after its header.
    fn payload(&self, seq: u64) -> &[u8] {
        let phase = ((seq + u64::from(self.id) + HEADER as u64) % PERIOD as u64) as usize;
        &self.pattern[phase..phase + self.size - HEADER]
    }

    /// Sends a new request from slot `s`, if the run wants one, and moves
    /// the slot's loss timer to `loss_timeout` from now.
    fn issue(&mut self, cx: &mut Context<'_>, run: &mut Run, s: usize, now: Instant) {
        if !run.may_issue() {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut out = std::mem::take(&mut self.out);
        out[0..4].copy_from_slice(&self.id.to_le_bytes());
        out[4..8].copy_from_slice(&(s as u32).to_le_bytes());
        out[8..16].copy_from_slice(&seq.to_le_bytes());
        out[HEADER..].copy_from_slice(self.payload(seq));
        let slot = &mut self.slots[s];
        slot.busy = true;
        slot.seq = seq;
        slot.issued = now;
        // Reset rather than cancel and set: moving a pending timer later
        // costs O(1). A timer that already fired is set anew.
        let moved = slot.timer.is_some_and(|t| cx.reset_timer(t, self.loss_timeout));
        if !moved {
            slot.timer = cx.set_timer(self.loss_timeout);
        }
        // A datagram the socket drops (its send queue is full) is simply
        // lost: the slot's timer counts it.
        cx.send_datagram(&self.server, &out);
        self.out = out;
    }

    /// Parses and checks an answer: `Ok((slot, seq))` if it is one of ours,
    /// whole and unchanged.
    fn check(&self, data: &[u8]) -> Result<(usize, u64), String> {
        if data.len() != self.size {
            return Err(format!("{} bytes, not {}", data.len(), self.size));
        }
        let word = |at: usize| u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let (id, slot) = (word(0), word(4) as usize);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&data[8..16]);
        let seq = u64::from_le_bytes(seq);
        if id != self.id || slot >= self.slots.len() || seq >= self.next_seq {
            return Err(format!(
                "a header (connection {id}, slot {slot}, sequence {seq}) that was never sent"
            ));
        }
        let want = self.payload(seq);
        if let Some(i) = data[HEADER..].iter().zip(want).position(|(a, b)| a != b) {
            return Err(format!(
                "byte {} is {} instead of {}",
                HEADER + i,
                data[HEADER + i],
                want[i]
            ));
        }
        Ok((slot, seq))
    }
}

impl DatagramHandler for DatagramClient {
    fn on_datagram(&mut self, cx: &mut Context<'_>, data: &[u8], from: &Addr) {
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        if from != &self.server {
            // The clock's start signal: an empty datagram from this socket
            // to itself. Anything else from a stranger is ignored.
            if !self.started && data.is_empty() {
                self.started = true;
                let now = Instant::now();
                run.settled(now);
                for s in 0..self.slots.len() {
                    self.issue(cx, &mut run, s, now);
                }
            }
        } else {
            let now = Instant::now();
            run.observe(now);
            match self.check(data) {
                Err(what) => {
                    let id = self.id;
                    run.wrong_bytes(format_args!("socket {id}: a datagram from the server has {what}"));
                    // The request stays out; its timer will count it lost.
                }
                Ok((s, seq)) => {
                    let slot = &mut self.slots[s];
                    if slot.busy && slot.seq == seq {
                        slot.busy = false;
                        run.complete(now, now.saturating_duration_since(slot.issued));
                        self.issue(cx, &mut run, s, now);
                    } else {
                        // Answered after it was counted lost, or twice.
                        if run.measuring {
                            run.late += 1;
                        }
                    }
                }
            }
        }
        if run.over {
            cx.stop();
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let Some(s) = self.slots.iter().position(|slot| slot.timer == Some(timer)) else {
            return;
        };
        self.slots[s].timer = None; // a one-shot timer is gone once fired
        if !self.slots[s].busy {
            return; // answered; no request was issued after it
        }
        self.slots[s].busy = false;
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        if run.over {
            return;
        }
        if run.measuring {
            run.lost += 1;
        }
        run.abandon(1);
        let now = Instant::now();
        run.observe(now);
        self.issue(cx, &mut run, s, now);
        if run.over {
            cx.stop();
        }
    }
}

// --- The kv mode ------------------------------------------------------------

/// The kv mode's command line.
#[derive(Args)]
#[command(group(ArgGroup::new("transport").required(true).args(["tcp", "unix"])))]
#[command(group(ArgGroup::new("limit").required(true).args(["requests", "duration"])))]
struct KvFlags {
    /// kv server's TCP address
    #[arg(long, value_name = "ADDR")]
    tcp: Option<SocketAddr>,
    /// kv server's Unix stream socket
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Connections
    #[arg(long, value_name = "N")]
    conns: usize,
    /// Requests in flight per connection
    #[arg(long, value_name = "D", default_value_t = 1)]
    depth: usize,
    /// Stop after this many answers in the measured window
    #[arg(long, value_name = "TOTAL")]
    requests: Option<u64>,
    /// Stop after this many seconds of measuring
    #[arg(long, value_name = "SECS", value_parser = common::seconds)]
    duration: Option<Duration>,
    /// Keys per connection (each connection has keys of its own)
    #[arg(long, value_name = "K", default_value_t = 100)]
    keys: usize,
    /// Bytes per value (8 or more: a value carries its version)
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    value_size: usize,
    /// Share of requests that are SETs, in percent; the rest are GETs
    #[arg(long, value_name = "P", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=100))]
    set_percent: u64,
    /// Seconds of load before measuring starts
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = common::seconds)]
    warmup: Duration,
    /// Hard deadline for the whole run [default: as for echo]
    #[arg(long, value_name = "SECS", value_parser = common::seconds)]
    timeout: Option<Duration>,
    /// The server's process ids, to report their CPU use over the window
    /// (summed)
    #[arg(long, value_name = "PID[,PID...]", value_delimiter = ',')]
    pid: Vec<u32>,
}

/// What the connections of a run say.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Bytes, echoed back.
    Echo,
    /// Requests to the kv example.
    Kv(KvMix),
}

impl Mode {
    /// The `mode` of the JSON line.
    fn name(&self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Kv(_) => "kv",
        }
    }
}

/// The kv mode's requests.
#[derive(Clone, Copy, Debug)]
struct KvMix {
    keys: usize,
    value_size: usize,
    set_percent: u64,
    /// Differs from run to run and is in every key: a run never sees the
    /// values of an earlier one, which the server still holds.
    nonce: u64,
}

/// The longest kv value: well under the server's default `--max-frame`.
const MAX_KV_VALUE: usize = 1024 * 1024 - 64;

/// Bytes of a kv frame's length header.
const KV_HEADER: usize = evloop::codec::HEADER_LEN;

/// The kv mode's replies in the measured window, by kind.
#[derive(Default)]
struct KvCounts {
    sets: u64,
    hits: u64,
    misses: u64,
}

impl Plan {
    /// Checks the kv mode's command line; a bad value is a usage error.
    fn from_kv_flags(flags: KvFlags) -> Plan {
        let target = match (flags.tcp, flags.unix) {
            (Some(addr), None) => Target::Tcp(addr),
            (None, Some(path)) => Target::Unix(path),
            _ => common::usage_error("give exactly one of --tcp, --unix"),
        };
        let limit = match (flags.requests, flags.duration) {
            (Some(0), None) => common::usage_error("--requests must be at least 1"),
            (Some(total), None) => Limit::Requests(total),
            (None, Some(d)) if d.is_zero() => common::usage_error("--duration must be above 0"),
            (None, Some(duration)) => Limit::Duration(duration),
            _ => common::usage_error("give exactly one of --requests, --duration"),
        };
        if flags.conns == 0 || flags.depth == 0 || flags.keys == 0 {
            common::usage_error("--conns, --depth and --keys must be at least 1");
        }
        if flags.conns > MAX_CONNS || flags.conns.saturating_mul(flags.depth) > MAX_CONNS {
            common::usage_error(&format!(
                "--conns and --conns x --depth must be at most {MAX_CONNS}"
            ));
        }
        if !(8..=MAX_KV_VALUE).contains(&flags.value_size) {
            common::usage_error(&format!("--value-size must be 8 to {MAX_KV_VALUE}"));
        }
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mix = KvMix {
            keys: flags.keys,
            value_size: flags.value_size,
            set_percent: flags.set_percent,
            nonce: since_epoch.as_nanos() as u64 ^ u64::from(std::process::id()) << 40,
        };
        // The longest request: a SET frame (its key is well under 64 bytes).
        let size = KV_HEADER + 3 + 64 + flags.value_size;
        let timeout = flags.timeout.unwrap_or_else(|| match limit {
            Limit::Duration(d) => flags.warmup + d + Duration::from_secs(10),
            Limit::Requests(total) => {
                let per_request = 50e-6 + size as f64 / 50e6;
                flags.warmup + Duration::from_secs(30) + Duration::from_secs_f64(total as f64 * per_request)
            }
        });
        Plan {
            target,
            conns: flags.conns,
            size,
            depth: flags.depth,
            limit,
            warmup: flags.warmup,
            timeout,
            loss_timeout: Duration::ZERO,
            rate: None,
            pid: flags.pid,
            mode: Mode::Kv(mix),
            tls: None,
        }
    }
}

/// What the reply to a kv request in flight must be.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A SET's `O`.
    Stored,
    /// A GET's `V`, with the value of this version.
    Value(u64),
    /// A GET's `N`: this connection never set the key in this run.
    NotFound,
}

/// One kv request in flight.
struct KvRequest {
    issued: Instant,
    key: usize,
    expect: Expect,
}

/// The kv mode's exchange: SETs and GETs out, replies checked against
/// what this connection last SET.
struct KvStream {
    /// The connection's number: part of its keys and values.
    id: u64,
    mix: KvMix,
    /// The version of the value last SET under each key; 0: never.
    versions: Vec<u64>,
    /// The version the next SET gets; versions start at 1.
    next_version: u64,
    /// xorshift64 state: which key, and SET or GET.
    rng: u64,
    /// Requests in flight, oldest first: replies come in this order.
    in_flight: VecDeque<KvRequest>,
    /// The body of the request being built, and the frames to send.
    body: Vec<u8>,
    out: Vec<u8>,
}

impl KvStream {
    fn new(id: u64, mix: KvMix, plan: &Plan) -> KvStream {
        KvStream {
            id,
            mix,
            versions: vec![0; mix.keys],
            next_version: 1,
            rng: (mix.nonce ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
            in_flight: VecDeque::with_capacity(plan.depth),
            body: Vec::with_capacity(3 + 64 + mix.value_size),
            out: Vec::new(),
        }
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Byte `k` of the value of `version`.
    fn value_byte(&self, version: u64, k: usize) -> u8 {
        match version.to_le_bytes().get(k) {
            Some(&byte) => byte,
            None => ((k as u64 + version + self.id) % PERIOD as u64) as u8,
        }
    }

    /// Appends the frame of one new request (a SET or a GET of a random
    /// key) to `out`, and says what its reply must be.
    fn build_request(&mut self) -> (usize, Expect) {
        let key = (self.random() % self.mix.keys as u64) as usize;
        let set = self.random() % 100 < self.mix.set_percent;
        self.body.clear();
        self.body.extend_from_slice(if set { b"S\0\0" } else { b"G\0\0" });
        let _ = write!(self.body, "{:x}:{}:{}", self.mix.nonce, self.id, key);
        let key_len = (self.body.len() - 3) as u16;
        self.body[1..3].copy_from_slice(&key_len.to_be_bytes());
        let expect = if set {
            let version = self.next_version;
            self.next_version += 1;
            self.versions[key] = version;
            for k in 0..self.mix.value_size {
                let byte = self.value_byte(version, k);
                self.body.push(byte);
            }
            Expect::Stored
        } else {
            match self.versions[key] {
                0 => Expect::NotFound,
                version => Expect::Value(version),
            }
        };
        evloop::codec::encode_frame(&mut self.out, &self.body).expect("a request under 4 GiB");
        (key, expect)
    }

    /// Checks one reply body against the oldest request in flight.
    fn check(&self, request: &KvRequest, reply: &[u8]) -> Result<(), String> {
        let (status, rest) = reply.split_first().ok_or("an empty reply")?;
        match (request.expect, status) {
            (_, b'E') => Err(format!("ERR {}", String::from_utf8_lossy(rest))),
            (Expect::Stored, b'O') | (Expect::NotFound, b'N') if rest.is_empty() => Ok(()),
            (Expect::Value(version), b'V') => {
                if rest.len() != self.mix.value_size {
                    return Err(format!("a value of {} bytes for key {}", rest.len(), request.key));
                }
                match (0..rest.len()).find(|&k| rest[k] != self.value_byte(version, k)) {
                    None => Ok(()),
                    Some(k) => Err(format!(
                        "key {}: byte {k} of the value is {}, not {} (version {version})",
                        request.key,
                        rest[k],
                        self.value_byte(version, k)
                    )),
                }
            }
            (expect, _) => Err(format!(
                "key {}: reply {:?} ({} bytes) where {expect:?} was due",
                request.key,
                char::from(*status),
                reply.len()
            )),
        }
    }
}

impl Exchange for KvStream {
    /// Up to `n` requests, SET or GET by the mix, framed into one send.
    fn issue(&mut self, cx: &mut Context<'_>, run: &mut Run, n: usize, now: Instant) -> bool {
        self.out.clear();
        for _ in 0..n {
            if !run.may_issue() {
                break;
            }
            let (key, expect) = self.build_request();
            self.in_flight.push_back(KvRequest {
                issued: now,
                key,
                expect,
            });
        }
        self.out.is_empty() || cx.send(&self.out)
    }

    fn receive(&mut self, run: &mut Run, data: &[u8], now: Instant) -> Result<(usize, usize), String> {
        let mut replies = evloop::codec::frames(data, 1 + self.mix.value_size.max(1024));
        let mut done = 0;
        for reply in replies.by_ref() {
            let checked = match (reply, self.in_flight.front()) {
                (_, None) => Err("a reply to no request".to_string()),
                (Err(too_long), Some(_)) => Err(format!("a reply of {} bytes", too_long.len)),
                (Ok(body), Some(request)) => self.check(request, body),
            };
            checked?;
            let Some(request) = self.in_flight.pop_front() else {
                break; // checked above: there is one
            };
            done += 1;
            if run.measuring && !run.over {
                match request.expect {
                    Expect::Stored => run.kv.sets += 1,
                    Expect::Value(_) => run.kv.hits += 1,
                    Expect::NotFound => run.kv.misses += 1,
                }
            }
            run.complete(now, now.saturating_duration_since(request.issued));
        }
        Ok((replies.consumed(), done))
    }

    fn drop_in_flight(&mut self) -> u64 {
        let n = self.in_flight.len() as u64;
        self.in_flight.clear();
        n
    }
}

/// The run's clock: opens the connections (or starts the UDP sockets) in
/// the loop's first turn, keeps the hard deadline, and ticks so that the
/// end of the measured window is noticed even when no answer comes.
struct Clock {
    /// The write end of a pipe: writable from the start, which is the one
    /// event this source ever gets.
    pipe: mio::unix::pipe::Sender,
    /// Kept open, so that the write end stays writable and quiet.
    _read_end: mio::unix::pipe::Receiver,
    run: Rc<RefCell<Run>>,
    pattern: Rc<[u8]>,
    plan: Plan,
    /// UDP sockets to start, with the address of their own port.
    sockets: Vec<(Key, Addr)>,
    /// Stream connections still to open (by number), last first.
    waiting: Vec<u64>,
    /// Paced echo: the schedule the connections share with the pacer.
    pace: Option<Rc<paced::Pace>>,
    started: bool,
    deadline: Option<TimerId>,
    retry: Option<TimerId>,
}

impl Clock {
    fn new(
        plan: &Plan,
        run: &Rc<RefCell<Run>>,
        pattern: &Rc<[u8]>,
        sockets: Vec<(Key, Addr)>,
        pace: Option<Rc<paced::Pace>>,
    ) -> io::Result<Clock> {
        let (pipe, read_end) = mio::unix::pipe::new()?;
        let waiting = match plan.target {
            Target::Udp(_) => Vec::new(),
            _ => (0..plan.conns as u64).rev().collect(),
        };
        Ok(Clock {
            pipe,
            _read_end: read_end,
            run: Rc::clone(run),
            pattern: Rc::clone(pattern),
            plan: plan.clone(),
            sockets,
            waiting,
            pace,
            started: false,
            deadline: None,
            retry: None,
        })
    }

    /// Opens the stream connections still waiting. A Unix connect that
    /// finds the server's backlog full fails with `WouldBlock`: that one
    /// and the rest are tried again after [`RETRY`].
    fn open_connections(&mut self, cx: &mut Context<'_>) {
        while let Some(id) = self.waiting.pop() {
            let client: Box<dyn StreamHandler> = match (self.plan.mode, &self.pace) {
                (Mode::Echo, Some(pace)) => Box::new(Client::new(
                    id,
                    &self.plan,
                    &self.run,
                    paced::PacedEcho::new(pace, id),
                )),
                (Mode::Echo, None) => Box::new(Client::new(
                    id,
                    &self.plan,
                    &self.run,
                    EchoStream::new(id, &self.plan, &self.pattern),
                )),
                (Mode::Kv(mix), _) => Box::new(Client::new(
                    id,
                    &self.plan,
                    &self.run,
                    KvStream::new(id, mix, &self.plan),
                )),
            };
            let opened = match &self.plan.target {
                Target::Tcp(addr) => tls::connect(cx, *addr, self.plan.tls.as_ref(), client),
                Target::Unix(path) => cx.connect_unix(path, client),
                Target::Udp(_) => return,
            };
            match opened {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.waiting.push(id);
                    self.retry = cx.set_timer(RETRY);
                    if self.retry.is_none() {
                        self.waiting.clear();
                        self.run
                            .borrow_mut()
                            .error(format_args!("no timer left to retry connecting"));
                    }
                    return;
                }
                Err(err) => {
                    let mut run = self.run.borrow_mut();
                    run.error(format_args!(
                        "connection {id} to {}: cannot connect: {err}",
                        self.plan.target
                    ));
                    run.settled(cx.now());
                    run.connection_gone(cx.now(), 0);
                }
            }
        }
    }
}

impl SourceHandler for Clock {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.pipe
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
        if self.started {
            return;
        }
        self.started = true;
        self.deadline = cx.set_timer(self.plan.timeout);
        let ticking = cx.set_repeating(TICK).is_some();
        if self.deadline.is_none() || !ticking {
            eprintln!("loadgen: the timer table is full");
            self.run.borrow_mut().time_out(cx.now());
            return cx.stop();
        }
        self.open_connections(cx);
        for (socket, own_port) in &self.sockets {
            if !cx.source(*socket).send_datagram(own_port, &[]) {
                let mut run = self.run.borrow_mut();
                run.error(format_args!(
                    "cannot start the UDP socket bound to port {own_port}"
                ));
            }
        }
        if self.run.borrow().over {
            cx.stop();
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if Some(timer) == self.deadline {
            self.run.borrow_mut().time_out(cx.now());
        } else if Some(timer) == self.retry {
            self.retry = None;
            self.open_connections(cx);
        }
        let mut run = self.run.borrow_mut();
        run.observe(Instant::now());
        if run.over {
            cx.stop();
        }
    }
}

/// Latencies in nanoseconds, in log-linear buckets: exact below 32 ns,
/// then 16 buckets per power of two, so a bucket is at most 1/16 of its
/// value wide and its middle is within about 3 % of anything in it.
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    pub(crate) max: u64,
}

impl Histogram {
    /// 32 exact buckets, then 16 for each of the 59 powers of two up to 2^64.
    const BUCKETS: usize = 32 + 59 * 16;

    pub(crate) fn new() -> Histogram {
        Histogram {
            counts: vec![0; Self::BUCKETS],
            total: 0,
            max: 0,
        }
    }

    fn bucket(value: u64) -> usize {
        if value < 32 {
            return value as usize;
        }
        // The top five bits of the value: its leading 1 and four more.
        let shift = 63 - value.leading_zeros() - 4;
        shift as usize * 16 + (value >> shift) as usize
    }

    /// The lowest value of a bucket, and its width.
    fn bounds(bucket: usize) -> (u64, u64) {
        if bucket < 32 {
            return (bucket as u64, 1);
        }
        let shift = bucket / 16 - 1;
        let top = (bucket % 16 + 16) as u64;
        (top << shift, 1 << shift)
    }

    pub(crate) fn record(&mut self, value: u64) {
        self.counts[Self::bucket(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// The value at quantile `q`: the middle of its bucket, never above the
    /// largest value recorded. 0 when nothing was recorded.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = Self::bounds(bucket);
                return (low + width / 2).min(self.max);
            }
        }
        self.max
    }
}

/// Shares of one core used over the measured window.
pub(crate) struct CpuShares {
    pub(crate) client: f64,
    pub(crate) server: Option<f64>,
    /// The server processes' CPU seconds over the window (not a share): what
    /// a per-request or per-download cost is computed from.
    pub(crate) server_secs: Option<f64>,
    /// The rest of the machine (other processes, interrupts): near 0 on a
    /// quiet machine.
    pub(crate) other: f64,
}

impl CpuShares {
    /// Adds `client_cpu`, `server_cpu` (if known) and `other_cpu`, and
    /// `per_key`: the server's CPU microseconds per unit of work, when the
    /// server's time is known and `units` is not zero.
    pub(crate) fn write(&self, j: &mut Json, per_key: &str, units: u64) {
        j.f("client_cpu", self.client, 2);
        if let Some(server) = self.server {
            j.f("server_cpu", server, 2);
        }
        j.f("other_cpu", self.other, 2);
        if let (Some(server), true) = (self.server_secs, units > 0) {
            j.f(per_key, server / units as f64 * 1e6, 2);
        }
    }
}

/// CPU time readings at the start of the measured window.
pub(crate) struct CpuMeter {
    t0: Instant,
    own: f64,
    /// The server processes, and their CPU seconds so far (summed).
    server: Option<(Vec<u32>, f64)>,
    machine: f64,
}

impl CpuMeter {
    /// Takes the first readings. `pids` are the server's processes (none:
    /// no server CPU is reported); one that cannot be read is said on
    /// stderr, and the server's CPU is then not reported.
    pub(crate) fn start(pids: &[u32]) -> CpuMeter {
        let server = match processes_cpu_secs(pids) {
            Ok(secs) => Some((pids.to_vec(), secs)),
            Err(Some(pid)) => {
                eprintln!("loadgen: cannot read /proc/{pid}/stat: the server's CPU is not reported");
                None
            }
            Err(None) => None,
        };
        CpuMeter {
            t0: Instant::now(),
            own: own_cpu_secs(),
            server,
            machine: machine_busy_secs(),
        }
    }

    /// Takes the second readings: the shares over the time since `start`.
    pub(crate) fn finish(self) -> CpuShares {
        let window = self.t0.elapsed().as_secs_f64().max(1e-9);
        let client = (own_cpu_secs() - self.own) / window;
        let server_secs = self
            .server
            .and_then(|(pids, before)| processes_cpu_secs(&pids).ok().map(|after| after - before));
        let server = server_secs.map(|secs| secs / window);
        let machine = (machine_busy_secs() - self.machine) / window;
        CpuShares {
            client,
            server,
            server_secs,
            other: machine - client - server.unwrap_or(0.0),
        }
    }
}

/// The summed CPU seconds of `pids` (every thread of each), or the first
/// one that cannot be read (`Err(None)`: no pid given).
fn processes_cpu_secs(pids: &[u32]) -> Result<f64, Option<u32>> {
    if pids.is_empty() {
        return Err(None);
    }
    pids.iter()
        .map(|&pid| process_cpu_secs(pid).ok_or(Some(pid)))
        .sum()
}

/// Clock ticks per second, for /proc's CPU times.
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// This process's user and system CPU time, in seconds.
fn own_cpu_secs() -> f64 {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the exclusively borrowed,
    // initialised struct it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A process's CPU time, in seconds, over all its threads: from each
/// thread's `/proc/PID/task/TID/schedstat` (nanoseconds) where the kernel
/// keeps it, else from `/proc/PID/stat` (clock ticks, 10 ms each: too
/// coarse for a server that used a few hundredths of a second).
fn process_cpu_secs(pid: u32) -> Option<f64> {
    schedstat_secs(pid).or_else(|| stat_secs(pid))
}

/// The summed run time of a process's threads, from schedstat (a thread
/// that ends between the listing and the reading is left out).
fn schedstat_secs(pid: u32) -> Option<f64> {
    let mut total_ns: u64 = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(entry) = entry else { continue };
        let mut path = entry.path();
        path.push("schedstat");
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        total_ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    (total_ns > 0).then(|| total_ns as f64 / 1e9)
}

/// A process's user and system CPU time, in seconds, from
/// `/proc/PID/stat`: the process's own line counts every one of its
/// threads.
fn stat_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / ticks_per_sec())
}

/// CPU seconds the whole machine spent busy (user, nice, system, irq,
/// softirq), from the first line of /proc/stat.
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0.0);
    (at(0) + at(1) + at(2) + at(5) + at(6)) / ticks_per_sec()
}

/// Raises the soft limit on open descriptors to `want` if the hard limit
/// allows, so that many connections fit.
pub(crate) fn raise_nofile(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the borrowed struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let want = want as libc::rlim_t;
    if limit.rlim_cur >= want {
        return;
    }
    limit.rlim_cur = want.min(limit.rlim_max);
    // SAFETY: setrlimit reads the initialised struct it is given.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
}

/// One JSON object on one line, fields in the order they are added.
pub(crate) struct Json(String);

impl Json {
    pub(crate) fn new(mode: &str) -> Json {
        let mut json = Json(String::from("{"));
        json.s("mode", mode);
        json
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "\"{key}\":");
    }

    pub(crate) fn s(&mut self, key: &str, value: &str) {
        self.key(key);
        self.0.push('"');
        for c in value.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.0, "\\u{:04x}", c as u32);
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
    }

    pub(crate) fn u(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.0, "{value}");
    }

    pub(crate) fn f(&mut self, key: &str, value: f64, decimals: usize) {
        self.key(key);
        if value.is_finite() {
            let _ = write!(self.0, "{value:.decimals$}");
        } else {
            self.0.push_str("null");
        }
    }

    pub(crate) fn b(&mut self, key: &str, value: bool) {
        self.key(key);
        let _ = write!(self.0, "{value}");
    }

    pub(crate) fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn buckets_are_contiguous_and_bound_their_values() {
        let mut expected = 0;
        for value in 0..100_000u64 {
            let bucket = Histogram::bucket(value);
            assert!(bucket == expected || bucket == expected + 1, "value {value}");
            expected = bucket;
        }
        let large = [99_999, 1 << 40, (1 << 40) - 1, u64::MAX / 3, u64::MAX];
        for value in (0..100_000u64).chain(large) {
            let bucket = Histogram::bucket(value);
            let (low, width) = Histogram::bounds(bucket);
            assert!(
                low <= value && value - low < width,
                "value {value} in bucket {bucket}"
            );
            assert!(width <= 1.max(value / 16), "value {value}: bucket {width} wide");
        }
        assert_eq!(Histogram::bucket(u64::MAX), Histogram::BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let mut hist = Histogram::new();
        assert_eq!(hist.quantile(0.5), 0);
        for value in 1..=1000u64 {
            hist.record(value * 1000);
        }
        for (q, want) in [(0.5, 500_000.0), (0.99, 990_000.0), (1.0, 1_000_000.0)] {
            let got = hist.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.04, "q {q}: {got}");
        }
        assert!(hist.quantile(1.0) <= hist.max);
    }
}
