//! The download mode: how fast a file server sends one file, over and over.
//!
//! ```text
//! loadgen download --tcp ADDR --name NAME --conns K --expect-bytes B --duration SECS
//!                  [--proto plain|http] [--warmup SECS] [--pid PID[,PID...]] [--timeout SECS]
//! ```
//!
//! # How it works
//!
//! Each of the `--conns` slots downloads `--name` again and again, on a new
//! connection each time, until the run ends: when a download is over (and
//! checked), the handler of its connection opens the next one from its
//! `on_close`. A slot whose download failed waits for the clock's next tick
//! ([`TICK`]) before it tries again, so a server that refuses connections
//! is not hammered in a tight loop.
//!
//! - `plain`, the file protocol of the `file_server` example: the client
//!   sends `NAME\n`, the server sends the file and closes. The body is
//!   everything up to the end of the stream; it must be exactly
//!   `--expect-bytes` long. The server's answer to a name it does not
//!   serve, the 7 bytes `no_file`, is told apart from a short file.
//! - `http`: the client sends `GET /NAME HTTP/1.1` with `Connection:
//!   close`. The status line must say 200 and the head must have a
//!   `Content-Length` of `--expect-bytes`; the body is then read to that
//!   length, and to the end of the stream, which must come right after.
//!   `NAME` goes into the request line as it is: a name that needs
//!   percent-encoding must be given encoded.
//!
//! # Keeping the client cheap
//!
//! On loopback a file server can send several gigabytes per second, and
//! the client must keep up on one core, or it measures itself. So the body
//! is never copied or kept: `on_data` looks at the length of each slice
//! evloop hands it, adds it to the counts and consumes it all, so evloop
//! keeps nothing either (only the HTTP head, a few hundred bytes, is
//! copied, to be parsed once it is whole). What a download costs the
//! client is almost all the kernel's: copying the bytes out of the
//! socket, and on loopback part of the sender's TCP work, run on the
//! reader's core when its window updates let the sender go on. This
//! program's own code is under 1 % of a profile. The one setting that
//! matters is how much each read takes: evloop reads every socket into
//! one buffer, 64 KiB by default, and this mode makes it 1 MiB
//! (`--read-buffer`, [`Reactor::set_read_buffer`]). Each read then drains
//! more of the socket and the kernel sends fewer window updates: with
//! eight downloads from evloop's file server, 64 KiB reads kept the
//! client's core busy at about 1.6 GB/s while the server idled at 0.16 of
//! its core; 1 MiB reads took the same run to about 2.9 GB/s, bound by
//! the server. A larger read budget ([`Reactor::set_read_budget`]) made no
//! difference.
//!
//! # What is counted
//!
//! After `--warmup` seconds the measured window opens, for `--duration`
//! seconds. Every body byte that arrives inside the window counts in
//! `bytes`, whether or not its download finishes in the window (a 1 GiB
//! file may take longer than the window). A download counts in `downloads`
//! when it is whole and checked inside the window; its latency, from the
//! moment its connect was started to its last byte, goes into a histogram.
//! A download that receives nothing for `--timeout` seconds fails.
//! Downloads still under way when the window closes are left unfinished,
//! and are no error.
//!
//! # Output
//!
//! One JSON line: `mode` (`download`), `proto`, `addr`, `name`, `conns`,
//! `expect_bytes`, `seconds` (the window), `bytes`, `gb_s` (10^9 bytes per
//! second), `downloads`, `downloads_per_s`, `p50_ms`, `p99_ms`, `max_ms`,
//! `errors` (failed downloads of any kind), `wrong_length` (of those, the
//! ones whose body was too short or too long), and for windows of half a
//! second or more `client_cpu`, `server_cpu` (with `--pid`), `other_cpu`
//! (shares of one core) and `server_us_per_download` (with `--pid`: the
//! server's CPU time in the window per finished download). The exit status
//! is 1 if any download failed, or if no byte came in the window.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use evloop::{CloseReason, Context, Interest, Reactor, StreamHandler, TimerId};

use crate::driver::{Driver, Script};
use crate::{common, raise_nofile, CpuMeter, CpuShares, Histogram, Json, Shown, MIN_CPU_WINDOW};

/// How often the clock restarts the slots whose download failed.
const TICK: Duration = Duration::from_millis(10);

