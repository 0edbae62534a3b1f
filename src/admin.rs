//! The admin listener: the loop's own view of itself over HTTP/1.1,
//! served by the reactor it shows.
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics` | [`crate::metrics::write_prometheus`]: the Prometheus text format, version 0.0.4, a `shard` label on every sample |
//! | `GET /stats` | JSON: `{"shards":[...],"connections":[...],"connections_shown":N,"connections_total":N}`, a [`Snapshot`] per shard and up to [`MAX_LISTED`] connections per shard |
//! | `GET /trace` | the flight recorder as JSON lines, oldest first, one object per [`TraceEvent`]; `?last=N` keeps the newest N per shard, `?key=K` (as in `#5.1`, or `5.1`) the events of one source |
//! | `GET /` | a page that shows the loop live from `/stats` and `/trace`, once a second: turns per second, the turn-time histogram, each connection with its state, age, queued bytes and last event, and the newest events |
//! | `HEAD` of any of these | the same head, no body |
//! | any other method or path | 404 |
//! | a malformed head | 400, then close |
//! | a head over 8 KiB or 64 fields | 400 (the contract's answer to a bad request), then close |
//!
//! It is parsed by evloop's own HTTP code ([`crate::protocols::http::request`]),
//! and answered on the reactor that owns the listener, between two of its
//! turns: what it shows is the loop that serves it. With shards
//! ([`Admin::sharded`]), the listener lives on shard 0 and each request
//! asks every other shard for its part by message; the answer goes out
//! when all have answered, or after [`GATHER_TIMEOUT`] with the parts that
//! came (a shard that does not answer is missing from it, and the log says
//! so).
//!
//! Always true:
//! - `/metrics` costs one pass over the source table (to count open
//!   connections) and one buffer for the text: nothing per connection;
//! - requests on one connection are answered in order, one at a time:
//!   reading pauses while a sharded answer is gathered;
//! - a connection is kept alive unless the request asked otherwise, was
//!   HTTP/1.0 without `keep-alive`, or announced a body (never read);
//! - a request head must arrive within [`HEADER_TIMEOUT`] of the
//!   connection's start or of the previous answer; a connection that sends
//!   nothing for that long is closed;
//! - it has no authentication and no TLS: bind it to loopback
//!   (`docs/reliability.md`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

use log::{debug, warn};

use crate::metrics::{write_prometheus, ConnectionInfo, Snapshot, TraceEvent};
use crate::protocols::http::request::{parse_request, HeadError, Method, Parse, Request, Version};
use crate::shard::Shards;
use crate::{
    Addr, ConnState, ConnectionOptions, Context, Key, ListenerOptions, Reactor, StreamFactory, StreamHandler,
    TimerId,
};

/// How long a request head may take to arrive, and how long a connection
/// may sit idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a sharded answer waits for the other shards' parts.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections listed per shard in `/stats` (the counts are always whole).
pub const MAX_LISTED: usize = 1000;

/// The live page.
const PAGE: &str = include_str!("admin/page.html");

/// Serves the admin endpoints on the listener it is given: one handler
/// per connection.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use evloop::{admin::Admin, Reactor};
///
/// let mut reactor = Reactor::new()?;
/// let key = reactor.listen_tcp_with("127.0.0.1:0".parse()?, Admin::listener_options(), Admin::new())?;
/// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
/// let handle = reactor.handle();
/// let client = std::thread::spawn(move || -> std::io::Result<String> {
///     let mut stream = TcpStream::connect(addr)?;
///     stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
///     let mut answer = String::new();
///     stream.read_to_string(&mut answer)?;
///     handle.stop();
///     Ok(answer)
/// });
/// reactor.run()?;
/// let answer = client.join().expect("client thread panicked")?;
/// assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"));
/// assert!(answer.contains("\nevloop_connections_accepted_total{shard=\"0\"} 1\n"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Admin {
    shards: Option<Shards>,
}

