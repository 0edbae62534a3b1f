//! HTTP request handling against the module docs: `request::{parse_request,
//! decode_path}`, `range::parse_range`, `date::{parse_http_date,
//! format_http_date}` and `precondition::{evaluate, if_range_holds}`.
//!
//! Every input goes through all four, the way the server uses them: as a
//! request head; when that is a complete request, its target, `Range` and
//! `If-Modified-Since` values too; and the raw bytes also as a target, a
//! `Range` value and a date. Checked:
//!
//! `parse_request` (request.rs "Always true"):
//! - `head_len` is at most the input and at most `MAX_HEAD`; the head alone
//!   parses to the same request; only the first `MAX_HEAD` bytes count;
//! - `Partial` only for input of at most `MAX_HEAD` bytes (padded past it,
//!   never `Partial`), and every prefix of a partial head is partial;
//! - a complete request has a method (`GET`/`HEAD` only as such, case-
//!   sensitively), a target without spaces, at most `MAX_HEADERS` fields with
//!   lowercase names and OWS-trimmed values without line breaks, at most one
//!   `Host` and exactly one on HTTP/1.1, a single agreeing decimal
//!   `Content-Length`, no `Transfer-Encoding` with it or on HTTP/1.0, no body
//!   on `GET`/`HEAD`, and `keep_alive` false whenever there is a body; no
//!   field line of the head is folded or has whitespace before its colon;
//! - `header`, `range`, `if_modified_since`, `has_body`, `keep_alive` agree
//!   with models written from their docs.
//!
//! `decode_path`: agrees with a model of its docs; a decoded path starts
//! with `/`; percent-encoding any UTF-8 string and decoding it gives it back,
//! in origin-form and absolute-form, with a query and fragment dropped.
//!
//! `parse_range` (range.rs "Always true"): a `Partial` span lies inside the
//! length, for several lengths (0, 1, 10, `u64::MAX`, ...); the outcome
//! agrees with a model of the docs' choices; `content_range` is formatted as
//! documented.
//!
//! Preconditions (precondition.rs): the conditional fields of a complete
//! request, and the raw bytes as each conditional field, never panic; a
//! 304 only for `GET`/`HEAD`, a range only when there is one; a list that
//! holds the current tag (strongly, for `If-Match`) passes; an `If-Range`
//! holds only for the exact current tag or the exact date.
//!
//! Dates (date.rs "Always true"): parsing ignores surrounding whitespace; a
//! parsed time is a whole second from 1970 through 9999 and formats to a
//! 29-byte IMF-fixdate with the right weekday that parses back to the same
//! time; an RFC 850 year lands in 1970-2069; any time (from the input's
//! first bytes) formats to a valid date that parses back to it, truncated
//! and clamped.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use evloop::protocols::http::date::{format_http_date, parse_http_date};
use evloop::protocols::http::precondition::{
    etag, evaluate, if_range_holds, Conditions, Validators, Verdict,
};
use evloop::protocols::http::range::{parse_range, RangeOutcome};
use evloop::protocols::http::request::{
    decode_path, parse_request, HeadError, Method, Parse, PathError, Request, Version, MAX_HEAD, MAX_HEADERS,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_request(data);
    if let Ok(target) = std::str::from_utf8(data) {
        check_decode_path(target);
    }
    check_range(data, &lengths_from(data));
    check_date(data);
    check_format_any_time(data);
    check_raw_conditions(data);
});

// ---------------------------------------------------------------- requests

fn check_request(data: &[u8]) {
    let parsed = parse_request(data);
    match &parsed {
        Ok(Parse::Complete(req)) => {
            check_complete(data, req);
            assert_eq!(
                parse_request(&data[..req.head_len]),
                parsed,
                "the head alone parses differently"
            );
            check_head_limit(data, req);
        }
        Ok(Parse::Partial) => {
            assert!(data.len() <= MAX_HEAD, "Partial for {} bytes", data.len());
            let mut padded = data.to_vec();
            padded.resize(MAX_HEAD + 1, b'a');
            assert_ne!(
                parse_request(&padded),
                Ok(Parse::Partial),
                "Partial past MAX_HEAD"
            );
            for cut in [data.len() / 2, data.len().saturating_sub(1)] {
                assert_eq!(
                    parse_request(&data[..cut]),
                    Ok(Parse::Partial),
                    "a prefix ({cut} bytes) of a partial head is not partial"
                );
            }
        }
        Err(_) => {}
    }
    // Only the first MAX_HEAD bytes count.
    if data.len() > MAX_HEAD {
        match parse_request(&data[..MAX_HEAD]) {
            Ok(Parse::Partial) => assert_eq!(parsed, Err(HeadError::TooLarge)),
            window => assert_eq!(parsed, window, "bytes past MAX_HEAD changed the answer"),
        }
    }
}