/// The plain protocol's answer to a name the server does not serve.
const NO_FILE: &[u8] = b"no_file";

/// The longest HTTP response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// The most connections at once.
const MAX_SLOTS: usize = 100_000;

/// The download mode's command line.
#[derive(Args)]
pub(crate) struct DownloadFlags {
    /// File server's TCP address (plain protocol or HTTP, see --proto)
    #[arg(long, value_name = "ADDR")]
    tcp: SocketAddr,
    /// The file to download, as the server names it (for HTTP, the path
    /// after the leading /)
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Downloads at once, each on its own connection
    #[arg(long, value_name = "K")]
    conns: usize,
    /// The file's length in bytes: every download must be exactly that long
    #[arg(long, value_name = "B")]
    expect_bytes: u64,
    /// Seconds of measuring
    #[arg(long, value_name = "SECS", value_parser = common::seconds)]
    duration: Duration,
    /// The protocol
    #[arg(long, value_enum, default_value_t = Proto::Plain)]
    proto: Proto,
    /// Seconds of downloading before measuring starts
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = common::seconds)]
    warmup: Duration,
    /// The server's process ids, to report their CPU use over the window
    /// (summed)
    #[arg(long, value_name = "PID[,PID...]", value_delimiter = ',')]
    pid: Vec<u32>,
    /// Seconds a download may go without receiving a byte before it fails
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = common::seconds)]
    timeout: Duration,
    /// Bytes one read may take (at least 65536)
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    read_buffer: usize,
    #[command(flatten)]
    tls: crate::tls::TlsFlags,
}

/// How a file is asked for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub(crate) enum Proto {
    /// `NAME\n`, answered by the file and a close
    Plain,
    /// `GET /NAME HTTP/1.1` with `Connection: close`
    Http,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Plain => "plain",
            Proto::Http => "http",
        }
    }
}

/// The state of the run, shared by the clock and every download.
struct DlRun {
    addr: SocketAddr,
    /// TLS (`--tls`).
    tls: Option<crate::tls::Tls>,
    proto: Proto,
    /// The request every download sends.
    request: Rc<[u8]>,
    expect: u64,
    stall: Duration,
    /// Inside the measured window.
    measuring: bool,
    /// The window has closed: nothing more is counted or started.
    over: bool,
    window_start: Option<Instant>,
    window_end: Option<Instant>,
    /// Body bytes received inside the window.
    bytes: u64,
    /// Downloads finished and checked inside the window, and their
    /// latencies in nanoseconds.
    downloads: u64,
    hist: Histogram,
    errors: u64,
    wrong_length: u64,
    shown: Shown,
    /// Slots whose last download failed: restarted at the next tick.
    restart: Vec<usize>,
    cpu: Option<CpuMeter>,
    shares: Option<CpuShares>,
}

impl DlRun {
    /// Counts a failed download (unless the window has closed) and prints
    /// the first few.
    fn error(&mut self, what: fmt::Arguments<'_>) {
        if self.over {
            return;
        }
        self.errors += 1;
        self.shown.print(what);
    }

    /// Starts a download for `slot` on a new connection.
    fn start(&mut self, shared: &Rc<RefCell<DlRun>>, cx: &mut Context<'_>, slot: usize) {
        let download = Download {
            slot,
            run: Rc::clone(shared),
            started: Instant::now(),
            head: (self.proto == Proto::Http).then(Vec::new),
            body: 0,
            expect: self.expect,
            prefix: [0; NO_FILE.len()],
            last_byte: None,
            outcome: Outcome::Pending,
            stall_timer: None,
            progress: cx.now(),
        };
        if let Err(err) = crate::tls::connect(cx, self.addr, self.tls.as_ref(), download) {
            let addr = self.addr;
            self.error(format_args!("slot {slot}: cannot connect to {addr}: {err}"));
            self.restart.push(slot);
        }
    }

    /// The window opens: counting starts, and the CPU meter.
    fn open_window(&mut self, now: Instant, pids: &[u32]) {
        self.measuring = true;
        self.window_start = Some(now);
        self.cpu = Some(CpuMeter::start(pids));
    }

    /// The window closes: the run is over.
    fn close_window(&mut self, now: Instant) {
        self.measuring = false;
        self.over = true;
        self.window_end = Some(now);
        self.shares = self.cpu.take().map(CpuMeter::finish);
    }

