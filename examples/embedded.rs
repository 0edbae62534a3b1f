//! A host program with evloop inside: the reactor serves TCP echo on a
//! thread of its own while the main thread reads commands from stdin and
//! reaches the reactor only through a [`Handle`]. The guide that walks
//! through it is `docs/embedding.md`.
//!
//! ```text
//! embedded [--tcp ADDR] [--shutdown-timeout SECS]
//! ```
//!
//! Stdout gets `listening tcp ADDR` once the listener is bound, then one
//! line per command:
//!
//! | command | answer |
//! |---|---|
//! | `stats` | `connections N`: the listener's open connections |
//! | `broadcast TEXT` | `broadcast N`: TEXT and a newline were queued on N connections |
//! | `metrics` | `metrics turns=N accepted=N open=N read=N written=N slow=N turn_p99_us=N`: the loop's counters ([`evloop::metrics`]) |
//! | `quit` | none: graceful shutdown, then exit 0 |
//!
//! The end of stdin is a `quit`. SIGINT or SIGTERM shuts the reactor down
//! the same way; a second signal during the shutdown exits at once (130).
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `warn`). The library
//! logs under the target `evloop`: info for listening and shutting down,
//! debug for each connection's state changes, trace for each read. The
//! host logs under `embedded`.

mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use clap::Parser;
use evloop::protocols::echo::Echo;
use evloop::{Addr, Error, Handle, Key, Reactor};
use log::{info, warn};

/// Echo on a reactor thread, driven from stdin: stats, broadcast TEXT, metrics, quit.
#[derive(Parser)]
#[command(name = "embedded")]
struct Flags {
    /// TCP address to listen on (port 0: any free port)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    tcp: SocketAddr,
    /// Seconds open connections get to finish when the host shuts down
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = common::seconds)]
    shutdown_timeout: Duration,
}

/// How long the main thread waits for a reactor to answer a query. A
/// reactor that is running answers within one turn of its loop.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the main thread waits for: its own inputs and the reactor's end.
enum HostEvent {
    /// A line from stdin.
    Command(String),
    /// Stdin reached its end (or failed).
    InputClosed,
    /// The reactor's `run` returned and the reactor was dropped: after a
    /// signal, or after the shutdown the host asked for.
    ReactorEnded,
}

/// What the reactor thread hands back once its listener is bound. Every
/// field is `Send`; the reactor itself is not, and stays on its thread.
struct Server {
    handle: Handle,
    listener: Key,
    addr: Addr,
}

fn main() -> ExitCode {
    let flags: Flags = common::parse();
    init_logging();
    let (events_tx, events) = mpsc::channel();
    let (server, reactor_thread) = match start_reactor(&flags, events_tx.clone()) {
        Ok(started) => started,
        Err(err) => common::fail(&err),
    };
    common::announce("tcp", &server.addr);
    read_commands(events_tx);

    // The host's own loop: one event at a time from its channel.
    for event in events {
        match event {
            HostEvent::Command(line) => {
                if !run_command(&server, line.trim()) {
                    break;
                }
            }
            HostEvent::InputClosed => {
                info!("stdin closed");
                break;
            }
            HostEvent::ReactorEnded => break,
        }
    }

    // Stop accepting, give open connections up to the timeout to flush and
    // close, then `run` returns. `false`: the reactor is gone already.
    if !server.handle.shutdown(flags.shutdown_timeout) {
        info!("the reactor had already ended");
    }
    match reactor_thread.join() {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => common::fail(&err),
        Err(_) => common::fail(&"the reactor thread panicked"),
    }
}

/// Logs to stderr with `env_logger`, filtered by `RUST_LOG` (default:
/// warnings). evloop never installs a logger; the host picks one.
fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Stderr)
        .init();
}

