//! The kv example server, from the outside (its protocol is in the docs of
//! `examples/kv.rs`): round trips, framing however the bytes are split,
//! a map shared by every client, the limits, the idle timeout, pipelining,
//! and the load generator's kv mode against it.
mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The kv example on a free TCP port, with `args` added.
#[track_caller]
fn kv_server(args: &[&str]) -> ServerProcess {
    let mut all = vec!["--tcp", "127.0.0.1:0"];
    all.extend_from_slice(args);
    ServerProcess::start("kv", &all, 1)
}

/// A frame: the body's length (4 bytes, big-endian), then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A request frame: the command byte, the key's length (2 bytes,
/// big-endian), the key, then the value (SET only).
fn request(command: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut body = vec![command];
    body.extend_from_slice(&(key.len() as u16).to_be_bytes());
    body.extend_from_slice(key);
    body.extend_from_slice(value);
    frame(&body)
}

fn set(key: &[u8], value: &[u8]) -> Vec<u8> {
    request(b'S', key, value)
}

fn get(key: &[u8]) -> Vec<u8> {
    request(b'G', key, b"")
}

fn del(key: &[u8]) -> Vec<u8> {
    request(b'D', key, b"")
}

/// SETX: a SET whose key expires `ttl` after it (milliseconds, 4 bytes
/// big-endian, between the key and the value).
fn set_for(key: &[u8], ttl: Duration, value: &[u8]) -> Vec<u8> {
    let ms = u32::try_from(ttl.as_millis()).expect("a TTL that fits");
    request(b'X', key, &[&ms.to_be_bytes()[..], value].concat())
}

/// Reads one reply frame and returns its body.
#[track_caller]
fn read_reply(stream: &mut impl Read) -> Vec<u8> {
    let header = read_exact(stream, 4);
    let len = u32::from_be_bytes(header.try_into().expect("4 bytes"));
    read_exact(stream, len as usize)
}

/// Sends `frames` in one write and returns the body of each reply.
#[track_caller]
fn exchange(stream: &mut TcpStream, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    write_all(stream, &frames.concat());
    frames.iter().map(|_| read_reply(stream)).collect()
}

/// Reads until the server closes; fails if it sends anything first.
#[track_caller]
fn expect_closed(stream: &mut TcpStream) {
    assert_eq!(
        read_to_end(stream),
        b"",
        "the server closed without another reply"
    );
}

#[test]
fn set_get_del_round_trips() {
    let mut server = kv_server(&[]);
    let mut client = connect(server.socket_addr("tcp"));
    let replies = exchange(
        &mut client,
        &[
            get(b"colour"),
            set(b"colour", b"blue"),
            get(b"colour"),
            set(b"colour", b"green, a longer value"),
            get(b"colour"),
            del(b"colour"),
            get(b"colour"),
            del(b"colour"),
            set(b"", b"the empty key is a key"),
            get(b""),
            set(b"empty value", b""),
            get(b"empty value"),
        ],
    );
    let want: [&[u8]; 12] = [
        b"N",
        b"O",
        b"Vblue",
        b"O",
        b"Vgreen, a longer value",
        b"O",
        b"N",
        b"N",
        b"O",
        b"Vthe empty key is a key",
        b"O",
        b"V",
    ];
    assert_eq!(replies, want);
    // Any bytes at all, in keys and values.
    let binary: Vec<u8> = (0..=255).collect();
    let replies = exchange(&mut client, &[set(&binary, &binary), get(&binary)]);
    assert_eq!(replies[1][1..], binary[..]);
    // SIGTERM: the server closes the connection, then exits 0.
    server.signal(libc::SIGTERM);
    expect_closed(&mut client);
    drop(client);
    assert!(server.wait().success());
}

#[test]
fn frames_split_byte_by_byte_are_answered_like_whole_ones() {
    let mut server = kv_server(&[]);
    let mut client = connect(server.socket_addr("tcp"));
    client.set_nodelay(true).expect("nodelay");
    let bytes = [set(b"split", b"one byte at a time"), get(b"split")].concat();
    for byte in bytes.chunks(1) {
        write_all(&mut client, byte);
    }
    assert_eq!(read_reply(&mut client), b"O");
    assert_eq!(read_reply(&mut client), b"Vone byte at a time");
    drop(client);
    assert!(server.terminate().success());
}

