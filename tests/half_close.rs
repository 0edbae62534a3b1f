//! Half-close in both directions: a peer's FIN leaves our write half open,
//! `Context::shutdown_write` leaves our read half open; and the connection
//! state machine (`ConnState`) as a table of (state, input) -> state, each
//! row driven through a real socket pair one loop turn at a time.
mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use evloop::protocols::echo::Echo;
use evloop::{
    Addr, CloseReason, ConnState, ConnectionOptions, Context, Key, ListenerOptions, Reactor, StreamHandler,
};

#[test]
fn echo_sends_everything_owed_after_the_client_half_closes_then_eof() {
    let server = start(|reactor| {
        let key = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr");
        (key, addr)
    });
    let (listener, addr) = server.info;
    let mut client = connect(addr);
    let data = pattern(1024 * 1024, 4);
    // All of it is sent, and the write half shut, before anything is read:
    // the server still owes nearly the whole echo when the FIN arrives.
    let mut writer = client.try_clone().expect("clone");
    let sent = data.clone();
    let sender = std::thread::spawn(move || {
        write_all(&mut writer, &sent);
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let back = read_to_end(&mut client);
    sender.join().expect("writer thread");
    assert!(back == data, "got {} of {} bytes", back.len(), data.len());
    server.wait_until("the server side is gone", move |r| {
        r.connection_count(listener) == 0
    });
    assert_eq!(server.shutdown(STEP), 0);
}

/// Answers the peer's FIN with a farewell, then closes: the write half
/// must still be open after the read half closed.
struct ByeOnFin(mpsc::Sender<String>);

impl StreamHandler for ByeOnFin {
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        let _ = self.0.send(format!("data {}", String::from_utf8_lossy(data)));
        data.len()
    }
    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        let _ = self.0.send(format!("read closed, {:?}", cx.state()));
        let _ = self.0.send(format!("bye taken: {}", cx.send(b"bye")));
        cx.close();
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.0.send(format!("close {reason:?}"));
    }
}

#[test]
fn handler_keeps_writing_after_the_peer_fin() {
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let key = reactor
            .listen_tcp(any_port(), move |_: &Addr| ByeOnFin(tx.clone()))
            .expect("listen");
        reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr")
    });
    let mut client = connect(server.info);
    write_all(&mut client, b"hello");
    assert_eq!(rx.recv_timeout(STEP).expect("data"), "data hello");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_end(&mut client), b"bye", "the farewell, then EOF");
    let events: Vec<String> = (0..3).map(|_| rx.recv_timeout(STEP).expect("event")).collect();
    assert_eq!(
        events,
        ["read closed, Some(ReadClosed)", "bye taken: true", "close Closed"]
    );
    drop(client);
    assert_eq!(server.shutdown(STEP), 0);
}

/// Sends a greeting and shuts its write half at once; afterwards reports
/// what it receives and whether sends are refused.
struct ShutWriteFirst(mpsc::Sender<String>);

impl StreamHandler for ShutWriteFirst {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.send(b"only this");
        cx.shutdown_write();
    }
    fn on_data(&mut self, cx: &mut Context<'_>, data: &[u8]) -> usize {
        let refused = !cx.send(b"x");
        let _ = self.0.send(format!(
            "{} (send refused: {refused})",
            String::from_utf8_lossy(data)
        ));
        data.len()
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let _ = self.0.send(format!("close {reason:?}"));
    }
}

#[test]
fn shutdown_write_sends_eof_and_input_still_arrives() {
    let (tx, rx) = mpsc::channel();
    let server = start(move |reactor| {
        let key = reactor
            .listen_tcp(any_port(), move |_: &Addr| ShutWriteFirst(tx.clone()))
            .expect("listen");
        let addr = reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr");
        (key, addr)
    });
    let (listener, addr) = server.info;
    let mut client = connect(addr);
    assert_eq!(read_to_end(&mut client), b"only this", "queued bytes, then EOF");
    // One small write arrives in one read on loopback.
    write_all(&mut client, b"still heard");
    assert_eq!(
        rx.recv_timeout(STEP).expect("handler received"),
        "still heard (send refused: true)"
    );
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(rx.recv_timeout(STEP).expect("closed"), "close PeerClosed");
    server.wait_until("connection gone after both FINs", move |r| {
        r.connection_count(listener) == 0
    });
    assert_eq!(server.shutdown(STEP), 0);
}

