//! The file_server example's HTTP/1.1 side driven by real clients (docs/programs.md:
//! file_server, HTTP): the `curl` binary downloads a large file byte-exact,
//! sees `Content-Length` and `Accept-Ranges: bytes` in a HEAD, gets exactly
//! the bytes of a range and of a suffix range, resumes a cut download with
//! `curl -C -`, and fetches names that need percent-encoding; `wget`
//! downloads a file and continues a partial one with `-c`. A headless
//! Chromium (ignored by default; `.ci/run` runs it) renders a directory
//! listing of odd names with no markup injected by a name, and every link on
//! the rendered page leads to the right file or directory. The same browser
//! (ignored too) runs the admin listener's live page against an echo server
//! and the page shows what the loop holds: polls that succeeded, turns per
//! second, the turn-time histogram, each open echo connection and the
//! newest events.
mod common;

use std::ffi::OsString;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The real curl binary.
const CURL: &str = "/usr/bin/curl";
/// The real wget binary.
const WGET: &str = "/usr/bin/wget";
/// Debian's Chromium launcher (it `exec`s the browser).
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long Chromium may take to start, load one page and dump it.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// A file_server serving `root` over HTTP only; the server is stopped before
/// the root is removed.
struct Served {
    server: ServerProcess,
    /// Kept only to be removed after the server is stopped.
    _root: TempDir,
}

impl Served {
    #[track_caller]
    fn start(root: TempDir) -> Served {
        let root_arg = root.0.to_str().expect("utf-8 temp path").to_owned();
        let server = ServerProcess::start("file_server", &["--http", "127.0.0.1:0", "--root", &root_arg], 1);
        Served { server, _root: root }
    }

    /// `ip:port` of the HTTP listener.
    fn addr(&self) -> String {
        self.server.addr("http")
    }

    /// The URL of `path` (already percent-encoded, without a leading `/`).
    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr())
    }
}