/// The same request grown, by a padding field after the request line, to
/// a head of exactly `MAX_HEAD` bytes is accepted with that `head_len`;
/// one byte more is `TooLarge`.
fn check_head_limit(data: &[u8], req: &Request) {
    if req.headers.len() >= MAX_HEADERS {
        return;
    }
    let leading = data.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let Some(end) = data[leading..].iter().position(|&b| b == b'\n') else {
        return;
    };
    let at = leading + end + 1;
    let eol: &[u8] = if data[..at].ends_with(b"\r\n") {
        b"\r\n"
    } else {
        b"\n"
    };
    let fixed = req.head_len + b"X-Pad: ".len() + eol.len();
    let Some(fill) = MAX_HEAD.checked_sub(fixed) else {
        return;
    };
    for extra in [0, 1] {
        let mut grown = data[..at].to_vec();
        grown.extend_from_slice(b"X-Pad: ");
        grown.resize(grown.len() + fill + extra, b'p');
        grown.extend_from_slice(eol);
        grown.extend_from_slice(&data[at..]);
        let got = parse_request(&grown);
        if extra == 1 {
            assert_eq!(got, Err(HeadError::TooLarge), "a head of MAX_HEAD + 1 bytes");
            continue;
        }
        let Ok(Parse::Complete(grown_req)) = got else {
            panic!("a head of exactly MAX_HEAD bytes: {got:?}");
        };
        assert_eq!(grown_req.head_len, MAX_HEAD);
        let mut want = req.clone();
        want.head_len = MAX_HEAD;
        want.headers.insert(0, ("x-pad".to_owned(), vec![b'p'; fill]));
        assert_eq!(grown_req, want);
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

fn all<'a>(req: &'a Request, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    req.headers
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

fn check_complete(data: &[u8], req: &Request) {
    let head_len = req.head_len;
    assert!(head_len > 0);
    assert!(head_len <= data.len(), "head_len {head_len} past the input");
    assert!(head_len <= MAX_HEAD, "head_len {head_len} past MAX_HEAD");
    let head = &data[..head_len];
    assert!(head.ends_with(b"\n"), "a head ends with its empty line");

    match &req.method {
        Method::Get | Method::Head => {}
        Method::Other(m) => {
            assert!(m != "GET" && m != "HEAD", "{m} is not Other");
            assert!(!m.is_empty() && m.bytes().all(is_tchar), "method {m:?}");
        }
    }
    assert!(!req.target.is_empty(), "empty target");
    assert!(
        !req.target.bytes().any(|b| b == b' ' || b == b'\r' || b == b'\n'),
        "target {:?}",
        req.target
    );
    assert!(req.headers.len() <= MAX_HEADERS);
    for (name, value) in &req.headers {
        assert!(
            !name.is_empty() && name.bytes().all(is_tchar),
            "field name {name:?}"
        );
        assert_eq!(*name, name.to_ascii_lowercase(), "field name not lowercase");
        assert!(!value.first().is_some_and(is_ows), "value not trimmed: {value:?}");
        assert!(!value.last().is_some_and(is_ows), "value not trimmed: {value:?}");
        assert!(
            !value.iter().any(|&b| b == b'\r' || b == b'\n'),
            "line break in a value: {value:?}"
        );
    }
    check_field_lines(head, req);

    let hosts = all(req, "host").count();
    assert!(hosts <= 1, "{hosts} Host fields");
    if req.version == Version::Http11 {
        assert_eq!(hosts, 1, "HTTP/1.1 without Host");
    }
    let lengths: Vec<&[u8]> = all(req, "content-length").collect();
    for value in &lengths {
        assert!(
            !value.is_empty() && value.iter().all(u8::is_ascii_digit),
            "Content-Length {value:?}"
        );
        let n = std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        assert!(n.is_some(), "Content-Length {value:?} over u64");
    }
    let numbers: Vec<u64> = lengths
        .iter()
        .filter_map(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] == w[1]),
        "Content-Lengths disagree"
    );
    let te = all(req, "transfer-encoding").next().is_some();
    if te {
        assert!(lengths.is_empty(), "Transfer-Encoding with Content-Length");
        assert_eq!(req.version, Version::Http11, "Transfer-Encoding on HTTP/1.0");
    }
    let has_body = te || numbers.first().is_some_and(|&n| n > 0);
    assert_eq!(req.has_body(), has_body);
    if matches!(req.method, Method::Get | Method::Head) {
        assert!(!has_body, "GET or HEAD with a body");
    }
    let mut close = false;
    let mut keep = false;
    for value in all(req, "connection") {
        for token in value.split(|&b| b == b',') {
            let token = trim_ows(token);
            close |= token.eq_ignore_ascii_case(b"close");
            keep |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    let keep_alive = !close
        && !has_body
        && match req.version {
            Version::Http11 => true,
            Version::Http10 => keep,
        };
    assert_eq!(req.keep_alive(), keep_alive);

    // Lookups are ASCII case-insensitive and give the first field.
    for (name, _) in req.headers.iter().take(4) {
        let first = all(req, name).next();
        assert_eq!(req.header(&name.to_ascii_uppercase()), first);
        assert_eq!(req.header(name), first);
    }
    assert_eq!(req.range(), all(req, "range").next());
    assert_eq!(req.if_modified_since(), all(req, "if-modified-since").next());

    // What the server then does with the request.
    check_decode_path(&req.target);
    if let Some(range) = req.range() {
        check_range(range, &[0, 1, 10, 1 << 40]);
    }
    if let Some(date) = req.if_modified_since() {
        check_date(date);
    }
    let conditions = Conditions::from_request(req);
    assert_eq!(conditions.if_match, all(req, "if-match").collect::<Vec<_>>());
    assert_eq!(
        conditions.if_none_match,
        all(req, "if-none-match").collect::<Vec<_>>()
    );
    assert_eq!(conditions.has_range, req.range().is_some());
    check_conditions(&req.method, &conditions);
}

// ----------------------------------------------------------- preconditions

/// A file modified at a whole second a day ago, and its tag.
fn validators(tag: &str) -> Validators<'_> {
    let now = SystemTime::now();
    Validators {
        etag: tag,
        modified: Some(at(unix_seconds(now).expect("now") - 86_400)),
        now,
    }
}

fn check_conditions(method: &Method, conditions: &Conditions<'_>) {
    let tag = etag(Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), 12);
    let current = validators(&tag);
    let verdict = evaluate(method, conditions, &current);
    match verdict {
        Verdict::NotModified => assert!(matches!(method, Method::Get | Method::Head)),
        Verdict::Send { use_range } => assert!(!use_range || conditions.has_range),
        Verdict::PreconditionFailed => {}
    }
    if conditions.if_match.is_empty() && conditions.if_unmodified_since.is_none() {
        assert_ne!(
            verdict,
            Verdict::PreconditionFailed,
            "412 without If-Match or If-Unmodified-Since"
        );
    }
}

