//! Directory listings produced as the client reads them: a [`Listing`]
//! renders a few entries per turn of the loop and stops while the
//! connection's output is above its high watermark, so a directory of any
//! size neither stalls the loop nor makes one client cost the server the
//! whole page.
//!
//! Two pieces:
//! - an [`Index`]: the directory's entry names, read and sorted
//!   (directories first, then byte order). It holds names only, no page and
//!   no metadata, and is shared by every listing of the same directory
//!   through [`Indexes`], which keeps only weak references: the index goes
//!   away with the last listing that uses it. A directory whose modification
//!   time (or identity) changed since is read again. With no current index,
//!   the directory is read [`READ_BATCH`] names per turn ([`Reader`]), once
//!   for every listing that asks meanwhile ([`Pending`]), then sorted and
//!   shared;
//! - a [`Listing`]: one connection's walk over an index. Each
//!   [`Listing::pump`] renders one chunk (at most [`BATCH`] entries, or
//!   about [`CHUNK`] bytes), sends it, and then either asks for the next
//!   turn with a zero-delay timer or, above the high watermark, waits for
//!   the drain.
//!
//! Always true:
//! - a listing shows only what a request would serve: an entry is looked up
//!   when its row is rendered, and left out unless it is a regular file or a
//!   directory, readable, and (for a symlink) resolves inside the root. A
//!   symlink pointing outside shows nothing, not even its target's size or
//!   date; FIFOs, sockets and devices are not listed;
//! - per turn, one listing reads at most [`READ_BATCH`] names, or looks up
//!   at most [`BATCH`] entries and renders at most [`CHUNK`] bytes plus one
//!   row, whatever the directory's size (sorting the names read is one
//!   turn's work, O(n log n));
//! - output is rendered only while the queue is below the high watermark, so
//!   a client that does not read holds at most the high watermark plus one
//!   chunk of listing in the server ([`super::HttpServer::listener_options`]
//!   keeps that under 256 KiB);
//! - a stall watchdog, like a file body's, closes the connection when
//!   nothing has drained for the stall timeout.
//!
//! With HTTP/1.1 the page goes out with `Transfer-Encoding: chunked`, one
//! chunk per turn; an HTTP/1.0 client gets it delimited by the close.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::listing::{page_end, page_start, push_row, Entry};
use crate::protocols::body::Progress;
use crate::protocols::path::Root;
use crate::{Context, TimerId};

/// Most entries one listing looks up and renders per turn of the loop.
pub const BATCH: usize = 128;

/// Most directory entries one listing reads per turn of the loop, while its
/// names are being read.
pub const READ_BATCH: usize = 2048;

/// Where a chunk's size goes, filled in once its rows are rendered: eight
/// hex digits, more than any chunk needs.
const SIZE_PLACEHOLDER: &str = "00000000\r\n";

/// Rendering of a chunk stops once it holds this many bytes (a row can take
/// it past by at most one row, about 2.6 KiB for a 255-byte name).
pub const CHUNK: usize = 16 * 1024;

/// What tells one state of a directory from another: its identity and its
/// modification time, which changes whenever an entry is added, removed or
/// renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(metadata: &Metadata) -> Stamp {
        Stamp {
            dev: metadata.dev(),
            ino: metadata.ino(),
            mtime: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
        }
    }
}

/// One name in an index: where it lies in the index's text.
#[derive(Debug, Clone, Copy)]
struct Name {
    start: usize,
    end: usize,
}

/// A directory's entry names, sorted as the page lists them. The names lie
/// end to end in one string: two allocations whatever the directory's size,
/// which go back to the system whole when the index is dropped.
#[derive(Debug)]
pub struct Index {
    /// The directory's real path.
    dir: PathBuf,
    stamp: Stamp,
    text: Box<str>,
    names: Box<[Name]>,
}

/// A directory being read into an [`Index`], a batch of names per call.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    stamp: Stamp,
    entries: std::fs::ReadDir,
    /// (listed with the directories, name): a symlink counts as what it
    /// points to now. Rendering looks each entry up again, so this sets
    /// only the order.
    read: Vec<(bool, String)>,
}

