//! Standard input as a source of the loop: its lines reach a
//! [`StdinHandler`] on the reactor's thread, between socket events, with no
//! thread of their own. [`register_lines`] takes stdin as it finds it:
//!
//! | stdin is | how it is read |
//! |---|---|
//! | a terminal or a pipe (Linux) | reopened through `/proc/self/fd/0`, non-blocking: a file description of its own, so the one shared with the parent (and with stdout, on a terminal) is never changed; registered with epoll |
//! | a socket; a terminal or a pipe elsewhere | `O_NONBLOCK` set on the shared description and cleared again at the end of input, or when the source goes |
//! | a regular file (`prog < file`), `/dev/null`, anything epoll refuses | not registered (epoll refuses files, which are always ready): read a chunk at a time, each turn asking for the next ([`Context::revisit`]) |
//! | not open | the end of input, at once |
//!
//! Always true:
//! - the loop never waits on stdin: a read that could block is never made
//!   (a regular file's read is one chunk from the page cache or the disk);
//! - at most [`READS_PER_TURN`] reads of [`CHUNK`] bytes are made per turn
//!   of the loop; then the source yields and goes on in the next turn, so a
//!   fast writer or a large file cannot starve the sockets;
//! - every line arrives once, in order, cut by the line codec
//!   ([`crate::codec::decode_line`]): without its `\n` and one `\r` before
//!   it; a line longer than the limit comes in pieces of the limit's size;
//!   bytes after the last newline come as a last line; then `on_end`,
//!   exactly once, preceded by `on_error` if a read failed;
//! - a description shared with the parent has its `O_NONBLOCK` flag back
//!   as it was once input ends or the source goes (at the latest when the
//!   reactor is dropped; a process that exits without unwinding, as with
//!   `std::process::exit`, skips that, which is why Linux reopens instead).
//!
//! Stdin is registered once per process: two sources would split its lines
//! between them. The tests cover a terminal through a pty made by `script`,
//! where it is installed.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileTypeExt;

use log::{debug, warn};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::codec::{decode_line, LineStatus};
use crate::{sys, Context, Error, Event, Key, Reactor, SourceHandler, TimerId};

/// Bytes asked for by one read of stdin.
pub const CHUNK: usize = 64 * 1024;

/// Reads of stdin per turn of the loop before the source yields to the
/// others (each of at most [`CHUNK`] bytes).
pub const READS_PER_TURN: usize = 4;