// ---------------------------------------------------------------------------
// The state machine, row by row. The loop runs on the test thread; the
// handler acts when told, from a 1 ms repeating timer, so every input is
// applied between two turns and every state in between can be observed.

/// Output big enough that loopback socket buffers cannot take it all while
/// the client does not read.
const FILL: usize = 16 * 1024 * 1024;

type Action = Box<dyn FnOnce(&mut Context<'_>)>;

#[derive(Default)]
struct Log {
    key: Option<Key>,
    todo: VecDeque<Action>,
    received: Vec<u8>,
    read_closed: usize,
    closed: Option<String>,
}

/// Does what the test queues; records input, FINs and the close reason.
struct Scripted {
    log: Rc<RefCell<Log>>,
    close_on_fin: bool,
}

impl StreamHandler for Scripted {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.log.borrow_mut().key = Some(cx.key());
        cx.set_repeating(Duration::from_millis(1)).expect("timer");
    }
    fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize {
        self.log.borrow_mut().received.extend_from_slice(data);
        data.len()
    }
    fn on_read_closed(&mut self, cx: &mut Context<'_>) {
        self.log.borrow_mut().read_closed += 1;
        if self.close_on_fin {
            cx.close();
        }
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, _timer: evloop::TimerId) {
        let todo: Vec<Action> = self.log.borrow_mut().todo.drain(..).collect();
        for action in todo {
            action(cx);
        }
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, reason: &CloseReason) {
        let mut log = self.log.borrow_mut();
        assert!(log.closed.is_none(), "on_close twice");
        log.closed = Some(format!("{reason:?}"));
    }
}

/// One input to the state machine, from either side.
#[derive(Clone, Copy, Debug)]
enum Input {
    /// The handler queues more than the socket takes.
    Fill,
    /// The client reads everything the server sends, until the server's
    /// queue is empty.
    PeerReads,
    PeerFin,
    PeerData,
    /// The client's socket is closed with `SO_LINGER` 0: a reset.
    PeerReset,
    Close,
    ShutdownWrite,
    Abort,
    /// The handler stops reading (not a state: the connection stays Open).
    PauseReading,
    /// Nothing happens: time passes (for the drain and linger timeouts).
    Idle,
}

