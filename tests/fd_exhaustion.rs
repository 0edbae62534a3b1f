//! Descriptor exhaustion: the echo server, run with a limit of 64
//! descriptors, gets 200 connections. It must not spin while it has no
//! descriptor left, log the episode once (a warning when it starts, an info
//! line when accepting works again), turn the connections it cannot take
//! away rather than leave them hanging in the backlog, serve again as soon
//! as descriptors free up, and end with as many descriptors open as it
//! started with.
//!
//! And out of descriptors, the file server must never report an existing
//! file missing (security issue, item 4): HTTP answers 503 with
//! `Retry-After`, the plain protocol resets instead of sending `no_file`,
//! and `file_client` fails without saying `not found`.
mod common;

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The server's descriptor limit (soft and hard).
const LIMIT: libc::rlim_t = 64;

/// Connections opened at once: three times what the server can hold.
const CLIENTS: usize = 200;

/// How long the server's CPU time is watched while it is out of descriptors.
const WINDOW: Duration = Duration::from_secs(1);

/// Starts the echo example with its descriptor limit lowered to [`LIMIT`]
/// and its log (at info level for evloop) going to `log`.
fn start_limited_echo(log: &Path) -> ServerProcess {
    start_limited("echo", &["--tcp", "127.0.0.1:0"], 1, log)
}

/// Starts example `name` with `args`, its descriptor limit lowered to
/// [`LIMIT`] and its log (at info level for evloop) going to `log`; waits
/// for `announces` announce lines.
fn start_limited(name: &str, args: &[&str], announces: usize, log: &Path) -> ServerProcess {
    let mut command = Command::new(example_path(name));
    command.args(args).env("RUST_LOG", "evloop=info");
    // SAFETY: the closure runs in the child between fork and exec, and only
    // calls setrlimit(2), which is async-signal-safe, with a valid,
    // initialised `rlimit`; it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let stderr = File::create(log).expect("log file");
    ServerProcess::start_logging_to(&mut command, announces, Stdio::from(stderr))
}

/// The process's CPU time so far (user + system), from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name, which is in parentheses and may hold
    // spaces: the state is field 3, utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')').expect("(comm)") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf(3) reads a configuration value; no memory is shared.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(per_second > 0, "clock ticks per second");
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// Lines of the server's log that contain every one of `words`.
fn log_lines(log: &Path, words: &[&str]) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| words.iter().all(|w| line.contains(w)))
        .map(String::from)
        .collect()
}

/// Polls the log until a line with every one of `words` appears.
#[track_caller]
fn wait_for_log(log: &Path, words: &[&str]) {
    let deadline = Instant::now() + STEP;
    while log_lines(log, words).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no log line with {words:?}; the log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What became of a client the server could or could not take.
#[derive(Debug, PartialEq)]
enum Fate {
    Served,
    TurnedAway,
}

/// Sends a line and reads it back: served, or turned away (a reset or an
/// end-of-file). A client that hangs in the backlog fails the test once
/// `wait` has passed.
#[track_caller]
fn fate(client: &mut TcpStream, wait: Duration) -> Fate {
    client.set_read_timeout(Some(wait)).expect("timeout");
    if client.write_all(b"ping\n").is_err() {
        return Fate::TurnedAway;
    }
    let mut buf = [0; 5];
    match client.read_exact(&mut buf) {
        Ok(()) => {
            assert_eq!(&buf, b"ping\n");
            Fate::Served
        }
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("a client was left hanging: neither served nor turned away")
        }
        Err(_) => Fate::TurnedAway,
    }
}

