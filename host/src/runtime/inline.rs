//! When a tenant's hook calls may run on the calling proxy thread instead of
//! being handed to its worker: only while its filters have shown nothing but fast calls.
//!
//! A hand-off costs two thread wake-ups (tens of µs on a virtual machine), far
//! more than a short filter's hook. But a hook run inline holds up everything
//! else on that proxy thread, so a tenant earns it: its first calls, and the
//! first calls of every new filter version, run on its worker and must be fast
//! ([`PROBATION_CALLS`] of them). A failed call closes the gate again, and so
//! does slowness that repeats: the [`SLOW_STRIKES`]th slow call within
//! [`STRIKE_WINDOW`] calls (on the worker in probation, it starts the probation
//! again). Each closing doubles the calls owed until the tenant has run
//! [`CLEAN_RUN`] calls inline without one. A filter that loops or traps
//! therefore never runs inline; one that behaves for a while and then loops
//! holds up its proxy thread for at most one `cpu_limit_ms` per closing, and
//! closings grow exponentially rarer.
//!
//! A slow call now and then proves nothing: on these virtual machines a thread's
//! CPU clock jumps by 0.3–5 ms about once in every 2,000 inline hooks, with no
//! page fault, no context switch and no system call in the hook (the kernel has
//! no IRQ time accounting, and the hypervisor's pauses are not all counted as
//! steal). Closing on each of those sent a well-behaved tenant to its worker a
//! few times per 10,000 calls, for probations that only grew.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::cpu::thread_cpu_time;

/// Fast calls on the worker a tenant owes before its calls run inline (doubled per closing).
pub const PROBATION_CALLS: u64 = 64;

/// A call that used more CPU than this, on the worker or inline, is slow.
pub const SLOW_CALL: Duration = Duration::from_micros(500);

/// Slow calls within [`STRIKE_WINDOW`] calls that close the gate (or restart a probation).
pub const SLOW_STRIKES: usize = 3;

/// The calls (inline, or on the worker in probation) over which slow calls are counted.
pub const STRIKE_WINDOW: u64 = 256;

/// Inline calls without a closing after which the next closing owes the first
/// doubled probation again instead of doubling further.
pub const CLEAN_RUN: u64 = 1 << 20;

/// Most doublings of the probation (64 << 24: about a billion calls).
const MAX_DOUBLINGS: u32 = 24;

/// A strike slot before any slow call (the gate's clock starts at 1).
const NEVER: u64 = 0;

/// One tenant's gate.
#[derive(Debug)]
pub struct InlineGate {
    /// `inline_hooks` of the tenant's config.
    enabled: bool,
    /// Fast worker calls still owed before calls may run inline.
    owed: AtomicU64,
    /// Doublings of the next probation.
    doublings: AtomicU32,
    /// How often the gate closed.
    closings: AtomicU32,
    /// Calls run inline: a counter of the tenant, and with `worker_calls` the gate's clock.
    inline_calls: AtomicU64,
    /// Calls timed on the worker in probation (only the worker counts them).
    worker_calls: AtomicU64,
    /// Slow calls among the inline ones.
    slow_inline_calls: AtomicU64,
    /// The clock at the last `SLOW_STRIKES - 1` slow calls since the last closing
    /// or probation start, oldest first, or [`NEVER`].
    strikes: [AtomicU64; SLOW_STRIKES - 1],
    /// `inline_calls` at the last closing.
    last_closing: AtomicU64,
}