/// The raw bytes as each conditional field, alone and with the current tag
/// on a line of its own.
fn check_raw_conditions(data: &[u8]) {
    let tag = etag(Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), 12);
    let current = validators(&tag);
    let get = Method::Get;
    let alone = [
        Conditions {
            if_match: vec![data],
            ..Conditions::default()
        },
        Conditions {
            if_unmodified_since: Some(data),
            ..Conditions::default()
        },
        Conditions {
            if_none_match: vec![data],
            ..Conditions::default()
        },
        Conditions {
            if_modified_since: Some(data),
            ..Conditions::default()
        },
        Conditions {
            if_range: Some(data),
            has_range: true,
            ..Conditions::default()
        },
    ];
    for conditions in &alone {
        check_conditions(&get, conditions);
        check_conditions(&Method::Head, conditions);
    }
    let with_tag = Conditions {
        if_match: vec![data, tag.as_bytes()],
        ..Conditions::default()
    };
    assert_ne!(evaluate(&get, &with_tag, &current), Verdict::PreconditionFailed);
    let with_tag = Conditions {
        if_none_match: vec![data, tag.as_bytes()],
        ..Conditions::default()
    };
    assert_eq!(evaluate(&get, &with_tag, &current), Verdict::NotModified);
    if if_range_holds(data, &current) {
        let value = trim_ows(data);
        let date = parse_http_date(value);
        assert!(
            value == tag.as_bytes() || (date.is_some() && date == current.modified),
            "If-Range {data:?} held"
        );
    }
}

