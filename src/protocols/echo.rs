//! Echo: every byte comes back, in order (TCP and Unix streams); every
//! datagram goes back to its sender unchanged (UDP and Unix datagrams).
//!
//! The stream handler is the smallest complete example of backpressure.
//! Echo produces exactly as much output as it receives, so a peer that
//! sends without reading would make the server buffer without bound. Instead:
//! past the high watermark the handler stops reading (the peer's data then
//! waits in the kernel, and TCP flow control slows the peer down); once the
//! queue has drained to the low watermark, reading resumes.
//!
//! When the peer shuts its write half, the default `on_read_closed` closes
//! the connection after flushing: the server sends what it still owes, then
//! closes.

use crate::{Addr, Context, DatagramHandler, StreamHandler};

/// Echo over a stream connection.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use evloop::{Addr, Reactor, protocols::echo::Echo};
/// let mut reactor = Reactor::new()?;
/// reactor.listen_tcp("127.0.0.1:7000".parse()?, |_: &Addr| Echo::default())?;
/// reactor.run()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl StreamHandler for Echo {
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        // Written straight to the socket if nothing is queued; only what the
        // socket does not take now is copied into the write queue.
        cx.send(data);
        data.len()
    }

    fn on_high_water(&mut self, cx: &mut Context<'_>) {
        cx.pause_reading();
    }

    fn on_drain(&mut self, cx: &mut Context<'_>) {
        cx.resume_reading();
    }
}

/// Echo over a datagram socket: each datagram back to its sender.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoDatagram;

impl DatagramHandler for EchoDatagram {
    fn on_datagram(&mut self, cx: &mut Context<'_>, data: &[u8], from: &Addr) {
        cx.send_datagram(from, data);
    }
}
