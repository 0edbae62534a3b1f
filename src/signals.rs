//! Signals as events of the loop. [`shutdown_on_signals`]: the first
//! SIGINT or SIGTERM starts a graceful shutdown, a second one during it
//! ends the process at once. [`on_signals`]: any other signal a program
//! answers (SIGHUP to reload, SIGUSR1 to dump its state) runs a closure on
//! the reactor's thread. The signal numbers are re-exported here, so that
//! a program needs no `libc` to name them.
//!
//! A signal handler may only do async-signal-safe work, so it cannot touch
//! the reactor. `signal-hook` installs a handler that writes to a pipe;
//! the pipe's read end is registered like any other source, and the loop
//! reads which signals came, on its own thread, between other events.
//!
//! Always true: signal dispositions are process-wide, and several sources
//! (of this reactor or another) may take the same signal: each gets it. A
//! signal that comes again before the loop reads the pipe may be seen once.
//! Signals that must not be handled ([`FORBIDDEN`]) are refused with
//! [`Error::ForbiddenSignal`].

use std::time::Duration;

use log::{debug, info, warn};
use mio::Interest;
use signal_hook_mio::v1_0::Signals;

pub use signal_hook::consts::signal::{
    SIGALRM, SIGCHLD, SIGCONT, SIGHUP, SIGINT, SIGPIPE, SIGQUIT, SIGTERM, SIGTSTP, SIGUSR1, SIGUSR2, SIGWINCH,
};
pub use signal_hook::consts::FORBIDDEN;

use crate::{Context, Error, Event, Key, Reactor, SourceHandler};

/// Registers SIGINT and SIGTERM with `reactor`: the first one starts
/// [`Reactor::shutdown`] with `timeout`; another one during the shutdown
/// exits the process with status 130.
///
/// A server that Ctrl-C stops cleanly (it runs until then, so this example
/// is only compiled):
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use evloop::{protocols::echo::Echo, signals, Addr, Reactor};
///
/// let mut reactor = Reactor::new()?;
/// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Echo)?;
/// println!("listening on {}", reactor.local_addr(key).expect("just bound"));
/// // On SIGINT or SIGTERM: stop accepting, give connections 5 s to finish.
/// signals::shutdown_on_signals(&mut reactor, Duration::from_secs(5))?;
/// reactor.run()?; // returns once the shutdown is over
/// println!("bye");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Io`] if the signal handlers or their pipe cannot be set up.
pub fn shutdown_on_signals(reactor: &mut Reactor, timeout: Duration) -> Result<Key, Error> {
    let signals = Signals::new([SIGINT, SIGTERM])?;
    reactor.register(
        ShutdownOnSignal {
            signals,
            timeout,
            shutting_down: false,
        },
        Interest::READABLE,
    )
}

/// The source handler behind [`shutdown_on_signals`].
struct ShutdownOnSignal {
    signals: Signals,
    timeout: Duration,
    shutting_down: bool,
}

impl SourceHandler for ShutdownOnSignal {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.signals
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
        // Reads the pipe until it is empty, as edge triggering requires.
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            if self.shutting_down {
                warn!("signal {signal} during shutdown: exiting now");
                std::process::exit(130);
            }
            info!("signal {signal}: shutting down");
            self.shutting_down = true;
            cx.shutdown(self.timeout);
        }
    }

    fn on_shutdown(&mut self, _cx: &mut Context<'_>) {
        // Stay registered, so that a second signal can cut the shutdown short.
        self.shutting_down = true;
    }
}

/// Registers `signals` with `reactor`: `handler` runs on the reactor's
/// thread, with the source's [`Context`] and the signal's number, for each
/// one received. The source stays registered during a shutdown (a SIGHUP
/// while connections drain still reaches `handler`) and goes with the
/// reactor, or when closed through its key; the signals' handlers stay
/// installed (signal-hook's), with nothing more done on a signal.
///
/// Beside [`shutdown_on_signals`], SIGHUP and SIGUSR1 answered on the
/// reactor's thread:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use evloop::signals::{self, SIGHUP, SIGUSR1};
/// use evloop::Reactor;
///
/// let mut reactor = Reactor::new()?;
/// signals::shutdown_on_signals(&mut reactor, Duration::from_secs(5))?;
/// signals::on_signals(&mut reactor, &[SIGHUP, SIGUSR1], |cx, signal| {
///     if signal == SIGHUP {
///         println!("reloading the configuration");
///     } else {
///         println!("SIGUSR1: dumping the state");
///     }
///     cx.stop(); // only for this example
/// })?;
/// signal_hook::low_level::raise(SIGUSR1)?; // as `kill -USR1 <pid>` would
/// reactor.run()?; // returns once the handler has stopped it
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::ForbiddenSignal`] for a signal in [`FORBIDDEN`] (SIGKILL,
/// SIGSTOP, SIGSEGV, SIGILL, SIGFPE, SIGBUS), before anything is installed;
/// [`Error::Io`] for a number that is not a signal, or if the handlers or
/// their pipe cannot be set up.
pub fn on_signals(
    reactor: &mut Reactor,
    signals: &[i32],
    handler: impl FnMut(&mut Context<'_>, i32) + 'static,
) -> Result<Key, Error> {
    if let Some(&signal) = signals.iter().find(|s| FORBIDDEN.contains(s)) {
        return Err(Error::ForbiddenSignal(signal));
    }
    let signals = Signals::new(signals)?;
    reactor.register(OnSignal { signals, handler }, Interest::READABLE)
}

/// The source handler behind [`on_signals`].
struct OnSignal<F> {
    signals: Signals,
    handler: F,
}

impl<F: FnMut(&mut Context<'_>, i32)> SourceHandler for OnSignal<F> {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.signals
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
        // Reads the pipe until it is empty, as edge triggering requires.
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            debug!("signal {signal}");
            (self.handler)(cx, signal);
        }
    }

    fn on_shutdown(&mut self, _cx: &mut Context<'_>) {
        // Stay: signals still mean something while connections drain.
    }
}
