//! The epoch ticker that lets a hook be stopped once its CPU budget is spent, for every
//! filter ABI: it wakes seldom while hooks come and go, often only while one runs long.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::{Engine, UpdateDeadline};

use super::FilterError;
use super::cpu::thread_cpu_time;
use super::state::lock;

/// The tick while a hook is in flight at a tick: how often a long-running hook's CPU time
/// is looked at, so how far it may overrun its `cpu_limit_ms`.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The tick while no hook was in flight at the last one. Every tick wakes the ticker
/// thread: at [`EPOCH_TICK`] throughout, 200 wake-ups a second were most of siphost's
/// context switches while registrations kept short hooks coming. A hook that loops is
/// in flight at the next tick, after which ticks come every [`EPOCH_TICK`]; so a budget
/// below this is overrun by at most this much.
pub const WATCH_TICK: Duration = Duration::from_millis(20);

/// How long no hook must have started before the ticker parks until the next one.
const LINGER: Duration = Duration::from_millis(250);

/// Whole ticks of [`EPOCH_TICK`] covering `limit` (at least one): ticks never come
/// closer together, so this many pass no sooner than `limit` of wall time, which
/// bounds CPU time from above.
pub fn ticks(limit: Duration) -> u64 {
    (limit.as_micros().div_ceil(EPOCH_TICK.as_micros())).max(1) as u64
}

/// What a hook's store does when the epoch reaches its deadline: interrupt the hook once
/// its thread has spent `limit` of CPU since `started` (that thread's CPU clock), else look
/// again when the rest could have been spent.
pub fn budget_check(started: Duration, limit: Duration) -> UpdateDeadline {
    let used = thread_cpu_time().saturating_sub(started);
    if used >= limit {
        UpdateDeadline::Interrupt
    } else {
        UpdateDeadline::Continue(ticks(limit - used))
    }
}

/// A hook's first look at its budget: at the next tick, which may come any time. A
/// hook that outlives one tick is in flight at it, so the ticks after come every
/// [`EPOCH_TICK`].
pub const FIRST_DEADLINE: u64 = 1;

/// The ticker's pacing, apart from its thread and clock: after each tick, how long to
/// sleep, or to park.
#[derive(Debug)]
struct Pace {
    /// Hook calls started, as seen at the last tick.
    entries: u64,
    /// Time since a hook call last started (or was in flight), at the last tick.
    quiet: Duration,
}

#[derive(Debug, PartialEq, Eq)]
enum Next {
    Sleep(Duration),
    Park,
}

impl Pace {
    fn new() -> Self {
        Pace {
            entries: 0,
            quiet: Duration::ZERO,
        }
    }

    /// After a tick that came `slept` after the one before, with `in_flight` hook calls
    /// running and `entries` started in all.
    fn after_tick(&mut self, slept: Duration, in_flight: usize, entries: u64) -> Next {
        let started = entries != self.entries;
        self.entries = entries;
        if in_flight > 0 {
            self.quiet = Duration::ZERO;
            return Next::Sleep(EPOCH_TICK);
        }
        self.quiet = if started {
            Duration::ZERO
        } else {
            self.quiet + slept
        };
        if self.quiet >= LINGER {
            self.quiet = Duration::ZERO;
            Next::Park
        } else {
            Next::Sleep(WATCH_TICK)
        }
    }
}

/// Advances the engine's epoch: every [`EPOCH_TICK`] while a hook runs at a tick, every
/// [`WATCH_TICK`] while hooks come and go, never (parked) once none started for
/// [`LINGER`], until the next call wakes it.
pub struct EpochTicker {
    engine: Engine,
    in_flight: AtomicUsize,
    entries: AtomicU64,
    wakes: AtomicU64,
    parked: AtomicBool,
    stop: AtomicBool,
    gate: Mutex<()>,
    wake: Condvar,
}

