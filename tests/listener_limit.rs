//! `ListenerOptions::max_connections`: connections over the limit get the
//! factory's farewell and EOF, the admitted ones work, and a slot freed by
//! a close admits the next connection.
mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::*;
use evloop::protocols::echo::Echo;
use evloop::{Addr, ListenerOptions, StreamFactory, StreamHandler};

/// Echo, with a farewell for connections turned away; counts handlers made.
struct Limited(Rc<Cell<usize>>);

impl StreamFactory for Limited {
    fn new_handler(&mut self, _peer: &Addr) -> Box<dyn StreamHandler> {
        self.0.set(self.0.get() + 1);
        Box::new(Echo)
    }
    fn farewell(&mut self, _peer: &Addr) -> Option<Vec<u8>> {
        Some(b"full, try later\n".to_vec())
    }
}

#[test]
fn connection_over_the_limit_gets_the_farewell_then_eof_and_a_freed_slot_admits_the_next() {
    thread_local! {
        static MADE: Rc<Cell<usize>> = Rc::default();
    }
    let server = start(|reactor| {
        let options = ListenerOptions {
            max_connections: 2,
            ..ListenerOptions::default()
        };
        let made = MADE.with(Rc::clone);
        let key = reactor
            .listen_tcp_with(any_port(), options, Limited(made))
            .expect("listen");
        let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr");
        (key, addr)
    });
    let (listener, addr) = server.info;
    let handlers_made = move || MADE.with(|m| m.get());

    let mut first = connect(addr);
    let mut second = connect(addr);
    server.wait_until("two admitted", move |r| r.connection_count(listener) == 2);

    let mut third = connect(addr);
    assert_eq!(
        read_to_end(&mut third),
        b"full, try later\n",
        "farewell, then EOF"
    );
    assert_eq!(server.query(move |r| r.connection_count(listener)), 2);
    assert_eq!(
        server.query(move |_| handlers_made()),
        2,
        "no handler for the third"
    );
    for (client, word) in [(&mut first, b"one"), (&mut second, b"two")] {
        write_all(client, word);
        assert_eq!(read_exact(client, 3), word);
    }

    drop(first);
    server.wait_until("one left", move |r| r.connection_count(listener) == 1);
    let mut fourth = connect(addr);
    write_all(&mut fourth, b"in");
    assert_eq!(read_exact(&mut fourth, 2), b"in", "admitted and served");
    assert_eq!(server.query(move |r| r.connection_count(listener)), 2);
    assert_eq!(server.query(move |_| handlers_made()), 3);
    drop((second, fourth));
    assert_eq!(server.shutdown(STEP), 0);
}
