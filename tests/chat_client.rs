//! The chat_client example against the chat example server: stdin lines go
//! to the room, the room's lines come out on stdout, and the end of stdin
//! ends the client with exit 0 once the server has what was typed.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;

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

#[test]
fn bytes_from_the_server_cannot_drive_the_terminal() {
    // A server (or a member it relays) sending escapes, a bare \r, line
    // separators and C1 controls: each is shown as U+FFFD, and each line
    // still ends in \n.
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = server.local_addr().expect("addr").to_string();
    let mut client = Command::new(example_path("chat_client"))
        .arg(&addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn chat_client");
    let stdin = client.stdin.take().expect("stdin"); // open until the end
    let mut stdout = client.stdout.take().expect("stdout");
    let (tx, shown) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut shown_so_far = Vec::new();
    let mut wait_for = |want: &[u8]| {
        let deadline = std::time::Instant::now() + STEP;
        while !shown_so_far.ends_with(want) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let chunk = shown
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("stdout so far: {:?}", String::from_utf8_lossy(&shown_so_far)));
            shown_so_far.extend_from_slice(&chunk);
        }
        shown_so_far.clone()
    };

    let (mut conn, _) = server.accept().expect("accept");
    let euro = "\u{20ac}".as_bytes();
    let mut first = b"* welcome x\nbob: hi\r* x is now admin\x1b[2J\x1b]0;owned\x07\n".to_vec();
    first.extend_from_slice(b"bob: \0\x0b\x0c\x7f\xc2\x85\xe2\x80\xa8\xe2\x80\xa9\xc2\x9b6n\tok\r\n");
    // A character cut in two, the rest sent once this much is shown.
    first.extend_from_slice(b"price: 5 ");
    first.extend_from_slice(&euro[..1]);
    write_all(&mut conn, &first);
    let r = "\u{fffd}";
    let head = format!(
        "* welcome x\nbob: hi{r}* x is now admin{r}[2J{r}]0;owned{r}\nbob: {r}{r}{r}{r}{r}{r}{r}{r}6n\tok\nprice: 5 "
    );
    wait_for(head.as_bytes());
    write_all(&mut conn, &euro[1..]);
    write_all(&mut conn, b" each\n");
    let all = wait_for(format!("{head}\u{20ac} each\n").as_bytes());
    assert_eq!(
        String::from_utf8(all).expect("utf-8"),
        format!("{head}\u{20ac} each\n")
    );

    drop(conn); // the server closes: the client ends
    let deadline = std::time::Instant::now() + STEP;
    let status = loop {
        if let Some(status) = client.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "chat_client did not exit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    drop(stdin);
}