/// A new client, retried until it is served (the server may still be
/// turning clients away when the first ones arrive).
#[track_caller]
fn served_client(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + STEP;
    loop {
        let mut client = connect(addr);
        if fate(&mut client, STEP) == Fate::Served {
            return client;
        }
        assert!(Instant::now() < deadline, "no new client was served");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn out_of_descriptors_the_server_rests_logs_once_turns_clients_away_and_recovers() {
    let dir = TempDir::new("fd-exhaustion");
    let log = dir.0.join("stderr.log");
    let mut server = start_limited_echo(&log);
    let pid = server.child.id();
    let addr = server.socket_addr("tcp");
    let baseline = server.fd_count();
    assert!(
        baseline < LIMIT as usize / 2,
        "{baseline} descriptors open at the start"
    );

    // Each connect completes in the kernel's backlog, taken or not.
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    wait_for_log(&log, &["WARN", "accepting on", "failed"]);

    // Out of descriptors, with connections waiting that accept cannot take:
    // the server must not retry in a busy loop.
    let (cpu_before, started) = (cpu_time(pid), Instant::now());
    std::thread::sleep(WINDOW);
    let (cpu, wall) = (cpu_time(pid) - cpu_before, started.elapsed());
    assert!(
        cpu < wall / 5,
        "the server used {cpu:?} of CPU in {wall:?} while out of descriptors"
    );

    // Every client was either served or turned away: none hangs.
    let fates: Vec<Fate> = clients.iter_mut().map(|c| fate(c, STEP)).collect();
    let served = fates.iter().filter(|f| **f == Fate::Served).count();
    assert!(
        served > 0 && served < LIMIT as usize,
        "{served} of {CLIENTS} clients served"
    );
    assert!(
        served + 10 < CLIENTS,
        "{served} of {CLIENTS} clients served: the limit did not bite"
    );

    // Close all but three of the clients being served: descriptors free up.
    let mut kept = Vec::new();
    for (client, fate) in clients.drain(..).zip(fates) {
        if fate == Fate::Served && kept.len() < 3 {
            kept.push(client);
        }
    }
    let mut newcomer = served_client(addr);
    for client in &mut kept {
        assert_eq!(fate(client, STEP), Fate::Served, "a kept client lost service");
    }
    assert_eq!(fate(&mut newcomer, STEP), Fate::Served);
    wait_for_log(&log, &["INFO", "accepting on", "again after"]);

    // One episode, one warning: not one per refused accept.
    let warnings = log_lines(&log, &["WARN"]);
    assert_eq!(warnings.len(), 1, "warnings: {warnings:#?}");
    assert_eq!(log_lines(&log, &["INFO", "again after"]).len(), 1);

    // Every descriptor comes back.
    drop((kept, newcomer));
    let deadline = Instant::now() + STEP;
    while server.fd_count() != baseline {
        assert!(
            Instant::now() < deadline,
            "{} descriptors open, {baseline} at the start",
            server.fd_count()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(server.terminate().success());
}

/// How many of the descriptors numbered below [`LIMIT`] the server has
/// open: when all are, it can open nothing more (a descriptor inherited
/// above the limit counts in `fd_count` but leaves a hole below it).
fn usable_fds(server: &ServerProcess) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .map(|dir| {
            dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
                .filter(|&fd| fd < LIMIT)
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the number of [`usable_fds`] the server has open satisfies
/// `want`, or fails after [`STEP`].
#[track_caller]
fn wait_for_fd_count(server: &ServerProcess, want: impl Fn(usize) -> bool, what: &str) {
    let deadline = Instant::now() + STEP;
    while !want(usable_fds(server)) {
        assert!(
            Instant::now() < deadline,
            "{what}: {} descriptors open",
            usable_fds(server)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn out_of_descriptors_an_existing_file_is_never_reported_missing() {
    let dir = TempDir::new("fd-exhaustion-files");
    let root = dir.0.join("root");
    let out = dir.0.join("out");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::create_dir_all(&out).expect("out");
    let content = pattern(10_000, 4);
    std::fs::write(root.join("data.bin"), &content).expect("file");
    let log = dir.0.join("stderr.log");
    let root_arg = root.to_str().expect("utf-8 path");
    let args = [
        "--tcp",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--root",
        root_arg,
        "--idle-timeout",
        "60",
    ];
    let mut server = start_limited("file_server", &args, 2, &log);
    let (plain, http) = (server.socket_addr("tcp"), server.socket_addr("http"));

    // A plain client, accepted, that has not sent its name yet.
    let base = usable_fds(&server);
    let mut named_late = connect(plain);
    wait_for_fd_count(&server, |n| n == base + 1, "the plain client accepted");
    // An HTTP client, served while descriptors are plenty, kept alive.
    let mut web = BufReader::new(connect(http));
    let http::Response { status, body, .. } = http::get(&mut web, "/data.bin", "HTTP/1.1");
    assert!(status == 200 && body == content, "{status} before the shortage");
    wait_for_fd_count(&server, |n| n == base + 2, "the file closed after its answer");

    // Hold connections, one at a time, until the server's last descriptor
    // is taken: no connect is left waiting in the backlog.
    let mut held = Vec::new();
    while usable_fds(&server) < LIMIT as usize {
        assert!(held.len() < LIMIT as usize, "the limit never bit");
        let count = usable_fds(&server);
        held.push(connect(plain));
        wait_for_fd_count(&server, |n| n > count, "a held connection accepted");
    }
    assert_eq!(usable_fds(&server), LIMIT as usize);

    // HTTP: 503 with Retry-After, never 404; the connection stays usable.
    for _ in 0..2 {
        let answer = http::get(&mut web, "/data.bin", "HTTP/1.1");
        let status = answer.status;
        assert_eq!(status, 503, "out of descriptors, an existing file got {status}");
        assert_eq!(answer.field("retry-after"), Some("5"));
    }
    wait_for_log(&log, &["WARN", "data.bin", "answering 503"]);

    // The plain protocol: a reset, never the bytes `no_file`.
    named_late.write_all(b"data.bin\n").expect("name");
    let mut got = Vec::new();
    let read = named_late.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "{:?} instead of a reset",
        String::from_utf8_lossy(&got)
    );
    match read {
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}"),
        Ok(_) => panic!("a clean close, which reads as an empty file, instead of a reset"),
    }
    wait_for_log(&log, &["WARN", "data.bin", "resetting"]);

    // file_client on the one descriptor that reset freed: accepted, then
    // the open fails. It must fail, not say `not found`, leave no file.
    wait_for_fd_count(&server, |n| n == LIMIT as usize - 1, "the reset descriptor freed");
    let output = out.join("data.bin");
    let client = Command::new(example_path("file_client"))
        .arg(plain.to_string())
        .arg("data.bin")
        .arg("-o")
        .arg(&output)
        .stdin(Stdio::null())
        .output()
        .expect("run file_client");
    let stderr = String::from_utf8_lossy(&client.stderr);
    assert!(!client.status.success(), "file_client succeeded: {stderr}");
    assert!(!stderr.contains("not found"), "file_client said: {stderr}");
    assert!(stderr.contains("failed"), "file_client said: {stderr}");
    let left: Vec<_> = std::fs::read_dir(&out).expect("out dir").collect();
    assert!(left.is_empty(), "file_client left {left:?}");
    assert!(
        log_lines(&log, &["WARN", "resetting"]).len() >= 2,
        "file_client's connection was not the one reset:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Descriptors back: the same connection gets the file again.
    drop(held);
    wait_for_fd_count(&server, |n| n < LIMIT as usize / 2, "held descriptors freed");
    let http::Response { status, body, .. } = http::get(&mut web, "/data.bin", "HTTP/1.1");
    assert!(status == 200 && body == content, "{status} after the shortage");
    drop(web);
    assert!(server.terminate().success());
}
