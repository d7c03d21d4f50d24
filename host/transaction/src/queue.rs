//! A deadline queue keyed by transaction, so one task can drive thousands of machines.
//! Only deadlines of the next few tens of milliseconds are kept sorted; the rest wait unsorted
//! in coarse buckets. Rescheduling or cancelling only bumps a generation.
//!
//! A proxy at a thousand calls a second holds a hundred thousand deadlines, nearly all of them
//! the 32 s that finished transactions linger. In one binary heap each pop walked a path of
//! that size through memory (5% of the relay's CPU); here a deadline is sorted only once its
//! bucket comes near, among the few hundred due with it.

use std::cmp::{Ordering, Reverse};
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::time::Instant;

/// Below this many stored entries stale ones are never compacted away: not worth the rebuild.
const COMPACT_MIN_ENTRIES: usize = 64;
/// A bucket spans 2^26 ns (67 ms).
const BUCKET_SHIFT: u32 = 26;
/// Buckets ahead of the sorted part (4,096 × 67 ms = 275 s, beyond Timer C's 180 s); later
/// deadlines wait in a heap of their own.
const BUCKETS: u64 = 4096;

/// One stored entry; it is live only while `generation` matches the key's entry in `live`.
#[derive(Debug)]
struct Entry<K> {
    at: Instant,
    generation: u64,
    key: K,
}

impl<K> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K> Eq for Entry<K> {}

impl<K> PartialOrd for Entry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Entry<K> {
    /// Generations are unique, so `(at, generation)` is a total order that never compares keys
    /// and pops equal deadlines in scheduling order.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.generation).cmp(&(other.at, other.generation))
    }
}

type MinHeap<K> = BinaryHeap<Reverse<Entry<K>>>;

/// Deadlines keyed by `K` (e.g. a transaction id): at most one deadline per key. `S` hashes
/// the keys (the proxy's are its own ids, so it passes a fast unkeyed hasher).
///
/// Pure: it never reads a clock. The driver sleeps until [`next_deadline`](Self::next_deadline),
/// then calls [`pop_expired`](Self::pop_expired) with the current time and runs
/// `handle_timeout` on each returned key's machine.
///
/// Time is cut into buckets counted from the first deadline scheduled. Every entry of a bucket
/// before `sorted_until` is in `near`, a heap; the next [`BUCKETS`] buckets hold theirs
/// unsorted in `ring`; later ones are in `far`, a heap that is rarely touched.
#[derive(Debug)]
pub struct TimerQueue<K, S = RandomState> {
    /// The live generation and deadline of every scheduled key.
    live: HashMap<K, (u64, Instant), S>,
    next_generation: u64,
    origin: Option<Instant>,
    sorted_until: u64,
    near: MinHeap<K>,
    /// Bucket `b` (from `sorted_until` on) is `ring[b % BUCKETS]`; allocated at first use.
    ring: Vec<Vec<Entry<K>>>,
    in_ring: usize,
    far: MinHeap<K>,
}

impl<K, S: Default> Default for TimerQueue<K, S> {
    fn default() -> Self {
        TimerQueue {
            live: HashMap::default(),
            next_generation: 0,
            origin: None,
            sorted_until: 0,
            near: BinaryHeap::new(),
            ring: Vec::new(),
            in_ring: 0,
            far: BinaryHeap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> TimerQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<K: Eq + Hash + Clone, S: BuildHasher + Default> TimerQueue<K, S> {
    /// Sets `key`'s deadline to `at`, replacing any earlier one.
    pub fn schedule(&mut self, key: K, at: Instant) {
        if self.deadline(&key) == Some(at) {
            // Same deadline: keep the existing entry instead of adding a stale one.
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.live.insert(key.clone(), (generation, at));
        self.place(Entry {
            at,
            generation,
            key,
        });
        self.compact_if_mostly_stale();
    }

    /// Sets `key`'s deadline to `at`, or removes it when `at` is `None` — the shape of a
    /// machine's `poll_timeout()`, so the driver can call
    /// `queue.set(key, machine.poll_timeout())` after every input.
    pub fn set(&mut self, key: K, at: Option<Instant>) {
        match at {
            Some(at) => self.schedule(key, at),
            None => {
                self.cancel(&key);
            }
        }
    }

    /// Removes `key`'s deadline; returns whether it had one.
    pub fn cancel(&mut self, key: &K) -> bool {
        let had = self.live.remove(key).is_some();
        self.compact_if_mostly_stale();
        had
    }

    /// `key`'s current deadline, if scheduled.
    pub fn deadline(&self, key: &K) -> Option<Instant> {
        self.live.get(key).map(|&(_, at)| at)
    }

    /// The earliest live deadline. Takes `&mut self` to discard cancelled entries on top and
    /// to sort the next bucket when nothing sorted is left.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        loop {
            self.discard_stale_top();
            if let Some(Reverse(entry)) = self.near.peek() {
                return Some(entry.at);
            }
            let next = self
                .next_ring_bucket()
                .or_else(|| self.far.peek().map(|Reverse(entry)| self.bucket(entry.at)))?;
            self.sort_until(next + 1);
        }
    }

    /// Removes and yields, earliest first, every key whose deadline is at or before `now`.
    /// Keys are removed as the iterator advances; dropping it early leaves the rest queued.
    pub fn pop_expired(&mut self, now: Instant) -> PopExpired<'_, K, S> {
        if self.origin.is_some() {
            let through = self.bucket(now);
            self.sort_until(through + 1);
        }
        PopExpired { queue: self, now }
    }

    /// How many keys have a deadline.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when no key has a deadline.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn bucket(&self, at: Instant) -> u64 {
        let since = self.origin.map_or(0, |origin| {
            at.saturating_duration_since(origin).as_nanos() >> BUCKET_SHIFT
        });
        u64::try_from(since).unwrap_or(u64::MAX)
    }

