//! When each registration is due: a sans-I/O due-time queue for any number of
//! records, with paced sends, spread refreshes and backed-off retries.
//!
//! Time comes in as UNIX milliseconds, randomness from an rng handed in, so
//! every decision is reproducible in tests. The driver sleeps until
//! [`Scheduler::next_wakeup`], hands each record [`Scheduler::pop_due`] returns
//! to the filter, and reports the outcome with [`Scheduler::registered`] or
//! [`Scheduler::failed`].
//!
//! Unlike Kamailio's uac (one walk over every record each `reg_timer_interval`,
//! refreshing whatever falls into the last interval), each record wakes at its
//! own time; a refresh is placed in a window of the granted lifetime, at the
//! less loaded of two random instants ("power of two choices"), so refreshes
//! stay level instead of repeating the bursts of the first registration.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rand::Rng;

use super::record::{LiveState, flags};
use super::table::RecordId;

/// The scheduler's settings, from the uac filter's modparams (Kamailio names
/// where Kamailio has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// `reg_retry_interval` (s): first retry after a failure; 0 disables a
    /// record after a failure, as in Kamailio.
    pub retry_interval: u32,
    /// `reg_retry_max_interval` (s): cap of the doubling retry interval.
    pub retry_max_interval: u32,
    /// `reg_random_delay` (s): first registrations of rows with `reg_delay` 0
    /// are spread over this many seconds.
    pub random_delay: u32,
    /// `reg_max_per_second`: REGISTERs started per second at most (first
    /// registrations, retries and refreshes alike).
    pub max_per_second: u32,
    /// `reg_refresh_min_percent`: a refresh is due no earlier than this share
    /// of the granted lifetime.
    pub refresh_min_percent: u32,
    /// `reg_refresh_max_percent`: and no later than this share.
    pub refresh_max_percent: u32,
    /// `reg_timer_interval` (s): Kamailio refreshes at least interval + 3 s
    /// before a binding ends; the refresh window keeps that margin when the
    /// lifetime leaves room for it.
    pub timer_interval: u32,
    /// `reg_gc_interval` (s): a record handed out with no outcome reported
    /// after this long is handed out again as stalled (Kamailio's stuck
    /// ONGOING records, reset only by a walk, cannot happen).
    pub gc_interval: u32,
    /// `reg_active`: when false nothing is handed out (schedules are kept).
    pub active: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            retry_interval: 0,
            retry_max_interval: 3600,
            random_delay: 0,
            max_per_second: 2000,
            refresh_min_percent: 50,
            refresh_max_percent: 80,
            timer_interval: 90,
            gc_interval: 150,
            active: true,
        }
    }
}

/// A modparam with a value the scheduler cannot use; `key` is the
/// parameter's name in `[tenant.filter.config]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct SchedulerConfigError {
    pub key: &'static str,
    pub why: String,
}