impl Reader {
    /// Opens the directory at `dir` (a real path inside the root) whose
    /// metadata is `metadata`.
    ///
    /// # Errors
    ///
    /// The directory cannot be read.
    pub fn open(dir: &Path, metadata: &Metadata) -> io::Result<Reader> {
        Ok(Reader {
            dir: dir.to_owned(),
            stamp: Stamp::of(metadata),
            entries: std::fs::read_dir(dir)?,
            read: Vec::new(),
        })
    }

    /// Reads up to `limit` more entries; `true` once the directory is all
    /// read. Names that are not UTF-8 (no request can name them) or not one
    /// path segment are left out; an error ends the reading (the listing
    /// shows what was read).
    pub fn read_some(&mut self, limit: usize) -> bool {
        for _ in 0..limit {
            let entry = match self.entries.next() {
                None => return true,
                Some(Ok(entry)) => entry,
                Some(Err(err)) => {
                    log::debug!("reading {}: {err}", self.dir.display());
                    return true;
                }
            };
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if matches!(name.as_str(), "" | "." | "..") || name.contains('/') {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let dir = if kind.is_symlink() {
                std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir())
            } else {
                kind.is_dir()
            };
            self.read.push((dir, name));
        }
        false
    }

    /// The index of what was read, sorted as the page lists it.
    pub fn finish(self) -> Index {
        let mut read = self.read;
        read.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut text = String::with_capacity(read.iter().map(|(_, name)| name.len()).sum());
        let mut names = Vec::with_capacity(read.len());
        for (_, name) in read {
            let start = text.len();
            text.push_str(&name);
            names.push(Name {
                start,
                end: text.len(),
            });
        }
        Index {
            dir: self.dir,
            stamp: self.stamp,
            text: text.into_boxed_str(),
            names: names.into_boxed_slice(),
        }
    }
}

