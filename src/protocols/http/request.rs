//! One HTTP/1.1 request head, parsed from the bytes a connection has buffered
//! so far, and the request-target turned into a decoded path.
//!
//! [`parse_request`] owns the framing decisions of the server: it says whether
//! the buffered bytes hold a whole request head, are still too short, or can
//! never become an acceptable one. The request line and header fields are
//! parsed by [`httparse`] (RFC 9112 §2–§5); this module adds the checks the
//! handler relies on.
//!
//! Always true, for any bytes:
//! - parsing never panics and looks at no more than [`MAX_HEAD`] bytes, so its
//!   cost per call is bounded whatever a peer sends;
//! - a [`Parse::Complete`] request has a method, a UTF-8 request-target, version
//!   1.0 or 1.1, at most [`MAX_HEADERS`] header fields and at most one `Host`;
//!   an HTTP/1.1 request has exactly one `Host` (RFC 9112 §3.2: 400 otherwise);
//! - its framing is unambiguous: `Content-Length` is a single decimal number
//!   (repeated fields must agree), never combined with `Transfer-Encoding`
//!   (RFC 9112 §6.1, §6.3), and `Transfer-Encoding` is refused on HTTP/1.0
//!   (RFC 9112 §6.1);
//! - a `GET` or `HEAD` request has no content: one announcing a body
//!   (`Content-Length` above 0, or any `Transfer-Encoding`) is
//!   [`HeadError::Malformed`]. This server never reads request bodies; a
//!   request of another method that announces one is returned, but its
//!   [`Request::keep_alive`] is false, because the next request cannot be
//!   found behind a body that is not read;
//! - a field value folded over several lines (obs-fold, RFC 9112 §5.2) and
//!   whitespace between a field name and its colon (RFC 9112 §5.1) are
//!   [`HeadError::Malformed`];
//! - empty lines before the request line are skipped (RFC 9112 §2.2) and
//!   counted in [`Request::head_len`].
//!
//! Methods are case-sensitive (RFC 9110 §9.1): `get` is [`Method::Other`].
//!
//! [`decode_path`] turns a request-target into the path a file is looked up
//! by: the query and fragment are dropped, origin-form (`/a/b`) and
//! absolute-form (`http://host/a/b`, RFC 9112 §3.2.2) are accepted, and
//! percent-escapes (RFC 3986 §2.1) are decoded. It does *not* confine the
//! path: `..`, NUL and the like come out decoded, for the project's path
//! confinement to refuse.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode_str;

/// Longest request head accepted, in bytes, counting the request line, the
/// header fields and the empty line that ends them. A peer that has sent more
/// without completing a head gets 431. Parsing never looks past this many
/// bytes, so a call costs at most one pass over 8 KiB.
pub const MAX_HEAD: usize = 8 * 1024;

/// Most header fields accepted in one head; more is 431 as well. The parser
/// keeps this many slots (16 bytes each on 64-bit targets) on the stack.
pub const MAX_HEADERS: usize = 64;

/// A request method (RFC 9110 §9). Names are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// Any other method token, as sent (`POST`, `get`, `OPTIONS`, ...).
    Other(String),
}

/// The protocol version of a request (RFC 9112 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    Http11,
}

/// Header fields in the order sent: `(name in ASCII lowercase, value)`, the
/// value with leading and trailing whitespace removed.
pub type Headers = Vec<(String, Vec<u8>)>;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request-target exactly as sent; see [`decode_path`].
    pub target: String,
    /// The protocol version.
    pub version: Version,
    /// The header fields.
    pub headers: Headers,
    /// Bytes the head took in the buffer, including empty lines before it
    /// and the empty line ending it: the next request (pipelined) starts
    /// here, unless the request announced a body.
    pub head_len: usize,
}

/// What the buffered bytes hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// A whole request head.
    Complete(Request),
    /// The start of a head that may still become acceptable: read more.
    Partial,
}

/// Why the buffered bytes can never become an acceptable request head. The
/// connection cannot be reused after either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields: answer 431 (RFC 6585 §5).
    TooLarge,
    /// Not an acceptable HTTP/1.x request head: answer 400.
    Malformed,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => f.write_str("request head too large"),
            HeadError::Malformed => f.write_str("malformed request head"),
        }
    }
}

impl std::error::Error for HeadError {}

