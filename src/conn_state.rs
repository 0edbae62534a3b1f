//! The life of a stream connection as data: [`State`] (with what belongs to
//! each state, such as a pending close or its deadline's timer), the
//! [`Input`]s that move it, the [`Action`]s a move asks for, and one pure
//! function, [`next`], from (state, input) to (state, actions). No socket,
//! no handler, no clock: the core performs the actions
//! (`Core::apply` in `connection.rs`), and the tests below check every pair.
//!
//! The public face of a state is [`ConnState`], what
//! [`crate::Context::state`] reports.
//!
//! Always true of [`next`]:
//! - `Closed` is final: every input leaves it as it is and asks for nothing;
//! - every move into `Closed` asks for exactly one [`Action::Finish`], and
//!   only moves into `Closed` do;
//! - a state that waits for a deadline (a close while connecting, draining
//!   with output queued, lingering) is entered with the action that arms it
//!   ([`Action::ArmDrain`], [`Action::ArmLinger`]); its timer is stored in
//!   the state, and the core cancels the timer of a state it leaves;
//! - the handler hears `on_open` once, when a connect completes, unless it
//!   closed while connecting.

use std::fmt;

use crate::TimerId;

/// The life of a stream connection, as a handler sees it.
///
/// ```text
/// Connecting  --writable, no socket error------> Open
/// Connecting  --socket error-------------------> Closed (ConnectFailed; a reset: Error)
/// Connecting  --handler close, nothing queued--> Closed
/// Connecting  --handler close, output queued---> (connected) Draining, no on_open
/// Connecting  --handler shutdown_write---------> (connected) WriteClosing, then on_open
/// Open        --peer FIN (read of 0)-----------> ReadClosed
/// Open        --handler shutdown_write---------> WriteClosing
/// Open        --handler close------------------> Draining
/// ReadClosed  --handler close / shutdown_write-> Draining
/// WriteClosing --queue empty, FIN sent---------> WriteClosed
/// WriteClosing --peer FIN----------------------> Draining (peer done)
/// WriteClosed --peer FIN-----------------------> Closed (PeerClosed)
/// WriteClosed --handler close------------------> Closed
/// Draining    --queue empty, peer done---------> Closed
/// Draining    --queue empty, FIN sent----------> Lingering
/// Draining    --no progress for drain_timeout--> Closed (DrainTimeout)
/// Lingering   --peer FIN, error or linger------> Closed
/// any         --IO error, abort, overflow------> Closed
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// An outbound connect is in progress. In: [`crate::Context::connect`].
    /// Sends are queued. Out: the socket turns writable.
    Connecting,
    /// Both halves open. In: accepted, or connected. Out: a FIN either way,
    /// a close, an error.
    Open,
    /// The peer sent FIN; no more input. Sends go on. Out: the handler
    /// closes (the default on `on_read_closed`).
    ReadClosed,
    /// The handler shut its write half: the queue is flushing, then a FIN
    /// goes out. Input is still delivered; sends are refused.
    WriteClosing,
    /// Our FIN is sent; input is still delivered. Out: the peer's FIN.
    WriteClosed,
    /// The handler closed: the queue is flushing; input is read and
    /// discarded; sends are refused.
    Draining {
        /// The peer's FIN was seen, so no lingering is needed.
        peer_done: bool,
    },
    /// Our FIN is out after a close; input is discarded until the peer's
    /// FIN or [`crate::ConnectionOptions::linger`].
    Lingering,
    /// Finished. The socket closes when the reactor drops the connection,
    /// right after `on_close`.
    Closed,
}

impl ConnState {
    /// Whether input is delivered to the handler (the read half is open and
    /// the handler has not closed).
    pub fn may_receive(self) -> bool {
        matches!(
            self,
            ConnState::Open | ConnState::WriteClosing | ConnState::WriteClosed
        )
    }

    /// Whether sends are accepted: Connecting, Open or ReadClosed.
    pub fn may_send(self) -> bool {
        matches!(
            self,
            ConnState::Connecting | ConnState::Open | ConnState::ReadClosed
        )
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ConnState::Connecting => "CONNECTING",
            ConnState::Open => "OPEN",
            ConnState::ReadClosed => "READ-CLOSED",
            ConnState::WriteClosing => "WRITE-CLOSING",
            ConnState::WriteClosed => "WRITE-CLOSED",
            ConnState::Draining { .. } => "DRAINING",
            ConnState::Lingering => "LINGERING",
            ConnState::Closed => "CLOSED",
        };
        f.write_str(name)
    }
}