    fn seconds(&self) -> f64 {
        match (self.window_start, self.window_end) {
            (Some(start), Some(end)) => end.saturating_duration_since(start).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// How a download ended, as far as it has.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Done,
    Failed,
}

/// One download: one connection, one request, one body.
struct Download {
    slot: usize,
    run: Rc<RefCell<DlRun>>,
    /// When its connect was started.
    started: Instant,
    /// HTTP: the response head so far; `None` once it is parsed (or for
    /// the plain protocol, which has none).
    head: Option<Vec<u8>>,
    /// Body bytes received.
    body: u64,
    expect: u64,
    /// The first bytes of the body: a plain `no_file` is told by them.
    prefix: [u8; NO_FILE.len()],
    /// When the body reached its expected length.
    last_byte: Option<Instant>,
    outcome: Outcome,
    stall_timer: Option<TimerId>,
    /// When a byte last came (the loop's time, which costs nothing to read).
    progress: Instant,
}

impl Download {
    /// Fails this download (once): counted, and the connection reset.
    fn fail(&mut self, cx: &mut Context<'_>, run: &mut DlRun, wrong_length: bool, what: fmt::Arguments<'_>) {
        if self.outcome != Outcome::Pending {
            return;
        }
        self.outcome = Outcome::Failed;
        if wrong_length && !run.over {
            run.wrong_length += 1;
        }
        run.error(format_args!("slot {}: {what}", self.slot));
        cx.abort();
    }

    /// Takes the part of `data` that belongs to the HTTP head, if the head
    /// is not whole yet; returns what is left of `data` (body bytes), or
    /// `None` if nothing is. Checks the head once it is whole.
    fn take_head<'d>(&mut self, cx: &mut Context<'_>, run: &mut DlRun, data: &'d [u8]) -> Option<&'d [u8]> {
        let Some(head) = self.head.as_mut() else {
            return Some(data);
        };
        let before = head.len();
        let room = MAX_HEAD.saturating_sub(before);
        head.extend_from_slice(&data[..data.len().min(room)]);
        // The blank line may straddle two reads: search from a little
        // before the new bytes.
        let from = before.saturating_sub(3);
        let Some(at) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
            if head.len() >= MAX_HEAD {
                let what = format!("a response head over {MAX_HEAD} bytes");
                self.fail(cx, run, false, format_args!("{what}"));
            }
            return None;
        };
        let end = from + at + 4;
        let checked = check_head(&head[..end], self.expect);
        self.head = None;
        if let Err(what) = checked {
            let wrong_length = what.starts_with("Content-Length");
            self.fail(cx, run, wrong_length, format_args!("{what}"));
            return None;
        }
        Some(&data[end - before..])
    }
}

impl StreamHandler for Download {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let request = Rc::clone(&self.run.borrow().request);
        self.progress = cx.now();
        self.stall_timer = cx.set_timer(self.run.borrow().stall);
        if !cx.send(&request) {
            let run = Rc::clone(&self.run);
            self.fail(
                cx,
                &mut run.borrow_mut(),
                false,
                format_args!("the request was refused"),
            );
        }
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        if self.outcome != Outcome::Pending {
            return data.len();
        }
        self.progress = cx.now();
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        let Some(body) = self.take_head(cx, &mut run, data) else {
            return data.len();
        };
        let n = body.len() as u64;
        if self.body + n > self.expect {
            let what = format!("more than the {} bytes expected", self.expect);
            self.fail(cx, &mut run, true, format_args!("{what}"));
            return data.len();
        }
        if self.body < self.prefix.len() as u64 {
            let at = self.body as usize;
            let take = body.len().min(self.prefix.len() - at);
            self.prefix[at..at + take].copy_from_slice(&body[..take]);
        }
        self.body += n;
        if run.measuring {
            run.bytes += n;
        }
        if self.body == self.expect && n > 0 {
            self.last_byte = Some(Instant::now());
        }
        data.len()
    }

