//! The HTTP/1.1 file server: [`HttpServer`] is the factory a listener takes,
//! [`HttpStream`] serves one connection, built from the IO-free pieces
//! beside it ([`super::request`], [`super::range`], [`super::date`],
//! [`super::mime`], [`super::listing`]).
//!
//! What it answers:
//!
//! | request | answer |
//! |---|---|
//! | `GET`/`HEAD` of a regular file | 200, `Content-Length`, `Content-Type`, `ETag`, `Last-Modified`, `Accept-Ranges` |
//! | with a single satisfiable `Range: bytes=` | 206 and `Content-Range` |
//! | with an unsatisfiable one | 416 and `Content-Range: bytes */LEN` |
//! | with an `If-Range` that does not hold (another tag, a weak one, another date) | 200, the whole file |
//! | with an `If-Match` no tag of which matches strongly, or an `If-Unmodified-Since` older than the file | 412 |
//! | with an `If-None-Match` that matches, or (without one) an `If-Modified-Since` not older than the file | 304 with `ETag` and `Last-Modified`, no body |
//! | a file that cannot be opened for a reason other than its name (out of descriptors, an IO error) | 503 with `Retry-After: 5`, logged at warn; the connection stays usable |
//! | a directory, path ending in `/` | 200, an HTML listing of what a request would serve, streamed (chunked, or close-delimited for HTTP/1.0) |
//! | a directory without the `/` | 301 to the path with it |
//! | a missing name | 404 |
//! | a name outside the root, unreadable, or not a file or directory | 403 |
//! | another method | 405 with `Allow: GET, HEAD` |
//! | a malformed head or request-target | 400, then close |
//! | a head over 8 KiB or 64 fields | 431, then close |
//! | a head that does not arrive within the header timeout | 408, then close |
//!
//! Preconditions are evaluated in RFC 9110 §13.2.2's order by
//! [`super::precondition::evaluate`]; the `ETag` is strong, from the
//! modification time and size (`"<mtime-seconds-hex>-<size-hex>"`).
//!
//! Always true:
//! - a 404 or 403 means the name is missing or not allowed, nothing else: a
//!   file that exists but cannot be opened now is a 503;
//! - paths are percent-decoded ([`super::request::decode_path`]), then go
//!   through [`Root::resolve`], the confinement the plain file protocol
//!   uses: no byte from outside the root is ever sent;
//! - a file body goes out as a [`FileBody`], regions sent with `sendfile(2)`,
//!   the same code as the plain protocol: constant memory per connection
//!   whatever the file's size, and a stalled reader is cut by the body's
//!   stall watchdog (the idle timeout) and the core's drain timeout;
//! - a listing is rendered as the client reads it ([`super::dir`]): a few
//!   entries per turn of the loop, none while the queue is above its high
//!   watermark, so a directory of any size stalls no other client and one
//!   that is not read holds at most the high watermark plus one chunk;
//! - requests on one connection are answered in order: while a body is being
//!   queued, or the queue is above its high watermark, the connection stops
//!   reading, so pipelined requests wait in the socket and TCP flow control
//!   holds back a peer that sends faster than it reads;
//! - a connection is kept alive after an answer unless the request said
//!   `Connection: close`, was HTTP/1.0 without `keep-alive`, announced a
//!   body (never read), or the answer was 400, 408 or 431;
//! - timeouts: a fresh connection, or one that has begun a request head, must
//!   complete the head within the header timeout (slowloris: 408, close); a
//!   kept-alive connection with no request started is closed after the idle
//!   timeout;
//! - every answer is logged at info level in an access-log shape: key, peer,
//!   the request line, status, body bytes, milliseconds (from the request
//!   head to the last byte queued; an answer cut short says so).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, log_enabled, warn, Level};

use super::date::format_http_date;
use super::dir::{Framing, Indexes, Listing, Names};
use super::listing::percent_encode_segment;
use super::mime::content_type;
use super::precondition::{etag, evaluate, Conditions, Validators, Verdict};
use super::range::{parse_range, RangeOutcome};
use super::request::{decode_path, parse_request, HeadError, Method, Parse, Request, Version};
use crate::protocols::body::{FileBody, Progress};
use crate::protocols::file::loggable;
use crate::protocols::path::{Kind, Refusal, Resolved, Root};
use crate::{
    Addr, CloseReason, ConnectionOptions, Context, ListenerOptions, StreamFactory, StreamHandler, TimerId,
};

