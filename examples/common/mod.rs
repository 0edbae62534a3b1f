//! What every example server shares: flag parsing with the contract's exit
//! codes, logging to stderr, announce lines on stdout, one-line bind errors,
//! SIGINT/SIGTERM shutdown, and `--threads N` ([`serve_sharded`]).
#![allow(dead_code)] // each example uses a different part of this module

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use clap::{Args, Parser};

use evloop::shard::{self, Balance, ShardError, ShardOptions, Shards};
use evloop::tls::{ClientTls, ServerTls};
use evloop::{Addr, DatagramHandler, DatagramOptions, Error, Key, ListenerOptions, Reactor, StreamFactory};

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

/// The flags of a server's TLS listeners (`--tls`, `--https`): the
/// certificate chain, its key, and how long a handshake may take.
#[derive(Args, Debug)]
pub struct TlsFlags {
    /// PEM certificate chain for the TLS listeners
    #[arg(long, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC) for the TLS listeners
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// Seconds a TLS client may take to finish its handshake
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = positive_seconds)]
    pub handshake_timeout: Duration,
}

impl TlsFlags {
    /// The TLS of a listener offering `alpn` (none: no ALPN), when `wanted`
    /// (some TLS listener was asked for): a missing `--cert` or `--key` is
    /// a usage error (exit 2), a file that cannot be used one line naming
    /// it (exit 1).
    pub fn server(&self, wanted: bool, alpn: &[&[u8]]) -> Option<ServerTls> {
        if !wanted {
            return None;
        }
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            usage_error("a TLS listener needs --cert PEM and --key PEM");
        };
        let mut tls = ServerTls::from_pem_files_with_alpn(cert, key, alpn).unwrap_or_else(|err| fail(&err));
        tls.handshake_timeout = self.handshake_timeout;
        Some(tls)
    }
}

/// `--admin ADDR`, `--slow-callback MS`, `--trace-events N`: the loop's own
/// view over HTTP ([`evloop::admin`]), the watchdog and the flight recorder.
#[derive(Args, Debug)]
pub struct AdminFlags {
    /// HTTP admin listener: /metrics, /stats, /trace and a live page at / (bind it to loopback)
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Log and count callbacks that run longer than MS milliseconds (0: no watchdog)
    #[arg(long, value_name = "MS", default_value = "10")]
    pub slow_callback: u64,
    /// Events each reactor's flight recorder keeps (0: no recorder)
    #[arg(long, value_name = "N", default_value = "4096")]
    pub trace_events: usize,
}

impl AdminFlags {
    /// Sets the watchdog and the flight recorder of `reactor` as the flags
    /// say, then binds the admin listener, if asked for, on shard 0 alone
    /// (the other shards answer it by message), and announces it as
    /// `admin`.
    pub fn apply(&self, reactor: &mut Reactor, shards: Option<&Shards>) {
        let threshold = (self.slow_callback > 0).then(|| Duration::from_millis(self.slow_callback));
        reactor.set_slow_callback(threshold);
        reactor.set_trace_capacity(self.trace_events);
        let Some(addr) = self.admin else { return };
        if shards.is_some_and(|s| s.id() != 0) {
            return;
        }
        let admin = match shards {
            Some(shards) => evloop::admin::Admin::sharded(shards),
            None => evloop::admin::Admin::new(),
        };
        let bound = reactor.listen_tcp_with(addr, evloop::admin::Admin::listener_options(), admin);
        bind_or_exit(reactor, "admin", bound);
    }
}

/// The flags of a client that may speak TLS: `--tls`, the roots to trust
/// and the name the server's certificate must carry.
#[derive(Args, Debug)]
pub struct ClientTlsFlags {
    /// Speak TLS to the server
    #[arg(long)]
    pub tls: bool,
    /// PEM file of the roots to trust (default: the system's)
    #[arg(long, value_name = "PEM", requires = "tls")]
    pub cacert: Option<PathBuf>,
    /// Name the server's certificate must be valid for (default: the host of ADDR)
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub server_name: Option<String>,
}

impl ClientTlsFlags {
    /// The TLS to speak, if `--tls`: roots that cannot be read are one
    /// line naming the file, and exit 1.
    pub fn client(&self) -> Option<ClientTls> {
        if !self.tls {
            return None;
        }
        let tls = match &self.cacert {
            Some(path) => ClientTls::with_roots_pem(path),
            None => ClientTls::with_system_roots(),
        };
        Some(tls.unwrap_or_else(|err| fail(&err)))
    }

