//! File client for the plain TCP file protocol.
//!
//! ```text
//! file_client ADDR NAME [-o PATH] [--tls [--cacert PEM] [--server-name NAME]]
//! ```
//!
//! With `--tls` the protocol runs over TLS (rustls, with `evloop::tls`'s
//! roots): the server's certificate must chain to `--cacert`'s roots
//! (default: the system's) and be valid for `--server-name` (default:
//! ADDR's host); one that does not is a one-line error, exit 1, and no
//! file. Over TLS the end of a download is the server's `close_notify`: a
//! connection cut without it is a failed download, not a short file.
//!
//! Sends NAME, reads the answer to end-of-file into a temporary file next
//! to PATH, and renames it into place only when the download is complete,
//! so a failed or refused download leaves no file behind. The answer
//! `no_file` means the server will not serve NAME.
//!
//! What the plain protocol cannot say: it has no length header, so a
//! server that closes normally in the middle of a file looks like a
//! complete, shorter download; and a file whose content is exactly
//! `no_file` looks like a refusal. A reset, a read error, a server silent
//! for a minute, or SIGINT/SIGTERM is detected, and leaves no file. HTTP
//! (`Content-Length`) does not have these limits.
//!
//! Exit status: 0 for a saved file; 1 with `not found: NAME` for a
//! `no_file` answer (and only then); 1 with `download of NAME failed` for
//! anything else, a reset among them: a server that cannot open the file
//! for a reason other than its name (out of descriptors) resets the
//! connection rather than say `no_file`.

mod common;

use std::fs::OpenOptions;
use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};

/// What `--help` says the plain protocol cannot tell.
const LIMITS: &str = "\
What the plain protocol cannot tell: it sends no length, so a server that
crashes or is killed mid-download, closing normally, looks like a complete,
shorter file; and a file whose content is exactly `no_file` looks like a
refusal. A reset or a silent server is detected and leaves no file. Where it
matters, download over HTTP (file_server --http), where Content-Length tells
a cut download from a whole one: curl -fO http://ADDR/NAME";

/// Downloads NAME from a file server speaking the plain TCP protocol.
#[derive(Parser)]
#[command(name = "file_client", after_help = LIMITS)]
struct Flags {
    /// Server address, ip:port
    addr: SocketAddr,
    /// File name on the server, relative to its root
    name: String,
    /// Where to write the file (default: NAME's base name, here)
    #[arg(short = 'o', value_name = "PATH")]
    output: Option<PathBuf>,
    #[command(flatten)]
    tls: common::ClientTlsFlags,
}

/// The connection: plain TCP, or TLS over it.
trait Conn: Read + Write {}

impl<T: Read + Write> Conn for T {}

/// The answer to a name the server does not serve.
const NO_FILE: &[u8] = b"no_file";

/// Longest wait for the connection to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A server that sends nothing for this long is taken for dead.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a blocked read wakes to look for SIGINT/SIGTERM.
const POLL: Duration = Duration::from_millis(250);

fn main() -> ExitCode {
    let flags: Flags = common::parse();
    let output = match flags.output.clone() {
        Some(path) => path,
        None => match Path::new(&flags.name).file_name() {
            Some(base) => PathBuf::from(base),
            None => common::usage_error(&format!("{}: no file name to save under; use -o", flags.name)),
        },
    };
    let dir = output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // In the destination directory, so the final rename cannot cross file
    // systems and the file appears whole or not at all.
    let temp = dir.join(format!(".{base}.part-{}", std::process::id()));
    // Ctrl-C must not leave the temporary file behind: the signal only
    // raises a flag, which the read loop checks.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        if let Err(err) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            common::fail(&format!("signal handler: {err}"));
        }
    }
    let outcome = download(&flags, &temp, &stop);
    match outcome {
        Ok(Outcome::Saved(bytes)) => match std::fs::rename(&temp, &output) {
            Ok(()) => {
                if std::io::stderr().is_terminal() {
                    eprintln!("saved {} ({bytes} bytes)", output.display());
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                let _ = std::fs::remove_file(&temp);
                common::fail(&format!("{}: {err}", output.display()))
            }
        },
        Ok(Outcome::NotFound) => {
            let _ = std::fs::remove_file(&temp);
            eprintln!("not found: {}", flags.name);
            ExitCode::from(1)
        }
        Err(err) => {
            let _ = std::fs::remove_file(&temp);
            common::fail(&failure(&flags, &err))
        }
    }
}