/// How long a kept-alive connection may wait for its next request, unless
/// set with [`HttpServer::with_idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a request head may take to arrive, from the connection's start
/// or the head's first byte, unless set with
/// [`HttpServer::with_header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The `Allow` value of a 405.
const ALLOW: &str = "GET, HEAD";

/// The `Retry-After` value, in seconds, of a 503 for a file that cannot be
/// opened now (out of descriptors).
const RETRY_AFTER: &str = "5";

/// Serves the files and directories under a root over HTTP/1.1: one
/// [`HttpStream`] per connection.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use evloop::{Reactor, protocols::http::HttpServer};
/// let mut reactor = Reactor::new()?;
/// reactor.listen_tcp("127.0.0.1:8080".parse()?, HttpServer::new(".")?)?;
/// reactor.run()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HttpServer {
    config: Rc<Config>,
}

/// What every connection of one server shares.
#[derive(Debug, Clone)]
struct Config {
    root: Root,
    idle_timeout: Duration,
    header_timeout: Duration,
    /// The indexes of the directories being listed right now.
    indexes: Indexes,
}

impl HttpServer {
    /// Serves the directory `root` (resolved to its real path now, once),
    /// with [`DEFAULT_IDLE_TIMEOUT`] and [`DEFAULT_HEADER_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// `root` does not exist or is not a directory.
    pub fn new(root: impl AsRef<Path>) -> io::Result<HttpServer> {
        Ok(HttpServer::with_root(Root::new(root)?))
    }

    /// Serves an already resolved root.
    pub fn with_root(root: Root) -> HttpServer {
        HttpServer {
            config: Rc::new(Config {
                root,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                header_timeout: DEFAULT_HEADER_TIMEOUT,
                indexes: Indexes::default(),
            }),
        }
    }

    /// How long a kept-alive connection may wait for its next request, and
    /// how long a body may go without draining before the rest is handed to
    /// the core's drain timeout.
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> HttpServer {
        Rc::make_mut(&mut self.config).idle_timeout = idle_timeout;
        self
    }

    /// How long a request head may take, from the connection's start or
    /// from the head's first byte; past it the peer gets 408 and a close.
    pub fn with_header_timeout(mut self, header_timeout: Duration) -> HttpServer {
        Rc::make_mut(&mut self.config).header_timeout = header_timeout;
        self
    }

    /// The served directory.
    pub fn root(&self) -> &Root {
        &self.config.root
    }

    /// Listener options for HTTP: a high watermark of 192 KiB (low: 64 KiB),
    /// so that a client that does not read holds at most 192 KiB plus one
    /// listing chunk (under 256 KiB in all) of generated output in the
    /// server. File bodies are unaffected (they are queued as regions, not
    /// bytes). Other options are the defaults.
    pub fn listener_options() -> ListenerOptions {
        ListenerOptions {
            connection: ConnectionOptions {
                high_water: 192 * 1024,
                low_water: 64 * 1024,
                ..ConnectionOptions::default()
            },
            ..ListenerOptions::default()
        }
    }
}

impl StreamFactory for HttpServer {
    fn new_handler(&mut self, _peer: &Addr) -> Box<dyn StreamHandler> {
        Box::new(HttpStream::new(Rc::clone(&self.config)))
    }

    fn farewell(&mut self, _peer: &Addr) -> Option<Vec<u8>> {
        let body = "503 Service Unavailable: too many connections\n";
        Some(
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }
}

/// What a connection waits for while reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The start of the next request (idle timeout).
    Request,
    /// The rest of a request head, or the first one (header timeout).
    Head,
}

