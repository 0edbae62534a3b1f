//! Seeing inside the loop: counters, the turn-time histogram, the
//! slow-callback watchdog and the flight recorder.
//!
//! A single-threaded loop has one failure no log line shows by itself: a
//! callback that runs too long stalls every connection at once. This module
//! is how a reactor shows what it does, to an operator (a [`Snapshot`],
//! written in the Prometheus text format by [`write_prometheus`], or
//! registered in a host's own [`prometheus_client`] registry as a
//! [`Collector`]) and to a learner (the [`TraceEvent`]s of the flight
//! recorder, one per accept, read, write, change of state, timer and
//! close).
//!
//! **Counters.** Plain integers in the reactor, added to on its own thread:
//! no atomics, no locks, nothing shared on the hot path. They are read as a
//! [`Snapshot`], a copy, from [`Reactor::metrics`](crate::Reactor::metrics)
//! or a handler's [`Context::metrics`](crate::Context::metrics), and from
//! another thread through [`Handle::metrics`](crate::Handle::metrics),
//! which asks the reactor to copy them at its next turn.
//!
//! **Turn durations.** A [`Histogram`] of fixed power-of-two buckets, from
//! 1 µs to 2²⁴ µs (about 17 s), plus one for anything longer: recording is
//! a leading-zero count and an addition, the memory is 26 integers whatever
//! the traffic, and a Prometheus histogram needs cumulative buckets with
//! fixed bounds anyway. A turn's duration is the time from the poll's
//! return to the end of the turn: the work, without the wait.
//!
//! **The watchdog.** Every call into a handler is timed with two reads of
//! the kernel's coarse monotonic clock (Linux's `CLOCK_MONOTONIC_COARSE`:
//! a few nanoseconds each, read from the vDSO, advancing once a tick of
//! 1 to 10 ms). A callback's time is so known to within a tick, which is
//! what a watchdog for callbacks of milliseconds needs, at a third of the
//! precise clock's cost (10 ns a read against 32 on the benchmark
//! machine, `docs/benchmarks.md`). Summed over many callbacks, the
//! ticks a callback happens to span are an unbiased sample of the time
//! spent in callbacks ([`Snapshot::callback_time`]). One that runs longer than
//! the threshold ([`DEFAULT_SLOW_CALLBACK`], 10 ms, set with
//! [`Reactor::set_slow_callback`](crate::Reactor::set_slow_callback)) is
//! counted, recorded, and logged at warn level once per *episode*: the
//! first slow call of a source and callback logs; further slow calls of the
//! same source and callback less than a second apart belong to the same
//! episode and are only counted; the episode's count and worst time are
//! logged at info level when another episode begins.
//!
//! **The flight recorder.** A ring of the loop's last
//! [`DEFAULT_TRACE_CAPACITY`] events (set with
//! [`Reactor::set_trace_capacity`](crate::Reactor::set_trace_capacity); 0
//! turns it off), allocated once: recording an event is a few stores into
//! it. Each event carries the turn it happened in and that turn's time.
//! The ring is written to the log when a handler panics (the events before
//! the panic are the story of it), on request
//! ([`Handle::dump_trace`](crate::Handle::dump_trace)), and read as a list
//! by [`Reactor::trace`](crate::Reactor::trace).

use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use log::{info, warn};
pub use prometheus_client;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

pub use crate::core::ConnectionInfo;
use crate::{CloseReason, ConnState, Key};

/// How long a callback may run before the watchdog calls it slow, unless
/// set with [`Reactor::set_slow_callback`](crate::Reactor::set_slow_callback).
pub const DEFAULT_SLOW_CALLBACK: Duration = Duration::from_millis(10);

/// Events the flight recorder keeps, unless set with
/// [`Reactor::set_trace_capacity`](crate::Reactor::set_trace_capacity).
pub const DEFAULT_TRACE_CAPACITY: usize = 4096;

/// Slow calls of one source and callback closer together than this are
/// one episode of the watchdog: logged once.
const EPISODE_GAP: Duration = Duration::from_secs(1);

/// Why a connection closed, as a label: [`CloseReason`] without its error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseKind {
    /// [`CloseReason::Closed`].
    Closed,
    /// [`CloseReason::Aborted`].
    Aborted,
    /// [`CloseReason::PeerClosed`].
    PeerClosed,
    /// [`CloseReason::Error`].
    Error,
    /// [`CloseReason::ConnectFailed`].
    ConnectFailed,
    /// [`CloseReason::Overflow`].
    Overflow,
    /// [`CloseReason::InputOverflow`].
    InputOverflow,
    /// [`CloseReason::DrainTimeout`].
    DrainTimeout,
    /// [`CloseReason::Shutdown`].
    Shutdown,
}