impl Admin {
    /// The admin endpoints of the reactor that owns the listener.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Admin {
        Admin { shards: None }
    }

    /// The admin endpoints of every shard, for a listener on shard 0 (or
    /// any one shard): each request gathers the other shards' parts by
    /// message ([`Shards::send`]).
    pub fn sharded(shards: &Shards) -> Admin {
        Admin {
            shards: (shards.count() > 1).then(|| shards.clone()),
        }
    }

    /// Listener options for an admin port: a few connections at once, and
    /// small input limits.
    pub fn listener_options() -> ListenerOptions {
        ListenerOptions {
            max_connections: 64,
            connection: ConnectionOptions {
                max_pending_input: 16 * 1024,
                drain_timeout: Duration::from_secs(10),
                ..ConnectionOptions::default()
            },
            ..ListenerOptions::default()
        }
    }
}

impl StreamFactory for Admin {
    fn new_handler(&mut self, _peer: &Addr) -> Box<dyn StreamHandler> {
        Box::new(AdminStream {
            shards: self.shards.clone(),
            deadline: None,
            gather: None,
        })
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Stats,
    Trace(TraceFilter),
    Page,
}

/// `/trace`'s query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TraceFilter {
    last: Option<usize>,
    key: Option<(u32, u32)>,
}

impl TraceFilter {
    fn keeps(&self, key: Key) -> bool {
        self.key.map_or(true, |(i, g)| key.parts() == (i, g))
    }
}

/// One shard's part of an answer.
enum Part {
    Metrics(Snapshot),
    Stats(Snapshot, Vec<ConnectionInfo>),
    Trace(usize, Vec<TraceEvent>),
}

impl Part {
    /// The part of the reactor behind `core_view`.
    fn of(route: Route, view: &dyn View) -> Part {
        match route {
            Route::Metrics | Route::Page => Part::Metrics(view.snapshot()),
            Route::Stats => {
                let mut list = Vec::new();
                view.connections(&mut |info| {
                    if list.len() < MAX_LISTED {
                        list.push(info);
                    }
                });
                Part::Stats(view.snapshot(), list)
            }
            Route::Trace(filter) => {
                let mut events: Vec<TraceEvent> =
                    view.trace().into_iter().filter(|e| filter.keeps(e.key)).collect();
                if let Some(last) = filter.last {
                    let skip = events.len().saturating_sub(last);
                    events.drain(..skip);
                }
                Part::Trace(view.shard(), events)
            }
        }
    }
}

/// A reactor seen from a handler or from a message.
trait View {
    fn snapshot(&self) -> Snapshot;
    fn connections(&self, f: &mut dyn FnMut(ConnectionInfo));
    fn trace(&self) -> Vec<TraceEvent>;
    fn shard(&self) -> usize {
        Shards::current().map_or(0, |s| s.id())
    }
}

impl View for Context<'_> {
    fn snapshot(&self) -> Snapshot {
        self.core().snapshot()
    }
    fn connections(&self, f: &mut dyn FnMut(ConnectionInfo)) {
        self.core().for_each_connection(f);
    }
    fn trace(&self) -> Vec<TraceEvent> {
        self.core().trace_events().copied().collect()
    }
}

impl View for Reactor {
    fn snapshot(&self) -> Snapshot {
        self.metrics()
    }
    fn connections(&self, f: &mut dyn FnMut(ConnectionInfo)) {
        self.core.for_each_connection(f);
    }
    fn trace(&self) -> Vec<TraceEvent> {
        Reactor::trace(self)
    }
}

/// An answer being gathered from the shards.
struct Gather {
    route: Route,
    head_only: bool,
    keep_alive: bool,
    version: Version,
    /// The timer that ends the wait: reset to now when the last part comes.
    timer: Option<TimerId>,
    parts: Vec<Option<Part>>,
}

thread_local! {
    /// Sharded answers in gathering on this thread (shard 0's), by the
    /// connection that asked: where the other shards' parts arrive.
    static GATHERS: RefCell<HashMap<Key, Rc<RefCell<Gather>>>> = RefCell::new(HashMap::new());
}

