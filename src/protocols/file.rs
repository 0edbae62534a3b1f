//! File streaming over plain TCP, the protocol of the classic Python
//! file-download clients: the client sends a file name, the server answers
//! with the file's bytes and closes; a name it will not serve gets the 7
//! bytes [`NO_FILE`]. [`FileServer`] is the factory a listener takes;
//! [`FileStream`] serves one connection.
//!
//! Each connection is one `Download` (its table of transitions is beside it):
//! `AwaitingName`, then `Streaming` while file regions remain to be queued,
//! then `Finishing` while the core flushes and closes.
//!
//! Always true:
//! - the first chunk of input decides the name: up to its first `\n` if it
//!   has one, else the whole chunk (a client that sends a bare name and then
//!   waits); a trailing `\r` is not part of it; everything after it, and
//!   everything sent later, is consumed and ignored;
//! - names go through [`Root::resolve_file`], the confinement HTTP shares;
//!   only regular files inside the root are served, anything else (and a
//!   name over [`MAX_NAME`] bytes) gets exactly [`NO_FILE`], then a close;
//! - [`NO_FILE`] means the name is missing or not allowed, nothing else: a
//!   file that cannot be opened for another reason (out of descriptors, an
//!   IO error: [`Refusal::Unavailable`]) gets a reset, logged at warn level,
//!   so the client sees an error rather than a missing or an empty file;
//! - memory per download is constant, whatever the file's size: the file
//!   goes out as a [`FileBody`], regions that `sendfile(2)` sends from the
//!   page cache, the same code HTTP uses;
//! - the file's size is read once, from the open descriptor; if the file
//!   shrinks meanwhile, the connection fails rather than pad (the core then
//!   closes the socket with a FIN, which this protocol cannot tell from the
//!   end of a whole file; HTTP's `Content-Length` can);
//! - a slow reader holds back only its own queue, and a stalled one is cut:
//!   a connection that sends no name is closed after the idle timeout; a
//!   download that drains nothing for the idle timeout is closed by the
//!   body's stall watchdog (see [`crate::protocols::body`]), while a reader
//!   that is slow but moving still finishes;
//! - a graceful shutdown lets a download finish within the shutdown
//!   timeout (the rest of the file is queued at once); past the deadline the
//!   core resets it, so the client cannot mistake a cut file for a whole one.
//!   A connection still waiting for its name is reset at once, since a
//!   clean close would read as an empty file.

use std::io;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::protocols::body::{FileBody, Progress};
use crate::protocols::path::{Refusal, Root};
use crate::{Addr, CloseReason, Context, StreamFactory, StreamHandler, TimerId};

/// The answer to a name that is not served.
pub const NO_FILE: &[u8] = b"no_file";

/// Longest name accepted, in bytes; a longer one gets [`NO_FILE`].
pub const MAX_NAME: usize = 1024;

/// How long a connection may stay silent before sending its name, unless
/// set with [`FileServer::with_idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest name shown in a log line; a peer decides what the name is.
const LOGGED_NAME: usize = 200;

/// Serves the files under a root with the plain protocol: one
/// [`FileStream`] per connection.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use evloop::{Reactor, protocols::file::FileServer};
/// let mut reactor = Reactor::new()?;
/// reactor.listen_tcp("127.0.0.1:7200".parse()?, FileServer::new(".")?)?;
/// reactor.run()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FileServer {
    root: Rc<Root>,
    idle_timeout: Duration,
}

impl FileServer {
    /// Serves the directory `root` (resolved to its real path now, once),
    /// with [`DEFAULT_IDLE_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// `root` does not exist or is not a directory.
    pub fn new(root: impl AsRef<Path>) -> io::Result<FileServer> {
        Ok(FileServer {
            root: Rc::new(Root::new(root)?),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        })
    }

    /// How long a connection may stay silent before sending its name, and
    /// how long a download's queue may go without draining before the rest
    /// is handed to the core's drain timeout.
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> FileServer {
        self.idle_timeout = idle_timeout;
        self
    }

    /// The served directory.
    pub fn root(&self) -> &Root {
        &self.root
    }
}

impl StreamFactory for FileServer {
    fn new_handler(&mut self, _peer: &Addr) -> Box<dyn StreamHandler> {
        Box::new(FileStream::new(Rc::clone(&self.root), self.idle_timeout))
    }
}