impl CloseKind {
    /// Every kind, in the order of [`Snapshot::closed`].
    pub const ALL: [CloseKind; 9] = [
        CloseKind::Closed,
        CloseKind::Aborted,
        CloseKind::PeerClosed,
        CloseKind::Error,
        CloseKind::ConnectFailed,
        CloseKind::Overflow,
        CloseKind::InputOverflow,
        CloseKind::DrainTimeout,
        CloseKind::Shutdown,
    ];

    /// The kind of a close reason.
    pub fn of(reason: &CloseReason) -> CloseKind {
        match reason {
            CloseReason::Closed => CloseKind::Closed,
            CloseReason::Aborted => CloseKind::Aborted,
            CloseReason::PeerClosed => CloseKind::PeerClosed,
            CloseReason::Error(_) => CloseKind::Error,
            CloseReason::ConnectFailed(_) => CloseKind::ConnectFailed,
            CloseReason::Overflow => CloseKind::Overflow,
            CloseReason::InputOverflow => CloseKind::InputOverflow,
            CloseReason::DrainTimeout => CloseKind::DrainTimeout,
            CloseReason::Shutdown => CloseKind::Shutdown,
        }
    }

    /// The label value: `closed`, `peer_closed`, `drain_timeout`, ...
    pub fn label(self) -> &'static str {
        match self {
            CloseKind::Closed => "closed",
            CloseKind::Aborted => "aborted",
            CloseKind::PeerClosed => "peer_closed",
            CloseKind::Error => "error",
            CloseKind::ConnectFailed => "connect_failed",
            CloseKind::Overflow => "overflow",
            CloseKind::InputOverflow => "input_overflow",
            CloseKind::DrainTimeout => "drain_timeout",
            CloseKind::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CloseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Buckets of a [`Histogram`] with a finite bound: 1 µs, 2 µs, ... 2²⁴ µs.
const FINITE_BUCKETS: usize = 25;

/// Durations in fixed power-of-two buckets, from 1 µs to 2²⁴ µs (16.8 s),
/// and one more for anything longer.
///
/// ```
/// use std::time::Duration;
/// use evloop::metrics::Histogram;
///
/// let mut turns = Histogram::default();
/// turns.record(Duration::from_micros(3)); // in the 4 µs bucket
/// turns.record(Duration::from_millis(20)); // in the 32,768 µs bucket
/// assert_eq!(turns.count(), 2);
/// assert_eq!(turns.bucket_counts()[2], 1);
/// assert_eq!(turns.bucket_counts()[15], 1);
/// assert_eq!(Histogram::bound(15), Some(Duration::from_micros(32_768)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Counts per bucket, not cumulative; the last is the overflow.
    buckets: [u64; FINITE_BUCKETS + 1],
    count: u64,
    sum_ns: u64,
}

impl Histogram {
    /// Counts one duration.
    #[inline]
    pub fn record(&mut self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let micros = nanos / 1_000;
        // The smallest i with micros <= 2^i.
        let bucket = if micros <= 1 {
            0
        } else {
            (u64::BITS - (micros - 1).leading_zeros()) as usize
        };
        self.buckets[bucket.min(FINITE_BUCKETS)] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(nanos);
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their sum.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// The count in each bucket (not cumulative), the overflow last.
    pub fn bucket_counts(&self) -> &[u64] {
        &self.buckets
    }

    /// The upper bound of bucket `i` (inclusive), or `None` for the last,
    /// which has none.
    pub fn bound(i: usize) -> Option<Duration> {
        (i < FINITE_BUCKETS).then(|| Duration::from_micros(1 << i))
    }

    /// The bound of the bucket holding the `q`-th quantile (0 to 1), or
    /// `None` if nothing was counted or it falls in the overflow.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Histogram::bound(i);
            }
        }
        None
    }
}

/// The counters of one reactor, added to on its thread.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) started: Instant,
    pub(crate) turns: u64,
    pub(crate) events: u64,
    pub(crate) poll_ns: u64,
    pub(crate) busy_ns: u64,
    pub(crate) callback_ns: u64,
    pub(crate) accepted: u64,
    pub(crate) connected: u64,
    pub(crate) closed: [u64; 9],
    pub(crate) bytes_read: u64,
    pub(crate) bytes_written: u64,
    pub(crate) datagrams_received: u64,
    pub(crate) datagrams_sent: u64,
    pub(crate) deferred_writes: u64,
    pub(crate) slow_callbacks: u64,
    pub(crate) panics: u64,
    pub(crate) turn_durations: Histogram,
}