/// What a handler asked for while its connect was in progress, done once
/// the connect completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Then {
    /// Nothing: open, and tell the handler.
    Open,
    /// Shut the write half after the queued output; the handler still gets
    /// `on_open`.
    ShutdownWrite,
    /// Close after the queued output; the handler gets no `on_open`. The
    /// drain deadline covers the connect too.
    Close,
}

/// A connection's state, with what belongs to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Connecting; `drain` runs while `then` is [`Then::Close`].
    Connecting {
        then: Then,
        drain: Option<TimerId>,
    },
    Open,
    ReadClosed,
    WriteClosing,
    WriteClosed,
    /// Flushing after a close; `drain` runs while output is queued.
    Draining {
        peer_done: bool,
        drain: Option<TimerId>,
    },
    /// Our FIN is out; waiting for the peer's, at most until `linger`.
    Lingering {
        linger: Option<TimerId>,
    },
    Closed,
}

/// What happens to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    /// An outbound connect completed.
    Connected,
    /// A read returned 0: the peer's FIN.
    PeerFin,
    /// The write queue became empty.
    QueueEmpty,
    /// The handler closed (after flushing).
    Close,
    /// The handler shut its write half (after flushing).
    ShutdownWrite,
    /// The drain deadline passed with no progress.
    DrainTimeout,
    /// The linger deadline passed.
    LingerTimeout,
    /// An error ends the connection (a read error, a failed connect, too
    /// much unconsumed input): closed with the caller's reason.
    Fail,
    /// The connection is cut with a reset (an abort, a write error, output
    /// over its cap, a handler that panicked): closed with the caller's
    /// reason.
    Abort,
}

/// Why a connection closed, as the machine knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// A close that completed ([`crate::CloseReason::Closed`]).
    Closed,
    /// Both halves done, the peer's last ([`crate::CloseReason::PeerClosed`]).
    PeerClosed,
    /// [`crate::CloseReason::DrainTimeout`].
    DrainTimeout,
    /// The reason that came with [`Input::Fail`] or [`Input::Abort`].
    Given,
}

/// What a move asks the core to do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Call the handler's `on_open`.
    NotifyOpen,
    /// Call the handler's `on_read_closed`.
    NotifyReadClosed,
    /// Shut the socket's write half: our FIN.
    ShutdownWrite,
    /// Start the drain deadline, replacing any deadline running.
    ArmDrain,
    /// Start the linger deadline, replacing any deadline running.
    ArmLinger,
    /// Read again next turn: a FIN may already be waiting.
    RevisitRead,
    /// Make the close send a reset.
    Reset,
    /// Mark the connection closed, drop its queue and input, and schedule
    /// its removal (and `on_close`).
    Finish(End),
}

/// The actions of one move: at most four, kept inline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Actions {
    list: [Option<Action>; 4],
}

impl Actions {
    fn of(actions: &[Action]) -> Actions {
        let mut out = Actions::default();
        for (slot, action) in out.list.iter_mut().zip(actions) {
            *slot = Some(*action);
        }
        debug_assert!(actions.len() <= out.list.len());
        out
    }

    fn then(mut self, more: Actions) -> Actions {
        let mut free = self.list.iter_mut().filter(|slot| slot.is_none());
        for action in more {
            if let Some(slot) = free.next() {
                *slot = Some(action);
            }
        }
        self
    }
}

impl IntoIterator for Actions {
    type Item = Action;
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<Action>, 4>>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter().flatten()
    }
}

impl State {
    /// The state a handler sees.
    pub(crate) fn public(self) -> ConnState {
        match self {
            State::Connecting { .. } => ConnState::Connecting,
            State::Open => ConnState::Open,
            State::ReadClosed => ConnState::ReadClosed,
            State::WriteClosing => ConnState::WriteClosing,
            State::WriteClosed => ConnState::WriteClosed,
            State::Draining { peer_done, .. } => ConnState::Draining { peer_done },
            State::Lingering { .. } => ConnState::Lingering,
            State::Closed => ConnState::Closed,
        }
    }