/// Where one connection stands.
///
/// ```text
/// Reading  --head complete, answer queued-----------> Reading   (keep-alive; idle timer)
/// Reading  --head complete, body left to queue------> Sending   (reading paused)
/// Reading  --directory listing started--------------> Listing   (reading paused)
/// Reading  --answer queued above the high watermark-> Blocked   (reading paused)
/// Reading  --not keep-alive / 400 / 431 / 408-------> Closing
/// Reading  --idle timeout, FIN, shutdown------------> Closing   (nothing sent)
/// Sending  --drain, body all queued-----------------> Reading / Blocked / Closing
/// Sending  --stall watchdog, shutdown---------------> Closing   (rest queued as one region)
/// Listing  --drain or tick, page all queued---------> Reading / Blocked / Closing
/// Listing  --stall watchdog-------------------------> Closing   (page cut)
/// Blocked  --drain----------------------------------> Reading   (reading resumed: pipelined requests)
/// Closing  --flushed / drain_timeout / error--------> (core closes; on_close logs a cut answer)
/// ```
#[derive(Debug)]
enum Phase {
    /// Waiting for a request head; `timer` enforces `wait`'s timeout.
    Reading { wait: Wait, timer: Option<TimerId> },
    /// Queuing a file body; requests behind it wait.
    Sending(FileBody),
    /// Rendering a directory listing a chunk per turn; requests behind it
    /// wait.
    Listing(Listing),
    /// Answers queued past the high watermark; requests behind them wait
    /// for the drain.
    Blocked,
    /// The last answer is queued and the connection closes once it is
    /// flushed. Input is ignored.
    Closing,
}

/// One answer, kept for its access-log line until its body is queued.
#[derive(Debug)]
struct Exchange {
    line: String,
    status: u16,
    bytes: u64,
    started: Instant,
    keep_alive: bool,
}

/// One HTTP/1.1 connection.
#[derive(Debug)]
pub struct HttpStream {
    config: Rc<Config>,
    phase: Phase,
    /// The peer, for log lines (kept: `on_close` can no longer ask).
    peer: String,
    /// The answer whose body is still being queued, if any.
    exchange: Option<Exchange>,
    /// Whether reading is paused (requests wait behind an answer).
    paused: bool,
    /// The peer shut down its write side: no request follows the current.
    peer_done: bool,
}

/// A response head about to be queued.
struct Head {
    status: u16,
    /// Content-Length; none for a 304.
    length: Option<u64>,
    fields: String,
}

impl Head {
    fn new(status: u16, length: Option<u64>) -> Head {
        Head {
            status,
            length,
            // Room for the fields a file answer carries, so that adding
            // them does not grow the string again and again.
            fields: String::with_capacity(192),
        }
    }

    fn field(mut self, name: &str, value: impl std::fmt::Display) -> Head {
        // Writing to a String cannot fail.
        let _ = write!(self.fields, "{name}: {value}\r\n");
        self
    }
}

/// What to queue after a head.
enum Body {
    /// Nothing (a HEAD, a 304, an empty file).
    None,
    /// Bytes made here: a listing or an error text.
    Bytes(Vec<u8>),
    /// A span of a file.
    File { file: File, offset: u64, len: u64 },
    /// A directory's listing page, rendered as it is sent.
    Listing { names: Names, url_path: String },
}

impl HttpStream {
    fn new(config: Rc<Config>) -> HttpStream {
        HttpStream {
            config,
            phase: Phase::Reading {
                wait: Wait::Head,
                timer: None,
            },
            peer: String::new(),
            exchange: None,
            paused: false,
            peer_done: false,
        }
    }

    /// Reading: waits for `wait`. A head's deadline runs from its first
    /// byte, so waiting for the same head again keeps it; any other wait
    /// starts now, moving the timer already there (an O(1) reset, not a
    /// cancel and a new timer per request).
    fn wait_for(&mut self, cx: &mut Context<'_>, wait: Wait) {
        let after = match wait {
            Wait::Request => self.config.idle_timeout,
            Wait::Head => self.config.header_timeout,
        };
        let timer = match self.phase {
            Phase::Reading {
                wait: Wait::Head,
                timer: Some(_),
            } if wait == Wait::Head => return,
            Phase::Reading {
                timer: Some(timer), ..
            } if cx.reset_timer(timer, after) => Some(timer),
            _ => cx.set_timer(after),
        };
        self.phase = Phase::Reading { wait, timer };
        if self.paused {
            self.paused = false;
            cx.resume_reading();
        }
    }