/// The head's field lines: none folded, none with whitespace before its
/// colon, as many as the request has fields.
fn check_field_lines(head: &[u8], req: &Request) {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let request_line = lines.next().expect("a request line");
    assert!(!request_line.is_empty());
    let mut count = 0;
    for line in lines.take_while(|l| !l.is_empty()) {
        assert!(!line.first().is_some_and(is_ows), "folded field line {line:?}");
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .expect("a field line has a colon");
        assert!(
            !line[..colon].iter().any(is_ows),
            "whitespace before the colon: {line:?}"
        );
        count += 1;
    }
    assert_eq!(count, req.headers.len(), "field lines and fields differ");
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

// ------------------------------------------------------------------- paths

/// `decode_path` as its docs describe it.
fn model_decode_path(target: &str) -> Result<String, PathError> {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    let path = &target[..end];
    let lower = path.to_ascii_lowercase();
    let path = if path.starts_with('/') {
        path
    } else if let Some(scheme) = ["http://", "https://"].into_iter().find(|s| lower.starts_with(s)) {
        let authority_and_path = &path[scheme.len()..];
        match authority_and_path.find('/') {
            Some(i) => &authority_and_path[i..],
            None => "/",
        }
    } else {
        return Err(PathError::NotOriginForm);
    };
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(PathError::BadEscape);
            }
            let text = std::str::from_utf8(hex).expect("hex digits");
            out.push(u8::from_str_radix(text, 16).expect("hex digits"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

fn percent_encode(s: &str, upper: bool) -> String {
    s.bytes()
        .map(|b| {
            if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

fn check_decode_path(target: &str) {
    let got = decode_path(target);
    assert_eq!(got, model_decode_path(target), "decode_path({target:?})");
    if let Ok(path) = &got {
        assert!(path.starts_with('/'), "decoded path {path:?}");
        if !target.contains('%') && target.starts_with('/') {
            assert!(
                target.starts_with(path.as_str()),
                "{path:?} is not the target's path"
            );
        }
    }
    // Round trip: any string, percent-encoded, decodes back.
    let plain = target.chars().take(64).collect::<String>();
    let upper = target.len().is_multiple_of(2);
    let encoded = percent_encode(&plain, upper);
    let want = Ok(format!("/{plain}"));
    assert_eq!(decode_path(&format!("/{encoded}")), want);
    assert_eq!(decode_path(&format!("/{encoded}?q=%zz#frag")), want);
    assert_eq!(decode_path(&format!("HTTP://host:80/{encoded}#x")), want);
    assert_eq!(decode_path(&format!("https://h/{encoded}")), want);
}

// ------------------------------------------------------------------ ranges

fn lengths_from(data: &[u8]) -> Vec<u64> {
    let mut lengths = vec![0, 1, 2, 10, 1000, u64::MAX - 1, u64::MAX];
    let mut tail = [0u8; 8];
    for (slot, b) in tail.iter_mut().rev().zip(data.iter().rev()) {
        *slot = *b;
    }
    lengths.push(u64::from_le_bytes(tail));
    lengths.push(data.len() as u64);
    lengths
}

/// `1*DIGIT`, saturating; None if empty or not all digits.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |acc, &b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// `parse_range` as the docs' choices describe it.
fn model_range(header: &[u8], len: u64) -> RangeOutcome {
    use RangeOutcome::{Full, Partial, Unsatisfiable};
    let value = trim_ows(header);
    let Some(eq) = value.iter().position(|&b| b == b'=') else {
        return Full;
    };
    if !value[..eq].eq_ignore_ascii_case(b"bytes") {
        return Full;
    }
    let specs: Vec<&[u8]> = value[eq + 1..]
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|s| !s.is_empty())
        .collect();
    let [spec] = specs[..] else {
        return Full;
    };
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return Full;
    };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        return match number(last) {
            None => Full,
            Some(0) => Unsatisfiable,
            Some(_) if len == 0 => Full,
            Some(n) => Partial {
                start: len.saturating_sub(n),
                end_inclusive: len - 1,
            },
        };
    }
    let Some(start) = number(first) else {
        return Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            _ => return Full,
        }
    };
    if start >= len {
        Unsatisfiable
    } else {
        Partial {
            start,
            end_inclusive: end.min(len - 1),
        }
    }
}

fn check_range(header: &[u8], lengths: &[u64]) {
    for &len in lengths {
        let got = parse_range(header, len);
        assert_eq!(got, model_range(header, len), "parse_range({header:?}, {len})");
        match got {
            RangeOutcome::Partial { start, end_inclusive } => {
                assert!(start <= end_inclusive, "{got:?} for {len}");
                assert!(end_inclusive < len, "{got:?} past the end of {len} bytes");
                assert_eq!(
                    got.content_range(len),
                    Some(format!("bytes {start}-{end_inclusive}/{len}"))
                );
            }
            RangeOutcome::Unsatisfiable => {
                assert_eq!(got.content_range(len), Some(format!("bytes */{len}")));
            }
            RangeOutcome::Full => assert_eq!(got.content_range(len), None),
        }
    }
}

// ------------------------------------------------------------------- dates

const SHORT_DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const LONG_DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the times an HTTP date
/// names (date.rs).
const MIN_SECS: i64 = 0;
const MAX_SECS: i64 = 253_402_300_799;

/// Seconds since the epoch, rounded down; None past what i64 holds.
fn unix_seconds(t: SystemTime) -> Option<i64> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => {
            let d = before.duration();
            let whole = i64::try_from(d.as_secs()).ok()?;
            Some(-whole - i64::from(d.subsec_nanos() > 0))
        }
    }
}