    /// The name to verify the server's certificate against.
    pub fn server_name(&self, addr: &SocketAddr) -> String {
        self.server_name.clone().unwrap_or_else(|| addr.ip().to_string())
    }
}

/// `options` with `tls` on.
pub fn with_tls(mut options: ListenerOptions, tls: &ServerTls) -> ListenerOptions {
    options.tls = Some(tls.clone());
    options
}

/// Parses a number of seconds that must be more than zero (a deadline of
/// zero would cut every connection at once).
pub fn positive_seconds(text: &str) -> Result<Duration, String> {
    let secs = seconds(text)?;
    if secs.is_zero() {
        return Err(format!("'{text}' must be more than 0"));
    }
    Ok(secs)
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

/// Parses `--threads N`: a whole number of reactor threads, at least 1.
pub fn threads(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("--threads must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{text}' is not a number of threads")),
    }
}

/// Runs a server on `threads` reactors, one per thread, until it ends:
/// the `--threads N` of the contract. The process then runs exactly
/// `threads` threads: the calling thread is shard 0, [`shard::run`] starts
/// the others, and nothing here starts any more (signal handling is a pipe
/// that shard 0's loop reads).
///
/// `setup` runs once on each shard's thread, all at the same time, with
/// that shard's reactor, its [`Shards`] and a [`Binder`]. It binds every
/// listening socket through the binder, **in the same order on every
/// shard** (the `i`-th bind of shard `k` is the `i`-th of shard 0). The
/// binder does the rest:
///
/// - shard 0 installs SIGINT/SIGTERM shutdown before `setup` runs, so that a
///   signal after the first announce line already finds the server ready;
///   [`shard::run`] carries the shutdown (within `shutdown_timeout`) to
///   every shard;
/// - shard 0 binds each address first and publishes the address it really
///   got (a port 0 becomes a real port); the other shards wait for it and
///   bind that same address, with `SO_REUSEPORT` for TCP and UDP, so the
///   kernel spreads connections and datagrams over the shards; shard 0
///   announces the address (one line, whatever the number of shards) once
///   every shard has bound it, so that a client that reads the line finds
///   every shard there;
/// - a Unix stream path is bound once (by shard 0) and every shard adopts
///   a clone of that listener: they accept from one queue. The file is
///   removed once, after every shard has ended;
/// - a bind failure is one line naming the address, and exit 1; so is an
///   error returned by `setup`.
///
/// With `threads == 1` this is the one-thread server of old: one reactor on
/// the calling thread, signals installed before anything is bound, and
/// the sockets bound as [`Reactor::listen_tcp_with`], [`Reactor::bind_udp`]
/// and [`Reactor::listen_unix_with`] bind them (no `SO_REUSEPORT`).
pub fn serve_sharded<F>(threads: usize, shutdown_timeout: Duration, setup: F) -> ExitCode
where
    F: Fn(&mut Reactor, &Shards, &mut Binder) -> Result<(), Error> + Sync,
{
    let count = threads.max(1);
    let table = Arc::new(BindTable::default());
    let options = ShardOptions {
        threads: count,
        shutdown_timeout,
        ..ShardOptions::default()
    };
    let ran = shard::run(options, |reactor, shards| {
        let mut binder = Binder {
            table: Arc::clone(&table),
            shard: shards.id(),
            count,
            next: 0,
            balance: false,
        };
        if shards.id() == 0 {
            if let Err(err) = evloop::signals::shutdown_on_signals(reactor, shutdown_timeout) {
                fail(&err);
            }
        }
        // A setup error is the server's failure to start: one line, exit 1,
        // as a bind failure (and the other shards cannot wait for shard 0).
        setup(reactor, shards, &mut binder).unwrap_or_else(|err| fail(&err));
        Ok(())
    });
    // Every shard has ended and dropped its sockets: the files can go.
    for path in table.unix_paths() {
        let _ = std::fs::remove_file(path);
    }
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        // One thread: the error as the one-thread server reported it.
        Err(ShardError::Setup { error, .. } | ShardError::Run { error, .. }) if count == 1 => fail(&error),
        Err(err) => fail(&err),
    }
}

