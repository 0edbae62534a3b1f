//! Peer text made safe to show: text that came from a peer, about to be put
//! in a line for someone else or printed to a terminal, with every
//! character that could drive a terminal or fake a line break replaced.
//!
//! Always true of what [`sanitize`] and [`sanitize_lossy`] return:
//! - it holds no control character but tab: no C0 (`\0` to `\x1f`, so no
//!   `\r`, `\n`, `ESC`, VT or FF), no DEL, no C1 (`\u{80}` to `\u{9f}`, so no
//!   NEL `\u{85}` and no 8-bit CSI or OSC), and neither U+2028 LINE
//!   SEPARATOR nor U+2029 PARAGRAPH SEPARATOR. Each such character becomes
//!   one U+FFFD, so a reader sees that something was there;
//! - everything else is kept as it was, in order;
//! - text with nothing to replace is borrowed, not copied.
//!
//! With no ESC, no `\r` and no line break, a peer's text cannot start an
//! ANSI or OSC escape sequence, move the cursor back over a line, or begin
//! a line of its own (a forged notice, say).

use std::borrow::Cow;

/// The character put in place of each unsafe one: U+FFFD REPLACEMENT
/// CHARACTER, as invalid UTF-8 gets.
pub const REPLACEMENT: char = '\u{FFFD}';

/// Whether `c` is replaced when shown: a control character other than tab
/// (C0, DEL, C1), or U+2028 or U+2029.
///
/// ```
/// use evloop::text::is_unsafe_char;
///
/// assert!(is_unsafe_char('\r'));
/// assert!(is_unsafe_char('\u{1b}')); // ESC
/// assert!(is_unsafe_char('\u{85}')); // NEL
/// assert!(is_unsafe_char('\u{2028}'));
/// assert!(!is_unsafe_char('\t'));
/// assert!(!is_unsafe_char('é'));
/// ```
pub fn is_unsafe_char(c: char) -> bool {
    // `char::is_control` is Unicode's Cc: exactly C0, DEL and C1.
    (c.is_control() && c != '\t') || c == '\u{2028}' || c == '\u{2029}'
}

/// `text` with each unsafe character (see [`is_unsafe_char`]) replaced by
/// [`REPLACEMENT`]; borrowed when there is none.
///
/// ```
/// use evloop::text::sanitize;
/// use std::borrow::Cow;
///
/// assert_eq!(sanitize("hi\r* x is now admin"), "hi\u{fffd}* x is now admin");
/// assert!(matches!(sanitize("plain\ttext"), Cow::Borrowed(_)));
/// ```
pub fn sanitize(text: &str) -> Cow<'_, str> {
    match first_unsafe(text) {
        None => Cow::Borrowed(text),
        Some(at) => Cow::Owned(replace_from(text, at)),
    }
}

/// `bytes` as text: invalid UTF-8 replaced as [`String::from_utf8_lossy`]
/// does, then [`sanitize`]d. Borrowed when the bytes are valid UTF-8 with
/// nothing to replace; otherwise one new string.
///
/// ```
/// use evloop::text::sanitize_lossy;
///
/// assert_eq!(sanitize_lossy(b"caf\xe9 \x1b[2J"), "caf\u{fffd} \u{fffd}[2J");
/// ```
pub fn sanitize_lossy(bytes: &[u8]) -> Cow<'_, str> {
    match String::from_utf8_lossy(bytes) {
        Cow::Borrowed(text) => sanitize(text),
        Cow::Owned(text) => match first_unsafe(&text) {
            None => Cow::Owned(text),
            Some(at) => Cow::Owned(replace_from(&text, at)),
        },
    }
}

/// Splits `bytes` before a UTF-8 character whose last bytes have not come
/// yet: `(ready, unfinished)`, `unfinished` being 0 to 3 bytes. For a
/// printer of a byte stream, which shows `ready` now and keeps
/// `unfinished` for the next read, so a character cut between two reads
/// is not shown as two replacements. Bytes that can never be valid are
/// left in `ready` (to be replaced).
///
/// ```
/// use evloop::text::split_unfinished_char;
///
/// let e_acute = "é".as_bytes(); // [0xc3, 0xa9]
/// assert_eq!(split_unfinished_char(&[b'a', e_acute[0]]), (&b"a"[..], &e_acute[..1]));
/// assert_eq!(split_unfinished_char("aé".as_bytes()), ("aé".as_bytes(), &b""[..]));
/// ```
pub fn split_unfinished_char(bytes: &[u8]) -> (&[u8], &[u8]) {
    // A character is at most 4 bytes: look back over at most 3 for its lead.
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: the lead is further back
        }
        let needed = match byte {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1, // ASCII, or a byte no character starts with
        };
        let at = if needed > back {
            bytes.len() - back
        } else {
            bytes.len()
        };
        return bytes.split_at(at);
    }
    (bytes, &[])
}