impl InlineGate {
    /// A closed gate (in probation), or one that never opens.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            owed: AtomicU64::new(PROBATION_CALLS),
            doublings: AtomicU32::new(0),
            closings: AtomicU32::new(0),
            inline_calls: AtomicU64::new(0),
            worker_calls: AtomicU64::new(0),
            slow_inline_calls: AtomicU64::new(0),
            strikes: std::array::from_fn(|_| AtomicU64::new(NEVER)),
            last_closing: AtomicU64::new(0),
        }
    }

    /// Whether a call may run inline now.
    pub fn is_open(&self) -> bool {
        self.enabled && self.owed.load(Ordering::Relaxed) == 0
    }

    /// How often a failed call or repeated slow ones sent the tenant back to its worker.
    pub fn closings(&self) -> u32 {
        self.closings.load(Ordering::Relaxed)
    }

    /// Calls that ran on a proxy thread.
    pub fn inline_calls(&self) -> u64 {
        self.inline_calls.load(Ordering::Relaxed)
    }

    /// Inline calls that used more than [`SLOW_CALL`] of CPU.
    pub fn slow_inline_calls(&self) -> u64 {
        self.slow_inline_calls.load(Ordering::Relaxed)
    }

    fn probation(&self) -> u64 {
        PROBATION_CALLS << self.doublings.load(Ordering::Relaxed)
    }

    fn clock(&self) -> u64 {
        self.inline_calls() + self.worker_calls.load(Ordering::Relaxed)
    }

    /// A slow call at `clock`: whether it is the [`SLOW_STRIKES`]th within [`STRIKE_WINDOW`].
    /// The slots are updated one by one; two slow calls at once may miss each other,
    /// which only delays a closing.
    fn strike(&self, clock: u64) -> bool {
        let oldest = self.strikes[0].load(Ordering::Relaxed);
        for i in 1..self.strikes.len() {
            let newer = self.strikes[i].load(Ordering::Relaxed);
            self.strikes[i - 1].store(newer, Ordering::Relaxed);
        }
        self.strikes[self.strikes.len() - 1].store(clock, Ordering::Relaxed);
        oldest != NEVER && clock.saturating_sub(oldest) <= STRIKE_WINDOW
    }

    /// Owes a probation from now on, with no strikes counted.
    fn owe(&self, calls: u64) {
        for slot in &self.strikes {
            slot.store(NEVER, Ordering::Relaxed);
        }
        self.owed.store(calls, Ordering::Relaxed);
    }

    /// A call failed, or slow calls repeat: back to the worker, for twice as
    /// long as last time unless the last closing is a [`CLEAN_RUN`] ago.
    pub fn close(&self) {
        if !self.enabled {
            return;
        }
        self.closings.fetch_add(1, Ordering::Relaxed);
        let now = self.inline_calls();
        let since = now.saturating_sub(self.last_closing.swap(now, Ordering::Relaxed));
        let doublings = if since >= CLEAN_RUN {
            1
        } else {
            (self.doublings.load(Ordering::Relaxed) + 1).min(MAX_DOUBLINGS)
        };
        self.doublings.store(doublings, Ordering::Relaxed);
        self.owe(self.probation());
    }

    /// A new filter version or instance set: it owes a probation of its own.
    pub fn restart_probation(&self) {
        if self.enabled {
            self.owe(self.owed.load(Ordering::Relaxed).max(self.probation()));
        }
    }

    /// An inline call took `wall`; `cpu` reads the CPU time it took, which
    /// is asked only when the wall time is over [`SLOW_CALL`], so a call the
    /// OS preempted is not taken for a slow one. A call that failed closed the
    /// gate already; it closes once.
    pub fn ran_inline(&self, wall: Duration, cpu: impl FnOnce() -> Duration) {
        self.inline_calls.fetch_add(1, Ordering::Relaxed);
        if wall > SLOW_CALL && self.is_open() && cpu() > SLOW_CALL {
            self.slow_inline_calls.fetch_add(1, Ordering::Relaxed);
            if self.strike(self.clock()) {
                self.close();
            }
        }
    }

    /// Runs a call on the worker (a hook, or the reply to the filter's own
    /// request); while the gate is closed its CPU time counts towards (or
    /// against) the probation.
    pub fn timed_on_worker<R>(&self, call: impl FnOnce() -> R) -> R {
        if !self.enabled || self.owed.load(Ordering::Relaxed) == 0 {
            return call();
        }
        let started = thread_cpu_time();
        let result = call();
        self.worker_calls.fetch_add(1, Ordering::Relaxed);
        if thread_cpu_time().saturating_sub(started) > SLOW_CALL {
            if self.strike(self.clock()) {
                self.owe(self.probation());
            }
        } else {
            // Saturating: a concurrent close may have raised it meanwhile.
            let _ = self
                .owed
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |owed| {
                    owed.checked_sub(1)
                });
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast_calls(gate: &InlineGate, n: u64) {
        for _ in 0..n {
            gate.timed_on_worker(|| ());
        }
    }

    fn slow_worker_call(gate: &InlineGate) {
        gate.timed_on_worker(|| {
            let started = thread_cpu_time();
            while thread_cpu_time() - started <= SLOW_CALL {
                std::hint::black_box(0u64);
            }
        });
    }

    fn fast_inline_calls(gate: &InlineGate, n: u64) {
        for _ in 0..n {
            gate.ran_inline(Duration::from_micros(10), || {
                unreachable!("CPU read for a fast call")
            });
        }
    }

    fn slow_inline_call(gate: &InlineGate) {
        gate.ran_inline(SLOW_CALL * 2, || SLOW_CALL * 2);
    }

    #[test]
    fn a_tenant_runs_inline_only_after_its_probation_of_fast_calls() {
        let gate = InlineGate::new(true);
        assert!(!gate.is_open());
        fast_calls(&gate, PROBATION_CALLS - 1);
        assert!(!gate.is_open());
        fast_calls(&gate, 1);
        assert!(gate.is_open());
    }

    #[test]
    fn the_third_slow_inline_call_in_a_window_closes_the_gate_for_twice_the_probation() {
        let gate = InlineGate::new(true);
        fast_calls(&gate, PROBATION_CALLS);
        fast_inline_calls(&gate, 1);
        gate.ran_inline(SLOW_CALL * 2, || Duration::from_micros(10));
        assert!(gate.is_open(), "a preempted call keeps it open");
        slow_inline_call(&gate);
        fast_inline_calls(&gate, STRIKE_WINDOW / 2);
        slow_inline_call(&gate);
        assert!(gate.is_open(), "two slow calls are forgiven");
        fast_inline_calls(&gate, STRIKE_WINDOW / 2 - 3);
        slow_inline_call(&gate);
        assert!(!gate.is_open(), "a third within the window is not");
        assert_eq!((gate.closings(), gate.slow_inline_calls()), (1, 3));
        assert_eq!(gate.inline_calls(), STRIKE_WINDOW + 2);
        fast_calls(&gate, 2 * PROBATION_CALLS - 1);
        assert!(!gate.is_open());
        fast_calls(&gate, 1);
        assert!(gate.is_open());
        // The strikes of before the closing are gone.
        slow_inline_call(&gate);
        slow_inline_call(&gate);
        assert!(gate.is_open());
    }

    #[test]
    fn slow_inline_calls_spread_out_are_all_forgiven() {
        let gate = InlineGate::new(true);
        fast_calls(&gate, PROBATION_CALLS);
        for _ in 0..10 {
            slow_inline_call(&gate);
            fast_inline_calls(&gate, STRIKE_WINDOW / 2);
        }
        assert!(gate.is_open());
        assert_eq!((gate.closings(), gate.slow_inline_calls()), (0, 10));
    }

    #[test]
    fn repeated_slow_worker_calls_restart_the_probation() {
        let gate = InlineGate::new(true);
        slow_worker_call(&gate);
        fast_calls(&gate, PROBATION_CALLS - 3);
        slow_worker_call(&gate);
        fast_calls(&gate, 2);
        assert!(
            !gate.is_open(),
            "a forgiven call does not count as a fast one"
        );
        fast_calls(&gate, 1);
        assert!(gate.is_open(), "two slow calls are forgiven");

        let gate = InlineGate::new(true);
        slow_worker_call(&gate);
        fast_calls(&gate, 10);
        slow_worker_call(&gate);
        slow_worker_call(&gate);
        fast_calls(&gate, PROBATION_CALLS - 1);
        assert!(!gate.is_open(), "the third restarted the probation");
        fast_calls(&gate, 1);
        assert!(gate.is_open());
    }

    #[test]
    fn closings_double_the_probation_until_a_clean_run_of_inline_calls() {
        let gate = InlineGate::new(true);
        fast_calls(&gate, PROBATION_CALLS);
        for doublings in 1..=3 {
            gate.close();
            fast_calls(&gate, (PROBATION_CALLS << doublings) - 1);
            assert!(!gate.is_open(), "after closing {doublings}");
            fast_calls(&gate, 1);
            assert!(gate.is_open());
        }
        fast_inline_calls(&gate, CLEAN_RUN);
        gate.close();
        fast_calls(&gate, 2 * PROBATION_CALLS);
        assert!(
            gate.is_open(),
            "a closing after a clean run owes the first doubling"
        );
    }

    #[test]
    fn a_new_version_owes_a_probation_and_a_disabled_gate_never_opens() {
        let gate = InlineGate::new(true);
        fast_calls(&gate, PROBATION_CALLS);
        gate.restart_probation();
        assert!(!gate.is_open());
        let never = InlineGate::new(false);
        fast_calls(&never, 10 * PROBATION_CALLS);
        assert!(!never.is_open());
    }
}
