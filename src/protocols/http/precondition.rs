//! Conditional requests (RFC 9110 §13): entity tags, and the evaluation of
//! `If-Match`, `If-Unmodified-Since`, `If-None-Match`, `If-Modified-Since`
//! and `If-Range` against a file's validators. IO-free: the caller passes
//! the request's fields and the file's [`Validators`], and gets a
//! [`Verdict`].
//!
//! The order is RFC 9110 §13.2.2's:
//!
//! 1. `If-Match` present: false (no listed tag matches, by strong
//!    comparison; `*` matches any file) → 412;
//! 2. else `If-Unmodified-Since` (a valid date, and the file has a
//!    modification time): modified after it → 412;
//! 3. `If-None-Match` present: true (a listed tag matches, by weak
//!    comparison; `*` matches) → 304 for `GET`/`HEAD`, 412 otherwise;
//! 4. else `If-Modified-Since` (`GET`/`HEAD`, a valid date, a modification
//!    time): not modified since → 304;
//! 5. `If-Range` with a `Range`: a tag must match *strongly* (a weak tag
//!    never does), a date must equal `Last-Modified` exactly and
//!    `Last-Modified` must be strong (the file was modified at least a
//!    second before now, §8.8.2.2); if not, the `Range` is ignored and the
//!    whole file is sent.
//!
//! Always true, for any bytes a peer sends:
//! - nothing here panics; a field that does not parse never matches: a
//!   malformed `If-Match` list fails (412), a malformed `If-None-Match` list
//!   does not match (the file is sent), a date that does not parse is
//!   ignored (§13.1.3, §13.1.4), a malformed `If-Range` ignores the `Range`;
//! - an `If-Match` or `If-None-Match` sent on several field lines counts
//!   as one list: any line may match; a malformed line matches nothing;
//! - dates are compared in whole seconds, the precision of HTTP dates.
//!
//! The tags this server sends are strong and look like nginx's:
//! `"<mtime-seconds-hex>-<size-hex>"` ([`etag`]). They change whenever the
//! modification time (in seconds) or the size does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::date::parse_http_date;
use super::request::{Method, Request};

/// What the server knows about the file a request names, to check
/// preconditions against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validators<'a> {
    /// The file's entity tag as sent in `ETag`, quotes included (strong).
    pub etag: &'a str,
    /// The file's modification time, if the file system has one.
    pub modified: Option<SystemTime>,
    /// The time of the answer (its `Date`): a `Last-Modified` less than a
    /// second before it is weak and cannot validate an `If-Range`.
    pub now: SystemTime,
}

/// The conditional fields of a request, as sent (values, not yet parsed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions<'a> {
    /// Every `If-Match` field line; empty when none was sent.
    pub if_match: Vec<&'a [u8]>,
    /// The first `If-Unmodified-Since`.
    pub if_unmodified_since: Option<&'a [u8]>,
    /// Every `If-None-Match` field line; empty when none was sent.
    pub if_none_match: Vec<&'a [u8]>,
    /// The first `If-Modified-Since`.
    pub if_modified_since: Option<&'a [u8]>,
    /// The first `If-Range`.
    pub if_range: Option<&'a [u8]>,
    /// Whether the request has a `Range` field.
    pub has_range: bool,
}

/// What to do with a request for a file, once its preconditions are
/// evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 412 Precondition Failed: `If-Match` or `If-Unmodified-Since` failed
    /// (or `If-None-Match` matched, for a method other than `GET`/`HEAD`).
    PreconditionFailed,
    /// 304 Not Modified: the client's copy is current.
    NotModified,
    /// Send the file; honour its `Range` field only if `use_range` (there is
    /// one, and no failed `If-Range` stands against it).
    Send {
        /// Whether the `Range` field, if any, applies.
        use_range: bool,
    },
}

