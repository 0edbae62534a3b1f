//! A chat room over two shards when one shard falls behind (the module
//! docs of `evloop::protocols::chat`, "One room over several shards"):
//! once the queue of messages from the sender's shard to the lagging one
//! is full (`SendError::Full`), the lines said meanwhile are dropped for
//! the lagging shard's members alone, never waited for, and never
//! delivered late; the sender's shard and its own members go on as if
//! nothing happened; once the lagging shard has caught up, later lines
//! reach its members again, in order.
//!
//! Each shard binds its own listener, so the test chooses where each
//! member lives: the sender X and a witness W on shard 1, a receiver Y on
//! shard 0. Shard 0 is made to lag by running a closure on it that blocks
//! until the test releases it.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::chat::Member;
use evloop::protocols::chat::{Chat, ChatConfig, SharedRoom};
use evloop::shard::{self, ShardError, ShardOptions, Shards, ShardsHandle};
use evloop::Reactor;

/// Messages in flight from one shard to another before `Shards::send`
/// refuses them.
const CAPACITY: usize = 4;

/// Lines X says while shard 0 is blocked: well above [`CAPACITY`].
const N: usize = 20;

/// Every wait of this test (a read, an answer from a shard) is bounded by
/// this.
const LIMIT: Duration = Duration::from_secs(4);

/// The longest shard 0 stays blocked if the test never releases it: longer
/// than a read, so that a sender waiting for shard 0 fails a read first.
const BLOCK_LIMIT: Duration = Duration::from_secs(8);

/// A member at `addr`, welcomed, whose reads give up after [`LIMIT`].
#[track_caller]
fn join(addr: SocketAddr) -> Member {
    let member = Member::join_at(addr);
    member.writer.set_read_timeout(Some(LIMIT)).expect("timeout");
    member
}

/// The two shards, running on a thread of their own.
struct Running {
    all: ShardsHandle,
    /// Shard `i`'s listener.
    addrs: [SocketAddr; 2],
    /// What `shard::run` returned.
    result: mpsc::Receiver<Result<(), ShardError>>,
    done: bool,
}

impl Running {
    /// Starts two shards with a queue bound of [`CAPACITY`]; each binds
    /// its own loopback listener for one sharded room.
    fn start() -> Running {
        let _ = env_logger::builder().is_test(true).try_init();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (result_tx, result_rx) = mpsc::channel();
        thread::spawn(move || {
            let shared = SharedRoom::new();
            let options = ShardOptions {
                threads: 2,
                queue_capacity: CAPACITY,
                shutdown_timeout: Duration::from_secs(2),
                ..ShardOptions::default()
            };
            let result = shard::run(options, |reactor, shards| {
                let chat = Chat::sharded(ChatConfig::default(), shards, &shared);
                let options = chat.listener_options();
                let loopback = "127.0.0.1:0".parse().expect("address");
                let key = reactor.listen_tcp_with(loopback, options, chat)?;
                let addr = reactor
                    .local_addr(key)
                    .and_then(|addr| addr.as_inet())
                    .expect("a bound listener has an address");
                let _ = ready_tx.send((shards.id(), addr, shards.handle()));
                Ok(())
            });
            let _ = result_tx.send(result);
        });
        let mut addrs = [None, None];
        let mut all = None;
        for _ in 0..2 {
            let (id, addr, handle) = ready_rx.recv_timeout(LIMIT).expect("both shards set up");
            addrs[id] = Some(addr);
            all = Some(handle);
        }
        Running {
            all: all.expect("a handle"),
            addrs: addrs.map(|addr| addr.expect("each shard sent its address")),
            result: result_rx,
            done: false,
        }
    }

    /// Runs `f` on shard `shard`, between two of its turns, and returns
    /// its answer: a barrier too, since it runs after everything sent to
    /// that shard before.
    #[track_caller]
    fn on_shard<R, F>(&self, shard: usize, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&mut Reactor) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let handle = self.all.shard(shard).expect("the shard exists");
        assert!(handle.run(move |reactor| {
            let _ = tx.send(f(reactor));
        }));
        rx.recv_timeout(LIMIT).expect("the shard answered")
    }

    /// Messages sent by shard `from` to shard `to` and not yet run there.
    #[track_caller]
    fn in_flight(&self, from: usize, to: usize) -> usize {
        self.on_shard(from, move |_reactor| {
            Shards::current().expect("on a shard").in_flight(to)
        })
    }

    /// Blocks shard 0's loop, inside a closure of its own, until the
    /// returned sender sends or is dropped (the test released it, or
    /// failed), or [`BLOCK_LIMIT`] passes. Returns once the shard is
    /// blocked. Sending on the returned sender succeeds only while shard 0
    /// is still blocked.
    #[track_caller]
    fn block_shard_0(&self) -> mpsc::Sender<()> {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (blocked_tx, blocked_rx) = mpsc::channel();
        let handle = self.all.shard(0).expect("shard 0");
        assert!(handle.run(move |_reactor| {
            let _ = blocked_tx.send(());
            let _ = release_rx.recv_timeout(BLOCK_LIMIT);
        }));
        blocked_rx.recv_timeout(LIMIT).expect("shard 0 is blocked");
        release_tx
    }

    /// Starts a graceful shutdown of both shards.
    fn shutdown(&mut self) {
        self.all.shutdown(Duration::from_secs(2));
        self.done = true;
    }

    /// Waits for `shard::run` to return; what it returned.
    #[track_caller]
    fn result(&self) -> Result<(), ShardError> {
        self.result.recv_timeout(LIMIT).expect("the shards ended in time")
    }
}

