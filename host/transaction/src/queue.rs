//! A deadline queue keyed by transaction, so one task can drive thousands of machines.
//! Min-heap with lazy cancellation: rescheduling or cancelling only bumps a generation.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Below this many heap entries stale ones are never compacted away: not worth the rebuild.
const COMPACT_MIN_ENTRIES: usize = 64;

/// One heap entry; it is live only while `generation` matches the key's entry in `live`.
#[derive(Debug)]
struct HeapEntry<K> {
    at: Instant,
    generation: u64,
    key: K,
}

impl<K> PartialEq for HeapEntry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K> Eq for HeapEntry<K> {}

impl<K> PartialOrd for HeapEntry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for HeapEntry<K> {
    /// Generations are unique, so `(at, generation)` is a total order that never compares keys
    /// and pops equal deadlines in scheduling order.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.generation).cmp(&(other.at, other.generation))
    }
}

/// Deadlines keyed by `K` (e.g. a transaction id): at most one deadline per key.
///
/// Pure: it never reads a clock. The driver sleeps until [`next_deadline`](Self::next_deadline),
/// then calls [`pop_expired`](Self::pop_expired) with the current time and runs
/// `handle_timeout` on each returned key's machine.
#[derive(Debug)]
pub struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<HeapEntry<K>>>,
    /// The live generation and deadline of every scheduled key.
    live: HashMap<K, (u64, Instant)>,
    next_generation: u64,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            live: HashMap::new(),
            next_generation: 0,
        }
    }
}

impl<K: Eq + Hash + Clone> TimerQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key`'s deadline to `at`, replacing any earlier one.
    pub fn schedule(&mut self, key: K, at: Instant) {
        if self.deadline(&key) == Some(at) {
            // Same deadline: keep the existing heap entry instead of adding a stale one.
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.live.insert(key.clone(), (generation, at));
        self.heap.push(Reverse(HeapEntry {
            at,
            generation,
            key,
        }));
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

    /// The earliest live deadline. Takes `&mut self` to discard cancelled entries on top.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.discard_stale_top();
        self.heap.peek().map(|Reverse(entry)| entry.at)
    }

    /// Removes and yields, earliest first, every key whose deadline is at or before `now`.
    /// Keys are removed as the iterator advances; dropping it early leaves the rest queued.
    pub fn pop_expired(&mut self, now: Instant) -> PopExpired<'_, K> {
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

    fn is_live(&self, entry: &HeapEntry<K>) -> bool {
        self.live
            .get(&entry.key)
            .is_some_and(|&(generation, _)| generation == entry.generation)
    }

    fn discard_stale_top(&mut self) {
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.is_live(top) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap from the live deadlines once stale entries outnumber live ones, so
    /// frequent rescheduling (every retransmission) cannot grow memory without bound.
    fn compact_if_mostly_stale(&mut self) {
        if self.heap.len() < COMPACT_MIN_ENTRIES || self.heap.len() <= 2 * self.live.len() {
            return;
        }
        self.heap = self
            .live
            .iter()
            .map(|(key, &(generation, at))| {
                Reverse(HeapEntry {
                    at,
                    generation,
                    key: key.clone(),
                })
            })
            .collect();
    }
}

/// Iterator returned by [`TimerQueue::pop_expired`].
#[derive(Debug)]
pub struct PopExpired<'a, K> {
    queue: &'a mut TimerQueue<K>,
    now: Instant,
}

impl<K: Eq + Hash + Clone> Iterator for PopExpired<'_, K> {
    type Item = K;

    fn next(&mut self) -> Option<K> {
        self.queue.discard_stale_top();
        let Reverse(top) = self.queue.heap.peek()?;
        if top.at > self.now {
            return None;
        }
        let Reverse(entry) = self.queue.heap.pop()?;
        self.queue.live.remove(&entry.key);
        Some(entry.key)
    }
}