#[test]
fn many_frames_in_one_write_get_one_reply_each() {
    let mut server = kv_server(&[]);
    let mut client = connect(server.socket_addr("tcp"));
    let mut frames = Vec::new();
    for i in 0..100 {
        frames.push(set(
            format!("key {i}").as_bytes(),
            format!("value {i}").as_bytes(),
        ));
    }
    for i in 0..100 {
        frames.push(get(format!("key {i}").as_bytes()));
    }
    let replies = exchange(&mut client, &frames);
    for (i, reply) in replies[100..].iter().enumerate() {
        assert_eq!(reply, format!("Vvalue {i}").as_bytes());
    }
    assert!(replies[..100].iter().all(|r| r == b"O"));
    drop(client);
    assert!(server.terminate().success());
}

#[test]
fn two_clients_share_one_map() {
    let mut server = kv_server(&[]);
    let addr = server.socket_addr("tcp");
    let mut alice = connect(addr);
    let mut bob = connect(addr);
    assert_eq!(exchange(&mut alice, &[set(b"note", b"from alice")]), [b"O"]);
    assert_eq!(exchange(&mut bob, &[get(b"note")]), [b"Vfrom alice"]);
    assert_eq!(exchange(&mut bob, &[del(b"note")]), [b"O"]);
    assert_eq!(exchange(&mut alice, &[get(b"note")]), [b"N"]);
    // A third client, after the first two are gone, sees what they left.
    assert_eq!(exchange(&mut alice, &[set(b"kept", b"yes")]), [b"O"]);
    drop((alice, bob));
    let mut carol = connect(addr);
    assert_eq!(exchange(&mut carol, &[get(b"kept")]), [b"Vyes"]);
    drop(carol);
    assert!(server.terminate().success());
}

#[test]
fn an_oversize_length_gets_err_and_the_connection_is_closed() {
    let mut server = kv_server(&["--max-frame", "16"]);
    let addr = server.socket_addr("tcp");
    let mut client = connect(addr);
    // A body of exactly the limit is fine ...
    let at_limit = set(b"k", b"0123456789ab");
    assert_eq!(at_limit.len(), 4 + 16);
    assert_eq!(exchange(&mut client, &[at_limit]), [b"O"]);
    // ... one byte more is not: ERR as soon as the header is in, before
    // any of the body is sent, then the close.
    write_all(&mut client, &17u32.to_be_bytes());
    let reply = read_reply(&mut client);
    assert_eq!(reply[0], b'E', "{:?}", String::from_utf8_lossy(&reply));
    assert!(String::from_utf8_lossy(&reply).contains("longer than 16"));
    expect_closed(&mut client);
    drop(client);

    // The largest length a header can say: the same, and no panic.
    let mut client = connect(addr);
    write_all(&mut client, &[0xFF; 4]);
    assert_eq!(read_reply(&mut client)[0], b'E');
    expect_closed(&mut client);
    drop(client);
    // The server goes on serving everyone else.
    let mut client = connect(addr);
    assert_eq!(exchange(&mut client, &[get(b"k")]), [b"V0123456789ab"]);
    drop(client);
    assert!(server.terminate().success());
}