/// One admin connection.
struct AdminStream {
    shards: Option<Shards>,
    /// The header timeout's timer.
    deadline: Option<TimerId>,
    /// The answer being gathered, if any.
    gather: Option<Rc<RefCell<Gather>>>,
}

impl StreamHandler for AdminStream {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.deadline = cx.set_timer(HEADER_TIMEOUT);
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        // Every complete request of the input, in order: pipelined requests
        // arrive in one read, and the core offers what is left over only
        // when more bytes come.
        let mut used = 0;
        loop {
            if !cx.state().is_some_and(ConnState::may_send) {
                return data.len(); // closing: nothing more is answered
            }
            if self.gather.is_some() || used == data.len() {
                return used; // one request at a time; reading is paused
            }
            match self.request(cx, &data[used..]) {
                0 => return used,
                n => used = used.saturating_add(n).min(data.len()),
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, id: TimerId) {
        let ends_gather = self.gather.as_ref().is_some_and(|g| g.borrow().timer == Some(id));
        if let Some(gather) = if ends_gather { self.gather.take() } else { None } {
            GATHERS.with(|all| all.borrow_mut().remove(&cx.key()));
            let mut gather = gather.borrow_mut();
            let missing: Vec<usize> = (0..gather.parts.len())
                .filter(|&i| gather.parts[i].is_none())
                .collect();
            if !missing.is_empty() {
                warn!(
                    "{} admin: shards {missing:?} did not answer within {GATHER_TIMEOUT:?}",
                    cx.key()
                );
            }
            let body = render(gather.route, &mut gather.parts);
            let route = gather.route;
            answer(
                cx,
                "200 OK",
                content_type(route),
                &body,
                gather.head_only,
                gather.keep_alive,
                gather.version,
            );
            cx.resume_reading();
            if let Some(deadline) = self.deadline {
                cx.reset_timer(deadline, HEADER_TIMEOUT);
            }
            return;
        }
        if Some(id) == self.deadline {
            debug!(
                "{} admin: no request within {HEADER_TIMEOUT:?}, closing",
                cx.key()
            );
            cx.close();
        }
    }

    fn on_close(&mut self, cx: &mut Context<'_>, _reason: &crate::CloseReason) {
        if self.gather.take().is_some() {
            GATHERS.with(|all| all.borrow_mut().remove(&cx.key()));
        }
    }
}

impl AdminStream {
    /// Answers the request at the start of `data`, or starts gathering
    /// its answer; returns the bytes it took (0: the head is not complete).
    fn request(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let request = match parse_request(data) {
            Ok(Parse::Partial) => return 0,
            Ok(Parse::Complete(request)) => request,
            // The contract answers every bad request with 400, an
            // oversized head too (the file server's HTTP says 431).
            Err(HeadError::TooLarge | HeadError::Malformed) => return refuse(cx, "400 Bad Request"),
        };
        let used = request.head_len;
        let keep_alive = request.keep_alive() && !request.has_body();
        let head_only = request.method == Method::Head;
        // An answer, a 404 too, starts the wait for the next head afresh.
        if let Some(id) = self.deadline {
            cx.reset_timer(id, HEADER_TIMEOUT);
        }
        let Some(route) = route(&request) else {
            debug!(
                "{} admin: {} {}: 404",
                cx.key(),
                method_name(&request),
                request.target
            );
            answer(
                cx,
                "404 Not Found",
                "text/plain; charset=utf-8",
                b"not found\n",
                head_only,
                keep_alive,
                request.version,
            );
            return used;
        };
        if route != Route::Page {
            if let Some(shards) = self.shards.clone() {
                self.gather(cx, &shards, route, (head_only, keep_alive, request.version));
                return used;
            }
        }
        let rendered;
        let body = if route == Route::Page {
            PAGE.as_bytes()
        } else {
            rendered = render(route, &mut [Some(Part::of(route, &*cx))]);
            &rendered[..]
        };
        answer(
            cx,
            "200 OK",
            content_type(route),
            body,
            head_only,
            keep_alive,
            request.version,
        );
        used
    }

