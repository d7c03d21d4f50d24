//! The host's registration store as the filter sees it: the WIT `registrations` interface
//! as a trait (the glue maps it one to one) and [`MemoryStore`], an in-memory one for tests.

use std::cell::Cell;
use std::collections::HashMap;

use thiserror::Error;

use super::flags;

/// The host's id of a record (WIT `record-id`).
pub type RecordId = u32;

/// One uacreg row (version 5 plus version 6's contact_user), without credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    pub id: RecordId,
    pub l_uuid: String,
    pub l_username: String,
    pub l_domain: String,
    pub r_username: String,
    pub r_domain: String,
    pub realm: String,
    pub auth_username: String,
    pub auth_proxy: String,
    /// Expires from the row (0: never registered).
    pub expires: u32,
    /// The row's flags column.
    pub row_flags: u32,
    pub reg_delay: u32,
    pub contact_addr: String,
    pub socket: String,
    pub contact_user: String,
}

/// What is known beyond the row; persisted by the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveState {
    /// [`flags`] bits.
    pub flags: u32,
    /// The Expires in use (0: the row's; raised by a 423 Min-Expires).
    pub expires: u32,
    /// UNIX seconds when the binding ends (0: none).
    pub registered_until: u64,
    pub call_id: String,
    pub cseq: u32,
    /// Status of the last final reply (408: time-out; 0: none yet).
    pub last_status: u16,
    pub last_reason: String,
    /// Failures in a row since the last success.
    pub failures: u32,
}

impl LiveState {
    /// Registered: ONLINE and the binding not yet over.
    pub fn is_registered(&self, now: u64) -> bool {
        self.flags & flags::ONLINE != 0 && self.registered_until > now
    }
}

/// Columns records are found by (indexed in the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKey {
    LUuid,
    LUsername,
    RUsername,
    AuthUsername,
}

impl LookupKey {
    /// Kamailio's attribute names (`uac_reg_enable`, `uac.reg_info`).
    pub fn parse(name: &str) -> Option<LookupKey> {
        match name {
            "l_uuid" => Some(LookupKey::LUuid),
            "l_username" => Some(LookupKey::LUsername),
            "r_username" => Some(LookupKey::RUsername),
            "auth_username" => Some(LookupKey::AuthUsername),
            _ => None,
        }
    }

    fn column(self, a: &Account) -> &str {
        match self {
            LookupKey::LUuid => &a.l_uuid,
            LookupKey::LUsername => &a.l_username,
            LookupKey::RUsername => &a.r_username,
            LookupKey::AuthUsername => &a.auth_username,
        }
    }
}

/// Password or HA1 for the digest answer.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Password(String),
    Ha1(String),
}

impl std::fmt::Debug for Credentials {
    // Never prints the secret, so no log line or panic message can leak it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Password(_) => f.write_str("Password(..)"),
            Credentials::Ha1(_) => f.write_str("Ha1(..)"),
        }
    }
}

/// Why the host refused a store call (the WIT `result<_, string>` error).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("registration store: {0}")]
pub struct StoreError(pub String);

/// What `reload` changed: (added, changed, removed, unchanged).
pub type ReloadCounts = (u32, u32, u32, u32);