    /// Leaving Reading: stops its timer.
    fn stop_waiting(&mut self, cx: &mut Context<'_>) {
        if let Phase::Reading { timer, .. } = &mut self.phase {
            if let Some(timer) = timer.take() {
                cx.cancel_timer(timer);
            }
        }
    }

    /// -> Closing: close once everything queued is flushed.
    fn close(&mut self, cx: &mut Context<'_>) {
        self.stop_waiting(cx);
        match &mut self.phase {
            Phase::Sending(body) => body.cancel(cx),
            Phase::Listing(listing) => listing.cancel(cx),
            Phase::Reading { .. } | Phase::Blocked | Phase::Closing => {}
        }
        self.phase = Phase::Closing;
        cx.close();
    }

    /// An answer is all queued: on to the next request, or Blocked, or
    /// Closing.
    fn next(&mut self, cx: &mut Context<'_>, keep_alive: bool) {
        if !keep_alive || self.peer_done {
            self.close(cx);
        } else if cx.is_above_high_water() {
            self.stop_waiting(cx);
            self.phase = Phase::Blocked;
        } else {
            self.wait_for(cx, Wait::Request);
        }
    }

    /// Answers one request head: queues the head and its body (or the first
    /// regions of it), logs it, and moves to the next phase.
    fn answer(&mut self, cx: &mut Context<'_>, req: &Request) {
        let started = cx.now();
        let (head, body) = self.decide(req);
        // An HTTP/1.0 client learns where a listing ends from the close.
        let close_delimited = req.version == Version::Http10 && matches!(body, Body::Listing { .. });
        let keep_alive = req.keep_alive() && !close_delimited && !matches!(head.status, 400 | 408 | 431);
        let body = if req.method == Method::Head {
            Body::None
        } else {
            body
        };
        // Built only for a log that shows it: no allocation per request
        // otherwise.
        let line = if log_enabled!(Level::Info) {
            format!(
                "{} {} {}",
                method_name(&req.method),
                loggable(req.target.as_bytes()),
                version_name(req.version)
            )
        } else {
            String::new()
        };
        let exchange = Exchange {
            line,
            status: head.status,
            bytes: 0,
            started,
            keep_alive,
        };
        self.queue(cx, head, body, req.version, exchange);
    }

    /// Queues an answer and moves on: Sending while a file body has regions
    /// left, else the next phase.
    fn queue(
        &mut self,
        cx: &mut Context<'_>,
        head: Head,
        body: Body,
        version: Version,
        mut exchange: Exchange,
    ) {
        let mut bytes = serialize_head(&head, exchange.keep_alive, version);
        match body {
            Body::None => {
                cx.send_vec(bytes);
            }
            Body::Bytes(content) => {
                exchange.bytes = content.len() as u64;
                bytes.extend_from_slice(&content);
                cx.send_vec(bytes);
            }
            Body::File { file, offset, len } => {
                exchange.bytes = len;
                let mut body =
                    FileBody::new(Rc::new(file), offset, len, self.config.idle_timeout).with_head(bytes);
                match body.pump(cx) {
                    Progress::Queued => {}
                    Progress::Waiting => {
                        self.exchange = Some(exchange);
                        self.stop_waiting(cx);
                        self.phase = Phase::Sending(body);
                        return;
                    }
                    Progress::Failed => {
                        self.exchange = Some(exchange);
                        return self.close(cx);
                    }
                }
            }
            Body::Listing { names, url_path } => {
                let framing = match version {
                    Version::Http11 => Framing::Chunked,
                    Version::Http10 => Framing::Close,
                };
                let listing = Listing::new(names, &url_path, framing, bytes, self.config.idle_timeout);
                self.exchange = Some(exchange);
                self.stop_waiting(cx);
                self.phase = Phase::Listing(listing);
                return self.pump_listing(cx);
            }
        }
        let keep_alive = exchange.keep_alive;
        self.log(cx, &exchange, None);
        self.next(cx, keep_alive);
    }