impl<'a> Conditions<'a> {
    /// The conditional fields of `req`.
    pub fn from_request(req: &'a Request) -> Conditions<'a> {
        let all = |name: &'a str| {
            req.headers
                .iter()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice())
        };
        Conditions {
            if_match: all("if-match").collect(),
            if_unmodified_since: req.header("if-unmodified-since"),
            if_none_match: all("if-none-match").collect(),
            if_modified_since: req.if_modified_since(),
            if_range: req.header("if-range"),
            has_range: req.range().is_some(),
        }
    }
}

/// The strong entity tag of a file of `len` bytes last modified at
/// `modified`, quotes included: `"<seconds-hex>-<len-hex>"`, the seconds
/// since the epoch (0 before it, or when unknown).
pub fn etag(modified: Option<SystemTime>, len: u64) -> String {
    format!("\"{:x}-{len:x}\"", modified.map_or(0, whole_seconds))
}

/// Evaluates the preconditions of a request with `method` on a file with
/// `current` validators, in RFC 9110 §13.2.2's order.
pub fn evaluate(method: &Method, conditions: &Conditions<'_>, current: &Validators<'_>) -> Verdict {
    let get_or_head = matches!(method, Method::Get | Method::Head);
    // 1, 2: the client's copy must still be the current one.
    if !conditions.if_match.is_empty() {
        if !list_matches(&conditions.if_match, current.etag, Comparison::Strong) {
            return Verdict::PreconditionFailed;
        }
    } else if let (Some(since), Some(modified)) = (
        conditions.if_unmodified_since.and_then(parse_http_date),
        current.modified,
    ) {
        if whole_seconds(modified) > whole_seconds(since) {
            return Verdict::PreconditionFailed;
        }
    }
    // 3, 4: the client's copy may already be the current one.
    if !conditions.if_none_match.is_empty() {
        if list_matches(&conditions.if_none_match, current.etag, Comparison::Weak) {
            return if get_or_head {
                Verdict::NotModified
            } else {
                Verdict::PreconditionFailed
            };
        }
    } else if let (true, Some(since), Some(modified)) = (
        get_or_head,
        conditions.if_modified_since.and_then(parse_http_date),
        current.modified,
    ) {
        if whole_seconds(modified) <= whole_seconds(since) {
            return Verdict::NotModified;
        }
    }
    // 5: a range of the client's copy, only if it is the current one.
    let use_range = conditions.has_range
        && get_or_head
        && conditions
            .if_range
            .map_or(true, |validator| if_range_holds(validator, current));
    Verdict::Send { use_range }
}

/// Whether an `If-Range` validator (RFC 9110 §13.1.5) names the current
/// file: an entity tag by strong comparison, or a date equal to a strong
/// `Last-Modified`.
pub fn if_range_holds(validator: &[u8], current: &Validators<'_>) -> bool {
    let value = trim(validator);
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        // One entity tag, nothing around it: `If-Range` is not a list.
        return match parse_tag(value) {
            Some((tag, rest)) => rest.is_empty() && tags_match(&tag, current.etag, Comparison::Strong),
            None => false,
        };
    }
    let (Some(date), Some(modified)) = (parse_http_date(value), current.modified) else {
        return false;
    };
    let strong = current
        .now
        .duration_since(modified)
        .is_ok_and(|age| age >= Duration::from_secs(1));
    strong && whole_seconds(date) == whole_seconds(modified)
}

/// How two entity tags are compared (RFC 9110 §8.8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    /// Both strong, and the same opaque tag.
    Strong,
    /// The same opaque tag, weak or not.
    Weak,
}

/// One entity tag from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tag<'a> {
    weak: bool,
    /// The opaque tag, quotes included.
    opaque: &'a [u8],
}

/// An `If-Match`/`If-None-Match` field value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum List<'a> {
    /// `*`: any current representation.
    Any,
    /// `#entity-tag`.
    Tags(Vec<Tag<'a>>),
}

/// Whether any of the field lines matches `current` (a strong tag, quotes
/// included); a malformed line matches nothing.
fn list_matches(lines: &[&[u8]], current: &str, how: Comparison) -> bool {
    lines.iter().any(|line| match parse_list(line) {
        Some(List::Any) => true,
        Some(List::Tags(tags)) => tags.iter().any(|tag| tags_match(tag, current, how)),
        None => false,
    })
}

