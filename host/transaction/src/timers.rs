//! The RFC 3261 §17 timer values (T1, T2, T4 and timers A–K) and RFC 6026's Timers L and M.
//! Every duration a transaction machine arms is computed here, so the formulas live in one place.

use std::fmt;
use std::time::{Duration, Instant};

/// Largest accepted value for T1, T2 or T4; keeps `64·T1` and every deadline far from overflow.
const MAX_BASE_TIMER: Duration = Duration::from_secs(600);

/// RFC 3261 §17.1.1.2: Timer D is "at least 32 seconds" over unreliable transports.
const TIMER_D_FLOOR: Duration = Duration::from_secs(32);

/// The three base timer values every transaction timer derives from (RFC 3261 Appendix A).
///
/// Fields are private so that an invalid set (T1 = 0 would make retransmission timers fire
/// forever without advancing) cannot be built; use [`TimerConfig::new`] or [`Default`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    t1: Duration,
    t2: Duration,
    t4: Duration,
}

/// Why [`TimerConfig::new`] refused a set of base timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// T1 must be longer than zero: retransmission intervals double from it.
    ZeroT1,
    /// T2 caps the retransmission interval, so it cannot be shorter than T1.
    T2BelowT1,
    /// T1, T2 and T4 must each be at most 600 s.
    TooLong,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroT1 => f.write_str("T1 must be longer than zero"),
            ConfigError::T2BelowT1 => f.write_str("T2 must not be shorter than T1"),
            ConfigError::TooLong => f.write_str("T1, T2 and T4 must each be at most 600 s"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Default for TimerConfig {
    /// RFC 3261 defaults: T1 = 500 ms, T2 = 4 s, T4 = 5 s.
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// Builds a configuration from T1 (RTT estimate), T2 (retransmission interval cap) and
    /// T4 (how long a message may remain in the network).
    pub fn new(t1: Duration, t2: Duration, t4: Duration) -> Result<Self, ConfigError> {
        if t1.is_zero() {
            return Err(ConfigError::ZeroT1);
        }
        if t1 > MAX_BASE_TIMER || t2 > MAX_BASE_TIMER || t4 > MAX_BASE_TIMER {
            return Err(ConfigError::TooLong);
        }
        if t2 < t1 {
            return Err(ConfigError::T2BelowT1);
        }
        Ok(TimerConfig { t1, t2, t4 })
    }

    /// T1, the round-trip time estimate (default 500 ms).
    pub fn t1(&self) -> Duration {
        self.t1
    }

    /// T2, the longest retransmission interval for non-INVITE requests and INVITE responses
    /// (default 4 s).
    pub fn t2(&self) -> Duration {
        self.t2
    }

    /// T4, the longest time a message may remain in the network (default 5 s).
    pub fn t4(&self) -> Duration {
        self.t4
    }

    /// `64·T1`: the value of Timers B, F, H, J (unreliable), L and M.
    pub fn sixty_four_t1(&self) -> Duration {
        self.t1 * 64
    }

    /// Timer A's first interval: T1. It doubles on every firing (T1, 2·T1, 4·T1, …), unreliable
    /// transports only.
    pub fn timer_a_initial(&self) -> Duration {
        self.t1
    }

    /// Timer B, the INVITE client transaction timeout: `64·T1`.
    pub fn timer_b(&self) -> Duration {
        self.sixty_four_t1()
    }

    /// Timer D, the wait for retransmitted INVITE final responses: `max(32 s, 64·T1)` unreliable,
    /// zero reliable. RFC 3261 asks for at least 32 s, which is 64·T1 at the default T1; the
    /// server retransmits its final response for 64·T1 (Timer H), so a raised T1 raises D too.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            TIMER_D_FLOOR.max(self.sixty_four_t1())
        }
    }

    /// Timer E's first interval: T1. It then doubles capped at T2 (`min(2·E, T2)`), and once a
    /// provisional response arrived every interval is T2. Unreliable transports only.
    pub fn timer_e_initial(&self) -> Duration {
        self.t1
    }

    /// Timer F, the non-INVITE client transaction timeout: `64·T1`.
    pub fn timer_f(&self) -> Duration {
        self.sixty_four_t1()
    }

    /// Timer G's first interval: T1. It then doubles capped at T2 (`min(2·G, T2)`). Unreliable
    /// transports only.
    pub fn timer_g_initial(&self) -> Duration {
        self.t1
    }

    /// Timer H, the wait for an ACK after a 3xx–6xx to an INVITE: `64·T1`.
    pub fn timer_h(&self) -> Duration {
        self.sixty_four_t1()
    }

    /// Timer I, the wait for ACK retransmissions: T4 unreliable, zero reliable.
    pub fn timer_i(&self, reliable: bool) -> Duration {
        if reliable { Duration::ZERO } else { self.t4 }
    }

    /// Timer J, the wait for non-INVITE request retransmissions: `64·T1` unreliable, zero
    /// reliable.
    pub fn timer_j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.sixty_four_t1()
        }
    }

    /// Timer K, the wait for non-INVITE response retransmissions: T4 unreliable, zero reliable.
    pub fn timer_k(&self, reliable: bool) -> Duration {
        if reliable { Duration::ZERO } else { self.t4 }
    }

    /// Timer L (RFC 6026), the INVITE server's wait in "Accepted" for INVITE retransmissions:
    /// `64·T1` for every transport.
    pub fn timer_l(&self) -> Duration {
        self.sixty_four_t1()
    }

    /// Timer M (RFC 6026), the INVITE client's wait in "Accepted" for further 2xx responses:
    /// `64·T1` for every transport.
    pub fn timer_m(&self) -> Duration {
        self.sixty_four_t1()
    }

    /// The next retransmission interval after one of `current` for a timer that doubles capped at
    /// T2 (Timers E and G): `min(2·current, T2)`.
    pub(crate) fn doubled_capped(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.t2)
    }
}

