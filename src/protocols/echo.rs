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
//! Always true: the core delivers `on_high_water` right after the `on_data`
//! call whose echo crossed the high watermark, before it reads again, so
//! reading stops there and what is held for a client is at most the high
//! watermark plus one read (64 KiB). With
//! [`Echo::listener_options`] (the watermarks at zero, as the example
//! servers run it) that is one read: the kernel's socket buffers are the
//! only other buffer, and a client that sends without reading costs the
//! server at most about 64 KiB.
//!
//! When the peer shuts its write half, the default `on_read_closed` closes
//! the connection after flushing: the server sends what it still owes, then
//! closes.

use crate::{Addr, ConnectionOptions, Context, DatagramHandler, ListenerOptions, StreamHandler};

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
///
/// To bound what a client that sends without reading costs the server to
/// one read, listen with [`Echo::listener_options`]:
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use evloop::{Addr, Reactor, protocols::echo::Echo};
/// let mut reactor = Reactor::new()?;
/// let addr = "127.0.0.1:7000".parse()?;
/// reactor.listen_tcp_with(addr, Echo::listener_options(), |_: &Addr| Echo)?;
/// reactor.run()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Echo {
    /// Listener options for echo: both watermarks at zero, so reading stops
    /// as soon as any echo is left unsent (at most one read, 64 KiB, is then
    /// held) and resumes once all of it is sent. Other options are the
    /// defaults.
    pub fn listener_options() -> ListenerOptions {
        ListenerOptions {
            connection: ConnectionOptions {
                high_water: 0,
                low_water: 0,
                ..ConnectionOptions::default()
            },
            ..ListenerOptions::default()
        }
    }
}

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
