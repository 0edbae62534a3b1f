//! The chat command parser and the nick rule against their docs.
//!
//! The module `evloop::protocols::chat::command` is private; its items are
//! public through the re-exports `evloop::protocols::chat::{parse,
//! is_valid_nick, Command, MAX_NICK}`, which is what is fuzzed here.
//!
//! Input: any bytes, taken as UTF-8 (lossily). Checked for every input:
//! - every line parses, and a line not starting with `/` is `Say` of exactly
//!   that line;
//! - `parse` agrees with a model written from the docs: `/`, a command word
//!   up to the first whitespace, then a trimmed argument; `nick`, `who` and
//!   `quit` are the only words known, case-sensitively;
//! - whatever `parse` returns borrows from the line;
//! - a nick argument, put back after `/nick`, parses to itself;
//! - `is_valid_nick` is exactly "1 to MAX_NICK bytes of `A-Z a-z 0-9 _ -`",
//!   and a peer address (`ip:port`, `[ip6]:port`) is never a valid nick.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use evloop::protocols::chat::{is_valid_nick, parse, Command, MAX_NICK};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    check_parse(&line);
    check_nick(&line);
    // Each whitespace-separated word as a nick, too (a whole line rarely is one).
    for word in line.split_whitespace().take(8) {
        check_nick(word);
    }
    check_peer_addresses(data);
});

/// `parse` as the docs describe it.
fn model(line: &str) -> Command<'_> {
    let Some(rest) = line.strip_prefix('/') else {
        return Command::Say(line);
    };
    let (word, arg) = match rest.char_indices().find(|(_, c)| c.is_whitespace()) {
        Some((at, c)) => (&rest[..at], rest[at + c.len_utf8()..].trim()),
        None => (rest, ""),
    };
    match word {
        "nick" => Command::Nick(arg),
        "who" => Command::Who,
        "quit" => Command::Quit,
        _ => Command::Unknown(word),
    }
}

/// Whether `part` lies inside `whole` (borrows from it); an empty `part`
/// may be any empty string.
fn inside(part: &str, whole: &str) -> bool {
    let (start, end) = (whole.as_ptr() as usize, whole.as_ptr() as usize + whole.len());
    let p = part.as_ptr() as usize;
    part.is_empty() || (start <= p && p + part.len() <= end)
}

/// Whether `rest` is empty or starts with whitespace: the command word ended.
fn word_ends(rest: &str) -> bool {
    rest.chars().next().is_none_or(char::is_whitespace)
}

fn check_parse(line: &str) {
    let got = parse(line);
    assert_eq!(got, model(line), "parse({line:?})");
    match got {
        Command::Say(text) => {
            assert!(!line.starts_with('/'));
            assert_eq!(text, line, "plain text is exactly as sent");
            assert_eq!(text.as_ptr(), line.as_ptr());
        }
        Command::Nick(arg) => {
            let after = line.strip_prefix("/nick").expect("a /nick line");
            assert!(word_ends(after));
            assert_eq!(arg, arg.trim(), "the argument is trimmed");
            assert!(inside(arg, line), "the argument borrows from the line");
            if !arg.is_empty() {
                assert_eq!(parse(&format!("/nick {arg}")), Command::Nick(arg));
                assert_eq!(parse(&format!("/nick\t {arg} \t")), Command::Nick(arg));
            }
        }
        Command::Who => assert!(word_ends(line.strip_prefix("/who").expect("a /who line"))),
        Command::Quit => assert!(word_ends(line.strip_prefix("/quit").expect("a /quit line"))),
        Command::Unknown(word) => {
            assert!(!["nick", "who", "quit"].contains(&word));
            assert!(!word.contains(char::is_whitespace));
            assert!(inside(word, line), "the word borrows from the line");
            let after = line.strip_prefix('/').and_then(|r| r.strip_prefix(word));
            assert!(after.is_some_and(word_ends), "the word is the one after the /");
        }
    }
}

fn check_nick(name: &str) {
    let valid = is_valid_nick(name);
    let expected = (1..=MAX_NICK).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    assert_eq!(valid, expected, "is_valid_nick({name:?})");
    if valid {
        assert!(!name.contains(':'), "a peer address is never a nick");
        assert_eq!(parse(&format!("/nick {name}")), Command::Nick(name));
    }
}

/// A peer address, the nick a member starts with, is never valid.
fn check_peer_addresses(data: &[u8]) {
    let mut bytes = [0u8; 18];
    for (slot, b) in bytes.iter_mut().zip(data) {
        *slot = *b;
    }
    let port = u16::from_be_bytes([bytes[16], bytes[17]]);
    let v4 = Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
    let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[..16]).expect("16 bytes"));
    for addr in [SocketAddr::from((v4, port)), SocketAddr::from((v6, port))] {
        let text = addr.to_string();
        assert!(!is_valid_nick(&text), "peer address {text} is a valid nick");
    }
}
