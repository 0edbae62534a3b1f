//! What a chat line means: a pure function from a line to a [`Command`],
//! and the nick rule.

/// One line from a member.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Plain text for the other members.
    Say(&'a str),
    /// `/nick NAME`: rename (NAME not yet validated).
    Nick(&'a str),
    /// `/who`: list the members.
    Who,
    /// `/quit`: leave.
    Quit,
    /// A line starting with `/` that is no known command.
    Unknown(&'a str),
}

/// Longest nick, in bytes.
pub const MAX_NICK: usize = 32;

/// Parses one line (without its line ending).
pub fn parse(line: &str) -> Command<'_> {
    let Some(rest) = line.strip_prefix('/') else {
        return Command::Say(line);
    };
    let (word, arg) = match rest.split_once(' ') {
        Some((word, arg)) => (word, arg.trim()),
        None => (rest, ""),
    };
    match (word, arg) {
        ("nick", name) => Command::Nick(name),
        ("who", "") => Command::Who,
        ("quit", "") => Command::Quit,
        _ => Command::Unknown(word),
    }
}

/// Whether `name` is a valid nick: 1 to 32 of `A-Z a-z 0-9 _ -`.
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
    }

    #[test]
    fn commands_are_recognised() {
        assert_eq!(parse("/nick alice"), Command::Nick("alice"));
        assert_eq!(parse("/nick  bob "), Command::Nick("bob"));
        assert_eq!(parse("/nick"), Command::Nick(""));
        assert_eq!(parse("/who"), Command::Who);
        assert_eq!(parse("/quit"), Command::Quit);
    }

    #[test]
    fn unknown_commands_and_stray_arguments_are_unknown() {
        assert_eq!(parse("/me waves"), Command::Unknown("me"));
        assert_eq!(parse("/who am i"), Command::Unknown("who"));
        assert_eq!(parse("/"), Command::Unknown(""));
    }

    #[test]
    fn nick_rule() {
        assert!(is_valid_nick("a"));
        assert!(is_valid_nick("Alice_99-x"));
        assert!(is_valid_nick(&"n".repeat(32)));
        assert!(!is_valid_nick(""));
        assert!(!is_valid_nick(&"n".repeat(33)));
        assert!(!is_valid_nick("has space"));
        assert!(!is_valid_nick("dot.ted"));
        assert!(!is_valid_nick("naïve"));
        assert!(!is_valid_nick("127.0.0.1:5000"));
    }
}
