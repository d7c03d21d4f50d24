//! The calling thread's CPU clock: what `cpu_limit_ms` counts, so a hook the
//! OS preempts on a busy machine is not charged for time it did not run.

use std::time::Duration;

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
}