    /// The access-log line of an answer; `cut` says why it did not finish.
    fn log(&self, cx: &Context<'_>, exchange: &Exchange, cut: Option<&CloseReason>) {
        let millis = cx.now().saturating_duration_since(exchange.started).as_millis();
        let Exchange {
            line, status, bytes, ..
        } = exchange;
        match cut {
            None => info!(
                "{} {} \"{line}\" {status} {bytes} {millis}ms",
                cx.key(),
                self.peer
            ),
            Some(reason) => info!(
                "{} {} \"{line}\" {status} {bytes} {millis}ms cut: {reason}",
                cx.key(),
                self.peer
            ),
        }
    }

    /// The answer to a request head: its status, fields and body.
    fn decide(&self, req: &Request) -> (Head, Body) {
        if let Method::Other(_) = req.method {
            return error(405, Some(("Allow", ALLOW)));
        }
        let Ok(path) = decode_path(&req.target) else {
            return error(400, None);
        };
        let wants_dir = path.ends_with('/');
        let name = match path.strip_prefix('/').unwrap_or(&path) {
            "" => ".",
            name => name,
        };
        let resolved = match self.config.root.resolve(name.as_bytes()) {
            Ok(resolved) => resolved,
            Err(Refusal::Unavailable(err)) => {
                // Not the name's fault: a 404 would tell a mirror the file
                // is gone.
                warn!(
                    "{} {:?}: cannot open, answering 503: {err}",
                    self.peer,
                    loggable(name.as_bytes())
                );
                return error(503, Some(("Retry-After", RETRY_AFTER)));
            }
            Err(refusal) => {
                debug!("{:?}: {refusal}", loggable(name.as_bytes()));
                return error(refusal_status(&refusal), None);
            }
        };
        match resolved.kind {
            Kind::Dir if !wants_dir => {
                let location = encode_path(&path) + "/";
                let (head, body) = error(301, None);
                (head.field("Location", location), body)
            }
            Kind::Dir => self.listing(req, &path, &resolved),
            Kind::File if wants_dir => error(404, None),
            Kind::File => file_answer(req, name, resolved),
        }
    }

    /// The listing of a directory: 200 with an HTML page, produced as it is
    /// sent; 403 if the directory cannot be read, 503 if it cannot be read
    /// now (out of descriptors). A `HEAD` reads nothing.
    fn listing(&self, req: &Request, path: &str, resolved: &Resolved) -> (Head, Body) {
        let mut head = Head::new(200, None).field("Content-Type", "text/html; charset=utf-8");
        if req.version == Version::Http11 {
            head = head.field("Transfer-Encoding", "chunked");
        }
        if req.method == Method::Head {
            return (head, Body::None);
        }
        match self.config.indexes.get(&resolved.path, &resolved.metadata) {
            Ok(names) => (
                head,
                Body::Listing {
                    names,
                    url_path: path.to_owned(),
                },
            ),
            Err(err) => match Refusal::from_open_error(err) {
                // Out of descriptors, say: the directory is still there.
                Refusal::Unavailable(err) => {
                    warn!(
                        "{} {}: cannot list now, answering 503: {err}",
                        self.peer,
                        resolved.path.display()
                    );
                    error(503, Some(("Retry-After", RETRY_AFTER)))
                }
                refusal => {
                    debug!("cannot list {}: {refusal}", resolved.path.display());
                    error(403, None)
                }
            },
        }
    }

    /// Renders the next chunk of the listing being sent; once the page is all
    /// queued, logs the answer and moves on.
    fn pump_listing(&mut self, cx: &mut Context<'_>) {
        let Phase::Listing(listing) = &mut self.phase else {
            return;
        };
        if listing.pump(cx, &self.config.root, &self.config.indexes) != Progress::Queued {
            // Waiting: a drain or the tick brings it back. Failed: the
            // connection is closing and on_close logs the cut answer.
            return;
        }
        let rendered = listing.rendered();
        if let Some(mut exchange) = self.exchange.take() {
            exchange.bytes = rendered;
            self.log(cx, &exchange, None);
            self.next(cx, exchange.keep_alive);
        }
    }

