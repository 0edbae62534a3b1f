//! The load generator's benchmark modes (tools/loadgen), from the outside:
//! `idle` sees every connection held by the echo example, `download` fetches
//! a file from the file server over the plain protocol and HTTP and catches
//! a wrong length, and `echo --rate` keeps to its schedule.
//!
//! The programs are built on demand (`cargo build`) the first time a test
//! needs them, so `cargo test --test loadgen_modes` alone runs the current
//! code.
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::loadgen::Outcome;
use common::*;

/// The path of the program `name`: the `loadgen` tool or an example,
/// built once per test process with the profile these tests were built
/// with.
fn built(name: &str) -> PathBuf {
    match name {
        "loadgen" => tool_path("loadgen"),
        _ => {
            static BUILD: OnceLock<()> = OnceLock::new();
            BUILD.get_or_init(|| cargo_build(&["--example", "echo", "--example", "file_server"]));
            example_path(name)
        }
    }
}

/// Runs `loadgen ARGS`, bounded in time.
#[track_caller]
fn loadgen(args: &[&str]) -> Outcome {
    built("loadgen");
    common::loadgen::run(args)
}

/// The echo example on TCP.
fn echo_server() -> ServerProcess {
    built("echo");
    ServerProcess::start("echo", &["--tcp", "127.0.0.1:0"], 1)
}

