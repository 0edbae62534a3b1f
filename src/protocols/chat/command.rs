//! What a chat line means: [`parse`], a pure function from a line to a
//! [`Command`], and the nick rule, [`is_valid_nick`].
//!
//! Always true: every line parses (there is no parse error); a line that
//! does not start with `/` is plain text, exactly as sent.

/// One line from a member, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Plain text for the other members.
    Say(&'a str),
    /// `/nick NAME`: rename. NAME is not validated yet (see
    /// [`is_valid_nick`]); it is empty if missing.
    Nick(&'a str),
    /// `/who`: list the members.
    Who,
    /// `/quit`: leave.
    Quit,
    /// A line starting with `/` that names no known command: the word after
    /// the `/`.
    Unknown(&'a str),
}

/// Longest nick, in bytes.
pub const MAX_NICK: usize = 32;

/// Parses one line, given without its line end.
///
/// A command is `/` and its name, then optionally whitespace and an
/// argument (trimmed). `/who` and `/quit` ignore an argument, as IRC's
/// `/quit message` does.
///
/// ```
/// use evloop::protocols::chat::{parse, Command};
///
/// assert_eq!(parse("hello"), Command::Say("hello"));
/// assert_eq!(parse("/nick  alice "), Command::Nick("alice"));
/// assert_eq!(parse("/who"), Command::Who);
/// assert_eq!(parse("/dance"), Command::Unknown("dance"));
/// ```
pub fn parse(line: &str) -> Command<'_> {
    let Some(rest) = line.strip_prefix('/') else {
        return Command::Say(line);
    };
    let (word, arg) = match rest.split_once(char::is_whitespace) {
        Some((word, arg)) => (word, arg.trim()),
        None => (rest, ""),
    };
    match word {
        "nick" => Command::Nick(arg),
        "who" => Command::Who,
        "quit" => Command::Quit,
        _ => Command::Unknown(word),
    }
}

/// Whether `name` is a valid nick: 1 to [`MAX_NICK`] of `A-Z a-z 0-9 _ -`.
///
/// A peer address (`127.0.0.1:5000`), the nick a member starts with, is
/// never valid, so no one can take another member's starting nick.
pub fn is_valid_nick(name: &str) -> bool {
    (1..=MAX_NICK).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_are_said_as_they_are() {
        assert_eq!(parse("hello there"), Command::Say("hello there"));
        assert_eq!(parse(""), Command::Say(""));
        assert_eq!(parse(" /nick x"), Command::Say(" /nick x"));
        assert_eq!(parse("  spaced  "), Command::Say("  spaced  "));
    }

    #[test]
    fn commands_are_recognised_with_their_argument_trimmed() {
        assert_eq!(parse("/nick alice"), Command::Nick("alice"));
        assert_eq!(parse("/nick  bob "), Command::Nick("bob"));
        assert_eq!(parse("/nick\tcarol"), Command::Nick("carol"));
        assert_eq!(parse("/who"), Command::Who);
        assert_eq!(parse("/quit"), Command::Quit);
    }

    #[test]
    fn missing_or_spaced_nick_is_passed_on_for_validation() {
        assert_eq!(parse("/nick"), Command::Nick(""));
        assert_eq!(parse("/nick "), Command::Nick(""));
        assert_eq!(parse("/nick two words"), Command::Nick("two words"));
        assert!(!is_valid_nick("two words"));
    }

    #[test]
    fn who_and_quit_ignore_an_argument() {
        assert_eq!(parse("/who am i"), Command::Who);
        assert_eq!(parse("/quit see you"), Command::Quit);
    }

    #[test]
    fn unknown_commands_name_their_word() {
        assert_eq!(parse("/me waves"), Command::Unknown("me"));
        assert_eq!(parse("/nickname x"), Command::Unknown("nickname"));
        assert_eq!(parse("/NICK x"), Command::Unknown("NICK"));
        assert_eq!(parse("/"), Command::Unknown(""));
    }

    #[test]
    fn nick_rule_counts_bytes_and_allows_only_the_set() {
        assert!(is_valid_nick("a"));
        assert!(is_valid_nick("Alice_99-x"));
        assert!(is_valid_nick(&"n".repeat(MAX_NICK)));
        assert!(!is_valid_nick(""));
        assert!(!is_valid_nick(&"n".repeat(MAX_NICK + 1)));
        assert!(!is_valid_nick("has space"));
        assert!(!is_valid_nick("dot.ted"));
        assert!(!is_valid_nick("naïve"));
        assert!(!is_valid_nick("127.0.0.1:5000"));
        assert!(!is_valid_nick("[::1]:5000"));
    }
}
