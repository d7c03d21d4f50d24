//! What digest answers remember between hooks, kept by the caller (per transaction or
//! per dialog in host state): nonce counts per nonce, and answered realms for the retry bound.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Nonce counts per (realm, nonce), the least recently used dropped beyond [`Self::BOUND`]:
/// a call sees a handful of nonces, and a forgotten one only restarts at 1, which the
/// server answers with a fresh challenge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonceCounts {
    entries: VecDeque<NonceCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NonceCount {
    realm: String,
    nonce: String,
    count: u32,
}

impl NonceCounts {
    pub const BOUND: usize = 16;

    /// The count to send with this nonce now: 1 the first time, then 2, 3, …
    pub fn next(&mut self, realm: &str, nonce: &str) -> u32 {
        let position = self
            .entries
            .iter()
            .position(|e| e.realm == realm && e.nonce == nonce);
        let mut entry = match position.and_then(|i| self.entries.remove(i)) {
            Some(entry) => entry,
            None => {
                if self.entries.len() >= Self::BOUND {
                    self.entries.pop_front();
                }
                NonceCount {
                    realm: realm.to_string(),
                    nonce: nonce.to_string(),
                    count: 0,
                }
            }
        };
        // Saturates rather than wraps: a repeated count is refused by the server
        // (a fresh challenge follows), a wrapped one would look like a replay of 1.
        entry.count = entry.count.saturating_add(1);
        let count = entry.count;
        self.entries.push_back(entry);
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_nonce_and_realm() {
        let mut counts = NonceCounts::default();
        assert_eq!(counts.next("a", "n1"), 1);
        assert_eq!(counts.next("a", "n1"), 2);
        assert_eq!(counts.next("b", "n1"), 1);
        assert_eq!(counts.next("a", "n2"), 1);
        assert_eq!(counts.next("a", "n1"), 3);
    }

    #[test]
    fn bounded_dropping_the_least_recently_used() {
        let mut counts = NonceCounts::default();
        for i in 0..NonceCounts::BOUND {
            counts.next("r", &format!("n{i}"));
        }
        // Touch n0 so n1 becomes the oldest, then push one more nonce in.
        assert_eq!(counts.next("r", "n0"), 2);
        counts.next("r", "new");
        assert_eq!(counts.entries.len(), NonceCounts::BOUND);
        assert_eq!(counts.next("r", "n0"), 3);
        assert_eq!(counts.next("r", "n1"), 1, "n1 was forgotten");
    }

    #[test]
    fn survives_a_round_trip_through_host_state() {
        let mut counts = NonceCounts::default();
        counts.next("r", "n");
        let text = serde_json::to_string(&counts).unwrap();
        let mut back: NonceCounts = serde_json::from_str(&text).unwrap();
        assert_eq!(back.next("r", "n"), 2);
    }
}