    /// Whether the handler may queue output now: as [`ConnState::may_send`],
    /// but not once a close or a shutdown is pending on a connect.
    pub(crate) fn takes_output(self) -> bool {
        matches!(
            self,
            State::Connecting { then: Then::Open, .. } | State::Open | State::ReadClosed
        )
    }

    /// Whether input is delivered to the handler ([`ConnState::may_receive`]).
    pub(crate) fn may_receive(self) -> bool {
        self.public().may_receive()
    }

    /// Whether the socket is still read, to deliver or to discard.
    pub(crate) fn reads_socket(self) -> bool {
        self.may_receive()
            || matches!(
                self,
                State::Draining { peer_done: false, .. } | State::Lingering { .. }
            )
    }

    /// The timer of the deadline this state waits for, if one runs.
    pub(crate) fn timer(self) -> Option<TimerId> {
        match self {
            State::Connecting { drain, .. } | State::Draining { drain, .. } => drain,
            State::Lingering { linger } => linger,
            _ => None,
        }
    }

    /// Stores the timer of this state's deadline; `false` if it has none.
    pub(crate) fn set_timer(&mut self, id: Option<TimerId>) -> bool {
        match self {
            State::Connecting {
                then: Then::Close,
                drain,
            }
            | State::Draining { drain, .. } => *drain = id,
            State::Lingering { linger } => *linger = id,
            _ => return false,
        }
        true
    }
}

/// The move from `state` on `input`, given whether the write queue is empty
/// now: the new state (its timer, if any, set only when it is the one the
/// old state had; otherwise `None` until the core arms it) and what to do.
pub(crate) fn next(state: State, input: Input, queue_empty: bool) -> (State, Actions) {
    use Action::*;
    let stay = (state, Actions::default());
    match (state, input) {
        (State::Closed, _) => stay,
        (_, Input::Fail) => (State::Closed, Actions::of(&[Finish(End::Given)])),
        (_, Input::Abort) => (State::Closed, Actions::of(&[Reset, Finish(End::Given)])),

        (State::Connecting { then, .. }, Input::Connected) => match then {
            Then::Open => (State::Open, Actions::of(&[NotifyOpen])),
            Then::ShutdownWrite => {
                let (state, actions) = next(State::Open, Input::ShutdownWrite, queue_empty);
                (state, actions.then(Actions::of(&[NotifyOpen])))
            }
            Then::Close => next(State::Open, Input::Close, queue_empty),
        },
        (State::Connecting { .. }, Input::Close) if queue_empty => {
            (State::Closed, Actions::of(&[Finish(End::Closed)]))
        }
        (
            State::Connecting {
                then: Then::Close, ..
            },
            Input::Close,
        ) => stay,
        (State::Connecting { .. }, Input::Close) => (
            State::Connecting {
                then: Then::Close,
                drain: None,
            },
            Actions::of(&[ArmDrain]),
        ),
        (
            State::Connecting {
                then: Then::Open,
                drain,
            },
            Input::ShutdownWrite,
        ) => (
            State::Connecting {
                then: Then::ShutdownWrite,
                drain,
            },
            Actions::default(),
        ),
        (
            State::Connecting {
                then: Then::Close, ..
            },
            Input::DrainTimeout,
        ) => (State::Closed, Actions::of(&[Reset, Finish(End::DrainTimeout)])),

        (State::Open, Input::PeerFin) => (State::ReadClosed, Actions::of(&[NotifyReadClosed])),
        (State::Open, Input::ShutdownWrite) if queue_empty => {
            (State::WriteClosed, Actions::of(&[ShutdownWrite]))
        }
        (State::Open, Input::ShutdownWrite) => (State::WriteClosing, Actions::default()),
        (State::Open | State::WriteClosing, Input::Close) => draining(false, queue_empty),

        (State::ReadClosed, Input::Close | Input::ShutdownWrite) => draining(true, queue_empty),

        (State::WriteClosing, Input::QueueEmpty) => (State::WriteClosed, Actions::of(&[ShutdownWrite])),
        (State::WriteClosing, Input::PeerFin) => {
            let drain = if queue_empty {
                Actions::default()
            } else {
                Actions::of(&[ArmDrain])
            };
            let state = State::Draining {
                peer_done: true,
                drain: None,
            };
            (state, drain.then(Actions::of(&[NotifyReadClosed])))
        }

        (State::WriteClosed, Input::PeerFin) => (
            State::Closed,
            Actions::of(&[Finish(End::PeerClosed), NotifyReadClosed]),
        ),
        (State::WriteClosed, Input::Close) => (State::Closed, Actions::of(&[Finish(End::Closed)])),

        (State::Draining { drain, .. }, Input::PeerFin) => (
            State::Draining {
                peer_done: true,
                drain,
            },
            Actions::default(),
        ),
        (State::Draining { peer_done: true, .. }, Input::QueueEmpty) => {
            (State::Closed, Actions::of(&[Finish(End::Closed)]))
        }
        (State::Draining { peer_done: false, .. }, Input::QueueEmpty) => (
            State::Lingering { linger: None },
            Actions::of(&[ShutdownWrite, ArmLinger, RevisitRead]),
        ),
        (State::Draining { .. }, Input::DrainTimeout) => {
            (State::Closed, Actions::of(&[Reset, Finish(End::DrainTimeout)]))
        }

        (State::Lingering { .. }, Input::PeerFin | Input::LingerTimeout) => {
            (State::Closed, Actions::of(&[Finish(End::Closed)]))
        }

        _ => stay,
    }
}