impl Counters {
    pub(crate) fn new(started: Instant) -> Counters {
        Counters {
            started,
            turns: 0,
            events: 0,
            poll_ns: 0,
            busy_ns: 0,
            callback_ns: 0,
            accepted: 0,
            connected: 0,
            closed: [0; 9],
            bytes_read: 0,
            bytes_written: 0,
            datagrams_received: 0,
            datagrams_sent: 0,
            deferred_writes: 0,
            slow_callbacks: 0,
            panics: 0,
            turn_durations: Histogram::default(),
        }
    }

    #[inline]
    pub(crate) fn closed(&mut self, reason: &CloseReason) {
        self.closed[CloseKind::of(reason).index()] += 1;
    }
}

/// A copy of one reactor's counters and gauges, taken at once.
///
/// Counters (`_total` in Prometheus) only grow from the reactor's start;
/// gauges (`connections_open`, `ready`, `timers`, `pending_flushes`,
/// `sources`) are the values of the moment.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use evloop::{protocols::echo::Echo, Addr, Reactor};
///
/// let mut reactor = Reactor::new()?;
/// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Echo)?;
/// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
/// let client = std::thread::spawn(move || -> std::io::Result<()> {
///     let mut stream = TcpStream::connect(addr)?;
///     stream.write_all(b"ping")?;
///     stream.read_exact(&mut [0; 4])
/// });
/// while !client.is_finished() || reactor.connection_count(key) > 0 {
///     reactor.run_once(Some(std::time::Duration::from_millis(10)))?;
/// }
/// client.join().expect("client thread panicked")?;
///
/// let seen = reactor.metrics();
/// assert_eq!(seen.accepted, 1);
/// assert_eq!((seen.bytes_read, seen.bytes_written), (4, 4));
/// assert_eq!(seen.closed_total(), 1);
/// assert!(seen.turns >= 2 && seen.turn_durations.count() == seen.turns);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The shard this reactor is ([`crate::shard`]); 0 when it is alone.
    pub shard: usize,
    /// Time since the reactor was made.
    pub uptime: Duration,
    /// Turns of the loop.
    pub turns: u64,
    /// Readiness events handled (the waker's excepted).
    pub events: u64,
    /// Time spent waiting in the poll.
    pub poll_time: Duration,
    /// Time spent in turns: from the poll's return to the turn's end.
    pub busy_time: Duration,
    /// Of that, time spent in handlers' callbacks, measured with the
    /// coarse clock (the ticks callbacks spanned: right on average over
    /// many callbacks, not for one), while the watchdog is on.
    pub callback_time: Duration,
    /// Stream connections open now (accepted and outbound).
    pub connections_open: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Outbound connections made (connect begun).
    pub connected: u64,
    /// Connections closed, per [`CloseKind`] in the order of
    /// [`CloseKind::ALL`]; see [`Snapshot::closed_by`].
    pub closed: [u64; 9],
    /// Bytes read from streams and datagrams (after TLS).
    pub bytes_read: u64,
    /// Bytes written to streams and datagrams (before TLS).
    pub bytes_written: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Sends queued for the end of the turn (to other connections, and
    /// broadcasts: one per receiver).
    pub deferred_writes: u64,
    /// Callbacks that ran longer than the watchdog's threshold.
    pub slow_callbacks: u64,
    /// Handler panics contained.
    pub panics: u64,
    /// Sources registered now: listeners, connections, sockets, custom.
    pub sources: usize,
    /// Sources on the ready list now.
    pub ready: usize,
    /// Timers pending now.
    pub timers: usize,
    /// Connections waiting for the end-of-turn flush now.
    pub pending_flushes: usize,
    /// Durations of turns.
    pub turn_durations: Histogram,
    /// The watchdog's threshold, if it is on.
    pub slow_callback: Option<Duration>,
    /// The flight recorder's size (0: off).
    pub trace_capacity: usize,
}

impl Snapshot {
    /// Connections closed for reasons of `kind`.
    pub fn closed_by(&self, kind: CloseKind) -> u64 {
        self.closed[kind.index()]
    }

    /// Connections closed, whatever the reason.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }

