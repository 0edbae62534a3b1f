//! The idle and download modes' clock: a custom source that exists to start
//! the run and to own its timers ([`Driver`]), around the part that knows
//! the mode ([`Script`]).
//!
//! It works as the echo mode's `Clock` does: the source is the write end
//! of a fresh pipe, which is writable from the start, so registering it
//! raises one WRITABLE edge and `on_ready` runs once, in the loop's first
//! turn. Nothing is ever written, so it never runs again; every later call
//! is a timer that the script set through the context.

use std::io;

use evloop::{Context, Event, SourceHandler, TimerId};

/// What a mode does on its clock.
pub(crate) trait Script {
    /// The loop's first turn: open connections, set timers.
    fn start(&mut self, cx: &mut Context<'_>);

    /// A timer this script set fired.
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId);
}

/// A pipe's write end, registered for WRITABLE, that runs a [`Script`].
pub(crate) struct Driver<S> {
    pipe: mio::unix::pipe::Sender,
    /// Kept open, so that the write end stays writable and quiet.
    _read_end: mio::unix::pipe::Receiver,
    started: bool,
    script: S,
}

impl<S: Script> Driver<S> {
    /// A driver for `script`; register it with `Interest::WRITABLE`.
    ///
    /// # Errors
    ///
    /// The pipe could not be made (out of descriptors).
    pub(crate) fn new(script: S) -> io::Result<Driver<S>> {
        let (pipe, read_end) = mio::unix::pipe::new()?;
        Ok(Driver {
            pipe,
            _read_end: read_end,
            started: false,
            script,
        })
    }
}

impl<S: Script> SourceHandler for Driver<S> {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.pipe
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
        if !self.started {
            self.started = true;
            self.script.start(cx);
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        self.script.on_timer(cx, timer);
    }
}