impl Drop for Running {
    /// A failed test does not leave the shards running.
    fn drop(&mut self) {
        if !self.done {
            self.all.stop();
        }
    }
}

#[test]
fn a_lagging_shard_misses_lines_alone_and_gets_later_ones_in_order() {
    let mut shards = Running::start();

    // Y joins on shard 0, then X and W on shard 1; each has read the join
    // notices of those after it, so every forwarded join has run on the
    // other shard: nothing is in flight from shard 1 to shard 0.
    let mut y = join(shards.addrs[0]);
    let mut x = join(shards.addrs[1]);
    y.expect(&format!("* {} joined", x.nick));
    let mut w = join(shards.addrs[1]);
    y.expect(&format!("* {} joined", w.nick));
    x.expect(&format!("* {} joined", w.nick));
    assert_eq!(shards.in_flight(1, 0), 0, "the joins have all run on shard 0");

    let said = |range: std::ops::RangeInclusive<usize>| -> Vec<String> {
        range.map(|i| format!("line {i}")).collect()
    };
    let heard = |nick: &str, range: std::ops::RangeInclusive<usize>| -> Vec<String> {
        range.map(|i| format!("{nick}: line {i}")).collect()
    };

    // Shard 0 falls behind; X says N lines in one write.
    let release = shards.block_shard_0();
    x.say_all(&said(1..=N));

    // Shard 1 handled every one while shard 0 was blocked: W, on shard 1,
    // hears all N, in order. A sender that waited for room in the queue
    // to shard 0 would stop at line CAPACITY + 1 until shard 0 is
    // released, and a read of W's would time out first (LIMIT is shorter
    // than BLOCK_LIMIT).
    let w_heard: Vec<String> = (0..N).map(|_| w.line()).collect();
    assert_eq!(w_heard, heard(&x.nick, 1..=N), "W misses nothing");
    // The first CAPACITY lines took the queue to shard 0; the others were
    // refused (Full), not held back for later.
    assert_eq!(
        shards.in_flight(1, 0),
        CAPACITY,
        "the queue from shard 1 to shard 0 is full, and holds no more"
    );

    // Shard 0 catches up: Y hears the lines that fit in the queue, in
    // order. That the release is taken proves shard 0 was blocked all the
    // while W heard the N lines. The barrier (a closure run on shard 0
    // after the queued lines) makes sure shard 0 is done with them, so
    // that the queue is empty again before X's next line is sent.
    release.send(()).expect("shard 0 was still blocked");
    let y_heard: Vec<String> = (0..CAPACITY).map(|_| y.line()).collect();
    assert_eq!(
        y_heard,
        heard(&x.nick, 1..=CAPACITY),
        "Y hears the queued prefix, in order"
    );
    shards.on_shard(0, |_reactor| ());
    assert_eq!(shards.in_flight(1, 0), 0, "shard 0 has caught up");

    // A later line reaches Y again, and next: the dropped lines
    // CAPACITY+1..=N are not delivered late, before it or after it.
    let next = N + 1;
    x.say_all(&said(next..=next));
    y.expect(&format!("{}: line {next}", x.nick));
    w.expect(&format!("{}: line {next}", x.nick));

    // A graceful shutdown flushes what was queued and closes the room
    // without notices: nobody has anything left to read. (The members
    // close their ends once they have read the server's, so the shards
    // need not wait out their shutdown timeout.)
    shards.shutdown();
    assert_eq!(y.until_closed(), Vec::<String>::new(), "Y got no late line");
    assert_eq!(w.until_closed(), Vec::<String>::new(), "W got nothing more");
    assert_eq!(x.until_closed(), Vec::<String>::new(), "X never hears itself");
    drop((x, y, w));
    shards.result().expect("both shards stopped cleanly");
}
