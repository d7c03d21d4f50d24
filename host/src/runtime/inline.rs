//! When a tenant's hook calls may run on the calling proxy thread instead of
//! being handed to its worker: only while its filters have shown nothing but fast calls.
//!
//! A hand-off costs two thread wake-ups (tens of µs on a virtual machine), far
//! more than a short filter's hook. But a hook run inline holds up everything
//! else on that proxy thread, so a tenant earns it: its first calls, and the
//! first calls of every new filter version, run on its worker and must each be
//! fast ([`PROBATION_CALLS`] of them). One slow or failed call closes the gate
//! again and doubles the calls owed. A filter that loops or traps therefore
//! never runs inline; one that behaves for a while and then loops holds up its
//! proxy thread for at most one `cpu_limit_ms` per closing, and closings grow
//! exponentially rarer.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::cpu::thread_cpu_time;

/// Fast calls on the worker a tenant owes before its calls run inline (doubled per closing).
pub const PROBATION_CALLS: u64 = 64;

/// A call that used more CPU than this, on the worker or inline, closes the gate.
pub const SLOW_CALL: Duration = Duration::from_micros(500);

/// Most doublings of the probation (64 << 24: about a billion calls).
const MAX_DOUBLINGS: u32 = 24;

/// One tenant's gate.
#[derive(Debug)]
pub struct InlineGate {
    /// `inline_hooks` of the tenant's config.
    enabled: bool,
    /// Fast worker calls still owed before calls may run inline.
    owed: AtomicU64,
    /// How often the gate closed.
    closings: AtomicU32,
}

impl InlineGate {
    /// A closed gate (in probation), or one that never opens.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            owed: AtomicU64::new(PROBATION_CALLS),
            closings: AtomicU32::new(0),
        }
    }

    /// Whether a call may run inline now.
    pub fn is_open(&self) -> bool {
        self.enabled && self.owed.load(Ordering::Relaxed) == 0
    }

    /// How often a slow or failed call sent the tenant back to its worker.
    pub fn closings(&self) -> u32 {
        self.closings.load(Ordering::Relaxed)
    }

    fn probation(&self) -> u64 {
        PROBATION_CALLS << self.closings.load(Ordering::Relaxed).min(MAX_DOUBLINGS)
    }

    /// A call was slow or failed: back to the worker, for twice as long as last time.
    pub fn close(&self) {
        if !self.enabled {
            return;
        }
        self.closings.fetch_add(1, Ordering::Relaxed);
        self.owed.store(self.probation(), Ordering::Relaxed);
    }

    /// A new filter version or instance set: it owes a probation of its own.
    pub fn restart_probation(&self) {
        if self.enabled {
            self.owed.fetch_max(self.probation(), Ordering::Relaxed);
        }
    }

    /// An inline call took `wall`; `cpu` reads the CPU time it took, which
    /// is asked only when the wall time is over [`SLOW_CALL`], so a call the
    /// OS preempted is not taken for a slow one. A call that failed closed the
    /// gate already; it closes once.
    pub fn ran_inline(&self, wall: Duration, cpu: impl FnOnce() -> Duration) {
        if wall > SLOW_CALL && self.is_open() && cpu() > SLOW_CALL {
            self.close();
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
        if thread_cpu_time().saturating_sub(started) > SLOW_CALL {
            self.owed.store(self.probation(), Ordering::Relaxed);
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
    fn a_slow_inline_call_closes_the_gate_for_twice_the_probation() {
        let gate = InlineGate::new(true);
        fast_calls(&gate, PROBATION_CALLS);
        gate.ran_inline(Duration::from_micros(10), || {
            unreachable!("CPU read for a fast call")
        });
        assert!(gate.is_open(), "a fast call keeps it open");
        gate.ran_inline(SLOW_CALL * 2, || Duration::from_micros(10));
        assert!(gate.is_open(), "a preempted call keeps it open");
        gate.ran_inline(SLOW_CALL * 2, || SLOW_CALL * 2);
        assert!(!gate.is_open());
        // A failure reported for the same call (closing first) does not double it again.
        gate.ran_inline(SLOW_CALL * 2, || SLOW_CALL * 2);
        fast_calls(&gate, 2 * PROBATION_CALLS - 1);
        assert!(!gate.is_open());
        fast_calls(&gate, 1);
        assert!(gate.is_open());
    }

    #[test]
    fn a_slow_worker_call_restarts_the_probation() {
        let gate = InlineGate::new(true);
        fast_calls(&gate, PROBATION_CALLS - 1);
        gate.timed_on_worker(|| {
            let started = thread_cpu_time();
            while thread_cpu_time() - started <= SLOW_CALL {
                std::hint::black_box(0u64);
            }
        });
        fast_calls(&gate, PROBATION_CALLS - 1);
        assert!(!gate.is_open());
        fast_calls(&gate, 1);
        assert!(gate.is_open());
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