/// The one-line message for a failed download: never "not found", which
/// only a `no_file` answer may say.
fn failure(flags: &Flags, err: &io::Error) -> String {
    let hint = match err.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
            " (the server reset the connection: it could not send the file now; try again later)"
        }
        _ => "",
    };
    format!(
        "{}: download of {} failed, nothing saved: {err}{hint}",
        flags.addr, flags.name
    )
}

enum Outcome {
    Saved(u64),
    NotFound,
}

/// Sends the name and copies the answer into `temp`, to end-of-file.
fn download(flags: &Flags, temp: &Path, stop: &AtomicBool) -> io::Result<Outcome> {
    let tcp = TcpStream::connect_timeout(&flags.addr, CONNECT_TIMEOUT)?;
    tcp.set_write_timeout(Some(STALL_TIMEOUT))?;
    tcp.set_read_timeout(Some(POLL))?;
    let mut stream: Box<dyn Conn> = match flags.tls.client() {
        Some(tls) => {
            let name = flags.tls.server_name(&flags.addr);
            let name = rustls::pki_types::ServerName::try_from(name)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("server name: {e}")))?;
            let conn = rustls::ClientConnection::new(std::sync::Arc::clone(tls.config()), name)
                .map_err(io::Error::other)?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
        None => Box::new(tcp),
    };
    // The name and its newline in one write, so they arrive in one segment:
    // a server that takes the first chunk as the whole name (the classic
    // Python server) must not see the name without its end.
    let mut request = Vec::with_capacity(flags.name.len() + 1);
    request.extend_from_slice(flags.name.as_bytes());
    request.push(b'\n');
    stream.write_all(&request)?;
    let mut file = OpenOptions::new().write(true).create_new(true).open(temp)?;
    let mut progress = Progress::new();
    let mut head = Vec::with_capacity(NO_FILE.len());
    let mut buf = vec![0; 256 * 1024];
    let mut total = 0u64;
    let mut last_data = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if last_data.elapsed() >= STALL_TIMEOUT {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("nothing received for {} s", STALL_TIMEOUT.as_secs()),
                    ));
                }
                continue;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        last_data = Instant::now();
        if head.len() < NO_FILE.len() {
            let take = (NO_FILE.len() - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        file.write_all(&buf[..n])?;
        total += n as u64;
        progress.update(total);
    }
    progress.finish(total);
    if total == NO_FILE.len() as u64 && head == NO_FILE {
        return Ok(Outcome::NotFound);
    }
    file.sync_all()?;
    Ok(Outcome::Saved(total))
}

/// A progress line on stderr, only when stderr is a terminal.
struct Progress {
    start: Instant,
    last: Instant,
    shown: bool,
}

impl Progress {
    fn new() -> Progress {
        let now = Instant::now();
        Progress {
            start: now,
            last: now,
            shown: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, bytes: u64) {
        if self.shown && self.last.elapsed() >= Duration::from_millis(200) {
            self.last = Instant::now();
            self.draw(bytes);
        }
    }

    fn finish(&mut self, bytes: u64) {
        if self.shown {
            self.draw(bytes);
            eprintln!();
        }
    }

    fn draw(&self, bytes: u64) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = bytes as f64 / secs / (1024.0 * 1024.0);
        eprint!("\r{bytes} bytes, {rate:.1} MiB/s   ");
    }
}