/// Runs curl with a hard time limit and `-sS`, and requires it to succeed.
#[track_caller]
fn curl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let output = Command::new(CURL)
        .args(["--max-time", "20", "-sS"])
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("run /usr/bin/curl");
    assert!(
        output.status.success(),
        "curl {args:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Writes a file of the served tree.
#[track_caller]
fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `name` as one URL path segment: every byte outside `A-Za-z0-9-._~` as
/// `%XX`, uppercase (what docs/programs.md says the listing's links are).
fn encode_segment(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of header `name` (any case) in a head of `\r\n`-separated lines.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn curl_downloads_a_large_file_byte_exact_and_head_shows_length_and_ranges() {
    let data = pattern(5 * 1024 * 1024 + 321, 41);
    let root = TempDir::new("http-clients-full");
    write(&root.0.join("big.bin"), &data);
    let served = Served::start(root);
    let out_dir = TempDir::new("http-clients-full-out");
    let out = out_dir.0.join("big.bin");

    let got = curl([
        OsString::from("--fail"),
        "-w".into(),
        "%{http_code}".into(),
        "-o".into(),
        out.clone().into(),
        served.url("big.bin").into(),
    ]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "200");
    assert_same_bytes(&read_file(&out), &data, "curl -o of a 5 MiB file");

    let head = curl(["--fail", "-I", &served.url("big.bin")]);
    let head = String::from_utf8(head.stdout).expect("ASCII head");
    assert!(head.starts_with("HTTP/1.1 200"), "HEAD answer: {head:?}");
    let length = data.len().to_string();
    assert_eq!(header(&head, "Content-Length"), Some(length.as_str()), "{head:?}");
    assert_eq!(header(&head, "Accept-Ranges"), Some("bytes"), "{head:?}");
}

#[test]
fn curl_range_and_suffix_range_get_exactly_those_bytes() {
    let data = pattern(100_000, 42);
    let root = TempDir::new("http-clients-range");
    write(&root.0.join("data.bin"), &data);
    let served = Served::start(root);
    let out_dir = TempDir::new("http-clients-range-out");
    let out = out_dir.0.join("part");
    let url = served.url("data.bin");

    for (range, want) in [
        ("1000-1999", &data[1000..2000]),
        ("-500", &data[data.len() - 500..]),
    ] {
        let got = curl([
            OsString::from("--fail"),
            "-w".into(),
            "%{http_code}".into(),
            "--range".into(),
            range.into(),
            "-o".into(),
            out.clone().into(),
            url.clone().into(),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            "206",
            "status of --range {range}"
        );
        assert_same_bytes(&read_file(&out), want, &format!("curl --range {range}"));
    }
}

#[test]
fn curl_resumes_a_cut_download_with_continue_at() {
    let data = pattern(3 * 1024 * 1024 + 7, 43);
    let root = TempDir::new("http-clients-resume");
    write(&root.0.join("resume.bin"), &data);
    let served = Served::start(root);
    let out_dir = TempDir::new("http-clients-resume-out");
    let out = out_dir.0.join("resume.bin");
    let url = served.url("resume.bin");

    // What a cut download leaves behind: the first 1,234,567 bytes.
    curl([
        OsString::from("--fail"),
        "-r".into(),
        "0-1234566".into(),
        "-o".into(),
        out.clone().into(),
        url.clone().into(),
    ]);
    assert_same_bytes(&read_file(&out), &data[..1_234_567], "the first part");

    let got = curl([
        OsString::from("--fail"),
        "-w".into(),
        "%{http_code}".into(),
        "-C".into(),
        "-".into(),
        "-o".into(),
        out.clone().into(),
        url.into(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "206",
        "status of the resumed part"
    );
    assert_same_bytes(&read_file(&out), &data, "the resumed download");
}

#[test]
fn wget_downloads_a_file_and_continues_a_partial_one() {
    let data = pattern(2 * 1024 * 1024 + 99, 44);
    let root = TempDir::new("http-clients-wget");
    write(&root.0.join("w.bin"), &data);
    let served = Served::start(root);
    let out_dir = TempDir::new("http-clients-wget-out");
    let out = out_dir.0.join("w.bin");
    let wget = |extra: &[&str]| {
        let status = Command::new(WGET)
            .args(["--quiet", "--tries=1", "--timeout=20"])
            .args(extra)
            .arg("-O")
            .arg(&out)
            .arg(served.url("w.bin"))
            .stdin(Stdio::null())
            .status()
            .expect("run /usr/bin/wget");
        assert!(status.success(), "wget {extra:?}: {status}");
    };
    wget(&[]);
    assert_same_bytes(&read_file(&out), &data, "wget of a 2 MiB file");
    // `wget -c` asks for the rest of a partial file with a Range. The part
    // already there is zeros, not the file's bytes, so the result shows
    // that only the rest was fetched (a fresh download would mend it).
    let mut partial = vec![0u8; 777_777];
    write(&out, &partial);
    wget(&["-c"]);
    partial.extend_from_slice(&data[777_777..]);
    assert_same_bytes(&read_file(&out), &partial, "wget -c appends only the rest");
}

#[test]
fn curl_fetches_a_name_with_a_space_and_unicode_percent_encoded() {
    let name = "a b é.bin";
    let top = pattern(70_000, 44);
    let nested = pattern(3_000, 45);
    let root = TempDir::new("http-clients-unicode");
    write(&root.0.join(name), &top);
    std::fs::create_dir(root.0.join("dir ü")).expect("subdirectory");
    write(&root.0.join("dir ü").join(name), &nested);
    let served = Served::start(root);
    let out_dir = TempDir::new("http-clients-unicode-out");
    let out = out_dir.0.join("got");

    assert_eq!(encode_segment(name), "a%20b%20%C3%A9.bin");
    for (path, want) in [
        (encode_segment(name), &top),
        (
            format!("{}/{}", encode_segment("dir ü"), encode_segment(name)),
            &nested,
        ),
    ] {
        curl([
            OsString::from("--fail"),
            "-o".into(),
            out.clone().into(),
            served.url(&path).into(),
        ]);
        assert_same_bytes(&read_file(&out), want, &path);
    }
}

/// One HTTP answer read off a raw socket.
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// A raw `GET target` with `Connection: close`, read to the end.
#[track_caller]
fn http_get(addr: SocketAddr, target: &str) -> Response {
    let mut stream = connect(addr);
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    write_all(&mut stream, request.as_bytes());
    let raw = read_to_end(&mut stream);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in the answer to GET {target}: {raw:?}"));
    let head = String::from_utf8(raw[..end].to_vec()).expect("ASCII head");
    let body = raw[end + 4..].to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line of {head:?}"));
    if let Some(length) = header(&head, "Content-Length") {
        assert_eq!(length, body.len().to_string(), "Content-Length of GET {target}");
    }
    let body = if header(&head, "Transfer-Encoding") == Some("chunked") {
        dechunk(&body, target)
    } else {
        body
    };
    Response { status, head, body }
}

/// The payload of a chunked body (RFC 9112 §7.1), checked for its framing.
#[track_caller]
fn dechunk(mut raw: &[u8], target: &str) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("chunk size line in GET {target}"));
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("hex chunk size in GET {target}"));
        raw = &raw[line_end + 2..];
        if size == 0 {
            assert_eq!(raw, b"\r\n", "end of the chunked body of GET {target}");
            return body;
        }
        assert!(raw.len() >= size + 2, "a whole chunk in GET {target}");
        body.extend_from_slice(&raw[..size]);
        assert_eq!(
            &raw[size..size + 2],
            b"\r\n",
            "CRLF after a chunk in GET {target}"
        );
        raw = &raw[size + 2..];
    }
}

/// Runs Chromium headless on `url`, with `extra` flags, and returns the DOM
/// it dumps; fails if it does not finish within [`BROWSER_TIMEOUT`]
/// (killing it) or fails.
#[track_caller]
fn dump_dom(url: &str, profile: &Path, log: &Path, extra: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    let log_file = std::fs::File::create(log).expect("browser log file");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        // A group of its own, so that a timeout can end the browser's
        // helper processes too.
        .process_group(0)
        .spawn()
        .expect("start /usr/bin/chromium (.ci/run installs it)");
    let group = child.id() as libc::pid_t;
    let kill_group = || {
        // SAFETY: kill(2) on the process group this test created for the
        // browser; it cannot affect memory safety.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    };
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut dom = Vec::new();
        let _ = tx.send(stdout.read_to_end(&mut dom).map(|_| dom));
    });
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            kill_group();
            let _ = child.wait();
            panic!(
                "chromium did not finish within {BROWSER_TIMEOUT:?}; its log:\n{}",
                log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Helpers left behind would hold stdout open: end them.
    kill_group();
    let dom = rx
        .recv_timeout(STEP)
        .expect("chromium's stdout closed")
        .expect("read chromium's stdout");
    assert!(
        status.success(),
        "chromium exited with {status}; its log:\n{}",
        log_text()
    );
    String::from_utf8(dom).expect("the DOM is UTF-8")
}

/// `s` as Chromium's DOM serializer writes text: `&`, `<`, `>` escaped,
/// quotes as they are.
fn dom_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Every `href="..."` value in `dom`, in order.
fn hrefs(dom: &str) -> Vec<String> {
    dom.split("href=\"")
        .skip(1)
        .map(|rest| {
            rest.split('"')
                .next()
                .expect("split yields a first part")
                .to_owned()
        })
        .collect()
}

#[test]
#[ignore = "needs chromium; .ci/run runs it"]
fn browser_renders_the_listing_with_working_links() {
    // A file name cannot hold `/`, so the closing tag is another opening
    // one: unescaped, it would turn the rest of the page into a script.
    let files: Vec<(&str, Vec<u8>)> = [
        "with space.txt",
        "<script>alert(1)<script>.txt",
        "é unicode ✓.txt",
        "quote\"amp&.txt",
    ]
    .into_iter()
    .enumerate()
    .map(|(i, name)| (name, pattern(500 + 37 * i, 50 + i as u64)))
    .collect();
    let root = TempDir::new("http-clients-browser");
    let odd = root.0.join("odd");
    std::fs::create_dir_all(odd.join("sub dir")).expect("odd/sub dir");
    for (name, content) in &files {
        write(&odd.join(name), content);
    }
    let served = Served::start(root);
    let addr = served.server.socket_addr("http");
    let profile = TempDir::new("http-clients-browser-profile");
    let log = TempDir::new("http-clients-browser-log");

    let dom = dump_dom(&served.url("odd/"), &profile.0, &log.0.join("chromium.log"), &[]);

    assert!(
        dom.contains("<title>Index of /odd/</title>"),
        "title in DOM:\n{dom}"
    );
    assert!(
        !dom.to_ascii_lowercase().contains("<script"),
        "a script element in DOM:\n{dom}"
    );
    assert!(
        dom.contains(">&lt;script&gt;alert(1)&lt;script&gt;.txt</a>"),
        "the script name as text in DOM:\n{dom}"
    );
    let link_at = |text: &str| {
        dom.find(&format!(">{text}</a>"))
            .unwrap_or_else(|| panic!("no link with text {text:?} in DOM:\n{dom}"))
    };
    let parent = link_at("../");
    let sub_dir = link_at("sub dir/");
    assert!(parent < sub_dir, "../ comes first:\n{dom}");
    for (name, _) in &files {
        assert!(
            sub_dir < link_at(&dom_text(name)),
            "sub dir/ before {name:?}:\n{dom}"
        );
    }

    let links = hrefs(&dom);
    let mut want: Vec<String> = ["../".to_owned(), "sub%20dir/".to_owned()]
        .into_iter()
        .chain(files.iter().map(|(name, _)| encode_segment(name)))
        .collect();
    let mut got = links.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "the links of the listing");

    for href in &links {
        if href == "../" {
            // What the browser resolves it to, from /odd/.
            let top = http_get(addr, "/");
            assert_eq!(top.status, 200, "GET / for ../: {}", top.head);
            assert!(
                String::from_utf8_lossy(&top.body).contains("href=\"odd/\""),
                "/ lists odd/"
            );
            continue;
        }
        let target = format!("/odd/{href}");
        let got = http_get(addr, &target);
        assert_eq!(got.status, 200, "GET {target}: {}", got.head);
        if href == "sub%20dir/" {
            let page = String::from_utf8(got.body).expect("UTF-8 listing");
            assert!(
                page.contains("Index of /odd/sub dir/"),
                "listing of sub dir: {page}"
            );
            continue;
        }
        let (name, content) = files
            .iter()
            .find(|(name, _)| encode_segment(name) == *href)
            .expect("a link of the listing is a file's");
        assert_same_bytes(&got.body, content, &format!("GET {target} ({name:?})"));
    }
}

