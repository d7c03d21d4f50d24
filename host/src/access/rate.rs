//! Token buckets per source address in a table of fixed capacity (clock eviction), so a
//! scanner's unidentified or failing requests are dropped before they cost CPU.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::config::RateLimitConfig;

#[derive(Debug, Clone, Copy)]
struct Slot {
    address: IpAddr,
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Duration,
    /// Clock bit: set on use, cleared as the eviction hand passes.
    referenced: bool,
}

/// The buckets. Time is passed in (a monotonic or wall-clock `Duration` from any fixed
/// origin, never going back), so the table is deterministic in tests.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    capacity: usize,
    slots: Vec<Slot>,
    index: HashMap<IpAddr, usize>,
    hand: usize,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> RateLimiter {
        RateLimiter {
            rate: config.rate,
            burst: f64::from(config.burst),
            capacity: config.table_size.max(1),
            slots: Vec::new(),
            index: HashMap::new(),
            hand: 0,
        }
    }

    /// Whether `address` has a token left, without taking it.
    pub fn has_token(&mut self, address: IpAddr, now: Duration) -> bool {
        match self.index.get(&address) {
            Some(&i) => self.refill(i, now) >= 1.0,
            // An address not in the table has a full bucket.
            None => true,
        }
    }

    /// Takes one token from `address`'s bucket; false if it was empty (the request is to
    /// be dropped).
    pub fn take(&mut self, address: IpAddr, now: Duration) -> bool {
        let i = match self.index.get(&address) {
            Some(&i) => i,
            None => self.insert(address, now),
        };
        let tokens = self.refill(i, now);
        let slot = &mut self.slots[i];
        slot.referenced = true;
        if tokens >= 1.0 {
            slot.tokens = tokens - 1.0;
            true
        } else {
            false
        }
    }

    /// Addresses currently tracked.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn refill(&mut self, i: usize, now: Duration) -> f64 {
        let slot = &mut self.slots[i];
        let elapsed = now.saturating_sub(slot.updated).as_secs_f64();
        slot.tokens = (slot.tokens + elapsed * self.rate).min(self.burst);
        slot.updated = slot.updated.max(now);
        slot.tokens
    }

    fn insert(&mut self, address: IpAddr, now: Duration) -> usize {
        let fresh = Slot {
            address,
            tokens: self.burst,
            updated: now,
            referenced: false,
        };
        if self.slots.len() < self.capacity {
            self.slots.push(fresh);
            self.index.insert(address, self.slots.len() - 1);
            return self.slots.len() - 1;
        }
        // Second chance: skip (and clear) recently used slots; at most one full turn.
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.capacity;
            if std::mem::take(&mut self.slots[i].referenced) {
                continue;
            }
            self.index.remove(&self.slots[i].address);
            self.slots[i] = fresh;
            self.index.insert(address, i);
            return i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: u32, table_size: usize) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig {
            rate,
            burst,
            table_size,
        })
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn burst_then_steady_rate() {
        let mut limit = limiter(2.0, 3, 8);
        for _ in 0..3 {
            assert!(limit.take(ip(1), at(0)));
        }
        assert!(!limit.take(ip(1), at(0)), "burst used up");
        assert!(!limit.has_token(ip(1), at(400)));
        assert!(
            limit.take(ip(1), at(500)),
            "one token after half a second at 2/s"
        );
        assert!(!limit.take(ip(1), at(500)));
        // A long pause refills only up to the burst.
        for _ in 0..3 {
            assert!(limit.take(ip(1), at(60_000)));
        }
        assert!(!limit.take(ip(1), at(60_000)));
        // Other addresses have buckets of their own.
        assert!(limit.has_token(ip(2), at(60_000)));
        assert!(limit.take(ip(2), at(60_000)));
    }

    #[test]
    fn table_is_bounded_and_evicts_unreferenced_first() {
        let mut limit = limiter(1.0, 1, 3);
        for n in 1..=3 {
            assert!(limit.take(ip(n), at(0)));
        }
        // A full turn clears every clock bit, then slot 0 (address 1) goes.
        assert!(limit.take(ip(4), at(0)));
        assert_eq!(limit.len(), 3);
        assert!(
            limit.has_token(ip(1), at(0)),
            "forgotten address starts full"
        );
        assert!(
            !limit.has_token(ip(2), at(0)),
            "address 2 is still tracked and empty"
        );
        // Address 2 used again: its bit saves it, address 3 goes next.
        assert!(!limit.take(ip(2), at(0)));
        assert!(limit.take(ip(5), at(0)));
        assert!(!limit.has_token(ip(2), at(0)));
        assert!(limit.has_token(ip(3), at(0)));
        assert_eq!(limit.len(), 3);
    }

    #[test]
    fn time_going_back_does_not_add_tokens() {
        let mut limit = limiter(1.0, 1, 2);
        assert!(limit.take(ip(1), at(10_000)));
        assert!(!limit.take(ip(1), at(5_000)));
        assert!(!limit.take(ip(1), at(10_500)));
        assert!(limit.take(ip(1), at(11_000)));
    }
}