fn at(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

/// Checks that `text` is an IMF-fixdate naming `secs` (already clamped)
/// with the right weekday; returns its year.
fn check_imf_fixdate(text: &str, secs: i64) -> i64 {
    let b = text.as_bytes();
    assert_eq!(b.len(), 29, "{text:?} is not 29 bytes");
    assert!(text.is_ascii(), "{text:?}");
    let digits = |r: std::ops::Range<usize>| {
        assert!(b[r.clone()].iter().all(u8::is_ascii_digit), "{text:?}");
        text[r].parse::<i64>().expect("digits")
    };
    let weekday = SHORT_DAYS[(secs.div_euclid(86_400) + 4).rem_euclid(7) as usize];
    assert_eq!(&text[..3], weekday, "{text:?}: wrong weekday");
    assert_eq!(&text[3..5], ", ");
    let day = digits(5..7);
    assert_eq!(&text[7..8], " ");
    assert!(MONTHS.contains(&&text[8..11]), "{text:?}");
    assert_eq!(&text[11..12], " ");
    let year = digits(12..16);
    assert_eq!(&text[16..17], " ");
    let (h, m, s) = (digits(17..19), digits(20..22), digits(23..25));
    assert_eq!((&text[19..20], &text[22..23]), (":", ":"));
    assert_eq!(&text[25..], " GMT");
    assert!(
        (1..=31).contains(&day) && h <= 23 && m <= 59 && s <= 59,
        "{text:?}"
    );
    assert_eq!(
        secs.rem_euclid(86_400),
        h * 3600 + m * 60 + s,
        "{text:?}: wrong time of day"
    );
    year
}

fn check_date(value: &[u8]) {
    let parsed = parse_http_date(value);
    let padded = [b" \t".as_slice(), value, b"\t \t"].concat();
    assert_eq!(
        parse_http_date(&padded),
        parsed,
        "surrounding whitespace changed the date"
    );
    let Some(t) = parsed else {
        return;
    };
    let secs = unix_seconds(t).expect("a 4-digit year fits");
    assert_eq!(at(secs), t, "a parsed date is a whole second");
    assert!((MIN_SECS..=MAX_SECS).contains(&secs), "{value:?} parsed outside 1970-9999");
    let text = format_http_date(t);
    let year = check_imf_fixdate(&text, secs);
    assert_eq!(
        parse_http_date(text.as_bytes()),
        Some(t),
        "{text:?} does not parse back"
    );
    let trimmed = trim_ows(value);
    let rfc850 = LONG_DAYS
        .iter()
        .any(|d| trimmed.starts_with(d.as_bytes()) && trimmed.get(d.len()) == Some(&b','));
    if rfc850 {
        assert!((1970..=2069).contains(&year), "{value:?} put in {year}");
    }
}

/// Any time formats to a valid date that parses back to it, truncated to
/// whole seconds and clamped to 1970 through 9999.
fn check_format_any_time(data: &[u8]) {
    let Some(head) = data.get(..12) else {
        return;
    };
    let secs = i64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let nanos = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) % 1_000_000_000;
    let offset = Duration::new(secs.unsigned_abs(), nanos);
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    let Some(t) = t else {
        return;
    };
    let Some(floor) = unix_seconds(t) else {
        return;
    };
    let expected = floor.clamp(MIN_SECS, MAX_SECS);
    let text = format_http_date(t);
    check_imf_fixdate(&text, expected);
    assert_eq!(parse_http_date(text.as_bytes()), Some(at(expected)), "{text:?}");
}
