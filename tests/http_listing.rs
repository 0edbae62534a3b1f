//! Directory listings from the outside (docs/programs.md: file_server, HTTP): a
//! listing shows only what a request would serve, is produced as the client
//! reads it (chunked for HTTP/1.1, close-delimited for HTTP/1.0), costs a
//! client that does not read at most 256 KiB of server memory, gives that
//! back when the client leaves, and does not stall other clients while big
//! directories are listed.
mod common;

use std::collections::BTreeSet;
use std::io::{BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

/// Entries of the big directory.
const ENTRIES: usize = 20_000;

/// Starts `file_server` with HTTP on a free port, serving `root`.
fn serve(root: &Path) -> ServerProcess {
    let root = root.to_str().expect("UTF-8 temp path");
    ServerProcess::start(
        "file_server",
        &["--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--root", root],
        2,
    )
}

/// Fills `dir` with [`ENTRIES`] small files whose names are `prefix` and a
/// number.
fn fill(dir: &Path, prefix: &str) {
    std::fs::create_dir_all(dir).expect("big dir");
    for i in 0..ENTRIES {
        std::fs::write(dir.join(format!("{prefix}{i:05}")), b"x").expect("entry");
    }
}

/// GETs `target` on a fresh connection with `version`.
fn get(addr: SocketAddr, target: &str, version: &str) -> http::Response {
    http::get(&mut BufReader::new(connect(addr)), target, version)
}

/// Every `href` on a page, in order.
fn hrefs(page: &str) -> Vec<String> {
    page.split("<a href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_listing_shows_only_what_a_request_would_serve() {
    let temp = TempDir::new("listing-servable");
    let root = temp.0.join("root");
    std::fs::create_dir_all(root.join("sub")).expect("root");
    std::fs::write(root.join("a.txt"), b"a").expect("file");
    std::fs::write(root.join("sub/b.txt"), b"bb").expect("file");
    std::fs::write(temp.0.join("secret.txt"), b"outside the root").expect("secret");
    let links = [
        ("inside", root.join("sub/b.txt")),
        ("inside-dir", root.join("sub")),
        ("passwd", "/etc/passwd".into()),
        ("etc", "/etc".into()),
        ("secret", temp.0.join("secret.txt")),
        ("up", temp.0.clone()),
        ("dangling", root.join("missing")),
    ];
    for (name, target) in &links {
        std::os::unix::fs::symlink(target, root.join(name)).expect("symlink");
    }
    let fifo = std::ffi::CString::new(root.join("pipe").to_str().expect("UTF-8")).expect("no NUL");
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    let _socket = UnixListener::bind(root.join("sock")).expect("unix socket");

    let server = serve(&root);
    let addr = server.socket_addr("http");
    let answer = get(addr, "/", "HTTP/1.1");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.field("transfer-encoding"), Some("chunked"), "{answer:?}");
    let page = String::from_utf8(answer.body).expect("UTF-8 page");
    assert!(page.ends_with("</html>\n"), "the whole page: {page}");
    let listed: BTreeSet<String> = hrefs(&page).into_iter().collect();
    let want: BTreeSet<String> = ["a.txt", "sub/", "inside", "inside-dir/"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, want, "{page}");
    for name in ["passwd", "etc", "secret", "up", "dangling", "pipe", "sock"] {
        assert!(!page.contains(&format!(">{name}")), "{name} shown: {page}");
    }

    // Both ways round: every link is served, every entry left out is not.
    for href in &listed {
        let status = get(addr, &format!("/{href}"), "HTTP/1.1").status;
        assert_eq!(status, 200, "GET /{href}");
    }
    for entry in std::fs::read_dir(&root).expect("root") {
        let name = entry.expect("entry").file_name().into_string().expect("UTF-8");
        if !listed.contains(&name) && !listed.contains(&format!("{name}/")) {
            let status = get(addr, &format!("/{name}"), "HTTP/1.1").status;
            assert!(
                matches!(status, 403 | 404),
                "GET /{name} of an entry left out: {status}"
            );
        }
    }

    // HTTP/1.0 gets the same page, ended by the close.
    let old = get(addr, "/", "HTTP/1.0");
    assert_eq!(old.status, 200);
    assert_eq!(old.field("connection"), Some("close"), "{old:?}");
    assert_eq!(old.field("transfer-encoding"), None, "{old:?}");
    assert_eq!(String::from_utf8(old.body).expect("UTF-8"), page);
}

/// The server's CPU time so far, in clock ticks (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the command: state is field 0, utime field 11, stime field 12.
    field(11) + field(12)
}

/// Waits (bounded) until the server has used no CPU for a quarter of a
/// second: every listing it can produce is produced.
fn until_idle(server: &ServerProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = cpu_ticks(server.child.id());
    let mut still = 0;
    while still < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = cpu_ticks(server.child.id());
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
}

