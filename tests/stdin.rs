//! `evloop::stdin` from the outside: this test binary runs itself again as
//! a child (the `stdin_child` test, which does nothing unless asked) with
//! stdin a pipe, a regular file of several MiB, a socket, `/dev/null`, or
//! empty. The child checks every line against what was written, in order,
//! and reports one line: lines seen, lines wrong, ends seen, and stdin's
//! `O_NONBLOCK` flag before, during and after.
//!
//! A terminal is tested through `script` (util-linux), which runs the
//! child on a pty of its own; where `script` is missing, that test says so
//! and passes.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use evloop::stdin::{self, StdinHandler};
use evloop::{Context, Reactor};

/// Set in the child's environment: which case it runs.
const CHILD: &str = "EVLOOP_STDIN_TEST_CHILD";

/// The line limit the child registers with; every test line is shorter.
const MAX_LINE: usize = 256;

/// How long a child may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// Line `i` of the input, without its terminator.
fn line(i: usize) -> String {
    format!("{i:08} {}", "abcdefghij".repeat(i % 11))
}

/// `count` lines, alternately ended by `\n` and `\r\n`; the last without
/// a terminator if `open_end`.
fn input(count: usize, open_end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        out.extend_from_slice(line(i).as_bytes());
        if i + 1 == count && open_end {
            break;
        }
        out.extend_from_slice(if i % 2 == 0 { b"\n" } else { b"\r\n" });
    }
    out
}

/// Whether descriptor 0's file description is non-blocking (`None`: not open).
fn stdin_nonblocking() -> Option<bool> {
    // SAFETY: fcntl(F_GETFL) reads a descriptor's flags, no memory of ours.
    let flags = unsafe { libc::fcntl(0, libc::F_GETFL) };
    (flags >= 0).then_some(flags & libc::O_NONBLOCK != 0)
}

/// What the child's handler saw.
#[derive(Default)]
struct Seen {
    lines: usize,
    wrong: usize,
    ends: usize,
}

struct Check(Rc<RefCell<Seen>>);

impl StdinHandler for Check {
    fn on_line(&mut self, _cx: &mut Context<'_>, got: &[u8]) {
        let mut seen = self.0.borrow_mut();
        if got != line(seen.lines).as_bytes() {
            if seen.wrong == 0 {
                eprintln!("line {}: {:?}", seen.lines, String::from_utf8_lossy(got));
            }
            seen.wrong += 1;
        }
        seen.lines += 1;
    }

    fn on_end(&mut self, cx: &mut Context<'_>) {
        self.0.borrow_mut().ends += 1;
        cx.close();
        cx.stop();
    }
}

/// The child: reads its stdin through the library and reports.
#[test]
fn stdin_child() {
    if std::env::var_os(CHILD).is_none() {
        return; // run as an ordinary test: nothing to do
    }
    let before = stdin_nonblocking();
    let mut reactor = Reactor::new().expect("reactor");
    let seen = Rc::new(RefCell::new(Seen::default()));
    let key = stdin::register_lines(&mut reactor, MAX_LINE, Check(Rc::clone(&seen))).expect("register stdin");
    let during = stdin_nonblocking();
    reactor.run().expect("run");
    // `run` returns at the end of the turn that saw the end; the close
    // asked for then has removed the source.
    assert!(!reactor.contains(key), "the source is gone");
    let after = stdin_nonblocking();
    let seen = seen.borrow();
    println!(
        "stdin-child: lines={} wrong={} ends={} nonblocking={before:?}/{during:?}/{after:?}",
        seen.lines, seen.wrong, seen.ends
    );
}

/// The arguments that run only the child's test, with its output shown.
const CHILD_ARGS: [&str; 4] = ["--exact", "stdin_child", "--nocapture", "--test-threads=1"];

/// Runs the child with `stdin`, calling `feed` once it has started;
/// returns its report line.
fn run_child(stdin: Stdio, feed: impl FnOnce(&mut Child)) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let mut command = Command::new(exe);
    command.args(CHILD_ARGS);
    run(command, stdin, feed)
}