/// Where a row must end.
#[derive(Clone, Copy, Debug)]
enum Then {
    /// Still a connection, in this state.
    State(ConnState),
    /// Removed, `on_close` given this reason.
    Gone(&'static str),
}

/// `(setup, state after setup, input, expected result, input delivered?)`
type Row = (&'static [Input], ConnState, &'static [Input], Then, bool);

use ConnState::*;
use Input::*;

/// Each row starts from a fresh connection: `setup` brings it to the
/// first state, `input` must lead to the result.
#[rustfmt::skip]
const ROWS: &[Row] = &[
    (&[],                     Open,                          &[PeerData],         Then::State(Open), true),
    (&[],                     Open,                          &[PeerFin],          Then::State(ReadClosed), false),
    (&[Fill],                 Open,                          &[ShutdownWrite],    Then::State(WriteClosing), false),
    (&[],                     Open,                          &[ShutdownWrite],    Then::State(WriteClosed), false),
    (&[Fill],                 Open,                          &[Close],            Then::State(Draining { peer_done: false }), false),
    (&[],                     Open,                          &[Close],            Then::State(Lingering), false),
    (&[Fill],                 Open,                          &[Abort],            Then::Gone("Aborted"), false),
    (&[],                     Open,                          &[PeerReset],        Then::Gone("Error"), false),
    (&[PauseReading],         Open,                          &[PeerReset],        Then::Gone("Error"), false),
    (&[Fill, PeerFin],        ReadClosed,                    &[Close],            Then::State(Draining { peer_done: true }), false),
    (&[PeerFin],              ReadClosed,                    &[Close],            Then::Gone("Closed"), false),
    (&[Fill, PeerFin],        ReadClosed,                    &[ShutdownWrite],    Then::State(Draining { peer_done: true }), false),
    (&[PeerFin],              ReadClosed,                    &[Fill, PeerReads],  Then::State(ReadClosed), false),
    (&[PeerFin],              ReadClosed,                    &[PeerReset],        Then::Gone("Error"), false),
    (&[Fill, ShutdownWrite],  WriteClosing,                  &[PeerData],         Then::State(WriteClosing), true),
    (&[Fill, ShutdownWrite],  WriteClosing,                  &[PeerFin],          Then::State(Draining { peer_done: true }), false),
    (&[Fill, ShutdownWrite],  WriteClosing,                  &[PeerReads],        Then::State(WriteClosed), false),
    (&[ShutdownWrite],        WriteClosed,                   &[PeerData],         Then::State(WriteClosed), true),
    (&[ShutdownWrite],        WriteClosed,                   &[PeerFin],          Then::Gone("PeerClosed"), false),
    (&[ShutdownWrite],        WriteClosed,                   &[Close],            Then::Gone("Closed"), false),
    (&[Fill, Close],          Draining { peer_done: false }, &[PeerData, PeerFin], Then::State(Draining { peer_done: true }), false),
    (&[Fill, Close],          Draining { peer_done: false }, &[PeerReads],        Then::State(Lingering), false),
    (&[Fill, Close],          Draining { peer_done: false }, &[Idle],             Then::Gone("DrainTimeout"), false),
    (&[Fill, PeerFin, Close], Draining { peer_done: true },  &[PeerReads],        Then::Gone("Closed"), false),
    (&[Close],                Lingering,                     &[PeerData, PeerFin], Then::Gone("Closed"), false),
    (&[Close],                Lingering,                     &[Idle],             Then::Gone("Closed"), false),
    (&[Close],                Lingering,                     &[PeerReset],        Then::Gone("Error"), false),
];

/// A reactor with one listener, one client and its accepted connection.
struct Rig {
    reactor: Reactor,
    log: Rc<RefCell<Log>>,
    client: Option<TcpStream>,
    key: Key,
    /// Bytes the client has read.
    read: usize,
    eof: bool,
}

impl Rig {
    #[track_caller]
    fn new(close_on_fin: bool) -> Rig {
        let _ = env_logger::builder().is_test(true).try_init();
        let mut reactor = Reactor::new().expect("reactor");
        let log: Rc<RefCell<Log>> = Rc::default();
        let options = ListenerOptions {
            connection: ConnectionOptions {
                max_queued: 4 * FILL,
                // Short enough for the `Idle` rows, long enough that a row
                // that reads never sees them.
                drain_timeout: Duration::from_millis(300),
                linger: Duration::from_millis(300),
                ..ConnectionOptions::default()
            },
            ..ListenerOptions::default()
        };
        let factory_log = Rc::clone(&log);
        let listener = reactor
            .listen_tcp_with(any_port(), options, move |_: &Addr| Scripted {
                log: Rc::clone(&factory_log),
                close_on_fin,
            })
            .expect("listen");
        let addr = reactor
            .local_addr(listener)
            .and_then(|a| a.as_inet())
            .expect("addr");
        let client = connect(addr);
        client.set_nonblocking(true).expect("non-blocking client");
        let mut rig = Rig {
            reactor,
            log,
            client: Some(client),
            key: listener,
            read: 0,
            eof: false,
        };
        rig.turn_until("accepted", |rig| rig.log.borrow().key.is_some());
        rig.key = rig.log.borrow().key.expect("opened");
        rig
    }

    fn state(&self) -> Option<ConnState> {
        self.reactor.connection_state(self.key)
    }

    fn client(&mut self) -> &mut TcpStream {
        self.client.as_mut().expect("the client is still open")
    }

    /// Reads what the client has, without blocking.
    fn client_reads(&mut self) {
        let mut buf = vec![0; 256 * 1024];
        while !self.eof {
            match self.client().read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.read += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("client read: {e}"),
            }
        }
    }