/// The RFC 3261 §17 / RFC 6026 timers, named so tests and metrics can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE client request retransmission, starts at T1 and doubles (unreliable only).
    A,
    /// INVITE client transaction timeout, `64·T1`.
    B,
    /// INVITE client wait for final response retransmissions, `max(32 s, 64·T1)` / 0.
    D,
    /// Non-INVITE client request retransmission, T1 doubling capped at T2, T2 after a 1xx.
    E,
    /// Non-INVITE client transaction timeout, `64·T1`.
    F,
    /// INVITE server final response retransmission, T1 doubling capped at T2 (unreliable only).
    G,
    /// INVITE server wait for ACK, `64·T1`.
    H,
    /// INVITE server wait for ACK retransmissions, T4 / 0.
    I,
    /// Non-INVITE server wait for request retransmissions, `64·T1` / 0.
    J,
    /// Non-INVITE client wait for response retransmissions, T4 / 0.
    K,
    /// INVITE server wait in "Accepted" (RFC 6026), `64·T1`.
    L,
    /// INVITE client wait in "Accepted" (RFC 6026), `64·T1`.
    M,
}

impl Timer {
    /// Whether this timer only ends a transaction that waits for retransmissions to absorb
    /// (D, I, J, K, L, M): firing it late changes nothing on the wire.
    pub fn only_ends_wait(self) -> bool {
        matches!(
            self,
            Timer::D | Timer::I | Timer::J | Timer::K | Timer::L | Timer::M
        )
    }
}

/// A timer armed to fire at `at`; `interval` is the delay that produced `at` (the base for the
/// next retransmission interval).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Armed {
    pub(crate) timer: Timer,
    pub(crate) at: Instant,
    pub(crate) interval: Duration,
}

impl Armed {
    pub(crate) fn new(timer: Timer, now: Instant, interval: Duration) -> Self {
        Armed {
            timer,
            at: deadline_after(now, interval),
            interval,
        }
    }

    /// The same timer re-armed `next_interval` after its previous deadline (not after the time
    /// it was noticed), so a late caller keeps the RFC schedule instead of drifting. `None` when
    /// that instant is not representable: such a timer could never fire anyway.
    pub(crate) fn rearmed(self, next_interval: Duration) -> Option<Armed> {
        Some(Armed {
            timer: self.timer,
            at: self.at.checked_add(next_interval)?,
            interval: next_interval,
        })
    }
}

/// `from + delay`, or `from` itself when the sum does not fit in an `Instant` (fire at once
/// rather than panic).
fn deadline_after(from: Instant, delay: Duration) -> Instant {
    from.checked_add(delay).unwrap_or(from)
}

/// The earliest of up to two armed timers that is due at `now`; on a tie `first` wins, so the
/// machines pass their expiry timer first and never retransmit at the instant they give up.
pub(crate) fn earliest_due(
    first: Option<Armed>,
    second: Option<Armed>,
    now: Instant,
) -> Option<Armed> {
    [first, second]
        .into_iter()
        .flatten()
        .filter(|armed| armed.at <= now)
        .min_by_key(|armed| armed.at)
}

/// The armed timers of a machine (its retransmission and expiry slots), as
/// (timer, deadline) pairs: the source of both machines' `poll_timeout` and `timers`.
pub(crate) fn armed_deadlines(
    retransmit: Option<Armed>,
    expiry: Option<Armed>,
) -> impl Iterator<Item = (Timer, Instant)> {
    [retransmit, expiry]
        .into_iter()
        .flatten()
        .map(|armed| (armed.timer, armed.at))
}

/// Whether the armed timers only end a wait (see [`Timer::only_ends_wait`]); false when none
/// is armed.
pub(crate) fn only_waiting(retransmit: Option<Armed>, expiry: Option<Armed>) -> bool {
    let mut armed = armed_deadlines(retransmit, expiry).peekable();
    armed.peek().is_some() && armed.all(|(timer, _)| timer.only_ends_wait())
}