/// One round of `clients` that ask for `/big/` and never read: the server's
/// memory while they wait (once it has produced all it will) and after they
/// have left (reset), in KiB above `before`.
fn stalled_round(server: &ServerProcess, clients: usize, before: u64, fds: usize) -> (u64, u64) {
    let addr = server.socket_addr("http");
    let mut streams = Vec::new();
    for _ in 0..clients {
        let mut stream = connect(addr);
        write_all(&mut stream, b"GET /big/ HTTP/1.1\r\nHost: t\r\n\r\n");
        streams.push(stream);
    }
    // Each has begun to get its page (one byte read, no more).
    for stream in &mut streams {
        let mut byte = [0];
        stream.read_exact(&mut byte).expect("the answer begins");
    }
    until_idle(server);
    let held = server.rss_kib().saturating_sub(before);
    for stream in &streams {
        reset_on_close(stream);
    }
    drop(streams);
    let deadline = Instant::now() + STEP;
    while server.fd_count() > fds && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.fd_count() <= fds, "every stalled client closed");
    (held, server.rss_kib().saturating_sub(before))
}

#[test]
fn a_client_that_does_not_read_a_listing_holds_at_most_256_kib_and_gives_it_back() {
    /// Clients that ask and never read, per round.
    const CLIENTS: usize = 20;
    let temp = TempDir::new("listing-memory");
    // Long names: a page of about 7 MB, far more than the kernel's socket
    // buffers take, so what the server holds shows in its memory.
    fill(&temp.0.join("big"), &"n".repeat(120));
    let server = serve(&temp.0);
    let addr = server.socket_addr("http");
    let fds = server.fd_count();
    // One whole pull first, so the baseline includes what any listing
    // leaves behind (the allocator's arenas, the date cache).
    let whole = get(addr, "/big/", "HTTP/1.1");
    assert_eq!(whole.status, 200);
    assert!(whole.body.len() > 6_000_000, "page of {} bytes", whole.body.len());
    let before = server.rss_kib();

    // The index of names (shared, about 3 MiB here) comes on top.
    let bound = CLIENTS as u64 * 256 + 4 * 1024;
    let mut helds = Vec::new();
    let mut afters = Vec::new();
    for round in 1..=3 {
        let (held, after) = stalled_round(&server, CLIENTS, before, fds);
        println!(
            "round {round}: {CLIENTS} clients that do not read: +{held} KiB; after they left: +{after} KiB"
        );
        assert!(
            held <= bound,
            "{CLIENTS} stalled clients hold {held} KiB (bound {bound} KiB)"
        );
        helds.push(held);
        afters.push(after);
    }
    // What stays after the clients leave is the allocator's, kept for reuse
    // (whether it trims after a given round varies from run to run): after
    // three rounds the server holds no more than one round's working set,
    // where a leak would have added a round's worth each time.
    assert!(
        afters[2] <= helds[0] + 2048,
        "memory kept grows from round to round: held {helds:?}, kept {afters:?} KiB"
    );
}

#[test]
fn small_requests_go_between_the_chunks_of_big_listings() {
    /// Clients pulling the big listing over and over.
    const PULLERS: usize = 4;
    /// Small requests timed.
    const SMALL: usize = 200;
    let temp = TempDir::new("listing-stall");
    fill(&temp.0.join("big"), "file-");
    std::fs::write(temp.0.join("small.txt"), b"small").expect("file");
    let server = serve(&temp.0);
    let addr = server.socket_addr("http");

    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(Barrier::new(PULLERS + 1));
    let pullers: Vec<_> = (0..PULLERS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let started = Arc::clone(&started);
            std::thread::spawn(move || {
                let mut stream = BufReader::new(connect(addr));
                let mut times = Vec::new();
                let mut first = true;
                // Bounded: at most 200 pulls, and the main thread stops them.
                while times.len() < 200 && !stop.load(Ordering::Relaxed) {
                    let begin = Instant::now();
                    let page = http::get(&mut stream, "/big/", "HTTP/1.1");
                    assert_eq!(page.status, 200);
                    assert!(page.body.ends_with(b"</html>\n"));
                    times.push(begin.elapsed());
                    if first {
                        first = false;
                        started.wait();
                    }
                }
                times
            })
        })
        .collect();
    started.wait();

    let mut client = BufReader::new(connect(addr));
    let mut small = Vec::new();
    for _ in 0..SMALL {
        let begin = Instant::now();
        let answer = http::get(&mut client, "/small.txt", "HTTP/1.1");
        small.push(begin.elapsed());
        assert_eq!((answer.status, answer.body.as_slice()), (200, &b"small"[..]));
    }
    stop.store(true, Ordering::Relaxed);
    let mut pulls: Vec<Duration> = pullers
        .into_iter()
        .flat_map(|p| p.join().expect("puller"))
        .collect();
    small.sort();
    pulls.sort();
    let p99 = small[SMALL * 99 / 100 - 1];
    let median_pull = pulls[pulls.len() / 2];
    println!(
        "small GET p99 {p99:?} while {PULLERS} clients pull a {ENTRIES}-entry listing (median pull {median_pull:?}, {} pulls)",
        pulls.len()
    );
    // A listing built whole on the loop makes a small request wait for
    // whole pages; one produced a chunk per turn, for a few chunks.
    assert!(
        p99 * 8 < median_pull,
        "small GET p99 {p99:?} against a median pull of {median_pull:?}"
    );
}