/// Starts the reactor thread and waits until its listener is bound.
/// A bind error comes back from the thread as this function's error.
fn start_reactor(
    flags: &Flags,
    events: mpsc::Sender<HostEvent>,
) -> Result<(Server, JoinHandle<Result<(), Error>>), Error> {
    let (ready_tx, ready) = mpsc::channel();
    let (addr, shutdown_timeout) = (flags.tcp, flags.shutdown_timeout);
    let thread = thread::Builder::new()
        .name("reactor".into())
        .spawn(move || -> Result<(), Error> {
            // Built here, on the thread that runs it: a Reactor is not
            // Send (its handlers and shared payloads live in `Rc`s).
            let mut reactor = Reactor::new()?;
            evloop::signals::shutdown_on_signals(&mut reactor, shutdown_timeout)?;
            let listener = reactor.listen_tcp(addr, |_: &Addr| Echo)?;
            let server = Server {
                handle: reactor.handle(),
                listener,
                addr: reactor
                    .local_addr(listener)
                    .expect("a bound listener has an address"),
            };
            let _ = ready_tx.send(server);
            let result = reactor.run();
            // Closures sent through the handle that never ran are dropped
            // with the reactor, and with them their reply senders.
            drop(reactor);
            let _ = events.send(HostEvent::ReactorEnded);
            result
        })?;
    match ready.recv() {
        Ok(server) => Ok((server, thread)),
        // The thread ended before it was ready: its result says why.
        Err(_) => match thread.join() {
            Ok(Err(err)) => Err(err),
            _ => Err(Error::Io(std::io::Error::other("the reactor thread ended early"))),
        },
    }
}

/// Forwards stdin, line by line, to the host's channel, from a thread of
/// its own so that the main thread can also hear of the reactor's end.
fn read_commands(events: mpsc::Sender<HostEvent>) {
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if events.send(HostEvent::Command(line)).is_err() {
                return;
            }
        }
        let _ = events.send(HostEvent::InputClosed);
    });
}

/// Runs one command line. Returns `false` when the host should shut down.
fn run_command(server: &Server, line: &str) -> bool {
    let listener = server.listener;
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "" => {}
        "stats" => match ask(&server.handle, move |reactor| reactor.connection_count(listener)) {
            Some(count) => println!("connections {count}"),
            None => warn!("stats: the reactor did not answer"),
        },
        "broadcast" => {
            let line = format!("{rest}\n").into_bytes();
            let sent = ask(&server.handle, move |reactor| {
                // The shared payload is made on the reactor's thread: an
                // `Rc` cannot cross threads, the `Vec` inside it can.
                let payload: Rc<[u8]> = Rc::from(line);
                reactor.broadcast(listener, &payload)
            });
            match sent {
                Some(count) => println!("broadcast {count}"),
                None => warn!("broadcast: the reactor did not answer"),
            }
        }
        "metrics" => match server.handle.metrics(REPLY_TIMEOUT) {
            // What a host hands its own registry: counters as counters,
            // `connections_open` as a gauge, the histogram as buckets.
            Some(m) => println!(
                "metrics turns={} accepted={} open={} read={} written={} slow={} turn_p99_us={}",
                m.turns,
                m.accepted,
                m.connections_open,
                m.bytes_read,
                m.bytes_written,
                m.slow_callbacks,
                m.turn_durations.quantile(0.99).map_or(0, |d| d.as_micros()),
            ),
            None => warn!("metrics: the reactor did not answer"),
        },
        "quit" => return false,
        _ => warn!("unknown command {word:?} (stats, broadcast TEXT, metrics, quit)"),
    }
    true
}

/// Runs `f` on the reactor's thread, between two turns of its loop, and
/// waits for what it returns.
///
/// `None` when there is no answer: the reactor is gone (`Handle::run`
/// returns `false`), or it stopped before running `f`, in which case `f`
/// is dropped with the reactor, unrun, and the reply channel closes. The
/// timeout covers a reactor stuck in a handler that blocks.
fn ask<R, F>(handle: &Handle, f: F) -> Option<R>
where
    R: Send + 'static,
    F: FnOnce(&mut Reactor) -> R + Send + 'static,
{
    let (reply_tx, reply) = mpsc::channel();
    let sent = handle.run(move |reactor| {
        let _ = reply_tx.send(f(reactor));
    });
    if !sent {
        return None;
    }
    reply.recv_timeout(REPLY_TIMEOUT).ok()
}