    /// The server closed its side: the download is over; check it.
    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        if self.outcome != Outcome::Pending {
            return cx.close();
        }
        if self.head.is_some() {
            return self.fail(
                cx,
                &mut run,
                false,
                format_args!("closed before the end of the response head"),
            );
        }
        if self.body != self.expect {
            let no_file = self.body == NO_FILE.len() as u64 && self.prefix == *NO_FILE;
            if no_file {
                return self.fail(cx, &mut run, false, format_args!("the server answered no_file"));
            }
            let what = format!("{} bytes instead of {}", self.body, self.expect);
            return self.fail(cx, &mut run, true, format_args!("{what}"));
        }
        self.outcome = Outcome::Done;
        if run.measuring {
            run.downloads += 1;
            let last = self.last_byte.unwrap_or_else(Instant::now);
            let latency = last.saturating_duration_since(self.started);
            run.hist.record(latency.as_nanos().min(u64::MAX as u128) as u64);
        }
        cx.close();
    }

    /// The stall watch: fails the download if nothing came for `--timeout`.
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if Some(timer) != self.stall_timer || self.outcome != Outcome::Pending {
            return;
        }
        let run = Rc::clone(&self.run);
        let mut run = run.borrow_mut();
        let quiet = cx.now().saturating_duration_since(self.progress);
        if quiet >= run.stall {
            let what = format!(
                "no byte for {:.1} s ({} bytes so far)",
                quiet.as_secs_f64(),
                self.body
            );
            self.fail(cx, &mut run, false, format_args!("{what}"));
        } else {
            // Bytes came meanwhile: look again when they would be stale.
            self.stall_timer = cx.set_timer(run.stall - quiet);
        }
    }

    /// The connection is gone: the slot's next download starts, now after
    /// a good one, at the next tick after a failure.
    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let shared = Rc::clone(&self.run);
        let mut run = shared.borrow_mut();
        if run.over {
            return;
        }
        if self.outcome == Outcome::Pending {
            self.outcome = Outcome::Failed;
            let addr = run.addr;
            match reason {
                CloseReason::ConnectFailed(err) => {
                    run.error(format_args!(
                        "slot {}: cannot connect to {addr}: {err}",
                        self.slot
                    ));
                }
                reason => run.error(format_args!("slot {}: {reason}", self.slot)),
            }
        }
        match self.outcome {
            Outcome::Done => run.start(&shared, cx, self.slot),
            _ => run.restart.push(self.slot),
        }
    }
}

/// Checks a whole response head: status 200 and a `Content-Length` of
/// `expect`. A message for what is wrong; one about the length starts with
/// `Content-Length`.
fn check_head(head: &[u8], expect: u64) -> Result<(), String> {
    let text = std::str::from_utf8(head).map_err(|_| "a response head that is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut words = status_line.split(' ');
    let (version, status) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 response: {status_line:?}"));
    }
    if status != "200" {
        return Err(format!("status {status_line:?}"));
    }
    let mut length = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("a header line without a colon: {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = value
                .parse::<u64>()
                .map_err(|_| format!("Content-Length {value:?} is not a number"))?;
            if length.is_some_and(|l| l != parsed) {
                return Err("Content-Length given twice, differently".to_string());
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!("Transfer-Encoding {value:?} instead of a Content-Length"));
        }
    }
    match length {
        Some(l) if l == expect => Ok(()),
        Some(l) => Err(format!("Content-Length {l} instead of {expect}")),
        None => Err("Content-Length missing".to_string()),
    }
}

/// The download mode's clock: starts the slots, opens and closes the
/// window, restarts failed slots.
struct DownloadScript {
    run: Rc<RefCell<DlRun>>,
    conns: usize,
    pids: Vec<u32>,
    warmup: Duration,
    duration: Duration,
    warm_end: Option<TimerId>,
    window_end: Option<TimerId>,
    tick: Option<TimerId>,
}

