//! `evloop::metrics` through the library's API: the counters move as the
//! traffic moves, the watchdog counts, records and logs a slow callback
//! once per episode, the flight recorder tells a connection's story in
//! order and is written to the log after a panic or on request, and the
//! connection list shows who is connected and what waits for them.
//!
//! Every test here installs [`Capture`] as the logger before it starts a
//! reactor, and reads the lines its own reactor's thread logged: the tests
//! of this file run at once, each with a reactor of its own.
mod common;

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use common::*;
use evloop::metrics::{CloseKind, Snapshot, TraceEvent, What, DEFAULT_SLOW_CALLBACK, DEFAULT_TRACE_CAPACITY};
use evloop::protocols::echo::Echo;
use evloop::{Addr, ConnState, Context, Key, Reactor, StreamHandler};

/// A log line: its level, the thread that logged it, and its text.
struct Line {
    level: log::Level,
    thread: ThreadId,
    text: String,
}

/// The logger of this test binary: keeps every line at info level and
/// above, with the thread that logged it.
struct Capture;

static LINES: Mutex<Vec<Line>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = Line {
            level: record.level(),
            thread: std::thread::current().id(),
            text: record.args().to_string(),
        };
        LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    fn flush(&self) {}
}

/// Installs [`Capture`] once for the whole binary (before any reactor
/// starts: `common::start` then finds a logger set and leaves it).
fn capture_logs() {
    static CAPTURE: Capture = Capture;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&CAPTURE).expect("no logger installed before this one");
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// The lines `thread` logged so far, oldest first.
fn logged_by(thread: ThreadId) -> Vec<(log::Level, String)> {
    LINES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|l| l.thread == thread)
        .map(|l| (l.level, l.text.clone()))
        .collect()
}

/// [`common::start`], with the log captured.
#[track_caller]
fn start<T, F>(setup: F) -> Running<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Reactor) -> T + Send + 'static,
{
    capture_logs();
    common::start(setup)
}

/// The reactor's thread, to pick its lines out of the log.
fn thread_of<T>(running: &Running<T>) -> ThreadId {
    running.query(|_| std::thread::current().id())
}

fn inet(reactor: &Reactor, key: Key) -> SocketAddr {
    reactor
        .local_addr(key)
        .and_then(|a| a.as_inet())
        .expect("an inet address")
}

/// An echo listener; its key and address.
fn listen_echo(reactor: &mut Reactor) -> (Key, SocketAddr) {
    let key = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
    (key, inet(reactor, key))
}

/// One echo round trip.
#[track_caller]
fn echo_round(stream: &mut TcpStream, data: &[u8]) {
    write_all(stream, data);
    assert_same_bytes(&read_exact(stream, data.len()), data, "echo");
}

/// Half-closes and reads to the server's close.
#[track_caller]
fn hang_up(mut stream: TcpStream) {
    stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_end(&mut stream), b"");
}

/// Polls the snapshot until `f` holds for it; returns that snapshot.
#[track_caller]
fn metrics_when<T>(
    running: &Running<T>,
    what: &str,
    f: impl Fn(&Snapshot) -> bool + Send + Sync + Clone + 'static,
) -> Snapshot {
    running.wait_until(what, move |reactor| f(&reactor.metrics()));
    running.query(|reactor| reactor.metrics())
}

/// The events of `key`, in order.
fn story_of(trace: &[TraceEvent], key: Key) -> Vec<What> {
    trace.iter().filter(|e| e.key == key).map(|e| e.what).collect()
}

/// The key of the connection a listener accepted from `peer`, from the
/// connection list.
#[track_caller]
fn key_of<T>(running: &Running<T>, peer: SocketAddr) -> Key {
    running
        .query(move |reactor| {
            reactor
                .connections()
                .into_iter()
                .find(|c| c.peer.as_inet() == Some(peer))
                .map(|c| c.key)
        })
        .unwrap_or_else(|| panic!("no connection from {peer}"))
}

