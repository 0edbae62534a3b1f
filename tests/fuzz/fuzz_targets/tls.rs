//! The TLS layer's input path (`evloop::tls`, `src/tls.rs`): whatever
//! bytes a peer sends to a TLS port, before or in the middle of a
//! handshake.
//!
//! Once per process: a certificate is made with the `openssl` command, and
//! a reactor on a thread of its own serves echo over TLS on a loopback
//! port (`ListenerOptions::tls`), with a handshake deadline of 2 s. A
//! ClientHello is captured once from rustls's own client.
//!
//! Each input is one connection. If byte 0 is odd, the captured ClientHello
//! goes first, so the rest of the input meets a server in the middle of a
//! handshake; the rest of the bytes follow, then the client's FIN. Checked
//! for every input:
//! - the server ends the connection (EOF or reset) within 3 s of the FIN:
//!   a peer that stops never holds a connection open;
//! - the reactor is alive afterwards: the next connection is accepted and
//!   answered (a panic in the layer would end its thread);
//! - nothing the server sends back before the end is plaintext echo of the
//!   input (it may send TLS records and alerts only).
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use evloop::protocols::echo::Echo;
use evloop::tls::ServerTls;
use evloop::{Addr, ListenerOptions, Reactor};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    addr: SocketAddr,
    hello: Vec<u8>,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let fixture = FIXTURE.get_or_init(start);
    check(fixture, data);
});

fn start() -> Fixture {
    let dir = std::env::temp_dir().join(format!("evloop-fuzz-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"])
        .output()
        .expect("the openssl command (apt-get install openssl)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let addr = serve(cert.clone(), key.clone());
    let hello = client_hello(&cert);
    let _ = std::fs::remove_dir_all(&dir);
    Fixture { addr, hello }
}

/// Echo over TLS on a reactor thread; its address.
fn serve(cert: PathBuf, key: PathBuf) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tls = ServerTls::from_pem_files(&cert, &key).expect("the certificate just made");
        tls.handshake_timeout = Duration::from_secs(2);
        let options = ListenerOptions {
            tls: Some(tls),
            ..ListenerOptions::default()
        };
        let mut reactor = Reactor::new().expect("reactor");
        let key = reactor
            .listen_tcp_with("127.0.0.1:0".parse().expect("addr"), options, |_: &Addr| Echo)
            .expect("listen");
        let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP address");
        tx.send(addr).expect("the fuzzer waits");
        reactor.run().expect("the reactor runs until the process ends");
    });
    rx.recv().expect("the reactor thread starts")
}

/// The first flight of a rustls client for `localhost`, as bytes.
fn client_hello(cert: &std::path::Path) -> Vec<u8> {
    let tls = evloop::tls::ClientTls::with_roots_pem(cert).expect("roots");
    let name = "localhost".try_into().expect("a DNS name");
    let mut conn = rustls::ClientConnection::new(Arc::clone(tls.config()), name).expect("client");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("into a Vec");
    }
    hello
}

fn check(fixture: &Fixture, data: &[u8]) {
    let mut stream = TcpStream::connect(fixture.addr).expect("the reactor is alive and accepting");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    if data.first().is_some_and(|b| b & 1 == 1) {
        let _ = stream.write_all(&fixture.hello);
    }
    let _ = stream.write_all(data.get(1..).unwrap_or_default());
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut back = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => back.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                assert!(
                    Instant::now() < deadline,
                    "the server kept a connection open 3 s after the peer's FIN"
                );
            }
            Err(_) => break, // a reset
        }
    }
    // Before a handshake nothing is plaintext: TLS records only (a
    // handshake flight or an alert), each starting with a content type.
    if let Some(&first) = back.first() {
        assert!(
            (20..=23).contains(&first),
            "the server sent something that is not a TLS record: {:?}",
            &back[..back.len().min(16)]
        );
    }
}
