//! The admin listener (`--admin ADDR`) of the example servers, from the
//! outside (the contract's "Across the servers": `--admin`): the announce
//! line, `/metrics` in the Prometheus text format with every family of the
//! contract and counters that move exactly as the traffic moves, `/stats`
//! and `/trace` as JSON (checked by Python's own parser), the answers to
//! anything else, keep-alive and pipelining, the shards of `--threads 2`,
//! and the other servers that take the flag.
//!
//! An admin connection's own requests are bytes the server reads, and its
//! answers bytes it writes: [`AdminClient`] counts both on the wire, so the
//! counters are checked to the byte. A snapshot is taken when a request has
//! been read and before its answer is written.
//!
//! The test that feeds the exposition to the Prometheus project's Python
//! parser (`prometheus_client`) is ignored by a plain `cargo test`; `.ci/run`
//! installs the parser (Debian's python3-prometheus-client) and runs it.
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The families the contract names, with their types.
const CONTRACT: [(&str, &str); 8] = [
    ("evloop_connections_open", "gauge"),
    ("evloop_connections_accepted_total", "counter"),
    ("evloop_connections_closed_total", "counter"),
    ("evloop_bytes_read_total", "counter"),
    ("evloop_bytes_written_total", "counter"),
    ("evloop_turns_total", "counter"),
    ("evloop_turn_duration_seconds", "histogram"),
    ("evloop_slow_callbacks_total", "counter"),
];

/// One answer, and its size on the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    wire: usize,
}

impl Answer {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a UTF-8 body")
    }
}

/// Reads one answer's head and, unless `head_only`, its body (by its
/// `Content-Length`, which every admin answer has).
#[track_caller]
fn read_answer(reader: &mut impl BufRead, head_only: bool) -> Answer {
    let mut wire = 0;
    let mut line = Vec::new();
    let mut next_line = |line: &mut Vec<u8>| {
        line.clear();
        let n = reader.read_until(b'\n', line).expect("a head line");
        assert!(n > 0, "the connection ended inside a head");
        wire += n;
        String::from_utf8(line.clone())
            .expect("a UTF-8 head")
            .trim_end_matches(['\r', '\n'])
            .to_owned()
    };
    let status_line = next_line(&mut line);
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let mut fields = Vec::new();
    loop {
        let field = next_line(&mut line);
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(':').expect("name: value");
        fields.push((name.to_owned(), value.trim().to_owned()));
    }
    let mut answer = Answer {
        status,
        fields,
        body: Vec::new(),
        wire,
    };
    if !head_only {
        let length: usize = answer
            .field("content-length")
            .expect("a Content-Length")
            .parse()
            .expect("a number");
        answer.body = vec![0; length];
        reader.read_exact(&mut answer.body).expect("the body");
        answer.wire += length;
    }
    answer
}

/// A kept-alive admin connection that counts what it sends and receives.
struct AdminClient {
    reader: BufReader<TcpStream>,
    /// The size of each request sent, in order.
    sent: Vec<usize>,
    /// The size of each answer received, in order.
    received: Vec<usize>,
}

impl AdminClient {
    #[track_caller]
    fn connect(addr: SocketAddr) -> AdminClient {
        AdminClient {
            reader: BufReader::new(connect(addr)),
            sent: Vec::new(),
            received: Vec::new(),
        }
    }

    #[track_caller]
    fn send(&mut self, raw: &[u8]) {
        self.reader.get_mut().write_all(raw).expect("send a request");
        self.sent.push(raw.len());
    }

    #[track_caller]
    fn answer(&mut self, head_only: bool) -> Answer {
        let answer = read_answer(&mut self.reader, head_only);
        self.received.push(answer.wire);
        answer
    }

