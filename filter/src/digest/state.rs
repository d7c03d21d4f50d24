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

    /// Takes up a nonce already sent `count` times (a challenge kept from an earlier
    /// request and answered again before the server asks, RFC 7616 §3.4.5).
    pub fn resume(&mut self, realm: &str, nonce: &str, count: u32) {
        self.entries
            .retain(|e| !(e.realm == realm && e.nonce == nonce));
        if self.entries.len() >= Self::BOUND {
            self.entries.pop_front();
        }
        self.entries.push_back(NonceCount {
            realm: realm.to_string(),
            nonce: nonce.to_string(),
            count,
        });
    }

    /// How often this nonce was sent (0: never, or forgotten).
    pub fn count(&self, realm: &str, nonce: &str) -> u32 {
        self.entries
            .iter()
            .find(|e| e.realm == realm && e.nonce == nonce)
            .map_or(0, |e| e.count)
    }

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

/// The realms already answered for one request (its transaction, across its resends),
/// so a wrong password ends with the challenge passed back instead of a loop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempts {
    answered: Vec<RealmAttempt>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RealmAttempt {
    realm: String,
    stale_answers: u8,
}

/// Whether a realm's new challenge may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptVerdict {
    /// First challenge for the realm, or a stale nonce within the bound.
    Answer,
    /// The realm was answered and challenges again without `stale=true`: the
    /// credentials were refused.
    Rejected,
    /// `stale=true` more often than [`Attempts::STALE_LIMIT`] in a row.
    TooManyStale,
}

impl Attempts {
    /// Stale answers allowed per realm and request; a server that declares every nonce
    /// stale would otherwise keep the request in a loop.
    pub const STALE_LIMIT: u8 = 2;

    /// What to do with a challenge for `realm`, without recording anything.
    pub fn verdict(&self, realm: &str, stale: bool) -> AttemptVerdict {
        match self.answered.iter().find(|a| a.realm == realm) {
            None => AttemptVerdict::Answer,
            Some(_) if !stale => AttemptVerdict::Rejected,
            Some(a) if a.stale_answers >= Self::STALE_LIMIT => AttemptVerdict::TooManyStale,
            Some(_) => AttemptVerdict::Answer,
        }
    }

    /// Records that `realm` was answered now.
    pub fn record(&mut self, realm: &str, stale: bool) {
        match self.answered.iter_mut().find(|a| a.realm == realm) {
            Some(a) if stale => a.stale_answers = a.stale_answers.saturating_add(1),
            Some(_) => {}
            None => self.answered.push(RealmAttempt {
                realm: realm.to_string(),
                stale_answers: 0,
            }),
        }
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
    fn a_resumed_nonce_counts_on_and_a_new_one_starts_at_one() {
        let mut counts = NonceCounts::default();
        counts.resume("r", "kept", 6);
        assert_eq!(counts.count("r", "kept"), 6);
        assert_eq!(counts.next("r", "kept"), 7);
        assert_eq!(counts.next("r", "fresh"), 1);
        assert_eq!(counts.count("r", "kept"), 7);
        assert_eq!(counts.count("other", "kept"), 0);
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

    #[test]
    fn a_realm_is_answered_once_then_stale_twice() {
        let mut attempts = Attempts::default();
        assert_eq!(attempts.verdict("r", false), AttemptVerdict::Answer);
        attempts.record("r", false);
        assert_eq!(attempts.verdict("r", false), AttemptVerdict::Rejected);
        assert_eq!(attempts.verdict("other", false), AttemptVerdict::Answer);
        for _ in 0..Attempts::STALE_LIMIT {
            assert_eq!(attempts.verdict("r", true), AttemptVerdict::Answer);
            attempts.record("r", true);
        }
        assert_eq!(attempts.verdict("r", true), AttemptVerdict::TooManyStale);
        assert_eq!(attempts.verdict("r", false), AttemptVerdict::Rejected);
    }
}