    /// Writes this snapshot as one JSON object (no trailing newline).
    pub fn write_json(&self, out: &mut String) {
        let secs = |d: Duration| d.as_secs_f64();
        let _ = write!(
            out,
            "{{\"shard\":{},\"uptime_seconds\":{:.3},\"turns\":{},\"events\":{},\
             \"poll_seconds\":{:.6},\"busy_seconds\":{:.6},\"callback_seconds\":{:.6},\
             \"connections_open\":{},\"accepted\":{},\"connected\":{},\"closed\":{{",
            self.shard,
            secs(self.uptime),
            self.turns,
            self.events,
            secs(self.poll_time),
            secs(self.busy_time),
            secs(self.callback_time),
            self.connections_open,
            self.accepted,
            self.connected,
        );
        for (i, kind) in CloseKind::ALL.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(out, "{comma}\"{}\":{}", kind.label(), self.closed[i]);
        }
        let _ = write!(
            out,
            "}},\"bytes_read\":{},\"bytes_written\":{},\"datagrams_received\":{},\
             \"datagrams_sent\":{},\"deferred_writes\":{},\"slow_callbacks\":{},\"panics\":{},\
             \"sources\":{},\"ready\":{},\"timers\":{},\"pending_flushes\":{},\
             \"slow_callback_ms\":{},\"trace_capacity\":{},\"turn_seconds\":{{\"count\":{},\"sum\":{:.6},\"buckets\":[",
            self.bytes_read,
            self.bytes_written,
            self.datagrams_received,
            self.datagrams_sent,
            self.deferred_writes,
            self.slow_callbacks,
            self.panics,
            self.sources,
            self.ready,
            self.timers,
            self.pending_flushes,
            self.slow_callback
                .map_or("null".to_owned(), |d| format!("{:.3}", d.as_secs_f64() * 1e3)),
            self.trace_capacity,
            self.turn_durations.count(),
            secs(self.turn_durations.sum()),
        );
        for (i, n) in self.turn_durations.bucket_counts().iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            match Histogram::bound(i) {
                Some(le) => {
                    let _ = write!(out, "{comma}[{},{n}]", le.as_secs_f64());
                }
                None => {
                    let _ = write!(out, "{comma}[null,{n}]");
                }
            }
        }
        out.push_str("]}}");
    }
}

/// A counter or gauge family: its name (a counter's without `_total`,
/// which the encoder adds), its help, and its value in a snapshot.
type Family = (&'static str, &'static str, fn(&Snapshot) -> u64);

/// The counters [`Collector`] writes, each with a `shard` label.
const COUNTERS: [Family; 11] = [
    ("evloop_connections_accepted", "Connections accepted.", |s| {
        s.accepted
    }),
    (
        "evloop_connections_connected",
        "Outbound connections begun.",
        |s| s.connected,
    ),
    (
        "evloop_bytes_read",
        "Bytes read from streams and datagrams.",
        |s| s.bytes_read,
    ),
    (
        "evloop_bytes_written",
        "Bytes written to streams and datagrams.",
        |s| s.bytes_written,
    ),
    ("evloop_datagrams_received", "Datagrams received.", |s| {
        s.datagrams_received
    }),
    ("evloop_datagrams_sent", "Datagrams sent.", |s| s.datagrams_sent),
    ("evloop_turns", "Turns of the loop.", |s| s.turns),
    ("evloop_events", "Readiness events handled.", |s| s.events),
    (
        "evloop_slow_callbacks",
        "Callbacks over the watchdog's threshold.",
        |s| s.slow_callbacks,
    ),
    ("evloop_handler_panics", "Handler panics contained.", |s| s.panics),
    (
        "evloop_deferred_writes",
        "Sends queued for the end of the turn.",
        |s| s.deferred_writes,
    ),
];

/// The gauges [`Collector`] writes, each with a `shard` label.
const GAUGES: [Family; 5] = [
    ("evloop_connections_open", "Stream connections open.", |s| {
        s.connections_open as u64
    }),
    (
        "evloop_sources",
        "Sources registered: listeners, connections, sockets, custom.",
        |s| s.sources as u64,
    ),
    ("evloop_ready", "Sources on the ready list.", |s| s.ready as u64),
    ("evloop_timers", "Timers pending.", |s| s.timers as u64),
    (
        "evloop_pending_flushes",
        "Connections waiting for the end-of-turn flush.",
        |s| s.pending_flushes as u64,
    ),
];