impl Script for DownloadScript {
    fn start(&mut self, cx: &mut Context<'_>) {
        self.tick = cx.set_repeating(TICK);
        self.window_end = cx.set_timer(self.warmup + self.duration);
        if !self.warmup.is_zero() {
            self.warm_end = cx.set_timer(self.warmup);
        }
        let shared = Rc::clone(&self.run);
        let mut run = shared.borrow_mut();
        if self.tick.is_none()
            || self.window_end.is_none()
            || (!self.warmup.is_zero() && self.warm_end.is_none())
        {
            eprintln!("loadgen: the timer table is full");
            run.error(format_args!("no timers"));
            run.over = true;
            return cx.stop();
        }
        if self.warmup.is_zero() {
            run.open_window(Instant::now(), &self.pids);
        }
        for slot in 0..self.conns {
            run.start(&shared, cx, slot);
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let shared = Rc::clone(&self.run);
        let mut run = shared.borrow_mut();
        if Some(timer) == self.warm_end {
            run.open_window(Instant::now(), &self.pids);
        } else if Some(timer) == self.window_end {
            run.close_window(Instant::now());
            cx.stop();
        } else if Some(timer) == self.tick {
            for slot in std::mem::take(&mut run.restart) {
                run.start(&shared, cx, slot);
            }
        }
    }
}

/// Runs the download mode; the exit status says whether every download
/// that ended was whole.
pub(crate) fn run(flags: DownloadFlags) -> ExitCode {
    if flags.conns == 0 || flags.conns > MAX_SLOTS {
        common::usage_error(&format!("--conns must be 1 to {MAX_SLOTS}"));
    }
    if flags.duration.is_zero() {
        common::usage_error("--duration must be above 0");
    }
    if flags.timeout.is_zero() {
        common::usage_error("--timeout must be above 0");
    }
    if flags.name.is_empty() || flags.name.contains(['\n', '\r', ' ']) {
        common::usage_error("--name must be a name without spaces or line breaks");
    }
    // A download's connection, and the one that replaces it while the
    // old one closes.
    raise_nofile(2 * flags.conns as u64 + 64);
    let request = match flags.proto {
        Proto::Plain => format!("{}\n", flags.name),
        Proto::Http => format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            flags.name.trim_start_matches('/')
        ),
    };
    let run = Rc::new(RefCell::new(DlRun {
        addr: flags.tcp,
        tls: flags.tls.for_addr(&flags.tcp),
        proto: flags.proto,
        request: request.into_bytes().into(),
        expect: flags.expect_bytes,
        stall: flags.timeout,
        measuring: false,
        over: false,
        window_start: None,
        window_end: None,
        bytes: 0,
        downloads: 0,
        hist: Histogram::new(),
        errors: 0,
        wrong_length: 0,
        shown: Shown::default(),
        restart: Vec::new(),
        cpu: None,
        shares: None,
    }));

    let mut reactor = Reactor::new().unwrap_or_else(|err| common::fail(&err));
    reactor.set_read_buffer(flags.read_buffer);
    let script = DownloadScript {
        run: Rc::clone(&run),
        conns: flags.conns,
        pids: flags.pid,
        warmup: flags.warmup,
        duration: flags.duration,
        warm_end: None,
        window_end: None,
        tick: None,
    };
    let driver = Driver::new(script).unwrap_or_else(|err| common::fail(&err));
    if let Err(err) = reactor.register(driver, Interest::WRITABLE) {
        common::fail(&err);
    }
    if let Err(err) = reactor.run() {
        common::fail(&err);
    }

    let run = run.borrow();
    let secs = run.seconds();
    let per_sec = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut j = Json::new("download");
    j.s("proto", flags.proto.name());
    j.s("addr", &flags.tcp.to_string());
    j.s("name", &flags.name);
    j.u("conns", flags.conns as u64);
    j.u("expect_bytes", flags.expect_bytes);
    j.u("read_buffer", flags.read_buffer.max(64 * 1024) as u64);
    j.f("seconds", secs, 3);
    j.u("bytes", run.bytes);
    j.f("gb_s", per_sec(run.bytes as f64) / 1e9, 3);
    j.u("downloads", run.downloads);
    j.f("downloads_per_s", per_sec(run.downloads as f64), 1);
    j.f("p50_ms", ms(run.hist.quantile(0.50)), 3);
    j.f("p99_ms", ms(run.hist.quantile(0.99)), 3);
    j.f("max_ms", ms(run.hist.max), 3);
    j.u("errors", run.errors);
    j.u("wrong_length", run.wrong_length);
    if let Some(cpu) = run.shares.as_ref().filter(|_| secs >= MIN_CPU_WINDOW) {
        cpu.write(&mut j, "server_us_per_download", run.downloads);
    }
    let _ = writeln!(io::stdout().lock(), "{}", j.finish());

    let mut ok = true;
    if run.errors > 0 {
        eprintln!("loadgen: {} download(s) failed", run.errors);
        ok = false;
    }
    if run.bytes == 0 {
        eprintln!("loadgen: no byte came in the measured window");
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
