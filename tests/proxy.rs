//! `proxy` from outside (docs/programs.md, the contract's `proxy`): bytes
//! both ways, backpressure with bounded memory through an upstream that
//! stalls, a FIN passed on as a FIN with the other direction going on, a
//! reset passed on as a reset, an upstream that refuses or does not answer
//! closing the client, `--max-clients`, IPv6, and SIGTERM.
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Starts the proxy in front of `upstream`, with `extra` flags.
fn proxy(upstream: SocketAddr, extra: &[&str]) -> ServerProcess {
    let upstream = upstream.to_string();
    let mut args = vec!["--tcp", "127.0.0.1:0", "--upstream", &upstream];
    args.extend_from_slice(extra);
    ServerProcess::start("proxy", &args, 1)
}

/// An upstream that accepts one connection and runs `serve` on it.
fn upstream<F>(serve: F) -> (SocketAddr, thread::JoinHandle<()>)
where
    F: FnOnce(TcpStream) + Send + 'static,
{
    let listener = TcpListener::bind(any_port()).expect("bind upstream");
    let addr = listener.local_addr().expect("address");
    let thread = thread::spawn(move || {
        let (conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(STEP)).expect("timeout");
        conn.set_write_timeout(Some(STEP)).expect("timeout");
        serve(conn);
    });
    (addr, thread)
}

#[test]
fn a_request_goes_up_and_its_answer_comes_back_after_the_client_s_fin() {
    let (addr, server) = upstream(|mut conn| {
        let request = read_to_end(&mut conn); // until the FIN passed on
        write_all(&mut conn, format!("{} bytes: ", request.len()).as_bytes());
        write_all(&mut conn, &request);
    });
    let proxy = proxy(addr, &[]);
    let mut client = connect(proxy.socket_addr("tcp"));
    let request = pattern(300_000, 7);
    write_all(&mut client, &request);
    client.shutdown(Shutdown::Write).expect("shutdown");
    let answer = read_to_end(&mut client);
    server.join().expect("upstream");
    let mut want = b"300000 bytes: ".to_vec();
    want.extend_from_slice(&request);
    assert_same_bytes(&answer, &want, "the answer through the proxy");
}

#[test]
fn the_upstream_s_fin_reaches_the_client_and_the_client_goes_on_sending() {
    let (tx, rx) = mpsc::channel();
    let (addr, server) = upstream(move |mut conn| {
        write_all(&mut conn, b"bye");
        conn.shutdown(Shutdown::Write).expect("shutdown");
        let _ = tx.send(read_to_end(&mut conn));
    });
    let proxy = proxy(addr, &[]);
    let mut client = connect(proxy.socket_addr("tcp"));
    // The upstream's FIN arrives as end-of-file after its bytes...
    assert_eq!(read_to_end(&mut client), b"bye");
    // ...and the client's direction is still open.
    let rest = pattern(1 << 20, 3);
    write_all(&mut client, &rest);
    client.shutdown(Shutdown::Write).expect("shutdown");
    let got = rx.recv_timeout(STEP).expect("the upstream read to its end");
    assert_same_bytes(&got, &rest, "what the client sent after the upstream's FIN");
    server.join().expect("upstream");
}

#[test]
fn a_reset_from_the_client_reaches_the_upstream_as_a_reset() {
    let (tx, rx) = mpsc::channel();
    let (addr, server) = upstream(move |mut conn| {
        let mut first = [0; 5];
        conn.read_exact(&mut first).expect("the first bytes");
        let _ = tx.send(());
        let mut rest = Vec::new();
        let end = conn.read_to_end(&mut rest).map_err(|e| e.kind());
        assert_eq!(end, Err(ErrorKind::ConnectionReset), "the upstream saw {end:?}");
    });
    let proxy = proxy(addr, &[]);
    let mut client = connect(proxy.socket_addr("tcp"));
    write_all(&mut client, b"hello");
    rx.recv_timeout(STEP).expect("the bytes went through");
    reset_on_close(&client);
    drop(client);
    server.join().expect("upstream");
}

#[test]
fn a_reset_from_the_upstream_reaches_the_client_as_a_reset() {
    let (addr, server) = upstream(|mut conn| {
        write_all(&mut conn, b"partial");
        reset_on_close(&conn);
    });
    let proxy = proxy(addr, &[]);
    let mut client = connect(proxy.socket_addr("tcp"));
    server.join().expect("upstream");
    let mut got = Vec::new();
    let end = client.read_to_end(&mut got).map_err(|e| e.kind());
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "the client saw {end:?} after {got:?}"
    );
}

#[test]
fn an_upstream_that_refuses_closes_the_client() {
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind(any_port())
        .expect("bind")
        .local_addr()
        .expect("address");
    let proxy = proxy(closed, &[]);
    let mut client = connect(proxy.socket_addr("tcp"));
    let mut got = Vec::new();
    let end = client.read_to_end(&mut got).map_err(|e| e.kind());
    assert!(end.is_ok() && got.is_empty(), "the client saw {end:?}, {got:?}");
}

#[test]
fn an_upstream_that_does_not_answer_closes_the_client_at_the_connect_timeout() {
    let silent = SilentListener::new();
    let proxy = proxy(silent.addr, &["--connect-timeout", "1"]);
    let started = Instant::now();
    let mut client = connect(proxy.socket_addr("tcp"));
    let mut got = Vec::new();
    let end = client.read_to_end(&mut got).map_err(|e| e.kind());
    let waited = started.elapsed();
    assert!(end.is_ok() && got.is_empty(), "the client saw {end:?}, {got:?}");
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the connect timeout"
    );
}