#[test]
fn the_counters_move_as_the_traffic_moves() {
    const CLIENTS: usize = 5;
    const SIZE: usize = 3000;
    let running = start(listen_echo);
    let (listener, addr) = running.info;
    let fresh = running.query(|reactor| reactor.metrics());
    assert_eq!(
        (
            fresh.accepted,
            fresh.bytes_read,
            fresh.bytes_written,
            fresh.closed_total()
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(fresh.connections_open, 0);
    assert_eq!(fresh.sources, 1, "the listener");
    assert_eq!(fresh.slow_callback, Some(DEFAULT_SLOW_CALLBACK));
    assert_eq!(fresh.trace_capacity, DEFAULT_TRACE_CAPACITY);
    assert_eq!(fresh.shard, 0);

    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        echo_round(client, &pattern(SIZE, i as u64));
    }
    // Every byte sent came back: each was read and written once.
    let busy = running.query(|reactor| reactor.metrics());
    assert_eq!(busy.accepted, CLIENTS as u64);
    assert_eq!(busy.connections_open, CLIENTS);
    assert_eq!(busy.sources, CLIENTS + 1);
    assert_eq!(busy.bytes_read, (CLIENTS * SIZE) as u64);
    assert_eq!(busy.bytes_written, (CLIENTS * SIZE) as u64);
    assert_eq!(busy.closed_total(), 0);
    assert_eq!(busy.connected, 0, "nothing outbound");
    assert!(
        busy.events >= CLIENTS as u64,
        "at least a read event per client: {} events",
        busy.events
    );
    assert!(busy.turns > fresh.turns);
    assert_eq!(
        running.query(move |reactor| reactor.connection_count(listener)),
        CLIENTS
    );

    for client in clients {
        hang_up(client);
    }
    let after = metrics_when(&running, "every client's close", |m| {
        m.connections_open == 0 && m.closed_total() == CLIENTS as u64
    });
    assert_eq!(after.accepted, CLIENTS as u64);
    assert_eq!(after.bytes_read, (CLIENTS * SIZE) as u64, "a FIN is no byte");
    assert_eq!(after.bytes_written, (CLIENTS * SIZE) as u64);
    // The client shut its write half; echo's default closes after flushing.
    assert_eq!(
        after.closed_by(CloseKind::Closed),
        CLIENTS as u64,
        "{:?}",
        after.closed
    );
    assert_eq!(after.sources, 1, "the listener alone");
    assert!(after.events > busy.events);

    // Read from inside a turn (a `Handle::run` closure), the turn being
    // run is counted and not yet timed; read between turns, both agree.
    assert_eq!(after.turn_durations.count() + 1, after.turns);
    let between = {
        let mut reactor = Reactor::new().expect("reactor");
        for _ in 0..3 {
            reactor.run_once(Some(Duration::ZERO)).expect("turn");
        }
        reactor.metrics()
    };
    assert_eq!((between.turns, between.turn_durations.count()), (3, 3));
    let histogram_total: u64 = after.turn_durations.bucket_counts().iter().sum();
    assert_eq!(histogram_total, after.turn_durations.count());
    // The time of the turn being run is not in `busy_time` yet, but its
    // callbacks so far are in `callback_time`: both fit beside the waits.
    assert!(after.poll_time + after.busy_time <= after.uptime);
    assert!(after.poll_time + after.callback_time <= after.uptime);
    assert_eq!(running.shutdown(STEP), 0);
}

/// Echo that sleeps in every `on_data`: the callback the watchdog is for.
struct Sleepy(Duration);

impl StreamHandler for Sleepy {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        std::thread::sleep(self.0);
        cx.send(data);
        data.len()
    }
}

/// A listener of [`Sleepy`] handlers, with the watchdog at `threshold`.
fn listen_sleepy(reactor: &mut Reactor, sleep: Duration, threshold: Option<Duration>) -> (Key, SocketAddr) {
    reactor.set_slow_callback(threshold);
    let key = reactor
        .listen_tcp(any_port(), move |_: &Addr| Sleepy(sleep))
        .expect("listen");
    (key, inet(reactor, key))
}

/// The watchdog's warnings `thread` logged: those containing `marker`,
/// and the others.
fn slow_lines(thread: ThreadId, marker: &str) -> (Vec<String>, Vec<String>) {
    logged_by(thread)
        .into_iter()
        .filter(|(level, text)| *level == log::Level::Warn && text.contains(": slow callback: "))
        .map(|(_, text)| text)
        .partition(|text| text.contains(marker))
}