    #[track_caller]
    fn turn_until(&mut self, what: &str, done: impl Fn(&mut Rig) -> bool) {
        let deadline = Instant::now() + STEP;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out: {what}");
            self.reactor
                .run_once(Some(Duration::from_millis(5)))
                .expect("turn");
        }
    }

    /// Has the handler run `action` on its next timer tick.
    #[track_caller]
    fn act(&mut self, action: impl FnOnce(&mut Context<'_>) + 'static) {
        self.log.borrow_mut().todo.push_back(Box::new(action));
        self.turn_until("the handler acted", |rig| rig.log.borrow().todo.is_empty());
    }

    #[track_caller]
    fn apply(&mut self, input: Input) {
        match input {
            Fill => self.act(|cx| {
                assert!(cx.send_vec(vec![b'f'; FILL]), "send taken");
                assert!(cx.queued_bytes() > 0, "the socket took all {FILL} bytes");
            }),
            PeerReads => self.turn_until("the server's queue emptied", |rig| {
                rig.client_reads();
                rig.state().is_none() || rig.queue_empty()
            }),
            PeerFin => self.client().shutdown(Shutdown::Write).expect("client FIN"),
            PeerData => write_all(self.client(), b"ping"),
            PeerReset => {
                let client = self.client.take().expect("the client is still open");
                reset_on_close(&client);
            }
            Close => self.act(|cx| cx.close()),
            ShutdownWrite => self.act(|cx| cx.shutdown_write()),
            Abort => self.act(|cx| cx.abort()),
            PauseReading => self.act(|cx| cx.pause_reading()),
            Idle => {}
        }
    }

    /// Whether the server has nothing left to send (asked of the handler).
    fn queue_empty(&mut self) -> bool {
        let empty = Rc::new(RefCell::new(None));
        let answer = Rc::clone(&empty);
        self.log.borrow_mut().todo.push_back(Box::new(move |cx| {
            *answer.borrow_mut() = Some(cx.queued_bytes() == 0)
        }));
        let deadline = Instant::now() + STEP;
        while empty.borrow().is_none() && self.state().is_some() {
            assert!(Instant::now() < deadline, "the handler never answered");
            self.reactor
                .run_once(Some(Duration::from_millis(5)))
                .expect("turn");
        }
        let answer = *empty.borrow();
        answer.unwrap_or(true)
    }
}

#[track_caller]
fn run_row(close_on_fin: bool, (setup, from, input, then, delivered): Row) {
    let row = format!("{from:?} --{input:?}--> {then:?} (after {setup:?})");
    let mut rig = Rig::new(close_on_fin);
    for &step in setup {
        rig.apply(step);
    }
    rig.turn_until(&format!("{row}: reach {from:?}"), |rig| rig.state() == Some(from));
    for &step in input {
        rig.apply(step);
    }
    match then {
        Then::State(state) => rig.turn_until(&format!("{row}: state {:?}", rig.state()), |rig| {
            rig.state() == Some(state) && (!delivered || rig.log.borrow().received == b"ping")
        }),
        Then::Gone(reason) => {
            rig.turn_until(&format!("{row}: removal"), |rig| {
                rig.log.borrow().closed.is_some()
            });
            let closed = rig.log.borrow().closed.clone().expect("closed");
            assert!(closed.starts_with(reason), "{row}: closed with {closed}");
            assert!(!rig.reactor.contains(rig.key), "{row}: still registered");
        }
    }
    if !delivered {
        assert_eq!(rig.log.borrow().received, b"", "{row}: input delivered");
    }
}

#[test]
fn connection_state_transitions_follow_the_table() {
    for &row in ROWS {
        run_row(false, row);
    }
}

/// The default `on_read_closed` closes. After our own FIN that close and
/// the peer's FIN mean the same: both halves are done, which `on_close`
/// must report as the peer's doing, as the table says.
#[test]
fn peer_fin_after_our_fin_is_peer_closed_even_when_the_handler_closes_on_fin() {
    run_row(
        true,
        (
            &[ShutdownWrite],
            WriteClosed,
            &[PeerFin],
            Then::Gone("PeerClosed"),
            false,
        ),
    );
}

/// Input that arrives while a close flushes is read and discarded, not
/// delivered: a handler that closed is never called with data again, and
/// everything it queued before closing still arrives, then EOF.
#[test]
fn input_while_closing_is_discarded_not_delivered() {
    let mut rig = Rig::new(false);
    rig.apply(Fill);
    rig.apply(Close);
    rig.apply(PeerData);
    rig.apply(PeerReads);
    rig.turn_until("our FIN after the flush", |rig| {
        rig.client_reads();
        rig.eof
    });
    assert_eq!(rig.read, FILL, "everything queued before the close arrived");
    assert_eq!(rig.log.borrow().received, b"");
    assert_eq!(rig.log.borrow().read_closed, 0);
}

/// After our `shutdown_write`, the peer's FIN turns a connection whose
/// queue is still flushing into `Draining`: like every close, that flush
/// is bounded by the drain timeout, so a peer that never reads cannot keep
/// the connection forever.
#[test]
fn peer_fin_while_our_write_half_closes_is_bounded_by_the_drain_timeout() {
    run_row(
        false,
        (
            &[Fill, ShutdownWrite, PeerFin],
            Draining { peer_done: true },
            &[Idle],
            Then::Gone("DrainTimeout"),
            false,
        ),
    );
}