#[test]
fn two_hundred_mib_each_way_through_a_stalling_upstream_hold_bounded_memory() {
    const BLOCK: usize = 1 << 20;
    const BLOCKS: usize = 200;
    let stalled = Arc::new(AtomicBool::new(false));
    let stalls = Arc::clone(&stalled);
    // An echo that stops reading (and writing) for two seconds twice.
    let (addr, server) = upstream(move |mut conn| {
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        conn.set_write_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut buf = vec![0; 64 * 1024];
        let mut total = 0u64;
        let mut next_stall = [50u64 << 20, 150 << 20].into_iter().peekable();
        loop {
            if next_stall.peek().is_some_and(|&at| total >= at) {
                next_stall.next();
                stalls.store(true, Ordering::SeqCst);
                thread::sleep(Duration::from_secs(2));
                stalls.store(false, Ordering::SeqCst);
            }
            let n = conn.read(&mut buf).expect("upstream read");
            if n == 0 {
                break;
            }
            conn.write_all(&buf[..n]).expect("upstream write");
            total += n as u64;
        }
        conn.shutdown(Shutdown::Write).expect("shutdown");
    });
    let proxy = proxy(addr, &[]);
    let idle_rss = proxy.rss_kib();
    let client = connect(proxy.socket_addr("tcp"));
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    client
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");

    let mut writer = client.try_clone().expect("clone");
    let sender = thread::spawn(move || {
        for block in 0..BLOCKS {
            writer
                .write_all(&pattern(BLOCK, block as u64))
                .expect("client write");
        }
        writer.shutdown(Shutdown::Write).expect("shutdown");
    });
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::clone(&received);
    let mut reader = client;
    let receiver = thread::spawn(move || {
        let mut block = vec![0; BLOCK];
        for index in 0..BLOCKS {
            reader.read_exact(&mut block).expect("client read");
            assert!(
                block == pattern(BLOCK, index as u64),
                "block {index} came back changed"
            );
            progress.fetch_add(BLOCK as u64, Ordering::SeqCst);
        }
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).expect("end of the echo");
        assert!(rest.is_empty(), "{} bytes more than were sent", rest.len());
    });

    // Sample the proxy's memory until the echo is complete.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut peak, mut peak_stalled) = (idle_rss, 0);
    while !receiver.is_finished() {
        assert!(Instant::now() < deadline, "the transfer did not end in time");
        let rss = proxy.rss_kib();
        peak = peak.max(rss);
        if stalled.load(Ordering::SeqCst) {
            peak_stalled = peak_stalled.max(rss);
        }
        thread::sleep(Duration::from_millis(20));
    }
    receiver.join().expect("every byte came back in order");
    sender.join().expect("the client sent everything");
    server.join().expect("upstream");
    assert_eq!(received.load(Ordering::SeqCst), (BLOCK * BLOCKS) as u64);
    assert!(peak_stalled > 0, "no sample was taken during a stall");
    eprintln!("proxy RSS: {idle_rss} KiB idle, {peak} KiB at most ({peak_stalled} KiB during stalls)");
    // Each direction holds at most a high watermark (256 KiB) and a read.
    assert!(
        peak <= idle_rss + 8 * 1024,
        "the proxy grew from {idle_rss} KiB to {peak} KiB (during stalls: {peak_stalled} KiB)"
    );
}

#[test]
fn sigterm_ends_the_proxy_with_status_0_while_a_pair_is_open() {
    let (addr, server) = upstream(|mut conn| {
        // The pair is cut at the shutdown's deadline: a reset, or a FIN.
        let _ = conn.read_to_end(&mut Vec::new());
    });
    let mut proxy = proxy(addr, &["--shutdown-timeout", "1"]);
    let mut client = connect(proxy.socket_addr("tcp"));
    write_all(&mut client, b"still here");
    let status = proxy.terminate();
    assert!(status.success(), "{status:?}");
    drop(client);
    server.join().expect("upstream");
}

/// An upstream that echoes one connection until its end.
fn echo_upstream(bind: &str) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind(bind).expect("bind upstream");
    let addr = listener.local_addr().expect("address");
    let thread = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(STEP)).expect("timeout");
        let mut buf = [0; 4096];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 || conn.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    (addr, thread)
}

#[test]
fn a_client_over_max_clients_is_closed_at_once_and_the_others_go_on() {
    let (addr, server) = echo_upstream("127.0.0.1:0");
    let proxy = proxy(addr, &["--max-clients", "1"]);
    let mut first = connect(proxy.socket_addr("tcp"));
    write_all(&mut first, b"ping");
    assert_eq!(read_exact(&mut first, 4), b"ping", "the first client is relayed");
    let mut second = connect(proxy.socket_addr("tcp"));
    let mut got = Vec::new();
    let end = second.read_to_end(&mut got).map_err(|e| e.kind());
    assert!(
        got.is_empty() && matches!(end, Ok(0) | Err(ErrorKind::ConnectionReset)),
        "the second client saw {end:?}, {got:?}"
    );
    write_all(&mut first, b"pong");
    assert_eq!(read_exact(&mut first, 4), b"pong", "the first client goes on");
    drop(first);
    server.join().expect("upstream");
}

#[test]
fn the_proxy_listens_and_connects_over_ipv6() {
    let (addr, server) = echo_upstream("[::1]:0");
    let upstream = addr.to_string();
    let proxy = ServerProcess::start("proxy", &["--tcp", "[::1]:0", "--upstream", &upstream], 1);
    let listening = proxy.socket_addr("tcp");
    assert!(listening.is_ipv6(), "{listening}");
    let mut client = connect(listening);
    write_all(&mut client, b"over v6");
    assert_eq!(read_exact(&mut client, 7), b"over v6");
    drop(client);
    server.join().expect("upstream");
}
