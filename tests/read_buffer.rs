//! The read buffer (`Reactor::set_read_buffer`): how much one read takes,
//! and so how much fresh input one `on_data` call is given.
mod common;

use std::cell::RefCell;
use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixListener;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use evloop::{CloseReason, Context, Reactor, StreamHandler};

/// Input queued in the socket before the reactor reads it: 128 KiB, which
/// a Unix stream socket's default buffer holds whole.
const QUEUED: usize = 128 * 1024;

/// Records the length of every piece of input and whether the peer closed.
struct Sizes(Rc<RefCell<(Vec<usize>, bool)>>);

impl StreamHandler for Sizes {
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        self.0.borrow_mut().0.push(data.len());
        data.len()
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, _reason: &CloseReason) {
        self.0.borrow_mut().1 = true;
    }
}

/// Connects a reactor (with `read_buffer`, if given) to a peer that has
/// queued [`QUEUED`] bytes and closed before the reactor reads anything;
/// returns the sizes of the pieces `on_data` was given.
fn pieces_read(read_buffer: Option<usize>) -> Vec<usize> {
    let dir = TempDir::new(&format!("read-buffer-{read_buffer:?}"));
    let path = dir.0.join("peer.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let mut reactor = Reactor::new().expect("reactor");
    if let Some(bytes) = read_buffer {
        reactor.set_read_buffer(bytes);
    }
    let seen = Rc::new(RefCell::new((Vec::new(), false)));
    reactor.connect_unix(&path, Sizes(seen.clone())).expect("connect");
    let (mut peer, _) = listener.accept().expect("accept");
    peer.set_nonblocking(true).expect("nonblocking");
    let data = pattern(QUEUED, 7);
    match peer.write(&data) {
        Ok(n) => assert_eq!(n, QUEUED, "the socket buffer took only part of the input"),
        Err(err) if err.kind() == ErrorKind::WouldBlock => panic!("the socket buffer is full"),
        Err(err) => panic!("write: {err}"),
    }
    drop(peer);
    let deadline = Instant::now() + STEP;
    while !seen.borrow().1 {
        assert!(Instant::now() < deadline, "the reactor did not read to the end");
        reactor.run_once(Some(Duration::from_millis(50))).expect("turn");
    }
    let sizes = seen.borrow().0.clone();
    assert_eq!(sizes.iter().sum::<usize>(), QUEUED, "every byte arrives");
    sizes
}

#[test]
fn by_default_one_read_takes_at_most_64_kib() {
    let sizes = pieces_read(None);
    assert_eq!(sizes, [64 * 1024, 64 * 1024]);
}

#[test]
fn a_larger_read_buffer_takes_what_is_queued_in_one_read() {
    let sizes = pieces_read(Some(1024 * 1024));
    assert_eq!(sizes, [QUEUED], "one read, one on_data");
}

#[test]
fn a_read_buffer_smaller_than_64_kib_is_raised_to_it() {
    // The largest UDP datagram must fit, so 64 KiB is the least.
    let sizes = pieces_read(Some(1000));
    assert_eq!(sizes, [64 * 1024, 64 * 1024]);
}
