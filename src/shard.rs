//! Shards: a reactor per core, and messages between them, batched per turn.
//!
//! [`run`] starts `threads` reactors, one per thread: the calling thread
//! runs shard 0 and threads named `evloop-shard-N` run shards 1 to N-1.
//! Each shard's `setup` is called on its own thread with its own
//! [`Reactor`] and a [`Shards`] value: its number, the number of shards,
//! and the way to send the others work. A shard shares nothing with the
//! others but what its messages carry; every source a setup registers
//! (for instance a listener bound with
//! [`ListenerOptions::reuse_port`](crate::ListenerOptions), so that the
//! kernel spreads connections over the shards) lives on that shard alone.
//!
//! **Messages.** [`Shards::send`] takes a closure `FnOnce(&mut Reactor) +
//! Send` and only appends it to the sending shard's outbox for the target.
//! At the end of the sender's turn (step 10 of the loop), each non-empty
//! outbox leaves as *one* batch: one [`Handle::run`], so one channel send
//! and one wakeup of the target however many messages it holds. The
//! target runs the batch at its step 7, in the order the messages were
//! sent. A message sent to the sending shard itself takes the same path
//! and runs at its own step 7 of the next turn.
//!
//! **The bound.** Messages in flight from one shard to another (sent, not
//! yet run by the target) are counted per ordered pair. At
//! [`ShardOptions::queue_capacity`], `send` returns [`SendError::Full`]
//! with the message: a shard that falls behind makes its senders decide,
//! at once, what to do with the work (drop it, close the connection that
//! produced it, try again later). Nothing ever blocks a sender's loop.
//!
//! **Stopping.** [`ShardsHandle::stop`] and [`ShardsHandle::shutdown`]
//! reach every shard. When any shard begins a graceful shutdown, or its
//! `run` returns, the others are asked to shut down gracefully within
//! [`ShardOptions::shutdown_timeout`]. Signals belong to shard 0: its setup
//! may call [`signals::shutdown_on_signals`](crate::signals::shutdown_on_signals),
//! and one SIGTERM then ends every shard. A message to a shard whose loop
//! has ended is refused with [`SendError::Stopped`]; messages still in
//! flight when a loop ends are dropped without running.
//!
//! **Panics.** A handler's panic is contained by its reactor as usual (the
//! source goes, the loop goes on). A panic that leaves a shard's loop, in
//! its setup, a message, a [`Handle::run`] closure or an end-of-turn hook,
//! is logged at error level with the shard's number; the other shards shut
//! down gracefully and [`run`] returns [`ShardError::Panicked`].
//!
//! Two shards, one message: shard 1 asks shard 0 to stop them all.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use evloop::shard::{self, ShardOptions};
//!
//! let options = ShardOptions { threads: 2, ..ShardOptions::default() };
//! shard::run(options, |_reactor, shards| {
//!     if shards.id() == 1 {
//!         let all = shards.handle();
//!         // Runs on shard 0, at its step 7.
//!         shards.send(0, move |_reactor| all.stop()).ok();
//!     }
//!     Ok(())
//! })?;
//! # Ok(())
//! # }
//! ```

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use log::{debug, error, warn};

pub use crate::balance::Balance;
use crate::{sys, Error, Handle, Reactor};

/// The default of [`ShardOptions::queue_capacity`]: messages in flight from
/// one shard to another.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;

/// How many shards, where they run, and their limits.
#[derive(Clone, Debug)]
pub struct ShardOptions {
    /// Number of shards, each a reactor on its own thread (at least 1; 0
    /// counts as 1). The calling thread runs shard 0. Default 1.
    pub threads: usize,
    /// Pin shard `i` to the `i`-th CPU this process may use (modulo their
    /// number, as `sched_getaffinity` reports them). A failure to pin is a
    /// warning, and the shard runs unpinned. Shard 0's pinning of the
    /// calling thread is undone when [`run`] returns. Default `false`.
    pub pin: bool,
    /// Messages in flight (sent, not yet run) from one shard to another
    /// before [`Shards::send`] refuses with [`SendError::Full`] (at least
    /// 1). Default [`DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
    /// Time the other shards get to finish their connections once one
    /// shard shuts down, stops, fails or panics. Default 5 s.
    pub shutdown_timeout: Duration,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            threads: 1,
            pin: false,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// Why [`run`] failed. The first failure is reported; the other shards were
/// shut down because of it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ShardError {
    /// A shard's reactor could not be made, or its setup returned an error.
    Setup {
        /// The shard's number.
        shard: usize,
        /// What failed.
        error: Error,
    },
    /// A shard's loop failed ([`Reactor::run`] returned an error).
    Run {
        /// The shard's number.
        shard: usize,
        /// What failed.
        error: Error,
    },
    /// A shard panicked, in its setup or in its loop, outside any handler.
    Panicked {
        /// The shard's number.
        shard: usize,
        /// The panic's message.
        message: String,
    },
    /// A shard's thread could not be started.
    Spawn {
        /// The shard's number.
        shard: usize,
        /// What the operating system said.
        error: io::Error,
    },
}

