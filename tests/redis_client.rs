//! `evloop::protocols::redis` from an embedder's side, against a real
//! `redis-server`: commands pipelined in one turn answered in order, a
//! message on a subscribed channel, one `on_down` per outage however many
//! attempts fail (or once a reply is overdue from a Redis that stopped),
//! and the link back up on its own once Redis is.
mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::redis::{free_port, RedisServer};
use common::*;
use evloop::protocols::redis::{Redis, RedisEvents, RedisOptions, Reply};
use evloop::{Context, Reactor};

/// What the link tells the test, in order.
#[derive(Debug, Clone, PartialEq)]
enum Heard {
    Up,
    Down,
    Replies(Vec<Reply>),
    Message(Vec<u8>, Vec<u8>),
}

/// On each `on_up`: 100 `INCR`s queued in one go, then a `PUBLISH` on the
/// channel it is subscribed to; their replies are sent on once all are in.
struct Probe {
    tx: mpsc::Sender<Heard>,
}

impl RedisEvents for Probe {
    fn on_up(&mut self, _: &mut Context<'_>, redis: &Redis) {
        let _ = self.tx.send(Heard::Up);
        let replies = Rc::new(RefCell::new(Vec::new()));
        for i in 0..100 {
            let replies = Rc::clone(&replies);
            let tx = self.tx.clone();
            let queued = redis.command(&["INCR", "evloop-test-counter"], move |_, reply| {
                replies.borrow_mut().push(reply.expect("a reply"));
                if i == 99 {
                    let _ = tx.send(Heard::Replies(replies.take()));
                }
            });
            assert!(queued, "the link is up");
        }
        assert!(redis.publish(b"evloop-test", b"hello"));
    }

    fn on_down(&mut self, _: &mut Context<'_>, redis: &Redis, _why: &str) {
        assert!(!redis.command(&["PING"], |_, _| unreachable!("not sent while down")));
        let _ = self.tx.send(Heard::Down);
    }

    fn on_message(&mut self, _: &mut Context<'_>, _: &Redis, channel: &[u8], payload: &[u8]) {
        let _ = self.tx.send(Heard::Message(channel.to_vec(), payload.to_vec()));
    }
}

fn options() -> RedisOptions {
    RedisOptions {
        connect_timeout: Duration::from_secs(1),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        reply_timeout: Duration::from_millis(500),
        ..RedisOptions::default()
    }
}

thread_local! {
    /// The reactor thread's link, for a test's `query` to queue commands.
    static LINK: RefCell<Option<Redis>> = const { RefCell::new(None) };
}

fn link(port: u16) -> (Running<()>, mpsc::Receiver<Heard>) {
    let (tx, rx) = mpsc::channel();
    let running = start(move |reactor: &mut Reactor| {
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        let redis = Redis::start(reactor, addr, options(), &[&b"evloop-test"[..]], Probe { tx });
        LINK.with(|link| *link.borrow_mut() = Some(redis));
    });
    (running, rx)
}

#[track_caller]
fn next(rx: &mpsc::Receiver<Heard>) -> Heard {
    rx.recv_timeout(STEP).expect("the link said something in time")
}

/// The replies of one `on_up`'s round: 100 counts from `from` on, in
/// order, and the message published.
#[track_caller]
fn expect_round(rx: &mpsc::Receiver<Heard>, from: i64) {
    let mut got = [next(rx), next(rx)];
    got.sort_by_key(|h| matches!(h, Heard::Message(..)));
    let want: Vec<Reply> = (from..from + 100).map(Reply::Integer).collect();
    assert_eq!(got[0], Heard::Replies(want), "pipelined replies, in order");
    assert_eq!(got[1], Heard::Message(b"evloop-test".to_vec(), b"hello".to_vec()));
}

#[test]
fn pipelined_replies_come_in_order_and_the_link_comes_back_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let (_running, rx) = link(redis.port());
    assert_eq!(next(&rx), Heard::Up);
    expect_round(&rx, 1);

    redis.kill();
    assert_eq!(next(&rx), Heard::Down);
    redis.restart();
    let back = Instant::now();
    assert_eq!(next(&rx), Heard::Up);
    assert!(
        back.elapsed() < Duration::from_secs(5),
        "back in {:?}",
        back.elapsed()
    );
    // A restarted Redis kept nothing: the counter starts again.
    expect_round(&rx, 1);
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing more"
    );
}

#[test]
fn an_unreachable_redis_is_one_down_however_many_attempts_then_up_once_it_listens() {
    let port = free_port();
    let (_running, rx) = link(port);
    assert_eq!(next(&rx), Heard::Down);
    // Attempts go on every 10..200 ms meanwhile: none is another on_down.
    assert!(rx.recv_timeout(Duration::from_millis(800)).is_err());
    let _redis = RedisServer::start_on(port);
    assert_eq!(next(&rx), Heard::Up);
    expect_round(&rx, 1);
}

#[test]
fn a_redis_that_stops_answering_is_an_outage_once_a_reply_is_overdue() {
    let redis = RedisServer::start();
    let (running, rx) = link(redis.port());
    assert_eq!(next(&rx), Heard::Up);
    expect_round(&rx, 1);
    redis.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let queued = running.query(|_| {
        let link = LINK.with(|link| link.borrow().clone()).expect("a link");
        link.command(&["PING"], |_, reply| {
            assert!(reply.is_err(), "no reply: the link went down first")
        })
    });
    assert!(queued);
    assert_eq!(next(&rx), Heard::Down);
    // Overdue after 500 ms, found by a check each second.
    assert!(
        stopped.elapsed() >= Duration::from_millis(500),
        "{:?}",
        stopped.elapsed()
    );
    redis.signal(libc::SIGCONT);
    assert_eq!(next(&rx), Heard::Up);
    // The same Redis, with its data: the counter goes on.
    expect_round(&rx, 101);
}