    /// A head that can never become a request: 400 or 431, then close.
    fn refuse(&mut self, cx: &mut Context<'_>, err: HeadError) {
        let status = match err {
            HeadError::TooLarge => 431,
            HeadError::Malformed => 400,
        };
        self.answer_and_close(cx, status, format!("- ({err})"));
    }

    /// An error answer outside any request (400, 431, 408), then close.
    fn answer_and_close(&mut self, cx: &mut Context<'_>, status: u16, line: String) {
        let (head, body) = error(status, None);
        let exchange = Exchange {
            line,
            status,
            bytes: 0,
            started: cx.now(),
            keep_alive: false,
        };
        self.queue(cx, head, body, Version::Http11, exchange);
    }
}

impl StreamHandler for HttpStream {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.peer = cx.peer_addr().map(ToString::to_string).unwrap_or_default();
        self.wait_for(cx, Wait::Head);
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let mut used = 0;
        loop {
            match self.phase {
                Phase::Closing => return data.len(),
                Phase::Sending(_) | Phase::Listing(_) | Phase::Blocked => {
                    // Requests behind the current answer wait in the socket.
                    if !self.paused {
                        self.paused = true;
                        cx.pause_reading();
                    }
                    return used;
                }
                Phase::Reading { .. } => {}
            }
            let rest = data.get(used..).unwrap_or_default();
            if rest.is_empty() {
                return used;
            }
            match parse_request(rest) {
                Ok(Parse::Partial) => {
                    self.wait_for(cx, Wait::Head);
                    return used;
                }
                Ok(Parse::Complete(req)) => {
                    used += req.head_len;
                    self.answer(cx, &req);
                }
                Err(err) => {
                    self.refuse(cx, err);
                    return data.len();
                }
            }
        }
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        self.peer_done = true;
        match self.phase {
            // The peer finished sending: close once the answer is out.
            Phase::Sending(_) | Phase::Listing(_) | Phase::Blocked | Phase::Closing => {}
            Phase::Reading { .. } => self.close(cx),
        }
    }

    fn on_drain(&mut self, cx: &mut Context<'_>) {
        match &mut self.phase {
            Phase::Sending(body) => match body.pump(cx) {
                Progress::Queued => {
                    if let Some(exchange) = self.exchange.take() {
                        self.log(cx, &exchange, None);
                        self.next(cx, exchange.keep_alive);
                    }
                }
                Progress::Waiting | Progress::Failed => {}
            },
            Phase::Listing(_) => self.pump_listing(cx),
            Phase::Blocked => self.next(cx, true),
            Phase::Reading { .. } | Phase::Closing => {}
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        match &mut self.phase {
            Phase::Reading { wait, timer: Some(t) } if *t == timer => {
                let wait = *wait;
                self.phase = Phase::Reading { wait, timer: None };
                match wait {
                    Wait::Request => {
                        debug!(
                            "{} {}: idle for {:?}, closing",
                            cx.key(),
                            self.peer,
                            self.config.idle_timeout
                        );
                        self.close(cx);
                    }
                    Wait::Head => {
                        let line = "- (request head timed out)".to_owned();
                        self.answer_and_close(cx, 408, line);
                    }
                }
            }
            Phase::Sending(body) => {
                if body.on_timer(cx, timer) {
                    debug!(
                        "{} {}: nothing drained for {:?}; the rest goes to the close's drain timeout",
                        cx.key(),
                        self.peer,
                        self.config.idle_timeout
                    );
                    self.phase = Phase::Closing;
                    cx.close();
                }
            }
            Phase::Listing(listing) => match listing.on_timer(timer) {
                Some(true) => self.pump_listing(cx),
                Some(false) => {
                    debug!(
                        "{} {}: nothing drained for {:?}; closing with the listing cut",
                        cx.key(),
                        self.peer,
                        self.config.idle_timeout
                    );
                    self.close(cx);
                }
                None => {}
            },
            Phase::Reading { .. } | Phase::Blocked | Phase::Closing => {}
        }
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        match &mut self.phase {
            // Let the body finish within the shutdown timeout.
            Phase::Sending(body) => {
                if body.queue_rest(cx) != Progress::Failed {
                    self.phase = Phase::Closing;
                    cx.close();
                }
            }
            // Let the page finish within the shutdown timeout, then close.
            Phase::Listing(_) => {
                if let Some(exchange) = &mut self.exchange {
                    exchange.keep_alive = false;
                }
            }
            Phase::Reading { .. } | Phase::Blocked => self.close(cx),
            Phase::Closing => {}
        }
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        if let Some(mut exchange) = self.exchange.take() {
            if let Phase::Listing(listing) = &self.phase {
                exchange.bytes = listing.rendered();
            }
            // A body handed to the core whole (shutdown, stall) ends well
            // only if the core flushed it.
            let complete = matches!(self.phase, Phase::Closing)
                && matches!(reason, CloseReason::Closed | CloseReason::PeerClosed);
            self.log(cx, &exchange, if complete { None } else { Some(reason) });
        } else {
            debug!("{} {}: closed: {reason}", cx.key(), self.peer);
        }
    }
}