/// Why a request-target has no usable path; answer 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Neither origin-form (`/...`) nor absolute-form (`http://host/...`):
    /// `*`, `host:port`, empty, relative.
    NotOriginForm,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::NotOriginForm => f.write_str("request-target is not a path"),
            PathError::BadEscape => f.write_str("invalid percent-escape in path"),
            PathError::NotUtf8 => f.write_str("decoded path is not UTF-8"),
        }
    }
}

impl std::error::Error for PathError {}

impl Request {
    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether the connection may carry another request after this one
    /// (RFC 9112 §9.3): HTTP/1.1 unless a `Connection` field lists `close`;
    /// HTTP/1.0 only if one lists `keep-alive` and none `close`. Tokens are
    /// comma-separated and case-insensitive, in any number of fields. Always
    /// false for a request that announced a body, which is never read.
    pub fn keep_alive(&self) -> bool {
        let (mut close, mut keep) = (false, false);
        for value in self.all("connection") {
            for token in value.split(|&b| b == b',').map(trim_ows) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        if close || self.has_body() {
            return false;
        }
        match self.version {
            Version::Http11 => true,
            Version::Http10 => keep,
        }
    }

    /// Whether the request announced content: `Transfer-Encoding`, or a
    /// `Content-Length` above 0. Never true for `GET` or `HEAD`.
    pub fn has_body(&self) -> bool {
        self.header("transfer-encoding").is_some()
            || self
                .header("content-length")
                .is_some_and(|v| v.iter().any(|&b| b != b'0'))
    }

    /// The `Range` field (RFC 9110 §14.2), if sent.
    pub fn range(&self) -> Option<&[u8]> {
        self.header("range")
    }

    /// The `If-Modified-Since` field (RFC 9110 §13.1.3), if sent.
    pub fn if_modified_since(&self) -> Option<&[u8]> {
        self.header("if-modified-since")
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Parses the request head at the start of `buf`.
///
/// Returns [`Parse::Partial`] while the head is incomplete and `buf` holds at
/// most [`MAX_HEAD`] bytes; [`HeadError::TooLarge`] once it holds more without
/// a complete head (or the head itself is longer), or the head has more than
/// [`MAX_HEADERS`] fields; [`HeadError::Malformed`] for anything else that is
/// not an acceptable request head (see the module docs).
pub fn parse_request(buf: &[u8]) -> Result<Parse, HeadError> {
    let window = buf.get(..MAX_HEAD).unwrap_or(buf);
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(Parse::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    let version = match version {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(HeadError::Malformed),
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_owned()),
    };
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), trim_ows(h.value).to_vec()))
        .collect();
    let request = Request {
        method,
        target: target.to_owned(),
        version,
        headers,
        head_len,
    };
    check_framing(&request)?;
    Ok(Parse::Complete(request))
}

/// The checks of the module docs that httparse does not make.
fn check_framing(req: &Request) -> Result<(), HeadError> {
    let hosts = req.all("host").count();
    if hosts > 1 || (hosts == 0 && req.version == Version::Http11) {
        return Err(HeadError::Malformed);
    }
    let mut length = None;
    for value in req.all("content-length") {
        let n = parse_decimal(value).ok_or(HeadError::Malformed)?;
        if length.is_some_and(|prev| prev != n) {
            return Err(HeadError::Malformed);
        }
        length = Some(n);
    }
    if req.header("transfer-encoding").is_some() && (length.is_some() || req.version == Version::Http10) {
        return Err(HeadError::Malformed);
    }
    if matches!(req.method, Method::Get | Method::Head) && req.has_body() {
        return Err(HeadError::Malformed);
    }
    Ok(())
}

/// `1*DIGIT` as a u64; None if empty, not all digits, or over u64::MAX.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let digit = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// `s` without leading and trailing spaces and tabs (OWS, RFC 9110 §5.6.3).
fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// The decoded path of a request-target.
///
/// Everything from the first `?` (query) or `#` (fragment) on is dropped.
/// Origin-form (`/a/b`) is taken as is; absolute-form with an `http` or
/// `https` scheme (`http://host:80/a/b`, any case) is accepted by taking its
/// path, `/` when it has none. Other forms are [`PathError::NotOriginForm`].
/// Percent-escapes are then decoded, hex digits in either case: `%2e%2e`
/// becomes `..`, `%2F` becomes `/` and `%00` becomes NUL, all left for path
/// confinement to refuse. `+` stays `+` (it means space only in form data).
/// A `%` without two hex digits after it is [`PathError::BadEscape`]; decoded
/// bytes that are not UTF-8 are [`PathError::NotUtf8`].
pub fn decode_path(target: &str) -> Result<String, PathError> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let path = if path.starts_with('/') {
        path
    } else if let Some(rest) = strip_http_scheme(path) {
        rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/")
    } else {
        return Err(PathError::NotOriginForm);
    };
    if !escapes_are_well_formed(path.as_bytes()) {
        return Err(PathError::BadEscape);
    }
    percent_decode_str(path)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| PathError::NotUtf8)
}