/// Where one download stands.
///
/// ```text
/// AwaitingName --name, regular file in the root--> Streaming  (body pumped up to the high watermark)
/// AwaitingName --name refused or too long--------> Finishing  (sent "no_file", closing)
/// AwaitingName --open failed (not the name)------> Finishing  (reset, no "no_file")
/// AwaitingName --idle timeout, FIN---------------> Finishing  (closing, nothing sent)
/// AwaitingName --shutdown------------------------> Finishing  (reset: a FIN would read as an empty file)
/// Streaming    --drain, more to queue------------> Streaming  (body pumped again)
/// Streaming    --last region queued--------------> Finishing  (close after flush)
/// Streaming    --stall watchdog, shutdown--------> Finishing  (rest queued as one region, closing)
/// Finishing    --flushed / drain_timeout / error-> (core closes; on_close logs the outcome)
/// ```
#[derive(Debug)]
enum Download {
    /// Connected; waiting for the name. In: `on_open`. Out: the first
    /// input, the `idle` timer, the peer's FIN or a shutdown.
    AwaitingName { idle: Option<TimerId> },
    /// Queuing the file one region at a time.
    Streaming(FileBody),
    /// Everything is queued (the file, `no_file`, or nothing) and the
    /// connection is closing once flushed. Input is ignored.
    Finishing,
}

/// What the server answered, for the log line.
#[derive(Debug)]
enum Answer {
    /// The file, this many bytes.
    File { size: u64 },
    /// `no_file`.
    NoFile,
    /// A reset: the file could not be opened for a reason other than its
    /// name.
    Unavailable,
}

/// One request: the name, the answer, when it came.
#[derive(Debug)]
struct Request {
    name: String,
    answer: Answer,
    started: Instant,
}

/// One connection of the plain file protocol.
#[derive(Debug)]
pub struct FileStream {
    root: Rc<Root>,
    idle_timeout: Duration,
    state: Download,
    /// The peer, for log lines (kept: `on_close` can no longer ask).
    peer: String,
    /// Set once the name has arrived.
    request: Option<Request>,
}

impl FileStream {
    /// A connection serving files under `root`; `idle_timeout` as in
    /// [`FileServer::with_idle_timeout`].
    pub fn new(root: Rc<Root>, idle_timeout: Duration) -> FileStream {
        FileStream {
            root,
            idle_timeout,
            state: Download::AwaitingName { idle: None },
            peer: String::new(),
            request: None,
        }
    }

    /// AwaitingName -> Streaming or Finishing: the name has arrived.
    fn start(&mut self, cx: &mut Context<'_>, name: &[u8]) {
        if let Download::AwaitingName { idle: Some(idle) } = self.state {
            cx.cancel_timer(idle);
        }
        let mut request = Request {
            name: loggable(name),
            answer: Answer::NoFile,
            started: cx.now(),
        };
        let resolved = if name.len() > MAX_NAME {
            Err(format!("name of {} bytes, over {MAX_NAME}", name.len()))
        } else {
            match self.root.resolve_file(name) {
                // Not the name's fault: `no_file` would be a lie.
                Err(Refusal::Unavailable(err)) => return self.turn_away(cx, request, &err),
                resolved => resolved.map_err(|refusal| refusal.to_string()),
            }
        };
        match resolved {
            Ok(resolved) => {
                let size = resolved.metadata.len();
                debug!(
                    "{} {}: sending {:?}, {size} bytes",
                    cx.key(),
                    self.peer,
                    request.name
                );
                request.answer = Answer::File { size };
                self.request = Some(request);
                let body = FileBody::new(Rc::new(resolved.file), 0, size, self.idle_timeout);
                self.state = Download::Streaming(body);
                self.pump(cx);
            }
            Err(why) => {
                info!("{} {} {:?}: no_file ({why})", cx.key(), self.peer, request.name);
                self.request = Some(request);
                cx.send(NO_FILE);
                self.finish(cx);
            }
        }
    }

    /// AwaitingName -> Finishing with a reset: the file could not be opened
    /// for a reason that says nothing about the name (out of descriptors,
    /// an IO error). A clean close would read as an empty file and
    /// `no_file` as a missing one; a reset reads as an error.
    fn turn_away(&mut self, cx: &mut Context<'_>, mut request: Request, err: &io::Error) {
        warn!(
            "{} {} {:?}: cannot open, resetting: {err}",
            cx.key(),
            self.peer,
            request.name
        );
        request.answer = Answer::Unavailable;
        self.request = Some(request);
        self.state = Download::Finishing;
        cx.abort();
    }

    /// Streaming: queues regions up to the high watermark (a drain brings
    /// us back); once the file is all queued -> Finishing.
    fn pump(&mut self, cx: &mut Context<'_>) {
        if let Download::Streaming(body) = &mut self.state {
            match body.pump(cx) {
                Progress::Queued => self.finish(cx),
                Progress::Waiting | Progress::Failed => {} // on_close says why if failed
            }
        }
    }

    /// Streaming -> Finishing at once: the rest of the file goes into the
    /// queue as one region (no memory), and the core's close takes over,
    /// with its drain timeout counting every byte of progress.
    fn queue_rest_and_close(&mut self, cx: &mut Context<'_>) {
        if let Download::Streaming(body) = &mut self.state {
            if body.queue_rest(cx) == Progress::Failed {
                return;
            }
        }
        self.finish(cx);
    }

