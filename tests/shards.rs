//! `evloop::shard` from the outside: shards on their threads, messages
//! between them (order, one batch per turn, a batch sent at once, the
//! bound, a stopped target), panics, and pinning.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use evloop::shard::{self, SendError, ShardError, ShardOptions, Shards};
use evloop::{Addr, Context, DatagramHandler, Reactor};

/// Every wait of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` on a thread of its own (which then runs shard 0) and fails the
/// test if it takes longer than [`LIMIT`].
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LIMIT).expect("the shards did not finish in time")
}

fn two_shards() -> ShardOptions {
    ShardOptions {
        threads: 2,
        shutdown_timeout: Duration::from_secs(2),
        ..ShardOptions::default()
    }
}

/// A UDP socket that records the graceful shutdown of its shard.
struct ShutdownWitness(Arc<AtomicBool>);

impl DatagramHandler for ShutdownWitness {
    fn on_datagram(&mut self, _cx: &mut Context<'_>, _data: &[u8], _from: &Addr) {}

    fn on_shutdown(&mut self, cx: &mut Context<'_>) {
        self.0.store(true, Ordering::SeqCst);
        cx.close();
    }
}

#[test]
fn each_shard_runs_setup_on_its_own_thread_and_one_message_stops_all() {
    let (seen, result, caller) = within(|| {
        let caller = thread::current().id();
        let seen = Mutex::new(Vec::new());
        let result = shard::run(two_shards(), |_reactor, shards| {
            let me = thread::current();
            let name = me.name().map(str::to_owned);
            seen.lock()
                .unwrap()
                .push((shards.id(), shards.count(), me.id(), name));
            if shards.id() == 1 {
                let all = shards.handle();
                shards
                    .send(0, move |_reactor| all.stop())
                    .expect("shard 0 is running");
            }
            Ok(())
        });
        (seen.into_inner().unwrap(), result, caller)
    });
    result.expect("both shards stopped cleanly");
    let mut seen = seen;
    seen.sort_by_key(|s| s.0);
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[0].0, seen[0].1), (0, 2));
    assert_eq!((seen[1].0, seen[1].1), (1, 2));
    assert_eq!(seen[0].2, caller, "shard 0 runs on the calling thread");
    assert_ne!(seen[1].2, caller);
    assert_eq!(seen[1].3.as_deref(), Some("evloop-shard-1"));
}

#[test]
fn a_thousand_messages_of_one_turn_arrive_in_order_in_one_batch() {
    const N: u32 = 1_000;
    let (runs, batches, result) = within(|| {
        let runs = Arc::new(Mutex::new(Vec::new())); // (number, shard 0's turn)
        let batches = Arc::new(AtomicU64::new(u64::MAX));
        let turn = Arc::new(AtomicU64::new(0));
        let (runs2, batches2) = (Arc::clone(&runs), Arc::clone(&batches));
        let result = shard::run(two_shards(), move |reactor, shards| {
            if shards.id() == 0 {
                let turn = Arc::clone(&turn);
                reactor.on_turn_end(move |_reactor| {
                    turn.fetch_add(1, Ordering::SeqCst);
                });
                return Ok(());
            }
            let (runs, batches, turn) = (Arc::clone(&runs2), Arc::clone(&batches2), Arc::clone(&turn));
            // One callback of one turn on shard 1 sends them all.
            reactor.handle().run(move |_reactor| {
                let shards = Shards::current().expect("on a shard");
                for n in 0..N {
                    let (runs, batches, turn) = (Arc::clone(&runs), Arc::clone(&batches), Arc::clone(&turn));
                    let all = shards.handle();
                    shards
                        .send(0, move |_reactor| {
                            runs.lock().unwrap().push((n, turn.load(Ordering::SeqCst)));
                            if n == N - 1 {
                                let here = Shards::current().expect("on a shard");
                                assert_eq!(here.id(), 0);
                                batches.store(here.batches_received(), Ordering::SeqCst);
                                all.stop();
                            }
                        })
                        .expect("the default bound takes 1,000");
                }
                assert_eq!(shards.in_flight(0), N as usize);
            });
            Ok(())
        });
        let runs = std::mem::take(&mut *runs.lock().unwrap());
        (runs, batches.load(Ordering::SeqCst), result)
    });
    result.expect("both shards stopped cleanly");
    let numbers: Vec<u32> = runs.iter().map(|r| r.0).collect();
    assert_eq!(numbers, (0..N).collect::<Vec<_>>(), "in the order sent");
    assert!(
        runs.iter().all(|r| r.1 == runs[0].1),
        "all ran in one turn of shard 0"
    );
    assert_eq!(batches, 1, "one batch, one wakeup");
}

