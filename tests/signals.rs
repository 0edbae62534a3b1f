//! `evloop::signals` from the outside: SIGUSR1 and SIGHUP raised at this
//! process reach the closure given to `on_signals`, on the reactor's
//! thread, with their numbers; `shutdown_on_signals` beside them still
//! shuts the reactor down on SIGTERM; forbidden signals are refused.
//!
//! Signal dispositions are process-wide, so the one test that raises
//! signals is the only one here that registers any.
mod common;

use std::sync::mpsc;
use std::thread;

use common::*;
use evloop::signals::{self, FORBIDDEN, SIGHUP, SIGTERM, SIGUSR1, SIGUSR2};
use evloop::{Error, Reactor};

#[test]
fn other_signals_reach_their_handler_on_the_reactor_thread_beside_shutdown() {
    let (tx, rx) = mpsc::channel();
    let mut server = start(move |reactor| {
        let reactor_thread = thread::current().id();
        signals::shutdown_on_signals(reactor, STEP).expect("shutdown on signals");
        signals::on_signals(reactor, &[SIGHUP, SIGUSR1], move |cx, signal| {
            let on_reactor_thread = thread::current().id() == reactor_thread;
            let _ = tx.send((signal, on_reactor_thread, cx.key()));
        })
        .expect("register SIGHUP and SIGUSR1")
    });
    let key = server.info;

    for signal in [SIGUSR1, SIGHUP, SIGUSR1] {
        signal_hook::low_level::raise(signal).expect("raise");
        let got = rx.recv_timeout(STEP).expect("the handler ran");
        assert_eq!(got, (signal, true, key), "signal {signal}");
    }

    // The shutdown signals still belong to `shutdown_on_signals`.
    signal_hook::low_level::raise(SIGTERM).expect("raise SIGTERM");
    server.join(); // `run` returned: the shutdown happened
    assert!(rx.try_recv().is_err(), "SIGTERM is not the handler's");
}

#[test]
fn forbidden_signals_are_refused_before_anything_is_installed() {
    let mut reactor = Reactor::new().expect("reactor");
    for &signal in FORBIDDEN {
        match signals::on_signals(&mut reactor, &[SIGUSR2, signal], |_, _| {}) {
            Err(Error::ForbiddenSignal(refused)) => assert_eq!(refused, signal),
            other => panic!("signal {signal}: {other:?}"),
        }
    }
    assert_eq!(reactor.source_count(), 0);
    let err = signals::on_signals(&mut reactor, &[FORBIDDEN[0]], |_, _| {}).expect_err("refused");
    assert!(err.to_string().contains("cannot be handled"), "{err}");
}
