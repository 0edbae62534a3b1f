//! Clients of the chat example server, shared by its test files: a TCP
//! member and a UDP member that read whole lines, with timeouts.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use super::{connect, ServerProcess, STEP};

/// Starts the chat example on a `:0` TCP port, with `extra` flags (each
/// `--udp` among them is one more announce line to wait for).
#[track_caller]
pub fn chat(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--tcp", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let announces = 1 + extra.iter().filter(|a| **a == "--udp").count();
    ServerProcess::start("chat", &args, announces)
}

/// Runs each case, a `fn(threads: usize)`, at one and at two threads: as
/// `one_thread::CASE` and `two_threads::CASE`.
#[allow(unused_macros)]
macro_rules! at_1_and_2_threads {
    ($($name:ident),* $(,)?) => {
        mod one_thread {
            $(#[test] fn $name() { super::$name(1) })*
        }
        mod two_threads {
            $(#[test] fn $name() { super::$name(2) })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use at_1_and_2_threads;

/// A TCP member that reads whole lines.
pub struct Member {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
    pub nick: String,
}

impl Member {
    /// Connects to the server's TCP address and reads its welcome.
    #[track_caller]
    pub fn join(server: &ServerProcess) -> Member {
        Member::join_at(server.socket_addr("tcp"))
    }

    /// Connects to `addr` and reads its welcome.
    #[track_caller]
    pub fn join_at(addr: SocketAddr) -> Member {
        let stream = connect(addr);
        let nick = stream.local_addr().expect("addr").to_string();
        let mut member = Member {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
            nick,
        };
        // The nick is the ip:port, made unique by the room (`#N`) if a
        // datagram member holds the same one (a UDP port equal to this TCP
        // one).
        let welcome = format!("* welcome {}", member.nick);
        let line = member.line();
        let suffix = line
            .strip_prefix(&welcome)
            .unwrap_or_else(|| panic!("{line:?} is not {welcome:?}"));
        assert!(
            suffix.is_empty() || suffix.strip_prefix('#').is_some_and(|n| n.parse::<u32>().is_ok()),
            "{line:?} is not {welcome:?}"
        );
        member.nick.push_str(suffix);
        member
    }

    /// Sends `line` and its newline.
    #[track_caller]
    pub fn say(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).expect("write");
        self.writer.write_all(b"\n").expect("write");
    }

    /// Sends `lines` in one write, each with its newline.
    #[track_caller]
    pub fn say_all(&mut self, lines: &[String]) {
        let mut data = String::new();
        for line in lines {
            data.push_str(line);
            data.push('\n');
        }
        self.writer.write_all(data.as_bytes()).expect("write");
    }

    /// The next line, without its newline.
    #[track_caller]
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read line");
        assert!(n > 0, "connection closed while a line was expected");
        line.trim_end_matches('\n').to_string()
    }

    /// Asserts the next line is `want`.
    #[track_caller]
    pub fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want);
    }

    /// Asserts nothing arrives within a short wait.
    #[track_caller]
    pub fn expect_silence(&mut self) {
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?} {line:?}"),
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(STEP))
            .expect("timeout");
    }

    /// Reads until the server closes; returns the lines seen meanwhile.
    #[track_caller]
    pub fn until_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return lines,
                Ok(_) => lines.push(line.trim_end_matches('\n').to_string()),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return lines,
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

/// A UDP peer of the room, reading one datagram per line.
pub struct Datagram {
    pub socket: UdpSocket,
    pub server: SocketAddr,
    pub nick: String,
}

impl Datagram {
    /// A socket bound at `at`, aimed at the server's UDP address; `None`
    /// if `at` cannot be bound.
    #[track_caller]
    pub fn bind(server: &ServerProcess, at: &str) -> Option<Datagram> {
        let socket = UdpSocket::bind(at).ok()?;
        socket.set_read_timeout(Some(STEP)).expect("timeout");
        let nick = socket.local_addr().expect("addr").to_string();
        Some(Datagram {
            socket,
            server: server.socket_addr("udp"),
            nick,
        })
    }

    /// A stranger on a fresh loopback port.
    #[track_caller]
    pub fn new(server: &ServerProcess) -> Datagram {
        Datagram::bind(server, "127.0.0.1:0").expect("bind")
    }

    /// A member: greeted by `hello`, confirmed by `/who`, whose answer
    /// (one datagram, in a small room) is read. Each present member of the
    /// room gets `* NICK joined` meanwhile, which the caller reads.
    #[track_caller]
    pub fn join(server: &ServerProcess) -> Datagram {
        let member = Datagram::new(server);
        member.say("hello");
        assert_eq!(member.line(), format!("* welcome {}", member.nick));
        member.say("/who");
        let online = member.line();
        assert!(online.starts_with("* online: "), "{online:?}");
        member
    }

    /// Sends `line` as one datagram.
    #[track_caller]
    pub fn say(&self, line: &str) {
        self.send(line.as_bytes());
    }

    /// Sends `data` as one datagram.
    #[track_caller]
    pub fn send(&self, data: &[u8]) {
        self.socket.send_to(data, self.server).expect("send");
    }

    /// The next datagram, as text.
    #[track_caller]
    pub fn line(&self) -> String {
        let mut buf = vec![0; 65536];
        let (n, _) = self.socket.recv_from(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Asserts no datagram arrives within a short wait.
    #[track_caller]
    pub fn expect_silence(&self) {
        self.socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = vec![0; 65536];
        match self.socket.recv_from(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok((n, _)) => panic!("expected silence, got {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => panic!("recv: {e}"),
        }
        self.socket.set_read_timeout(Some(STEP)).expect("timeout");
    }
}