    /// Asks every other shard for its part of `route`; the answer goes out
    /// from `on_timer` once they are all in, or at the gather timeout.
    fn gather(&mut self, cx: &mut Context<'_>, shards: &Shards, route: Route, how: (bool, bool, Version)) {
        let (head_only, keep_alive, version) = how;
        let me = shards.id();
        let mut parts: Vec<Option<Part>> = (0..shards.count()).map(|_| None).collect();
        parts[me] = Some(Part::of(route, &*cx));
        let gather = Rc::new(RefCell::new(Gather {
            route,
            head_only,
            keep_alive,
            version,
            timer: cx.set_timer(GATHER_TIMEOUT),
            parts,
        }));
        let asker = cx.key();
        GATHERS.with(|all| all.borrow_mut().insert(asker, Rc::clone(&gather)));
        self.gather = Some(gather);
        cx.pause_reading();
        for to in (0..shards.count()).filter(|&to| to != me) {
            let sent = shards.send(to, move |reactor: &mut Reactor| {
                let part = Part::of(route, reactor);
                if let Some(here) = Shards::current() {
                    // Back to the asking shard, where the gather waits.
                    let _ = here.send(me, move |reactor: &mut Reactor| arrive(reactor, asker, to, part));
                }
            });
            if sent.is_err() {
                debug!("{asker} admin: shard {to} cannot be asked; answering without it");
            }
        }
        shards.flush();
    }
}

/// A shard's part arrived on the asking shard: when it is the last, the
/// asking connection's timer is brought forward to now.
fn arrive(reactor: &mut Reactor, asker: Key, from: usize, part: Part) {
    let Some(gather) = GATHERS.with(|all| all.borrow().get(&asker).cloned()) else {
        return; // answered at the timeout already, or the connection went
    };
    let mut gather = gather.borrow_mut();
    if let Some(slot) = gather.parts.get_mut(from) {
        *slot = Some(part);
    }
    if gather.parts.iter().all(Option::is_some) {
        if let Some(timer) = gather.timer {
            reactor.core.reset_timer(timer, Duration::ZERO);
        }
    }
}

/// The path of a request, if it is one of the endpoints.
fn route(request: &Request) -> Option<Route> {
    if !matches!(request.method, Method::Get | Method::Head) {
        return None;
    }
    let (path, query) = match request.target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (request.target.as_str(), ""),
    };
    match path {
        "/metrics" => Some(Route::Metrics),
        "/stats" => Some(Route::Stats),
        "/" | "/index.html" => Some(Route::Page),
        "/trace" => {
            let mut filter = TraceFilter {
                last: None,
                key: None,
            };
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                match name {
                    "last" => filter.last = Some(value.parse().ok()?),
                    "key" => filter.key = Some(parse_key(value)?),
                    _ => return None,
                }
            }
            Some(Route::Trace(filter))
        }
        _ => None,
    }
}

/// A key as written in the log and the trace (`#5.1`, `%235.1` or `5.1`).
fn parse_key(text: &str) -> Option<(u32, u32)> {
    let text = text
        .strip_prefix("%23")
        .or_else(|| text.strip_prefix('#'))
        .unwrap_or(text);
    let (index, generation) = text.split_once('.')?;
    Some((index.parse().ok()?, generation.parse().ok()?))
}

fn method_name(request: &Request) -> &str {
    match &request.method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Other(name) => name,
    }
}

fn content_type(route: Route) -> &'static str {
    match route {
        Route::Metrics => "text/plain; version=0.0.4; charset=utf-8",
        Route::Stats => "application/json",
        Route::Trace(_) => "application/x-ndjson",
        Route::Page => "text/html; charset=utf-8",
    }
}