    /// -> Finishing: close once everything queued is flushed.
    fn finish(&mut self, cx: &mut Context<'_>) {
        self.state = Download::Finishing;
        cx.close();
    }
}

impl StreamHandler for FileStream {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.peer = cx.peer_addr().map(ToString::to_string).unwrap_or_default();
        self.state = Download::AwaitingName {
            idle: cx.set_timer(self.idle_timeout),
        };
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        match self.state {
            Download::AwaitingName { .. } => self.start(cx, name_in(data)),
            // Bytes after the name mean nothing in this protocol.
            Download::Streaming(_) | Download::Finishing => {}
        }
        data.len()
    }

    fn on_drain(&mut self, cx: &mut Context<'_>) {
        self.pump(cx);
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        match &mut self.state {
            Download::AwaitingName { idle } if *idle == Some(timer) => {
                debug!(
                    "{} {}: no name within {:?}, closing",
                    cx.key(),
                    self.peer,
                    self.idle_timeout
                );
                self.finish(cx);
            }
            Download::Streaming(body) => {
                if body.on_timer(cx, timer) {
                    debug!(
                        "{} {}: nothing drained for {:?}; the rest goes to the close's drain timeout",
                        cx.key(),
                        self.peer,
                        self.idle_timeout
                    );
                    self.finish(cx);
                }
            }
            Download::AwaitingName { .. } | Download::Finishing => {}
        }
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        match self.state {
            // A client that half-closes after its name still gets the file.
            Download::Streaming(_) | Download::Finishing => {}
            Download::AwaitingName { .. } => self.finish(cx),
        }
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        match self.state {
            // Closing now would end the file early with a clean FIN, which
            // the plain protocol cannot tell from the end of the file.
            Download::Streaming(_) => self.queue_rest_and_close(cx),
            // A client whose name is still on its way would read a clean
            // FIN as an empty file: reset it, so it knows it got nothing.
            Download::AwaitingName { .. } => {
                if let Download::AwaitingName { idle: Some(idle) } = self.state {
                    cx.cancel_timer(idle);
                }
                self.state = Download::Finishing;
                cx.abort();
            }
            Download::Finishing => {}
        }
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let Some(request) = &self.request else {
            debug!("{} {}: closed before a name: {reason}", cx.key(), self.peer);
            return;
        };
        let Answer::File { size } = request.answer else {
            return; // logged when answered
        };
        let millis = cx.now().saturating_duration_since(request.started).as_millis();
        let complete = matches!(self.state, Download::Finishing)
            && matches!(reason, CloseReason::Closed | CloseReason::PeerClosed);
        if complete {
            info!(
                "{} {} {:?}: sent {size} bytes in {millis} ms",
                cx.key(),
                self.peer,
                request.name
            );
        } else {
            info!(
                "{} {} {:?}: {size}-byte download cut after {millis} ms: {reason}",
                cx.key(),
                self.peer,
                request.name
            );
        }
    }
}

/// The name in the first chunk of input: up to the first `\n`, or the
/// whole chunk for a client that sends a bare name and waits; a `\r`
/// before the `\n` is not part of it.
fn name_in(chunk: &[u8]) -> &[u8] {
    let line = match chunk.iter().position(|&b| b == b'\n') {
        Some(end) => &chunk[..end],
        None => chunk,
    };
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A name as it may appear in a log line: lossy UTF-8, cut short.
pub(crate) fn loggable(name: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(name).into_owned();
    if text.len() > LOGGED_NAME {
        let mut cut = LOGGED_NAME;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_the_first_line_or_the_whole_chunk() {
        let cases: [(&[u8], &[u8]); 9] = [
            (b"report.pdf", b"report.pdf"),
            (b"report.pdf\n", b"report.pdf"),
            (b"report.pdf\r\n", b"report.pdf"),
            (b"report.pdf\nmore\nlines", b"report.pdf"),
            (b"report.pdf\r", b"report.pdf"),
            (b"a\rb\n", b"a\rb"),
            (b"report.pdf\r\r\n", b"report.pdf\r"),
            (b"\n", b""),
            (b"", b""),
        ];
        for (chunk, name) in cases {
            assert_eq!(name_in(chunk), name, "{:?}", String::from_utf8_lossy(chunk));
        }
    }

    #[test]
    fn logged_names_are_cut_on_a_character_boundary() {
        assert_eq!(loggable(b"short"), "short");
        let long = "é".repeat(LOGGED_NAME);
        let logged = loggable(long.as_bytes());
        assert!(logged.len() <= LOGGED_NAME + '…'.len_utf8());
        assert!(logged.ends_with('…'));
        assert_eq!(loggable(b"\xffx"), "\u{fffd}x");
    }
}
