//! The in-memory account table of one tenant: records with their live state,
//! indexed by l_uuid, l_username, r_username and auth_username, exact counters.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use rustc_hash::FxHasher;

use super::record::{Account, LiveState, Record, RowError, flags};

/// Slot number of a record in its table; stable while the record exists.
pub type RecordId = u32;

/// The columns lookups can use (Kamailio's `uac_reg_enable` attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKey {
    LUuid,
    LUsername,
    RUsername,
    AuthUsername,
}

impl LookupKey {
    /// Parses Kamailio's attribute names.
    pub fn from_name(name: &str) -> Option<LookupKey> {
        match name {
            "l_uuid" => Some(LookupKey::LUuid),
            "l_username" => Some(LookupKey::LUsername),
            "r_username" => Some(LookupKey::RUsername),
            "auth_username" => Some(LookupKey::AuthUsername),
            _ => None,
        }
    }

    fn column(self, account: &Account) -> &str {
        match self {
            LookupKey::LUuid => account.l_uuid(),
            LookupKey::LUsername => account.l_username(),
            LookupKey::RUsername => account.r_username(),
            LookupKey::AuthUsername => account.auth_username(),
        }
    }
}

type U64Map<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

/// The keys are already hashes; hashing them again would only cost time.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// In `Index::first`: the ids under this hash are in `Index::overflow`.
const OVERFLOW: RecordId = RecordId::MAX;

/// An index from a column's value to record ids. It keys by the value's hash
/// instead of a copy of the string (the record holds the string once); a
/// lookup compares the candidates' column, so collisions are harmless. Almost
/// every hash has one id (12 bytes an entry); shared values (several accounts
/// with one auth_username) and collisions go to a side map.
#[derive(Debug)]
struct Index {
    key: LookupKey,
    first: U64Map<RecordId>,
    overflow: U64Map<Vec<RecordId>>,
}

fn hash_str(value: &str) -> u64 {
    let mut hasher = FxHasher::default();
    value.hash(&mut hasher);
    hasher.finish()
}

impl Index {
    fn new(key: LookupKey) -> Index {
        Index {
            key,
            first: U64Map::default(),
            overflow: U64Map::default(),
        }
    }

    fn insert(&mut self, value: &str, id: RecordId) {
        let hash = hash_str(value);
        match self.first.entry(hash) {
            Entry::Vacant(slot) => {
                slot.insert(id);
            }
            Entry::Occupied(mut slot) => {
                let previous = std::mem::replace(slot.get_mut(), OVERFLOW);
                if previous == OVERFLOW {
                    self.overflow.entry(hash).or_default().push(id);
                } else {
                    self.overflow.insert(hash, vec![previous, id]);
                }
            }
        }
    }

    fn remove(&mut self, value: &str, id: RecordId) {
        let hash = hash_str(value);
        match self.first.get(&hash).copied() {
            Some(OVERFLOW) => {
                let list = self
                    .overflow
                    .get_mut(&hash)
                    .expect("overflow entries exist");
                list.retain(|&other| other != id);
                if let [last] = list[..] {
                    self.overflow.remove(&hash);
                    self.first.insert(hash, last);
                }
            }
            Some(only) if only == id => {
                self.first.remove(&hash);
            }
            _ => {}
        }
    }

    fn candidates(&self, value: &str) -> &[RecordId] {
        let hash = hash_str(value);
        match self.first.get(&hash) {
            None => &[],
            Some(&OVERFLOW) => self.overflow.get(&hash).map_or(&[], Vec::as_slice),
            Some(id) => std::slice::from_ref(id),
        }
    }
}

#[derive(Debug)]
struct Slot {
    account: Account,
    state: LiveState,
}

/// Exact counters (Kamailio's `uac:regtotal`, `uac:regactive`,
/// `uac:regdisabled`), kept up to date on every change instead of being
/// incremented and decremented from several places.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records loaded.
    pub regtotal: u64,
    /// Records with the ONLINE flag.
    pub regactive: u64,
    /// Records with the DISABLED flag.
    pub regdisabled: u64,
}