/// Whether every `%` in `path` is followed by two hex digits. The decoder
/// passes a malformed escape through as it is; a request naming one is
/// refused instead, since no client that encodes a path makes one.
fn escapes_are_well_formed(path: &[u8]) -> bool {
    path.iter().enumerate().filter(|(_, &b)| b == b'%').all(|(i, _)| {
        path.get(i + 1..i + 3)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

/// What follows `http://` or `https://` (scheme in any case), if `s` starts so.
fn strip_http_scheme(s: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let head = s.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| s.get(scheme.len()..))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> Request {
        match parse_request(buf) {
            Ok(Parse::Complete(req)) => req,
            other => panic!(
                "expected a complete head for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn error(buf: &[u8]) -> HeadError {
        match parse_request(buf) {
            Err(e) => e,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    const SIMPLE: &[u8] = b"GET /a/b.txt?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent:  curl/8 \t\r\n\r\n";

    #[test]
    fn simple_get_yields_method_target_version_headers_and_length() {
        let req = complete(SIMPLE);
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.target, "/a/b.txt?x=1");
        assert_eq!(req.version, Version::Http11);
        assert_eq!(req.head_len, SIMPLE.len());
        assert_eq!(
            req.headers,
            vec![
                ("host".to_owned(), b"example.com".to_vec()),
                ("user-agent".to_owned(), b"curl/8".to_vec())
            ]
        );
        assert!(req.keep_alive());
        assert!(!req.has_body());
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_returns_the_first() {
        let req = complete(
            b"GET / HTTP/1.1\r\nHOST: h\r\nRange: bytes=0-1\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
              X-A: 1\r\nx-a: 2\r\n\r\n",
        );
        assert_eq!(req.header("Host"), Some(&b"h"[..]));
        assert_eq!(req.header("x-A"), Some(&b"1"[..]));
        assert_eq!(req.header("missing"), None);
        assert_eq!(req.range(), Some(&b"bytes=0-1"[..]));
        assert_eq!(
            req.if_modified_since(),
            Some(&b"Sun, 06 Nov 1994 08:49:37 GMT"[..])
        );
        let bare = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!((bare.range(), bare.if_modified_since()), (None, None));
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(
            complete(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n").method,
            Method::Head
        );
        assert_eq!(
            complete(b"get / HTTP/1.1\r\nHost: h\r\n\r\n").method,
            Method::Other("get".into())
        );
        assert_eq!(
            complete(b"Head / HTTP/1.1\r\nHost: h\r\n\r\n").method,
            Method::Other("Head".into())
        );
        assert_eq!(
            complete(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n").method,
            Method::Other("POST".into())
        );
        assert_eq!(complete(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").target, "*");
    }

    #[test]
    fn split_at_every_byte_boundary_is_partial_then_complete() {
        for cut in 0..SIMPLE.len() {
            assert_eq!(parse_request(&SIMPLE[..cut]), Ok(Parse::Partial), "cut at {cut}");
        }
        assert_eq!(complete(SIMPLE).head_len, SIMPLE.len());
    }

    #[test]
    fn pipelined_requests_are_found_through_head_len() {
        let mut buf = SIMPLE.to_vec();
        buf.extend_from_slice(b"HEAD /second HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /thi");
        let first = complete(&buf);
        assert_eq!(first.target, "/a/b.txt?x=1");
        let rest = &buf[first.head_len..];
        let second = complete(rest);
        assert_eq!(
            (second.method.clone(), second.target.as_str()),
            (Method::Head, "/second")
        );
        assert!(!second.keep_alive());
        assert_eq!(parse_request(&rest[second.head_len..]), Ok(Parse::Partial));
    }

    #[test]
    fn empty_lines_before_the_request_line_are_skipped_and_counted() {
        let buf = b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(complete(buf).head_len, buf.len());
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let buf = b"GET / HTTP/1.1\nHost: h\n\n";
        assert_eq!(complete(buf).head_len, buf.len());
    }

    #[test]
    fn http11_needs_exactly_one_host_and_http10_none() {
        assert_eq!(error(b"GET / HTTP/1.1\r\n\r\n"), HeadError::Malformed);
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            HeadError::Malformed
        );
        assert_eq!(
            error(b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n"),
            HeadError::Malformed
        );
        assert_eq!(complete(b"GET / HTTP/1.0\r\n\r\n").version, Version::Http10);
        assert_eq!(
            complete(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").header("host"),
            Some(&b""[..])
        );
    }

    #[test]
    fn keep_alive_follows_version_defaults_and_connection_tokens() {
        let ka = |head: &str| complete(head.as_bytes()).keep_alive();
        assert!(ka("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
        assert!(!ka(
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n"
        ));
        assert!(!ka(
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nConnection:close \r\n\r\n"
        ));
        assert!(ka(
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: closed, x-close\r\n\r\n"
        ));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: foo ,\tKEEP-ALIVE\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\nConnection: keep-alive-ish\r\n\r\n"));
    }

    #[test]
    fn get_and_head_with_a_body_are_malformed() {
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"),
            HeadError::Malformed
        );
        assert_eq!(
            error(b"HEAD / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Malformed
        );
        let zero = complete(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 00\r\n\r\n");
        assert!(!zero.has_body() && zero.keep_alive());
    }

    #[test]
    fn other_methods_with_a_body_are_returned_but_end_the_connection() {
        let post = complete(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
        assert!(post.has_body());
        assert!(!post.keep_alive());
        let chunked = complete(b"PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(chunked.has_body() && !chunked.keep_alive());
        let empty = complete(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
        assert!(!empty.has_body() && empty.keep_alive());
    }

    #[test]
    fn ambiguous_framing_is_malformed() {
        for head in [
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(error(head.as_bytes()), HeadError::Malformed, "{head:?}");
        }
        let same = complete(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert!(same.has_body());
    }

    #[test]
    fn obs_fold_and_space_before_colon_are_malformed() {
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n b\r\n\r\n"),
            HeadError::Malformed
        );
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n\tb\r\n\r\n"),
            HeadError::Malformed
        );
        assert_eq!(error(b"GET / HTTP/1.1\r\nHost : h\r\n\r\n"), HeadError::Malformed);
    }

    #[test]
    fn garbage_and_other_versions_are_malformed() {
        for head in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\0\r\n\r\n",
            b"GET /a\xff HTTP/1.1\r\nHost: h\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
        ] {
            assert_eq!(
                error(head),
                HeadError::Malformed,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn utf8_target_is_kept_as_sent() {
        let req = complete("GET /na\u{ef}ve HTTP/1.1\r\nHost: h\r\n\r\n".as_bytes());
        assert_eq!(req.target, "/na\u{ef}ve");
    }

    fn head_of_len(len: usize) -> Vec<u8> {
        let start = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ";
        let mut buf = start.to_vec();
        buf.resize(len - 4, b'a');
        buf.extend_from_slice(b"\r\n\r\n");
        buf
    }

    #[test]
    fn head_of_exactly_max_head_bytes_is_complete_and_one_more_is_too_large() {
        assert_eq!(complete(&head_of_len(MAX_HEAD)).head_len, MAX_HEAD);
        assert_eq!(error(&head_of_len(MAX_HEAD + 1)), HeadError::TooLarge);
        let mut followed = head_of_len(MAX_HEAD);
        followed.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(complete(&followed).head_len, MAX_HEAD);
    }

    #[test]
    fn incomplete_head_is_partial_up_to_max_head_then_too_large() {
        let unfinished = &head_of_len(MAX_HEAD + 100)[..MAX_HEAD + 1];
        assert_eq!(parse_request(&unfinished[..MAX_HEAD]), Ok(Parse::Partial));
        assert_eq!(error(unfinished), HeadError::TooLarge);
        assert_eq!(error(&vec![b'G'; 1 << 20]), HeadError::TooLarge);
    }

    #[test]
    fn more_than_max_headers_is_too_large() {
        let with = |n: usize| {
            let mut head = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
            for i in 1..n {
                head.push_str(&format!("X-{i}: v\r\n"));
            }
            head.push_str("\r\n");
            head
        };
        assert_eq!(complete(with(MAX_HEADERS).as_bytes()).headers.len(), MAX_HEADERS);
        assert_eq!(error(with(MAX_HEADERS + 1).as_bytes()), HeadError::TooLarge);
        // Too many fields is known before the head is complete.
        let unfinished = with(MAX_HEADERS + 1);
        assert_eq!(
            error(&unfinished.as_bytes()[..unfinished.len() - 2]),
            HeadError::TooLarge
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"GET HEAD/ HTTP/1.1\r\n:Host:Content-Length:0123456789Transfer-Encoding,\t\x00\xff%";
        for _ in 0..20_000 {
            let len = (next() % 120) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let _ = parse_request(&buf);
            if let Ok(s) = std::str::from_utf8(&buf) {
                let _ = decode_path(s);
            }
        }
    }

    #[test]
    fn decode_path_drops_query_and_fragment() {
        assert_eq!(decode_path("/a/b?x=1&y=%zz").as_deref(), Ok("/a/b"));
        assert_eq!(decode_path("/a#frag?x").as_deref(), Ok("/a"));
        assert_eq!(decode_path("/?").as_deref(), Ok("/"));
        assert_eq!(decode_path("/a%3Fb").as_deref(), Ok("/a?b"));
        assert_eq!(decode_path("/a%23b").as_deref(), Ok("/a#b"));
    }

    #[test]
    fn decode_path_decodes_escapes_in_either_case_and_leaves_confinement_to_others() {
        assert_eq!(decode_path("/%2e%2e/%2E%2E/etc").as_deref(), Ok("/../../etc"));
        assert_eq!(decode_path("/a%2Fb%2fc").as_deref(), Ok("/a/b/c"));
        assert_eq!(decode_path("/a%00b").as_deref(), Ok("/a\0b"));
        assert_eq!(decode_path("/a%20b%25").as_deref(), Ok("/a b%"));
        assert_eq!(
            decode_path("/na%C3%AFve%20%E6%BC%A2").as_deref(),
            Ok("/na\u{ef}ve \u{6f22}")
        );
        assert_eq!(decode_path("/na\u{ef}ve").as_deref(), Ok("/na\u{ef}ve"));
        assert_eq!(decode_path("/a+b").as_deref(), Ok("/a+b"));
        assert_eq!(decode_path("/a%2Bb").as_deref(), Ok("/a+b"));
    }

    #[test]
    fn decode_path_refuses_invalid_escapes() {
        for target in ["/%zz", "/%2", "/%", "/a%g0", "/%%41", "/%\u{e9}9", "/%+1"] {
            assert_eq!(decode_path(target), Err(PathError::BadEscape), "{target:?}");
        }
    }

    #[test]
    fn decode_path_refuses_bytes_that_are_not_utf8() {
        assert_eq!(decode_path("/%ff"), Err(PathError::NotUtf8));
        assert_eq!(decode_path("/%C3"), Err(PathError::NotUtf8));
        assert_eq!(decode_path("/%C0%AE"), Err(PathError::NotUtf8));
    }

    #[test]
    fn decode_path_accepts_absolute_form_by_taking_its_path() {
        assert_eq!(decode_path("http://example.com/a%20b?q").as_deref(), Ok("/a b"));
        assert_eq!(
            decode_path("HTTPS://user@example.com:8443/x/").as_deref(),
            Ok("/x/")
        );
        assert_eq!(decode_path("http://example.com").as_deref(), Ok("/"));
        assert_eq!(decode_path("http://example.com?a=/b").as_deref(), Ok("/"));
    }

    #[test]
    fn decode_path_refuses_other_forms() {
        for target in [
            "",
            "*",
            "example.com:443",
            "a/b",
            "ftp://host/a",
            "http:/a",
            "?/a",
            "#/a",
            "%2Fa",
        ] {
            assert_eq!(decode_path(target), Err(PathError::NotOriginForm), "{target:?}");
        }
    }

    #[test]
    fn errors_display_a_reason() {
        assert_eq!(HeadError::TooLarge.to_string(), "request head too large");
        assert_eq!(PathError::BadEscape.to_string(), "invalid percent-escape in path");
    }
}