/// Runs `command`, the child or what starts it, to its end.
fn run(mut command: Command, stdin: Stdio, feed: impl FnOnce(&mut Child)) -> String {
    let mut child = command
        .env(CHILD, "1")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    feed(&mut child);
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not finish in {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = reader.join().expect("stdout reader");
    assert!(status.success(), "child failed: {status}\n{out}");
    out.lines()
        .find_map(|l| l.split_once("stdin-child: ").map(|(_, report)| report))
        .unwrap_or_else(|| panic!("no report in:\n{out}"))
        .to_string()
}

/// The report of a child that saw `lines` right lines and one end, with
/// stdin's mode `flags` (before/during/after).
fn report(lines: usize, flags: &str) -> String {
    format!("lines={lines} wrong=0 ends=1 nonblocking={flags}")
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn with(name: &str, data: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("evloop_stdin_{}_{name}", std::process::id()));
        std::fs::write(&path, data).expect("write the input file");
        TempFile(path)
    }

    fn open(&self) -> Stdio {
        Stdio::from(std::fs::File::open(&self.0).expect("open the input file"))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Several MiB: many reads, and many turns of the loop.
const MANY: usize = 60_000;

#[test]
fn a_pipe_delivers_every_line_in_order_then_the_end() {
    let data = input(MANY, false);
    assert!(data.len() > 3 << 20);
    let got = run_child(Stdio::piped(), |child| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(&data).expect("write to the child");
        // Dropped: the end of input.
    });
    // On Linux the pipe is reopened: the shared description never changes.
    assert_eq!(got, report(MANY, "Some(false)/Some(false)/Some(false)"));
}

#[test]
fn a_pipe_whose_last_line_has_no_newline_delivers_it() {
    let data = input(10, true);
    let got = run_child(Stdio::piped(), |child| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(&data).expect("write to the child");
    });
    assert_eq!(got, report(10, "Some(false)/Some(false)/Some(false)"));
}

#[test]
fn a_regular_file_of_several_mib_delivers_every_line_in_order_then_the_end() {
    let data = input(MANY, true);
    assert!(data.len() > 3 << 20);
    let file = TempFile::with("large", &data);
    let got = run_child(file.open(), |_| {});
    assert_eq!(got, report(MANY, "Some(false)/Some(false)/Some(false)"));
}

#[test]
fn a_socket_is_made_non_blocking_and_put_back() {
    let (mut ours, theirs) = UnixStream::pair().expect("socket pair");
    let data = input(1000, false);
    let got = run_child(Stdio::from(OwnedFd::from(theirs)), |_| {
        ours.write_all(&data).expect("write to the child");
        ours.shutdown(std::net::Shutdown::Write).expect("end of input");
    });
    assert_eq!(got, report(1000, "Some(false)/Some(true)/Some(false)"));
}

#[test]
fn dev_null_is_an_immediate_end() {
    let got = run_child(Stdio::null(), |_| {});
    assert_eq!(got, report(0, "Some(false)/Some(false)/Some(false)"));
}

#[test]
fn an_empty_file_is_an_immediate_end() {
    let file = TempFile::with("empty", b"");
    let got = run_child(file.open(), |_| {});
    assert_eq!(got, report(0, "Some(false)/Some(false)/Some(false)"));
}

#[test]
fn a_pipe_closed_at_once_is_an_immediate_end() {
    let got = run_child(Stdio::piped(), |child| drop(child.stdin.take()));
    assert_eq!(got, report(0, "Some(false)/Some(false)/Some(false)"));
}

#[test]
fn a_terminal_delivers_every_line_then_the_end_and_stays_blocking() {
    let exe = std::env::current_exe().expect("test binary");
    let exe = exe.to_str().expect("a UTF-8 path");
    assert!(!exe.contains('\''), "a path the shell can quote");
    let mut script = Command::new("script");
    // -q: no banner; -e: the child's status; -c: the command, on a pty.
    script.args(["-qec", &format!("'{exe}' {}", CHILD_ARGS.join(" ")), "/dev/null"]);
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("no `script` here: the terminal case is not tested");
        return;
    }
    // A terminal turns `\r` into `\n` (ICRNL): plain `\n` lines, then
    // Ctrl-D at the start of a line, the terminal's end of input.
    let mut typed = Vec::new();
    for i in 0..200 {
        typed.extend_from_slice(line(i).as_bytes());
        typed.push(b'\n');
    }
    typed.push(0x04);
    let got = run(script, Stdio::piped(), |child| {
        let keyboard = child.stdin.as_mut().expect("script's stdin");
        keyboard.write_all(&typed).expect("type");
        // Left open until `script` ends: its end would hang the pty up.
    });
    // Reopened: the terminal, shared with stdout and the shell, is never
    // made non-blocking.
    assert_eq!(got.trim_end(), report(200, "Some(false)/Some(false)/Some(false)"));
}