/// What receives stdin's lines: see [`register_lines`].
///
/// Every callback runs on the reactor's thread and gets the stdin source's
/// [`Context`]: it can send to connections (`cx.source(key).send(..)`),
/// set timers of its own (they come to [`StdinHandler::on_timer`]), stop
/// the loop, or close the source.
///
/// After [`StdinHandler::on_end`] the source stays registered, reading
/// nothing, until it is closed, so that its timers can still fire (a grace
/// period before the program ends); the default `on_end` closes it.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use evloop::stdin::{self, StdinHandler};
/// use evloop::{Context, Reactor};
///
/// /// Counts lines and words; prints the totals at the end of input.
/// #[derive(Default)]
/// struct Count {
///     lines: usize,
///     words: usize,
/// }
///
/// impl StdinHandler for Count {
///     fn on_line(&mut self, _cx: &mut Context<'_>, line: &[u8]) {
///         self.lines += 1;
///         self.words += line.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).count();
///     }
///
///     fn on_end(&mut self, cx: &mut Context<'_>) {
///         println!("{} lines, {} words", self.lines, self.words);
///         cx.stop();
///     }
/// }
///
/// let mut reactor = Reactor::new()?;
/// stdin::register_lines(&mut reactor, 64 * 1024, Count::default())?;
/// reactor.run()?;
/// # Ok(())
/// # }
/// ```
pub trait StdinHandler {
    /// One line, without its `\n` and without one `\r` before it; or a
    /// piece of `max_line` bytes of a longer line; or the bytes after the
    /// last newline, at the end of input.
    fn on_line(&mut self, cx: &mut Context<'_>, line: &[u8]);

    /// The end of input: the last call about input. The default closes the
    /// source.
    fn on_end(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    /// Reading stdin failed; [`StdinHandler::on_end`] follows. The default
    /// logs the error at warn level.
    fn on_error(&mut self, cx: &mut Context<'_>, err: &io::Error) {
        let _ = cx;
        warn!("stdin: {err}");
    }

    /// A timer set through the context fired.
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let _ = (cx, timer);
    }
}

/// Registers stdin with `reactor`: each line, of at most `max_line` bytes
/// (a longer one comes in pieces of `max_line` bytes, at least 1), goes to
/// `handler`'s [`StdinHandler::on_line`], then the end of input to
/// [`StdinHandler::on_end`]. The first read is made on the next turn of
/// the loop. Returns the source's key ([`Reactor::close`] removes it).
///
/// Sending each line typed to a server, and leaving once input ends
/// (a whole program, so only compiled):
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use evloop::stdin::{self, StdinHandler};
/// use evloop::{Context, Key, Reactor, StreamHandler};
///
/// /// Prints what the server sends.
/// struct Server;
///
/// impl StreamHandler for Server {
///     fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
///         print!("{}", String::from_utf8_lossy(data));
///         data.len()
///     }
/// }
///
/// /// Sends each line typed to the server.
/// struct Typed(Key);
///
/// impl StdinHandler for Typed {
///     fn on_line(&mut self, cx: &mut Context<'_>, line: &[u8]) {
///         cx.source(self.0).send(&[line, b"\n"].concat());
///     }
///
///     fn on_end(&mut self, cx: &mut Context<'_>) {
///         cx.source(self.0).close(); // after what was typed
///         cx.stop();
///     }
/// }
///
/// let mut reactor = Reactor::new()?;
/// let server = reactor.connect_tcp("127.0.0.1:7100".parse()?, Server)?;
/// stdin::register_lines(&mut reactor, 4096, Typed(server))?;
/// reactor.run()?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Io`] if stdin cannot be duplicated, inspected or made
/// non-blocking, or epoll takes it and then fails; [`Error::Full`] if the
/// registry is full.
pub fn register_lines(
    reactor: &mut Reactor,
    max_line: usize,
    handler: impl StdinHandler + 'static,
) -> Result<Key, Error> {
    let input = Input::open()?;
    debug!("stdin: {}", input.describe());
    let lines = StdinLines {
        input,
        pending: Vec::new(),
        max_line,
        handler,
        ended: false,
        revisit_due: true,
    };
    let key = reactor.register(lines, Interest::READABLE)?;
    // The first read, next turn: the only way a source epoll refused is
    // ever called, and harmless for one it took (that one reads until
    // `WouldBlock`).
    reactor.revisit(key);
    Ok(key)
}

/// The source handler behind [`register_lines`].
struct StdinLines<H> {
    input: Input,
    /// Bytes read and not yet passed on: the start of a line.
    pending: Vec<u8>,
    max_line: usize,
    handler: H,
    /// Input has ended and the handler been told: nothing more is read.
    ended: bool,
    /// A read is due next turn ([`Context::revisit`]): it will drain what
    /// an event announces meanwhile.
    revisit_due: bool,
}

impl<H: StdinHandler> StdinLines<H> {
    /// Reads until `WouldBlock`, the end, or the turn's budget; passes the
    /// lines on as they come.
    fn pump(&mut self, cx: &mut Context<'_>) {
        if self.ended {
            return; // a hung-up descriptor may still report readiness
        }
        let mut reads = 0;
        loop {
            if reads == READS_PER_TURN {
                // The other sources' turn; more on the next one.
                self.revisit_due = cx.revisit();
                return;
            }
            let start = self.pending.len();
            self.pending.resize(start + CHUNK, 0);
            let read = self.input.read(&mut self.pending[start..]);
            self.pending.truncate(start + read.as_ref().map_or(0, |n| *n));
            match read {
                Ok(0) => return self.finish(cx, None),
                Ok(_) => {
                    reads += 1;
                    let handler = &mut self.handler;
                    let used = for_each_line(&self.pending, self.max_line, |line| handler.on_line(cx, line));
                    self.pending.drain(..used);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return, // wait for the next edge
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return self.finish(cx, Some(err)),
            }
        }
    }

    /// The end of input (or a failed read): the last bytes, the error, the end.
    fn finish(&mut self, cx: &mut Context<'_>, err: Option<io::Error>) {
        self.ended = true;
        self.input.restore_flags();
        let rest = std::mem::take(&mut self.pending);
        for piece in rest.chunks(self.max_line.max(1)) {
            self.handler.on_line(cx, piece);
        }
        if let Some(err) = err {
            self.handler.on_error(cx, &err);
        }
        self.handler.on_end(cx);
    }
}

impl<H: StdinHandler> SourceHandler for StdinLines<H> {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.input
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
        // With a read already due, that read drains what this event announces.
        if !self.revisit_due {
            self.pump(cx);
        }
    }

