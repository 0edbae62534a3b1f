//! The write buffer of one connection: what the handler sent that the socket
//! has not taken yet.
//!
//! Always true:
//! - bytes leave in the order they were sent; a chunk is never reordered or
//!   split across other chunks;
//! - a write goes straight to the socket when the queue is empty, and only
//!   what the socket did not take is queued (copied, for borrowed bytes);
//! - queued memory chunks go out with one vectored write (`sendmsg`) of up to
//!   [`MAX_IOVECS`] chunks;
//! - a file region is sent with `sendfile(2)` straight from the page cache:
//!   the queue holds only the file handle, an offset and a length, so a
//!   download of any size costs the same memory;
//! - a connection sends at most [`FILE_BUDGET`] file bytes per turn of the
//!   loop, then yields, so a fast reader of a large file cannot hold the
//!   loop (the turn is counted by the caller, see [`WriteQueue::flush`]);
//! - [`WriteQueue::buffered`] counts bytes held in memory (what the hard cap
//!   limits); [`WriteQueue::level`] adds the file bytes still to send (what
//!   the watermarks look at).
//!
//! Writes are partial: the kernel takes what fits in the socket's send
//! buffer. A write from memory that takes less than it was offered means
//! that buffer is full, so the queue stops there instead of asking again for
//! a `WouldBlock`; the socket's next WRITABLE edge resumes it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// Most chunks gathered into one vectored write (Linux's `IOV_MAX` is 1024;
/// 64 covers any realistic backlog of small messages).
pub(crate) const MAX_IOVECS: usize = 64;

/// Largest count asked of one `sendfile` call (Linux caps a call at
/// 0x7fff_f000 bytes anyway).
const MAX_SENDFILE: u64 = 1 << 30;

/// File bytes one connection sends per turn of the loop before it yields.
/// A reader on another core can keep a loopback socket from ever filling,
/// so without a budget one connection could send a whole file while every
/// other source waits. The size is measured, not derived: on loopback,
/// 256 KiB per turn moved a 1 GiB file faster than 1 or 4 MiB did (see
/// docs/benchmarks.md); the cost of the extra turns, one `epoll_wait` per
/// 256 KiB, is small beside the kernel's work on the bytes.
pub(crate) const FILE_BUDGET: u64 = 256 * 1024;

/// Something a write queue can drain into: a socket, or a test double.
pub(crate) trait Sink: Write {
    /// Sends up to `len` bytes of `file` from `offset` without copying them
    /// through user space where the platform allows. Returns the bytes
    /// sent; 0 means the file ended before `offset`.
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize>;

    /// Like `write_vectored`, for bytes a file region follows at once: a
    /// TCP socket holds a partial segment back (`MSG_MORE`) so that a
    /// response head and a small body leave in one segment, not two. The
    /// default is a plain vectored write.
    fn write_vectored_more(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_vectored(bufs)
    }
}

/// One piece of queued output.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Bytes owned by this queue.
    Owned(Vec<u8>),
    /// Bytes shared with other queues (a broadcast).
    Shared(Rc<[u8]>),
    /// A region of a file, sent with `sendfile`.
    File { file: Rc<File>, offset: u64, len: u64 },
}

impl Chunk {
    /// Its length in bytes, memory or file.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Chunk::File { len, .. } => *len,
            other => other.bytes().len() as u64,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(bytes) => bytes,
            Chunk::Shared(bytes) => bytes,
            Chunk::File { .. } => &[],
        }
    }
}

/// A chunk and how much of it has gone out already.
#[derive(Debug)]
struct Queued {
    chunk: Chunk,
    /// Bytes of a memory chunk already written.
    written: usize,
    /// The first chunk of one send (a unit: a head and its file region
    /// are one); [`WriteQueue::drop_newest_over`] drops whole units.
    unit_start: bool,
}

impl Queued {
    fn remaining(&self) -> &[u8] {
        &self.chunk.bytes()[self.written..]
    }
}

/// How a flush ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Everything queued is written.
    Empty,
    /// The socket is full; the rest waits for WRITABLE.
    Blocked,
    /// The file budget is spent with the socket still taking bytes: the
    /// caller must come back without waiting for an event.
    Yielded,
}