/// Above the default threshold, and far enough above that no ordinary
/// callback of a loaded machine gets there.
const THRESHOLD: Duration = Duration::from_millis(20);
const NAP: Duration = Duration::from_millis(50);
/// The watchdog times calls with the kernel's coarse clock, exact to one
/// tick (1 to 10 ms, by the kernel's configuration): a nap may measure
/// this much shorter than it was.
const TICK: Duration = Duration::from_millis(10);

#[test]
fn a_slow_on_data_is_counted_recorded_and_logged_once_per_episode() {
    let running = start(|reactor| listen_sleepy(reactor, NAP, Some(THRESHOLD)));
    let (_, addr) = running.info;
    let thread = thread_of(&running);
    let mut client = connect(addr);
    let peer = client.local_addr().expect("local address");
    // Two separate calls of `on_data` (the second line is sent once the
    // first is back), well within a second of each other: one episode.
    echo_round(&mut client, b"one\n");
    echo_round(&mut client, b"two\n");
    let key = key_of(&running, peer);

    let seen = running.query(|reactor| reactor.metrics());
    assert_eq!(seen.slow_callback, Some(THRESHOLD));
    assert!(seen.callback_time >= 2 * (NAP - TICK), "{:?}", seen.callback_time);

    let slow: Vec<(Key, u32)> = running
        .query(|reactor| reactor.trace())
        .into_iter()
        .filter_map(|e| match e.what {
            What::Slow {
                callback: "on_data",
                micros,
            } => Some((e.key, micros)),
            _ => None,
        })
        .collect();
    assert_eq!(slow.len(), 2, "{slow:?}");
    for (k, micros) in slow {
        assert_eq!(k, key);
        assert!(u128::from(micros) >= (NAP - TICK).as_micros(), "{micros} µs");
    }

    let (ours, others) = slow_lines(thread, "slow callback: on_data");
    if others.is_empty() {
        assert_eq!(seen.slow_callbacks, 2);
        assert_eq!(ours.len(), 1, "one line per episode: {ours:#?}");
    } else {
        // A loaded machine stalled another callback past the threshold
        // (each such episode has a line of its own), and one between the
        // two calls of `on_data` begins a second episode of it.
        assert!(seen.slow_callbacks >= 2 + others.len() as u64);
        assert!(!ours.is_empty() && ours.len() <= 2, "{ours:#?}");
    }
    let line = &ours[0];
    let who = format!("{key} connection {peer}: slow callback: on_data ran ");
    assert!(line.starts_with(&who), "{line:?} does not start with {who:?}");
    assert!(
        line.ends_with(" ms (threshold 20.0 ms); every source on this reactor waited"),
        "{line:?}"
    );
    hang_up(client);
    assert_eq!(running.shutdown(STEP), 0);
}

#[test]
fn with_the_watchdog_off_a_slow_callback_is_not_counted_nor_timed() {
    let running = start(|reactor| listen_sleepy(reactor, NAP, None));
    let (_, addr) = running.info;
    let thread = thread_of(&running);
    let mut client = connect(addr);
    echo_round(&mut client, b"one\n");
    echo_round(&mut client, b"two\n");
    let seen = running.query(|reactor| reactor.metrics());
    assert_eq!(seen.slow_callback, None);
    assert_eq!(seen.slow_callbacks, 0);
    assert_eq!(seen.callback_time, Duration::ZERO, "no callback is timed");
    let trace = running.query(|reactor| reactor.trace());
    assert!(
        !trace.iter().any(|e| matches!(e.what, What::Slow { .. })),
        "{trace:#?}"
    );
    assert!(
        !logged_by(thread)
            .iter()
            .any(|(_, text)| text.contains("slow callback")),
        "a watchdog line with the watchdog off"
    );
    hang_up(client);
    assert_eq!(running.shutdown(STEP), 0);
}

