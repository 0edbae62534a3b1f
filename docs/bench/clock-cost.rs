//! clock-cost.rs: what one read of each clock the reactor uses costs on
//! this machine: `Instant::now` (CLOCK_MONOTONIC, what each turn reads),
//! CLOCK_MONOTONIC_COARSE (what the slow-callback watchdog reads around
//! every callback), and a `saturating_duration_since` between two
//! Instants. std only, so that it builds with rustc alone:
//!
//!     rustc -O -o target/clock-cost docs/bench/clock-cost.rs && target/clock-cost
//!
//! Each figure is the best of 5 rounds of 10 million calls (the best, since
//! anything else the machine does can only add to a round).
use std::hint::black_box;
use std::time::{Duration, Instant};

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
}

/// Linux's CLOCK_MONOTONIC_COARSE.
const CLOCK_MONOTONIC_COARSE: i32 = 6;

fn coarse_ns() -> u64 {
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec; the clock id
    // is one Linux knows.
    unsafe { clock_gettime(CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const CALLS: u32 = 10_000_000;

fn best_ns_per_call(mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..CALLS {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(CALLS)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let precise = best_ns_per_call(|| {
        black_box(Instant::now());
    });
    let coarse = best_ns_per_call(|| {
        black_box(coarse_ns());
    });
    let a = Instant::now();
    let b = a + Duration::from_micros(3);
    let since = best_ns_per_call(|| {
        black_box(black_box(b).saturating_duration_since(black_box(a)));
    });
    println!("| read | ns per call |");
    println!("|---|---|");
    println!("| `Instant::now()` (CLOCK_MONOTONIC) | {precise:.1} |");
    println!("| CLOCK_MONOTONIC_COARSE | {coarse:.1} |");
    println!("| `saturating_duration_since` | {since:.1} |");
}
