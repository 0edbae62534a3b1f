//! Every example program's command line (docs/programs.md: all programs): `--help`
//! prints usage on stdout and exits 0; a bad argument is a one-line error
//! on stderr and exit code 2, with no panic.
mod common;

use std::process::Command;

use common::*;

const PROGRAMS: [&str; 11] = [
    "echo",
    "chat",
    "file_server",
    "file_client",
    "chat_client",
    "udp_chat",
    "demo",
    "loadgen",
    "embedded",
    "kv",
    "proxy",
];

/// An example's path, or the load generator's (a workspace tool).
fn program_path(program: &str) -> std::path::PathBuf {
    match program {
        "loadgen" => tool_path(program),
        _ => example_path(program),
    }
}

#[test]
fn help_prints_usage_and_exits_0_for_every_program() {
    for program in PROGRAMS {
        let out = Command::new(program_path(program))
            .arg("--help")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{program} --help");
        let usage = String::from_utf8_lossy(&out.stdout);
        assert!(
            usage.contains("Usage:") && usage.contains(program),
            "{program}: {usage}"
        );
    }
}

#[test]
fn file_client_help_says_a_cut_download_can_look_complete_and_points_to_http() {
    let out = Command::new(example_path("file_client"))
        .arg("--help")
        .output()
        .expect("run");
    let usage = String::from_utf8_lossy(&out.stdout);
    for words in [
        "no length",
        "crashes",
        "looks like a complete",
        "HTTP",
        "Content-Length",
    ] {
        assert!(usage.contains(words), "{words:?} missing from: {usage}");
    }
}

#[test]
fn a_bad_argument_is_one_line_and_exit_2_for_every_program() {
    for program in PROGRAMS {
        let out = Command::new(program_path(program))
            .arg("--no-such-flag")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{program}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{program}: {stderr}");
        assert!(stderr.contains("--no-such-flag"), "{program}: {stderr}");
        assert!(!stderr.contains("panicked"), "{program}: {stderr}");
        assert!(out.stdout.is_empty(), "{program}: nothing on stdout");
    }
}