/// The time counters [`Collector`] writes, in seconds, each with a
/// `shard` label.
const SECONDS: [TimeFamily; 3] = [
    ("evloop_poll_seconds", "Time spent waiting in the poll.", |s| {
        s.poll_time
    }),
    (
        "evloop_busy_seconds",
        "Time spent in turns, from the poll's return to the turn's end.",
        |s| s.busy_time,
    ),
    (
        "evloop_callback_seconds",
        "Time spent in handlers' callbacks.",
        |s| s.callback_time,
    ),
];

/// A family of time counters: name, help, and its value in a snapshot.
type TimeFamily = (&'static str, &'static str, fn(&Snapshot) -> Duration);

/// The reactors' counters as a [`prometheus_client`] collector: register
/// it in a host's own registry, and each scrape writes evloop's families
/// beside the host's, a `shard` label on every sample (every name starts
/// with `evloop_`, so none clashes with the host's).
///
/// [`Collector::handles`] reads live counters at each scrape, through
/// [`Handle::metrics`](crate::Handle::metrics), from the scraping thread;
/// [`Collector::snapshots`] writes snapshots already taken.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use evloop::metrics::{prometheus_client, Collector};
///
/// // The reactor is made on the thread that runs it; its handle comes back.
/// let (tx, rx) = std::sync::mpsc::channel();
/// let thread = std::thread::spawn(move || -> Result<(), evloop::Error> {
///     let mut reactor = evloop::Reactor::new()?;
///     let _ = tx.send(reactor.handle());
///     reactor.run()
/// });
/// let handle = rx.recv()?;
///
/// // The host's registry, with a metric of its own and evloop's.
/// let mut registry = prometheus_client::registry::Registry::default();
/// let requests = prometheus_client::metrics::counter::Counter::<u64>::default();
/// registry.register("host_requests", "Requests the host served.", requests.clone());
/// registry.register_collector(Box::new(Collector::handles(vec![handle.clone()], Duration::from_secs(1))));
///
/// let mut text = String::new();
/// prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
/// assert!(text.contains("host_requests_total 0\n"));
/// assert!(text.contains("evloop_turns_total{shard=\"0\"} "));
/// handle.stop();
/// thread.join().expect("reactor thread")?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Collector {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Snapshots(Vec<Snapshot>),
    Handles(Vec<crate::Handle>, Duration),
}

impl Collector {
    /// Writes these snapshots, one per reactor (each carries its shard).
    pub fn snapshots(snapshots: Vec<Snapshot>) -> Collector {
        Collector {
            source: Source::Snapshots(snapshots),
        }
    }

    /// Asks each reactor for its counters at every scrape, waiting at most
    /// `timeout` for each; a reactor that is gone or does not answer in
    /// time is left out of that scrape.
    pub fn handles(handles: Vec<crate::Handle>, timeout: Duration) -> Collector {
        Collector {
            source: Source::Handles(handles, timeout),
        }
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        match &self.source {
            Source::Snapshots(snapshots) => encode_snapshots(snapshots, encoder),
            Source::Handles(handles, timeout) => {
                let snapshots: Vec<Snapshot> = handles.iter().filter_map(|h| h.metrics(*timeout)).collect();
                encode_snapshots(&snapshots, encoder)
            }
        }
    }
}

/// Every family, then a sample per snapshot in each.
fn encode_snapshots(shards: &[Snapshot], mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
    for (name, help, value) in COUNTERS {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for s in shards {
            let labels = [("shard", s.shard)];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value(s), None)?;
        }
    }
    for (name, help, value) in GAUGES {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for s in shards {
            let labels = [("shard", s.shard)];
            family.encode_family(&labels)?.encode_gauge(&value(s))?;
        }
    }
    for (name, help, value) in SECONDS {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for s in shards {
            let labels = [("shard", s.shard)];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, f64>(&value(s).as_secs_f64(), None)?;
        }
    }
    let mut closed = encoder.encode_descriptor(
        "evloop_connections_closed",
        "Connections closed, by reason.",
        None,
        MetricType::Counter,
    )?;
    for s in shards {
        for (i, kind) in CloseKind::ALL.iter().enumerate() {
            let shard = s.shard.to_string();
            let labels = [("shard", shard.as_str()), ("reason", kind.label())];
            closed
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&s.closed[i], None)?;
        }
    }
    let mut turns = encoder.encode_descriptor(
        "evloop_turn_duration_seconds",
        "Time from the poll's return to the turn's end.",
        None,
        MetricType::Histogram,
    )?;
    for s in shards {
        let h = &s.turn_durations;
        let mut buckets = [(0.0, 0); FINITE_BUCKETS + 1];
        for (i, (bucket, &n)) in buckets.iter_mut().zip(h.bucket_counts()).enumerate() {
            *bucket = (Histogram::bound(i).map_or(f64::INFINITY, |b| b.as_secs_f64()), n);
        }
        let labels = [("shard", s.shard)];
        turns.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            h.sum().as_secs_f64(),
            h.count(),
            &buckets,
            None,
        )?;
    }
    Ok(())
}