/// The text of the element that starts with `open` (an opening tag as
/// Chromium serializes it) up to the next `<`.
#[track_caller]
fn text_after<'a>(dom: &'a str, open: &str) -> &'a str {
    let start = dom
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in DOM:\n{dom}"))
        + open.len();
    let rest = &dom[start..];
    &rest[..rest.find('<').unwrap_or(rest.len())]
}

/// The admin page (src/admin/page.html) run by a headless Chromium against
/// `echo --admin`, with one idle echo connection and one that has echoed a
/// line. Chromium's virtual time (`--virtual-time-budget`) runs the page's
/// timers without waiting for them, and stops while a fetch is pending, so
/// 5 virtual seconds are about five polls of the live server in a second or
/// two of real time; the DOM is dumped when the budget is spent.
#[test]
#[ignore = "needs chromium; .ci/run runs it"]
fn browser_runs_the_admin_page_against_a_live_echo_server() {
    let server = ServerProcess::start("echo", &["--tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0"], 2);
    let tcp = server.socket_addr("tcp");
    let admin = server.socket_addr("admin");
    // The page is embedded in the binary: one built before the page last
    // changed would test another page.
    let page = http_get(admin, "/");
    assert_eq!(page.status, 200, "GET /: {}", page.head);
    assert!(
        page.body == include_str!("../src/admin/page.html").as_bytes(),
        "the echo example serves another page than src/admin/page.html: run `cargo build --examples`"
    );
    let idle = connect(tcp);
    let mut talker = connect(tcp);
    let line = b"hello, admin page\n";
    write_all(&mut talker, line);
    assert_eq!(read_exact(&mut talker, line.len()), line);
    let peers = [
        idle.local_addr().expect("idle's address").to_string(),
        talker.local_addr().expect("talker's address").to_string(),
    ];
    // Both are accepted before the page loads.
    let deadline = Instant::now() + STEP;
    loop {
        let stats = http_get(admin, "/stats");
        assert_eq!(stats.status, 200, "GET /stats: {}", stats.head);
        let body = String::from_utf8_lossy(&stats.body);
        if peers.iter().all(|p| body.contains(&format!("\"peer\":\"{p}\""))) {
            break;
        }
        assert!(Instant::now() < deadline, "/stats never listed {peers:?}: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let profile = TempDir::new("http-clients-admin-profile");
    let log = TempDir::new("http-clients-admin-log");

    let started = Instant::now();
    let dom = dump_dom(
        &format!("http://{admin}/"),
        &profile.0,
        &log.0.join("chromium.log"),
        &["--virtual-time-budget=5000"],
    );
    let took = started.elapsed();

    let polls: u32 = dom
        .split_once("<body data-polls=\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no poll succeeded (no data-polls count on <body>):\n{dom}"));
    eprintln!("chromium ran the admin page for {polls} polls in {took:?}");
    assert!(polls >= 2, "{polls} polls, want at least 2:\n{dom}");
    let status = text_after(&dom, "<span id=\"status\" class=\"\">");
    assert!(status.starts_with("updated "), "status line {status:?}:\n{dom}");

    let rate = text_after(&dom, "<b id=\"turns-per-second\">");
    let rate: f64 = rate
        .parse()
        .unwrap_or_else(|_| panic!("turns per second {rate:?} is not a number:\n{dom}"));
    assert!(rate.is_finite() && rate > 0.0, "turns per second {rate}:\n{dom}");
    let row = text_after(&dom, "<tr data-shard=\"0\"><td>0</td><td class=\"tps\">");
    assert!(
        row.parse::<f64>().is_ok(),
        "shard 0's turns per second {row:?}:\n{dom}"
    );

    // One bar per bucket with counts, each labelled with its bound.
    let histogram = &dom[dom.find("<div id=\"histogram\">").expect("the histogram")..];
    let histogram = &histogram[..histogram.find("<h2>").expect("a heading after the histogram")];
    let bars: Vec<&str> = histogram.split("<div class=\"bar\"").skip(1).collect();
    assert!(!bars.is_empty(), "no histogram bars:\n{histogram}");
    for bar in &bars {
        let labelled = ["µs</span>", "ms</span>", " s</span>", "+Inf</span>"]
            .iter()
            .any(|unit| bar.contains(unit));
        assert!(labelled, "a bar without a bound: {bar}");
    }

    // A row per connection; the echo clients' by their address.
    let rows: Vec<&str> = dom
        .split("<tr data-key=\"#")
        .skip(1)
        .map(|row| &row[..row.find("</tr>").expect("a row ends")])
        .collect();
    let row_of = |peer: &str| {
        rows.iter()
            .find(|row| row.contains(&format!("<td class=\"text\">{peer}</td>")))
            .unwrap_or_else(|| panic!("no row for {peer} in the connections:\n{dom}"))
    };
    let (idle_row, talker_row) = (row_of(&peers[0]), row_of(&peers[1]));
    for row in [idle_row, talker_row] {
        assert!(
            row.contains("<td class=\"text\">OPEN</td>"),
            "state OPEN in {row}"
        );
    }
    assert!(
        idle_row.contains(">accepted on #"),
        "the idle one's last event: {idle_row}"
    );
    let echoed = format!(">wrote {} bytes</td>", line.len());
    assert!(
        talker_row.contains(&echoed),
        "the talker's last event: {talker_row}"
    );
    assert!(
        dom.contains("<p id=\"truncated\" class=\"note\" hidden=\"\">"),
        "the truncation note shows though every connection is listed:\n{dom}"
    );

    // The newest events, in words.
    let events = &dom[dom.find("<ol id=\"events\">").expect("the events")..];
    let events = &events[..events.find("</ol>").expect("the end of the events")];
    let items: Vec<&str> = events.split("<li data-key=\"#").skip(1).collect();
    assert!(items.len() >= 2, "events listed:\n{events}");
    assert!(
        items.iter().any(|e| e.contains(" read ")),
        "a read event:\n{events}"
    );
    assert!(
        items.iter().any(|e| e.contains(" wrote ")),
        "a write event:\n{events}"
    );
    drop((idle, talker));
}
