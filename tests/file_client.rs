//! The file_client example, from the outside (docs/programs.md: file_client):
//! complete downloads land under their final name, refused and failed ones
//! leave no file at all.
//!
//! What the plain protocol lets a client detect: a reset or a read error
//! mid-file (tested here), a refusal (`no_file`), a server that cannot be
//! reached. What it cannot: it has no length header, so a server that
//! closes *normally* in the middle of a file is indistinguishable from a
//! shorter file, and a file whose content is exactly `no_file` reads as a
//! refusal. The server resets a stalled download, one cut by the
//! shutdown deadline and one whose file shrinks while it is sent (the
//! core resets on a write error), so those are detected.
mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("evloop-client-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Dir(dir)
    }

    /// Names in the directory, to prove nothing (not even a temp file) is left.
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn client(addr: &str, name: &str, output: &Path) -> Output {
    Command::new(example_path("file_client"))
        .args([addr, name, "-o", output.to_str().expect("utf-8")])
        .output()
        .expect("run file_client")
}

#[test]
fn download_is_saved_whole_and_refusal_leaves_no_file() {
    let root = Dir::new("root");
    let data = pattern(5 * 1024 * 1024 + 3, 11);
    std::fs::write(root.0.join("data.bin"), &data).expect("file");
    let server = ServerProcess::start(
        "file_server",
        &["--tcp", "127.0.0.1:0", "--root", root.0.to_str().expect("utf-8")],
        1,
    );
    let out_dir = Dir::new("out");
    let addr = server.addr("tcp");

    let saved = client(&addr, "data.bin", &out_dir.0.join("copy.bin"));
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    assert!(std::fs::read(out_dir.0.join("copy.bin")).expect("saved") == data);

    let missing = client(&addr, "nope.txt", &out_dir.0.join("nope.txt"));
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim_end(),
        "not found: nope.txt"
    );
    assert_eq!(out_dir.entries(), ["copy.bin"], "no file for a refused download");
}

#[test]
fn connection_reset_mid_download_fails_and_leaves_no_file() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut name = [0; 64];
        let _ = stream.read(&mut name).expect("name");
        stream.write_all(&pattern(100_000, 12)).expect("part of a file");
        // SO_LINGER 0: the close sends a reset, as a crashing server would.
        reset_on_close(&stream);
    });
    let out_dir = Dir::new("reset");
    let failed = client(&addr, "data.bin", &out_dir.0.join("data.bin"));
    server.join().expect("fake server");
    assert!(!failed.status.success());
    assert_eq!(out_dir.entries(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn a_reset_before_any_byte_is_a_failure_not_a_missing_file() {
    // What a server out of descriptors does (security issue, item 4): it
    // reads the name, cannot open the file, and resets.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut name = [0; 64];
        let n = stream.read(&mut name).expect("name");
        reset_on_close(&stream);
        name[..n].to_vec()
    });
    let out_dir = Dir::new("reset-at-once");
    let failed = client(&addr, "data.bin", &out_dir.0.join("data.bin"));
    let first_read = server.join().expect("fake server");
    assert_eq!(
        first_read, b"data.bin\n",
        "the name and its newline in one segment"
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("not found"), "{stderr}");
    assert!(stderr.contains("download of data.bin failed"), "{stderr}");
    assert_eq!(out_dir.entries(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn default_output_is_the_base_name_in_the_current_directory() {
    let root = Dir::new("base-root");
    std::fs::create_dir_all(root.0.join("sub")).expect("sub");
    std::fs::write(root.0.join("sub/data.txt"), b"some data\n").expect("file");
    let server = ServerProcess::start(
        "file_server",
        &["--tcp", "127.0.0.1:0", "--root", root.0.to_str().expect("utf-8")],
        1,
    );
    let cwd = Dir::new("base-cwd");
    let out = Command::new(example_path("file_client"))
        .args([&server.addr("tcp"), "sub/data.txt"])
        .current_dir(&cwd.0)
        .output()
        .expect("run file_client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "quiet when not a terminal"
    );
    assert_eq!(cwd.entries(), ["data.txt"]);
    assert_eq!(
        std::fs::read(cwd.0.join("data.txt")).expect("saved"),
        b"some data\n"
    );
}

#[test]
fn unreachable_server_fails_and_leaves_no_file() {
    // A port that was just free: nothing listens there.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let out_dir = Dir::new("refused");
    let failed = client(&addr, "data.bin", &out_dir.0.join("data.bin"));
    assert!(!failed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&failed.stderr).trim_end().lines().count(),
        1
    );
    assert_eq!(out_dir.entries(), Vec::<String>::new());
}

#[test]
fn content_that_only_starts_like_no_file_is_a_file() {
    let root = Dir::new("prefix-root");
    std::fs::write(root.0.join("notes.txt"), b"no_file, but more").expect("file");
    let server = ServerProcess::start(
        "file_server",
        &["--tcp", "127.0.0.1:0", "--root", root.0.to_str().expect("utf-8")],
        1,
    );
    let out_dir = Dir::new("prefix-out");
    let saved = client(&server.addr("tcp"), "notes.txt", &out_dir.0.join("notes.txt"));
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    assert_eq!(
        std::fs::read(out_dir.0.join("notes.txt")).expect("saved"),
        b"no_file, but more"
    );
}

#[test]
fn progress_shows_on_a_terminal_and_not_in_a_pipe() {
    let root = Dir::new("progress-root");
    let data = pattern(3 * 1024 * 1024, 13);
    std::fs::write(root.0.join("data.bin"), &data).expect("file");
    let server = ServerProcess::start(
        "file_server",
        &["--tcp", "127.0.0.1:0", "--root", root.0.to_str().expect("utf-8")],
        1,
    );
    let out_dir = Dir::new("progress-out");
    let addr = server.addr("tcp");

    // In a pipe: nothing on stderr for a download that succeeds.
    let piped = client(&addr, "data.bin", &out_dir.0.join("piped.bin"));
    assert!(piped.status.success());
    assert!(
        piped.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );

    // On a terminal (a pseudo-terminal from util-linux's `script`): a
    // progress line with bytes and a rate, then where the file went.
    let output = out_dir.0.join("tty.bin");
    let command = format!(
        "{} {addr} data.bin -o {}",
        example_path("file_client").display(),
        output.display()
    );
    let tty = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script(1)");
    assert!(tty.status.success(), "{}", String::from_utf8_lossy(&tty.stderr));
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert!(
        screen.contains(" bytes, ") && screen.contains(" MiB/s"),
        "{screen:?}"
    );
    assert!(screen.contains("saved "), "{screen:?}");
    assert!(std::fs::read(&output).expect("saved") == data);
}