/// Writes snapshots (one per shard) in the Prometheus text exposition
/// format, version 0.0.4 ([`prometheus_client`]'s encoder over a
/// [`Collector`]): one `# HELP` and `# TYPE` per family, then a sample per
/// shard, each labelled `shard`. Costs a few allocations per call, none
/// per connection.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let reactor = evloop::Reactor::new()?;
/// let mut text = String::new();
/// evloop::metrics::write_prometheus(&[reactor.metrics()], &mut text);
/// assert!(text.contains("# TYPE evloop_turns_total counter\nevloop_turns_total{shard=\"0\"} 0\n"));
/// # Ok(())
/// # }
/// ```
pub fn write_prometheus(shards: &[Snapshot], out: &mut String) {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Collector::snapshots(shards.to_vec())));
    // Writing into a `String` does not fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(out, &registry);
}

/// What happened, in one [`TraceEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// A connection was accepted by the listener named.
    Accepted {
        /// The listener.
        listener: Key,
    },
    /// An outbound connect began.
    Connecting,
    /// Bytes were read (after TLS).
    Read(u64),
    /// A read returned 0: the peer sent its FIN, and will send nothing more.
    PeerFin,
    /// Bytes were written (before TLS).
    Wrote(u64),
    /// A datagram of this many bytes arrived.
    DatagramIn(u64),
    /// A datagram of this many bytes went out.
    DatagramOut(u64),
    /// The connection's state changed.
    State {
        /// Before.
        from: ConnState,
        /// After.
        to: ConnState,
    },
    /// A timer of the source fired (`on_timer`).
    Timer,
    /// The source closed, for this reason.
    Closed(CloseKind),
    /// A callback panicked.
    Panicked {
        /// `on_data`, `on_timer`, ...
        callback: &'static str,
    },
    /// A callback ran over the watchdog's threshold.
    Slow {
        /// `on_data`, `on_timer`, ...
        callback: &'static str,
        /// How long it ran, in microseconds.
        micros: u32,
    },
}

impl What {
    /// A short name: `accepted`, `read`, `state`, `closed`, ...
    pub fn name(&self) -> &'static str {
        match self {
            What::Accepted { .. } => "accepted",
            What::Connecting => "connecting",
            What::Read(_) => "read",
            What::PeerFin => "peer_fin",
            What::Wrote(_) => "wrote",
            What::DatagramIn(_) => "datagram_in",
            What::DatagramOut(_) => "datagram_out",
            What::State { .. } => "state",
            What::Timer => "timer",
            What::Closed(_) => "closed",
            What::Panicked { .. } => "panicked",
            What::Slow { .. } => "slow",
        }
    }
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            What::Accepted { listener } => write!(f, "accepted by {listener}"),
            What::Connecting => f.write_str("connecting"),
            What::Read(n) => write!(f, "read {n} bytes"),
            What::PeerFin => f.write_str("the peer sent FIN"),
            What::Wrote(n) => write!(f, "wrote {n} bytes"),
            What::DatagramIn(n) => write!(f, "received a datagram of {n} bytes"),
            What::DatagramOut(n) => write!(f, "sent a datagram of {n} bytes"),
            What::State { from, to } => write!(f, "{from} -> {to}"),
            What::Timer => f.write_str("timer fired"),
            What::Closed(kind) => write!(f, "closed ({kind})"),
            What::Panicked { callback } => write!(f, "panicked in {callback}"),
            What::Slow { callback, micros } => write!(f, "{callback} ran {micros} µs"),
        }
    }
}

/// One event of the flight recorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// The turn it happened in (from 1).
    pub turn: u64,
    /// The time that turn began, from the reactor's start.
    pub at: Duration,
    /// The source it happened to.
    pub key: Key,
    /// What happened.
    pub what: What,
}