impl Counters {
    fn add(&mut self, state_flags: u32) {
        self.regtotal += 1;
        self.regactive += u64::from(state_flags & flags::ONLINE != 0);
        self.regdisabled += u64::from(state_flags & flags::DISABLED != 0);
    }

    fn remove(&mut self, state_flags: u32) {
        self.regtotal -= 1;
        self.regactive -= u64::from(state_flags & flags::ONLINE != 0);
        self.regdisabled -= u64::from(state_flags & flags::DISABLED != 0);
    }
}

/// Misuse of the table: adding an l_uuid twice or addressing a missing record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// Kamailio answers `uac.reg_add` with 409 "uuid already exists".
    #[error("l_uuid {0:?} already exists")]
    UuidExists(String),
    #[error("no record with id {0}")]
    NoSuchRecord(RecordId),
    #[error("invalid record: {0}")]
    Invalid(#[from] RowError),
}

/// What a reload changed, so the driver can schedule the new and changed
/// records and drop the removed ones. Unchanged records keep id and state.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadDiff {
    pub added: Vec<RecordId>,
    /// Rows whose content changed: same id, fresh state.
    pub changed: Vec<RecordId>,
    /// Removed records with their l_uuid and last state (to unregister or forget).
    pub removed: Vec<(RecordId, String, LiveState)>,
    pub unchanged: usize,
}

/// All accounts of one tenant.
#[derive(Debug)]
pub struct RegistrationTable {
    slots: Vec<Option<Slot>>,
    free: Vec<RecordId>,
    by_uuid: Index,
    by_l_username: Index,
    by_r_username: Index,
    by_auth_username: Index,
    counters: Counters,
}

impl Default for RegistrationTable {
    fn default() -> Self {
        RegistrationTable {
            slots: Vec::new(),
            free: Vec::new(),
            by_uuid: Index::new(LookupKey::LUuid),
            by_l_username: Index::new(LookupKey::LUsername),
            by_r_username: Index::new(LookupKey::RUsername),
            by_auth_username: Index::new(LookupKey::AuthUsername),
            counters: Counters::default(),
        }
    }
}

