//! File streaming over plain TCP, the protocol of the classic Python
//! file-download clients: the client sends a file name, the server answers
//! with the file's bytes and closes; a name it will not serve gets the 7
//! bytes `no_file`.
//!
//! ```text
//!  AwaitingName --name, regular file in the root--> Streaming { file, offset, remaining }
//!  AwaitingName --name refused---------------------> Finishing   (sent "no_file", closing)
//!  AwaitingName --idle timeout---------------------> Finishing   (closing, nothing sent)
//!  Streaming    --drain, more to send--------------> Streaming   (next region queued)
//!  Streaming    --last region queued---------------> Finishing   (close after flush)
//! ```
//!
//! Always true:
//! - the name is complete at the first `\n`, or, for a client that sends a
//!   bare name and then waits, at the end of the first chunk that arrives; a
//!   trailing `\r` is not part of it; bytes after it are ignored;
//! - names go through [`crate::protocols::path::Root`], the same
//!   confinement as HTTP;
//! - memory per download is constant, whatever the file's size: the write
//!   queue holds one file region of at most [`REGION`] bytes, sent by
//!   `sendfile(2)` from the page cache, and the next region is queued from
//!   the drain callback once the previous one is nearly out;
//! - a slow reader only holds back its own queue.

use std::fs::File;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, info};

use crate::protocols::path::{Kind, Root};
use crate::{Addr, CloseReason, Context, StreamFactory, StreamHandler, TimerId};

/// The answer to a name that is not served.
pub const NO_FILE: &[u8] = b"no_file";

/// Longest name accepted, in bytes; a longer one gets [`NO_FILE`].
pub const MAX_NAME: usize = 1024;

/// Bytes of the file queued at a time. Larger than any watermark, so each
/// region raises the high watermark and its drain asks for the next.
pub const REGION: u64 = 16 * 1024 * 1024;

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
    /// Serves the directory `root`, with a 60 s timeout for a client to
    /// send its name.
    ///
    /// # Errors
    ///
    /// `root` does not exist or is not a directory.
    pub fn new(root: impl AsRef<Path>) -> io::Result<FileServer> {
        Ok(FileServer {
            root: Rc::new(Root::new(root)?),
            idle_timeout: Duration::from_secs(60),
        })
    }

    /// How long a connection may stay silent before sending its name.
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
#[derive(Debug)]
enum Download {
    /// Connected; waiting for the name. Leaves on the first input or the
    /// idle timeout.
    AwaitingName { timer: Option<TimerId> },
    /// Sending the file, one region at a time. `offset` is where the next
    /// region starts; `remaining` how much is not queued yet.
    Streaming {
        file: Rc<File>,
        offset: u64,
        remaining: u64,
    },
    /// Everything is queued (file, `no_file`, or nothing): the connection
    /// closes once it is flushed.
    Finishing,
}

/// One connection of the plain file protocol.
#[derive(Debug)]
pub struct FileStream {
    root: Rc<Root>,
    idle_timeout: Duration,
    state: Download,
    name: String,
    size: u64,
    started: Option<Instant>,
}

impl FileStream {
    /// A connection serving files under `root`.
    pub fn new(root: Rc<Root>, idle_timeout: Duration) -> FileStream {
        FileStream {
            root,
            idle_timeout,
            state: Download::AwaitingName { timer: None },
            name: String::new(),
            size: 0,
            started: None,
        }
    }

    /// Handles the name: starts streaming, or answers `no_file`.
    fn start(&mut self, cx: &mut Context<'_>, name: &[u8]) {
        if let Download::AwaitingName { timer: Some(timer) } = self.state {
            cx.cancel_timer(timer);
        }
        self.name = String::from_utf8_lossy(name).into_owned();
        self.started = Some(cx.now());
        let peer = cx.peer_addr().map(ToString::to_string).unwrap_or_default();
        let refusal = if name.len() > MAX_NAME {
            Some("name too long".to_string())
        } else {
            match self.root.resolve(name) {
                Ok(resolved) if resolved.kind == Kind::File => {
                    self.size = resolved.metadata.len();
                    debug!(
                        "{} {peer}: sending {:?}, {} bytes",
                        cx.key(),
                        self.name,
                        self.size
                    );
                    self.state = Download::Streaming {
                        file: Rc::new(resolved.file),
                        offset: 0,
                        remaining: self.size,
                    };
                    return self.queue_next_region(cx);
                }
                Ok(_) => Some("a directory".to_string()),
                Err(refusal) => Some(refusal.to_string()),
            }
        };
        if let Some(why) = refusal {
            info!("{peer} {:?}: no_file ({why})", self.name);
            cx.send(NO_FILE);
            self.finish(cx);
        }
    }

    /// Queues the next region of the file, or closes after the last.
    fn queue_next_region(&mut self, cx: &mut Context<'_>) {
        if let Download::Streaming {
            file,
            offset,
            remaining,
        } = &mut self.state
        {
            let len = (*remaining).min(REGION);
            if len > 0 && !cx.send_file(file, *offset, len) {
                return; // the connection is going; on_close says why
            }
            *offset += len;
            *remaining -= len;
            if *remaining == 0 {
                self.finish(cx);
            }
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) {
        self.state = Download::Finishing;
        cx.close();
    }
}

impl StreamHandler for FileStream {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.state = Download::AwaitingName {
            timer: cx.set_timer(self.idle_timeout),
        };
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        if let Download::AwaitingName { .. } = self.state {
            // Up to the first newline; a bare name is the whole first chunk.
            let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
            let name = data[..end].strip_suffix(b"\r").unwrap_or(&data[..end]);
            self.start(cx, name);
        }
        data.len()
    }

    fn on_drain(&mut self, cx: &mut Context<'_>) {
        self.queue_next_region(cx);
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _timer: TimerId) {
        if let Download::AwaitingName { .. } = self.state {
            debug!("{}: no name within {:?}, closing", cx.key(), self.idle_timeout);
            self.finish(cx);
        }
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        match self.state {
            // A client that half-closes after its name still gets the file.
            Download::Streaming { .. } | Download::Finishing => {}
            Download::AwaitingName { .. } => self.finish(cx),
        }
    }

    fn on_close(&mut self, cx: &mut Context<'_>, reason: &CloseReason) {
        let Some(started) = self.started else { return };
        let peer = cx.peer_addr().map(ToString::to_string).unwrap_or_default();
        let millis = cx.now().saturating_duration_since(started).as_millis();
        if self.size > 0 || reason.is_error() {
            info!(
                "{peer} {:?}: {} bytes, {millis} ms, {reason}",
                self.name, self.size
            );
        }
    }
}