impl TraceEvent {
    /// Writes the event as one JSON object (no newline): `turn`, `at` (in
    /// seconds), `key`, `event` (the [`What::name`]), and the event's own
    /// fields (`bytes`, `from`, `to`, `reason`, `callback`, `micros`,
    /// `listener`).
    pub fn write_json(&self, shard: usize, out: &mut String) {
        let _ = write!(
            out,
            "{{\"shard\":{shard},\"turn\":{},\"at\":{:.6},\"key\":\"{}\",\"event\":\"{}\"",
            self.turn,
            self.at.as_secs_f64(),
            self.key,
            self.what.name()
        );
        let _ = match self.what {
            What::Accepted { listener } => write!(out, ",\"listener\":\"{listener}\""),
            What::Read(n) | What::Wrote(n) | What::DatagramIn(n) | What::DatagramOut(n) => {
                write!(out, ",\"bytes\":{n}")
            }
            What::State { from, to } => write!(out, ",\"from\":\"{from}\",\"to\":\"{to}\""),
            What::Closed(kind) => write!(out, ",\"reason\":\"{kind}\""),
            What::Panicked { callback } => write!(out, ",\"callback\":\"{callback}\""),
            What::Slow { callback, micros } => {
                write!(out, ",\"callback\":\"{callback}\",\"micros\":{micros}")
            }
            What::Connecting | What::PeerFin | What::Timer => Ok(()),
        };
        out.push('}');
    }
}

/// The flight recorder: a ring of the last events, allocated once.
#[derive(Debug)]
pub(crate) struct Recorder {
    ring: Vec<TraceEvent>,
    capacity: usize,
    /// Where the next event goes.
    next: usize,
    /// The turn and its time, stamped on each event.
    turn: u64,
    at: Duration,
}

impl Recorder {
    pub(crate) fn new(capacity: usize) -> Recorder {
        Recorder {
            ring: Vec::with_capacity(capacity),
            capacity,
            next: 0,
            turn: 0,
            at: Duration::ZERO,
        }
    }

    /// A new turn began at `at` from the reactor's start.
    #[inline]
    pub(crate) fn begin_turn(&mut self, turn: u64, at: Duration) {
        self.turn = turn;
        self.at = at;
    }

    #[inline]
    pub(crate) fn record(&mut self, key: Key, what: What) {
        if self.capacity == 0 {
            return;
        }
        let event = TraceEvent {
            turn: self.turn,
            at: self.at,
            key,
            what,
        };
        if self.ring.len() < self.capacity {
            self.ring.push(event);
        } else {
            self.ring[self.next] = event;
        }
        self.next += 1;
        if self.next == self.capacity {
            self.next = 0;
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The events, oldest first.
    pub(crate) fn events(&self) -> impl DoubleEndedIterator<Item = &TraceEvent> + '_ {
        let (newer, older) = if self.ring.len() < self.capacity {
            (&self.ring[..], &self.ring[..0])
        } else {
            self.ring.split_at(self.next)
        };
        older.iter().chain(newer.iter())
    }

    pub(crate) fn resize(&mut self, capacity: usize) {
        let kept: Vec<TraceEvent> = self.events().copied().collect();
        let skip = kept.len().saturating_sub(capacity);
        let mut ring = Vec::with_capacity(capacity);
        ring.extend_from_slice(&kept[skip..]);
        self.next = if ring.len() == capacity { 0 } else { ring.len() };
        self.ring = ring;
        self.capacity = capacity;
    }

    /// Writes the ring to the log at `level`, oldest first, with `why`.
    pub(crate) fn dump(&self, why: &str) {
        let count = self.events().count();
        if count == 0 {
            return;
        }
        log::warn!("flight recorder, {why}: the last {count} events, oldest first");
        for e in self.events() {
            log::warn!(
                "  turn {} at {:.6}s {}: {}",
                e.turn,
                e.at.as_secs_f64(),
                e.key,
                e.what
            );
        }
    }
}

/// The source a slow or panicking call belonged to, for the watchdog's
/// line: what kind of source it is and who is at the other end.
pub(crate) struct Culprit {
    pub(crate) key: Option<Key>,
    pub(crate) kind: &'static str,
    pub(crate) peer: String,
}

/// The slow-callback watchdog.
#[derive(Debug)]
pub(crate) struct Watchdog {
    pub(crate) threshold: Option<Duration>,
    episode: Option<Episode>,
}

#[derive(Debug)]
struct Episode {
    key: Option<Key>,
    callback: &'static str,
    /// The coarse clock ([`crate::sys::coarse_clock_ns`]) at its last
    /// slow call, in nanoseconds.
    last: u64,
    count: u64,
    worst: Duration,
}

impl Watchdog {
    pub(crate) fn new() -> Watchdog {
        Watchdog {
            threshold: Some(DEFAULT_SLOW_CALLBACK),
            episode: None,
        }
    }

