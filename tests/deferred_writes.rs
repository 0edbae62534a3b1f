//! Output a handler sends to *other* connections (`cx.source(key).send_shared`,
//! `broadcast`) is written at the end of the turn: it still arrives whole
//! and in order, interleaved correctly with the receiver's own output, a
//! close requested after it waits for it, and a receiver that cannot take
//! it all is cut by its cap after the write, not before.
mod common;

use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::rc::Rc;

use common::*;
use evloop::{Addr, ConnectionOptions, Context, Key, ListenerOptions, StreamHandler};

/// Every connection's key, in the order they opened.
type Members = Rc<RefCell<Vec<Key>>>;

/// A line `N` from the first connection makes the hub send `N` numbered
/// lines to every other connection, each followed by a line the receiver
/// is sent through the same path; `close` closes every other connection;
/// `count` answers how many connections are open.
struct Hub {
    members: Members,
}

impl StreamHandler for Hub {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.members.borrow_mut().push(cx.key());
    }

    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let mut used = 0;
        while let Some(end) = data[used..].iter().position(|&b| b == b'\n') {
            let command = String::from_utf8_lossy(&data[used..used + end]).into_owned();
            used += end + 1;
            self.command(cx, &command);
        }
        used
    }
}

impl Hub {
    fn command(&mut self, cx: &mut Context<'_>, command: &str) {
        let others: Vec<Key> = self
            .members
            .borrow()
            .iter()
            .copied()
            .filter(|&k| k != cx.key())
            .collect();
        if command == "count" {
            cx.send(format!("{}\n", self.members.borrow().len()).as_bytes());
        } else if command == "close" {
            for key in others {
                cx.source(key).close();
            }
        } else if let Ok(n) = command.parse::<usize>() {
            for i in 0..n {
                let line: Rc<[u8]> = format!("line {i}\n").into_bytes().into();
                for &key in &others {
                    cx.source(key).send_shared(&line);
                }
            }
            let done: Rc<[u8]> = b"done\n".to_vec().into();
            cx.broadcast(&done, Some(cx.key()));
            cx.send(b"sent\n");
        }
    }
}

fn serve(options: ListenerOptions) -> Running<std::net::SocketAddr> {
    start(move |reactor| {
        let members: Members = Rc::default();
        let key = reactor
            .listen_tcp_with(any_port(), options, move |_: &Addr| Hub {
                members: Rc::clone(&members),
            })
            .expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("inet")
    })
}

/// Asks the hub until it has `n` connections open.
fn wait_for_members(sender: &mut BufReader<std::net::TcpStream>, n: usize) {
    let mut line = String::new();
    loop {
        write_all(sender.get_mut(), b"count\n");
        line.clear();
        sender.read_line(&mut line).expect("count");
        if line.trim() == n.to_string() {
            return;
        }
    }
}

/// Reads `expected`, line by line, then the end of the stream.
#[track_caller]
fn expect_lines_then_close(receiver: &mut BufReader<std::net::TcpStream>, expected: &[String]) {
    let mut line = String::new();
    for want in expected {
        line.clear();
        receiver.read_line(&mut line).expect("line");
        assert_eq!(line.strip_suffix('\n'), Some(want.as_str()));
    }
    line.clear();
    assert_eq!(
        receiver.read_line(&mut line).expect("end"),
        0,
        "closed after the flush"
    );
}

#[test]
fn messages_to_other_connections_arrive_whole_and_in_order_before_a_close() {
    let server = serve(ListenerOptions::default());
    let mut sender = BufReader::new(connect(server.info));
    let mut receivers: Vec<BufReader<_>> = (0..3).map(|_| BufReader::new(connect(server.info))).collect();
    wait_for_members(&mut sender, 4);
    let n = 20_000;
    write_all(sender.get_mut(), format!("{n}\nclose\n").as_bytes());
    let expected: Vec<String> = (0..n)
        .map(|i| format!("line {i}"))
        .chain(["done".to_string()])
        .collect();
    for receiver in &mut receivers {
        expect_lines_then_close(receiver, &expected);
    }
    drop((sender, receivers));
    assert_eq!(server.shutdown(STEP), 0);
}

/// More receivers than one turn flushes (`DEFERRED_FLUSH_BUDGET`, 128):
/// the fan-out spans turns, input read between its slices queues behind
/// what each receiver holds, and a close asked for meanwhile waits for it.
#[test]
fn a_fan_out_wider_than_one_turn_arrives_whole_and_in_order() {
    let server = serve(ListenerOptions::default());
    let mut sender = BufReader::new(connect(server.info));
    let receivers = 300;
    let mut receivers: Vec<BufReader<_>> = (0..receivers)
        .map(|_| BufReader::new(connect(server.info)))
        .collect();
    wait_for_members(&mut sender, receivers.len() + 1);
    write_all(sender.get_mut(), b"3\n");
    write_all(sender.get_mut(), b"2\n");
    write_all(sender.get_mut(), b"close\n");
    let expected = ["line 0", "line 1", "line 2", "done", "line 0", "line 1", "done"].map(String::from);
    for receiver in &mut receivers {
        expect_lines_then_close(receiver, &expected);
    }
    drop((sender, receivers));
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn a_receiver_over_its_cap_is_cut_after_the_write_not_before() {
    // 64 KiB of queue: one turn sends a receiver about 190 KiB, more than
    // the cap but less than the socket takes at once, so nothing is cut.
    let options = ListenerOptions {
        connection: ConnectionOptions {
            max_queued: 64 * 1024,
            high_water: 32 * 1024,
            low_water: 8 * 1024,
            ..ConnectionOptions::default()
        },
        ..ListenerOptions::default()
    };
    let server = serve(options);
    let mut sender = BufReader::new(connect(server.info));
    let mut receiver = BufReader::new(connect(server.info));
    wait_for_members(&mut sender, 2);
    let mut line = String::new();
    let n = 20_000;
    write_all(sender.get_mut(), format!("{n}\n").as_bytes());
    for i in 0..n {
        line.clear();
        receiver.read_line(&mut line).expect("line");
        assert_eq!(line, format!("line {i}\n"));
    }
    drop((sender, receiver));
    assert_eq!(server.shutdown(STEP), 0);
}