    fn on_revisit(&mut self, cx: &mut Context<'_>) {
        self.revisit_due = false;
        self.pump(cx);
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        self.handler.on_timer(cx, timer);
    }
}

/// Passes every whole line at the front of `buf` to `each`, as the line
/// codec cuts them; a line longer than `max_line` goes in pieces of
/// `max_line` bytes (at least 1). Returns how many bytes were used.
fn for_each_line(buf: &[u8], max_line: usize, mut each: impl FnMut(&[u8])) -> usize {
    let mut used = 0;
    loop {
        let rest = &buf[used..];
        match decode_line(rest, max_line) {
            Ok(LineStatus::Complete { line, consumed }) => {
                each(line);
                used += consumed;
            }
            Ok(LineStatus::Partial) => return used,
            // Longer than `max_line`, so `rest` holds more than a piece.
            Err(_) => {
                let piece = max_line.max(1);
                each(&rest[..piece]);
                used += piece;
            }
        }
    }
}

/// Stdin as this module reads it.
enum Input {
    /// Registered with epoll, in non-blocking mode. `restore`: the mode was
    /// set here on a description shared with others, and is to be cleared.
    Polled { file: File, restore: bool },
    /// A regular file, or a descriptor epoll refused: always ready.
    Unpolled(File),
    /// Descriptor 0 is not open.
    Closed,
}

impl Input {
    /// Stdin: reopened, or duplicated and made non-blocking, or left
    /// blocking if it is a regular file (see the module docs).
    fn open() -> io::Result<Input> {
        let stdin = io::stdin();
        let fd = match stdin.as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(err) if err.raw_os_error() == Some(libc::EBADF) => return Ok(Input::Closed),
            Err(err) => return Err(err),
        };
        let file = File::from(fd);
        let kind = file.metadata()?.file_type();
        if kind.is_file() || kind.is_dir() {
            return Ok(Input::Unpolled(file));
        }
        if kind.is_fifo() || stdin.is_terminal() {
            if let Some(own) = reopen_nonblocking() {
                return Ok(Input::Polled {
                    file: own,
                    restore: false,
                });
            }
        }
        let restore = !sys::is_nonblocking(file.as_fd())?;
        sys::set_nonblocking(file.as_fd(), true)?;
        Ok(Input::Polled { file, restore })
    }

    /// Clears `O_NONBLOCK` again if it was set here; once.
    fn restore_flags(&mut self) {
        if let Input::Polled { file, restore } = self {
            if std::mem::take(restore) {
                if let Err(err) = sys::set_nonblocking(file.as_fd(), false) {
                    debug!("stdin: restoring blocking mode: {err}");
                }
            }
        }
    }

    /// For the debug log.
    fn describe(&self) -> &'static str {
        match self {
            Input::Polled { restore: false, .. } => {
                "polled, a description of its own or already non-blocking"
            }
            Input::Polled { restore: true, .. } => "polled, made non-blocking until the source goes",
            Input::Unpolled(_) => "a regular file, read a chunk per turn",
            Input::Closed => "not open",
        }
    }
}

/// Stdin's terminal or pipe opened anew, non-blocking: a file description
/// of this process's own. Linux only (`/proc`); `None` if that fails.
#[cfg(target_os = "linux")]
fn reopen_nonblocking() -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open("/proc/self/fd/0")
        .map_err(|err| debug!("stdin: cannot reopen: {err}"))
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn reopen_nonblocking() -> Option<File> {
    None
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Polled { file, .. } | Input::Unpolled(file) => file.read(buf),
            Input::Closed => Ok(0),
        }
    }
}

impl mio::event::Source for Input {
    /// Registers a pollable stdin; one that epoll refuses (`EPERM`) becomes
    /// [`Input::Unpolled`], and registering it succeeds without epoll.
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        let Input::Polled { file, .. } = self else {
            return Ok(());
        };
        let fd = file.as_raw_fd();
        match SourceFd(&fd).register(registry, token, interests) {
            Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
                self.restore_flags();
                if let Input::Polled { file, .. } = std::mem::replace(self, Input::Closed) {
                    *self = Input::Unpolled(file);
                }
                Ok(())
            }
            other => other,
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Input::Polled { file, .. } => SourceFd(&file.as_raw_fd()).reregister(registry, token, interests),
            Input::Unpolled(_) | Input::Closed => Ok(()),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Input::Polled { file, .. } => SourceFd(&file.as_raw_fd()).deregister(registry),
            Input::Unpolled(_) | Input::Closed => Ok(()),
        }
    }
}

impl<H> Drop for StdinLines<H> {
    /// The source is gone (closed, removed after a panic, or dropped with
    /// the reactor): the shared description gets its mode back.
    fn drop(&mut self) {
        self.input.restore_flags();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines `for_each_line` finds in `buf`, and the bytes it used.
    fn cut(buf: &[u8], max: usize) -> (Vec<Vec<u8>>, usize) {
        let mut lines = Vec::new();
        let used = for_each_line(buf, max, |line| lines.push(line.to_vec()));
        (lines, used)
    }

    #[test]
    fn lines_are_cut_as_the_codec_cuts_them() {
        let (lines, used) = cut(b"one\r\ntwo\n\nthr", 16);
        assert_eq!(lines, [&b"one"[..], b"two", b""]);
        assert_eq!(used, 10, "the partial line is kept");
    }

    #[test]
    fn a_line_of_exactly_max_is_one_line() {
        assert_eq!(cut(b"abcd\r\n", 4), (vec![b"abcd".to_vec()], 6));
    }

    #[test]
    fn a_longer_line_comes_in_pieces_of_max() {
        let (lines, used) = cut(b"abcdefghij\nk\n", 4);
        assert_eq!(lines, [&b"abcd"[..], b"efgh", b"ij", b"k"]);
        assert_eq!(used, 13);
    }

    #[test]
    fn a_zero_limit_still_makes_progress() {
        let (lines, used) = cut(b"ab\n\n", 0);
        assert_eq!(lines, [&b"a"[..], b"b", b"", b""]);
        assert_eq!(used, 4);
    }
}