impl RegistrationTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The exact counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.counters.regtotal as usize
    }

    /// Whether the table holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a record with its state (`LiveState::initial` for a new one).
    pub fn insert(&mut self, record: Record, state: LiveState) -> Result<RecordId, TableError> {
        let record = record.validated()?;
        if self.find_uuid(&record.l_uuid).is_some() {
            return Err(TableError::UuidExists(record.l_uuid));
        }
        let account = Account::new(&record)?;
        Ok(self.insert_account(account, state))
    }

    fn insert_account(&mut self, account: Account, state: LiveState) -> RecordId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(None);
                RecordId::try_from(self.slots.len() - 1)
                    .ok()
                    .filter(|&id| id != OVERFLOW)
                    .expect("fewer than 2^32 - 1 records")
            }
        };
        self.index(&account, id);
        self.counters.add(state.flags);
        self.slots[id as usize] = Some(Slot { account, state });
        id
    }

    fn indexes(&mut self) -> [&mut Index; 4] {
        [
            &mut self.by_uuid,
            &mut self.by_l_username,
            &mut self.by_r_username,
            &mut self.by_auth_username,
        ]
    }

    fn index(&mut self, account: &Account, id: RecordId) {
        for index in self.indexes() {
            index.insert(index.key.column(account), id);
        }
    }

    fn unindex(&mut self, account: &Account, id: RecordId) {
        for index in self.indexes() {
            index.remove(index.key.column(account), id);
        }
    }

    /// Removes a record, returning it and its last state.
    pub fn remove(&mut self, id: RecordId) -> Result<(Account, LiveState), TableError> {
        let slot = self
            .slots
            .get_mut(id as usize)
            .and_then(Option::take)
            .ok_or(TableError::NoSuchRecord(id))?;
        self.unindex(&slot.account, id);
        self.counters.remove(slot.state.flags);
        self.free.push(id);
        Ok((slot.account, slot.state))
    }

    /// The record and its state.
    pub fn get(&self, id: RecordId) -> Option<(&Account, &LiveState)> {
        self.slots
            .get(id as usize)?
            .as_ref()
            .map(|slot| (&slot.account, &slot.state))
    }

    /// Replaces a record's live state, keeping the counters exact.
    pub fn set_state(&mut self, id: RecordId, state: LiveState) -> Result<(), TableError> {
        let slot = self
            .slots
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .ok_or(TableError::NoSuchRecord(id))?;
        self.counters.remove(slot.state.flags);
        self.counters.add(state.flags);
        slot.state = state;
        Ok(())
    }

    fn index_for(&self, key: LookupKey) -> &Index {
        match key {
            LookupKey::LUuid => &self.by_uuid,
            LookupKey::LUsername => &self.by_l_username,
            LookupKey::RUsername => &self.by_r_username,
            LookupKey::AuthUsername => &self.by_auth_username,
        }
    }

    /// Every record whose `key` column equals `value` (at most one for l_uuid).
    pub fn find(&self, key: LookupKey, value: &str) -> Vec<RecordId> {
        self.index_for(key)
            .candidates(value)
            .iter()
            .copied()
            .filter(|&id| {
                self.get(id)
                    .is_some_and(|(account, _)| key.column(account) == value)
            })
            .collect()
    }

    /// The record with this l_uuid.
    pub fn find_uuid(&self, l_uuid: &str) -> Option<RecordId> {
        self.by_uuid.candidates(l_uuid).iter().copied().find(|&id| {
            self.get(id)
                .is_some_and(|(account, _)| account.l_uuid() == l_uuid)
        })
    }

    /// Every record, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (RecordId, &Account, &LiveState)> {
        self.slots.iter().enumerate().filter_map(|(id, slot)| {
            slot.as_ref()
                .map(|slot| (id as RecordId, &slot.account, &slot.state))
        })
    }

    /// Replaces the content with freshly loaded rows: a row identical to the
    /// loaded one (by l_uuid and content) keeps its id and live state, an
    /// edited row keeps its id but starts over, a new row is added, a missing
    /// one removed. `state_for` gives the state a new or edited row starts
    /// with. Rows must be validated and unique by l_uuid (as
    /// [`super::store::LoadedRows`] are).
    pub fn reload(
        &mut self,
        rows: Vec<Account>,
        mut state_for: impl FnMut(&Account) -> LiveState,
    ) -> ReloadDiff {
        let mut diff = ReloadDiff::default();
        let mut seen = vec![false; self.slots.len()];
        for account in rows {
            match self.find_uuid(account.l_uuid()) {
                Some(id) => {
                    seen[id as usize] = true;
                    let slot = self.slots[id as usize].as_ref().expect("found ids exist");
                    if slot.account == account {
                        diff.unchanged += 1;
                        continue;
                    }
                    let state = state_for(&account);
                    let old = self.slots[id as usize].take().expect("found ids exist");
                    self.unindex(&old.account, id);
                    self.counters.remove(old.state.flags);
                    self.index(&account, id);
                    self.counters.add(state.flags);
                    self.slots[id as usize] = Some(Slot { account, state });
                    diff.changed.push(id);
                }
                None => {
                    let state = state_for(&account);
                    let id = self.insert_account(account, state);
                    if seen.len() <= id as usize {
                        seen.resize(id as usize + 1, false);
                    }
                    seen[id as usize] = true;
                    diff.added.push(id);
                }
            }
        }
        for (id, seen) in seen.into_iter().enumerate() {
            let id = id as RecordId;
            if !seen && self.get(id).is_some() {
                let (account, state) = self.remove(id).expect("present");
                diff.removed.push((id, account.l_uuid().to_owned(), state));
            }
        }
        diff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrations::test_record as record;

    fn online(until: u64) -> LiveState {
        LiveState {
            flags: flags::ONLINE | flags::INIT,
            registered_until: until,
            ..LiveState::default()
        }
    }

    #[test]
    fn lookups_use_every_index_and_survive_removal() {
        let mut table = RegistrationTable::new();
        let a = table.insert(record("a"), LiveState::default()).expect("a");
        let mut shared = record("b");
        shared.auth_username = "auth-a".to_owned();
        let b = table.insert(shared, LiveState::default()).expect("b");
        assert_eq!(table.find_uuid("a"), Some(a));
        assert_eq!(table.find(LookupKey::LUsername, "local-b"), vec![b]);
        assert_eq!(table.find(LookupKey::RUsername, "remote-a"), vec![a]);
        assert_eq!(table.find(LookupKey::AuthUsername, "auth-a"), vec![a, b]);
        assert!(table.find(LookupKey::LUuid, "zzz").is_empty());
        // Kamailio's attribute names, as uac_reg_enable and uac.reg_info take them.
        let key = LookupKey::from_name("r_username").expect("known attribute");
        assert_eq!(table.find(key, "remote-b"), vec![b]);
        assert_eq!(LookupKey::from_name("socket"), None);
        table.remove(a).expect("remove");
        assert_eq!(table.find(LookupKey::AuthUsername, "auth-a"), vec![b]);
        assert_eq!(table.find_uuid("a"), None);
        assert_eq!(
            table.insert(record("b"), LiveState::default()),
            Err(TableError::UuidExists("b".to_owned()))
        );
        // The freed slot is reused.
        assert_eq!(table.insert(record("c"), LiveState::default()), Ok(a));
    }

    #[test]
    fn counters_stay_exact_through_any_transition() {
        let mut table = RegistrationTable::new();
        let mut ids = Vec::new();
        for i in 0..50 {
            ids.push(
                table
                    .insert(record(&format!("r{i}")), LiveState::default())
                    .expect("insert"),
            );
        }
        let states = [
            LiveState::default(),
            online(100),
            LiveState {
                flags: flags::DISABLED,
                ..LiveState::default()
            },
            LiveState {
                flags: flags::ONLINE | flags::ONGOING,
                ..LiveState::default()
            },
        ];
        for step in 0..1000usize {
            let id = ids[(step * 7919) % ids.len()];
            if step % 97 == 0 {
                let (account, _) = table.remove(id).expect("remove");
                let new_id = table
                    .insert(account.to_record(), states[step % 4].clone())
                    .expect("re-add");
                let at = ids.iter().position(|&x| x == id).expect("known");
                ids[at] = new_id;
            } else {
                table
                    .set_state(id, states[(step * 31) % 4].clone())
                    .expect("set");
            }
            let recount = table.iter().fold(Counters::default(), |mut c, (_, _, s)| {
                c.add(s.flags);
                c
            });
            assert_eq!(table.counters(), recount, "step {step}");
        }
    }

    #[test]
    fn reload_keeps_state_of_unchanged_rows_only() {
        let mut table = RegistrationTable::new();
        let kept = table.insert(record("kept"), online(5000)).expect("kept");
        let edited = table
            .insert(record("edited"), online(5000))
            .expect("edited");
        let gone = table.insert(record("gone"), online(5000)).expect("gone");
        assert_eq!(table.counters().regactive, 3);

        let mut edited_row = record("edited");
        edited_row.r_username = "renamed".to_owned();
        let rows = [record("kept"), edited_row, record("new")]
            .iter()
            .map(|r| Account::new(&r.clone().validated().expect("valid")).expect("pack"))
            .collect();
        let diff = table.reload(rows, LiveState::initial);

        assert_eq!(diff.unchanged, 1);
        assert_eq!(diff.changed, vec![edited]);
        assert_eq!(diff.removed.len(), 1);
        assert_eq!(diff.removed[0].0, gone);
        assert_eq!(diff.removed[0].1, "gone");
        assert_eq!(diff.added.len(), 1);
        assert_eq!(table.get(kept).expect("kept").1, &online(5000));
        assert_eq!(table.get(edited).expect("edited").1.flags, 0);
        assert_eq!(table.find(LookupKey::RUsername, "renamed"), vec![edited]);
        assert!(table.find(LookupKey::RUsername, "remote-edited").is_empty());
        assert_eq!(
            table.counters(),
            Counters {
                regtotal: 3,
                regactive: 1,
                regdisabled: 0
            }
        );
    }
}
