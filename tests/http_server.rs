//! The HTTP/1.1 file server from the outside, with a raw socket client
//! (docs/programs.md: file_server, HTTP): every status it sends, keep-alive and
//! pipelining, the timeouts, and path confinement.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use evloop::protocols::http::HttpServer;
use evloop::{ListenerOptions, Reactor};

/// Bytes of the big file: several regions' worth of queue, so it streams.
const BIG: usize = 3 * 1024 * 1024 + 17;

/// A root with a few files, and a secret beside it that must never leak.
struct Site {
    dir: TempDir,
}

impl Site {
    fn new(tag: &str) -> Site {
        let dir = TempDir::new(&format!("http-{tag}"));
        let root = dir.0.join("root");
        std::fs::create_dir_all(root.join("sub/deeper")).expect("root");
        std::fs::write(root.join("hello.txt"), b"hello, http\n").expect("file");
        std::fs::write(root.join("empty"), b"").expect("file");
        std::fs::write(root.join("page.html"), b"<p>hi</p>").expect("file");
        std::fs::write(root.join("sub/big.bin"), pattern(BIG, 9)).expect("file");
        std::fs::write(root.join("sub/a b.txt"), b"spaced").expect("file");
        std::fs::write(dir.0.join("secret.txt"), SECRET).expect("secret");
        std::os::unix::fs::symlink(dir.0.join("secret.txt"), root.join("escape")).expect("symlink");
        std::os::unix::fs::symlink(&dir.0, root.join("updir")).expect("symlink");
        // Modified well before now: a `Last-Modified` less than a second old
        // is weak, and could not validate an `If-Range` (RFC 9110 §8.8.2.2).
        for name in ["hello.txt", "empty", "page.html", "sub/big.bin", "sub/a b.txt"] {
            let file = std::fs::File::options()
                .write(true)
                .open(root.join(name))
                .expect("file");
            file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(FILE_TIME))
                .expect("set mtime");
        }
        Site { dir }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.0.join("root")
    }

    /// Serves the root in-process with the given timeouts.
    fn serve(&self, idle: Duration, header: Duration) -> Running<SocketAddr> {
        let root = self.root();
        start(move |reactor: &mut Reactor| {
            let http = HttpServer::new(&root)
                .expect("root")
                .with_idle_timeout(idle)
                .with_header_timeout(header);
            let key = reactor
                .listen_tcp_with(any_port(), ListenerOptions::default(), http)
                .expect("listen");
            reactor.local_addr(key).and_then(|a| a.as_inet()).expect("inet")
        })
    }

    fn serve_default(&self) -> Running<SocketAddr> {
        self.serve(Duration::from_secs(60), Duration::from_secs(10))
    }
}

const SECRET: &[u8] = b"TOP-SECRET-4d1f0c";

/// When the site's files were last modified, in seconds since the epoch:
/// 2023-11-14T22:13:20Z.
const FILE_TIME: u64 = 1_700_000_000;

/// `hello.txt`'s entity tag: `FILE_TIME` and 12 bytes, in hex.
const HELLO_ETAG: &str = "\"6553f100-c\"";

/// `hello.txt`'s `Last-Modified`.
const HELLO_DATE: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