#[test]
fn a_flushed_message_runs_while_its_sender_is_still_in_its_turn() {
    let (ran_in_turn, result) = within(|| {
        let ran_in_turn = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&ran_in_turn);
        let result = shard::run(two_shards(), move |reactor, shards| {
            if shards.id() == 0 {
                return Ok(());
            }
            let seen = Arc::clone(&seen);
            reactor.handle().run(move |_reactor| {
                let shards = Shards::current().expect("on a shard");
                let (tx, rx) = mpsc::channel();
                shards
                    .send(0, move |_reactor| {
                        let _ = tx.send(());
                    })
                    .expect("shard 0 is running");
                shards.flush();
                // Shard 1's turn goes on until shard 0 has run the message:
                // without the flush it would leave only after this wait.
                seen.store(rx.recv_timeout(LIMIT / 2).is_ok(), Ordering::SeqCst);
                shards.handle().stop();
            });
            Ok(())
        });
        (ran_in_turn.load(Ordering::SeqCst), result)
    });
    result.expect("both shards stopped cleanly");
    assert!(ran_in_turn, "the message ran on shard 0 during shard 1's turn");
}

/// What shard 1 saw while testing the bound.
#[derive(Debug, Default)]
struct BoundSeen {
    eleventh_full: bool,
    given_back_ran: bool,
    in_flight_while_busy: usize,
    full_while_busy: bool,
    in_flight_after: usize,
    sent_after: bool,
}

#[test]
fn the_bound_refuses_the_eleventh_message_and_gives_it_back() {
    let (seen, result) = within(|| {
        let seen = Arc::new(Mutex::new(BoundSeen::default()));
        let seen2 = Arc::clone(&seen);
        let options = ShardOptions {
            queue_capacity: 10,
            ..two_shards()
        };
        let result = shard::run(options, move |reactor, shards| {
            if shards.id() == 0 {
                return Ok(());
            }
            let seen = Arc::clone(&seen2);
            reactor.handle().run(move |reactor| {
                let shards = Shards::current().expect("on a shard");
                let all = shards.handle();
                // 1: blocks shard 0 until shard 1 has looked at the bound.
                let (seen_busy, all_busy) = (Arc::clone(&seen), all.clone());
                shards
                    .send(0, move |_reactor| {
                        let (release, released) = mpsc::channel();
                        let on_shard_1 = all_busy.shard(1).expect("shard 1 exists");
                        on_shard_1.run(move |_reactor| {
                            let shards = Shards::current().expect("on a shard");
                            let mut seen = seen_busy.lock().unwrap();
                            seen.in_flight_while_busy = shards.in_flight(0);
                            seen.full_while_busy = matches!(shards.send(0, |_| {}), Err(SendError::Full(_)));
                            let _ = release.send(());
                        });
                        released.recv_timeout(LIMIT).expect("shard 1 releases shard 0");
                    })
                    .expect("room for 10");
                // 2 to 9: nothing; 10: answers, once all ten have run.
                for n in 2..=10 {
                    let seen = Arc::clone(&seen);
                    let all = all.clone();
                    shards
                        .send(0, move |_reactor| {
                            if n < 10 {
                                return;
                            }
                            let back = Shards::current().expect("on a shard");
                            back.send(1, move |_reactor| {
                                let shards = Shards::current().expect("on a shard");
                                let mut seen = seen.lock().unwrap();
                                seen.in_flight_after = shards.in_flight(0);
                                seen.sent_after = shards.send(0, move |_reactor| all.stop()).is_ok();
                            })
                            .expect("shard 1 is running");
                        })
                        .expect("room for 10");
                }
                // 11: refused, and given back.
                let ran = Arc::new(AtomicBool::new(false));
                let ran2 = Arc::clone(&ran);
                match shards.send(0, move |_reactor| ran2.store(true, Ordering::SeqCst)) {
                    Err(SendError::Full(message)) => {
                        message(reactor);
                        let mut seen = seen.lock().unwrap();
                        seen.eleventh_full = true;
                        seen.given_back_ran = ran.load(Ordering::SeqCst);
                    }
                    other => panic!("the 11th message: {other:?}"),
                }
            });
            Ok(())
        });
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        (seen, result)
    });
    result.expect("both shards stopped cleanly");
    assert!(seen.eleventh_full, "{seen:?}");
    assert!(seen.given_back_ran, "{seen:?}");
    assert_eq!(seen.in_flight_while_busy, 10, "{seen:?}");
    assert!(seen.full_while_busy, "{seen:?}");
    assert_eq!(seen.in_flight_after, 0, "{seen:?}");
    assert!(seen.sent_after, "{seen:?}");
}

