//! The chat_client example against the chat example server: stdin lines go
//! to the room, the room's lines come out on stdout, and the end of stdin
//! ends the client with exit 0 once the server has what was typed.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;

#[test]
fn typed_lines_reach_the_room_and_the_room_reaches_stdout() {
    let server = ServerProcess::start("chat", &["--tcp", "127.0.0.1:0"], 1);
    let addr = server.addr("tcp");
    let watcher = connect(server.socket_addr("tcp"));
    let mut watcher = BufReader::new(watcher);
    let mut line = String::new();
    watcher.read_line(&mut line).expect("welcome");

    let mut client = Command::new(example_path("chat_client"))
        .arg(&addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn chat_client");
    let mut stdin = client.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(client.stdout.take().expect("stdout"));
    let mut welcome = String::new();
    stdout.read_line(&mut welcome).expect("welcome line");
    let nick = welcome
        .trim_end()
        .strip_prefix("* welcome ")
        .expect("welcome")
        .to_string();

    line.clear();
    watcher.read_line(&mut line).expect("joined");
    assert_eq!(line.trim_end(), format!("* {nick} joined"));
    writeln!(stdin, "typed in").expect("type");
    stdin.flush().expect("flush");
    line.clear();
    watcher.read_line(&mut line).expect("said");
    assert_eq!(line.trim_end(), format!("{nick}: typed in"));

    write_all(watcher.get_mut(), b"to the client\n");
    let mut shown = String::new();
    stdout.read_line(&mut shown).expect("room line");
    let watcher_nick = watcher.get_ref().local_addr().expect("addr").to_string();
    assert_eq!(shown.trim_end(), format!("{watcher_nick}: to the client"));

    writeln!(stdin, "last line").expect("type");
    drop(stdin); // end of input
    line.clear();
    watcher.read_line(&mut line).expect("said");
    assert_eq!(
        line.trim_end(),
        format!("{nick}: last line"),
        "typed before EOF arrives"
    );
    let status = client.wait().expect("exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn unreachable_server_is_an_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let out = Command::new(example_path("chat_client"))
        .arg(&addr)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));
}

#[test]
fn end_of_stdin_ends_the_client_even_if_the_server_stays_open() {
    // A server that reads everything and never closes: the client must
    // still deliver what was typed and exit, after its short grace.
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = server.local_addr().expect("addr").to_string();
    let mut client = Command::new(example_path("chat_client"))
        .arg(&addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn chat_client");
    let (mut conn, _) = server.accept().expect("accept");
    conn.set_read_timeout(Some(STEP)).expect("timeout");
    let mut stdin = client.stdin.take().expect("stdin");
    stdin.write_all(b"one\ntwo\n").expect("type");
    drop(stdin);
    // The client's FIN follows what was typed.
    assert_eq!(read_to_end(&mut conn), b"one\ntwo\n");
    let deadline = std::time::Instant::now() + STEP;
    let status = loop {
        if let Some(status) = client.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "chat_client did not exit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    drop(conn); // held open until the client had gone
}