/// One response read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client on one connection that reads responses in order.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            reader: BufReader::new(connect(addr)),
        }
    }

    fn send(&mut self, raw: &[u8]) {
        write_all(self.reader.get_mut(), raw);
    }

    /// GETs `target` over HTTP/1.1 with any extra header lines.
    fn get(&mut self, target: &str, extra: &str) -> Response {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: test\r\n{extra}\r\n").as_bytes());
        self.read(false)
    }

    /// Reads one response; `head_only` for the answer to a HEAD, which has
    /// a Content-Length but no body.
    #[track_caller]
    fn read(&mut self, head_only: bool) -> Response {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let mut words = line.split(' ');
        assert_eq!(words.next(), Some("HTTP/1.1"), "status line {line:?}");
        let status = words.next().and_then(|s| s.parse().ok()).expect("status code");
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header line");
            let field = line.strip_suffix("\r\n").expect("CRLF");
            if field.is_empty() {
                break;
            }
            let (name, value) = field.split_once(": ").expect("name: value");
            headers.push((name.to_owned(), value.to_owned()));
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let chunked = response.header("Transfer-Encoding") == Some("chunked");
        let length: usize = response
            .header("Content-Length")
            .map_or(0, |v| v.parse().expect("length"));
        if head_only || status == 304 {
            return response;
        }
        if chunked {
            assert!(response.header("Content-Length").is_none(), "both framings");
            response.body = self.read_chunked();
        } else {
            response.body = read_exact(&mut self.reader, length);
        }
        response
    }

    /// A chunked body (RFC 9112 §7.1): hex size lines, each chunk followed
    /// by CRLF, ended by a zero-size chunk and an empty trailer section.
    #[track_caller]
    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("chunk size line");
            let size = line.strip_suffix("\r\n").expect("CRLF after the size");
            let size = usize::from_str_radix(size, 16).expect("hex chunk size");
            if size == 0 {
                line.clear();
                self.reader.read_line(&mut line).expect("end of trailers");
                assert_eq!(line, "\r\n", "no trailers");
                return body;
            }
            body.extend_from_slice(&read_exact(&mut self.reader, size));
            assert_eq!(read_exact(&mut self.reader, 2), b"\r\n", "CRLF after a chunk");
        }
    }

    /// Whether the server has closed: the next read sees end-of-file.
    #[track_caller]
    fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("read to the end");
        assert!(
            rest.is_empty(),
            "bytes after the last answer: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// One request on a fresh connection, answered, and the connection then
/// closed by the server (for the 400s and 431s).
fn once(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut client = Client::new(addr);
    client.send(raw);
    client.read(false)
}

#[test]
fn a_file_comes_with_length_type_and_date() {
    let site = Site::new("file");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    let got = client.get("/hello.txt", "");
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"hello, http\n");
    assert_eq!(got.header("Content-Length"), Some("12"));
    assert_eq!(got.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(got.header("Accept-Ranges"), Some("bytes"));
    let modified = got.header("Last-Modified").expect("Last-Modified");
    assert!(modified.ends_with(" GMT") && modified.len() == 29, "{modified}");
    assert!(got.header("Date").is_some());

    let page = client.get("/page.html", "");
    assert_eq!(page.header("Content-Type"), Some("text/html; charset=utf-8"));
    let empty = client.get("/empty", "");
    assert_eq!((empty.status, empty.body.len()), (200, 0));
    assert_eq!(empty.header("Content-Length"), Some("0"));

    let big = client.get("/sub/big.bin", "");
    assert_eq!(big.status, 200);
    assert!(big.body == pattern(BIG, 9), "the big file, byte for byte");
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn head_sends_the_fields_without_the_body() {
    let site = Site::new("head");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    client.send(b"HEAD /sub/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = client.read(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some(BIG.to_string().as_str()));
    // Had a body followed, this would read its bytes as a status line.
    let next = client.get("/hello.txt", "");
    assert_eq!((next.status, next.body.as_slice()), (200, &b"hello, http\n"[..]));
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn single_ranges_get_206_and_unsatisfiable_ones_416() {
    let site = Site::new("range");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    let whole = pattern(BIG, 9);

    let mid = client.get("/sub/big.bin", "Range: bytes=1000-1999\r\n");
    assert_eq!(mid.status, 206);
    assert_eq!(
        mid.header("Content-Range"),
        Some(format!("bytes 1000-1999/{BIG}").as_str())
    );
    assert!(mid.body == whole[1000..2000]);

    let tail = client.get("/sub/big.bin", "Range: bytes=-10\r\n");
    assert_eq!(tail.status, 206);
    assert!(tail.body == whole[BIG - 10..]);

    let from = client.get("/sub/big.bin", &format!("Range: bytes={}-\r\n", BIG - 5));
    assert_eq!(from.status, 206);
    assert_eq!(
        from.header("Content-Range"),
        Some(format!("bytes {}-{}/{BIG}", BIG - 5, BIG - 1).as_str())
    );
    assert!(from.body == whole[BIG - 5..]);

    let past = client.get("/hello.txt", "Range: bytes=12-\r\n");
    assert_eq!(past.status, 416);
    assert_eq!(past.header("Content-Range"), Some("bytes */12"));

    // Several ranges at once are not served as such: the whole file.
    let multi = client.get("/hello.txt", "Range: bytes=0-1,4-5\r\n");
    assert_eq!(
        (multi.status, multi.body.as_slice()),
        (200, &b"hello, http\n"[..])
    );
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn if_range_with_another_date_gets_the_whole_file() {
    let site = Site::new("ifrange");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    let first = client.get("/hello.txt", "");
    let modified = first.header("Last-Modified").expect("date").to_owned();
    let same = client.get(
        "/hello.txt",
        &format!("Range: bytes=0-4\r\nIf-Range: {modified}\r\n"),
    );
    assert_eq!((same.status, same.body.as_slice()), (206, &b"hello"[..]));
    let other = client.get(
        "/hello.txt",
        "Range: bytes=0-4\r\nIf-Range: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
    );
    assert_eq!(other.status, 200);
    let etag = client.get("/hello.txt", "Range: bytes=0-4\r\nIf-Range: \"abc\"\r\n");
    assert_eq!(etag.status, 200);
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn if_modified_since_gets_304_when_nothing_changed() {
    let site = Site::new("ims");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    let first = client.get("/hello.txt", "");
    let modified = first.header("Last-Modified").expect("date").to_owned();
    let same = client.get("/hello.txt", &format!("If-Modified-Since: {modified}\r\n"));
    assert_eq!(same.status, 304);
    assert_eq!(same.header("Content-Length"), None);
    let old = client.get(
        "/hello.txt",
        "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
    );
    assert_eq!((old.status, old.body.len()), (200, 12));
    let junk = client.get("/hello.txt", "If-Modified-Since: yesterday\r\n");
    assert_eq!(junk.status, 200);
    // The connection is still in step after a body-less 304.
    assert_eq!(client.get("/empty", "").status, 200);
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn every_file_answer_carries_a_strong_etag_from_time_and_size() {
    let site = Site::new("etag");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    let full = client.get("/hello.txt", "");
    assert_eq!(full.header("ETag"), Some(HELLO_ETAG));
    assert_eq!(full.header("Last-Modified"), Some(HELLO_DATE));
    let part = client.get("/hello.txt", "Range: bytes=0-1\r\n");
    assert_eq!((part.status, part.header("ETag")), (206, Some(HELLO_ETAG)));
    client.send(b"HEAD /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = client.read(true);
    assert_eq!((head.status, head.header("ETag")), (200, Some(HELLO_ETAG)));
    let cached = client.get("/hello.txt", &format!("If-None-Match: {HELLO_ETAG}\r\n"));
    assert_eq!(cached.status, 304);
    assert_eq!(cached.header("ETag"), Some(HELLO_ETAG));
    assert_eq!(cached.header("Last-Modified"), Some(HELLO_DATE));
    assert_eq!(cached.header("Content-Length"), None);
    // The body-less 304 left the connection in step.
    assert_eq!(client.get("/empty", "").header("ETag"), Some("\"6553f100-0\""));
    // Another size, another tag.
    let big = client.get("/sub/big.bin", "Range: bytes=0-0\r\n");
    assert_eq!(big.header("ETag"), Some(format!("\"6553f100-{BIG:x}\"").as_str()));
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn if_none_match_that_fails_overrides_a_matching_if_modified_since() {
    // The case of the report: a 304 here would leave a stale copy in place.
    let site = Site::new("inm-ims");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    let got = client.get(
        "/hello.txt",
        &format!("If-None-Match: \"nope\"\r\nIf-Modified-Since: {HELLO_DATE}\r\n"),
    );
    assert_eq!((got.status, got.body.as_slice()), (200, &b"hello, http\n"[..]));
    // With the tag the server sent, weakly compared, or `*`: 304.
    let values = [
        HELLO_ETAG.to_owned(),
        format!("W/{HELLO_ETAG}"),
        format!("\"a\", {HELLO_ETAG}"),
        "*".to_owned(),
    ];
    for value in values {
        let got = client.get("/hello.txt", &format!("If-None-Match: {value}\r\n"));
        assert_eq!(got.status, 304, "If-None-Match: {value}");
    }
    // A malformed list matches nothing: the file.
    let junk = client.get("/hello.txt", "If-None-Match: nope\r\n");
    assert_eq!(junk.status, 200);
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn if_match_that_fails_or_an_old_if_unmodified_since_gets_412() {
    let site = Site::new("412");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    let failed = client.get("/hello.txt", "If-Match: \"nope\"\r\n");
    assert_eq!(failed.status, 412);
    assert_eq!(failed.text(), "412 Precondition Failed\n");
    // Strong comparison: the weak form of the current tag fails too.
    let weak = client.get("/hello.txt", &format!("If-Match: W/{HELLO_ETAG}\r\n"));
    assert_eq!(weak.status, 412);
    // If-Match is evaluated before If-None-Match.
    let both = client.get(
        "/hello.txt",
        &format!("If-Match: \"nope\"\r\nIf-None-Match: {HELLO_ETAG}\r\n"),
    );
    assert_eq!(both.status, 412);
    for value in [HELLO_ETAG, "*"] {
        let held = client.get("/hello.txt", &format!("If-Match: {value}\r\n"));
        assert_eq!((held.status, held.body.len()), (200, 12), "If-Match: {value}");
    }
    let old = client.get(
        "/hello.txt",
        "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
    );
    assert_eq!(old.status, 412);
    let same = client.get("/hello.txt", &format!("If-Unmodified-Since: {HELLO_DATE}\r\n"));
    assert_eq!(same.status, 200);
    // A 412 keeps the connection.
    assert_eq!(client.get("/empty", "").status, 200);
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn a_resume_with_if_range_gets_the_rest_only_while_the_tag_holds() {
    // `curl -C -` with a validator: the rest of the file, or all of it if
    // the file changed since the first part was fetched.
    let site = Site::new("resume");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    let whole = pattern(BIG, 9);
    let first = client.get("/sub/big.bin", "Range: bytes=0-99999\r\n");
    assert_eq!(first.status, 206);
    let tag = first.header("ETag").expect("ETag").to_owned();
    let rest = client.get(
        "/sub/big.bin",
        &format!("Range: bytes=100000-\r\nIf-Range: {tag}\r\n"),
    );
    assert_eq!(rest.status, 206);
    assert_eq!(
        rest.header("Content-Range"),
        Some(format!("bytes 100000-{}/{BIG}", BIG - 1).as_str())
    );
    assert!(
        [first.body, rest.body].concat() == whole,
        "the two parts make the file"
    );
    for stale in ["\"6553f0ff-300011\"".to_owned(), format!("W/{tag}")] {
        let got = client.get(
            "/sub/big.bin",
            &format!("Range: bytes=100000-\r\nIf-Range: {stale}\r\n"),
        );
        assert_eq!(got.status, 200, "If-Range: {stale}");
        assert!(got.body == whole, "the whole file for If-Range: {stale}");
    }
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn missing_names_get_404_and_other_methods_405() {
    let site = Site::new("status");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    assert_eq!(client.get("/nope.txt", "").status, 404);
    assert_eq!(client.get("/sub/nope/", "").status, 404);
    // A file named as a directory.
    assert_eq!(client.get("/hello.txt/", "").status, 404);

    for method in ["POST", "PUT", "DELETE", "OPTIONS", "get"] {
        client.send(format!("{method} /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let got = client.read(false);
        assert_eq!(got.status, 405, "{method}");
        assert_eq!(got.header("Allow"), Some("GET, HEAD"), "{method}");
    }
    // Still kept alive after all of them.
    assert_eq!(client.get("/hello.txt", "").status, 200);

    // A body that is never read: answered, then the connection closes.
    client.send(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nGET /");
    assert_eq!(client.read(false).status, 405);
    client.assert_closed();
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn malformed_requests_get_400_and_a_close() {
    let site = Site::new("bad");
    let server = site.serve_default();
    let cases: [&[u8]; 7] = [
        b"HELLO\r\n\r\n",
        b"GET /hello.txt HTTP/1.1\r\n\r\n", // no Host
        b"GET /hello.txt HTTP/2.0\r\nHost: t\r\n\r\n",
        b"GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /%ff%fe HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
    ];
    for raw in cases {
        let mut client = Client::new(server.info);
        client.send(raw);
        let got = client.read(false);
        assert_eq!(got.status, 400, "{:?}", String::from_utf8_lossy(raw));
        assert_eq!(got.header("Connection"), Some("close"));
        client.assert_closed();
    }
    // A head that cannot be parsed closes the connection.
    let mut client = Client::new(server.info);
    client.send(b"\x00\x01\x02 garbage\r\n\r\n");
    assert_eq!(client.read(false).status, 400);
    client.assert_closed();
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn heads_over_8_kib_or_64_fields_get_431() {
    let site = Site::new("large");
    let server = site.serve_default();

    let long = format!(
        "GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let mut client = Client::new(server.info);
    client.send(long.as_bytes());
    assert_eq!(client.read(false).status, 431);
    client.assert_closed();

    // Over 8 KiB with no end of head in sight: refused without waiting.
    let mut client = Client::new(server.info);
    client.send(format!("GET /{} HTTP/1.1\r\nHost: t\r\n", "b".repeat(8300)).as_bytes());
    assert_eq!(client.read(false).status, 431);
    client.assert_closed();

    let fields: String = (0..100).map(|i| format!("X-F{i}: v\r\n")).collect();
    let got = once(
        server.info,
        format!("GET / HTTP/1.1\r\nHost: t\r\n{fields}\r\n").as_bytes(),
    );
    assert_eq!(got.status, 431);

    // Just under the limit is fine.
    let near = format!(
        "GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(8000)
    );
    assert_eq!(once(server.info, near.as_bytes()).status, 200);
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn nothing_outside_the_root_is_ever_sent() {
    let site = Site::new("confine");
    let server = site.serve_default();
    let attacks = [
        "/../secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/hello.txt%00.png",
        "/escape",
        "/updir/secret.txt",
        "/updir/",
        "http://test/../secret.txt",
    ];
    for target in attacks {
        let mut client = Client::new(server.info);
        client.send(format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        let got = client.read(false);
        assert!(
            got.status == 403 || got.status == 404,
            "{target}: {} {}",
            got.status,
            got.text()
        );
        let leaked = got.body.windows(SECRET.len()).any(|w| w == SECRET);
        assert!(!leaked, "{target} leaked the secret");
        assert!(!got.text().contains("root:"), "{target} leaked /etc/passwd");
    }
    // Decoding alone is not refusal: an encoded name inside the root works.
    let mut client = Client::new(server.info);
    let spaced = client.get("/sub/a%20b.txt", "");
    assert_eq!((spaced.status, spaced.body.as_slice()), (200, &b"spaced"[..]));
    assert_eq!(client.get("/sub/./deeper/../a%20b.txt", "").status, 403);
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn directories_are_listed_and_redirected_to_their_slash() {
    let site = Site::new("dirs");
    let server = site.serve_default();
    let mut client = Client::new(server.info);

    let moved = client.get("/sub", "");
    assert_eq!(moved.status, 301);
    assert_eq!(moved.header("Location"), Some("/sub/"));
    let listing = client.get("/sub/", "");
    assert_eq!(listing.status, 200);
    assert_eq!(listing.header("Content-Type"), Some("text/html; charset=utf-8"));
    let page = listing.text();
    assert!(page.contains("<title>Index of /sub/</title>"), "{page}");
    assert!(page.contains("<a href=\"../\">"), "{page}");
    assert!(page.contains("<a href=\"deeper/\">deeper/</a>"), "{page}");
    assert!(page.contains("<a href=\"a%20b.txt\">a b.txt</a>"), "{page}");
    assert!(page.contains("<a href=\"big.bin\">big.bin</a>"), "{page}");
    assert!(
        page.find("deeper/").unwrap() < page.find("big.bin").unwrap(),
        "directories first"
    );

    let root = client.get("/", "");
    assert_eq!(root.status, 200);
    assert!(root.text().contains("<a href=\"hello.txt\">"));
    assert!(!root.text().contains("href=\"../\""), "no parent at the root");

    let spaced = client.get("/sub/deeper", "");
    assert_eq!(spaced.header("Location"), Some("/sub/deeper/"));
    assert_eq!(listing.header("Transfer-Encoding"), Some("chunked"));
    client.send(b"HEAD /sub/ HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = client.read(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(head.header("Content-Length"), None);
    assert_eq!(
        client.get("/hello.txt", "").status,
        200,
        "in step after HEAD of a listing"
    );
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn one_connection_carries_many_requests_until_close() {
    let site = Site::new("keepalive");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    for _ in 0..5 {
        let got = client.get("/hello.txt", "");
        assert_eq!(got.status, 200);
        assert_eq!(got.header("Connection"), None);
    }
    let last = client.get("/hello.txt", "Connection: close\r\n");
    assert_eq!(last.header("Connection"), Some("close"));
    assert_eq!(last.body, b"hello, http\n");
    client.assert_closed();

    // HTTP/1.0 closes unless it asks for keep-alive.
    let mut old = Client::new(server.info);
    old.send(b"GET /hello.txt HTTP/1.0\r\n\r\n");
    assert_eq!(old.read(false).header("Connection"), Some("close"));
    old.assert_closed();
    let mut kept = Client::new(server.info);
    for _ in 0..2 {
        kept.send(b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let got = kept.read(false);
        assert_eq!(got.header("Connection"), Some("keep-alive"));
        assert_eq!(got.body, b"hello, http\n");
    }
    // Gone first, so the shutdown need not wait out their lingering.
    drop((client, old, kept));
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let site = Site::new("pipeline");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    // All in one write: a big body first, so the others wait behind it.
    let mut burst = Vec::new();
    let targets = [
        "/sub/big.bin",
        "/hello.txt",
        "/nope",
        "/sub",
        "/sub/big.bin",
        "/empty",
    ];
    for target in targets {
        burst.extend_from_slice(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    burst.extend_from_slice(b"HEAD /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    client.send(&burst);
    let whole = pattern(BIG, 9);
    let statuses: Vec<u16> = targets
        .iter()
        .map(|target| {
            let got = client.read(false);
            if *target == "/sub/big.bin" {
                assert!(got.body == whole, "big body intact");
            }
            if *target == "/hello.txt" {
                assert_eq!(got.body, b"hello, http\n");
            }
            got.status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 404, 301, 200, 200]);
    let head = client.read(true);
    assert_eq!(head.header("Content-Length"), Some("12"));
    client.assert_closed();
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn many_pipelined_small_requests_in_one_burst() {
    let site = Site::new("burst");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    let n = 2000;
    let one = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    let writer = {
        let mut stream = client.reader.get_ref().try_clone().expect("clone");
        std::thread::spawn(move || {
            for _ in 0..n {
                stream.write_all(one).expect("write");
            }
        })
    };
    for i in 0..n {
        let got = client.read(false);
        assert_eq!((got.status, got.body.len()), (200, 12), "answer {i}");
    }
    writer.join().expect("writer");
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let site = Site::new("idle");
    let server = site.serve(Duration::from_millis(200), Duration::from_secs(10));
    let mut client = Client::new(server.info);
    // Several answers first: the idle timer restarts after each one.
    for _ in 0..3 {
        assert_eq!(client.get("/hello.txt", "").status, 200);
    }
    // Nothing more is sent: the server closes after the idle timeout.
    client.assert_closed();
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn a_slow_request_head_is_cut_with_408_while_others_are_served() {
    let site = Site::new("slowloris");
    let server = site.serve(Duration::from_secs(60), Duration::from_millis(300));
    let mut slow: Vec<Client> = (0..20).map(|_| Client::new(server.info)).collect();
    for (i, client) in slow.iter_mut().enumerate() {
        client.send(format!("GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-Slow-{i}: ").as_bytes());
    }
    // A normal client is served while the slow ones hang on.
    let mut normal = Client::new(server.info);
    assert_eq!(normal.get("/hello.txt", "").status, 200);
    for client in &mut slow {
        let got = client.read(false);
        assert_eq!(got.status, 408);
        client.assert_closed();
    }
    // A connection that never sends a byte is cut by the same deadline.
    let mut silent = Client::new(server.info);
    assert_eq!(silent.read(false).status, 408);
    silent.assert_closed();
    // Gone first, so the shutdown need not wait out their lingering.
    drop((slow, normal, silent));
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn a_half_closed_client_gets_its_answer() {
    let site = Site::new("halfclose");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    client.send(b"GET /sub/big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    client
        .reader
        .get_ref()
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    assert!(client.read(false).body == pattern(BIG, 9));
    assert_eq!(client.read(false).body, b"hello, http\n");
    client.assert_closed();
    // Gone first, so the shutdown need not wait out their lingering.
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn a_shutdown_lets_a_download_finish() {
    let site = Site::new("shutdown");
    let server = site.serve_default();
    let mut client = Client::new(server.info);
    client.send(b"GET /sub/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    // Read the head only, so the body is in flight when the shutdown starts.
    let mut line = String::new();
    client.reader.read_line(&mut line).expect("status");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    assert!(server.handle.shutdown(STEP));
    let mut rest = Vec::new();
    client.reader.read_to_end(&mut rest).expect("the rest");
    let body_at = rest
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head")
        + 4;
    assert!(rest[body_at..] == pattern(BIG, 9), "whole body before the close");
    let mut server = server;
    assert_eq!(server.join(), 0);
}

#[test]
fn the_file_server_logs_every_request() {
    let site = Site::new("log");
    let log = site.dir.0.join("server.log");
    let root = site.root();
    let mut command = std::process::Command::new(example_path("file_server"));
    command
        .args(["--http", "127.0.0.1:0", "--root", root.to_str().expect("utf-8")])
        .env("RUST_LOG", "info");
    let stderr = std::fs::File::create(&log).expect("log file");
    let mut server = ServerProcess::start_logging_to(&mut command, 1, stderr.into());
    let mut client = Client::new(server.socket_addr("http"));
    assert_eq!(client.get("/hello.txt", "").status, 200);
    assert_eq!(client.get("/nope", "Connection: close\r\n").status, 404);
    client.assert_closed();
    assert!(server.terminate().success());
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("\"GET /hello.txt HTTP/1.1\" 200 12 "), "{text}");
    assert!(text.contains("\"GET /nope HTTP/1.1\" 404 "), "{text}");
}

#[test]
fn the_file_server_serves_http_and_the_plain_protocol_from_one_root() {
    let site = Site::new("both");
    let root = site.root();
    let args = [
        "--tcp",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--root",
        root.to_str().expect("utf-8"),
    ];
    let mut server = ServerProcess::start("file_server", &args, 2);
    let mut plain = connect(server.socket_addr("tcp"));
    write_all(&mut plain, b"hello.txt\n");
    assert_eq!(read_to_end(&mut plain), b"hello, http\n");
    let mut client = Client::new(server.socket_addr("http"));
    assert_eq!(client.get("/hello.txt", "").body, b"hello, http\n");
    assert!(server.terminate().success());
}

#[test]
fn a_connection_past_the_limit_gets_503() {
    let site = Site::new("limit");
    let root = site.root();
    let server = start(move |reactor: &mut Reactor| {
        let options = ListenerOptions {
            max_connections: 1,
            ..ListenerOptions::default()
        };
        let key = reactor
            .listen_tcp_with(any_port(), options, HttpServer::new(&root).expect("root"))
            .expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("inet")
    });
    let mut first = Client::new(server.info);
    assert_eq!(first.get("/hello.txt", "").status, 200);
    let mut second = Client::new(server.info);
    let refused = second.read(false);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("Retry-After"), Some("1"));
    second.assert_closed();
    // The first connection is still served.
    assert_eq!(first.get("/hello.txt", "").status, 200);
    drop((first, second));
    assert_eq!(server.shutdown(STEP), 0);
}

#[test]
fn http_works_over_ipv6_as_over_ipv4() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine");
        return;
    }
    let site = Site::new("ipv6");
    let root = site.root();
    let args = ["--http", "[::1]:0", "--root", root.to_str().expect("utf-8")];
    let mut server = ServerProcess::start("file_server", &args, 1);
    let addr = server.socket_addr("http");
    assert!(addr.is_ipv6(), "{addr}");
    let mut client = Client::new(addr);
    let got = client.get("/hello.txt", "");
    assert_eq!((got.status, got.body.as_slice()), (200, &b"hello, http\n"[..]));
    let listing = client.get("/sub/", "");
    assert!(listing.text().contains("<a href=\"big.bin\">"));
    drop(client);
    assert!(server.terminate().success());
}