#[test]
fn a_slow_reactor_timer_is_counted_and_named() {
    let running = start(|reactor| {
        reactor.set_slow_callback(Some(THRESHOLD));
        reactor
            .set_timer(Duration::from_millis(1), |_| std::thread::sleep(NAP))
            .expect("timer");
    });
    let thread = thread_of(&running);
    let seen = metrics_when(&running, "the timer's slow call", |m| m.slow_callbacks > 0);
    let (ours, others) = slow_lines(thread, "slow callback: set_timer");
    assert_eq!(ours.len(), 1, "{ours:#?}");
    assert!(
        ours[0].starts_with("reactor: slow callback: set_timer ran "),
        "{:?}",
        ours[0]
    );
    if others.is_empty() {
        assert_eq!(seen.slow_callbacks, 1);
    } else {
        assert!(
            seen.slow_callbacks > others.len() as u64,
            "a loaded machine: {others:#?}"
        );
    }
    // A reactor timer belongs to no source: nothing for the recorder.
    let trace = running.query(|reactor| reactor.trace());
    assert!(!trace.iter().any(|e| matches!(e.what, What::Slow { .. })));
    assert_eq!(running.shutdown(STEP), 0);
}

/// An echo listener on a reactor whose watchdog is off: on a loaded
/// machine any callback may run past the threshold, and the story would
/// have a `Slow` event more.
fn listen_echo_unwatched(reactor: &mut Reactor) -> (Key, SocketAddr) {
    reactor.set_slow_callback(None);
    listen_echo(reactor)
}

#[test]
fn the_flight_recorder_tells_a_connections_story_in_order() {
    let running = start(listen_echo_unwatched);
    let (listener, addr) = running.info;
    let mut client = connect(addr);
    let peer = client.local_addr().expect("local address");
    echo_round(&mut client, b"hello");
    let key = key_of(&running, peer);
    hang_up(client);
    metrics_when(&running, "the close", |m| m.closed_total() == 1);
    let trace = running.query(|reactor| reactor.trace());

    let story = story_of(&trace, key);
    assert_eq!(
        story,
        [
            What::Accepted { listener },
            What::Read(5),
            What::Wrote(5),
            What::PeerFin,
            What::State {
                from: ConnState::Open,
                to: ConnState::ReadClosed
            },
            What::State {
                from: ConnState::ReadClosed,
                to: ConnState::Closed
            },
            What::Closed(CloseKind::Closed),
        ],
        "the story of {key}"
    );
    // In time order: turns and their times never go back.
    for pair in trace.windows(2) {
        assert!(pair[0].turn <= pair[1].turn, "{pair:?}");
        assert!(pair[0].at <= pair[1].at, "{pair:?}");
    }
    let first = trace.iter().find(|e| e.key == key).expect("accepted");
    assert!(first.turn >= 1);
    assert_eq!(running.shutdown(STEP), 0);
}

/// Connects, echoes `rounds` bytes one at a time, and hangs up; returns
/// the connection's key.
fn one_byte_rounds<T>(running: &Running<T>, addr: SocketAddr, rounds: usize) -> Key {
    let mut client = connect(addr);
    let peer = client.local_addr().expect("local address");
    for i in 0..rounds {
        echo_round(&mut client, &[b'a' + (i % 26) as u8]);
    }
    let key = key_of(running, peer);
    hang_up(client);
    key
}

#[test]
fn the_flight_recorder_keeps_the_newest_events_and_can_be_off() {
    const ROUNDS: usize = 10;
    let running = start(listen_echo_unwatched);
    let (_, addr) = running.info;

    // Full size: the whole story of a connection.
    let first = one_byte_rounds(&running, addr, ROUNDS);
    metrics_when(&running, "the first close", |m| m.closed_total() == 1);
    let full = running.query(|reactor| reactor.trace());
    let story = story_of(&full, first);
    assert_eq!(story.len(), 1 + 2 * ROUNDS + 4, "{story:#?}");

    // Shrunk to 8: the newest 8 of what it held.
    let kept = running.query(|reactor| {
        reactor.set_trace_capacity(8);
        (reactor.metrics().trace_capacity, reactor.trace())
    });
    assert_eq!(kept.0, 8);
    assert_eq!(kept.1, full[full.len() - 8..]);

    // The same traffic again: the ring holds the end of the new story.
    let second = one_byte_rounds(&running, addr, ROUNDS);
    metrics_when(&running, "the second close", |m| m.closed_total() == 2);
    let ring = running.query(|reactor| reactor.trace());
    assert_eq!(ring.len(), 8);
    assert!(ring.iter().all(|e| e.key == second), "{ring:#?}");
    let whats: Vec<What> = ring.iter().map(|e| e.what).collect();
    assert_eq!(whats, story[story.len() - 8..]);

    // Off: nothing is recorded, and the ring is gone.
    running.query(|reactor| reactor.set_trace_capacity(0));
    one_byte_rounds(&running, addr, 2);
    let off = metrics_when(&running, "the third close", |m| m.closed_total() == 3);
    assert_eq!(off.trace_capacity, 0);
    assert_eq!(running.query(|reactor| reactor.trace()), []);
    assert_eq!(
        running.query(|reactor| reactor.connections().len()),
        0,
        "the list has nothing to show"
    );
    assert_eq!(running.shutdown(STEP), 0);
}