/// Whether a tag from a request matches the server's (strong) tag.
fn tags_match(tag: &Tag<'_>, current: &str, how: Comparison) -> bool {
    let weak_allowed = how == Comparison::Weak;
    (weak_allowed || !tag.weak) && tag.opaque == current.as_bytes()
}

/// Parses `"*"` or a comma-separated list of entity tags (RFC 9110 §8.8.3,
/// §5.6.1: empty elements and whitespace around them are allowed). `None`
/// when malformed.
fn parse_list(value: &[u8]) -> Option<List<'_>> {
    let value = trim(value);
    if value == b"*" {
        return Some(List::Any);
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = skip_separators(rest);
        if rest.is_empty() {
            break;
        }
        let (tag, after) = parse_tag(rest)?;
        tags.push(tag);
        rest = trim_start(after);
        match rest.first() {
            None | Some(b',') => {}
            Some(_) => return None,
        }
    }
    if tags.is_empty() {
        return None;
    }
    Some(List::Tags(tags))
}

/// One `entity-tag` at the start of `s`: `[W/] DQUOTE *etagc DQUOTE`, where
/// `etagc` is `%x21 / %x23-7E / %x80-FF`. Returns it and what follows.
fn parse_tag(s: &[u8]) -> Option<(Tag<'_>, &[u8])> {
    let (weak, s) = match s.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if s.first() != Some(&b'"') {
        return None;
    }
    let close = 1 + s.get(1..)?.iter().position(|&b| b == b'"')?;
    let inner = s.get(1..close)?;
    let etagc = |b: &u8| *b == 0x21 || (0x23..=0x7e).contains(b) || *b >= 0x80;
    if !inner.iter().all(etagc) {
        return None;
    }
    let opaque = s.get(..=close)?;
    Some((Tag { weak, opaque }, s.get(close + 1..)?))
}

fn skip_separators(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | b','))
        .unwrap_or(s.len());
    &s[start..]
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    &s[start..]
}

fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &s[..end]
}