    fn place(&mut self, entry: Entry<K>) {
        if self.origin.is_none() {
            self.origin = Some(entry.at);
        }
        let bucket = self.bucket(entry.at);
        if bucket < self.sorted_until {
            self.near.push(Reverse(entry));
        } else if bucket - self.sorted_until < BUCKETS {
            if self.ring.is_empty() {
                self.ring.resize_with(BUCKETS as usize, Vec::new);
            }
            self.ring[Self::slot(bucket)].push(entry);
            self.in_ring += 1;
        } else {
            self.far.push(Reverse(entry));
        }
    }

    fn slot(bucket: u64) -> usize {
        // Below BUCKETS, so it fits.
        (bucket % BUCKETS) as usize
    }

    /// The first bucket in the ring that holds entries.
    fn next_ring_bucket(&self) -> Option<u64> {
        if self.in_ring == 0 {
            return None;
        }
        (self.sorted_until..self.sorted_until + BUCKETS)
            .find(|&bucket| !self.ring[Self::slot(bucket)].is_empty())
    }

    /// Sorts every live entry of the buckets before `until` into `near` (the stale are
    /// dropped on the way), and brings far deadlines that now fall inside the ring into it.
    fn sort_until(&mut self, until: u64) {
        if until <= self.sorted_until {
            return;
        }
        if self.in_ring > 0 {
            let last = until.min(self.sorted_until + BUCKETS);
            for bucket in self.sorted_until..last {
                let slot = Self::slot(bucket);
                if self.ring[slot].is_empty() {
                    continue;
                }
                let mut entries = std::mem::take(&mut self.ring[slot]);
                self.in_ring -= entries.len();
                let live = &self.live;
                self.near.extend(
                    entries
                        .drain(..)
                        .filter(|entry| is_live(live, entry))
                        .map(Reverse),
                );
                // The bucket's room is reused BUCKETS buckets later.
                self.ring[slot] = entries;
            }
        }
        self.sorted_until = until;
        while let Some(Reverse(top)) = self.far.peek() {
            if self.bucket(top.at) >= self.sorted_until + BUCKETS {
                break;
            }
            if let Some(Reverse(entry)) = self.far.pop()
                && is_live(&self.live, &entry)
            {
                self.place(entry);
            }
        }
    }

    fn discard_stale_top(&mut self) {
        while let Some(Reverse(top)) = self.near.peek() {
            if is_live(&self.live, top) {
                break;
            }
            self.near.pop();
        }
    }

    /// Rebuilds from the live deadlines once stale entries outnumber live ones, so frequent
    /// rescheduling (every retransmission) cannot grow memory without bound.
    fn compact_if_mostly_stale(&mut self) {
        let stored = self.near.len() + self.in_ring + self.far.len();
        if stored < COMPACT_MIN_ENTRIES || stored <= 2 * self.live.len() {
            return;
        }
        self.near.clear();
        self.far.clear();
        self.ring.iter_mut().for_each(Vec::clear);
        self.in_ring = 0;
        let entries: Vec<Entry<K>> = self
            .live
            .iter()
            .map(|(key, &(generation, at))| Entry {
                at,
                generation,
                key: key.clone(),
            })
            .collect();
        for entry in entries {
            self.place(entry);
        }
    }
}

fn is_live<K: Eq + Hash, S: BuildHasher>(
    live: &HashMap<K, (u64, Instant), S>,
    entry: &Entry<K>,
) -> bool {
    live.get(&entry.key)
        .is_some_and(|&(generation, _)| generation == entry.generation)
}

/// Iterator returned by [`TimerQueue::pop_expired`].
#[derive(Debug)]
pub struct PopExpired<'a, K, S = RandomState> {
    queue: &'a mut TimerQueue<K, S>,
    now: Instant,
}

impl<K: Eq + Hash + Clone, S: BuildHasher + Default> Iterator for PopExpired<'_, K, S> {
    type Item = K;

    fn next(&mut self) -> Option<K> {
        self.queue.discard_stale_top();
        let Reverse(top) = self.queue.near.peek()?;
        if top.at > self.now {
            return None;
        }
        let Reverse(entry) = self.queue.near.pop()?;
        self.queue.live.remove(&entry.key);
        Some(entry.key)
    }
}
