//! A thousand connections open at once on one listener, each exchanging a
//! message with echo; then all closed, and nothing is left behind.
mod common;

use std::net::TcpStream;

use common::*;
use evloop::protocols::echo::Echo;
use evloop::Addr;

const CLIENTS: usize = 1000;

/// Raises the soft descriptor limit to at least `want` (up to the hard
/// limit): the clients and the reactor share this process's table.
#[track_caller]
fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit get a valid, exclusively borrowed struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0, "getrlimit");
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "setrlimit");
        }
    }
    assert!(
        limit.rlim_cur >= want,
        "the hard descriptor limit ({}) is below {want}",
        limit.rlim_max
    );
}

#[test]
fn a_thousand_concurrent_connections_echo_then_all_close() {
    // Both ends of every connection live in this process, plus spares.
    raise_fd_limit(2 * CLIENTS as u64 + 256);
    let server = start(|reactor| {
        let key = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr");
        (key, addr)
    });
    let (listener, addr) = server.info;
    let baseline = server.query(|r| r.source_count());

    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    server.wait_until("all accepted", move |r| r.connection_count(listener) == CLIENTS);
    for (i, client) in clients.iter_mut().enumerate() {
        write_all(client, format!("client {i:04}").as_bytes());
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_exact(client, 11), format!("client {i:04}").as_bytes());
    }
    assert_eq!(server.query(move |r| r.connection_count(listener)), CLIENTS);

    drop(clients);
    server.wait_until("all gone", move |r| r.connection_count(listener) == 0);
    assert_eq!(
        server.query(|r| r.source_count()),
        baseline,
        "only the listener is left"
    );
    assert_eq!(
        server.query(|r| r.timer_count()),
        0,
        "no close left a timer behind"
    );
    assert_eq!(server.shutdown(STEP), 0);
}
