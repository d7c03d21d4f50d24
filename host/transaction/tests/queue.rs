//! TimerQueue: ordering, rescheduling, lazy cancellation, and agreement with a simple model
//! under a long deterministic pseudo-random workload.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use siphost_transaction::{ClientAction, ClientTransaction, Kind, TimerConfig, TimerQueue};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[test]
fn pops_in_deadline_order_only_when_expired() {
    let t0 = Instant::now();
    let mut queue = TimerQueue::new();
    queue.schedule("c", t0 + ms(300));
    queue.schedule("a", t0 + ms(100));
    queue.schedule("b", t0 + ms(200));
    assert_eq!(queue.len(), 3);
    assert_eq!(queue.next_deadline(), Some(t0 + ms(100)));
    assert_eq!(queue.pop_expired(t0 + ms(99)).count(), 0);
    assert_eq!(
        queue.pop_expired(t0 + ms(200)).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(queue.next_deadline(), Some(t0 + ms(300)));
    assert_eq!(
        queue.pop_expired(t0 + ms(1_000)).collect::<Vec<_>>(),
        vec!["c"]
    );
    assert!(queue.is_empty());
    assert_eq!(queue.next_deadline(), None);
}

#[test]
fn reschedule_replaces_and_cancel_removes() {
    let t0 = Instant::now();
    let mut queue = TimerQueue::new();
    queue.schedule(1u32, t0 + ms(100));
    queue.schedule(2u32, t0 + ms(200));
    queue.schedule(1u32, t0 + ms(500));
    assert_eq!(queue.deadline(&1), Some(t0 + ms(500)));
    assert_eq!(queue.next_deadline(), Some(t0 + ms(200)));
    assert!(queue.cancel(&2));
    assert!(!queue.cancel(&2));
    assert_eq!(queue.next_deadline(), Some(t0 + ms(500)));
    assert_eq!(queue.pop_expired(t0 + ms(400)).count(), 0);
    // Earlier rescheduling works too.
    queue.schedule(1u32, t0 + ms(50));
    assert_eq!(queue.pop_expired(t0 + ms(60)).collect::<Vec<_>>(), vec![1]);
    assert_eq!(queue.pop_expired(t0 + ms(10_000)).count(), 0);
    assert_eq!(queue.len(), 0);
}

#[test]
fn set_follows_poll_timeout_shape() {
    let t0 = Instant::now();
    let mut queue = TimerQueue::new();
    queue.set("tx", Some(t0 + ms(10)));
    assert_eq!(queue.deadline(&"tx"), Some(t0 + ms(10)));
    queue.set("tx", None);
    assert_eq!(queue.deadline(&"tx"), None);
    assert!(queue.is_empty());
}

#[test]
fn equal_deadlines_pop_in_scheduling_order_and_partial_iteration_keeps_the_rest() {
    let t0 = Instant::now();
    let mut queue = TimerQueue::new();
    for key in 0..5u8 {
        queue.schedule(key, t0 + ms(100));
    }
    let first_two: Vec<u8> = queue.pop_expired(t0 + ms(100)).take(2).collect();
    assert_eq!(first_two, vec![0, 1]);
    assert_eq!(queue.len(), 3);
    assert_eq!(
        queue.pop_expired(t0 + ms(100)).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
}

/// xorshift64*: a tiny deterministic generator so the workload is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

#[test]
fn agrees_with_a_hash_map_model_under_random_workload() {
    let t0 = Instant::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut queue = TimerQueue::new();
    let mut model: HashMap<u64, Instant> = HashMap::new();
    let mut now = t0;
    for _ in 0..50_000 {
        let key = rng.below(200);
        match rng.below(10) {
            0..=5 => {
                let at = now + ms(rng.below(5_000));
                queue.schedule(key, at);
                model.insert(key, at);
            }
            6 => {
                assert_eq!(queue.cancel(&key), model.remove(&key).is_some());
            }
            7 => {
                assert_eq!(queue.next_deadline(), model.values().min().copied());
            }
            _ => {
                now += ms(rng.below(300));
                let popped: Vec<u64> = queue.pop_expired(now).collect();
                let mut expected: Vec<(Instant, u64)> = model
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(key, at)| (*at, *key))
                    .collect();
                expected.sort();
                let mut popped_sorted: Vec<(Instant, u64)> =
                    popped.iter().map(|key| (model[key], *key)).collect();
                // Popped keys come out in deadline order.
                assert!(popped_sorted.windows(2).all(|pair| pair[0].0 <= pair[1].0));
                popped_sorted.sort();
                assert_eq!(popped_sorted, expected);
                for key in popped {
                    model.remove(&key);
                }
            }
        }
        assert_eq!(queue.len(), model.len());
    }
}

/// The proxy's loop in miniature: one queue drives many machines; after every input the
/// machine's `poll_timeout()` is written back with `set`.
#[test]
fn drives_thousands_of_transactions_from_one_queue() {
    let t0 = Instant::now();
    let mut machines: HashMap<u32, ClientTransaction> = HashMap::new();
    let mut queue = TimerQueue::new();
    let mut transmits: HashMap<u32, usize> = HashMap::new();
    for id in 0..2_000u32 {
        // Staggered starts; odd ids get a 200 OK after 1 s.
        let start = t0 + ms(u64::from(id % 100));
        let mut tx = ClientTransaction::new(Kind::NonInvite, false, TimerConfig::default(), start);
        while let Some(action) = tx.poll_action() {
            if action == ClientAction::Transmit {
                *transmits.entry(id).or_default() += 1;
            }
        }
        queue.set(id, tx.poll_timeout());
        machines.insert(id, tx);
    }
    let answer_at = t0 + ms(1_000);
    let mut answered = false;
    let mut timeouts = 0;
    while let Some(deadline) = queue.next_deadline() {
        if !answered && deadline > answer_at {
            answered = true;
            for (id, tx) in machines.iter_mut().filter(|(id, _)| *id % 2 == 1) {
                tx.on_response(200, answer_at).unwrap();
                while tx.poll_action().is_some() {}
                queue.set(*id, tx.poll_timeout());
            }
            continue;
        }
        let due: Vec<u32> = queue.pop_expired(deadline).collect();
        for id in due {
            let Some(tx) = machines.get_mut(&id) else {
                panic!("queue yielded unknown key {id}");
            };
            tx.handle_timeout(deadline);
            let mut terminated = false;
            while let Some(action) = tx.poll_action() {
                match action {
                    ClientAction::Transmit => *transmits.entry(id).or_default() += 1,
                    ClientAction::Timeout => timeouts += 1,
                    ClientAction::Terminated => terminated = true,
                    _ => {}
                }
            }
            if terminated {
                machines.remove(&id);
                queue.cancel(&id);
            } else {
                queue.set(id, tx.poll_timeout());
            }
        }
    }
    assert!(machines.is_empty(), "{} machines left", machines.len());
    assert_eq!(timeouts, 1_000);
    // Unanswered: first send + 10 retransmissions; answered at 1 s: first send + one at 0.5 s.
    for (id, count) in transmits {
        assert_eq!(count, if id % 2 == 1 { 2 } else { 11 }, "id {id}");
    }
}

/// Deadlines minutes apart (beyond the sorted buckets and the ring behind them), long idle
/// jumps, and rescheduling into and out of the far range: still exact, in order, nothing lost.
#[test]
fn far_deadlines_and_long_jumps_stay_exact() {
    let t0 = Instant::now();
    let mut queue = TimerQueue::new();
    queue.schedule("hour", t0 + Duration::from_secs(3_600));
    queue.schedule("c", t0 + Duration::from_secs(180));
    queue.schedule("soon", t0 + ms(1));
    queue.schedule("day", t0 + Duration::from_secs(86_400));
    assert_eq!(queue.next_deadline(), Some(t0 + ms(1)));
    assert_eq!(
        queue.pop_expired(t0 + ms(1)).collect::<Vec<_>>(),
        vec!["soon"]
    );
    // Only far deadlines left: the next one is still exact.
    assert_eq!(queue.next_deadline(), Some(t0 + Duration::from_secs(180)));
    // A deadline nearer than the one just sorted in.
    queue.schedule("minute", t0 + Duration::from_secs(60));
    assert_eq!(queue.next_deadline(), Some(t0 + Duration::from_secs(60)));
    // Moved from the far range to a near one and back.
    queue.schedule("hour", t0 + ms(500));
    queue.schedule("day", t0 + Duration::from_secs(86_400 * 2));
    queue.schedule("day", t0 + Duration::from_secs(86_400));
    assert_eq!(queue.pop_expired(t0 + ms(499)).count(), 0);
    assert_eq!(
        queue.pop_expired(t0 + ms(500)).collect::<Vec<_>>(),
        vec!["hour"]
    );
    // One jump over everything but the day.
    assert_eq!(
        queue
            .pop_expired(t0 + Duration::from_secs(7_200))
            .collect::<Vec<_>>(),
        vec!["minute", "c"]
    );
    assert_eq!(queue.len(), 1);
    assert_eq!(
        queue.next_deadline(),
        Some(t0 + Duration::from_secs(86_400))
    );
    assert_eq!(
        queue
            .pop_expired(t0 + Duration::from_secs(86_400))
            .collect::<Vec<_>>(),
        vec!["day"]
    );
    assert_eq!(queue.next_deadline(), None);
    // Deadlines before the first one ever scheduled still come first.
    queue.schedule("late", t0 + Duration::from_secs(90_000));
    queue.schedule("past", t0);
    assert_eq!(queue.next_deadline(), Some(t0));
}

/// The random workload again with deadlines from milliseconds to an hour and time steps from
/// none to ten minutes, so entries cross the sorted part, the ring and the far heap both ways.
#[test]
fn agrees_with_the_model_across_every_range() {
    let t0 = Instant::now();
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    let mut queue = TimerQueue::new();
    let mut model: HashMap<u64, Instant> = HashMap::new();
    let mut now = t0;
    let spans = [10, 200, 5_000, 60_000, 400_000, 3_600_000];
    for _ in 0..50_000 {
        let key = rng.below(500);
        match rng.below(12) {
            0..=6 => {
                let span = spans[rng.below(spans.len() as u64) as usize];
                let at = now + ms(rng.below(span));
                queue.schedule(key, at);
                model.insert(key, at);
            }
            7 => assert_eq!(queue.cancel(&key), model.remove(&key).is_some()),
            8 => assert_eq!(queue.next_deadline(), model.values().min().copied()),
            _ => {
                let step = spans[rng.below(spans.len() as u64) as usize] / 6;
                now += ms(rng.below(step + 1));
                let popped: Vec<u64> = queue.pop_expired(now).collect();
                let deadlines: Vec<Instant> = popped.iter().map(|key| model[key]).collect();
                assert!(deadlines.windows(2).all(|pair| pair[0] <= pair[1]));
                let mut expected: Vec<u64> = model
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(key, _)| *key)
                    .collect();
                expected.sort_unstable();
                let mut got = popped.clone();
                got.sort_unstable();
                assert_eq!(got, expected);
                for key in popped {
                    model.remove(&key);
                }
            }
        }
        assert_eq!(queue.len(), model.len());
    }
}