/// A time as whole seconds since the epoch; times before 1970 count as 0.
fn whole_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::http::date::format_http_date;

    /// A file modified at a whole second, a day before now, 12 bytes long.
    fn file() -> (String, SystemTime, SystemTime) {
        let modified = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let now = modified + Duration::from_secs(86_400);
        (etag(Some(modified), 12), modified, now)
    }

    /// Evaluates a GET of [`file`] with the given fields.
    fn get(conditions: Conditions<'_>) -> Verdict {
        let (tag, modified, now) = file();
        let current = Validators {
            etag: &tag,
            modified: Some(modified),
            now,
        };
        evaluate(&Method::Get, &conditions, &current)
    }

    const SEND: Verdict = Verdict::Send { use_range: false };
    const RANGE: Verdict = Verdict::Send { use_range: true };

    fn date(t: SystemTime) -> Vec<u8> {
        format_http_date(t).into_bytes()
    }

    #[test]
    fn etags_are_nginx_shaped_from_seconds_and_size() {
        let (tag, ..) = file();
        assert_eq!(tag, "\"6553f100-c\"");
        let later = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(etag(Some(later), 12), tag, "whole seconds");
        assert_eq!(etag(None, 0), "\"0-0\"");
        assert_eq!(etag(Some(UNIX_EPOCH - Duration::from_secs(5)), 255), "\"0-ff\"");
    }

    #[test]
    fn no_conditions_send_the_file() {
        assert_eq!(get(Conditions::default()), SEND);
    }

    #[test]
    fn if_none_match_that_fails_overrides_a_matching_if_modified_since() {
        let (_, modified, _) = file();
        let since = date(modified);
        let conditions = Conditions {
            if_none_match: vec![b"\"nope\""],
            if_modified_since: Some(&since),
            ..Conditions::default()
        };
        assert_eq!(get(conditions), SEND);
    }

    #[test]
    fn if_none_match_with_the_current_tag_or_a_star_is_not_modified() {
        let (tag, ..) = file();
        let weak = format!("W/{tag}");
        for value in [tag.as_str(), "*", " * ", weak.as_str(), "\"a\", \"b\"", "\"a\",,"] {
            let matching = value.contains(&tag) || value.contains('*');
            let conditions = Conditions {
                if_none_match: vec![value.as_bytes()],
                ..Conditions::default()
            };
            let want = if matching { Verdict::NotModified } else { SEND };
            assert_eq!(get(conditions), want, "{value}");
        }
        let list = format!("\"a\" ,\tW/\"b\", {tag}");
        let conditions = Conditions {
            if_none_match: vec![list.as_bytes()],
            ..Conditions::default()
        };
        assert_eq!(get(conditions), Verdict::NotModified);
        // On another line of its own.
        let conditions = Conditions {
            if_none_match: vec![b"\"a\"", tag.as_bytes()],
            ..Conditions::default()
        };
        assert_eq!(get(conditions), Verdict::NotModified);
    }

    #[test]
    fn if_none_match_for_other_methods_fails_the_precondition() {
        let (tag, modified, now) = file();
        let current = Validators {
            etag: &tag,
            modified: Some(modified),
            now,
        };
        let conditions = Conditions {
            if_none_match: vec![b"*"],
            ..Conditions::default()
        };
        let put = Method::Other("PUT".to_owned());
        assert_eq!(evaluate(&put, &conditions, &current), Verdict::PreconditionFailed);
        assert_eq!(
            evaluate(&Method::Head, &conditions, &current),
            Verdict::NotModified
        );
    }

    #[test]
    fn if_modified_since_alone_compares_whole_seconds() {
        let (_, modified, _) = file();
        let cases = [
            (modified, Verdict::NotModified),
            (modified + Duration::from_secs(60), Verdict::NotModified),
            (modified - Duration::from_secs(1), SEND),
        ];
        for (since, want) in cases {
            let since = date(since);
            let conditions = Conditions {
                if_modified_since: Some(&since),
                ..Conditions::default()
            };
            assert_eq!(get(conditions), want);
        }
        let conditions = Conditions {
            if_modified_since: Some(b"yesterday"),
            ..Conditions::default()
        };
        assert_eq!(get(conditions), SEND, "an invalid date is ignored");
    }

    #[test]
    fn if_match_mismatch_fails_even_with_a_matching_if_none_match() {
        let (tag, ..) = file();
        let conditions = Conditions {
            if_match: vec![b"\"nope\""],
            if_none_match: vec![tag.as_bytes()],
            ..Conditions::default()
        };
        assert_eq!(get(conditions), Verdict::PreconditionFailed);
    }

    #[test]
    fn if_match_needs_a_strong_match_or_a_star() {
        let (tag, ..) = file();
        let weak = format!("W/{tag}");
        let list = format!("\"x\", {tag}");
        let cases = [
            (tag.as_str(), SEND),
            ("*", SEND),
            (list.as_str(), SEND),
            (weak.as_str(), Verdict::PreconditionFailed),
            ("\"nope\"", Verdict::PreconditionFailed),
            ("garbage", Verdict::PreconditionFailed),
            ("", Verdict::PreconditionFailed),
        ];
        for (value, want) in cases {
            let conditions = Conditions {
                if_match: vec![value.as_bytes()],
                ..Conditions::default()
            };
            assert_eq!(get(conditions), want, "If-Match: {value}");
        }
    }

    #[test]
    fn if_match_that_holds_makes_if_unmodified_since_ignored() {
        let old = date(UNIX_EPOCH + Duration::from_secs(1_000));
        let conditions = Conditions {
            if_match: vec![b"*"],
            if_unmodified_since: Some(&old),
            ..Conditions::default()
        };
        assert_eq!(get(conditions), SEND);
    }

    #[test]
    fn if_unmodified_since_older_than_the_file_fails() {
        let (_, modified, _) = file();
        let cases = [
            (modified - Duration::from_secs(1), Verdict::PreconditionFailed),
            (modified, SEND),
            (modified + Duration::from_secs(1), SEND),
        ];
        for (since, want) in cases {
            let since = date(since);
            let conditions = Conditions {
                if_unmodified_since: Some(&since),
                ..Conditions::default()
            };
            assert_eq!(get(conditions), want);
        }
        let conditions = Conditions {
            if_unmodified_since: Some(b"not a date"),
            ..Conditions::default()
        };
        assert_eq!(get(conditions), SEND, "an invalid date is ignored");
    }

    #[test]
    fn if_range_needs_a_strong_tag_or_the_exact_strong_date() {
        let (tag, modified, _) = file();
        let same = date(modified);
        let later = date(modified + Duration::from_secs(1));
        let weak = format!("W/{tag}");
        let listed = format!("{tag},");
        let cases: [(&[u8], Verdict); 9] = [
            (tag.as_bytes(), RANGE),
            (listed.as_bytes(), SEND),
            (b"\"6553f0ff-c\"", SEND),
            (weak.as_bytes(), SEND),
            (&same, RANGE),
            (&later, SEND),
            (b"*", SEND),
            (b"garbage", SEND),
            (b"\"a\", \"b\"", SEND),
        ];
        for (validator, want) in cases {
            let conditions = Conditions {
                if_range: Some(validator),
                has_range: true,
                ..Conditions::default()
            };
            assert_eq!(get(conditions), want, "{}", String::from_utf8_lossy(validator));
        }
        let conditions = Conditions {
            has_range: true,
            ..Conditions::default()
        };
        assert_eq!(get(conditions), RANGE, "a Range without If-Range");
        let conditions = Conditions {
            if_range: Some(tag.as_bytes()),
            ..Conditions::default()
        };
        assert_eq!(get(conditions), SEND, "an If-Range without Range");
    }

    #[test]
    fn if_range_date_of_a_file_modified_within_the_last_second_is_weak() {
        let (tag, modified, _) = file();
        let same = date(modified);
        let fresh = Validators {
            etag: &tag,
            modified: Some(modified),
            now: modified + Duration::from_millis(500),
        };
        assert!(!if_range_holds(&same, &fresh));
        assert!(if_range_holds(tag.as_bytes(), &fresh), "a tag still holds");
    }

    #[test]
    fn entity_tag_lists_parse_by_the_grammar() {
        let tag = |weak, opaque: &'static [u8]| Tag { weak, opaque };
        assert_eq!(parse_list(b" * "), Some(List::Any));
        assert_eq!(
            parse_list(b"\"a\", W/\"b\" ,\t\"c,d\""),
            Some(List::Tags(vec![
                tag(false, b"\"a\""),
                tag(true, b"\"b\""),
                tag(false, b"\"c,d\"")
            ]))
        );
        assert_eq!(
            parse_list(b", ,\"\","),
            Some(List::Tags(vec![tag(false, b"\"\"")]))
        );
        for bad in [
            &b""[..],
            b",",
            b"a",
            b"\"a",
            b"\"a\"b",
            b"w/\"a\"",
            b"W/ \"a\"",
            b"\"a b\"",
            b"\"a\" \"b\"",
            b"*, \"a\"",
            b"\"\x7f\"",
            b"W/",
            b"\"",
        ] {
            assert_eq!(parse_list(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn from_request_gathers_every_line_of_list_fields() {
        use crate::protocols::http::request::{parse_request, Parse};
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"a\"\r\nif-none-match: \"b\"\r\n\
                    If-Match: *\r\nRange: bytes=0-1\r\nIf-Range: \"a\"\r\n\r\n";
        let Ok(Parse::Complete(req)) = parse_request(raw) else {
            panic!("a complete request");
        };
        let conditions = Conditions::from_request(&req);
        assert_eq!(conditions.if_none_match, vec![&b"\"a\""[..], b"\"b\""]);
        assert_eq!(conditions.if_match, vec![&b"*"[..]]);
        assert_eq!(conditions.if_range, Some(&b"\"a\""[..]));
        assert!(conditions.has_range);
        assert_eq!(conditions.if_modified_since, None);
    }
}