#[test]
fn idle_sees_every_connection_held() {
    let mut server = echo_server();
    let addr = server.addr("tcp");
    let pid = server.child.id().to_string();
    let out = loadgen(&[
        "idle",
        "--tcp",
        &addr,
        "--conns",
        "200",
        "--hold",
        "0.1",
        "--pid",
        &pid,
        "--timeout",
        "30",
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.json, out.stderr);
    assert_eq!(out.field("mode"), "idle");
    assert_eq!(out.field("addr"), addr);
    assert_eq!(out.number("conns"), 200);
    assert_eq!(out.number("accepted"), 200, "{}", out.json);
    assert_eq!(out.field("ok"), "true");
    assert_eq!(out.number("errors"), 0);
    assert!(out.number("rss_before_kib") > 0, "{}", out.json);
    assert!(out.number("rss_after_kib") > 0, "{}", out.json);
    out.real("bytes_per_conn"); // a number, possibly negative
                                // The server lets go of them once loadgen has exited.
    assert!(server.terminate().success());
}

#[test]
fn idle_without_a_server_is_not_ok() {
    let mut server = echo_server();
    let pid = server.child.id().to_string();
    let nobody = std::net::TcpListener::bind(any_port())
        .and_then(|l| l.local_addr())
        .expect("a port")
        .to_string(); // nobody listens there any more
    let out = loadgen(&[
        "idle",
        "--tcp",
        &nobody,
        "--conns",
        "3",
        "--hold",
        "0",
        "--pid",
        &pid,
        "--timeout",
        "10",
    ]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.json, out.stderr);
    assert_eq!(out.field("ok"), "false");
    assert_eq!(out.number("errors"), 3, "{}", out.json);
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
    assert!(server.terminate().success());
}

/// The file server on a plain TCP port and an HTTP port, serving `dir`.
fn file_server(dir: &TempDir) -> ServerProcess {
    built("file_server");
    let root = dir.0.to_str().expect("utf-8 path");
    let args = ["--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--root", root];
    ServerProcess::start("file_server", &args, 2)
}

#[test]
fn download_fetches_whole_files_over_both_protocols() {
    let dir = TempDir::new("loadgen-download");
    let size = 300_000;
    std::fs::write(dir.0.join("file.bin"), pattern(size, 7)).expect("write the file");
    let mut server = file_server(&dir);
    let pid = server.child.id().to_string();
    let expect = size.to_string();
    for (proto, kind) in [("plain", "tcp"), ("http", "http")] {
        let addr = server.addr(kind);
        let out = loadgen(&[
            "download",
            "--tcp",
            &addr,
            "--proto",
            proto,
            "--name",
            "file.bin",
            "--conns",
            "2",
            "--expect-bytes",
            &expect,
            "--duration",
            "1",
            "--pid",
            &pid,
        ]);
        assert_eq!(out.code, Some(0), "{proto}: {}\n{}", out.json, out.stderr);
        assert_eq!(out.field("mode"), "download");
        assert_eq!(out.field("proto"), proto);
        assert_eq!(out.field("addr"), addr);
        assert_eq!(out.field("name"), "file.bin");
        assert_eq!(out.number("conns"), 2);
        assert_eq!(out.number("expect_bytes"), size as u64);
        assert_eq!(out.number("errors"), 0, "{}", out.json);
        assert_eq!(out.number("wrong_length"), 0, "{}", out.json);
        let downloads = out.number("downloads");
        assert!(downloads > 0, "{}", out.json);
        // Every finished download's bytes, and part of those under way.
        let bytes = out.number("bytes");
        assert!(bytes >= downloads * size as u64, "{}", out.json);
        assert!(bytes <= (downloads + 2) * size as u64, "{}", out.json);
        assert!(out.real("gb_s") > 0.0, "{}", out.json);
        assert!(out.real("seconds") >= 1.0, "{}", out.json);
        assert!(out.real("p50_ms") <= out.real("p99_ms"), "{}", out.json);
        assert!(out.has("client_cpu") && out.has("server_cpu"), "{}", out.json);
        assert!(out.real("server_us_per_download") > 0.0, "{}", out.json);
    }
    assert!(server.terminate().success());
}

#[test]
fn download_catches_a_wrong_length_and_a_missing_file() {
    let dir = TempDir::new("loadgen-download-wrong");
    std::fs::write(dir.0.join("file.bin"), pattern(5000, 3)).expect("write the file");
    let mut server = file_server(&dir);
    for (proto, kind) in [("plain", "tcp"), ("http", "http")] {
        let addr = server.addr(kind);
        let run = |name: &str, expect: &str| {
            loadgen(&[
                "download",
                "--tcp",
                &addr,
                "--proto",
                proto,
                "--name",
                name,
                "--conns",
                "1",
                "--expect-bytes",
                expect,
                "--duration",
                "0.2",
            ])
        };
        for expect in ["4999", "5001"] {
            let out = run("file.bin", expect);
            assert_eq!(
                out.code,
                Some(1),
                "{proto} {expect}: {}\n{}",
                out.json,
                out.stderr
            );
            assert_eq!(out.number("downloads"), 0, "{}", out.json);
            assert!(out.number("wrong_length") > 0, "{}", out.json);
            assert_eq!(out.number("errors"), out.number("wrong_length"), "{}", out.json);
        }
        let out = run("missing.bin", "5000");
        assert_eq!(out.code, Some(1), "{proto}: {}\n{}", out.json, out.stderr);
        assert!(out.number("errors") > 0, "{}", out.json);
        assert_eq!(out.number("wrong_length"), 0, "{}", out.json);
        let said = if proto == "plain" { "no_file" } else { "404" };
        assert!(out.stderr.contains(said), "{}", out.stderr);
    }
    assert!(server.terminate().success());
}

#[test]
fn paced_echo_keeps_to_its_schedule() {
    let mut server = echo_server();
    let addr = server.addr("tcp");
    let pid = server.child.id().to_string();
    // 1200 requests at 2000 per second cannot take less than 0.6 s,
    // however fast the server answers.
    let out = loadgen(&[
        "echo",
        "--tcp",
        &addr,
        "--conns",
        "4",
        "--size",
        "64",
        "--depth",
        "2",
        "--rate",
        "2000",
        "--requests",
        "1200",
        "--pid",
        &pid,
        "--timeout",
        "30",
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.json, out.stderr);
    assert_eq!(out.field("mode"), "echo");
    assert_eq!(out.number("rate"), 2000);
    assert_eq!(out.number("requests"), 1200, "{}", out.json);
    assert_eq!(out.number("errors"), 0, "{}", out.json);
    assert_eq!(out.number("wrong_bytes"), 0, "{}", out.json);
    assert!(out.real("seconds") >= 0.599, "{}", out.json);
    assert!(out.real("rps") <= 2002.0, "{}", out.json);
    out.number("late_issues");
    // /proc counts CPU time in 10 ms ticks: a light run may show none.
    assert!(out.real("server_us_per_req") >= 0.0, "{}", out.json);

    // The closed loop says it was not paced, and pacing is not for UDP.
    let out = loadgen(&[
        "echo",
        "--tcp",
        &addr,
        "--conns",
        "1",
        "--size",
        "64",
        "--requests",
        "10",
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.json, out.stderr);
    assert_eq!(out.number("rate"), 0);
    assert!(!out.has("late_issues"), "{}", out.json);
    let out = loadgen(&[
        "echo",
        "--udp",
        &addr,
        "--conns",
        "1",
        "--size",
        "64",
        "--rate",
        "10",
        "--requests",
        "10",
    ]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(server.terminate().success());
}
