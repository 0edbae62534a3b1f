//! What every example server shares: flag parsing with the contract's exit
//! codes, logging to stderr, announce lines on stdout, one-line bind errors,
//! and SIGINT/SIGTERM shutdown.
#![allow(dead_code)] // each example uses a different part of this module

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

pub mod stdin;
use evloop::{Addr, Error, Reactor};

/// Parses the command line. `--help` prints usage and exits 0; a bad
/// argument prints one line to stderr and exits 2.
pub fn parse<T: Parser>() -> T {
    match T::try_parse() {
        Ok(flags) => flags,
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            std::process::exit(0);
        }
        Err(err) => {
            let text = err.render().to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            usage_error(line.trim_start_matches("error: "));
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Stderr)
        .init();
}

/// Prints the announce line of a bound socket, and flushes it.
pub fn announce(kind: &str, addr: &Addr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {kind} {addr}");
    let _ = out.flush();
}

/// Binds (or fails with one line naming the address, and exit 1), then
/// announces the socket's real address.
pub fn bind_or_exit(reactor: &mut Reactor, kind: &str, bound: Result<evloop::Key, Error>) -> evloop::Key {
    match bound {
        Ok(key) => {
            let addr = reactor.local_addr(key).expect("a bound socket has an address");
            announce(kind, &addr);
            key
        }
        Err(err) => fail(&err),
    }
}

/// Prints one line and exits 1.
pub fn fail(err: &dyn std::fmt::Display) -> ! {
    eprintln!("{}: {err}", program_name());
    std::process::exit(1);
}

/// A bad argument found after parsing: one line, exit 2.
pub fn usage_error(message: &str) -> ! {
    eprintln!("{}: {message}", program_name());
    std::process::exit(2);
}

/// The name this program was started as, without its directory.
pub fn program_name() -> String {
    let program = std::env::args().next().unwrap_or_default();
    std::path::Path::new(&program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Parses a number of seconds (fractions allowed) for `--shutdown-timeout`
/// and the other timeouts.
pub fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A reactor with SIGINT/SIGTERM shutdown installed: made before any socket
/// is bound, so that once a server has announced its sockets, a signal
/// already finds it ready to shut down gracefully.
pub fn server_reactor(shutdown_timeout: Duration) -> Reactor {
    let mut reactor = Reactor::new().unwrap_or_else(|err| fail(&err));
    if let Err(err) = evloop::signals::shutdown_on_signals(&mut reactor, shutdown_timeout) {
        fail(&err);
    }
    reactor
}

/// Runs the reactor (made by [`server_reactor`]) until it ends.
pub fn serve(mut reactor: Reactor) -> ExitCode {
    match reactor.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}