impl SchedulerConfig {
    /// Reads the `reg_*` keys of the uac filter's config table (others are
    /// the filter's business and ignored) and checks them.
    pub fn from_modparams(params: &toml::Table) -> Result<SchedulerConfig, SchedulerConfigError> {
        let mut config = SchedulerConfig::default();
        let fields: [(&'static str, &mut u32); 8] = [
            ("reg_retry_interval", &mut config.retry_interval),
            ("reg_retry_max_interval", &mut config.retry_max_interval),
            ("reg_random_delay", &mut config.random_delay),
            ("reg_max_per_second", &mut config.max_per_second),
            ("reg_refresh_min_percent", &mut config.refresh_min_percent),
            ("reg_refresh_max_percent", &mut config.refresh_max_percent),
            ("reg_timer_interval", &mut config.timer_interval),
            ("reg_gc_interval", &mut config.gc_interval),
        ];
        for (key, field) in fields {
            if let Some(value) = params.get(key) {
                *field = non_negative_u32(key, value)?;
            }
        }
        if let Some(value) = params.get("reg_active") {
            config.active = non_negative_u32("reg_active", value)? != 0;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the relations between the values.
    pub fn validate(&self) -> Result<(), SchedulerConfigError> {
        let error = |key, why: &str| {
            Err(SchedulerConfigError {
                key,
                why: why.to_owned(),
            })
        };
        if self.max_per_second == 0 {
            return error("reg_max_per_second", "must be at least 1");
        }
        if self.gc_interval == 0 {
            return error("reg_gc_interval", "must be at least 1");
        }
        if self.refresh_min_percent == 0 || self.refresh_min_percent > 95 {
            return error("reg_refresh_min_percent", "must be within 1..=95");
        }
        if self.refresh_max_percent < self.refresh_min_percent || self.refresh_max_percent > 95 {
            return error(
                "reg_refresh_max_percent",
                "must be within reg_refresh_min_percent..=95",
            );
        }
        if self.retry_interval > 0 && self.retry_max_interval < self.retry_interval {
            return error(
                "reg_retry_max_interval",
                "must not be below reg_retry_interval",
            );
        }
        Ok(())
    }
}

fn non_negative_u32(key: &'static str, value: &toml::Value) -> Result<u32, SchedulerConfigError> {
    let number = value.as_integer().ok_or_else(|| SchedulerConfigError {
        key,
        why: format!("expected an integer, got {value}"),
    })?;
    u32::try_from(number).map_err(|_| SchedulerConfigError {
        key,
        why: format!("{number} is outside 0..=4294967295"),
    })
}

/// Why a record is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueReason {
    /// First registration (after `reg_delay` / `reg_random_delay`).
    Initial,
    /// The binding should be refreshed.
    Refresh,
    /// A retry after a failure.
    Retry,
    /// Scheduled by request (enable, `uac.reg_refresh`, the filter).
    Requested,
    /// Handed out before and no outcome arrived within `reg_gc_interval`:
    /// the attempt counts as failed (no REGISTER is paced for it).
    Stalled,
}

/// A record that is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub id: RecordId,
    pub reason: DueReason,
}

/// A record's scheduled time; `due_ms == 0` means not scheduled.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    due_ms: u64,
    generation: u32,
    reason: u8,
}

const REASONS: [DueReason; 5] = [
    DueReason::Initial,
    DueReason::Refresh,
    DueReason::Retry,
    DueReason::Requested,
    DueReason::Stalled,
];

fn reason_code(reason: DueReason) -> u8 {
    REASONS
        .iter()
        .position(|&r| r == reason)
        .expect("every reason is listed") as u8
}

/// Heap entries live while their generation matches the slot's.
type HeapEntry = Reverse<(u64, RecordId, u32)>;

/// Below this many heap entries stale ones are not worth a rebuild.
const COMPACT_MIN_ENTRIES: usize = 1024;

/// The due-time queue. 16 bytes per record plus a heap entry (16 bytes, at
/// most twice as many while stale entries wait for compaction).
#[derive(Debug)]
pub struct Scheduler<R> {
    config: SchedulerConfig,
    rng: R,
    slots: Vec<Slot>,
    heap: BinaryHeap<HeapEntry>,
    scheduled: usize,
    /// Scheduled records per UNIX second, for placing refreshes where the
    /// load is low.
    load: HashMap<u64, u32>,
    tokens: f64,
    tokens_at_ms: u64,
}