impl Index {
    /// The row of the `i`th name, if a request for it would be served.
    fn entry(&self, root: &Root, i: usize) -> Option<Entry> {
        let span = self.names.get(i)?;
        let name = self.text.get(span.start..span.end)?;
        let path = self.dir.join(name);
        // lstat first: whatever the index saw, a symlink now is checked as one.
        let mut metadata = std::fs::symlink_metadata(&path).ok()?;
        if metadata.file_type().is_symlink() {
            let real = std::fs::canonicalize(&path).ok()?;
            if !real.starts_with(root.dir()) {
                return None;
            }
            metadata = std::fs::metadata(&real).ok()?;
        }
        if !(metadata.is_file() || metadata.is_dir()) || !crate::sys::may_read(&path) {
            return None;
        }
        Some(Entry {
            name: name.to_owned(),
            is_dir: metadata.is_dir(),
            size: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

/// The indexes of one server's directories, shared by its connections. Holds
/// weak references only: an index lives as long as a listing uses it.
#[derive(Debug, Default)]
pub struct Indexes {
    by_dir: RefCell<HashMap<PathBuf, Shared>>,
}

/// What [`Indexes`] knows of one directory: an index, or a reading of it
/// in progress, both held weakly.
#[derive(Debug)]
enum Shared {
    Index(Weak<Index>),
    Reading(Weak<RefCell<Pending>>),
}

impl Shared {
    fn in_use(&self) -> bool {
        match self {
            Shared::Index(index) => index.strong_count() > 0,
            Shared::Reading(pending) => pending.strong_count() > 0,
        }
    }
}

/// A directory being read for every listing that asked for it meanwhile:
/// one reader, however many listings wait for it.
#[derive(Debug)]
pub struct Pending {
    stamp: Stamp,
    reader: Option<Reader>,
    index: Option<Rc<Index>>,
}

impl Pending {
    /// The index, once read; else reads one more batch (and, with the last
    /// one, sorts the names and shares the index). Returns the index if it
    /// is there, and whether this call did the work of a turn.
    fn advance(&mut self, indexes: &Indexes) -> (Option<Rc<Index>>, bool) {
        if let Some(index) = &self.index {
            return (Some(Rc::clone(index)), false);
        }
        let Some(reader) = &mut self.reader else {
            return (None, false);
        };
        if !reader.read_some(READ_BATCH) {
            return (None, true);
        }
        let index = self.reader.take().map(|reader| Rc::new(reader.finish()));
        if let Some(index) = &index {
            indexes.publish(index);
        }
        self.index.clone_from(&index);
        (index, true)
    }
}

impl Clone for Indexes {
    /// A new, empty set: indexes are shared only within one server.
    fn clone(&self) -> Indexes {
        Indexes::default()
    }
}

/// Where a listing's names come from.
#[derive(Debug)]
pub enum Names {
    /// An index already read, shared.
    Ready(Rc<Index>),
    /// The directory, being read a batch per turn, shared by every
    /// listing of it that started meanwhile.
    Reading(Rc<RefCell<Pending>>),
}

impl Indexes {
    /// The names of the directory at `dir` (a real path inside the root)
    /// whose metadata is `metadata`: the index in use if it is still
    /// current, else a reader opened now.
    ///
    /// # Errors
    ///
    /// The directory cannot be read.
    pub fn get(&self, dir: &Path, metadata: &Metadata) -> io::Result<Names> {
        let stamp = Stamp::of(metadata);
        match self.by_dir.borrow().get(dir) {
            Some(Shared::Index(index)) => {
                if let Some(index) = index.upgrade().filter(|i| i.stamp == stamp) {
                    return Ok(Names::Ready(index));
                }
            }
            Some(Shared::Reading(pending)) => {
                if let Some(pending) = pending.upgrade().filter(|p| p.borrow().stamp == stamp) {
                    return Ok(Names::Reading(pending));
                }
            }
            None => {}
        }
        let pending = Rc::new(RefCell::new(Pending {
            stamp,
            reader: Some(Reader::open(dir, metadata)?),
            index: None,
        }));
        let mut by_dir = self.by_dir.borrow_mut();
        by_dir.retain(|_, shared| shared.in_use());
        by_dir.insert(dir.to_owned(), Shared::Reading(Rc::downgrade(&pending)));
        Ok(Names::Reading(pending))
    }

    /// Shares a freshly read index with the listings that come next.
    fn publish(&self, index: &Rc<Index>) {
        let mut by_dir = self.by_dir.borrow_mut();
        // Forget directories no listing uses any more, so the map stays as
        // small as the set of directories being listed right now.
        by_dir.retain(|_, shared| shared.in_use());
        by_dir.insert(index.dir.clone(), Shared::Index(Rc::downgrade(index)));
    }
}

/// How the end of the page is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// HTTP/1.1: `Transfer-Encoding: chunked`, one chunk per call.
    Chunked,
    /// HTTP/1.0: the page ends with the connection.
    Close,
}

/// One connection's listing page, rendered a chunk at a time.
#[derive(Debug)]
pub struct Listing {
    names: Names,
    /// The decoded request path (ending with `/`), for the title and the
    /// parent link.
    url_path: String,
    framing: Framing,
    /// The response head, sent with the first chunk.
    head: Option<Vec<u8>>,
    /// The next name of the index to render.
    next: usize,
    /// Page bytes rendered so far (not counting chunk framing).
    rendered: u64,
    /// The zero-delay timer that brings the listing back next turn.
    tick: Option<TimerId>,
    stall: Duration,
    watchdog: Option<TimerId>,
}

impl Listing {
    /// The page of `names` at `url_path`, after `head`; nothing is queued
    /// until [`Listing::pump`]. The stall watchdog fires when nothing has
    /// drained for `stall`.
    pub fn new(names: Names, url_path: &str, framing: Framing, head: Vec<u8>, stall: Duration) -> Listing {
        Listing {
            names,
            url_path: url_path.to_owned(),
            framing,
            head: Some(head),
            next: 0,
            rendered: 0,
            tick: None,
            stall,
            watchdog: None,
        }
    }

    /// Page bytes rendered so far.
    pub fn rendered(&self) -> u64 {
        self.rendered
    }

    /// Renders and sends the next chunk, unless the queue is above its high
    /// watermark. Call it to start, from `on_drain`, and when
    /// [`Listing::on_timer`] says so.
    pub fn pump(&mut self, cx: &mut Context<'_>, root: &Root, indexes: &Indexes) -> Progress {
        if cx.is_above_high_water() {
            self.arm_watchdog(cx);
            return Progress::Waiting;
        }
        let index = match &self.names {
            Names::Ready(index) => Rc::clone(index),
            Names::Reading(pending) => {
                let (index, worked) = pending.borrow_mut().advance(indexes);
                if let Some(index) = &index {
                    self.names = Names::Ready(Rc::clone(index));
                }
                match index {
                    // Read by another listing before this turn: rows now.
                    Some(index) if !worked => index,
                    // Rows from the next turn on: reading (and sorting)
                    // was this turn's work.
                    _ => {
                        self.tick(cx);
                        self.arm_watchdog(cx);
                        return Progress::Waiting;
                    }
                }
            }
        };
        // One buffer for what goes out this turn: the head (first turn
        // only), a chunk-size line written in place once the rows are in,
        // the rows, and the framing after them. Nothing is copied.
        let head = self.head.take().map(String::from_utf8);
        let mut out = match head {
            Some(Ok(head)) => head,
            Some(Err(err)) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
            None => String::new(),
        };
        out.reserve(CHUNK + 4096);
        let size_at = out.len();
        if self.framing == Framing::Chunked {
            out.push_str(SIZE_PLACEHOLDER);
        }
        let body_at = out.len();
        if self.next == 0 {
            page_start(&mut out, &self.url_path);
        }
        let mut looked_up = 0;
        while looked_up < BATCH && out.len() - body_at < CHUNK && self.next < index.names.len() {
            if let Some(entry) = index.entry(root, self.next) {
                push_row(&mut out, &entry);
            }
            self.next += 1;
            looked_up += 1;
        }
        let done = self.next >= index.names.len();
        if done {
            page_end(&mut out);
        }
        let body = out.len() - body_at;
        self.rendered += body as u64;
        if self.framing == Framing::Chunked {
            if body == 0 {
                out.truncate(size_at);
            } else {
                // Fixed width, leading zeros (RFC 9112 §7.1 allows them).
                let size = format!("{body:08x}\r\n");
                out.replace_range(size_at..body_at, &size);
                out.push_str("\r\n");
            }
            if done {
                out.push_str("0\r\n\r\n");
            }
        }
        let out = out.into_bytes();
        if !out.is_empty() && !cx.send_vec(out) {
            self.cancel(cx);
            return Progress::Failed;
        }
        if done {
            self.cancel(cx);
            return Progress::Queued;
        }
        self.tick(cx);
        self.arm_watchdog(cx);
        Progress::Waiting
    }

    /// Asks for the next turn, unless the drain will bring the listing back.
    fn tick(&mut self, cx: &mut Context<'_>) {
        if !cx.is_above_high_water() && self.tick.is_none() {
            self.tick = cx.set_timer(Duration::ZERO);
        }
    }

    /// What `timer` means to this listing: `Some(true)` if it is the tick
    /// (call [`Listing::pump`]), `Some(false)` if it is the stall watchdog
    /// (nothing drained for the stall timeout: close the connection), `None`
    /// if it is not this listing's.
    pub fn on_timer(&mut self, timer: TimerId) -> Option<bool> {
        if self.tick == Some(timer) {
            self.tick = None;
            Some(true)
        } else if self.watchdog == Some(timer) {
            self.watchdog = None;
            Some(false)
        } else {
            None
        }
    }

    /// Stops both timers (the listing is done with or given up on).
    pub fn cancel(&mut self, cx: &mut Context<'_>) {
        for timer in [self.tick.take(), self.watchdog.take()].into_iter().flatten() {
            cx.cancel_timer(timer);
        }
    }

    fn arm_watchdog(&mut self, cx: &mut Context<'_>) {
        let pushed_back = self.watchdog.is_some_and(|w| cx.reset_timer(w, self.stall));
        if !pushed_back {
            self.watchdog = cx.set_timer(self.stall);
        }
    }
}