/// A hook call in flight.
pub struct Ticking<'a>(&'a EpochTicker);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    pub fn spawn(engine: Engine) -> Result<Arc<Self>, FilterError> {
        let ticker = Arc::new(Self {
            engine,
            in_flight: AtomicUsize::new(0),
            entries: AtomicU64::new(0),
            wakes: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            gate: Mutex::new(()),
            wake: Condvar::new(),
        });
        let running = ticker.clone();
        std::thread::Builder::new()
            .name("siphost-epoch".into())
            .spawn(move || running.run())
            .map_err(|e| FilterError::Engine(format!("epoch ticker thread: {e}")))?;
        Ok(ticker)
    }

    /// Marks a hook call in flight, waking the ticker if it is parked.
    pub fn enter(&self) -> Ticking<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.entries.fetch_add(1, Ordering::Relaxed);
        if self.parked.load(Ordering::SeqCst) {
            // Taking the gate orders this wake after the ticker's wait began.
            let _gate = lock(&self.gate);
            self.wake.notify_one();
        }
        Ticking(self)
    }

    /// Whether the ticker thread is parked (for tests of the idle cost).
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    /// Times the ticker thread woke to tick (for tests of its cost).
    pub fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }

    /// Stops the thread (the engine is dropped).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _gate = lock(&self.gate);
        self.wake.notify_one();
    }

    fn run(self: Arc<Self>) {
        let mut pace = Pace::new();
        let mut slept = Duration::ZERO;
        while !self.stop.load(Ordering::Relaxed) {
            let next = pace.after_tick(
                slept,
                self.in_flight.load(Ordering::SeqCst),
                self.entries.load(Ordering::Relaxed),
            );
            slept = match next {
                Next::Sleep(tick) => tick,
                Next::Park => {
                    let mut gate = lock(&self.gate);
                    self.parked.store(true, Ordering::SeqCst);
                    while self.in_flight.load(Ordering::SeqCst) == 0
                        && !self.stop.load(Ordering::SeqCst)
                    {
                        gate = self.wake.wait(gate).unwrap_or_else(|p| p.into_inner());
                    }
                    self.parked.store(false, Ordering::SeqCst);
                    // The call that woke it is in flight: look at it soon.
                    EPOCH_TICK
                }
            };
            std::thread::sleep(slept);
            self.wakes.fetch_add(1, Ordering::Relaxed);
            self.engine.increment_epoch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn short_hooks_coming_and_going_are_watched_at_the_slow_tick() {
        let mut pace = Pace::new();
        let mut entries = 0;
        // A hook every 4 ms, none in flight at the ticks.
        for _ in 0..100 {
            entries += 5;
            assert_eq!(
                pace.after_tick(WATCH_TICK, 0, entries),
                Next::Sleep(WATCH_TICK)
            );
        }
    }

    #[test]
    fn a_hook_in_flight_at_a_tick_is_looked_at_every_epoch_tick() {
        let mut pace = Pace::new();
        assert_eq!(pace.after_tick(WATCH_TICK, 0, 1), Next::Sleep(WATCH_TICK));
        for _ in 0..20 {
            assert_eq!(pace.after_tick(EPOCH_TICK, 1, 1), Next::Sleep(EPOCH_TICK));
        }
        assert_eq!(pace.after_tick(EPOCH_TICK, 0, 1), Next::Sleep(WATCH_TICK));
    }

    #[test]
    fn the_ticker_parks_once_no_hook_started_for_the_linger_time() {
        let mut pace = Pace::new();
        assert_eq!(pace.after_tick(WATCH_TICK, 0, 3), Next::Sleep(WATCH_TICK));
        let mut quiet = Duration::ZERO;
        loop {
            quiet += WATCH_TICK;
            match pace.after_tick(WATCH_TICK, 0, 3) {
                Next::Sleep(tick) => {
                    assert_eq!(tick, WATCH_TICK);
                    assert!(quiet < LINGER, "not parked after {quiet:?}");
                }
                Next::Park => break,
            }
        }
        assert!(quiet >= LINGER && quiet < LINGER + WATCH_TICK, "{quiet:?}");
        // A hook that runs through a tick keeps it awake however long it lasts.
        let mut pace = Pace::new();
        for _ in 0..1000 {
            assert_eq!(pace.after_tick(EPOCH_TICK, 1, 1), Next::Sleep(EPOCH_TICK));
        }
    }

    #[test]
    fn budget_ticks_never_come_before_the_budget_could_be_spent() {
        assert_eq!(ticks(Duration::ZERO), 1);
        assert_eq!(ticks(MS), 1);
        assert_eq!(ticks(50 * MS), 10);
        assert_eq!(ticks(51 * MS), 11);
        assert!(EPOCH_TICK * ticks(37 * MS) as u32 >= 37 * MS);
    }
}