#[test]
fn a_message_to_a_stopped_shard_is_refused() {
    let (answer, result) = within(|| {
        let answer = Arc::new(Mutex::new(None));
        let answer2 = Arc::clone(&answer);
        let result = shard::run(two_shards(), move |reactor, shards| {
            if shards.id() == 1 {
                reactor.handle().stop(); // its first turn ends its loop
                return Ok(());
            }
            let (shards, answer) = (shards.clone(), Arc::clone(&answer2));
            reactor.on_turn_end(move |_reactor| {
                let mut answer = answer.lock().unwrap();
                if answer.is_none() && shards.is_stopped(1) {
                    *answer = Some(match shards.send(1, |_| {}) {
                        Err(SendError::Stopped(_)) => "stopped",
                        Err(SendError::Full(_)) => "full",
                        Ok(()) => "sent",
                    });
                }
            });
            Ok(())
        });
        let answer = answer.lock().unwrap().take();
        (answer, result)
    });
    result.expect("a stop is no failure");
    assert_eq!(answer, Some("stopped"));
}

/// Runs two shards where shard 1 fails as `fail` says; shard 0 holds a
/// UDP socket that notes its graceful shutdown.
fn shard_1_fails(
    fail: impl Fn(&mut Reactor, &Shards) -> Result<(), evloop::Error> + Sync + Send + 'static,
) -> (Result<(), ShardError>, bool) {
    within(move || {
        let shut_down = Arc::new(AtomicBool::new(false));
        let witness = Arc::clone(&shut_down);
        let result = shard::run(two_shards(), move |reactor, shards| {
            if shards.id() == 0 {
                reactor.bind_udp(
                    "127.0.0.1:0".parse().unwrap(),
                    ShutdownWitness(Arc::clone(&witness)),
                )?;
                return Ok(());
            }
            fail(reactor, shards)
        });
        (result, shut_down.load(Ordering::SeqCst))
    })
}

#[test]
fn a_panic_in_setup_shuts_the_others_down_and_is_reported() {
    let (result, shut_down) = shard_1_fails(|_reactor, _shards| panic!("boom in setup"));
    match result {
        Err(ShardError::Panicked { shard: 1, message }) => assert_eq!(message, "boom in setup"),
        other => panic!("expected shard 1's panic, got {other:?}"),
    }
    assert!(shut_down, "shard 0 shut down gracefully");
}

