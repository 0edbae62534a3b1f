//! SIGINT and SIGTERM as events of the loop: the first starts a graceful
//! shutdown, a second one during it ends the process at once.
//!
//! A signal handler may only do async-signal-safe work, so it cannot touch
//! the reactor. `signal-hook` installs a handler that writes to a pipe;
//! the pipe's read end is registered like any other source, and the loop
//! reads which signals came, on its own thread, between other events.

use std::time::Duration;

use log::{info, warn};
use mio::Interest;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

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