/// The byte offset of the first unsafe character of `text`, if any.
///
/// Works on bytes, as the encodings are fixed: C0 and DEL are single bytes,
/// C1 is `C2 80` to `C2 9F`, U+2028 and U+2029 are `E2 80 A8` and
/// `E2 80 A9`. In valid UTF-8 those lead bytes are never continuation
/// bytes, so no false match; ASCII text costs one compare per byte.
fn first_unsafe(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let found = match bytes[i] {
            b'\t' => false,
            0x00..=0x1F | 0x7F => true,
            0xC2 => matches!(bytes.get(i + 1), Some(0x80..=0x9F)),
            0xE2 => bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9)),
            _ => false,
        };
        if found {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `text` with every unsafe character from byte `at` on replaced; `at` is
/// a character boundary.
fn replace_from(text: &str, at: usize) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..at]);
    out.extend(
        text[at..]
            .chars()
            .map(|c| if is_unsafe_char(c) { REPLACEMENT } else { c }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character up to U+2FFF (all the unsafe ones are below U+2030),
    /// and a few beyond.
    fn chars() -> impl Iterator<Item = char> {
        (0u32..0x3000)
            .chain([0xFEFF, 0xFFFD, 0x1_F600, 0x10_FFFF])
            .filter_map(char::from_u32)
    }

    #[test]
    fn every_control_but_tab_and_both_separators_are_replaced() {
        for c in chars() {
            let text = format!("a{c}b");
            let want = if is_unsafe_char(c) {
                "a\u{fffd}b".to_owned()
            } else {
                text.clone()
            };
            assert_eq!(sanitize(&text), want, "U+{:04X}", c as u32);
        }
        let unsafe_count = (0u32..0x11_0000)
            .filter_map(char::from_u32)
            .filter(|c| is_unsafe_char(*c))
            .count();
        // 32 C0 - tab + DEL + 32 C1 + 2 separators.
        assert_eq!(unsafe_count, 31 + 1 + 32 + 2);
    }

    #[test]
    fn the_byte_scan_agrees_with_the_char_rule() {
        for c in chars() {
            let text = format!("xy{c}");
            let want = text
                .char_indices()
                .find(|(_, c)| is_unsafe_char(*c))
                .map(|(i, _)| i);
            assert_eq!(first_unsafe(&text), want, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn text_with_nothing_to_replace_is_borrowed() {
        for text in [
            "",
            "hello",
            "tab\there",
            "naïve café ✓ 😀",
            "\u{2027}\u{202a}\u{a0}",
        ] {
            assert!(
                matches!(sanitize(text), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
            assert!(matches!(sanitize_lossy(text.as_bytes()), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn forged_lines_and_escapes_are_defused() {
        let attack =
            "hi\r* 127.0.0.1:1 is now admin\x1b[2J\x1b]0;title\x07\u{85}\u{2028}\u{2029}\0\x0b\x0c\x7f\u{9b}";
        let got = sanitize(attack);
        assert_eq!(
            got,
            "hi\u{fffd}* 127.0.0.1:1 is now admin\u{fffd}[2J\u{fffd}]0;title\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}"
        );
        assert!(!got.chars().any(is_unsafe_char));
    }

    #[test]
    fn lossy_replaces_invalid_utf8_and_unsafe_chars_alike() {
        assert_eq!(sanitize_lossy(b"caf\xe9"), "caf\u{fffd}");
        assert_eq!(sanitize_lossy(b"caf\xe9\r\n"), "caf\u{fffd}\u{fffd}\u{fffd}");
        // A C1 control written as raw bytes is valid UTF-8 for U+0085.
        assert_eq!(sanitize_lossy(b"a\xc2\x85b"), "a\u{fffd}b");
        // A lone 0x85 byte is invalid UTF-8: replaced all the same.
        assert_eq!(sanitize_lossy(b"a\x85b"), "a\u{fffd}b");
    }

    #[test]
    fn an_unfinished_char_is_held_back_and_nothing_else() {
        let euro = "€".as_bytes(); // e2 82 ac
        let face = "😀".as_bytes(); // f0 9f 98 80
        assert_eq!(split_unfinished_char(b""), (&b""[..], &b""[..]));
        assert_eq!(split_unfinished_char(b"abc"), (&b"abc"[..], &b""[..]));
        assert_eq!(split_unfinished_char(&euro[..1]), (&b""[..], &euro[..1]));
        assert_eq!(split_unfinished_char(&euro[..2]), (&b""[..], &euro[..2]));
        assert_eq!(split_unfinished_char(euro), (euro, &b""[..]));
        let mut text = b"x".to_vec();
        text.extend_from_slice(&face[..3]);
        assert_eq!(split_unfinished_char(&text), (&b"x"[..], &face[..3]));
        // Bytes that cannot start a character are not held back.
        assert_eq!(split_unfinished_char(b"a\x80"), (&b"a\x80"[..], &b""[..]));
        assert_eq!(split_unfinished_char(b"a\xff"), (&b"a\xff"[..], &b""[..]));
        assert_eq!(
            split_unfinished_char(b"\x80\x80\x80\x80"),
            (&b"\x80\x80\x80\x80"[..], &b""[..])
        );
    }
}