#[test]
fn keys_set_with_a_time_to_live_expire_and_others_stay() {
    let mut server = kv_server(&[]);
    let mut client = connect(server.socket_addr("tcp"));
    let ttl = Duration::from_millis(300);
    let set_at = Instant::now();
    let replies = exchange(
        &mut client,
        &[
            set_for(b"brief", ttl, b"soon gone"),
            set_for(b"kept", ttl, b"made permanent"),
            set(b"kept", b"for good"), // a plain SET drops the expiry
            set_for(b"deleted", ttl, b"x"),
            del(b"deleted"),
            get(b"brief"),
            set_for(b"at once", Duration::ZERO, b"x"),
            get(b"at once"),
        ],
    );
    let want: [&[u8]; 8] = [b"O", b"O", b"O", b"O", b"O", b"Vsoon gone", b"O", b"N"];
    assert_eq!(replies, want);
    // The server set the key between `set_at` and now. Asked again until
    // it is gone, within a bounded wait: never gone before its time, never
    // served after it.
    let set_by = Instant::now();
    let deadline = set_by + Duration::from_secs(10);
    loop {
        let asked = Instant::now();
        let reply = exchange(&mut client, &[get(b"brief")]).remove(0);
        if reply == b"N" {
            assert!(set_at.elapsed() >= ttl, "gone before its time");
            break;
        }
        assert!(asked < set_by + ttl, "served {reply:?} after its time");
        assert!(Instant::now() < deadline, "the key never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    let replies = exchange(&mut client, &[get(b"kept"), del(b"deleted"), get(b"deleted")]);
    assert_eq!(replies, [&b"Vfor good"[..], b"N", b"N"]);
    drop(client);
    assert!(server.terminate().success());
}

#[test]
fn malformed_requests_get_err_and_the_connection_goes_on() {
    let mut server = kv_server(&[]);
    let mut client = connect(server.socket_addr("tcp"));
    let replies = exchange(
        &mut client,
        &[
            request(b'Q', b"key", b""),  // an unknown command
            frame(b""),                  // an empty body
            frame(b"G\0"),               // half a key length
            frame(b"G\0\x09short"),      // a key running past the body
            request(b'G', b"key", b"!"), // bytes after a GET's key
            request(b'D', b"key", b"!"), // bytes after a DEL's key
            set(b"still", b"here"),
            get(b"still"),
        ],
    );
    for reply in &replies[..6] {
        assert_eq!(reply[0], b'E', "{:?}", String::from_utf8_lossy(reply));
    }
    assert_eq!(replies[0], b"Eunknown command");
    assert_eq!(replies[6..], [b"O".to_vec(), b"Vhere".to_vec()]);
    drop(client);
    assert!(server.terminate().success());
}

#[test]
fn the_idle_timeout_closes_a_silent_client() {
    let mut server = kv_server(&["--idle-timeout", "0.3"]);
    let addr = server.socket_addr("tcp");
    let started = Instant::now();
    let mut silent = connect(addr);
    // The read blocks (for at most STEP) until the server closes.
    expect_closed(&mut silent);
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );
    drop(silent);

    // Half a frame is not activity: the timer is not pushed back.
    let mut stalled = connect(addr);
    assert_eq!(exchange(&mut stalled, &[set(b"a", b"b")]), [b"O"]);
    write_all(&mut stalled, &get(b"a")[..5]);
    expect_closed(&mut stalled);
    drop(stalled);
    assert!(server.terminate().success());
}

#[test]
fn two_thousand_pipelined_requests_are_answered_in_order() {
    let mut server = kv_server(&[]);
    let mut client = connect(server.socket_addr("tcp"));
    // Every request uses one key, so only answers in order can match.
    let mut frames = Vec::new();
    for i in 0..1000 {
        frames.push(set(b"counter", i.to_string().as_bytes()));
        frames.push(get(b"counter"));
    }
    // Written from another thread while this one reads: neither side
    // waits for the other's buffers to empty.
    let mut writer = client.try_clone().expect("clone");
    let bytes = frames.concat();
    let sending = std::thread::spawn(move || write_all(&mut writer, &bytes));
    for i in 0..1000 {
        assert_eq!(read_reply(&mut client), b"O", "reply {}", 2 * i);
        let want = format!("V{i}");
        assert_eq!(read_reply(&mut client), want.as_bytes(), "reply {}", 2 * i + 1);
    }
    sending.join().expect("writer");
    drop(client);
    assert!(server.terminate().success());
}

#[test]
fn loadgen_kv_completes_its_requests_with_every_reply_checked() {
    let mut server = kv_server(&[]);
    let addr = server.addr("tcp");
    let out = Command::new(tool_path("loadgen"))
        .args(["kv", "--tcp", &addr, "--conns", "4", "--depth", "4"])
        .args(["--requests", "2000", "--keys", "20", "--set-percent", "30"])
        .args(["--timeout", "30"])
        .output()
        .expect("run loadgen");
    let json = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{json}\n{stderr}");
    assert_eq!(json.lines().count(), 1, "{json}");
    for field in [
        "\"mode\":\"kv\"",
        "\"requests\":2000,",
        "\"errors\":0,",
        "\"wrong_replies\":0,",
        "\"timed_out\":false",
    ] {
        assert!(json.contains(field), "{field} in {json}");
    }
    assert!(server.terminate().success());
}

#[test]
fn replies_far_larger_than_the_output_cap_arrive_whole_through_backpressure() {
    let mut server = kv_server(&[]);
    let mut client = connect(server.socket_addr("tcp"));
    let value = pattern(100_000, 7);
    assert_eq!(exchange(&mut client, &[set(b"big", &value)]), [b"O"]);
    // 400 requests in one write ask for 40 MB of replies, more than a
    // connection may queue (16 MiB): the server answers as the client
    // reads, rather than queue them all and be cut off.
    let gets = vec![get(b"big"); 400].concat();
    let mut writer = client.try_clone().expect("clone");
    let sending = std::thread::spawn(move || write_all(&mut writer, &gets));
    for i in 0..400 {
        let reply = read_reply(&mut client);
        assert!(reply[0] == b'V' && reply[1..] == value[..], "reply {i}");
    }
    sending.join().expect("writer");
    drop(client);
    assert!(server.terminate().success());
}