impl fmt::Display for ShardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardError::Setup { shard, error } => write!(f, "shard {shard}: setup failed: {error}"),
            ShardError::Run { shard, error } => write!(f, "shard {shard}: {error}"),
            ShardError::Panicked { shard, message } => write!(f, "shard {shard} panicked: {message}"),
            ShardError::Spawn { shard, error } => {
                write!(f, "shard {shard}: cannot start its thread: {error}")
            }
        }
    }
}

impl std::error::Error for ShardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ShardError::Setup { error, .. } | ShardError::Run { error, .. } => Some(error),
            ShardError::Spawn { error, .. } => Some(error),
            ShardError::Panicked { .. } => None,
        }
    }
}

/// A message [`Shards::send`] did not take, given back.
pub enum SendError<M> {
    /// The pair's queue is at [`ShardOptions::queue_capacity`]: the target
    /// has not yet run that many messages from this shard.
    Full(M),
    /// The target's loop has ended.
    Stopped(M),
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::Stopped(m) => m,
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Stopped(_) => f.write_str("Stopped(..)"),
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("the target shard's queue is full"),
            SendError::Stopped(_) => f.write_str("the target shard has stopped"),
        }
    }
}

impl<M> std::error::Error for SendError<M> {}

/// A message as it travels.
type Message = Box<dyn FnOnce(&mut Reactor) + Send>;

/// What all shards share.
struct Shared {
    count: usize,
    capacity: usize,
    shutdown_timeout: Duration,
    /// Every shard's handle, once every shard has made its reactor.
    handles: OnceLock<Vec<Handle>>,
    arrivals: Mutex<Arrivals>,
    all_arrived: Condvar,
    /// Messages in flight, `[from * count + to]`.
    in_flight: Vec<AtomicUsize>,
    /// Whose loop has ended.
    stopped: Vec<AtomicBool>,
    /// Batches each shard has received.
    batches: Vec<AtomicU64>,
    /// Whether the shards were all asked to shut down.
    ending: AtomicBool,
    /// The first failure.
    failure: Mutex<Option<ShardError>>,
}