/// The WIT `registrations` interface, one method per function.
pub trait RegistrationStore {
    fn get(&self, l_uuid: &str) -> Option<(Account, LiveState)>;
    fn get_by_id(&self, id: RecordId) -> Option<(Account, LiveState)>;
    /// The live state alone (the caller kept the row).
    fn state(&self, id: RecordId) -> Option<LiveState>;
    /// Up to `limit` ids above `after`, ascending (uac.reg_dump pages through them).
    fn list(&self, after: Option<RecordId>, limit: u32) -> Vec<RecordId>;
    fn find(&self, key: LookupKey, value: &str) -> Vec<RecordId>;
    fn credentials(&self, id: RecordId) -> Option<Credentials>;
    fn update_state(&mut self, id: RecordId, state: &LiveState) -> Result<(), StoreError>;
    /// Success: the host schedules the refresh from `granted_secs`.
    fn registered(
        &mut self,
        id: RecordId,
        state: &LiveState,
        granted_secs: u32,
    ) -> Result<(), StoreError>;
    /// Failure: the host schedules the retry (backoff) or none (reg_retry_interval = 0).
    fn failed(&mut self, id: RecordId, state: &LiveState) -> Result<(), StoreError>;
    /// Due at `at_unix_ms`, or out of the queue with `None`.
    fn schedule(&mut self, id: RecordId, at_unix_ms: Option<u64>) -> Result<(), StoreError>;
    fn next_due(&self, id: RecordId) -> Option<u64>;
    fn add(
        &mut self,
        row: &Account,
        credentials: &Credentials,
        persist: bool,
    ) -> Result<RecordId, StoreError>;
    fn remove(&mut self, id: RecordId, persist: bool) -> Result<(), StoreError>;
    fn reload(&mut self) -> Result<ReloadCounts, StoreError>;
    /// Returns the previous mode.
    fn set_active(&mut self, active: bool) -> bool;
    /// (regtotal, regactive, regdisabled).
    fn counters(&self) -> (u64, u64, u64);
}

/// What the host scheduler was told last about a record (tests read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Registered { granted_secs: u32 },
    Failed,
}

#[derive(Debug, Clone)]
struct MemoryRecord {
    account: Account,
    credentials: Credentials,
    state: LiveState,
    due: Option<u64>,
    report: Option<Report>,
}

/// An in-memory store: `table` plays the uacreg table, `records` the loaded set.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    table: Vec<(Account, Credentials)>,
    records: HashMap<RecordId, MemoryRecord>,
    next_id: RecordId,
    inactive: bool,
    /// Rows handed out by `get` and `get_by_id`: what crossing a component boundary would
    /// copy (a dozen strings each).
    rows_read: Cell<usize>,
}

impl MemoryStore {
    /// Loads `rows` as the table and the records (every record due at 0).
    pub fn with_rows(rows: Vec<(Account, Credentials)>) -> MemoryStore {
        let mut store = MemoryStore {
            table: rows,
            ..MemoryStore::default()
        };
        store.reload().expect("memory reload cannot fail");
        store
    }

    /// The row as it is in the table (tests edit it before `reload`).
    pub fn table_mut(&mut self) -> &mut Vec<(Account, Credentials)> {
        &mut self.table
    }

    pub fn last_report(&self, id: RecordId) -> Option<Report> {
        self.records.get(&id).and_then(|r| r.report)
    }

    pub fn rows_read(&self) -> usize {
        self.rows_read.get()
    }

    pub fn is_active(&self) -> bool {
        !self.inactive
    }

    fn insert(&mut self, row: &Account, credentials: &Credentials) -> RecordId {
        self.next_id += 1;
        let id = self.next_id;
        let mut account = row.clone();
        account.id = id;
        let state = LiveState {
            flags: row.row_flags & flags::DISABLED,
            ..LiveState::default()
        };
        let due = (state.flags & flags::DISABLED == 0).then_some(0);
        self.records.insert(
            id,
            MemoryRecord {
                account,
                credentials: credentials.clone(),
                state,
                due,
                report: None,
            },
        );
        id
    }
}

fn same_row(a: &Account, b: &Account) -> bool {
    Account { id: 0, ..a.clone() } == Account { id: 0, ..b.clone() }
}

impl RegistrationStore for MemoryStore {
    fn get(&self, l_uuid: &str) -> Option<(Account, LiveState)> {
        let id = *self.find(LookupKey::LUuid, l_uuid).first()?;
        self.get_by_id(id)
    }

    fn get_by_id(&self, id: RecordId) -> Option<(Account, LiveState)> {
        self.rows_read.set(self.rows_read.get() + 1);
        self.records
            .get(&id)
            .map(|r| (r.account.clone(), r.state.clone()))
    }

    fn state(&self, id: RecordId) -> Option<LiveState> {
        self.records.get(&id).map(|r| r.state.clone())
    }

    fn list(&self, after: Option<RecordId>, limit: u32) -> Vec<RecordId> {
        let mut ids: Vec<RecordId> = self
            .records
            .keys()
            .copied()
            .filter(|id| after.is_none_or(|a| *id > a))
            .collect();
        ids.sort_unstable();
        ids.truncate(limit as usize);
        ids
    }

