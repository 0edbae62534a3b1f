//! Running the load generator (tools/loadgen) from a test: one run, bounded
//! in time, and its one JSON line read field by field.
#![allow(dead_code)] // each test file uses a different part of this module

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::tool_path;

/// The longest any one loadgen run may take in a test (each run's own
/// bounds, such as `--timeout`, are shorter).
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// What one loadgen run left behind.
pub struct Outcome {
    pub code: Option<i32>,
    /// The one JSON line on stdout (empty if there was none).
    pub json: String,
    pub stderr: String,
}

impl Outcome {
    /// A field of the JSON line, as its text (strings without quotes).
    #[track_caller]
    pub fn field(&self, key: &str) -> &str {
        let pattern = format!("\"{key}\":");
        let at = self
            .json
            .find(&pattern)
            .unwrap_or_else(|| panic!("no {key} in {}", self.json));
        let rest = &self.json[at + pattern.len()..];
        if let Some(text) = rest.strip_prefix('"') {
            &text[..text.find('"').expect("closing quote")]
        } else {
            &rest[..rest.find([',', '}']).expect("end of value")]
        }
    }

    /// A whole-number field.
    #[track_caller]
    pub fn number(&self, key: &str) -> u64 {
        let text = self.field(key);
        text.parse()
            .unwrap_or_else(|_| panic!("{key} is {text:?}, not a whole number"))
    }

    /// A number field, fractions allowed.
    #[track_caller]
    pub fn real(&self, key: &str) -> f64 {
        let text = self.field(key);
        text.parse()
            .unwrap_or_else(|_| panic!("{key} is {text:?}, not a number"))
    }

    /// Whether the line has the field at all.
    pub fn has(&self, key: &str) -> bool {
        self.json.contains(&format!("\"{key}\":"))
    }
}

/// Runs `loadgen ARGS` (built on demand), killed if it outlasts
/// [`RUN_LIMIT`], and parses its output: at most one line on stdout, a
/// JSON object, and no panic on stderr.
#[track_caller]
pub fn run(args: &[&str]) -> Outcome {
    let child = Command::new(tool_path("loadgen"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out: Output = match rx.recv_timeout(RUN_LIMIT) {
        Ok(out) => out.expect("wait for loadgen"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of a child this test started and
            // whose waiting thread has not reaped it yet.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("loadgen {args:?} did not finish within {RUN_LIMIT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "loadgen panicked: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() <= 1, "one line on stdout: {stdout}");
    let json = lines.first().copied().unwrap_or_default().to_string();
    if !json.is_empty() {
        assert!(json.starts_with('{') && json.ends_with('}'), "JSON: {json}");
    }
    Outcome {
        code: out.status.code(),
        json,
        stderr,
    }
}
