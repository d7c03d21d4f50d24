//! The calling thread's CPU clock: what `cpu_limit_ms` counts, so a hook the
//! OS preempts on a busy machine is not charged for time it did not run.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    /// The reading taken by [`start_lent_call`], until a hook budget takes it.
    static LENT_CALL_START: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Reads the CPU clock for a call made on this thread with a lane's instances lent to
/// it; the first hook budget that call starts uses this reading instead of its own.
/// Each reading is a system call that locks the run queue (there is no vDSO for a
/// thread's CPU clock), and an inline hook took two in a row.
pub fn start_lent_call() -> Duration {
    let now = thread_cpu_time();
    LENT_CALL_START.set(Some(now));
    now
}

/// The lent call is over: a reading no hook took is not left for a later call.
pub fn end_lent_call() {
    LENT_CALL_START.set(None);
}

/// Where a hook's CPU budget starts: the lent call's reading when this is the call's
/// first hook (a few µs of host work earlier, so never more lenient), else now.
pub fn budget_start() -> Duration {
    LENT_CALL_START.take().unwrap_or_else(thread_cpu_time)
}

/// CPU time the calling thread has used so far.
pub fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is
    // supported by every Linux kernel siphost runs on.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        // Unreachable on Linux; a zero reading makes the budget wall-clock-like
        // (never more lenient than intended, since wall time ≥ CPU time).
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeping_costs_no_cpu_and_spinning_does() {
        let start = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time() - start;
        assert!(slept < Duration::from_millis(10), "sleep used {slept:?}");
        let start = thread_cpu_time();
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let spun = thread_cpu_time() - start;
        assert!(spun >= Duration::from_millis(5), "spinning used {spun:?}");
    }

    fn spin(how_long: Duration) {
        let start = thread_cpu_time();
        while thread_cpu_time() - start < how_long {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn a_lent_calls_reading_starts_its_first_budget_only() {
        let lent = start_lent_call();
        spin(Duration::from_millis(2));
        assert_eq!(budget_start(), lent, "the first budget takes the reading");
        let second = budget_start();
        assert!(
            second >= lent + Duration::from_millis(2),
            "later ones read anew"
        );
        start_lent_call();
        end_lent_call();
        spin(Duration::from_millis(2));
        assert!(
            budget_start() >= lent + Duration::from_millis(4),
            "a reading left when the call ended is not used"
        );
    }

    #[test]
    fn a_reading_belongs_to_its_thread() {
        let lent = start_lent_call();
        let other = std::thread::spawn(|| {
            spin(Duration::from_millis(2));
            budget_start()
        })
        .join()
        .unwrap();
        assert!(
            other >= Duration::from_millis(2),
            "the other thread read its own clock"
        );
        assert_eq!(budget_start(), lent);
    }
}