/// A close from Open, WriteClosing or ReadClosed: Draining, then at once
/// what an empty queue means, if it is empty.
fn draining(peer_done: bool, queue_empty: bool) -> (State, Actions) {
    let state = State::Draining {
        peer_done,
        drain: None,
    };
    if queue_empty {
        next(state, Input::QueueEmpty, true)
    } else {
        (state, Actions::of(&[Action::ArmDrain]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    /// One of each state (timers left out: they are carried, not decided).
    fn states() -> Vec<State> {
        let mut states = Vec::new();
        for then in [Then::Open, Then::ShutdownWrite, Then::Close] {
            states.push(State::Connecting { then, drain: None });
        }
        states.extend([
            State::Open,
            State::ReadClosed,
            State::WriteClosing,
            State::WriteClosed,
        ]);
        for peer_done in [false, true] {
            states.push(State::Draining {
                peer_done,
                drain: None,
            });
        }
        states.push(State::Lingering { linger: None });
        states.push(State::Closed);
        states
    }

    const INPUTS: [Input; 9] = [
        Input::Connected,
        Input::PeerFin,
        Input::QueueEmpty,
        Input::Close,
        Input::ShutdownWrite,
        Input::DrainTimeout,
        Input::LingerTimeout,
        Input::Fail,
        Input::Abort,
    ];

    fn connecting(then: Then) -> State {
        State::Connecting { then, drain: None }
    }

    fn draining_state(peer_done: bool) -> State {
        State::Draining {
            peer_done,
            drain: None,
        }
    }

    const LINGERING: State = State::Lingering { linger: None };

    /// Every move that changes something: (state, input, queue empty) ->
    /// (next state, actions). Every pair not listed leaves the state as it
    /// is and asks for nothing (checked below), except Fail and Abort, which
    /// close from every state but Closed.
    fn table() -> Vec<(State, Input, bool, State, Vec<Action>)> {
        let t = true;
        let f = false;
        vec![
            // Connecting
            (
                connecting(Then::Open),
                Input::Connected,
                t,
                State::Open,
                vec![NotifyOpen],
            ),
            (
                connecting(Then::Open),
                Input::Connected,
                f,
                State::Open,
                vec![NotifyOpen],
            ),
            (
                connecting(Then::ShutdownWrite),
                Input::Connected,
                t,
                State::WriteClosed,
                vec![ShutdownWrite, NotifyOpen],
            ),
            (
                connecting(Then::ShutdownWrite),
                Input::Connected,
                f,
                State::WriteClosing,
                vec![NotifyOpen],
            ),
            (
                connecting(Then::Close),
                Input::Connected,
                t,
                LINGERING,
                vec![ShutdownWrite, ArmLinger, RevisitRead],
            ),
            (
                connecting(Then::Close),
                Input::Connected,
                f,
                draining_state(false),
                vec![ArmDrain],
            ),
            (
                connecting(Then::Open),
                Input::Close,
                t,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
            (
                connecting(Then::Open),
                Input::Close,
                f,
                connecting(Then::Close),
                vec![ArmDrain],
            ),
            (
                connecting(Then::ShutdownWrite),
                Input::Close,
                t,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
            (
                connecting(Then::ShutdownWrite),
                Input::Close,
                f,
                connecting(Then::Close),
                vec![ArmDrain],
            ),
            (
                connecting(Then::Close),
                Input::Close,
                t,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
            (
                connecting(Then::Open),
                Input::ShutdownWrite,
                t,
                connecting(Then::ShutdownWrite),
                vec![],
            ),
            (
                connecting(Then::Open),
                Input::ShutdownWrite,
                f,
                connecting(Then::ShutdownWrite),
                vec![],
            ),
            (
                connecting(Then::Close),
                Input::DrainTimeout,
                t,
                State::Closed,
                vec![Reset, Finish(End::DrainTimeout)],
            ),
            (
                connecting(Then::Close),
                Input::DrainTimeout,
                f,
                State::Closed,
                vec![Reset, Finish(End::DrainTimeout)],
            ),
            // Open
            (
                State::Open,
                Input::PeerFin,
                t,
                State::ReadClosed,
                vec![NotifyReadClosed],
            ),
            (
                State::Open,
                Input::PeerFin,
                f,
                State::ReadClosed,
                vec![NotifyReadClosed],
            ),
            (
                State::Open,
                Input::Close,
                t,
                LINGERING,
                vec![ShutdownWrite, ArmLinger, RevisitRead],
            ),
            (
                State::Open,
                Input::Close,
                f,
                draining_state(false),
                vec![ArmDrain],
            ),
            (
                State::Open,
                Input::ShutdownWrite,
                t,
                State::WriteClosed,
                vec![ShutdownWrite],
            ),
            (State::Open, Input::ShutdownWrite, f, State::WriteClosing, vec![]),
            // ReadClosed
            (
                State::ReadClosed,
                Input::Close,
                t,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
            (
                State::ReadClosed,
                Input::Close,
                f,
                draining_state(true),
                vec![ArmDrain],
            ),
            (
                State::ReadClosed,
                Input::ShutdownWrite,
                t,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
            (
                State::ReadClosed,
                Input::ShutdownWrite,
                f,
                draining_state(true),
                vec![ArmDrain],
            ),
            // WriteClosing
            (
                State::WriteClosing,
                Input::QueueEmpty,
                t,
                State::WriteClosed,
                vec![ShutdownWrite],
            ),
            (
                State::WriteClosing,
                Input::QueueEmpty,
                f,
                State::WriteClosed,
                vec![ShutdownWrite],
            ),
            (
                State::WriteClosing,
                Input::PeerFin,
                t,
                draining_state(true),
                vec![NotifyReadClosed],
            ),
            (
                State::WriteClosing,
                Input::PeerFin,
                f,
                draining_state(true),
                vec![ArmDrain, NotifyReadClosed],
            ),
            (
                State::WriteClosing,
                Input::Close,
                t,
                LINGERING,
                vec![ShutdownWrite, ArmLinger, RevisitRead],
            ),
            (
                State::WriteClosing,
                Input::Close,
                f,
                draining_state(false),
                vec![ArmDrain],
            ),
            // WriteClosed
            (
                State::WriteClosed,
                Input::PeerFin,
                t,
                State::Closed,
                vec![Finish(End::PeerClosed), NotifyReadClosed],
            ),
            (
                State::WriteClosed,
                Input::PeerFin,
                f,
                State::Closed,
                vec![Finish(End::PeerClosed), NotifyReadClosed],
            ),
            (
                State::WriteClosed,
                Input::Close,
                t,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
            (
                State::WriteClosed,
                Input::Close,
                f,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
            // Draining
            (
                draining_state(false),
                Input::PeerFin,
                t,
                draining_state(true),
                vec![],
            ),
            (
                draining_state(false),
                Input::PeerFin,
                f,
                draining_state(true),
                vec![],
            ),
            (
                draining_state(false),
                Input::QueueEmpty,
                t,
                LINGERING,
                vec![ShutdownWrite, ArmLinger, RevisitRead],
            ),
            (
                draining_state(false),
                Input::QueueEmpty,
                f,
                LINGERING,
                vec![ShutdownWrite, ArmLinger, RevisitRead],
            ),
            (
                draining_state(true),
                Input::QueueEmpty,
                t,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
            (
                draining_state(true),
                Input::QueueEmpty,
                f,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
            (
                draining_state(false),
                Input::DrainTimeout,
                t,
                State::Closed,
                vec![Reset, Finish(End::DrainTimeout)],
            ),
            (
                draining_state(false),
                Input::DrainTimeout,
                f,
                State::Closed,
                vec![Reset, Finish(End::DrainTimeout)],
            ),
            (
                draining_state(true),
                Input::DrainTimeout,
                t,
                State::Closed,
                vec![Reset, Finish(End::DrainTimeout)],
            ),
            (
                draining_state(true),
                Input::DrainTimeout,
                f,
                State::Closed,
                vec![Reset, Finish(End::DrainTimeout)],
            ),
            // Lingering
            (
                LINGERING,
                Input::PeerFin,
                t,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
            (
                LINGERING,
                Input::PeerFin,
                f,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
            (
                LINGERING,
                Input::LingerTimeout,
                t,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
            (
                LINGERING,
                Input::LingerTimeout,
                f,
                State::Closed,
                vec![Finish(End::Closed)],
            ),
        ]
    }

    #[test]
    fn every_pair_moves_as_the_table_says() {
        let table = table();
        for state in states() {
            for input in INPUTS {
                for queue_empty in [true, false] {
                    let (got, actions) = next(state, input, queue_empty);
                    let actions: Vec<Action> = actions.into_iter().collect();
                    let listed = table
                        .iter()
                        .find(|(s, i, q, ..)| *s == state && *i == input && *q == queue_empty);
                    let want = match (listed, state, input) {
                        (Some((.., next, actions)), ..) => (*next, actions.clone()),
                        (None, State::Closed, _) => (State::Closed, vec![]),
                        (None, _, Input::Fail) => (State::Closed, vec![Finish(End::Given)]),
                        (None, _, Input::Abort) => (State::Closed, vec![Reset, Finish(End::Given)]),
                        (None, ..) => (state, vec![]),
                    };
                    assert_eq!(
                        (got, actions),
                        want,
                        "{state:?} on {input:?}, queue empty: {queue_empty}"
                    );
                }
            }
        }
    }

    #[test]
    fn closed_is_final_and_every_way_into_it_finishes_once() {
        for state in states() {
            for input in INPUTS {
                for queue_empty in [true, false] {
                    let (got, actions) = next(state, input, queue_empty);
                    let finishes = actions.into_iter().filter(|a| matches!(a, Finish(_))).count();
                    if state == State::Closed {
                        assert_eq!((got, finishes), (State::Closed, 0));
                    } else {
                        assert_eq!(
                            finishes,
                            usize::from(got == State::Closed),
                            "{state:?} on {input:?}"
                        );
                    }
                }
            }
        }
    }

    /// The deadline a state waits for, by name.
    fn deadline(state: State) -> Option<&'static str> {
        match state {
            State::Connecting {
                then: Then::Close, ..
            }
            | State::Draining { .. } => Some("drain"),
            State::Lingering { .. } => Some("linger"),
            _ => None,
        }
    }

    #[test]
    fn states_with_a_deadline_are_entered_with_the_action_that_arms_it() {
        for state in states() {
            for input in INPUTS {
                for queue_empty in [true, false] {
                    let (got, actions) = next(state, input, queue_empty);
                    // Entered: a deadline the old state did not run (a FIN
                    // while draining keeps the one it has). Draining with
                    // nothing queued waits for nothing: the empty queue
                    // moves it on at once.
                    let entered = deadline(got).is_some() && deadline(got) != deadline(state);
                    if !entered || (matches!(got, State::Draining { .. }) && queue_empty) {
                        continue;
                    }
                    let arm = match deadline(got) {
                        Some("linger") => ArmLinger,
                        _ => ArmDrain,
                    };
                    assert!(
                        actions.into_iter().any(|a| a == arm),
                        "{state:?} on {input:?} enters {got:?} without {arm:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn timers_are_carried_by_moves_that_keep_the_deadline() {
        let id = TimerId(crate::Key::new(7, 1));
        let draining = State::Draining {
            peer_done: false,
            drain: Some(id),
        };
        let (got, _) = next(draining, Input::PeerFin, false);
        assert_eq!(got.timer(), Some(id), "a FIN while draining keeps the deadline");
        let (got, _) = next(draining, Input::QueueEmpty, true);
        assert_eq!(got.timer(), None, "lingering gets its own deadline");
        let mut lingering = got;
        assert!(lingering.set_timer(Some(id)));
        assert_eq!(lingering.timer(), Some(id));
        assert!(!State::Open.set_timer(Some(id)));
    }

    #[test]
    fn only_an_open_connect_open_or_read_closed_takes_output() {
        let takes: Vec<State> = states().into_iter().filter(|s| s.takes_output()).collect();
        assert_eq!(takes, [connecting(Then::Open), State::Open, State::ReadClosed]);
        for state in states() {
            assert!(!state.takes_output() || state.public().may_send());
        }
    }

    /// The state table in `docs/architecture.md`, made from [`next`].
    fn rendered_table() -> String {
        fn label(state: State) -> String {
            match state {
                State::Connecting { then, .. } => format!("Connecting ({then:?})"),
                State::Draining { peer_done: true, .. } => "Draining (peer done)".to_owned(),
                State::Draining { .. } => "Draining".to_owned(),
                State::Lingering { .. } => "Lingering".to_owned(),
                State::Open => "Open".to_owned(),
                State::ReadClosed => "ReadClosed".to_owned(),
                State::WriteClosing => "WriteClosing".to_owned(),
                State::WriteClosed => "WriteClosed".to_owned(),
                State::Closed => "Closed".to_owned(),
            }
        }
        let mut out = String::from("| state | input | queue | next | actions |\n|---|---|---|---|---|\n");
        for state in states() {
            if state == State::Closed {
                continue;
            }
            for input in INPUTS {
                if matches!(input, Input::Fail | Input::Abort) {
                    continue;
                }
                let (empty, empty_actions) = next(state, input, true);
                let (full, full_actions) = next(state, input, false);
                let same = empty == full && empty_actions == full_actions;
                for (queue, (got, actions)) in [
                    ("empty", (empty, empty_actions)),
                    ("queued", (full, full_actions)),
                ] {
                    if got == state && actions == Actions::default() {
                        continue;
                    }
                    let queue = if same { "either" } else { queue };
                    let actions: Vec<String> = actions.into_iter().map(|a| format!("{a:?}")).collect();
                    out.push_str(&format!(
                        "| {} | {input:?} | {queue} | {} | {} |\n",
                        label(state),
                        label(got),
                        if actions.is_empty() {
                            "-".to_owned()
                        } else {
                            actions.join(", ")
                        }
                    ));
                    if same {
                        break;
                    }
                }
            }
        }
        out.push_str("| any but Closed | Fail | either | Closed | Finish(Given) |\n");
        out.push_str("| any but Closed | Abort | either | Closed | Reset, Finish(Given) |\n");
        out
    }

    #[test]
    fn the_architecture_page_shows_this_machine() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/architecture.md");
        let page = std::fs::read_to_string(path).expect("docs/architecture.md");
        let table = rendered_table();
        if std::env::var_os("EVLOOP_WRITE_STATE_TABLE").is_some() {
            let start = page
                .find("| state | input | queue |")
                .expect("a state table to replace");
            let end = page[start..].find("\n\n").map_or(page.len(), |e| start + e + 1);
            let page = format!("{}{}{}", &page[..start], table, &page[end..]);
            std::fs::write(path, page).expect("write docs/architecture.md");
            return;
        }
        assert!(
            page.contains(&table),
            "docs/architecture.md's state table differs from conn_state::next; \
             run `EVLOOP_WRITE_STATE_TABLE=1 cargo test --lib conn_state` to write it:\n{table}"
        );
    }
}