/// Echo that panics on input holding `boom`.
struct Fragile;

impl StreamHandler for Fragile {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        if data.windows(4).any(|w| w == b"boom") {
            panic!("fragile handler: boom");
        }
        cx.send(data);
        data.len()
    }
}

#[test]
fn a_panic_writes_the_flight_recorder_to_the_log_and_the_reactor_serves_on() {
    let running = start(|reactor| {
        let key = reactor
            .listen_tcp(any_port(), |_: &Addr| Fragile)
            .expect("listen");
        inet(reactor, key)
    });
    let addr = running.info;
    let thread = thread_of(&running);
    let mut victim = connect(addr);
    let peer = victim.local_addr().expect("local address");
    echo_round(&mut victim, b"before");
    let key = key_of(&running, peer);
    write_all(&mut victim, b"boom");
    // The connection is reset: an error or an end, and nothing echoed.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut victim, &mut rest);
    assert_eq!(rest, b"");

    let seen = metrics_when(&running, "the panic", |m| m.panics == 1);
    assert_eq!(seen.panics, 1);
    let trace = running.query(|reactor| reactor.trace());
    assert!(story_of(&trace, key).contains(&What::Panicked { callback: "on_data" }));

    // The dump: a heading, then one line per event, the panic last.
    let lines = logged_by(thread);
    let heading = lines
        .iter()
        .position(|(_, text)| text.starts_with("flight recorder, "))
        .unwrap_or_else(|| panic!("no dump in {:#?}", lines));
    let (level, text) = &lines[heading];
    assert_eq!(*level, log::Level::Warn);
    assert!(
        text.contains(&format!("after a panic of {key} in on_data")),
        "{text:?}"
    );
    let count: usize = text
        .split("the last ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {text:?}"));
    let events = &lines[heading + 1..heading + 1 + count];
    assert!(
        events
            .iter()
            .all(|(level, line)| *level == log::Level::Warn && line.starts_with("  turn ")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|(_, line)| line.ends_with(&format!("{key}: read 6 bytes"))),
        "the read before the panic: {events:#?}"
    );
    let last = &events[count - 1].1;
    assert!(last.ends_with(&format!("{key}: panicked in on_data")), "{last:?}");

    // The reactor goes on: another client is served.
    let mut next = connect(addr);
    echo_round(&mut next, b"after the panic");
    hang_up(next);
    let dumps = logged_by(thread)
        .iter()
        .filter(|(_, text)| text.starts_with("flight recorder, "))
        .count();
    assert_eq!(dumps, 1);
    assert_eq!(running.shutdown(STEP), 0);
}