    /// `GET path`, kept alive; the answer must be 200.
    #[track_caller]
    fn get(&mut self, path: &str) -> Answer {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes());
        let answer = self.answer(false);
        assert_eq!(answer.status, 200, "GET {path}: {answer:?}");
        answer
    }

    /// `GET /metrics`, parsed.
    #[track_caller]
    fn metrics(&mut self) -> Exposition {
        let answer = self.get("/metrics");
        assert!(
            answer
                .field("content-type")
                .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
            "{:?}",
            answer.fields
        );
        Exposition::parse(&answer.text())
    }

    /// What the server has read of this connection when it takes the
    /// snapshot for the last request: every request so far.
    fn read_by_server(&self) -> u64 {
        self.sent.iter().sum::<usize>() as u64
    }

    /// What it has written to it by then: every answer before the last.
    fn written_by_server(&self) -> u64 {
        let before_last = self.received.len().saturating_sub(1);
        self.received[..before_last].iter().sum::<usize>() as u64
    }
}

/// One sample of an exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A Prometheus text exposition (0.0.4), read line by line: the types of
/// the `# TYPE` lines and the samples, in order.
#[derive(Debug)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    #[track_caller]
    fn parse(text: &str) -> Exposition {
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                let before = types.insert(name.to_owned(), kind.to_owned());
                assert!(before.is_none(), "two # TYPE lines for {name}");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(!line.is_empty() && !line.starts_with('#'), "line {line:?}");
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels end in }");
                    let labels = labels
                        .split(',')
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').expect("label=value");
                            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                            (k.to_owned(), v.expect("a quoted label value").to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, Vec::new()),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value in {line:?}")),
            };
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        Exposition { types, samples }
    }

    /// The samples named `name` of shard `shard`.
    fn of<'a>(&'a self, name: &'a str, shard: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.label("shard") == Some(shard))
    }

    /// The one sample named `name` of shard `shard`, as an integer.
    #[track_caller]
    fn get(&self, name: &str, shard: &str) -> u64 {
        let found: Vec<&Sample> = self.of(name, shard).collect();
        assert_eq!(found.len(), 1, "{name}{{shard=\"{shard}\"}}: {found:?}");
        as_count(found[0].value)
    }

    /// The sum of the samples named `name` over every shard and label.
    fn total(&self, name: &str) -> u64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| as_count(s.value))
            .sum()
    }

    /// Every family of the contract is there with its type, and has
    /// samples for each of `shards`; the histogram is well formed.
    #[track_caller]
    fn check_contract(&self, shards: &[&str]) {
        for (family, kind) in CONTRACT {
            assert_eq!(
                self.types.get(family).map(String::as_str),
                Some(kind),
                "# TYPE of {family}"
            );
            let sample = if kind == "histogram" {
                format!("{family}_count")
            } else {
                family.to_owned()
            };
            for shard in shards {
                let n = self.of(&sample, shard).count();
                if family == "evloop_connections_closed_total" {
                    assert!(n >= 1, "{sample} of shard {shard}");
                    assert!(self.of(&sample, shard).all(|s| s.label("reason").is_some()));
                } else {
                    assert_eq!(n, 1, "{sample} of shard {shard}");
                }
            }
        }
        for shard in shards {
            self.check_histogram("evloop_turn_duration_seconds", shard);
        }
        for sample in &self.samples {
            assert!(sample.label("shard").is_some(), "no shard label: {sample:?}");
        }
    }

    /// Cumulative buckets in increasing bounds, the last `+Inf`, and a
    /// count equal to it.
    #[track_caller]
    fn check_histogram(&self, family: &str, shard: &str) {
        let name = format!("{family}_bucket");
        let buckets: Vec<(f64, u64)> = self
            .of(&name, shard)
            .map(|s| {
                let le = s.label("le").expect("an le label");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("a bound")
                };
                (le, as_count(s.value))
            })
            .collect();
        assert!(buckets.len() > 1, "{name} of shard {shard}: {buckets:?}");
        for pair in buckets.windows(2) {
            assert!(pair[0].0 < pair[1].0, "bounds in order: {buckets:?}");
            assert!(pair[0].1 <= pair[1].1, "cumulative counts: {buckets:?}");
        }
        let (last_le, last) = buckets[buckets.len() - 1];
        assert_eq!(last_le, f64::INFINITY);
        assert_eq!(self.get(&format!("{family}_count"), shard), last);
        let sum = self
            .of(&format!("{family}_sum"), shard)
            .next()
            .expect("a _sum")
            .value;
        assert!(sum >= 0.0 && sum.is_finite(), "{sum}");
    }
}