    /// A call of `callback` on `key` ran `took`, over the threshold:
    /// returns whether this begins an episode (to be logged by the caller,
    /// which knows the source).
    pub(crate) fn slow(
        &mut self,
        key: Option<Key>,
        callback: &'static str,
        took: Duration,
        now: u64,
    ) -> bool {
        if let Some(ep) = &mut self.episode {
            if ep.key == key
                && ep.callback == callback
                && Duration::from_nanos(now.saturating_sub(ep.last)) < EPISODE_GAP
            {
                ep.last = now;
                ep.count += 1;
                ep.worst = ep.worst.max(took);
                return false;
            }
        }
        if let Some(ep) = self.episode.take() {
            if ep.count > 1 {
                let who = ep.key.map_or("the reactor".to_owned(), |k| k.to_string());
                info!(
                    "{who}: the slow-callback episode of {} ended: {} slow calls, the worst {:.1} ms",
                    ep.callback,
                    ep.count,
                    ep.worst.as_secs_f64() * 1e3
                );
            }
        }
        self.episode = Some(Episode {
            key,
            callback,
            last: now,
            count: 1,
            worst: took,
        });
        true
    }
}

/// Logs the first slow call of an episode.
#[cold]
#[inline(never)]
pub(crate) fn warn_slow(culprit: &Culprit, callback: &'static str, took: Duration, threshold: Duration) {
    // `#5.1 connection 127.0.0.1:40000`, `#3.0 custom source`, `reactor`:
    // no empty peer, and the reactor's own callbacks named once.
    let who = match (culprit.key, culprit.peer.is_empty()) {
        (None, _) => "reactor".to_owned(),
        (Some(key), true) => format!("{key} {}", culprit.kind),
        (Some(key), false) => format!("{key} {} {}", culprit.kind, culprit.peer),
    };
    warn!(
        "{who}: slow callback: {callback} ran {:.1} ms (threshold {:.1} ms); every source on this reactor waited",
        took.as_secs_f64() * 1e3,
        threshold.as_secs_f64() * 1e3
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_powers_of_two_microseconds() {
        let mut h = Histogram::default();
        for (micros, bucket) in [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (1024, 10),
            (1025, 11),
        ] {
            let before = h.bucket_counts()[bucket];
            h.record(Duration::from_micros(micros));
            assert_eq!(h.bucket_counts()[bucket], before + 1, "{micros} µs");
        }
        h.record(Duration::from_secs(3600));
        assert_eq!(h.bucket_counts()[FINITE_BUCKETS], 1);
        assert_eq!(h.count(), 9);
        assert_eq!(Histogram::bound(FINITE_BUCKETS), None);
        assert_eq!(h.quantile(1.0), None);
        assert_eq!(h.quantile(0.0), Some(Duration::from_micros(1)));
    }

    #[test]
    fn the_recorder_keeps_the_newest_events_oldest_first() {
        let mut r = Recorder::new(3);
        let key = Key::new(1, 0);
        for n in 0..5 {
            r.begin_turn(n, Duration::ZERO);
            r.record(key, What::Read(n));
        }
        let seen: Vec<u64> = r.events().map(|e| e.turn).collect();
        assert_eq!(seen, [2, 3, 4]);
        assert_eq!(r.events().last().map(|e| e.what), Some(What::Read(4)));
        r.resize(2);
        assert_eq!(r.events().map(|e| e.turn).collect::<Vec<_>>(), [3, 4]);
        r.record(key, What::Timer);
        assert_eq!(r.events().map(|e| e.turn).collect::<Vec<_>>(), [4, 4]);
        r.resize(0);
        r.record(key, What::Timer);
        assert_eq!(r.events().count(), 0);
    }

    #[test]
    fn one_episode_per_source_and_callback_while_slow_calls_keep_coming() {
        let mut w = Watchdog::new();
        let now = 1_000_000_000_u64; // the coarse clock, in nanoseconds
        let (a, b) = (Some(Key::new(1, 0)), Some(Key::new(2, 0)));
        let ms = Duration::from_millis(20);
        assert!(w.slow(a, "on_data", ms, now));
        assert!(!w.slow(a, "on_data", ms, now + 500_000_000));
        assert!(w.slow(a, "on_timer", ms, now + 600_000_000));
        assert!(w.slow(b, "on_timer", ms, now + 700_000_000));
        assert!(w.slow(b, "on_timer", ms, now + 5_000_000_000));
    }
}
