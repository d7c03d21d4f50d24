//! The pending actions of one machine, first in first out. An input yields at most a few and
//! the caller drains them before the next, so they live inside the machine: a transaction costs
//! no allocation of its own, and ending it 32 s later frees no cold block.

use std::collections::VecDeque;

/// What one input yields at most, with room to spare (`SendAck` + `PassUp`, or `Transmit` +
/// `Timeout` + `Terminated`).
const INLINE: usize = 4;

/// A FIFO that holds [`INLINE`] actions in place and spills the rest to the heap, so a caller
/// that does not drain between inputs still loses none.
#[derive(Clone, Debug)]
pub(crate) struct Actions<A: Copy> {
    inline: [Option<A>; INLINE],
    /// Index of the oldest inline action.
    head: usize,
    /// How many inline slots are taken.
    len: usize,
    /// Actions queued behind the inline ones while those were full; all come after them.
    spill: VecDeque<A>,
}

impl<A: Copy> Actions<A> {
    pub(crate) fn new() -> Self {
        Actions {
            inline: [None; INLINE],
            head: 0,
            len: 0,
            spill: VecDeque::new(),
        }
    }

    pub(crate) fn with(first: A) -> Self {
        let mut actions = Actions::new();
        actions.push_back(first);
        actions
    }

    pub(crate) fn push_back(&mut self, action: A) {
        // Once anything spilled, later actions go behind it to keep the order.
        if self.len < INLINE && self.spill.is_empty() {
            self.inline[(self.head + self.len) % INLINE] = Some(action);
            self.len += 1;
        } else {
            self.spill.push_back(action);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<A> {
        if self.len == 0 {
            return self.spill.pop_front();
        }
        let action = self.inline[self.head].take();
        self.head = (self.head + 1) % INLINE;
        self.len -= 1;
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_come_out_in_order_inline_and_spilled() {
        let mut q = Actions::with(0u32);
        for i in 1..10 {
            q.push_back(i);
        }
        assert_eq!(q.pop_front(), Some(0));
        assert_eq!(q.pop_front(), Some(1));
        // Room inline again, but 4.. spilled: 10 must come after them.
        q.push_back(10);
        let rest: Vec<u32> = std::iter::from_fn(|| q.pop_front()).collect();
        assert_eq!(rest, (2..=10).collect::<Vec<_>>());
        assert_eq!(q.pop_front(), None);
    }

    #[test]
    fn the_ring_wraps_without_spilling() {
        let mut q = Actions::new();
        for round in 0..10u32 {
            q.push_back(round * 2);
            q.push_back(round * 2 + 1);
            assert_eq!(q.pop_front(), Some(round * 2));
            assert_eq!(q.pop_front(), Some(round * 2 + 1));
        }
        assert!(q.spill.capacity() == 0, "a drained queue never allocates");
        assert_eq!(q.pop_front(), None);
    }
}