/// The queue of output of one connection.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    chunks: VecDeque<Queued>,
    /// Memory bytes queued and not yet written.
    buffered: usize,
    /// File bytes queued and not yet sent.
    file_bytes: u64,
    /// The turn `budget_left` belongs to.
    budget_turn: u64,
    /// File bytes this connection may still send in `budget_turn`.
    budget_left: u64,
}

impl WriteQueue {
    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Bytes held in memory, waiting to be written.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// All bytes waiting, memory and file regions alike.
    pub(crate) fn level(&self) -> u64 {
        self.buffered as u64 + self.file_bytes
    }

    /// Drops everything queued.
    pub(crate) fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.buffered = 0;
        self.file_bytes = 0;
    }

    /// Appends a chunk, a send of its own, without writing.
    pub(crate) fn push(&mut self, chunk: Chunk) {
        self.push_unit([chunk]);
    }

    /// Appends the chunks of one send, in order, without writing. Empty
    /// chunks are left out.
    pub(crate) fn push_unit(&mut self, chunks: impl IntoIterator<Item = Chunk>) {
        let mut unit_start = true;
        for chunk in chunks {
            match &chunk {
                Chunk::File { len, .. } => {
                    if *len == 0 {
                        continue;
                    }
                    self.file_bytes += len;
                }
                Chunk::Owned(_) | Chunk::Shared(_) => {
                    if chunk.bytes().is_empty() {
                        continue;
                    }
                    self.buffered += chunk.bytes().len();
                }
            }
            self.chunks.push_back(Queued {
                chunk,
                written: 0,
                unit_start,
            });
            unit_start = false;
        }
    }

    /// Drops the newest sends, whole, until at most `max` bytes are held in
    /// memory. The oldest send is kept, since the socket may have taken
    /// part of it: the queue can stay over `max` by that one send. Returns
    /// how many sends were dropped.
    pub(crate) fn drop_newest_over(&mut self, max: usize) -> usize {
        let mut dropped = 0;
        while self.buffered > max {
            let Some(start) = self.chunks.iter().rposition(|q| q.unit_start) else {
                break;
            };
            if start == 0 {
                break;
            }
            for queued in self.chunks.drain(start..) {
                match queued.chunk {
                    Chunk::File { len, .. } => self.file_bytes -= len,
                    Chunk::Owned(_) | Chunk::Shared(_) => self.buffered -= queued.chunk.bytes().len(),
                }
            }
            dropped += 1;
        }
        dropped
    }

    /// Writes `data` straight to the sink if nothing is queued, and queues
    /// (a copy of) whatever the sink did not take.
    pub(crate) fn write_slice(&mut self, sink: &mut impl Sink, data: &[u8]) -> io::Result<usize> {
        let written = if self.is_empty() {
            write_some(sink, data)?
        } else {
            0
        };
        if written < data.len() {
            self.push(Chunk::Owned(data[written..].to_vec()));
        }
        Ok(written)
    }

    /// Queues `chunk` and, if it is first in line, starts writing it.
    /// Returns how the write ended ([`Flush::Blocked`] when it waits behind
    /// other chunks).
    #[cfg(test)]
    pub(crate) fn write_chunk(&mut self, sink: &mut impl Sink, chunk: Chunk) -> io::Result<Flush> {
        self.write_chunks(sink, [chunk], 1)
    }

    /// Queues `chunks` in order and, if they are first in line, starts
    /// writing them. Returns how the write ended ([`Flush::Blocked`] when
    /// they wait behind other chunks).
    pub(crate) fn write_chunks(
        &mut self,
        sink: &mut impl Sink,
        chunks: impl IntoIterator<Item = Chunk>,
        turn: u64,
    ) -> io::Result<Flush> {
        let was_empty = self.is_empty();
        self.push_unit(chunks);
        if was_empty {
            return self.flush(sink, turn);
        }
        Ok(Flush::Blocked)
    }

    /// Writes queued chunks until the queue is empty, the sink is full, or
    /// this turn's file budget is spent. `turn` counts the turns of the loop
    /// from 1: the budget starts afresh when it changes.
    ///
    /// # Errors
    ///
    /// The sink's error, other than `WouldBlock` (which is [`Flush::Blocked`])
    /// and `Interrupted` (retried). A file that ends before its region does
    /// is `UnexpectedEof`: the peer must not get fewer bytes than announced
    /// without the connection failing.
    pub(crate) fn flush(&mut self, sink: &mut impl Sink, turn: u64) -> io::Result<Flush> {
        if self.budget_turn != turn {
            self.budget_turn = turn;
            self.budget_left = FILE_BUDGET;
        }
        loop {
            let Some(front) = self.chunks.front() else {
                return Ok(Flush::Empty);
            };
            let outcome = match &front.chunk {
                Chunk::File { file, offset, len } => {
                    if self.budget_left == 0 {
                        return Ok(Flush::Yielded);
                    }
                    let (file, offset, len) = (Rc::clone(file), *offset, *len);
                    self.send_file_front(sink, &file, offset, len)
                }
                Chunk::Owned(_) | Chunk::Shared(_) => self.write_memory_front(sink),
            };
            match outcome {
                Ok(Progress::All) => continue,
                Ok(Progress::Partial) => return Ok(Flush::Blocked),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// One vectored write of the memory chunks at the front.
    fn write_memory_front(&mut self, sink: &mut impl Sink) -> io::Result<Progress> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        let mut offered = 0;
        let mut file_follows = false;
        for queued in self.chunks.iter().take(MAX_IOVECS) {
            if matches!(queued.chunk, Chunk::File { .. }) {
                file_follows = true;
                break;
            }
            slices[count] = IoSlice::new(queued.remaining());
            offered += queued.remaining().len();
            count += 1;
        }
        let written = if file_follows {
            sink.write_vectored_more(&slices[..count])?
        } else {
            sink.write_vectored(&slices[..count])?
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.consume_memory(written);
        Ok(if written < offered {
            Progress::Partial
        } else {
            Progress::All
        })
    }

    /// Marks `written` bytes of the front memory chunks as gone.
    fn consume_memory(&mut self, mut written: usize) {
        self.buffered -= written;
        while written > 0 {
            let front = self
                .chunks
                .front_mut()
                .expect("written bytes came from queued chunks");
            let left = front.remaining().len();
            if written < left {
                front.written += written;
                return;
            }
            written -= left;
            self.chunks.pop_front();
        }
    }

    /// One `sendfile` of the file region at the front.
    fn send_file_front(
        &mut self,
        sink: &mut impl Sink,
        file: &File,
        offset: u64,
        len: u64,
    ) -> io::Result<Progress> {
        let ask = len.min(MAX_SENDFILE).min(self.budget_left) as usize;
        let sent = sink.send_file(file, offset, ask)?;
        if sent == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file ended before the region queued for it",
            ));
        }
        let sent64 = sent as u64;
        self.file_bytes -= sent64;
        self.budget_left -= sent64;
        if sent64 == len {
            self.chunks.pop_front();
            return Ok(Progress::All);
        }
        if let Some(Queued {
            chunk: Chunk::File { offset, len, .. },
            ..
        }) = self.chunks.front_mut()
        {
            *offset += sent64;
            *len -= sent64;
        }
        // Unlike a short write from memory, a short sendfile does not prove
        // the socket full (the file may have ended, or the copy fallback
        // moves 16 KiB at a time): ask again until WouldBlock or 0.
        Ok(Progress::All)
    }
}

