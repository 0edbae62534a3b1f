//! Datagram socket events: flush what waits, then receive.

use std::io;

use log::trace;

use crate::datagram::Datagram;
use crate::handler::guarded;
use crate::metrics::What;
use crate::source::Source;
use crate::{Context, Key};

use super::Core;

impl Core {
    pub(crate) fn datagram_mut(&mut self, key: Key) -> Option<&mut Datagram> {
        match self.sources.get_mut(key) {
            Some(Source::Datagram(dgram)) => Some(dgram),
            _ => None,
        }
    }

    /// One datagram socket event: send what waits, then receive.
    pub(crate) fn datagram_event(&mut self, key: Key, event: &mio::event::Event, scratch: &mut [u8]) {
        if event.is_writable() {
            if let Some(dgram) = self.datagram_mut(key) {
                dgram.flush(key);
            }
        }
        if event.is_readable() || event.is_error() {
            self.receive_datagrams(key, scratch);
        }
    }

    /// Sends one datagram from socket `key` (or queues it while the socket
    /// is full). Returns `false` if it was dropped.
    pub(crate) fn send_datagram(&mut self, key: Key, to: &crate::Addr, data: &[u8]) -> bool {
        let sent = match self.datagram_mut(key) {
            Some(dgram) => dgram.send(key, to, data),
            None => return false,
        };
        if sent {
            let counters = &mut self.services.counters;
            counters.datagrams_sent += 1;
            counters.bytes_written += data.len() as u64;
            let what = What::DatagramOut(data.len() as u64);
            self.services.recorder.record(key, what);
        }
        sent
    }

    /// Receives datagrams until `WouldBlock` or the read budget.
    pub(crate) fn receive_datagrams(&mut self, key: Key, scratch: &mut [u8]) {
        // Datagrams are small: allow more of them than stream reads per turn.
        let budget = self.services.read_budget * 16;
        for _ in 0..budget {
            let Some(dgram) = self.datagram_mut(key) else {
                return;
            };
            let mut own = match dgram.socket.oversized(scratch.len()) {
                Ok(size) => size.map(|len| vec![0; len]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                // Any other error is the receive's to report.
                Err(_) => None,
            };
            let buf: &mut [u8] = match own.as_mut() {
                Some(own) => own,
                None => &mut *scratch,
            };
            let (n, from) = match dgram.socket.recv_from(buf) {
                Ok(got) => got,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    trace!("{key}: receive error {err}, going on");
                    continue;
                }
            };
            let Some(handler) = dgram.handler.take() else {
                return;
            };
            let counters = &mut self.services.counters;
            counters.datagrams_received += 1;
            counters.bytes_read += n as u64;
            self.services.recorder.record(key, What::DatagramIn(n as u64));
            // The handler moves into the guarded call and back out: a panic
            // drops it as it unwinds, and the socket goes.
            let started = self.callback_start();
            let back = guarded(key, "on_datagram", "removing the socket", || {
                let mut handler = handler;
                handler.on_datagram(&mut Context::new(self, key), &buf[..n], &from);
                handler
            });
            self.callback_done(started, Some(key), "on_datagram");
            let Some(handler) = back else {
                self.note_panic(Some(key), "on_datagram");
                return self.handler_panicked(key);
            };
            match self.datagram_mut(key) {
                Some(dgram) => dgram.handler = Some(handler),
                None => return,
            }
        }
        self.services.ready.push_back(key);
    }
}