#[track_caller]
fn as_count(value: f64) -> u64 {
    assert!(
        value >= 0.0 && value.fract() == 0.0 && value < 2f64.powi(53),
        "{value} is not a count"
    );
    value as u64
}

/// Echoes `size` bytes on each of `clients` new connections, all open at
/// once; returns them, still open.
#[track_caller]
fn echo_clients(addr: SocketAddr, clients: usize, size: usize) -> Vec<TcpStream> {
    let mut all: Vec<TcpStream> = (0..clients).map(|_| connect(addr)).collect();
    for (i, client) in all.iter_mut().enumerate() {
        let data = pattern(size, i as u64 + 1);
        write_all(client, &data);
        assert_same_bytes(&read_exact(client, size), &data, "echo");
    }
    all
}

/// Half-closes each client and reads to the server's close.
#[track_caller]
fn hang_up(clients: Vec<TcpStream>) {
    for mut client in clients {
        client.shutdown(Shutdown::Write).expect("half-close");
        assert_eq!(read_to_end(&mut client), b"");
    }
}

/// Asks `/metrics` until `open` connections are open over all shards.
#[track_caller]
fn metrics_with_open(admin: &mut AdminClient, open: u64) -> Exposition {
    let deadline = Instant::now() + STEP;
    loop {
        let metrics = admin.metrics();
        if metrics.total("evloop_connections_open") == open {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{} connections open, not {open}",
            metrics.total("evloop_connections_open")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An echo server with an admin listener, and extra flags.
#[track_caller]
fn echo_with_admin(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = ServerProcess::start("echo", &args, 2);
    let kinds: Vec<&str> = server.listening.iter().map(|(k, _)| k.as_str()).collect();
    assert!(kinds.contains(&"tcp") && kinds.contains(&"admin"), "{kinds:?}");
    server
}

/// Closes the admin connection (so that the server need not wait for the
/// client's end of it), then stops the server with SIGTERM: exit 0.
#[track_caller]
fn stop(mut server: ServerProcess, admin: AdminClient) {
    drop(admin);
    assert_eq!(server.terminate().code(), Some(0));
}

/// The system's Python 3 if there is one (it starts fastest), else the
/// one on the PATH.
fn python3() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Runs `python3 -c script` with `input` on its stdin; its stdout.
#[track_caller]
fn python(interpreter: &str, script: &str, input: &[u8]) -> String {
    let mut child = Command::new(interpreter)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {interpreter}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("python's output");
    writer.join().expect("writer").expect("python's stdin");
    assert!(
        out.status.success(),
        "{interpreter} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 from python")
}

#[test]
fn echo_metrics_follow_the_echo_traffic_to_the_byte() {
    const CLIENTS: usize = 8;
    const SIZE: usize = 3000;
    let server = echo_with_admin(&[]);
    let mut admin = AdminClient::connect(server.socket_addr("admin"));

    let fresh = admin.metrics();
    fresh.check_contract(&["0"]);
    // The admin connection is the one accepted so far; its request the
    // only bytes read, and nothing written yet.
    assert_eq!(fresh.get("evloop_connections_accepted_total", "0"), 1);
    assert_eq!(fresh.get("evloop_connections_open", "0"), 1);
    assert_eq!(fresh.get("evloop_bytes_read_total", "0"), admin.read_by_server());
    assert_eq!(fresh.get("evloop_bytes_written_total", "0"), 0);
    assert_eq!(fresh.total("evloop_connections_closed_total"), 0);
    let turns_before = fresh.get("evloop_turns_total", "0");

    let clients = echo_clients(server.socket_addr("tcp"), CLIENTS, SIZE);
    let busy = admin.metrics();
    let echoed = (CLIENTS * SIZE) as u64;
    assert_eq!(busy.get("evloop_connections_open", "0"), CLIENTS as u64 + 1);
    assert_eq!(
        busy.get("evloop_connections_accepted_total", "0"),
        CLIENTS as u64 + 1
    );
    assert_eq!(
        busy.get("evloop_bytes_read_total", "0"),
        echoed + admin.read_by_server()
    );
    assert_eq!(
        busy.get("evloop_bytes_written_total", "0"),
        echoed + admin.written_by_server()
    );

    hang_up(clients);
    let after = metrics_with_open(&mut admin, 1);
    after.check_contract(&["0"]);
    assert_eq!(
        after.get("evloop_connections_accepted_total", "0"),
        CLIENTS as u64 + 1
    );
    assert_eq!(
        after.get("evloop_bytes_read_total", "0"),
        echoed + admin.read_by_server()
    );
    assert_eq!(
        after.get("evloop_bytes_written_total", "0"),
        echoed + admin.written_by_server()
    );
    let closed: HashMap<String, u64> = after
        .of("evloop_connections_closed_total", "0")
        .map(|s| (s.label("reason").expect("reason").to_owned(), as_count(s.value)))
        .collect();
    assert_eq!(closed.values().sum::<u64>(), CLIENTS as u64, "{closed:?}");
    assert_eq!(closed.get("closed"), Some(&(CLIENTS as u64)), "{closed:?}");
    let turns = after.get("evloop_turns_total", "0");
    assert!(turns > turns_before);
    // Counted in a turn that has not ended: it is not timed yet.
    assert_eq!(after.get("evloop_turn_duration_seconds_count", "0") + 1, turns);
    stop(server, admin);
}

#[test]
fn stats_list_the_clients_and_trace_is_json_lines() {
    let server = echo_with_admin(&[]);
    let mut admin = AdminClient::connect(server.socket_addr("admin"));
    let clients = echo_clients(server.socket_addr("tcp"), 2, 100);
    let peers: Vec<String> = clients
        .iter()
        .map(|c| c.local_addr().expect("local address").to_string())
        .collect();

    let stats = admin.get("/stats");
    assert_eq!(stats.field("content-type"), Some("application/json"));
    let summary = python(
        python3(),
        r#"
import json, sys
d = json.load(sys.stdin)
print("shown", d["connections_shown"], "total", d["connections_total"])
for s in d["shards"]:
    print("shard", s["shard"], s["accepted"], s["connections_open"], s["bytes_read"])
for c in d["connections"]:
    print("connection", c["shard"], c["key"], c["peer"], c["state"], c["queued"], c["age_seconds"])
"#,
        &stats.body,
    );
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines[0], "shown 3 total 3", "{summary}");
    assert!(lines[1].starts_with("shard 0 3 3 "), "{summary}");
    let mut keys = HashMap::new();
    for peer in &peers {
        let line = lines
            .iter()
            .find(|l| l.split(' ').nth(3) == Some(peer.as_str()))
            .unwrap_or_else(|| panic!("{peer} not listed: {summary}"));
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words[4], "OPEN", "{line}");
        assert_eq!(words[5], "0", "nothing queued: {line}");
        keys.insert(peer.clone(), words[2].to_owned());
    }

    // The trace: JSON lines, each an object with turn, at, key, event.
    let check_trace = r#"
import json, sys
for line in sys.stdin.read().split("\n")[:-1]:
    e = json.loads(line)
    assert isinstance(e, dict), line
    assert isinstance(e["turn"], int) and isinstance(e["at"], (int, float)), line
    print(e["key"], e["event"])
"#;
    let trace = admin.get("/trace");
    assert_eq!(trace.field("content-type"), Some("application/x-ndjson"));
    assert!(trace.body.ends_with(b"\n"));
    let events = python(python3(), check_trace, &trace.body);
    assert_eq!(events.lines().count(), trace.text().lines().count());
    for key in keys.values() {
        assert!(events.contains(&format!("{key} accepted\n")), "{events}");
        assert!(events.contains(&format!("{key} read\n")), "{events}");
        assert!(events.contains(&format!("{key} wrote\n")), "{events}");
    }

    let last = admin.get("/trace?last=3");
    let last_events = python(python3(), check_trace, &last.body);
    assert_eq!(last_events.lines().count(), 3, "{last_events}");

    let key = &keys[&peers[0]];
    let encoded = key.replace('#', "%23");
    let only = admin.get(&format!("/trace?key={encoded}"));
    let only_events = python(python3(), check_trace, &only.body);
    assert!(
        only_events.starts_with(&format!("{key} accepted\n")),
        "{only_events}"
    );
    assert!(
        only_events.lines().all(|l| l.starts_with(&format!("{key} "))),
        "{only_events}"
    );
    let bare = admin.get(&format!("/trace?key={}", key.trim_start_matches('#')));
    assert_eq!(python(python3(), check_trace, &bare.body), only_events);
    drop(clients);
}

#[test]
fn anything_else_is_404_and_a_bad_head_is_400_then_close() {
    let server = echo_with_admin(&[]);
    let addr = server.socket_addr("admin");
    let mut admin = AdminClient::connect(addr);
    for request in [
        "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /metrics/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /trace?what=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        "DELETE /stats HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        admin.send(request.as_bytes());
        let answer = admin.answer(false);
        assert_eq!(answer.status, 404, "{request:?}: {answer:?}");
    }
    // Still kept alive after the 404s.
    admin.get("/metrics");

    for garbage in [
        &b"garbage\r\n\r\n"[..],
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
    ] {
        let mut stream = BufReader::new(connect(addr));
        stream.get_mut().write_all(garbage).expect("send");
        let answer = read_answer(&mut stream, false);
        assert_eq!(answer.status, 400, "{garbage:?}: {answer:?}");
        assert_eq!(answer.field("connection"), Some("close"));
        assert_eq!(read_to_end(&mut stream), b"", "closed after the 400");
    }

    let mut big = BufReader::new(connect(addr));
    let field = format!("X-Big: {}\r\n", "b".repeat(9 * 1024));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: a\r\n{field}\r\n");
    // The server may close before it has read it all: a reset then.
    let _ = big.get_mut().write_all(request.as_bytes());
    let answer = read_answer(&mut big, false);
    // The contract's answer to any bad request, an oversized head too.
    assert_eq!(answer.status, 400, "{answer:?}");
}

#[test]
fn one_connection_serves_head_keep_alive_and_pipelined_requests() {
    let server = echo_with_admin(&[]);
    let mut admin = AdminClient::connect(server.socket_addr("admin"));

    admin.send(b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = admin.answer(true);
    assert_eq!(head.status, 200);
    assert!(head
        .field("content-type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    let length: usize = head
        .field("content-length")
        .expect("length")
        .parse()
        .expect("number");
    assert!(length > 1000, "the length of the body it would send: {length}");
    // No body came: the next bytes on the connection are the next answer.
    let stats = admin.get("/stats");
    assert_eq!(stats.field("content-type"), Some("application/json"));
    let metrics = admin.get("/metrics");
    assert!(metrics.text().contains("# TYPE evloop_turns_total counter\n"));

    // Two requests in one write: two answers, in order.
    admin.send(b"GET /stats HTTP/1.1\r\nHost: a\r\n\r\nGET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    let first = admin.answer(false);
    let second = admin.answer(false);
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.field("content-type"), Some("application/json"));
    assert!(second.text().starts_with("# HELP evloop_"), "{}", second.text());

    // HTTP/1.0 and `Connection: close` are answered, then closed.
    admin.send(b"GET /metrics HTTP/1.0\r\n\r\n");
    let last = admin.answer(false);
    assert_eq!(last.status, 200);
    assert_eq!(last.field("connection"), Some("close"));
    assert_eq!(read_to_end(&mut admin.reader), b"");
}

#[test]
fn two_threads_have_samples_for_each_shard_and_sums_over_both() {
    const CLIENTS: usize = 64;
    const SIZE: usize = 200;
    let server = echo_with_admin(&["--threads", "2"]);
    let mut admin = AdminClient::connect(server.socket_addr("admin"));
    let fresh = admin.metrics();
    fresh.check_contract(&["0", "1"]);
    assert_eq!(fresh.get("evloop_connections_accepted_total", "1"), 0);

    let clients = echo_clients(server.socket_addr("tcp"), CLIENTS, SIZE);
    let busy = admin.metrics();
    busy.check_contract(&["0", "1"]);
    let echoed = (CLIENTS * SIZE) as u64;
    assert_eq!(busy.total("evloop_connections_open"), CLIENTS as u64 + 1);
    assert_eq!(
        busy.total("evloop_connections_accepted_total"),
        CLIENTS as u64 + 1
    );
    let on_0 = busy.get("evloop_connections_accepted_total", "0");
    let on_1 = busy.get("evloop_connections_accepted_total", "1");
    assert!(
        on_0 > 1 && on_1 > 0,
        "{CLIENTS} connections over two shards: {on_0} (with the admin's) and {on_1}"
    );
    assert_eq!(busy.get("evloop_connections_open", "1"), on_1);
    assert_eq!(
        busy.total("evloop_bytes_read_total"),
        echoed + admin.read_by_server()
    );
    assert_eq!(
        busy.total("evloop_bytes_written_total"),
        echoed + admin.written_by_server()
    );
    assert_eq!(busy.get("evloop_bytes_read_total", "1"), on_1 * SIZE as u64);
    assert!(busy.get("evloop_turns_total", "1") > 0);

    // /stats and /trace gather both shards too.
    let stats = admin.get("/stats");
    let summary = python(
        python3(),
        r#"
import json, sys
d = json.load(sys.stdin)
print(sorted(s["shard"] for s in d["shards"]), d["connections_total"], sorted(set(c["shard"] for c in d["connections"])))
"#,
        &stats.body,
    );
    assert_eq!(summary.trim(), format!("[0, 1] {} [0, 1]", CLIENTS + 1));
    let trace = admin.get("/trace?last=1");
    assert_eq!(trace.text().lines().count(), 2, "one event per shard");
    // Pipelined: the second waits in the input while the first gathers.
    admin.send(b"GET /stats HTTP/1.1\r\nHost: a\r\n\r\nGET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    let first = admin.answer(false);
    let second = admin.answer(false);
    assert_eq!(first.field("content-type"), Some("application/json"));
    Exposition::parse(&second.text()).check_contract(&["0", "1"]);

    hang_up(clients);
    let after = metrics_with_open(&mut admin, 1);
    assert_eq!(after.total("evloop_connections_closed_total"), CLIENTS as u64);
    stop(server, admin);
}

#[test]
fn the_watchdog_and_the_recorder_follow_their_flags() {
    let summary = r#"
import json, sys
s = json.load(sys.stdin)["shards"][0]
print(s["slow_callback_ms"], s["trace_capacity"])
"#;
    let server = echo_with_admin(&[]);
    let mut admin = AdminClient::connect(server.socket_addr("admin"));
    assert_eq!(
        python(python3(), summary, &admin.get("/stats").body),
        "10.0 4096\n"
    );
    stop(server, admin);

    let server = echo_with_admin(&["--slow-callback", "250", "--trace-events", "16"]);
    let mut admin = AdminClient::connect(server.socket_addr("admin"));
    assert_eq!(
        python(python3(), summary, &admin.get("/stats").body),
        "250.0 16\n"
    );
    // A ring of 16 keeps the last 16 events of all that happened.
    let clients = echo_clients(server.socket_addr("tcp"), 10, 100);
    assert_eq!(admin.get("/trace").text().lines().count(), 16);
    hang_up(clients);
    stop(server, admin);

    let server = echo_with_admin(&["--slow-callback", "0", "--trace-events", "0"]);
    let mut admin = AdminClient::connect(server.socket_addr("admin"));
    let clients = echo_clients(server.socket_addr("tcp"), 2, 100);
    assert_eq!(python(python3(), summary, &admin.get("/stats").body), "None 0\n");
    assert_eq!(admin.get("/trace").body, b"", "no recorder, no events");
    let metrics = metrics_with_open(&mut admin, 3);
    assert!(
        metrics.get("evloop_bytes_read_total", "0") >= 200,
        "the counters count on"
    );
    hang_up(clients);
    stop(server, admin);
}

#[test]
fn an_admin_address_in_use_is_one_line_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    assert_taken_address_is_one_line("echo", &["--tcp", "127.0.0.1:0", "--admin", &addr], &addr);
}

#[test]
fn chat_answers_metrics() {
    let server = ServerProcess::start("chat", &["--tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0"], 2);
    let mut admin = AdminClient::connect(server.socket_addr("admin"));
    let mut member = BufReader::new(connect(server.socket_addr("tcp")));
    let mut welcome = String::new();
    member.read_line(&mut welcome).expect("welcome");
    assert!(welcome.starts_with("* welcome "), "{welcome}");
    let metrics = admin.metrics();
    metrics.check_contract(&["0"]);
    assert_eq!(metrics.get("evloop_connections_open", "0"), 2);
    assert_eq!(metrics.get("evloop_connections_accepted_total", "0"), 2);
    assert!(metrics.get("evloop_bytes_written_total", "0") >= welcome.len() as u64);
    drop(member);
    stop(server, admin);
}

#[test]
fn file_server_answers_metrics() {
    let root = TempDir::new("admin-file-server");
    std::fs::write(root.0.join("note.txt"), b"a file\n").expect("file");
    let args = [
        "--tcp",
        "127.0.0.1:0",
        "--root",
        root.0.to_str().expect("UTF-8 path"),
        "--admin",
        "127.0.0.1:0",
    ];
    let server = ServerProcess::start("file_server", &args, 2);
    let mut admin = AdminClient::connect(server.socket_addr("admin"));
    let mut download = connect(server.socket_addr("tcp"));
    write_all(&mut download, b"note.txt\n");
    assert_eq!(read_to_end(&mut download), b"a file\n");
    drop(download); // the server lingers for this end
    let metrics = metrics_with_open(&mut admin, 1);
    metrics.check_contract(&["0"]);
    assert_eq!(metrics.get("evloop_connections_accepted_total", "0"), 2);
    assert_eq!(metrics.total("evloop_connections_closed_total"), 1);
    assert!(metrics.get("evloop_bytes_written_total", "0") >= 7);
    stop(server, admin);
}

#[test]
fn demo_answers_metrics() {
    let root = TempDir::new("admin-demo");
    let args = [
        "--root",
        root.0.to_str().expect("UTF-8 path"),
        "--echo",
        "127.0.0.1:0",
        "--echo-udp",
        "127.0.0.1:0",
        "--chat",
        "127.0.0.1:0",
        "--files",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ];
    let server = ServerProcess::start("demo", &args, 6);
    let echo: SocketAddr = server
        .listening
        .iter()
        .find(|(kind, _)| kind == "tcp")
        .map(|(_, addr)| addr.parse().expect("ip:port"))
        .expect("the echo listener");
    let mut admin = AdminClient::connect(server.socket_addr("admin"));
    let mut client = connect(echo);
    write_all(&mut client, b"ping");
    assert_eq!(read_exact(&mut client, 4), b"ping");
    let metrics = admin.metrics();
    metrics.check_contract(&["0"]);
    assert_eq!(metrics.get("evloop_connections_open", "0"), 2);
    assert_eq!(
        metrics.get("evloop_bytes_read_total", "0"),
        4 + admin.read_by_server()
    );
    drop(client);
    stop(server, admin);
}

/// The Python parser of the Prometheus project: each sample of the
/// exposition on stdin as `family TAB type TAB sample TAB labels TAB value`,
/// the labels as `k=v` sorted and joined with commas.
const PROMETHEUS_PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(family.name, family.type, s.name, labels, repr(float(s.value)), sep="\t")
"#;

/// A Python 3 that has `prometheus_client`: the system's (where Debian's
/// package installs it), or the one on the PATH.
#[track_caller]
fn python_with_prometheus_client() -> &'static str {
    for interpreter in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(interpreter)
            .args(["-c", "import prometheus_client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return interpreter;
        }
    }
    panic!(
        "no python3 with the prometheus_client module: .ci/run installs it \
         (apt-get install python3-prometheus-client)"
    );
}

/// One sample as the Python parser read it.
#[derive(Debug)]
struct Parsed {
    family: String,
    kind: String,
    sample: String,
    labels: String,
    value: f64,
}

#[track_caller]
fn parse_with_prometheus_client(interpreter: &str, exposition: &str) -> Vec<Parsed> {
    python(interpreter, PROMETHEUS_PARSE, exposition.as_bytes())
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split('\t').collect();
            assert_eq!(parts.len(), 5, "{line:?}");
            Parsed {
                family: parts[0].to_owned(),
                kind: parts[1].to_owned(),
                sample: parts[2].to_owned(),
                labels: parts[3].to_owned(),
                value: parts[4].parse().expect("a float"),
            }
        })
        .collect()
}

/// The value of the one sample named `sample` with exactly `labels`.
#[track_caller]
fn parsed_value(parsed: &[Parsed], sample: &str, labels: &str) -> u64 {
    let found: Vec<&Parsed> = parsed
        .iter()
        .filter(|p| p.sample == sample && p.labels == labels)
        .collect();
    assert_eq!(found.len(), 1, "{sample}{{{labels}}}: {found:?}");
    as_count(found[0].value)
}

#[test]
#[ignore = "needs python3-prometheus-client; .ci/run installs it and runs this"]
fn prometheus_client_parses_the_exposition_and_sees_the_counters_move() {
    const CLIENTS: usize = 5;
    const SIZE: usize = 1234;
    let interpreter = python_with_prometheus_client();
    let server = echo_with_admin(&[]);
    let mut admin = AdminClient::connect(server.socket_addr("admin"));

    let before_text = admin.get("/metrics").text();
    let before = parse_with_prometheus_client(interpreter, &before_text);
    let (read_0, written_0) = (admin.read_by_server(), admin.written_by_server());
    let clients = echo_clients(server.socket_addr("tcp"), CLIENTS, SIZE);
    hang_up(clients);
    metrics_with_open(&mut admin, 1);
    let after_text = admin.get("/metrics").text();
    let after = parse_with_prometheus_client(interpreter, &after_text);
    let (read_1, written_1) = (admin.read_by_server(), admin.written_by_server());

    // Every sample line was read as one sample, with a shard label, in a
    // family of a known type.
    for (text, parsed) in [(&before_text, &before), (&after_text, &after)] {
        let lines = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(parsed.len(), lines, "every sample parsed");
        for p in parsed {
            assert!(p.labels.split(',').any(|l| l == "shard=0"), "{p:?}");
            assert!(
                ["counter", "gauge", "histogram"].contains(&p.kind.as_str()),
                "{p:?}"
            );
        }
    }
    // The contract's families, with their types.
    for (family, kind) in CONTRACT {
        let sample = if kind == "histogram" {
            format!("{family}_count")
        } else {
            family.to_owned()
        };
        let found = after
            .iter()
            .find(|p| p.sample == sample)
            .unwrap_or_else(|| panic!("no {sample} in the parsed exposition"));
        assert_eq!(found.kind, kind, "{found:?}");
        assert_eq!(
            found.family,
            family.strip_suffix("_total").unwrap_or(family),
            "{found:?}"
        );
    }

    // The counters moved as the traffic moved.
    let moved = |sample: &str, labels: &str| {
        parsed_value(&after, sample, labels) - parsed_value(&before, sample, labels)
    };
    let echoed = (CLIENTS * SIZE) as u64;
    assert_eq!(
        moved("evloop_connections_accepted_total", "shard=0"),
        CLIENTS as u64
    );
    assert_eq!(
        moved("evloop_bytes_read_total", "shard=0"),
        echoed + read_1 - read_0
    );
    assert_eq!(
        moved("evloop_bytes_written_total", "shard=0"),
        echoed + written_1 - written_0
    );
    assert_eq!(
        moved("evloop_connections_closed_total", "reason=closed,shard=0"),
        CLIENTS as u64
    );
    assert_eq!(parsed_value(&after, "evloop_connections_open", "shard=0"), 1);
    assert!(moved("evloop_turns_total", "shard=0") > 0);
    assert!(moved("evloop_turn_duration_seconds_count", "shard=0") > 0);
    assert_eq!(
        parsed_value(&after, "evloop_turn_duration_seconds_bucket", "le=+Inf,shard=0"),
        parsed_value(&after, "evloop_turn_duration_seconds_count", "shard=0")
    );
    stop(server, admin);
}