/// What one write achieved.
enum Progress {
    /// All that was offered went out.
    All,
    /// The sink took less than offered: it is full.
    Partial,
}

/// Writes as much of `data` as the sink takes now. `WouldBlock` is 0 bytes.
fn write_some(sink: &mut impl Sink, data: &[u8]) -> io::Result<usize> {
    if data.is_empty() {
        return Ok(0);
    }
    loop {
        match sink.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Sends part of a file by reading it into a buffer and writing that, for
/// sinks where `sendfile` is not possible. Only what the sink takes is
/// counted; the rest is read again next time, so nothing is buffered.
pub(crate) fn copy_file_region(
    sink: &mut impl Write,
    file: &File,
    offset: u64,
    len: usize,
) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 16 * 1024];
    let want = len.min(buf.len());
    let read = loop {
        match file.read_at(&mut buf[..want], offset) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if read == 0 {
        return Ok(0);
    }
    let written = sink.write(&buf[..read])?;
    if written == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most `room` bytes, then says `WouldBlock`.
    struct Throttled {
        out: Vec<u8>,
        room: usize,
        calls: usize,
        /// Bytes that were written flagged as followed by a file region.
        more: Vec<u8>,
    }

    impl Throttled {
        fn new(room: usize) -> Self {
            Throttled {
                out: Vec::new(),
                room,
                calls: 0,
                more: Vec::new(),
            }
        }
    }

    impl Write for Throttled {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = data.len().min(self.room);
            self.out.extend_from_slice(&data[..n]);
            self.room -= n;
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut total = 0;
            for buf in bufs {
                let n = buf.len().min(self.room);
                self.out.extend_from_slice(&buf[..n]);
                self.room -= n;
                total += n;
                if n < buf.len() {
                    break;
                }
            }
            Ok(total)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink for Throttled {
        fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
            self.calls += 1;
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            copy_file_region(self, file, offset, len)
        }

        fn write_vectored_more(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let before = self.out.len();
            let written = self.write_vectored(bufs)?;
            self.more.extend_from_slice(&self.out[before..]);
            Ok(written)
        }
    }

    #[test]
    fn dropping_over_the_cap_takes_the_newest_sends_whole_and_never_the_started_one() {
        let mut queue = WriteQueue::default();
        let mut sink = Throttled::new(2);
        queue.write_slice(&mut sink, b"first").unwrap(); // "fi" written
        queue.push(Chunk::Owned(b"second".to_vec()));
        // Never read: the region is dropped before it is sent.
        let file = Rc::new(File::open("/dev/null").unwrap());
        queue.push_unit([
            Chunk::Owned(b"head".to_vec()),
            Chunk::File {
                file,
                offset: 0,
                len: 4,
            },
        ]);
        queue.push(Chunk::Owned(b"last".to_vec()));
        assert_eq!(
            (queue.buffered(), queue.level()),
            (3 + 6 + 4 + 4, 3 + 6 + 4 + 4 + 4)
        );
        // The head and its file region go together, after "last".
        assert_eq!(queue.drop_newest_over(10), 2);
        assert_eq!((queue.buffered(), queue.level()), (9, 9));
        // The started send stays even when it alone is over the cap.
        assert_eq!(queue.drop_newest_over(0), 1);
        assert_eq!(queue.buffered(), 3);
        assert_eq!(queue.drop_newest_over(0), 0);
        sink.room = 100;
        queue.flush(&mut sink, 1).unwrap();
        assert_eq!(sink.out, b"first");
    }

    #[test]
    fn direct_write_queues_only_the_rest() {
        let mut queue = WriteQueue::default();
        let mut sink = Throttled::new(3);
        queue.write_slice(&mut sink, b"hello").unwrap();
        assert_eq!(sink.out, b"hel");
        assert_eq!(queue.buffered(), 2);
        sink.room = 100;
        assert_eq!(queue.flush(&mut sink, 1).unwrap(), Flush::Empty);
        assert_eq!(sink.out, b"hello");
        assert_eq!(queue.buffered(), 0);
    }

    #[test]
    fn queued_chunks_leave_in_order_under_partial_writes() {
        let mut queue = WriteQueue::default();
        let mut sink = Throttled::new(0);
        let shared: Rc<[u8]> = Rc::from(&b"-shared-"[..]);
        queue.write_slice(&mut sink, b"one").unwrap();
        queue
            .write_chunk(&mut sink, Chunk::Shared(Rc::clone(&shared)))
            .unwrap();
        queue
            .write_chunk(&mut sink, Chunk::Owned(b"two".to_vec()))
            .unwrap();
        assert_eq!(queue.buffered(), 14);
        let mut rounds = 0;
        while !queue.is_empty() {
            sink.room = 3;
            queue.flush(&mut sink, 1).unwrap();
            rounds += 1;
            assert!(rounds < 20);
        }
        assert_eq!(sink.out, b"one-shared-two");
        assert_eq!(Rc::strong_count(&shared), 1, "shared chunk released");
    }

    #[test]
    fn memory_chunks_go_out_in_one_vectored_write() {
        let mut queue = WriteQueue::default();
        for i in 0..10u8 {
            queue.push(Chunk::Owned(vec![i; 10]));
        }
        let mut sink = Throttled::new(1000);
        assert_eq!(queue.flush(&mut sink, 1).unwrap(), Flush::Empty);
        assert_eq!(sink.calls, 1);
        assert_eq!(sink.out.len(), 100);
    }

    #[test]
    fn partial_write_stops_without_asking_again() {
        let mut queue = WriteQueue::default();
        queue.push(Chunk::Owned(vec![1; 100]));
        let mut sink = Throttled::new(40);
        assert_eq!(queue.flush(&mut sink, 1).unwrap(), Flush::Blocked);
        assert_eq!(sink.calls, 1);
        assert_eq!(queue.buffered(), 60);
    }

    #[test]
    fn file_region_is_sent_between_memory_chunks() {
        let dir = std::env::temp_dir().join(format!("evloop-wq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("region");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = Rc::new(File::open(&path).unwrap());
        let mut queue = WriteQueue::default();
        let mut sink = Throttled::new(0);
        queue.write_slice(&mut sink, b"<").unwrap();
        queue
            .write_chunk(
                &mut sink,
                Chunk::File {
                    file,
                    offset: 2,
                    len: 5,
                },
            )
            .unwrap();
        queue.write_chunk(&mut sink, Chunk::Owned(b">".to_vec())).unwrap();
        assert_eq!(queue.level(), 7);
        assert_eq!(queue.buffered(), 2);
        while !queue.is_empty() {
            sink.room = 2;
            queue.flush(&mut sink, 1).unwrap();
        }
        assert_eq!(sink.out, b"<23456>");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bytes_queued_with_a_region_are_written_as_followed_by_it() {
        let dir = std::env::temp_dir().join(format!("evloop-wq-more-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("body");
        std::fs::write(&path, b"body").unwrap();
        let file = Rc::new(File::open(&path).unwrap());
        let mut queue = WriteQueue::default();
        let mut sink = Throttled::new(usize::MAX);
        let chunks = [
            Chunk::Owned(b"head|".to_vec()),
            Chunk::File {
                file,
                offset: 0,
                len: 4,
            },
            Chunk::Owned(b"|tail".to_vec()),
        ];
        assert_eq!(queue.write_chunks(&mut sink, chunks, 1).unwrap(), Flush::Empty);
        assert_eq!(sink.out, b"head|body|tail");
        assert_eq!(sink.more, b"head|", "only bytes a region follows are flagged");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_budget_is_per_turn_when_the_sink_keeps_taking() {
        let dir = std::env::temp_dir().join(format!("evloop-wq-budget-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("large");
        let size = FILE_BUDGET as usize * 2 + 10;
        std::fs::write(&path, vec![3u8; size]).unwrap();
        let file = Rc::new(File::open(&path).unwrap());
        let mut queue = WriteQueue::default();
        let mut sink = Throttled::new(usize::MAX);
        let len = size as u64;
        assert_eq!(
            queue
                .write_chunk(&mut sink, Chunk::File { file, offset: 0, len })
                .unwrap(),
            Flush::Yielded
        );
        assert_eq!(sink.out.len() as u64, FILE_BUDGET);
        // The budget is per turn: another flush in the same turn sends nothing.
        assert_eq!(queue.flush(&mut sink, 1).unwrap(), Flush::Yielded);
        assert_eq!(sink.out.len() as u64, FILE_BUDGET);
        assert_eq!(queue.flush(&mut sink, 2).unwrap(), Flush::Yielded);
        assert_eq!(queue.flush(&mut sink, 3).unwrap(), Flush::Empty);
        assert_eq!(sink.out.len(), size);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_shorter_than_its_region_is_an_error() {
        let dir = std::env::temp_dir().join(format!("evloop-wq-short-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("short");
        std::fs::write(&path, b"abc").unwrap();
        let file = Rc::new(File::open(&path).unwrap());
        let mut queue = WriteQueue::default();
        let mut sink = Throttled::new(100);
        let err = queue
            .write_chunk(
                &mut sink,
                Chunk::File {
                    file,
                    offset: 0,
                    len: 10,
                },
            )
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(sink.out, b"abc");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