#[test]
fn a_handle_reads_the_counters_and_has_the_trace_dumped_from_another_thread() {
    let mut running = start(listen_echo);
    let (_, addr) = running.info;
    let thread = thread_of(&running);
    let mut client = connect(addr);
    echo_round(&mut client, b"through the handle");

    let handle = running.handle.clone();
    let (snapshot, trace) = std::thread::spawn(move || (handle.metrics(STEP), handle.trace(STEP)))
        .join()
        .expect("asking thread");
    let snapshot = snapshot.expect("a snapshot from the running reactor");
    assert_eq!(snapshot.accepted, 1);
    assert_eq!(snapshot.connections_open, 1);
    assert_eq!((snapshot.bytes_read, snapshot.bytes_written), (18, 18));
    let trace = trace.expect("the trace from the running reactor");
    assert!(trace.iter().any(|e| e.what == What::Read(18)), "{trace:#?}");

    assert!(running.handle.dump_trace());
    let deadline = Instant::now() + STEP;
    let heading = loop {
        let lines = logged_by(thread);
        if let Some(at) = lines
            .iter()
            .position(|(_, t)| t.starts_with("flight recorder, on request"))
        {
            break lines[at..].to_vec();
        }
        assert!(Instant::now() < deadline, "no dump in {:#?}", lines);
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(heading[0].0, log::Level::Warn);
    assert!(
        heading[1..].iter().any(|(_, t)| t.ends_with(": read 18 bytes")),
        "{heading:#?}"
    );

    hang_up(client);
    let handle = running.handle.clone();
    running.handle.stop();
    running.join();
    assert_eq!(
        handle.metrics(Duration::from_millis(100)),
        None,
        "the reactor is gone"
    );
    assert!(!handle.dump_trace());
}

/// Sends a large answer on open (if told to) and never closes on the
/// peer's FIN.
struct Flood(bool);

/// What [`Flood`] sends on open: more than the socket buffers of both ends.
const FLOOD: usize = 16 * 1024 * 1024;

impl StreamHandler for Flood {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        if self.0 {
            cx.send_vec(vec![b'f'; FLOOD]);
        }
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        // From inside a handler: the same views as the reactor's.
        if data == b"who\n" {
            let others = cx.connections().len();
            let accepted = cx.metrics().accepted;
            let events = cx.trace().iter().filter(|e| e.key == cx.key()).count();
            cx.send(format!("{others} {accepted} {}\n", events > 0).as_bytes());
        }
        data.len()
    }

    fn on_read_closed(&mut self, _cx: &mut Context<'_>) {}
}

#[test]
fn the_connection_list_shows_peer_state_and_queued_bytes() {
    let running = start(|reactor| {
        reactor.set_slow_callback(None); // no `Slow` as the last event
                                         // The first connection gets the flood.
        let mut first = true;
        let factory = move |_: &Addr| Flood(std::mem::replace(&mut first, false));
        let key = reactor.listen_tcp(any_port(), factory).expect("listen");
        (key, inet(reactor, key))
    });
    let (listener, addr) = running.info;
    // One that reads nothing: its flood waits in the queue.
    let stuck = connect(addr);
    let stuck_peer = stuck.local_addr().expect("local address");
    // One that hangs up its write half: the handler leaves it half open.
    let half = connect(addr);
    let half_peer = half.local_addr().expect("local address");
    half.shutdown(Shutdown::Write).expect("half-close");
    running.wait_until("both connections in their states", move |reactor| {
        let list = reactor.connections();
        list.len() == 2
            && list
                .iter()
                .any(|c| c.peer.as_inet() == Some(half_peer) && c.state == ConnState::ReadClosed)
    });

    let list = running.query(|reactor| reactor.connections());
    assert!(list[0].key.index() < list[1].key.index(), "in key order");
    let of = |peer: SocketAddr| {
        list.iter()
            .find(|c| c.peer.as_inet() == Some(peer))
            .unwrap_or_else(|| panic!("{peer} not listed: {list:#?}"))
    };
    let stuck_info = of(stuck_peer);
    assert_eq!(stuck_info.state, ConnState::Open);
    assert_eq!(stuck_info.listener, Some(listener));
    assert!(
        stuck_info.queued > 0 && stuck_info.queued < FLOOD as u64,
        "queued {}",
        stuck_info.queued
    );
    assert!(stuck_info.age < Duration::from_secs(60));
    let last = stuck_info.last.expect("a last event");
    assert_eq!(last.key, stuck_info.key);
    let half_info = of(half_peer);
    assert_eq!(half_info.state, ConnState::ReadClosed);
    assert_eq!(
        half_info.last.map(|e| e.what),
        Some(What::State {
            from: ConnState::Open,
            to: ConnState::ReadClosed
        })
    );
    let snapshot = running.query(|reactor| reactor.metrics());
    assert_eq!(snapshot.connections_open, 2);
    assert_eq!(
        snapshot.bytes_written + stuck_info.queued,
        FLOOD as u64,
        "what was written and what waits is the flood"
    );

    // A handler sees the same through its context.
    let mut asker = connect(addr);
    write_all(&mut asker, b"who\n");
    assert_eq!(read_exact(&mut asker, 9), b"3 3 true\n");
    drop((stuck, half, asker));
}
