//! Standard input as a source of the loop: lines from stdin arrive on the
//! reactor's thread, between socket events, with no extra thread.
//!
//! Descriptor 0 is made non-blocking and registered like any socket; its
//! flags are restored when the source goes (at the latest when the reactor
//! is dropped, on the way out of `main`), since the terminal or pipe is
//! shared with the parent. A
//! regular file (`prog < file`) cannot be registered: epoll refuses files,
//! which are always "ready". Then the file is fed through a pipe instead,
//! by a second source that copies a chunk into the pipe each time the pipe
//! has room, so the loop still never blocks on stdin.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::time::Duration;

use evloop::{Context, Event, FdSource, Interest, Reactor, SourceHandler};

/// What receives the lines.
pub trait LineSink {
    /// One line, without its `\n` (or the last bytes before end of input).
    fn line(&mut self, cx: &mut Context<'_>, line: &[u8]);
    /// End of input. Returns `None` when nothing more is to be done here,
    /// or a grace period: the stdin source then stays (reading no more) and
    /// [`LineSink::grace_over`] is called once it has passed, unless the
    /// loop ended first.
    fn end(&mut self, cx: &mut Context<'_>) -> Option<Duration>;
    /// The grace period asked for by [`LineSink::end`] passed. The default
    /// stops the loop.
    fn grace_over(&mut self, cx: &mut Context<'_>) {
        cx.stop();
    }
}

/// Longest line kept; a longer one is passed on in pieces of this size.
const MAX_LINE: usize = 64 * 1024;

/// Reads lines from `input` until `WouldBlock` on each event.
struct Lines<R, S> {
    input: R,
    pending: Vec<u8>,
    sink: S,
    /// Input has ended (and the sink been told); nothing more is read.
    ended: bool,
}

impl<R, S: LineSink> Lines<R, S> {
    /// End of input (or a read error): the last partial line, then the end.
    fn finish(&mut self, cx: &mut Context<'_>) {
        self.ended = true;
        if !self.pending.is_empty() {
            let last = std::mem::take(&mut self.pending);
            self.sink.line(cx, &last);
        }
        match self.sink.end(cx) {
            // Without a timer there would be no end to the grace: stop now.
            Some(grace) => {
                if cx.set_timer(grace).is_none() {
                    self.sink.grace_over(cx);
                }
            }
            None => cx.close(),
        }
    }
}

impl<R, S> SourceHandler for Lines<R, S>
where
    R: Read + mio::event::Source,
    S: LineSink,
{
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.input
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
        if self.ended {
            return; // a hung-up descriptor may still report readiness
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.input.read(&mut buf) {
                Ok(0) => return self.finish(cx),
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = self.pending.drain(..=end).take(end).collect();
                        self.sink.line(cx, &line);
                    }
                    if self.pending.len() > MAX_LINE {
                        let piece = std::mem::take(&mut self.pending);
                        self.sink.line(cx, &piece);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.finish(cx),
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _timer: evloop::TimerId) {
        // The only timer here is the grace period after the end of input.
        self.sink.grace_over(cx);
    }
}

/// Descriptor 0 as a readable, registrable source. Restores its flags when
/// dropped, since other processes may share the same open file.
struct Stdin {
    fd: FdSource,
    saved_flags: i32,
}

impl Stdin {
    fn new() -> Stdin {
        // SAFETY: fcntl on descriptor 0 with valid commands; failure is
        // reported as -1 and leaves the flags as they were.
        let saved_flags = unsafe { libc::fcntl(0, libc::F_GETFL) };
        if saved_flags >= 0 {
            // SAFETY: as above.
            unsafe { libc::fcntl(0, libc::F_SETFL, saved_flags | libc::O_NONBLOCK) };
        }
        Stdin {
            fd: FdSource::new(0),
            saved_flags,
        }
    }
}

impl Drop for Stdin {
    fn drop(&mut self) {
        if self.saved_flags >= 0 {
            // SAFETY: restores the flags read in `new`.
            unsafe { libc::fcntl(0, libc::F_SETFL, self.saved_flags) };
        }
    }
}

impl Read for Stdin {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Descriptor 0 belongs to the process: borrow it as a File without
        // taking ownership, so it is not closed here.
        // SAFETY: descriptor 0 stays open for the life of the process.
        let mut file = ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
        file.read(buf)
    }
}

impl mio::event::Source for Stdin {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: Interest) -> std::io::Result<()> {
        self.fd.register(r, t, i)
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: Interest) -> std::io::Result<()> {
        self.fd.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &mio::Registry) -> std::io::Result<()> {
        self.fd.deregister(r)
    }
}

/// Copies a regular file (stdin redirected from one) into a pipe, a chunk
/// each time the pipe has room; closing the pipe at the end is the EOF.
struct Feeder {
    file: ManuallyDrop<File>,
    pipe: mio::unix::pipe::Sender,
    chunk: Vec<u8>,
    sent: usize,
}

impl SourceHandler for Feeder {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.pipe
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
        loop {
            if self.sent == self.chunk.len() {
                self.chunk.resize(16 * 1024, 0);
                match self.file.read(&mut self.chunk) {
                    Ok(0) | Err(_) => return cx.close(), // dropping the sender is the EOF
                    Ok(n) => {
                        self.chunk.truncate(n);
                        self.sent = 0;
                    }
                }
            }
            match self.pipe.write(&self.chunk[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return cx.close(),
            }
        }
    }
}

/// Registers stdin with `reactor`, delivering its lines to `sink`.
pub fn register_stdin(reactor: &mut Reactor, sink: impl LineSink + 'static) -> Result<(), evloop::Error> {
    if FdSource::new(0).register_probe() {
        let lines = Lines {
            input: Stdin::new(),
            pending: Vec::new(),
            sink,
            ended: false,
        };
        reactor.register(lines, Interest::READABLE)?;
        return Ok(());
    }
    let (sender, receiver) = mio::unix::pipe::new()?;
    // SAFETY: descriptor 0 stays open for the life of the process; the
    // ManuallyDrop keeps this File from closing it.
    let file = ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    let feeder = Feeder {
        file,
        pipe: sender,
        chunk: Vec::new(),
        sent: 0,
    };
    reactor.register(feeder, Interest::WRITABLE)?;
    let lines = Lines {
        input: receiver,
        pending: Vec::new(),
        sink,
        ended: false,
    };
    reactor.register(lines, Interest::READABLE)?;
    Ok(())
}

/// Whether epoll accepts a descriptor: try it on a scratch poll.
trait Probe {
    fn register_probe(&mut self) -> bool;
}

impl Probe for FdSource {
    fn register_probe(&mut self) -> bool {
        let Ok(poll) = mio::Poll::new() else { return false };
        use mio::event::Source;
        self.register(poll.registry(), mio::Token(0), Interest::READABLE)
            .is_ok()
    }
}