/// The body of an answer from the shards' parts, in shard order.
fn render(route: Route, parts: &mut [Option<Part>]) -> Vec<u8> {
    let mut out = String::new();
    match route {
        Route::Page => out.push_str(PAGE),
        Route::Metrics => {
            let snapshots: Vec<Snapshot> = parts
                .iter_mut()
                .filter_map(|p| match p.take() {
                    Some(Part::Metrics(s)) => Some(s),
                    _ => None,
                })
                .collect();
            out.reserve(9 * 1024 * snapshots.len());
            write_prometheus(&snapshots, &mut out);
        }
        Route::Stats => {
            let (mut shown, mut total) = (0, 0);
            out.push_str("{\"shards\":[");
            let mut lists = Vec::new();
            for part in parts.iter_mut() {
                if let Some(Part::Stats(snapshot, list)) = part.take() {
                    if !lists.is_empty() {
                        out.push(',');
                    }
                    snapshot.write_json(&mut out);
                    shown += list.len();
                    total += snapshot.connections_open;
                    lists.push((snapshot.shard, list));
                }
            }
            out.push_str("],\"connections\":[");
            let mut first = true;
            for (shard, list) in &lists {
                for info in list {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    write_connection(&mut out, *shard, info);
                }
            }
            let _ = write!(
                out,
                "],\"connections_shown\":{shown},\"connections_total\":{total}}}"
            );
        }
        Route::Trace(_) => {
            for part in parts.iter_mut() {
                if let Some(Part::Trace(shard, events)) = part.take() {
                    for event in &events {
                        event.write_json(shard, &mut out);
                        out.push('\n');
                    }
                }
            }
        }
    }
    out.into_bytes()
}

/// One connection of `/stats`.
fn write_connection(out: &mut String, shard: usize, info: &ConnectionInfo) {
    let _ = write!(out, "{{\"shard\":{shard},\"key\":\"{}\",\"peer\":", info.key);
    json_string(out, &info.peer.to_string());
    match info.listener {
        Some(l) => {
            let _ = write!(out, ",\"listener\":\"{l}\"");
        }
        None => out.push_str(",\"listener\":null"),
    }
    let _ = write!(
        out,
        ",\"state\":\"{}\",\"age_seconds\":{},\"queued\":{},\"last\":",
        info.state,
        info.age.as_secs(),
        info.queued
    );
    match &info.last {
        Some(event) => event.write_json(shard, out),
        None => out.push_str("null"),
    }
    out.push('}');
}

/// Writes `text` as a JSON string.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Sends an answer with its head.
fn answer(
    cx: &mut Context<'_>,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
    version: Version,
) {
    let mut head = String::with_capacity(160);
    let _ = write!(
        head,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        body.len()
    );
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    } else if version == Version::Http10 {
        head.push_str("Connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    let mut all = head.into_bytes();
    if !head_only {
        all.extend_from_slice(body);
    }
    cx.send_vec(all);
    if !keep_alive {
        cx.close();
    }
}

/// Answers a head that cannot be served, and closes.
fn refuse(cx: &mut Context<'_>, status: &str) -> usize {
    debug!("{} admin: {status}", cx.key());
    answer(
        cx,
        status,
        "text/plain; charset=utf-8",
        b"bad request\n",
        false,
        false,
        Version::Http11,
    );
    usize::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Request {
        match parse_request(text.as_bytes()) {
            Ok(Parse::Complete(request)) => request,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn routes_are_the_four_endpoints_by_get_or_head() {
        let get = |target: &str| route(&request(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")));
        assert_eq!(get("/metrics"), Some(Route::Metrics));
        assert_eq!(get("/stats"), Some(Route::Stats));
        assert_eq!(get("/"), Some(Route::Page));
        assert_eq!(
            get("/trace?last=5&key=%233.1"),
            Some(Route::Trace(TraceFilter {
                last: Some(5),
                key: Some((3, 1))
            }))
        );
        assert_eq!(get("/trace?last=x"), None);
        assert_eq!(get("/trace?what=1"), None);
        assert_eq!(get("/metrics/"), None);
        assert_eq!(get("/nothing"), None);
        let post = request("POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(route(&post), None);
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, r#""a\"b\\c\nd\u0001""#.replace("\\n", "\\u000a"));
    }
}
