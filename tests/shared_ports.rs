//! Listening sockets several reactors share (`SO_REUSEPORT`), sockets bound
//! elsewhere and adopted, and sockets handed over by socket activation
//! (`LISTEN_FDS`), each checked from the outside with real clients.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{connect, read_exact, start, write_all, TempDir, STEP};
use evloop::activation::{listen_fds, Activated};
use evloop::protocols::echo::Echo;
use evloop::{Addr, Context, DatagramHandler, DatagramOptions, Error, ListenerOptions, Reactor};

/// Sends every datagram back to its sender.
struct DatagramEcho;

impl DatagramHandler for DatagramEcho {
    fn on_datagram(&mut self, cx: &mut Context<'_>, data: &[u8], from: &Addr) {
        cx.send_datagram(from, data);
    }
}

fn reuse_port() -> ListenerOptions {
    ListenerOptions {
        reuse_port: true,
        ..ListenerOptions::default()
    }
}

/// One echo round trip over TCP.
#[track_caller]
fn tcp_round_trip(addr: SocketAddr, message: &[u8]) {
    let mut client = connect(addr);
    write_all(&mut client, message);
    assert_eq!(read_exact(&mut client, message.len()), message);
}

/// One echo round trip of a datagram.
#[track_caller]
fn udp_round_trip(addr: SocketAddr, message: &[u8]) {
    let client = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    client.set_read_timeout(Some(STEP)).expect("timeout");
    client.send_to(message, addr).expect("send");
    let mut buf = [0; 64];
    let (n, from) = client.recv_from(&mut buf).expect("echo");
    assert_eq!((&buf[..n], from), (message, addr));
}

#[test]
fn two_reactors_share_one_tcp_port() {
    let counts = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let first_count = Arc::clone(&counts[0]);
    let first = start(move |reactor| {
        let factory = move |_: &Addr| {
            first_count.fetch_add(1, Ordering::SeqCst);
            Echo
        };
        let key = reactor
            .listen_tcp_with("127.0.0.1:0".parse().unwrap(), reuse_port(), factory)
            .expect("first listener");
        reactor
            .local_addr(key)
            .and_then(|a| a.as_inet())
            .expect("a TCP listener")
    });
    let addr = first.info;
    let second_count = Arc::clone(&counts[1]);
    let second = start(move |reactor| {
        let factory = move |_: &Addr| {
            second_count.fetch_add(1, Ordering::SeqCst);
            Echo
        };
        let key = reactor
            .listen_tcp_with(addr, reuse_port(), factory)
            .expect("second listener on the same port");
        reactor
            .local_addr(key)
            .and_then(|a| a.as_inet())
            .expect("a TCP listener")
    });
    assert_eq!(second.info, addr);

    for i in 0..64 {
        tcp_round_trip(addr, format!("client {i}").as_bytes());
    }
    // A connection's handler is made when it is accepted, before its echo.
    let accepted = [counts[0].load(Ordering::SeqCst), counts[1].load(Ordering::SeqCst)];
    assert_eq!(
        accepted[0] + accepted[1],
        64,
        "accepted per reactor: {accepted:?}"
    );
    assert!(
        accepted.iter().all(|&n| n > 0),
        "one reactor took every connection: {accepted:?}"
    );
    assert_eq!(first.shutdown(STEP), 0);
    assert_eq!(second.shutdown(STEP), 0);
}