impl<R: Rng> Scheduler<R> {
    /// An empty scheduler; `rng` decides all jitter (seed it in tests).
    pub fn new(config: SchedulerConfig, rng: R) -> Self {
        Scheduler {
            config,
            rng,
            slots: Vec::new(),
            heap: BinaryHeap::new(),
            scheduled: 0,
            load: HashMap::new(),
            tokens: 1.0,
            tokens_at_ms: 0,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// `reg_active`: false stops handing records out, true resumes (overdue
    /// records then come out paced).
    pub fn set_active(&mut self, active: bool) -> bool {
        std::mem::replace(&mut self.config.active, active)
    }

    /// Number of scheduled records.
    pub fn len(&self) -> usize {
        self.scheduled
    }

    /// Whether no record is scheduled.
    pub fn is_empty(&self) -> bool {
        self.scheduled == 0
    }

    /// When `id` is due next and why (to persist as `next_due_ms`).
    pub fn due(&self, id: RecordId) -> Option<(u64, DueReason)> {
        let slot = self.slots.get(id as usize)?;
        (slot.due_ms != 0).then(|| (slot.due_ms, REASONS[usize::from(slot.reason)]))
    }

    /// Schedules `id` at `at_ms` (replacing any earlier time).
    pub fn schedule_at(&mut self, id: RecordId, at_ms: u64, reason: DueReason) {
        let at_ms = at_ms.max(1);
        self.unschedule(id);
        if self.slots.len() <= id as usize {
            self.slots.resize(id as usize + 1, Slot::default());
        }
        let slot = &mut self.slots[id as usize];
        slot.due_ms = at_ms;
        slot.generation = slot.generation.wrapping_add(1);
        slot.reason = reason_code(reason);
        self.heap.push(Reverse((at_ms, id, slot.generation)));
        self.scheduled += 1;
        *self.load.entry(at_ms / 1000).or_default() += 1;
    }

    /// Takes `id` out of the queue (disabled, removed, unregistered).
    pub fn unschedule(&mut self, id: RecordId) {
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        if slot.due_ms == 0 {
            return;
        }
        let second = slot.due_ms / 1000;
        slot.due_ms = 0;
        slot.generation = slot.generation.wrapping_add(1);
        self.scheduled -= 1;
        if let Some(count) = self.load.get_mut(&second) {
            *count -= 1;
            if *count == 0 {
                self.load.remove(&second);
            }
        }
        self.maybe_compact();
    }

    /// Schedules a new record's first registration: after the row's
    /// `reg_delay`, or within `reg_random_delay` when that is 0 (placed
    /// level, as refreshes are, so the first wave has no busy seconds).
    pub fn add_initial(&mut self, id: RecordId, now_ms: u64, reg_delay_secs: u32) {
        let at = if reg_delay_secs > 0 {
            now_ms + u64::from(reg_delay_secs) * 1000
        } else if self.config.random_delay > 0 {
            self.pick_level(now_ms, now_ms + u64::from(self.config.random_delay) * 1000)
        } else {
            now_ms
        };
        self.schedule_at(id, at, DueReason::Initial);
    }

    /// Schedules a record loaded with persisted state (a restart): a binding
    /// still valid is refreshed when it was planned, not re-registered now; a
    /// pending retry keeps its time; a disabled record stays out.
    pub fn restore(&mut self, id: RecordId, now_ms: u64, state: &LiveState, reg_delay_secs: u32) {
        if state.flags & flags::DISABLED != 0 {
            self.unschedule(id);
            return;
        }
        let valid_until_ms = state.registered_until.saturating_mul(1000);
        if state.flags & flags::ONLINE != 0 && valid_until_ms > now_ms {
            let at = if state.next_due_ms > now_ms && state.next_due_ms < valid_until_ms {
                state.next_due_ms
            } else {
                // The planned time is lost or passed while siphost was down:
                // refresh within the first half of what is left, level, not
                // all at once.
                let half_left = (valid_until_ms - now_ms) / 2;
                self.pick_level(now_ms, now_ms + half_left + 1)
            };
            self.schedule_at(id, at, DueReason::Refresh);
        } else if state.failures > 0 && state.next_due_ms > now_ms {
            self.schedule_at(id, state.next_due_ms, DueReason::Retry);
        } else if state.flags & flags::INIT != 0 {
            // Was registered before and lapsed: no initial delay again.
            self.schedule_at(id, now_ms, DueReason::Requested);
        } else {
            self.add_initial(id, now_ms, reg_delay_secs);
        }
    }

    /// A registration succeeded with `granted_secs` of lifetime: schedules
    /// the refresh (none when 0: nothing is bound). Returns the due time.
    pub fn registered(&mut self, id: RecordId, now_ms: u64, granted_secs: u32) -> Option<u64> {
        if granted_secs == 0 {
            self.unschedule(id);
            return None;
        }
        let lifetime = u64::from(granted_secs) * 1000;
        let earliest = now_ms + lifetime * u64::from(self.config.refresh_min_percent) / 100;
        let mut latest = now_ms + lifetime * u64::from(self.config.refresh_max_percent) / 100;
        // Kamailio's guarantee: refresh at least reg_timer_interval + 3 s
        // before the end, where the lifetime leaves room for a window.
        let margin = (u64::from(self.config.timer_interval) + 3) * 1000;
        let floor = earliest + lifetime / 10;
        if let Some(by_margin) = (now_ms + lifetime).checked_sub(margin) {
            latest = latest.min(by_margin.max(floor));
        }
        let at = self.pick_level(earliest, latest.max(earliest + 1));
        self.schedule_at(id, at, DueReason::Refresh);
        Some(at)
    }

    /// An attempt failed (`failures` in a row, counting this one): schedules
    /// the retry after `reg_retry_interval` doubled per earlier failure, up to
    /// `reg_retry_max_interval`, plus up to 50 % jitter. With
    /// `reg_retry_interval` 0 the record is disabled instead: returns None.
    pub fn failed(&mut self, id: RecordId, now_ms: u64, failures: u32) -> Option<u64> {
        if self.config.retry_interval == 0 {
            self.unschedule(id);
            return None;
        }
        let doublings = failures.saturating_sub(1).min(31);
        let base_secs = (u64::from(self.config.retry_interval) << doublings)
            .min(u64::from(self.config.retry_max_interval));
        let base = base_secs * 1000;
        let at = self.pick_level(now_ms + base, now_ms + base + base / 2 + 1);
        self.schedule_at(id, at, DueReason::Retry);
        Some(at)
    }

    /// `uac_reg_enable` / `uac.reg_enable`: due in one second, as in Kamailio.
    pub fn enable(&mut self, id: RecordId, now_ms: u64) {
        self.schedule_at(id, now_ms + 1000, DueReason::Requested);
    }

    /// Picks an instant in `[from, until)` at the less loaded second of two
    /// random candidates.
    fn pick_level(&mut self, from: u64, until: u64) -> u64 {
        let first = self.rng.random_range(from..until);
        let second = self.rng.random_range(from..until);
        let load = |at: u64| self.load.get(&(at / 1000)).copied().unwrap_or(0);
        if load(second) < load(first) {
            second
        } else {
            first
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let rate = f64::from(self.config.max_per_second);
        // Up to 20 ms worth of sends may go out together, at least one.
        let burst = (rate / 50.0).max(1.0);
        let elapsed = now_ms.saturating_sub(self.tokens_at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.tokens_at_ms = self.tokens_at_ms.max(now_ms);
    }

    /// Drops stale heap tops; returns the live top.
    fn peek_live(&mut self) -> Option<(u64, RecordId)> {
        while let Some(&Reverse((at, id, generation))) = self.heap.peek() {
            let slot = self.slots[id as usize];
            if slot.due_ms == at && slot.generation == generation {
                return Some((at, id));
            }
            self.heap.pop();
        }
        None
    }

    /// The next record due at `now_ms`, if the rate limit allows. A handed-out
    /// record is re-armed to come back as [`DueReason::Stalled`] after
    /// `reg_gc_interval` unless its outcome is reported first.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Due> {
        if !self.config.active {
            return None;
        }
        let (at, id) = self.peek_live()?;
        if at > now_ms {
            return None;
        }
        let reason = REASONS[usize::from(self.slots[id as usize].reason)];
        if reason != DueReason::Stalled {
            self.refill(now_ms);
            if self.tokens < 1.0 {
                return None;
            }
            self.tokens -= 1.0;
        }
        self.heap.pop();
        let watchdog = now_ms + u64::from(self.config.gc_interval) * 1000;
        self.schedule_at(id, watchdog, DueReason::Stalled);
        Some(Due { id, reason })
    }

    /// When to call [`pop_due`](Self::pop_due) next: the earliest due time,
    /// or later when the rate limit holds it back. None: nothing to wait for.
    pub fn next_wakeup(&mut self, now_ms: u64) -> Option<u64> {
        if !self.config.active {
            return None;
        }
        let (at, id) = self.peek_live()?;
        if REASONS[usize::from(self.slots[id as usize].reason)] == DueReason::Stalled {
            return Some(at);
        }
        self.refill(now_ms);
        let missing = (1.0 - self.tokens).max(0.0);
        let token_at =
            now_ms + (missing * 1000.0 / f64::from(self.config.max_per_second)).ceil() as u64;
        Some(at.max(token_at))
    }

    /// [`next_wakeup`](Self::next_wakeup) for a caller that hands records out in
    /// batches: a wait for a due time is lengthened by `slack_ms`, so records due
    /// within it come out together; a wait for the rate limit is not (that would
    /// slow the rate).
    pub fn next_wakeup_with_slack(&mut self, now_ms: u64, slack_ms: u64) -> Option<u64> {
        let wakeup = self.next_wakeup(now_ms)?;
        let (at, _) = self.peek_live()?;
        Some(if wakeup > at { wakeup } else { at + slack_ms })
    }

    fn maybe_compact(&mut self) {
        if self.heap.len() < COMPACT_MIN_ENTRIES || self.heap.len() < 2 * self.scheduled {
            return;
        }
        let slots = &self.slots;
        self.heap.retain(|&Reverse((at, id, generation))| {
            let slot = slots[id as usize];
            slot.due_ms == at && slot.generation == generation
        });
    }

    /// Bytes held by the queue's own allocations (for the memory budget).
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Slot>()
            + self.heap.capacity() * size_of::<HeapEntry>()
            + self.load.capacity() * (size_of::<(u64, u32)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const SEC: u64 = 1000;
    /// A realistic "now": 2026-11-29 in UNIX milliseconds.
    const T0: u64 = 1_795_000_000_000;

    fn scheduler(config: SchedulerConfig) -> Scheduler<StdRng> {
        Scheduler::new(config, StdRng::seed_from_u64(7))
    }

    /// Pops everything due at `now`.
    fn drain(s: &mut Scheduler<StdRng>, now: u64) -> Vec<Due> {
        std::iter::from_fn(|| s.pop_due(now)).collect()
    }

    /// Runs the schedule for `secs` from T0 against a registrar granting 3600 s
    /// to every REGISTER: REGISTERs sent in each second, and when the last first
    /// registration went out.
    fn register_for(s: &mut Scheduler<StdRng>, secs: u64) -> (Vec<u32>, u64) {
        let mut per_second = vec![0u32; secs as usize];
        let mut last_initial = 0;
        let mut now = T0;
        while now < T0 + secs * SEC {
            while let Some(due) = s.pop_due(now) {
                per_second[((now - T0) / SEC) as usize] += 1;
                if due.reason == DueReason::Initial {
                    last_initial = now;
                }
                s.registered(due.id, now, 3600);
            }
            now = s.next_wakeup(now).expect("always scheduled").max(now + 1);
        }
        (per_second, last_initial)
    }

    /// Mean and busiest of per-second counts.
    fn mean_and_max(per_second: &[u32]) -> (f64, u32) {
        let mean = per_second.iter().map(|&n| f64::from(n)).sum::<f64>() / per_second.len() as f64;
        (mean, per_second.iter().copied().max().expect("non-empty"))
    }

    #[test]
    fn first_registrations_are_paced() {
        let mut s = scheduler(SchedulerConfig {
            max_per_second: 500,
            ..SchedulerConfig::default()
        });
        for id in 0..5000 {
            s.add_initial(id, T0, 0);
        }
        let mut per_second = Vec::new();
        let mut now = T0;
        let mut sent = 0;
        while sent < 5000 {
            let wake = s.next_wakeup(now).expect("records left");
            assert!(wake >= now);
            now = wake;
            let batch = drain(&mut s, now);
            assert!(batch.iter().all(|d| d.reason == DueReason::Initial));
            let second = ((now - T0) / SEC) as usize;
            if per_second.len() <= second {
                per_second.resize(second + 1, 0);
            }
            per_second[second] += batch.len();
            sent += batch.len();
        }
        // 5000 at 500/s: ten seconds, none above the rate plus one 20-ms burst.
        assert!(per_second.len() <= 11, "{per_second:?}");
        assert!(per_second.iter().all(|&n| n <= 510), "{per_second:?}");
    }

    #[test]
    fn reg_delay_and_random_delay_place_first_registrations() {
        let mut s = scheduler(SchedulerConfig {
            random_delay: 100,
            ..SchedulerConfig::default()
        });
        s.add_initial(0, T0, 30);
        assert_eq!(s.due(0), Some((T0 + 30 * SEC, DueReason::Initial)));
        let mut dues: Vec<u64> = (1..=1000)
            .map(|id| {
                s.add_initial(id, T0, 0);
                s.due(id).expect("scheduled").0 - T0
            })
            .collect();
        dues.sort_unstable();
        assert!(dues[999] < 100 * SEC);
        // Spread over the whole range, not clumped: every 10-s decile used.
        for decile in 0..10 {
            assert!(
                dues.iter().any(|&d| d / (10 * SEC) == decile),
                "decile {decile}"
            );
        }
    }

    #[test]
    fn refresh_falls_in_the_window_and_keeps_kamailios_margin() {
        let mut s = scheduler(SchedulerConfig::default());
        for id in 0..1000 {
            let at = s.registered(id, T0, 3600).expect("scheduled");
            assert!((T0 + 1800 * SEC..T0 + 2880 * SEC).contains(&at), "{at}");
        }
        // Short lifetime: the margin (93 s) does not fit, the window does.
        let at = s.registered(0, T0, 60).expect("scheduled");
        assert!((T0 + 30 * SEC..=T0 + 48 * SEC).contains(&at), "{}", at - T0);
        // 200 s: latest = 200 - 93 = 107 s, inside [100, 160].
        let at = s.registered(0, T0, 200).expect("scheduled");
        assert!(
            (T0 + 100 * SEC..=T0 + 120 * SEC).contains(&at),
            "{}",
            at - T0
        );
        assert_eq!(s.registered(0, T0, 0), None);
        assert_eq!(s.due(0), None);
    }

    #[test]
    fn failures_back_off_exponentially_with_jitter_up_to_the_cap() {
        let mut s = scheduler(SchedulerConfig {
            retry_interval: 30,
            retry_max_interval: 600,
            ..SchedulerConfig::default()
        });
        for (failures, base) in [
            (1, 30),
            (2, 60),
            (3, 120),
            (4, 240),
            (5, 480),
            (6, 600),
            (20, 600),
        ] {
            let mut seen = Vec::new();
            for id in 0..200 {
                let at = s.failed(id, T0, failures).expect("retry");
                let delay = at - T0;
                assert!(
                    delay >= base * SEC && delay <= base * SEC * 3 / 2 + 1,
                    "{failures}: {delay}"
                );
                seen.push(delay);
            }
            seen.sort_unstable();
            seen.dedup();
            assert!(seen.len() > 150, "jittered, not one instant: {failures}");
        }
    }

    #[test]
    fn retry_interval_zero_disables_after_a_failure() {
        let mut s = scheduler(SchedulerConfig::default());
        s.add_initial(3, T0, 0);
        assert_eq!(
            drain(&mut s, T0),
            vec![Due {
                id: 3,
                reason: DueReason::Initial
            }]
        );
        assert_eq!(s.failed(3, T0 + SEC, 1), None);
        assert_eq!(s.due(3), None);
        assert_eq!(s.next_wakeup(T0 + 10_000 * SEC), None);
        assert!(drain(&mut s, T0 + 10_000 * SEC).is_empty());
        s.enable(3, T0 + 20 * SEC);
        assert_eq!(s.due(3), Some((T0 + 21 * SEC, DueReason::Requested)));
    }

    #[test]
    fn an_unreported_attempt_comes_back_as_stalled() {
        let mut s = scheduler(SchedulerConfig {
            gc_interval: 150,
            ..SchedulerConfig::default()
        });
        s.add_initial(1, T0, 0);
        assert_eq!(drain(&mut s, T0).len(), 1);
        assert!(drain(&mut s, T0 + 149 * SEC).is_empty());
        assert_eq!(
            drain(&mut s, T0 + 150 * SEC),
            vec![Due {
                id: 1,
                reason: DueReason::Stalled
            }]
        );
        // A reported outcome replaces the watchdog.
        s.add_initial(2, T0, 0);
        assert_eq!(drain(&mut s, T0 + 150 * SEC).len(), 1);
        s.registered(2, T0 + 151 * SEC, 3600);
        assert!(drain(&mut s, T0 + 400 * SEC).iter().all(|d| d.id != 2));
    }

    #[test]
    fn reg_active_zero_holds_everything_back() {
        let mut s = scheduler(SchedulerConfig {
            max_per_second: 10,
            ..SchedulerConfig::default()
        });
        assert!(s.set_active(false));
        for id in 0..100 {
            s.add_initial(id, T0, 0);
        }
        assert_eq!(s.next_wakeup(T0 + 50 * SEC), None);
        assert!(drain(&mut s, T0 + 50 * SEC).is_empty());
        assert!(!s.set_active(true));
        // Resumed: the backlog comes out paced, not in one burst.
        let mut now = T0 + 50 * SEC;
        let first = drain(&mut s, now).len();
        assert!(first <= 1, "{first}");
        now += SEC;
        assert!(drain(&mut s, now).len() <= 10);
    }

    #[test]
    fn restart_with_a_valid_binding_registers_nothing_early() {
        let mut s = scheduler(SchedulerConfig::default());
        let now_secs = T0 / SEC;
        let valid = LiveState {
            flags: flags::ONLINE | flags::INIT,
            registered_until: now_secs + 1000,
            next_due_ms: T0 + 500 * SEC,
            ..LiveState::default()
        };
        s.restore(0, T0, &valid, 0);
        assert_eq!(s.due(0), Some((T0 + 500 * SEC, DueReason::Refresh)));
        // No planned time persisted: spread over the first half of what is left.
        let unplanned = LiveState {
            next_due_ms: 0,
            ..valid.clone()
        };
        let mut dues = Vec::new();
        for id in 100..200 {
            s.restore(id, T0, &unplanned, 0);
            let (at, reason) = s.due(id).expect("scheduled");
            assert_eq!(reason, DueReason::Refresh);
            assert!((T0..=T0 + 500 * SEC).contains(&at), "{}", at - T0);
            dues.push(at);
            s.unschedule(id);
        }
        dues.sort_unstable();
        dues.dedup();
        assert!(dues.len() > 90, "spread, not one instant");
        let lapsed = LiveState {
            registered_until: now_secs - 1,
            ..valid.clone()
        };
        s.restore(1, T0, &lapsed, 0);
        assert_eq!(s.due(1), Some((T0, DueReason::Requested)));
        let backing_off = LiveState {
            failures: 3,
            next_due_ms: T0 + 90 * SEC,
            ..LiveState::default()
        };
        s.restore(2, T0, &backing_off, 0);
        assert_eq!(s.due(2), Some((T0 + 90 * SEC, DueReason::Retry)));
        let disabled = LiveState {
            flags: flags::DISABLED,
            ..LiveState::default()
        };
        s.restore(3, T0, &disabled, 0);
        assert_eq!(s.due(3), None);
        // Only the lapsed binding and the due retry come out before the planned refresh.
        let early: Vec<_> = drain(&mut s, T0 + 499 * SEC).iter().map(|d| d.id).collect();
        assert_eq!(early, vec![1, 2]);
    }

    /// The registrar grants what is asked; 100,000 accounts at expires 3600
    /// first register paced, then refresh for hours. After warm-up no
    /// one-second window may carry more than 1.5x the mean rate.
    #[test]
    fn steady_state_refreshes_are_level() {
        const ACCOUNTS: u32 = 100_000;
        const WARMUP_SECS: u64 = 6 * 3600;
        const MEASURE_SECS: u64 = 2 * 3600;
        let mut s = scheduler(SchedulerConfig::default());
        for id in 0..ACCOUNTS {
            s.add_initial(id, T0, 0);
        }
        let (per_second, _) = register_for(&mut s, WARMUP_SECS + MEASURE_SECS);
        let (mean, max) = mean_and_max(&per_second[WARMUP_SECS as usize..]);
        // 100k / (0.65 * 3600 s) is about 43 per second.
        assert!(mean > 35.0 && mean < 50.0, "mean {mean}");
        eprintln!("steady state: mean {mean:.1}/s, max {max}/s");
        assert!(f64::from(max) <= 1.5 * mean, "max {max}, mean {mean}");
    }

    /// With `reg_random_delay` about one refresh period (0.65 × 3600 s), the
    /// first registrations are already at the steady rate and placed level, so
    /// from the first second on (first wave, then its refreshes) no one-second
    /// window carries more than 1.5x the mean. Uniform random delays left
    /// Poisson peaks of 1.5x in the first wave.
    #[test]
    fn a_first_wave_spread_over_a_refresh_period_is_level_from_the_start() {
        const ACCOUNTS: u32 = 100_000;
        const SECS: u64 = 3 * 3600;
        let mut s = scheduler(SchedulerConfig {
            random_delay: 2400,
            ..SchedulerConfig::default()
        });
        for id in 0..ACCOUNTS {
            s.add_initial(id, T0, 0);
        }
        let (per_second, last_initial) = register_for(&mut s, SECS);
        assert!(
            last_initial < T0 + 2400 * SEC,
            "all registered within reg_random_delay"
        );
        let (mean, max) = mean_and_max(&per_second);
        eprintln!("from the start: mean {mean:.1}/s, max {max}/s");
        assert!(f64::from(max) <= 1.5 * mean, "max {max}, mean {mean}");
    }

    /// Slack gathers records due close together into one hand-out, and never
    /// holds back records waiting only for the rate limit.
    #[test]
    fn slack_batches_due_records_but_not_paced_ones() {
        const SLACK: u64 = 50;
        // Spread: one record every 5 ms comes out ten at a time.
        let mut s = scheduler(SchedulerConfig::default());
        for id in 0..100 {
            s.schedule_at(id, T0 + u64::from(id) * 5, DueReason::Refresh);
        }
        let mut now = T0;
        let mut batches = Vec::new();
        while !s.is_empty() {
            let batch = drain(&mut s, now);
            for due in &batch {
                s.unschedule(due.id);
            }
            if !batch.is_empty() {
                batches.push(batch.len());
            }
            match s.next_wakeup_with_slack(now, SLACK) {
                Some(at) => now = at,
                None => break,
            }
        }
        assert!(batches.len() <= 12, "{batches:?}");
        // Paced: 200 due at once at 25 per second take 8 s, not longer.
        let mut s = scheduler(SchedulerConfig {
            max_per_second: 25,
            ..SchedulerConfig::default()
        });
        for id in 0..200 {
            s.add_initial(id, T0, 0);
        }
        let mut now = T0;
        let mut sent = 0;
        while sent < 200 {
            for due in drain(&mut s, now) {
                sent += 1;
                s.registered(due.id, now, 3600);
            }
            if sent < 200 {
                now = s.next_wakeup_with_slack(now, SLACK).expect("scheduled");
            }
        }
        assert!(now - T0 <= 8 * SEC, "paced at 25/s: {} ms", now - T0);
    }

    #[test]
    fn modparams_are_read_and_checked_by_name() {
        let params: toml::Table = toml::from_str(
            "reg_contact_addr = \"127.0.0.1:5060\"\nreg_retry_interval = 30\nreg_active = 0\nreg_random_delay = 60\n",
        )
        .expect("toml");
        let config = SchedulerConfig::from_modparams(&params).expect("valid");
        assert_eq!(config.retry_interval, 30);
        assert_eq!(config.random_delay, 60);
        assert!(!config.active);
        for (text, key) in [
            ("reg_retry_interval = -1", "reg_retry_interval"),
            ("reg_max_per_second = 0", "reg_max_per_second"),
            ("reg_gc_interval = \"x\"", "reg_gc_interval"),
            (
                "reg_refresh_min_percent = 90\nreg_refresh_max_percent = 80",
                "reg_refresh_max_percent",
            ),
            (
                "reg_retry_interval = 60\nreg_retry_max_interval = 30",
                "reg_retry_max_interval",
            ),
        ] {
            let params: toml::Table = toml::from_str(text).expect("toml");
            assert_eq!(
                SchedulerConfig::from_modparams(&params)
                    .expect_err(text)
                    .key,
                key
            );
        }
    }
}
