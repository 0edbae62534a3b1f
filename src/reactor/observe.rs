//! What the reactor shows of itself ([`crate::metrics`]): its counters as
//! a snapshot, the flight recorder, the connection list, and the settings
//! of the watchdog and the recorder.

use std::time::Duration;

use crate::metrics::{ConnectionInfo, Snapshot, TraceEvent};

use super::Reactor;

impl Reactor {
    /// A copy of the loop's counters and gauges ([`crate::metrics`]).
    /// From another thread: [`Handle::metrics`](crate::Handle::metrics).
    pub fn metrics(&self) -> Snapshot {
        self.core.snapshot()
    }

    /// The flight recorder's events, oldest first.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::net::TcpStream;
    /// use evloop::metrics::What;
    /// use evloop::{protocols::echo::Echo, Addr, ConnState, Reactor};
    ///
    /// let mut reactor = Reactor::new()?;
    /// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &Addr| Echo)?;
    /// let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("a TCP listener");
    /// drop(TcpStream::connect(addr)?); // connects, then sends FIN
    /// while reactor.metrics().closed_total() == 0 {
    ///     reactor.run_once(Some(std::time::Duration::from_millis(10)))?;
    /// }
    /// let story: Vec<What> = reactor.trace().iter().map(|e| e.what).collect();
    /// assert!(matches!(story[0], What::Accepted { .. }));
    /// assert!(story.contains(&What::State { from: ConnState::Open, to: ConnState::ReadClosed }));
    /// assert!(matches!(story.last(), Some(What::Closed(_))));
    /// # Ok(())
    /// # }
    /// ```
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.core.trace_events().copied().collect()
    }

    /// Writes the flight recorder to the log at warn level, oldest event
    /// first. From another thread: [`Handle::dump_trace`](crate::Handle::dump_trace).
    pub fn dump_trace(&self) {
        self.core.services.recorder.dump("on request");
    }

    /// Every stream connection, in key order: peer, state, age, queued
    /// output, and the last event the flight recorder holds for it.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut all = Vec::new();
        self.core.for_each_connection(|info| all.push(info));
        all
    }

    /// Sets the watchdog's threshold: a callback that runs longer is
    /// counted and logged (default
    /// [`DEFAULT_SLOW_CALLBACK`](crate::metrics::DEFAULT_SLOW_CALLBACK),
    /// 10 ms). Callbacks are timed with the kernel's coarse clock, so a
    /// threshold is met to within a tick (1 to 10 ms on Linux): one below a
    /// tick counts only callbacks that span a tick. `None` turns the
    /// watchdog off, and with it the timing of callbacks
    /// ([`Snapshot::callback_time`] stays where it is).
    pub fn set_slow_callback(&mut self, threshold: Option<Duration>) {
        self.core.services.watchdog.threshold = threshold;
    }

    /// Sets how many events the flight recorder keeps (default
    /// [`DEFAULT_TRACE_CAPACITY`](crate::metrics::DEFAULT_TRACE_CAPACITY),
    /// 4,096); 0 turns it off and frees the ring. The newest events are
    /// kept.
    pub fn set_trace_capacity(&mut self, events: usize) {
        self.core.services.recorder.resize(events);
    }
}