#[test]
fn without_reuse_port_the_second_bind_fails() {
    let mut reactor = Reactor::new().expect("reactor");
    let key = reactor
        .listen_tcp("127.0.0.1:0".parse().unwrap(), |_: &Addr| Echo)
        .expect("first listener");
    let addr = reactor
        .local_addr(key)
        .and_then(|a| a.as_inet())
        .expect("a TCP listener");
    for options in [ListenerOptions::default(), reuse_port()] {
        // The first socket did not set SO_REUSEPORT: nobody may join it.
        match reactor.listen_tcp_with(addr, options, |_: &Addr| Echo) {
            Err(Error::Bind { addr: named, source }) => {
                assert_eq!(named, addr.to_string());
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            }
            other => panic!("second bind of {addr}: {other:?}"),
        }
    }
    let mut reactor = Reactor::new().expect("reactor");
    let key = reactor
        .listen_tcp_with("127.0.0.1:0".parse().unwrap(), reuse_port(), |_: &Addr| Echo)
        .expect("first listener");
    let addr = reactor
        .local_addr(key)
        .and_then(|a| a.as_inet())
        .expect("a TCP listener");
    // The first set it, the second did not.
    let err = reactor
        .listen_tcp(addr, |_: &Addr| Echo)
        .expect_err("second bind");
    assert!(matches!(&err, Error::Bind { addr: named, .. } if *named == addr.to_string()));
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[test]
fn two_reactors_share_one_udp_port() {
    let options = DatagramOptions { reuse_port: true };
    let first_options = options.clone();
    let first = start(move |reactor| {
        let key = reactor
            .bind_udp_with("127.0.0.1:0".parse().unwrap(), first_options, DatagramEcho)
            .expect("first socket");
        reactor
            .local_addr(key)
            .and_then(|a| a.as_inet())
            .expect("a UDP socket")
    });
    let addr = first.info;
    let second = start(move |reactor| {
        let key = reactor
            .bind_udp_with(addr, options, DatagramEcho)
            .expect("second socket on the same port");
        reactor
            .local_addr(key)
            .and_then(|a| a.as_inet())
            .expect("a UDP socket")
    });
    assert_eq!(second.info, addr);
    udp_round_trip(addr, b"either reactor answers");

    // Without the option the port is taken.
    let mut reactor = Reactor::new().expect("reactor");
    match reactor.bind_udp(addr, DatagramEcho) {
        Err(Error::Bind { addr: named, .. }) => assert_eq!(named, addr.to_string()),
        other => panic!("bind_udp on a shared port: {other:?}"),
    }
    assert_eq!(first.shutdown(STEP), 0);
    assert_eq!(second.shutdown(STEP), 0);
}

#[test]
fn adopted_tcp_listener_serves() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = start(move |reactor| {
        let key = reactor
            .adopt_tcp_listener(listener, ListenerOptions::default(), |_: &Addr| Echo)
            .expect("adopt");
        reactor.local_addr(key).and_then(|a| a.as_inet())
    });
    assert_eq!(server.info, Some(addr));
    tcp_round_trip(addr, b"adopted");
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn adopted_unix_listener_serves_and_leaves_its_file() {
    let dir = TempDir::new("adopt-unix");
    let path = dir.0.join("echo.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let server = start(move |reactor| {
        let key = reactor
            .adopt_unix_listener(listener, ListenerOptions::default(), |_: &Addr| Echo)
            .expect("adopt");
        reactor.local_addr(key)
    });
    assert_eq!(server.info.as_ref().and_then(Addr::as_path), Some(path.as_path()));

    let mut client = UnixStream::connect(&path).expect("connect");
    client.set_read_timeout(Some(STEP)).expect("timeout");
    client.write_all(b"adopted unix").expect("write");
    let mut reply = [0; 12];
    client.read_exact(&mut reply).expect("echo");
    assert_eq!(&reply, b"adopted unix");
    drop(client);

    assert_eq!(server.shutdown(STEP), 0);
    // The listener is gone; the file it did not create is not.
    assert!(path.exists(), "adopted socket file removed");
}

#[test]
fn adopted_udp_socket_serves() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("address");
    let server = start(move |reactor| reactor.adopt_udp(socket, DatagramEcho).expect("adopt"));
    udp_round_trip(addr, b"adopted datagram");
    assert_eq!(server.shutdown(STEP), 0);
}

/// Set for the copy of this binary that the activation test starts.
const CHILD: &str = "EVLOOP_ACTIVATION_CHILD";
/// What the child prints once it serves.
const READY: &str = "activation child: ready";

#[test]
fn activation_hands_a_listener_to_the_child() {
    if std::env::var_os(CHILD).is_some() {
        return activation_child();
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let exe = std::env::current_exe().expect("test binary");
    let mut command = Command::new("sh");
    // The shell's pid is the child's: `exec` keeps it.
    command
        .arg("-c")
        .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
        .arg(exe)
        .args([
            "--exact",
            "activation_hands_a_listener_to_the_child",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "web")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: between fork and exec only dup2 and fcntl, both
    // async-signal-safe, on a descriptor the parent keeps open.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) != 3 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start the child");
    drop(listener); // the child holds it now

    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + 3 * STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(READY) => break,
            Ok(_) => continue,
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child never said it was ready: {err}");
            }
        }
    }
    tcp_round_trip(addr, b"activated");

    drop(child.stdin.take()); // the child's cue to stop
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not exit after its stdin closed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "child: {status}");
}

/// The child's half: take the socket from the environment, serve it until
/// stdin closes.
fn activation_child() {
    let mut sockets = listen_fds().expect("listen_fds");
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        assert!(std::env::var_os(name).is_none(), "{name} still set");
    }
    assert!(listen_fds().expect("second call").is_empty());
    let listener = match sockets.pop() {
        Some(Activated::TcpListener(listener, Some(name))) if name == "web" => listener,
        other => panic!("expected a TCP listener named web, got {other:?}"),
    };
    let server = start(move |reactor| {
        reactor
            .adopt_tcp_listener(listener, ListenerOptions::default(), |_: &Addr| Echo)
            .expect("adopt")
    });
    println!("{READY}");
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = done_tx.send(());
    });
    done.recv_timeout(6 * STEP).expect("stdin closed in time");
    assert_eq!(server.shutdown(STEP), 0);
}
