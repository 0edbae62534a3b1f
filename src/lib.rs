//! # evloop
//!
//! A small single-threaded reactor on [mio]: listening, connected and
//! datagram sockets (TCP, UDP, Unix) live in one slab, each connection runs
//! an explicit state machine, and protocols plug in as trait objects.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use evloop::{Addr, Context, Reactor, StreamHandler};
//!
//! /// Sends every byte back.
//! struct Echo;
//!
//! impl StreamHandler for Echo {
//!     fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
//!         cx.send(data);
//!         data.len()
//!     }
//! }
//!
//! let mut reactor = Reactor::new()?;
//! let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Echo)?;
//! println!("listening tcp {}", reactor.local_addr(key).expect("bound"));
//! reactor.run()?; // one thread, every connection
//! # Ok(())
//! # }
//! ```
//!
//! ## A handler that panics
//!
//! A panic in a handler's callback (or a factory's) is caught: it is logged
//! at error level with the source's key, and that source alone is reset or
//! removed; its handler is dropped without `on_close`. The reactor goes on
//! serving everything else. The closure of a timer of the reactor itself
//! ([`Reactor::set_timer`]) is caught the same way, and a repeating one
//! is cancelled. This does not hold with `panic = "abort"`, and a handler
//! whose `Drop` panics during that unwind aborts the process. The details
//! are in `src/handler.rs` and `docs/architecture.md`.
//!
//! ## Module map
//!
//! | module | owns |
//! |---|---|
//! | `reactor` | [`Reactor`]: the loop, dispatch, timers, deferred work, shutdown; its own timers ([`ReactorTimer`]) and its descriptor for a host loop |
//! | `token` | [`Key`]: slot index + generation, packed into a mio token |
//! | `registry` | the slab of sources, generation bumped on every removal |
//! | `source` | what a slot holds; [`FdSource`] for raw descriptors |
//! | `listener` | accept loop, per-listener limit, `EMFILE` back-off and spare descriptor |
//! | `connection` | [`ConnState`], the per-connection state machine; read and write paths |
//! | `datagram` | UDP and Unix datagram sockets, [`DatagramOptions`] |
//! | `write_queue` | output chunks, vectored writes, `sendfile`, watermarks' level |
//! | `timer` | [`TimerId`], the deadline heap |
//! | `handle` | [`Handle`]: wake, stop, shut down, run closures from other threads |
//! | `handler` | the traits protocols implement; the guard that contains a handler's panic |
//! | `context` | [`Context`]: what a handler may do, to its source and to others by key |
//! | `connect` | [`ConnectOptions`]: connect timeout, options and socket hook of outbound connections |
//! | [`codec`] | line and length-prefixed framers |
//! | [`protocols`] | the shipped handlers |
//! | [`relay`] | two connections tied together both ways, with backpressure, half-close and reset passed on |
//! | [`activation`] | sockets handed over by a service manager (systemd's `LISTEN_FDS`) |
//! | [`metrics`] | what the loop has done: counters, the turn-time histogram, the slow-callback watchdog, the flight recorder, a Prometheus collector |
//! | [`admin`] | the admin listener: `/metrics`, `/stats`, `/trace` and a live page, served by the loop it shows |
//! | [`shard`] | a reactor per core: shards on threads, messages between them batched per turn |
//! | [`signals`] | signals as loop events: SIGINT and SIGTERM for graceful shutdown, any other to a handler |
//! | [`stdin`] | standard input's lines as loop events: terminals, pipes, sockets and regular files |
//! | [`text`] | peer text made safe to show: control characters and line separators replaced |
//! | [`tls`] | TLS (rustls) as a layer under any stream handler: [`tls::ServerTls`] on a listener |
//!
//! [mio]: https://docs.rs/mio

#![deny(missing_docs)]
#![deny(unsafe_code)] // but in `sys`, the one file of system calls
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![doc(test(attr(deny(warnings))))]

#[cfg(not(unix))]
compile_error!("evloop runs on Unix-like systems (it uses Unix sockets and sendfile)");

pub mod activation;
mod addr;
pub mod admin;
mod balance;
pub mod codec;
mod conn_state;
mod connect;
mod connection;
mod context;
mod core;
mod datagram;
mod error;
mod handle;
mod handler;
mod listener;
pub mod metrics;
pub mod protocols;
mod reactor;
mod registry;
pub mod relay;
mod resolve;
mod services;
pub mod shard;
pub mod signals;
mod source;
pub mod stdin;
#[allow(unsafe_code)]
mod sys;
pub mod text;
mod timer;
pub mod tls;
mod token;
mod write_queue;

pub use addr::Addr;
pub use conn_state::ConnState;
pub use connect::ConnectOptions;
pub use connection::{ConnectionOptions, OverflowPolicy};
pub use context::{Context, SourceRef};
pub use datagram::DatagramOptions;
pub use error::Error;
pub use handle::Handle;
pub use handler::{CloseReason, DatagramHandler, SourceHandler, StreamFactory, StreamHandler};
pub use listener::{ConnectionLimit, ListenerOptions};
pub use reactor::{Reactor, ReactorTimer};
pub use source::FdSource;
pub use timer::TimerId;
pub use token::Key;

pub use mio::event::Event;
pub use mio::Interest;

/// The mio evloop is built on, this exact version: a custom source
/// implements [`mio::event::Source`] (or is one of mio's types, such as
/// `mio::unix::pipe`) for [`Reactor::register`]. Naming it as `evloop::mio`
/// keeps a program on the same mio as evloop, with no second copy to pin.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use evloop::mio::unix::pipe;
/// use evloop::{Context, Event, Interest, Reactor, SourceHandler};
///
/// /// Closes its source at the first event.
/// struct OneShot(pipe::Receiver);
///
/// impl SourceHandler for OneShot {
///     fn source(&mut self) -> &mut dyn evloop::mio::event::Source {
///         &mut self.0
///     }
///
///     fn on_ready(&mut self, cx: &mut Context<'_>, _event: &Event) {
///         cx.close();
///     }
/// }
///
/// let (sender, receiver) = pipe::new()?;
/// let mut reactor = Reactor::new()?;
/// let key = reactor.register(OneShot(receiver), Interest::READABLE)?;
/// drop(sender); // the end of the pipe: an event
/// reactor.run_once(Some(std::time::Duration::from_secs(5)))?;
/// assert!(!reactor.contains(key));
/// # Ok(())
/// # }
/// ```
pub use mio;

/// The README's code, compiled as a doc test so it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