/// Shards that made (or failed to make) their reactor, before any runs.
struct Arrivals {
    handles: Vec<Option<Handle>>,
    arrived: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(count: usize, options: &ShardOptions) -> Shared {
        Shared {
            count,
            capacity: options.queue_capacity.max(1),
            shutdown_timeout: options.shutdown_timeout,
            handles: OnceLock::new(),
            arrivals: Mutex::new(Arrivals {
                handles: vec![None; count],
                arrived: 0,
            }),
            all_arrived: Condvar::new(),
            in_flight: (0..count * count).map(|_| AtomicUsize::new(0)).collect(),
            stopped: (0..count).map(|_| AtomicBool::new(false)).collect(),
            batches: (0..count).map(|_| AtomicU64::new(0)).collect(),
            ending: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    /// Shard `id` has made its reactor (`Some`) or failed to.
    fn arrive(&self, id: usize, handle: Option<Handle>) {
        let mut arrivals = lock(&self.arrivals);
        arrivals.handles[id] = handle;
        arrivals.arrived += 1;
        if arrivals.arrived == self.count {
            if arrivals.handles.iter().all(Option::is_some) {
                let _ = self
                    .handles
                    .set(arrivals.handles.iter().flatten().cloned().collect());
            }
            self.all_arrived.notify_all();
        }
    }

    /// Waits for every shard to arrive; whether all have a reactor. Each
    /// shard arrives without blocking on anything, so this wait is short.
    fn wait_all(&self) -> bool {
        let mut arrivals = lock(&self.arrivals);
        while arrivals.arrived < self.count {
            arrivals = self
                .all_arrived
                .wait(arrivals)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.handles.get().is_some()
    }

    /// Records a failure; the first one is what [`run`] returns.
    fn fail(&self, failure: ShardError) {
        let mut first = lock(&self.failure);
        if first.is_none() {
            *first = Some(failure);
        }
    }

    fn panicked(&self, shard: usize, payload: &(dyn Any + Send)) {
        let message = panic_message(payload);
        error!("shard {shard} panicked: {message}");
        self.fail(ShardError::Panicked { shard, message });
    }

    /// Asks every shard but `from` to shut down gracefully, once.
    fn end_all(&self, from: usize) {
        if self.ending.swap(true, Ordering::AcqRel) {
            return;
        }
        debug!("shard {from}: asking the other shards to shut down");
        for (id, handle) in self.handles.get().into_iter().flatten().enumerate() {
            if id != from {
                handle.shutdown(self.shutdown_timeout);
            }
        }
    }

    /// Shard `id`'s loop has ended: refuse its messages from now on, and
    /// end the others.
    fn finish(&self, id: usize) {
        self.stopped[id].store(true, Ordering::Release);
        self.end_all(id);
    }

    /// Runs a batch from `from` on shard `to` (this thread).
    fn deliver(&self, from: usize, to: usize, batch: Vec<Message>, reactor: &mut Reactor) {
        self.batches[to].fetch_add(1, Ordering::Relaxed);
        let pair = &self.in_flight[from * self.count + to];
        for message in batch {
            message(reactor);
            pair.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

/// One shard's view: its number, the others, and its outboxes. Cheap to
/// clone into handlers (an `Rc`); it stays on the shard's thread.
#[derive(Clone)]
pub struct Shards {
    local: Rc<Local>,
}

struct Local {
    id: usize,
    shared: Arc<Shared>,
    /// Messages sent this turn, per target.
    outboxes: RefCell<Vec<Vec<Message>>>,
    /// Whether any outbox holds a message.
    dirty: Cell<bool>,
}

thread_local! {
    static CURRENT: RefCell<Option<Shards>> = const { RefCell::new(None) };
}

/// Makes a shard's [`Shards`] the thread's current one while it lives.
struct Current;

impl Current {
    fn set(shards: &Shards) -> Current {
        CURRENT.with(|current| *current.borrow_mut() = Some(shards.clone()));
        Current
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|current| current.borrow_mut().take());
    }
}

impl Shards {
    /// The shard running on this thread, if this thread runs one: how a
    /// message (a `Send` closure, which cannot carry a `Shards`) reaches
    /// the shard it runs on, for instance to answer.
    pub fn current() -> Option<Shards> {
        CURRENT.with(|current| current.borrow().clone())
    }

    /// This shard's number, from 0 to `count() - 1`.
    pub fn id(&self) -> usize {
        self.local.id
    }

    /// The number of shards.
    pub fn count(&self) -> usize {
        self.local.shared.count
    }

    /// A handle that stops or shuts down every shard, from any thread.
    pub fn handle(&self) -> ShardsHandle {
        ShardsHandle {
            shared: Arc::clone(&self.local.shared),
        }
    }

    /// Whether shard `shard`'s loop has ended (messages to it are refused).
    pub fn is_stopped(&self, shard: usize) -> bool {
        self.local.shared.stopped[shard].load(Ordering::Acquire)
    }

    /// Messages sent from this shard to `to` and not yet run there.
    pub fn in_flight(&self, to: usize) -> usize {
        let shared = &self.local.shared;
        shared.in_flight[self.local.id * shared.count + to].load(Ordering::Acquire)
    }

    /// Batches this shard has received: one per sending shard per turn of
    /// that sender in which it sent here, whatever the number of messages.
    pub fn batches_received(&self) -> u64 {
        self.local.shared.batches[self.local.id].load(Ordering::Relaxed)
    }

    /// Sends `message` to shard `to`, where it runs with that shard's
    /// reactor at its step 7, after every message this shard sent there
    /// before. The message waits in this shard's outbox until the end of
    /// the current turn (step 10), then leaves with the others of the turn
    /// for `to` as one batch, for one wakeup. Sent to this shard itself,
    /// it runs at step 7 of the next turn.
    ///
    /// A message sent from an end-of-turn hook added after this shard's
    /// setup returned goes out at the end of the next turn.
    ///
    /// # Errors
    ///
    /// The message is given back: [`SendError::Full`] when `to` has not
    /// yet run [`ShardOptions::queue_capacity`] messages from this shard,
    /// [`SendError::Stopped`] when `to`'s loop has ended. Nothing blocks.
    ///
    /// # Panics
    ///
    /// If `to` is not below [`Shards::count`].
    pub fn send<F>(&self, to: usize, message: F) -> Result<(), SendError<F>>
    where
        F: FnOnce(&mut Reactor) + Send + 'static,
    {
        let local = &*self.local;
        let shared = &*local.shared;
        assert!(to < shared.count, "no shard {to}: there are {}", shared.count);
        if shared.stopped[to].load(Ordering::Acquire) {
            return Err(SendError::Stopped(message));
        }
        // Only this thread adds to the pair's count, so it cannot pass the
        // capacity between the check and the addition.
        let pair = &shared.in_flight[local.id * shared.count + to];
        if pair.load(Ordering::Acquire) >= shared.capacity {
            return Err(SendError::Full(message));
        }
        pair.fetch_add(1, Ordering::AcqRel);
        local.outboxes.borrow_mut()[to].push(Box::new(message));
        local.dirty.set(true);
        Ok(())
    }

    /// Step 10 for shards: each non-empty outbox leaves as one batch; a
    /// shutdown begun here asks the others to shut down too.
    fn end_turn(&self, reactor: &Reactor) {
        self.flush();
        if reactor.is_shutting_down() {
            self.local.shared.end_all(self.local.id);
        }
    }

    /// Sends now, each as one batch, the messages this shard has queued
    /// since its last flush, instead of at the end of the turn (step 10).
    ///
    /// For work another shard should start while this one goes on with its
    /// turn: the chat calls it when a member's line is sent to the other
    /// shards, so that they write it to their members while this shard
    /// writes it to its own (at step 9), rather than after. Each flush that
    /// finds messages costs one [`Handle::run`] per target; batches sent
    /// before the target gets to them still cost it one wakeup together.
    pub fn flush(&self) {
        let local = &*self.local;
        if !local.dirty.replace(false) {
            return;
        }
        let Some(handles) = local.shared.handles.get() else {
            return;
        };
        let mut outboxes = local.outboxes.borrow_mut();
        for (to, outbox) in outboxes.iter_mut().enumerate() {
            if outbox.is_empty() {
                continue;
            }
            let batch = std::mem::take(outbox);
            let len = batch.len();
            let shared = Arc::clone(&local.shared);
            let from = local.id;
            if !handles[to].run(move |reactor| shared.deliver(from, to, batch, reactor)) {
                // The target's reactor is gone, and its stopped flag was set
                // before that: later sends are refused.
                debug!("shard {from}: {len} messages to stopped shard {to} dropped");
            }
        }
    }
}

impl fmt::Debug for Shards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shards")
            .field("id", &self.id())
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

/// Stops or shuts down every shard, from any thread (`Send + Sync + Clone`).
#[derive(Clone)]
pub struct ShardsHandle {
    shared: Arc<Shared>,
}

impl ShardsHandle {
    fn handles(&self) -> &[Handle] {
        self.shared.handles.get().map_or(&[], Vec::as_slice)
    }

    /// Makes every shard's `run` return at the end of its current turn,
    /// leaving its sources open (they close as its reactor is dropped).
    pub fn stop(&self) {
        for handle in self.handles() {
            handle.stop();
        }
    }

    /// Starts a graceful shutdown of every shard (see [`Reactor::shutdown`]).
    pub fn shutdown(&self, timeout: Duration) {
        for handle in self.handles() {
            handle.shutdown(timeout);
        }
    }

    /// The number of shards.
    pub fn count(&self) -> usize {
        self.shared.count
    }

    /// Shard `shard`'s own [`Handle`], to run a closure there from another
    /// thread; `None` if there is no such shard.
    pub fn shard(&self, shard: usize) -> Option<Handle> {
        self.handles().get(shard).cloned()
    }
}

impl fmt::Debug for ShardsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardsHandle")
            .field("count", &self.shared.count)
            .finish_non_exhaustive()
    }
}

/// Runs `options.threads` shards, each a [`Reactor`] on its own thread,
/// until every one has stopped. `setup` is called on each shard's thread
/// with its reactor and its [`Shards`]; the calling thread runs shard 0.
/// `setup` may borrow from the caller: every shard's thread has ended when
/// `run` returns.
///
/// # Errors
///
/// The first failure of any shard, after every other shard has stopped:
/// [`ShardError::Setup`] (its reactor or its setup failed),
/// [`ShardError::Panicked`], [`ShardError::Run`] or [`ShardError::Spawn`].
pub fn run<F>(options: ShardOptions, setup: F) -> Result<(), ShardError>
where
    F: Fn(&mut Reactor, &Shards) -> Result<(), Error> + Sync,
{
    let count = options.threads.max(1);
    let cpus = if options.pin { allowed_cpus() } else { None };
    let cpu_of = |id: usize| cpus.as_ref().map(|cpus| cpus[id % cpus.len()]);
    let shared = Arc::new(Shared::new(count, &options));
    let setup = &setup;
    thread::scope(|scope| {
        let mut threads = Vec::with_capacity(count - 1);
        for id in 1..count {
            let mine = Arc::clone(&shared);
            let cpu = cpu_of(id);
            let spawned = thread::Builder::new()
                .name(format!("evloop-shard-{id}"))
                .spawn_scoped(scope, move || shard_life(id, &mine, setup, cpu));
            match spawned {
                Ok(thread) => threads.push((id, thread)),
                Err(error) => {
                    error!("shard {id}: cannot start its thread: {error}");
                    shared.fail(ShardError::Spawn { shard: id, error });
                    for missing in id..count {
                        shared.arrive(missing, None);
                    }
                    break;
                }
            }
        }
        shard_life(0, &shared, setup, cpu_of(0));
        if let Some(cpus) = &cpus {
            if let Err(err) = sys::set_cpu_affinity(cpus) {
                warn!("cannot restore the calling thread's CPUs: {err}");
            }
        }
        for (id, thread) in threads {
            if let Err(payload) = thread.join() {
                shared.panicked(id, &*payload);
            }
        }
    });
    let failure = lock(&shared.failure).take();
    failure.map_or(Ok(()), Err)
}

/// The CPUs this process may use, or `None` (with a warning) if unknown.
fn allowed_cpus() -> Option<Vec<usize>> {
    match sys::cpu_affinity() {
        Ok(cpus) if !cpus.is_empty() => Some(cpus),
        Ok(_) => {
            warn!("no CPU reported for this process: shards are not pinned");
            None
        }
        Err(err) => {
            warn!("cannot read the CPUs this process may use ({err}): shards are not pinned");
            None
        }
    }
}

/// A shard's whole life on its thread: pin, make the reactor, meet the
/// others, set up, run, and end the others when it ends.
fn shard_life<F>(id: usize, shared: &Arc<Shared>, setup: &F, cpu: Option<usize>)
where
    F: Fn(&mut Reactor, &Shards) -> Result<(), Error> + Sync,
{
    if let Some(cpu) = cpu {
        match sys::set_cpu_affinity(&[cpu]) {
            Ok(()) => debug!("shard {id}: pinned to CPU {cpu}"),
            Err(err) => warn!("shard {id}: cannot pin to CPU {cpu}: {err}"),
        }
    }
    let reactor = match panic::catch_unwind(Reactor::new) {
        Ok(Ok(reactor)) => Some(reactor),
        Ok(Err(error)) => {
            error!("shard {id}: cannot make its reactor: {error}");
            shared.fail(ShardError::Setup { shard: id, error });
            None
        }
        Err(payload) => {
            shared.panicked(id, &*payload);
            None
        }
    };
    // Every shard arrives, with or without a reactor, so none waits forever.
    shared.arrive(id, reactor.as_ref().map(Reactor::handle));
    if let (true, Some(reactor)) = (shared.wait_all(), reactor) {
        match panic::catch_unwind(AssertUnwindSafe(|| live(id, shared, setup, reactor))) {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => {
                error!("{failure}");
                shared.fail(failure);
            }
            Err(payload) => shared.panicked(id, &*payload),
        }
    }
    shared.finish(id);
}

/// Setup and loop of shard `id`, once every shard has its reactor.
fn live<F>(id: usize, shared: &Arc<Shared>, setup: &F, mut reactor: Reactor) -> Result<(), ShardError>
where
    F: Fn(&mut Reactor, &Shards) -> Result<(), Error> + Sync,
{
    let shards = Shards {
        local: Rc::new(Local {
            id,
            shared: Arc::clone(shared),
            outboxes: RefCell::new((0..shared.count).map(|_| Vec::new()).collect()),
            dirty: Cell::new(false),
        }),
    };
    let _current = Current::set(&shards);
    setup(&mut reactor, &shards).map_err(|error| ShardError::Setup { shard: id, error })?;
    // After setup's own hooks, so that what they send leaves the same turn.
    let hook = shards.clone();
    reactor.on_turn_end(move |reactor| hook.end_turn(reactor));
    shards.flush(); // what setup sent
    let ran = reactor
        .run()
        .map_err(|error| ShardError::Run { shard: id, error });
    // Refuse messages, and end the others, before the sources are dropped.
    shared.finish(id);
    drop(reactor);
    ran
}