    fn find(&self, key: LookupKey, value: &str) -> Vec<RecordId> {
        let mut ids: Vec<RecordId> = self
            .records
            .values()
            .filter(|r| key.column(&r.account) == value)
            .map(|r| r.account.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn credentials(&self, id: RecordId) -> Option<Credentials> {
        self.records.get(&id).map(|r| r.credentials.clone())
    }

    fn update_state(&mut self, id: RecordId, state: &LiveState) -> Result<(), StoreError> {
        let r = self
            .records
            .get_mut(&id)
            .ok_or_else(|| StoreError(format!("no record {id}")))?;
        r.state = state.clone();
        Ok(())
    }

    fn registered(
        &mut self,
        id: RecordId,
        state: &LiveState,
        granted_secs: u32,
    ) -> Result<(), StoreError> {
        self.update_state(id, state)?;
        let r = self.records.get_mut(&id).expect("checked above");
        r.report = Some(Report::Registered { granted_secs });
        // Refresh at half the granted time, as a plain host would.
        r.due = Some(
            state
                .registered_until
                .saturating_sub(u64::from(granted_secs) / 2)
                * 1000,
        );
        Ok(())
    }

    fn failed(&mut self, id: RecordId, state: &LiveState) -> Result<(), StoreError> {
        self.update_state(id, state)?;
        let r = self.records.get_mut(&id).expect("checked above");
        r.report = Some(Report::Failed);
        r.due = None;
        Ok(())
    }

    fn schedule(&mut self, id: RecordId, at_unix_ms: Option<u64>) -> Result<(), StoreError> {
        let r = self
            .records
            .get_mut(&id)
            .ok_or_else(|| StoreError(format!("no record {id}")))?;
        r.due = at_unix_ms;
        Ok(())
    }

    fn next_due(&self, id: RecordId) -> Option<u64> {
        self.records.get(&id).and_then(|r| r.due)
    }

    fn add(
        &mut self,
        row: &Account,
        credentials: &Credentials,
        persist: bool,
    ) -> Result<RecordId, StoreError> {
        if !self.find(LookupKey::LUuid, &row.l_uuid).is_empty() {
            return Err(StoreError("uuid already exists".into()));
        }
        if persist {
            self.table.push((row.clone(), credentials.clone()));
        }
        Ok(self.insert(row, credentials))
    }

    fn remove(&mut self, id: RecordId, persist: bool) -> Result<(), StoreError> {
        let r = self
            .records
            .remove(&id)
            .ok_or_else(|| StoreError(format!("no record {id}")))?;
        if persist {
            self.table.retain(|(a, _)| a.l_uuid != r.account.l_uuid);
        }
        Ok(())
    }

    fn reload(&mut self) -> Result<ReloadCounts, StoreError> {
        let (mut added, mut changed, mut unchanged) = (0, 0, 0);
        let table = self.table.clone();
        let mut kept = Vec::new();
        for (row, credentials) in &table {
            match self.find(LookupKey::LUuid, &row.l_uuid).first().copied() {
                Some(id) => {
                    let r = &self.records[&id];
                    if same_row(&r.account, row) && r.credentials == *credentials {
                        unchanged += 1;
                        kept.push(id);
                    } else {
                        self.records.remove(&id);
                        kept.push(self.insert(row, credentials));
                        changed += 1;
                    }
                }
                None => {
                    kept.push(self.insert(row, credentials));
                    added += 1;
                }
            }
        }
        let before = self.records.len();
        self.records.retain(|id, _| kept.contains(id));
        let removed = (before - self.records.len()) as u32;
        Ok((added, changed, removed, unchanged))
    }

    fn set_active(&mut self, active: bool) -> bool {
        let previous = !self.inactive;
        self.inactive = !active;
        previous
    }

    fn counters(&self) -> (u64, u64, u64) {
        let total = self.records.len() as u64;
        let active = self
            .records
            .values()
            .filter(|r| r.state.flags & flags::ONLINE != 0)
            .count() as u64;
        let disabled = self
            .records
            .values()
            .filter(|r| r.state.flags & flags::DISABLED != 0)
            .count() as u64;
        (total, active, disabled)
    }
}