/// The answer for a regular file: 200, 206, 304, 412 or 416, the
/// preconditions evaluated first ([`super::precondition`]).
fn file_answer(req: &Request, name: &str, resolved: Resolved) -> (Head, Body) {
    let len = resolved.metadata.len();
    let modified = resolved.metadata.modified().ok();
    let tag = etag(modified, len);
    let current = Validators {
        etag: &tag,
        modified,
        now: SystemTime::now(),
    };
    let use_range = match evaluate(&req.method, &Conditions::from_request(req), &current) {
        Verdict::PreconditionFailed => return error(412, None),
        Verdict::NotModified => {
            let head = validator_fields(Head::new(304, None), &tag, modified);
            return (head, Body::None);
        }
        Verdict::Send { use_range } => use_range,
    };
    let outcome = match req.range() {
        Some(range) if use_range => parse_range(range, len),
        _ => RangeOutcome::Full,
    };
    let (status, offset, span) = match outcome {
        RangeOutcome::Full => (200, 0, len),
        RangeOutcome::Partial { start, end_inclusive } => (206, start, end_inclusive - start + 1),
        RangeOutcome::Unsatisfiable => {
            let (head, body) = error(416, None);
            let head = head.field("Content-Range", super::range::content_range_unsatisfied(len));
            return (head, body);
        }
    };
    let head = Head::new(status, Some(span))
        .field("Content-Type", content_type(Path::new(name)))
        .field("Accept-Ranges", "bytes");
    let mut head = validator_fields(head, &tag, modified);
    if let Some(content_range) = outcome.content_range(len) {
        head = head.field("Content-Range", content_range);
    }
    let body = if span == 0 {
        Body::None
    } else {
        Body::File {
            file: resolved.file,
            offset,
            len: span,
        }
    };
    (head, body)
}

/// Adds a file's validators: `ETag` and, if known, `Last-Modified`.
fn validator_fields(head: Head, tag: &str, modified: Option<SystemTime>) -> Head {
    let mut head = head.field("ETag", tag);
    if let Some(modified) = modified {
        head.fields.push_str("Last-Modified: ");
        push_date(&mut head.fields, modified, &LAST_MODIFIED);
        head.fields.push_str("\r\n");
    }
    head
}

/// The status for a name that is not served: 404 or 403 only when the
/// refusal is about the name, 503 when it is not ([`Refusal::Unavailable`]).
fn refusal_status(refusal: &Refusal) -> u16 {
    match refusal {
        Refusal::NotFound(err) if err.kind() == io::ErrorKind::PermissionDenied => 403,
        Refusal::NotFound(_) | Refusal::Empty => 404,
        Refusal::Unavailable(_) => 503,
        Refusal::NotUtf8
        | Refusal::Nul
        | Refusal::Absolute
        | Refusal::Parent
        | Refusal::OutsideRoot
        | Refusal::IsDirectory
        | Refusal::NotServable => 403,
    }
}