/// How each shard binds its listening sockets (see [`serve_sharded`]).
/// Each call binds (or exits with one line naming the address), and on
/// shard 0 announces the socket with `kind` (`tcp`, `udp`, `unix`, `http`).
pub struct Binder {
    table: Arc<BindTable>,
    shard: usize,
    count: usize,
    /// The index of this shard's next bind.
    next: usize,
    /// Whether TCP listeners balance their connections ([`Binder::balance`]).
    balance: bool,
}

/// What shard 0 bound, in order, for the other shards.
#[derive(Default)]
struct BindTable {
    state: Mutex<BindState>,
    changed: Condvar,
}

#[derive(Default)]
struct BindState {
    bound: Vec<Bound>,
    /// For each of `bound`, how many other shards have bound it too.
    joined: Vec<usize>,
    /// How many other shards' setups have ended (they bind nothing more).
    left: usize,
    /// Shard 0's setup has ended: it binds nothing more.
    done: bool,
}

/// One socket shard 0 bound.
enum Bound {
    /// The real address of a TCP listener or UDP socket, and the balancing
    /// group of a balanced TCP listener.
    Inet(SocketAddr, Option<Balance>),
    /// A Unix stream listener, cloned for each shard, and its file.
    Unix(UnixListener, PathBuf),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BindTable {
    fn publish(&self, bound: Bound) {
        let mut state = lock(&self.state);
        state.bound.push(bound);
        state.joined.push(0);
        drop(state);
        self.changed.notify_all();
    }

    /// Another shard has bound shard 0's bind number `index`.
    fn join(&self, index: usize) {
        lock(&self.state).joined[index] += 1;
        self.changed.notify_all();
    }

    /// Another shard's setup has ended.
    fn leave(&self) {
        lock(&self.state).left += 1;
        self.changed.notify_all();
    }

    /// Waits until the `others` other shards have bound shard 0's bind
    /// number `index` (or ended): only then does a connection to it have
    /// every shard to go to. They wait for nothing but shard 0's bind.
    fn await_joined(&self, index: usize, others: usize) {
        let mut state = lock(&self.state);
        while state.joined[index] + state.left < others {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn finish(&self) {
        lock(&self.state).done = true;
        self.changed.notify_all();
    }

    /// Waits for shard 0's bind number `index`, and reads it with `read`.
    /// Shard 0 never waits on the others, so this wait is short.
    fn wait<R>(&self, index: usize, read: impl FnOnce(&Bound) -> R) -> R {
        let mut state = lock(&self.state);
        loop {
            if let Some(bound) = state.bound.get(index) {
                return read(bound);
            }
            assert!(
                !state.done,
                "shard 0 bound {} sockets, and a shard binds more: every shard must bind the same, in the same order",
                state.bound.len()
            );
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn unix_paths(&self) -> Vec<PathBuf> {
        let state = lock(&self.state);
        let paths = state.bound.iter().filter_map(|bound| match bound {
            Bound::Unix(_, path) => Some(path.clone()),
            Bound::Inet(..) => None,
        });
        paths.collect()
    }
}

impl Drop for Binder {
    fn drop(&mut self) {
        // Also when shard 0's setup panics: no shard waits for it forever.
        if self.shard == 0 {
            self.table.finish();
        } else {
            self.table.leave();
        }
    }
}

impl Binder {
    /// The number of this shard, from 0.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// The number of shards.
    pub fn threads(&self) -> usize {
        self.count
    }

    /// Balances each TCP listener bound from now on over the shards
    /// (`--balance`, an evloop extension; see [`ListenerOptions::balance`]):
    /// a connection the kernel gives a shard that holds more than one
    /// connection over the least loaded one is handed to that one. Every
    /// shard must ask the same. Nothing changes with one thread.
    pub fn balance(&mut self, on: bool) {
        self.balance = on && self.count > 1;
    }

    /// Shard 0's address for this shard's next bind, its balancing group,
    /// and its number.
    fn shard0_addr(&mut self) -> (usize, SocketAddr, Option<Balance>) {
        let index = self.next;
        self.next += 1;
        let (addr, balance) = self.table.wait(index, |bound| match bound {
            Bound::Inet(addr, balance) => (*addr, balance.clone()),
            Bound::Unix(..) => panic!("bind {index}: shard 0 bound a Unix path here"),
        });
        (index, addr, balance)
    }

    /// Shard 0 bound `key`: publish its real address (and the balancing
    /// group of its listener), and announce it once every shard has bound
    /// it too.
    fn bound_inet(&mut self, reactor: &Reactor, kind: &str, key: Key, balance: Option<Balance>) {
        let addr = reactor.local_addr(key).expect("a bound socket has an address");
        let inet = addr.as_inet().expect("a TCP or UDP socket");
        self.table.publish(Bound::Inet(inet, balance));
        self.table.await_joined(self.next, self.count - 1);
        self.next += 1;
        announce(kind, &addr);
    }

    /// A TCP listener on `addr` (`SO_REUSEPORT` with several shards:
    /// `options.reuse_port` is set here, and `options.balance` too, after
    /// [`Binder::balance`]).
    pub fn tcp(
        &mut self,
        reactor: &mut Reactor,
        kind: &str,
        addr: SocketAddr,
        mut options: ListenerOptions,
        factory: impl StreamFactory + 'static,
    ) -> Key {
        options.reuse_port = self.count > 1;
        if self.shard == 0 {
            let balance = self.balance.then(|| Balance::new(self.count));
            options.balance = balance.clone();
            let key = reactor
                .listen_tcp_with(addr, options, factory)
                .unwrap_or_else(|err| fail(&err));
            self.bound_inet(reactor, kind, key, balance);
            key
        } else {
            let (index, addr, balance) = self.shard0_addr();
            options.balance = balance;
            let key = reactor
                .listen_tcp_with(addr, options, factory)
                .unwrap_or_else(|err| fail(&err));
            self.table.join(index);
            key
        }
    }

    /// A UDP socket on `addr` (`SO_REUSEPORT` with several shards).
    pub fn udp(
        &mut self,
        reactor: &mut Reactor,
        kind: &str,
        addr: SocketAddr,
        handler: impl DatagramHandler + 'static,
    ) -> Key {
        let options = DatagramOptions {
            reuse_port: self.count > 1,
        };
        if self.shard == 0 {
            let key = reactor
                .bind_udp_with(addr, options, handler)
                .unwrap_or_else(|err| fail(&err));
            self.bound_inet(reactor, kind, key, None);
            key
        } else {
            let (index, addr, _) = self.shard0_addr();
            let key = reactor
                .bind_udp_with(addr, options, handler)
                .unwrap_or_else(|err| fail(&err));
            self.table.join(index);
            key
        }
    }

    /// A Unix stream listener at `path`: bound once, by shard 0; every
    /// shard serves a clone of it.
    pub fn unix(
        &mut self,
        reactor: &mut Reactor,
        kind: &str,
        path: &Path,
        options: ListenerOptions,
        factory: impl StreamFactory + 'static,
    ) -> Key {
        let index = self.next;
        self.next += 1;
        if self.count == 1 {
            // One shard: the reactor binds and owns the file, as ever.
            let bound = reactor.listen_unix_with(path, options, factory);
            return bind_or_exit(reactor, kind, bound);
        }
        if self.shard == 0 {
            let listener = bind_unix(path).unwrap_or_else(|err| fail(&err));
            let clone = listener.try_clone().unwrap_or_else(|err| fail(&err));
            let key = reactor
                .adopt_unix_listener(clone, options, factory)
                .unwrap_or_else(|err| fail(&err));
            self.table.publish(Bound::Unix(listener, path.to_path_buf()));
            self.table.await_joined(index, self.count - 1);
            announce(kind, &Addr::Unix(Some(path.to_path_buf())));
            key
        } else {
            let clone = self.table.wait(index, |bound| match bound {
                Bound::Unix(listener, _) => listener.try_clone(),
                Bound::Inet(..) => panic!("bind {index}: shard 0 bound an address here"),
            });
            let clone = clone.unwrap_or_else(|err| fail(&err));
            let key = reactor
                .adopt_unix_listener(clone, options, factory)
                .unwrap_or_else(|err| fail(&err));
            self.table.join(index);
            key
        }
    }
}

/// Binds a Unix stream listener at `path` as [`Reactor::listen_unix_with`]
/// does: a stale socket file (nobody accepts on it) is replaced.
fn bind_unix(path: &Path) -> Result<UnixListener, Error> {
    use std::os::unix::fs::FileTypeExt;
    let bind_error = |source| Error::Bind {
        addr: path.display().to_string(),
        source,
    };
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    // std's backlog on Linux is the system's largest (`somaxconn`).
    UnixListener::bind(path).map_err(bind_error)
}

/// Runs the reactor (made by [`server_reactor`]) until it ends.
pub fn serve(mut reactor: Reactor) -> ExitCode {
    match reactor.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}
