//! A span of an open file sent on a connection in constant memory: the
//! streaming both file protocols share (the plain one in
//! [`crate::protocols::file`] and HTTP in [`crate::protocols::http`]).
//!
//! A [`FileBody`] queues file *regions* (a handle, an offset, a length) that
//! the core sends with `sendfile(2)` from the page cache, never the file's
//! bytes. Its owner calls [`FileBody::pump`] when the body starts and from
//! `on_drain`, and [`FileBody::on_timer`] from `on_timer`.
//!
//! Always true:
//! - memory per body is constant, whatever the span's size: a region is at
//!   most [`REGION`] bytes, and regions are queued only while the queue is
//!   below its high watermark;
//! - the owner hears from the body once per region drained, so a slow
//!   reader holds back only its own connection;
//! - a *stall watchdog* runs while regions remain unqueued: when no region
//!   has drained for the stall timeout, [`FileBody::on_timer`] queues the rest
//!   of the span at once (still no memory) and tells the owner to close, so
//!   the core's [`crate::ConnectionOptions::drain_timeout`], which counts
//!   every byte of progress, resets a peer that takes nothing, while one that
//!   is slow but moving still gets everything;
//! - the file's size is the caller's to read once; if the file shrinks
//!   meanwhile, the core fails the connection rather than pad the span.

use std::fs::File;
use std::rc::Rc;
use std::time::Duration;

use crate::{Context, TimerId};

/// Most bytes of a file in one queued region. The size costs no memory (a
/// region is sent by `sendfile`); it sets how often the owner hears from a
/// body (once per region drained).
pub const REGION: u64 = 4 * 1024 * 1024;

/// Where a body stands after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Regions remain; the queue is above its high watermark, and the next
    /// drain brings the owner back to [`FileBody::pump`].
    Waiting,
    /// The whole span is queued; the owner may queue what comes after it.
    Queued,
    /// The connection no longer takes output; `on_close` follows.
    Failed,
}

/// One span of a file being queued region by region on the current
/// connection.
#[derive(Debug)]
pub struct FileBody {
    file: Rc<File>,
    offset: u64,
    remaining: u64,
    stall: Duration,
    watchdog: Option<TimerId>,
    /// Bytes to send just before the first region (a response head).
    head: Option<Vec<u8>>,
}

impl FileBody {
    /// The `len` bytes of `file` from `offset`, with a stall watchdog of
    /// `stall` (set by the first [`FileBody::pump`]). Nothing is queued yet.
    pub fn new(file: Rc<File>, offset: u64, len: u64, stall: Duration) -> FileBody {
        FileBody {
            file,
            offset,
            remaining: len,
            stall,
            watchdog: None,
            head: None,
        }
    }

    /// Sends `head` (a response head) just before the first region, queued
    /// together with it, so that a head and a small body can leave in one
    /// TCP segment ([`Context::send_vec_then_file`]).
    pub fn with_head(mut self, head: Vec<u8>) -> FileBody {
        self.head = Some(head);
        self
    }

    /// Bytes not queued yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Queues regions until the queue is above its high watermark or the
    /// span is all queued. Call it to start and from `on_drain`: each call
    /// pushes the stall watchdog back, since a drain means the reader is
    /// alive. Looping on the watermark, rather than queuing one region per
    /// drain, keeps the body moving when the socket takes a whole region at
    /// once and no drain would ever come.
    pub fn pump(&mut self, cx: &mut Context<'_>) -> Progress {
        if self.remaining == 0 {
            if let Some(head) = self.head.take() {
                if !cx.send_vec(head) {
                    return Progress::Failed;
                }
            }
        }
        while self.remaining > 0 {
            if cx.is_above_high_water() {
                self.arm_watchdog(cx);
                return Progress::Waiting;
            }
            let len = self.remaining.min(REGION);
            let sent = match self.head.take() {
                Some(head) => cx.send_vec_then_file(head, &self.file, self.offset, len),
                None => cx.send_file(&self.file, self.offset, len),
            };
            if !sent {
                self.cancel(cx);
                return Progress::Failed;
            }
            self.offset += len;
            self.remaining -= len;
        }
        self.cancel(cx);
        Progress::Queued
    }

    /// Queues everything that remains as one region (no memory), for a
    /// connection about to close: the core's drain timeout takes over.
    pub fn queue_rest(&mut self, cx: &mut Context<'_>) -> Progress {
        self.cancel(cx);
        if self.remaining > 0 && !cx.send_file(&self.file, self.offset, self.remaining) {
            return Progress::Failed;
        }
        self.offset += self.remaining;
        self.remaining = 0;
        Progress::Queued
    }

    /// Whether `timer` is this body's stall watchdog. If so, nothing drained
    /// for the stall timeout: the rest is queued ([`FileBody::queue_rest`])
    /// and the owner should close the connection.
    pub fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) -> bool {
        if self.watchdog != Some(timer) {
            return false;
        }
        self.watchdog = None;
        self.queue_rest(cx);
        true
    }

    /// Stops the stall watchdog (the body is done with or given up on).
    pub fn cancel(&mut self, cx: &mut Context<'_>) {
        if let Some(watchdog) = self.watchdog.take() {
            cx.cancel_timer(watchdog);
        }
    }

    fn arm_watchdog(&mut self, cx: &mut Context<'_>) {
        let pushed_back = self.watchdog.is_some_and(|w| cx.reset_timer(w, self.stall));
        if !pushed_back {
            self.watchdog = cx.set_timer(self.stall);
        }
    }
}
