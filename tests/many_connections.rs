//! Many connections on one listener: a thousand open at once, each
//! exchanging a message with echo, then all closed with nothing left
//! behind; and a burst of connects queued by the kernel while the loop is
//! busy.
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

/// How many connections the kernel may queue for one listener at most.
fn somaxconn() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

/// Connections wait in the kernel's queue while the loop is busy elsewhere.
/// A queue of 128 (what mio's `bind` asks for) would drop the SYNs of the
/// rest, each of which then stalls its client for a second before retrying.
#[test]
fn a_burst_of_connects_queues_while_the_reactor_is_busy() {
    const BURST: usize = 600;
    if somaxconn() < BURST {
        eprintln!("net.core.somaxconn is below {BURST}; skipped");
        return;
    }
    raise_fd_limit(2 * BURST as u64 + 256);
    let server = start(|reactor| {
        let key = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr");
        (key, addr)
    });
    let (listener, addr) = server.info;

    // Hold the reactor thread until the burst is in.
    let (release, held) = std::sync::mpsc::channel::<()>();
    assert!(server.handle.run(move |_| {
        let _ = held.recv_timeout(STEP);
    }));
    let mut clients: Vec<TcpStream> = (0..BURST)
        .map(|i| {
            // A queued connect completes at once; a dropped SYN waits 1 s.
            let client = TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500))
                .unwrap_or_else(|e| panic!("connect {i} of {BURST} while the loop was busy: {e}"));
            client.set_read_timeout(Some(STEP)).expect("timeout");
            client
        })
        .collect();
    release.send(()).expect("the reactor waits");

    for (i, client) in clients.iter_mut().enumerate() {
        write_all(client, format!("{i:03}").as_bytes());
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_exact(client, 3), format!("{i:03}").as_bytes());
    }
    assert_eq!(server.query(move |r| r.connection_count(listener)), BURST);
    drop(clients);
    server.wait_until("all gone", move |r| r.connection_count(listener) == 0);
    assert_eq!(server.shutdown(STEP), 0);
}