/// An error (or redirect) answer with a short text body.
fn error(status: u16, field: Option<(&str, &str)>) -> (Head, Body) {
    let text = format!("{status} {}\n", reason(status)).into_bytes();
    let mut head =
        Head::new(status, Some(text.len() as u64)).field("Content-Type", "text/plain; charset=utf-8");
    if let Some((name, value)) = field {
        head = head.field(name, value);
    }
    (head, Body::Bytes(text))
}

/// The bytes of a response head.
fn serialize_head(head: &Head, keep_alive: bool, version: Version) -> Vec<u8> {
    let mut out = String::with_capacity(192 + head.fields.len());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nServer: evloop\r\nDate: ",
        head.status,
        reason(head.status)
    );
    push_date_now(&mut out);
    out.push_str("\r\n");
    if let Some(length) = head.length {
        let _ = write!(out, "Content-Length: {length}\r\n");
    }
    out.push_str(&head.fields);
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    } else if version == Version::Http10 {
        out.push_str("Connection: keep-alive\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// One formatted HTTP date and the second it is for.
type DateCache = RefCell<(u64, String)>;

thread_local! {
    /// The `Date` of answers made this second (the reactor runs on one
    /// thread; so does each cache).
    static NOW: DateCache = const { RefCell::new((u64::MAX, String::new())) };
    /// The last `Last-Modified` value made: many answers in a row are for
    /// the same file, or files written in the same second.
    static LAST_MODIFIED: DateCache = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends the `Date` value for now, formatted once per second.
fn push_date_now(out: &mut String) {
    push_date(out, SystemTime::now(), &NOW);
}

/// Appends `time` as an HTTP date, formatting it only when `cache` holds
/// another second.
fn push_date(out: &mut String, time: SystemTime, cache: &'static std::thread::LocalKey<DateCache>) {
    let Ok(since) = time.duration_since(UNIX_EPOCH) else {
        out.push_str(&format_http_date(time)); // before 1970: not cached
        return;
    };
    let secs = since.as_secs();
    cache.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            cache.0 = secs;
            cache.1.clear();
            cache.1.push_str(&format_http_date(time));
        }
        out.push_str(&cache.1);
    });
}

/// The reason phrase of a status this server sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A decoded path written back as a URL path: each segment percent-encoded.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(percent_encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// A time as whole seconds since the epoch (HTTP dates have no fractions);
/// times before 1970 count as 0.
fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Other(name) => name,
    }
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_with_an_empty_line_and_say_how_the_connection_goes() {
        let head = Head::new(200, Some(5)).field("Content-Type", "text/plain");
        let kept = String::from_utf8(serialize_head(&head, true, Version::Http11)).unwrap();
        assert!(kept.starts_with("HTTP/1.1 200 OK\r\n"), "{kept}");
        assert!(kept.contains("\r\nContent-Length: 5\r\n"), "{kept}");
        assert!(kept.ends_with("Content-Type: text/plain\r\n\r\n"), "{kept}");
        let old = String::from_utf8(serialize_head(&head, true, Version::Http10)).unwrap();
        assert!(old.ends_with("Connection: keep-alive\r\n\r\n"), "{old}");
        let closing = String::from_utf8(serialize_head(&head, false, Version::Http11)).unwrap();
        assert!(closing.ends_with("Connection: close\r\n\r\n"), "{closing}");
        let not_modified =
            String::from_utf8(serialize_head(&Head::new(304, None), true, Version::Http11)).unwrap();
        assert!(!not_modified.contains("Content-Length"), "{not_modified}");
    }

    #[test]
    fn redirects_encode_every_segment() {
        assert_eq!(encode_path("/a b/<c>"), "/a%20b/%3Cc%3E");
        assert_eq!(encode_path("/"), "/");
    }

    #[test]
    fn refusals_are_403_or_404() {
        let missing = Refusal::NotFound(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(refusal_status(&missing), 404);
        let denied = Refusal::NotFound(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(refusal_status(&denied), 403);
        assert_eq!(refusal_status(&Refusal::Parent), 403);
        assert_eq!(refusal_status(&Refusal::OutsideRoot), 403);
        let emfile = Refusal::Unavailable(io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(refusal_status(&emfile), 503);
    }
}