#[test]
fn a_panic_in_a_message_shuts_the_others_down_and_is_reported() {
    let (result, shut_down) = shard_1_fails(|_reactor, shards| {
        shards
            .send(1, |_reactor| panic!("boom in a message"))
            .expect("to itself");
        Ok(())
    });
    match result {
        Err(ShardError::Panicked { shard: 1, message }) => assert_eq!(message, "boom in a message"),
        other => panic!("expected shard 1's panic, got {other:?}"),
    }
    assert!(shut_down, "shard 0 shut down gracefully");
}

#[test]
fn a_setup_error_shuts_the_others_down_and_is_reported() {
    let (result, shut_down) =
        shard_1_fails(|_reactor, _shards| Err(evloop::Error::Io(std::io::Error::other("no way"))));
    match &result {
        Err(ShardError::Setup { shard: 1, .. }) => {}
        other => panic!("expected shard 1's setup error, got {other:?}"),
    }
    let text = result.unwrap_err().to_string();
    assert!(text.contains("shard 1") && text.contains("no way"), "{text}");
    assert!(shut_down, "shard 0 shut down gracefully");
}

#[test]
fn a_shutdown_of_all_from_another_thread_is_graceful_on_every_shard() {
    let (result, witnessed) = within(|| {
        let flags: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
        let (handle_tx, handle_rx) = mpsc::channel();
        let outside = thread::spawn(move || {
            let all: shard::ShardsHandle = handle_rx.recv_timeout(LIMIT).expect("a handle");
            all.shutdown(Duration::from_secs(2));
        });
        let flags2 = flags.clone();
        let handle_tx = Mutex::new(handle_tx);
        let options = ShardOptions {
            threads: 3,
            ..two_shards()
        };
        let result = shard::run(options, move |reactor, shards| {
            let witness = ShutdownWitness(Arc::clone(&flags2[shards.id()]));
            reactor.bind_udp("127.0.0.1:0".parse().unwrap(), witness)?;
            if shards.id() == 2 {
                let _ = handle_tx.lock().unwrap().send(shards.handle());
            }
            Ok(())
        });
        outside.join().expect("the outside thread");
        let witnessed: Vec<bool> = flags.iter().map(|f| f.load(Ordering::SeqCst)).collect();
        (result, witnessed)
    });
    result.expect("a shutdown is no failure");
    assert_eq!(witnessed, vec![true, true, true]);
}

/// The CPUs the calling thread may run on.
fn my_cpus() -> Vec<usize> {
    // SAFETY: all zeroes is a valid, empty `cpu_set_t`; the kernel writes at
    // most its size into it; CPU_ISSET reads bits below CPU_SETSIZE.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

#[test]
fn pinned_shards_each_run_on_one_cpu_of_their_own() {
    if my_cpus().len() < 2 {
        eprintln!("skipped: this process may use fewer than 2 CPUs");
        return;
    }
    let (before, after, seen, result) = within(|| {
        let before = my_cpus();
        let seen = Mutex::new(Vec::new());
        let options = ShardOptions {
            pin: true,
            ..two_shards()
        };
        let result = shard::run(options, |_reactor, shards| {
            seen.lock().unwrap().push((shards.id(), my_cpus()));
            if shards.id() == 1 {
                let all = shards.handle();
                shards.send(0, move |_| all.stop()).expect("shard 0 is running");
            }
            Ok(())
        });
        (before, my_cpus(), seen.into_inner().unwrap(), result)
    });
    result.expect("both shards stopped cleanly");
    let mut seen = seen;
    seen.sort();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].1, vec![before[0]], "shard 0 on the first allowed CPU");
    assert_eq!(seen[1].1, vec![before[1]], "shard 1 on the second");
    assert_eq!(after, before, "the calling thread's CPUs are restored");
}

#[test]
fn the_handle_goes_to_any_thread() {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    send_sync_clone::<shard::ShardsHandle>();
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    error::<ShardError>();
}
