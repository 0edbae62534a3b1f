//! What the tokio peers share, none of it on the hot path: a tiny flag
//! parser, the runtime chosen with `--flavor`, and the start-up and shutdown
//! contract every server of the benchmark follows (the same as evloop's
//! example servers):
//!
//! - it listens where told (port 0 allowed), then prints exactly one line,
//!   `listening tcp ADDR` (`listening tls ADDR` for a listener that speaks
//!   TLS), with the address it really got, and flushes; nothing else ever
//!   goes to stdout;
//! - a bad argument is one line on stderr and exit 2; an address that cannot
//!   be bound is one line naming it and exit 1;
//! - SIGTERM or SIGINT makes it exit 0 at once.
//!
//! The servers themselves (the accept loop and what each connection does)
//! are in `src/bin/`, written the way a tokio user would first write them.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::{Builder, Runtime};
use tokio::signal::unix::{signal, SignalKind};

/// The command line, taken apart flag by flag. Flags may come in any order,
/// as `--name VALUE` or `--name=VALUE`; what is left at the end must be the
/// one address (or the address is given as `--addr ADDR`).
pub struct Args {
    usage: &'static str,
    rest: Vec<String>,
}

impl Args {
    /// Reads the command line. `--help` prints `usage` and exits 0.
    pub fn from_env(usage: &'static str) -> Args {
        let rest: Vec<String> = std::env::args_os()
            .skip(1)
            .map(|arg| {
                arg.into_string()
                    .unwrap_or_else(|arg| usage_error(&format!("{} is not UTF-8", arg.to_string_lossy())))
            })
            .collect();
        if rest.iter().any(|a| a == "--help" || a == "-h") {
            println!("usage: {usage}");
            std::process::exit(0);
        }
        Args { usage, rest }
    }

    /// Takes `--name VALUE` (or `--name=VALUE`) out of the command line.
    pub fn value(&mut self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        let at = self
            .rest
            .iter()
            .position(|a| a == name || a.starts_with(&prefix))?;
        let arg = self.rest.remove(at);
        if let Some(value) = arg.strip_prefix(&prefix) {
            return Some(value.to_string());
        }
        if at < self.rest.len() {
            Some(self.rest.remove(at))
        } else {
            usage_error(&format!("{name} needs a value"))
        }
    }

    /// Takes `--name VALUE` out and parses it, or exits 2 if it does not parse.
    pub fn parsed<T: FromStr>(&mut self, name: &str) -> Option<T> {
        let text = self.value(name)?;
        match text.parse() {
            Ok(value) => Some(value),
            Err(_) => usage_error(&format!("{name}: '{text}' is not valid")),
        }
    }

    /// Takes the switch `--name` (no value) out; true if it was there.
    pub fn switch(&mut self, name: &str) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| a != name);
        self.rest.len() != before
    }

    /// Checks that what is left is exactly one address, given alone or as
    /// `--addr ADDR`, and returns it.
    pub fn addr(mut self) -> SocketAddr {
        if let Some(addr) = self.value("--addr") {
            self.rest.insert(0, addr);
        }
        if let Some(flag) = self.rest.iter().find(|a| a.starts_with("--")) {
            usage_error(&format!("unknown flag {flag} (usage: {})", self.usage));
        }
        match self.rest.as_slice() {
            [one] => one
                .parse()
                .unwrap_or_else(|_| usage_error(&format!("'{one}' is not an address like 127.0.0.1:0"))),
            _ => usage_error(&format!("give exactly one address (usage: {})", self.usage)),
        }
    }
}

/// Builds the runtime named by `--flavor` (required): `current_thread`, all
/// on the thread that calls `main`, or `multi_thread`, with tokio's default
/// worker count (one per core) unless `--workers N` says otherwise.
pub fn runtime(args: &mut Args) -> Runtime {
    let flavor = args
        .value("--flavor")
        .unwrap_or_else(|| usage_error("--flavor current_thread|multi_thread is required"));
    let workers: Option<usize> = args.parsed("--workers");
    let mut builder = match flavor.as_str() {
        "current_thread" => {
            if workers.is_some() {
                usage_error("--workers needs --flavor multi_thread");
            }
            Builder::new_current_thread()
        }
        "multi_thread" => {
            let mut builder = Builder::new_multi_thread();
            match workers {
                Some(0) => usage_error("--workers must be at least 1"),
                Some(n) => {
                    builder.worker_threads(n);
                }
                None => {}
            }
            builder
        }
        other => usage_error(&format!(
            "--flavor: '{other}' is not current_thread or multi_thread"
        )),
    };
    builder
        .enable_all()
        .build()
        .unwrap_or_else(|err| fail(&format!("cannot start the runtime: {err}")))
}

/// Runs a server on `runtime`: binds `addr` (exit 1 if it cannot), announces
/// it, then runs `serve(listener)` until SIGTERM or SIGINT, and returns the
/// exit code 0. Connections still open are dropped, not drained.
pub fn run<F, Fut>(runtime: Runtime, addr: SocketAddr, serve: F) -> ExitCode
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = ()>,
{
    run_as(runtime, "tcp", addr, serve)
}

/// As [`run`], announcing the listener as `listening KIND ADDR`: `tcp`, or
/// `tls` for a server that speaks TLS on every connection it accepts.
pub fn run_as<F, Fut>(runtime: Runtime, kind: &str, addr: SocketAddr, serve: F) -> ExitCode
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = ()>,
{
    runtime.block_on(async {
        // Signals are caught from before the announce line, so a runner that
        // stops the server right after reading it is never too early.
        let mut term = signal(SignalKind::terminate()).unwrap_or_else(|err| fail(&err));
        let mut int = signal(SignalKind::interrupt()).unwrap_or_else(|err| fail(&err));
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|err| fail(&format!("cannot bind {addr}: {err}")));
        let bound = listener.local_addr().unwrap_or_else(|err| fail(&err));
        announce(kind, bound);
        tokio::select! {
            _ = serve(listener) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    // Do not wait for connection tasks or blocking file reads to finish.
    runtime.shutdown_background();
    ExitCode::SUCCESS
}

/// Prints the announce line of the bound socket, and flushes it.
fn announce(kind: &str, addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {kind} {addr}");
    let _ = out.flush();
}

/// Reports a failed accept and waits a little. Running out of descriptors
/// is the usual failure, and it lasts until some connection closes; the
/// listener stays readable meanwhile, so retrying at once would only spin.
pub async fn accept_failed(err: &std::io::Error) {
    eprintln!("{}: accept: {err}", program_name());
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// One line on stderr, exit 1.
pub fn fail(err: &dyn std::fmt::Display) -> ! {
    eprintln!("{}: {err}", program_name());
    std::process::exit(1);
}

/// One line on stderr, exit 2: the command line was wrong.
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
