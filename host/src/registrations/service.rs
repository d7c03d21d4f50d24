//! A tenant's live registrations: store, table and scheduler joined behind the
//! filter's WIT `registrations` import, and the driver task handing due records to the filter.
//!
//! The table and scheduler belong to the tenant, not to a filter instance, so a
//! hot swap keeps every binding and schedule. Calls from the filter (on its
//! worker thread) take the lock for a moment; database writes are batched by
//! the driver about once a second, so a `kill -9` loses at most that second.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Mutex, MutexGuard, Notify};

use super::record::{Account, LiveState, Record, flags};
use super::scheduler::{Due, DueReason, Scheduler, SchedulerConfig};
use super::store::{RegistrationStore, SkippedRow, StoreError};
use super::table::{Counters, LookupKey, RecordId, RegistrationTable};
use crate::runtime::Tenant;
use crate::runtime::state::MAX_PENDING_REQUESTS;

/// How often dirty live state is written to the database.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Records handed to the filter in one `on-registration-due` call at most.
pub const MAX_BATCH: usize = 64;
/// How long the driver lets a due record wait so that those due close together go to the
/// filter in one call: each hand-off wakes the filter's worker thread, and those wake-ups,
/// not the REGISTERs, were most of a refresh's CPU. Far below the one-second windows the
/// refresh spread is judged by.
pub const DUE_SLACK: Duration = Duration::from_millis(50);
/// Records out with the filter at once at most: each has one REGISTER in flight, and they
/// must fit the tenant's requests in flight with room to spare for its other requests.
pub const MAX_IN_FLIGHT: usize = MAX_PENDING_REQUESTS * 4 / 5;

/// `driver_wakes_at` while every place in flight is taken: the outcome that frees a
/// batch's worth of places wakes the driver (it waited a whole [`FLUSH_INTERVAL`] when
/// none did, which left 10,000 first registrations idle most of the time).
const WAITING_FOR_ROOM: u64 = 1;

/// Records handed to the filter whose outcome has not come back yet, and since when.
/// Handing out no more than `limit` keeps every REGISTER within the tenant's requests in
/// flight: a send refused there counts as a failure and waits `reg_retry_interval`, which
/// is what 10,000 first registrations at once did before. A record the filter lost frees
/// its place after `reg_gc_interval` (the scheduler then hands it out again as stalled).
#[derive(Debug)]
struct InFlight {
    since_ms: HashMap<RecordId, u64>,
    limit: usize,
}

impl InFlight {
    fn new(limit: usize) -> Self {
        InFlight {
            since_ms: HashMap::new(),
            limit,
        }
    }

    /// How many more records may go out now; when none, those out longer than `gc_ms` are
    /// given up first.
    fn room(&mut self, now_ms: u64, gc_ms: u64) -> usize {
        if self.since_ms.len() >= self.limit {
            self.since_ms
                .retain(|_, since| now_ms.saturating_sub(*since) < gc_ms);
        }
        self.free()
    }

    /// Places free now.
    fn free(&self) -> usize {
        self.limit.saturating_sub(self.since_ms.len())
    }

    /// Enough places are free again for a full batch (or every one, below that).
    fn refilled(&self) -> bool {
        let free = self.free();
        free >= MAX_BATCH || free == self.limit
    }

    /// `due` went to the filter: a stalled record is no longer awaited (the filter counts
    /// it as failed without sending); any other now has a REGISTER on its way.
    fn handed(&mut self, due: &Due, now_ms: u64) {
        if due.reason == DueReason::Stalled {
            self.since_ms.remove(&due.id);
        } else {
            self.since_ms.insert(due.id, now_ms);
        }
    }

    /// The record's outcome came back (or it is gone).
    fn done(&mut self, id: RecordId) {
        self.since_ms.remove(&id);
    }
}

/// What `reload` changed, as `uac.reg_reload` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadCounts {
    pub added: u32,
    pub changed: u32,
    pub removed: u32,
    pub unchanged: u32,
}

/// A registration store call that failed (the WIT `result` error text).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Table(#[from] super::table::TableError),
    #[error("the database call needs the host's async runtime")]
    NoRuntime,
}

/// Records per admin state (online, ongoing, offline, disabled; the order of
/// `admin::registrations::RegistrationState::ALL`), kept beside the table so
/// scrapes read them without the lock.
#[derive(Default)]
struct StateCounts([AtomicU64; 4]);

impl StateCounts {
    fn slot(flags: u32) -> usize {
        use crate::admin::registrations::RegistrationState as S;
        match S::from_kamailio_flags(flags) {
            S::Online => 0,
            S::Ongoing => 1,
            S::Offline => 2,
            S::Disabled => 3,
        }
    }

    fn change(&self, old: Option<u32>, new: Option<u32>) {
        if let Some(old) = old {
            self.0[Self::slot(old)].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(new) = new {
            self.0[Self::slot(new)].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn recount(&self, table: &RegistrationTable) {
        let mut counts = [0u64; 4];
        for (_, _, state) in table.iter() {
            counts[Self::slot(state.flags)] += 1;
        }
        for (slot, count) in self.0.iter().zip(counts) {
            slot.store(count, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

struct Inner {
    table: RegistrationTable,
    scheduler: Scheduler<StdRng>,
    /// Records whose live state changed since the last flush.
    dirty: HashSet<RecordId>,
    in_flight: InFlight,
}

/// One tenant's registrations.
pub struct Registrations {
    tenant: Arc<str>,
    store: RegistrationStore,
    inner: Mutex<Inner>,
    /// Woken when the schedule changed, so the driver recomputes its sleep.
    wake: Notify,
    /// When the sleeping driver wakes by itself (UNIX ms; `u64::MAX`: not before a
    /// call wakes it; 0: awake; [`WAITING_FOR_ROOM`]). Outcomes that need the driver
    /// no sooner leave it asleep: waking it per REGISTER was a thread wake-up per
    /// refresh.
    driver_wakes_at: AtomicU64,
    tokio: tokio::runtime::Handle,
    states: StateCounts,
}

/// Whether a driver that wakes by itself at `wakes_at` (see `driver_wakes_at`) must be
/// woken now for a change at `now_ms`: a record due at `due_ms`, dirty state to write
/// within [`FLUSH_INTERVAL`], and (`refilled`) a batch's worth of places in flight free.
fn driver_needed(wakes_at: u64, due_ms: Option<u64>, now_ms: u64, refilled: bool) -> bool {
    if wakes_at == WAITING_FOR_ROOM {
        return refilled;
    }
    let flush_by = now_ms + FLUSH_INTERVAL.as_millis() as u64;
    let needed_by = due_ms.map_or(flush_by, |due| due.min(flush_by));
    needed_by < wakes_at
}

/// UNIX milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn log_skipped(tenant: &str, skipped: &[SkippedRow]) {
    for row in skipped {
        tracing::warn!(tenant, "uacreg {row}");
    }
}

impl Registrations {
    /// Loads the table with its persisted live state and schedules every
    /// record: a binding still valid is refreshed when planned, not now.
    pub async fn load(
        tenant: &str,
        store: RegistrationStore,
        config: SchedulerConfig,
    ) -> Result<Arc<Registrations>, StoreError> {
        let (mut table, skipped) = store.load().await?;
        log_skipped(tenant, &skipped);
        // What a killed process had not written yet; written at the first flush.
        let dirty = store.replay_state_log(&mut table);
        let mut scheduler = Scheduler::new(config, StdRng::from_os_rng());
        let now = now_ms();
        for (id, account, state) in table.iter() {
            scheduler.restore(id, now, state, account.reg_delay());
        }
        let counters = table.counters();
        tracing::info!(
            tenant,
            regtotal = counters.regtotal,
            regactive = counters.regactive,
            regdisabled = counters.regdisabled,
            skipped = skipped.len(),
            "remote registrations loaded"
        );
        let states = StateCounts::default();
        states.recount(&table);
        Ok(Arc::new(Registrations {
            states,
            tenant: Arc::from(tenant),
            store,
            inner: Mutex::new(Inner {
                table,
                scheduler,
                dirty,
                in_flight: InFlight::new(MAX_IN_FLIGHT),
            }),
            wake: Notify::new(),
            driver_wakes_at: AtomicU64::new(0),
            tokio: tokio::runtime::Handle::current(),
        }))
    }

    /// The lock, from a filter's call: on its worker thread, or on a thread of
    /// a multi-threaded runtime running the call inline (`runtime::inline`),
    /// which waits the way a blocking section there must.
    fn blocking(&self) -> MutexGuard<'_, Inner> {
        if let Ok(guard) = self.inner.try_lock() {
            return guard;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| self.inner.blocking_lock())
        } else {
            self.inner.blocking_lock()
        }
    }

    /// Runs a database call from a filter worker thread.
    fn block_on<T>(
        &self,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, ServiceError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside the runtime a blocking wait would stall it.
            return Err(ServiceError::NoRuntime);
        }
        Ok(self.tokio.block_on(f)?)
    }

    pub fn get(&self, id: RecordId) -> Option<(RecordId, Account, LiveState)> {
        let inner = self.blocking();
        inner.table.get(id).map(|(a, s)| (id, a.clone(), s.clone()))
    }

    /// The live state alone, without copying the row.
    pub fn state(&self, id: RecordId) -> Option<LiveState> {
        self.blocking().table.get(id).map(|(_, s)| s.clone())
    }

    pub fn get_by_uuid(&self, l_uuid: &str) -> Option<(RecordId, Account, LiveState)> {
        let inner = self.blocking();
        let id = inner.table.find_uuid(l_uuid)?;
        inner.table.get(id).map(|(a, s)| (id, a.clone(), s.clone()))
    }

    /// Up to `limit` ids above `after`, ascending.
    pub fn list(&self, after: Option<RecordId>, limit: u32) -> Vec<RecordId> {
        let inner = self.blocking();
        inner
            .table
            .iter()
            .map(|(id, _, _)| id)
            .filter(|&id| after.is_none_or(|after| id > after))
            .take(limit as usize)
            .collect()
    }

    pub fn find(&self, key: LookupKey, value: &str) -> Vec<RecordId> {
        self.blocking().table.find(key, value)
    }

    /// The record's secret: `(true, ha1)` or `(false, password)`.
    pub fn credentials(&self, id: RecordId) -> Option<(bool, String)> {
        let inner = self.blocking();
        let (account, _) = inner.table.get(id)?;
        Some(if account.auth_password().is_empty() {
            (true, account.auth_ha1().to_owned())
        } else {
            (false, account.auth_password().to_owned())
        })
    }

    fn set(&self, inner: &mut Inner, id: RecordId, state: LiveState) -> Result<(), ServiceError> {
        let old = inner.table.get(id).map(|(account, old)| {
            self.store.log_state(account, &state);
            old.flags
        });
        let new = state.flags;
        inner.table.set_state(id, state)?;
        self.states.change(old, Some(new));
        inner.dirty.insert(id);
        Ok(())
    }

    /// Replaces the live state (the next due time stays the scheduler's).
    pub fn update_state(&self, id: RecordId, mut state: LiveState) -> Result<(), ServiceError> {
        let mut inner = self.blocking();
        state.next_due_ms = inner.scheduler.due(id).map_or(0, |(at, _)| at);
        self.set(&mut inner, id, state)?;
        drop(inner);
        self.nudge(None, false);
        Ok(())
    }

    /// Wakes the driver if it would otherwise look later than needed: for a record
    /// now due at `due_ms`, or for dirty state, which is to be written within
    /// [`FLUSH_INTERVAL`]. Called after the change, with the lock released; the
    /// driver publishes its wake-up time before it sleeps, and a wake that comes
    /// while it is awake is kept by [`Notify`] for its next sleep.
    /// `refilled`: an outcome freed the place that makes a batch's worth free, which wakes
    /// a driver waiting for places.
    fn nudge(&self, due_ms: Option<u64>, refilled: bool) {
        let wakes_at = self.driver_wakes_at.load(Ordering::SeqCst);
        if driver_needed(wakes_at, due_ms, now_ms(), refilled) {
            self.wake.notify_one();
        }
    }

    /// A success: the refresh is scheduled from `granted_secs`.
    pub fn registered(
        &self,
        id: RecordId,
        mut state: LiveState,
        granted_secs: u32,
    ) -> Result<(), ServiceError> {
        let mut inner = self.blocking();
        if inner.table.get(id).is_none() {
            return Err(super::table::TableError::NoSuchRecord(id).into());
        }
        inner.in_flight.done(id);
        let refilled = inner.in_flight.refilled();
        let due = inner.scheduler.registered(id, now_ms(), granted_secs);
        state.next_due_ms = due.unwrap_or(0);
        self.set(&mut inner, id, state)?;
        drop(inner);
        self.nudge(due, refilled);
        Ok(())
    }

    /// A failure: the retry is scheduled with backoff (none with
    /// `reg_retry_interval` 0).
    pub fn failed(&self, id: RecordId, mut state: LiveState) -> Result<(), ServiceError> {
        let mut inner = self.blocking();
        if inner.table.get(id).is_none() {
            return Err(super::table::TableError::NoSuchRecord(id).into());
        }
        inner.in_flight.done(id);
        let refilled = inner.in_flight.refilled();
        let due = inner.scheduler.failed(id, now_ms(), state.failures.max(1));
        state.next_due_ms = due.unwrap_or(0);
        self.set(&mut inner, id, state)?;
        drop(inner);
        self.nudge(due, refilled);
        Ok(())
    }

    /// Due at `at_ms`, or out of the queue.
    pub fn schedule(&self, id: RecordId, at_ms: Option<u64>) -> Result<(), ServiceError> {
        let mut inner = self.blocking();
        let Some((_, state)) = inner.table.get(id) else {
            return Err(super::table::TableError::NoSuchRecord(id).into());
        };
        let mut state = state.clone();
        match at_ms {
            Some(at) => inner.scheduler.schedule_at(id, at, DueReason::Requested),
            None => inner.scheduler.unschedule(id),
        }
        state.next_due_ms = at_ms.unwrap_or(0);
        self.set(&mut inner, id, state)?;
        drop(inner);
        self.wake.notify_one();
        Ok(())
    }

    /// When the record is due next (UNIX ms).
    pub fn next_due(&self, id: RecordId) -> Option<u64> {
        self.blocking().scheduler.due(id).map(|(at, _)| at)
    }

    /// `uac.reg_add`: into memory, and with `persist` into the uacreg table.
    pub fn add(&self, record: Record, persist: bool) -> Result<RecordId, ServiceError> {
        if persist {
            self.block_on(self.store.insert_row(&record))?;
        }
        let mut inner = self.blocking();
        let disabled = record.flags & flags::DISABLED != 0;
        let reg_delay = record.reg_delay;
        let state = LiveState {
            flags: record.flags & flags::DISABLED,
            expires: record.expires,
            ..LiveState::default()
        };
        let flags = state.flags;
        let id = inner.table.insert(record, state)?;
        self.states.change(None, Some(flags));
        if !disabled {
            inner.scheduler.add_initial(id, now_ms(), reg_delay);
        }
        drop(inner);
        self.wake.notify_one();
        Ok(id)
    }

    /// `uac.reg_remove`: out of memory and the schedule; with `persist` the
    /// uacreg row is deleted too. The persisted live state goes either way.
    pub fn remove(&self, id: RecordId, persist: bool) -> Result<(), ServiceError> {
        let mut inner = self.blocking();
        let (account, state) = inner.table.remove(id)?;
        self.states.change(Some(state.flags), None);
        inner.scheduler.unschedule(id);
        inner.in_flight.done(id);
        inner.dirty.remove(&id);
        drop(inner);
        let uuid = account.l_uuid().to_owned();
        if persist {
            self.block_on(self.store.delete_row(&uuid))?;
        } else {
            self.block_on(self.store.delete_states(&[uuid]))?;
        }
        Ok(())
    }

    /// `uac.reg_reload`: re-reads the table; unchanged rows keep their state
    /// and schedule, edited and new rows start over, removed rows go.
    pub fn reload(&self) -> Result<ReloadCounts, ServiceError> {
        let mut inner = self.blocking();
        let (diff, skipped) = self.block_on(self.store.reload(&mut inner.table))?;
        log_skipped(&self.tenant, &skipped);
        self.states.recount(&inner.table);
        let now = now_ms();
        let Inner {
            table,
            scheduler,
            dirty,
            in_flight,
        } = &mut *inner;
        for &id in diff.added.iter().chain(&diff.changed) {
            scheduler.unschedule(id);
            in_flight.done(id);
            if let Some((account, state)) = table.get(id)
                && state.flags & flags::DISABLED == 0
            {
                scheduler.add_initial(id, now, account.reg_delay());
            }
        }
        for (id, _, _) in &diff.removed {
            scheduler.unschedule(*id);
            in_flight.done(*id);
            dirty.remove(id);
        }
        drop(inner);
        self.wake.notify_one();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(ReloadCounts {
            added: count(diff.added.len()),
            changed: count(diff.changed.len()),
            removed: count(diff.removed.len()),
            unchanged: count(diff.unchanged),
        })
    }

    /// `uac.reg_active`; returns the previous mode.
    pub fn set_active(&self, active: bool) -> bool {
        let previous = self.blocking().scheduler.set_active(active);
        self.wake.notify_one();
        previous
    }

    pub fn counters(&self) -> Counters {
        self.blocking().table.counters()
    }

    /// Records per admin state: online, ongoing, offline, disabled. Lock-free.
    pub fn state_counts(&self) -> [u64; 4] {
        self.states.get()
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Up to `limit` records matching `query` (l_uuid or `r_username@r_domain`,
    /// case-insensitive), for the status page. Never waits: while the table is
    /// busy it answers `None`.
    pub fn search(&self, query: &str, limit: usize) -> Option<Vec<(Account, LiveState)>> {
        let inner = self.inner.try_lock().ok()?;
        let query = query.to_lowercase();
        Some(
            inner
                .table
                .iter()
                .filter(|(_, a, _)| {
                    query.is_empty()
                        || a.l_uuid().to_lowercase().contains(&query)
                        || format!("{}@{}", a.r_username(), a.r_domain())
                            .to_lowercase()
                            .contains(&query)
                })
                .take(limit)
                .map(|(_, a, s)| (a.clone(), s.clone()))
                .collect(),
        )
    }

    /// Writes the dirty live state; on failure it stays dirty for the next try.
    pub async fn flush(&self) {
        let mut inner = self.inner.lock().await;
        if inner.dirty.is_empty() {
            return;
        }
        let ids: Vec<RecordId> = inner.dirty.drain().collect();
        match self.store.save_states(&inner.table, &ids).await {
            // Every change logged since the last flush dirtied its record, and the
            // lock was held throughout: the database now holds all the log has.
            Ok(()) => self.store.clear_state_log(),
            Err(e) => {
                tracing::warn!(
                    tenant = &*self.tenant,
                    "cannot persist registration state: {e}"
                );
                inner.dirty.extend(ids);
            }
        }
    }

    /// The driver: hands due records to the tenant's registration filter on
    /// its first worker, paced by the scheduler, and flushes state. Ends when
    /// the tenant is gone.
    pub async fn drive(self: Arc<Self>, tenant: Weak<Tenant>) {
        let mut last_flush = tokio::time::Instant::now();
        let mut warned = false;
        loop {
            self.driver_wakes_at.store(0, Ordering::SeqCst);
            let Some(live) = tenant.upgrade() else { break };
            let filter = live.registration_filter();
            let now = now_ms();
            let mut due: Vec<Due> = Vec::new();
            let (wakeup, dirty, saturated) = {
                let mut inner = self.inner.lock().await;
                let mut saturated = false;
                if filter.is_some() {
                    let gc_ms = u64::from(inner.scheduler.config().gc_interval) * 1000;
                    let room = inner.in_flight.room(now, gc_ms);
                    saturated = room == 0;
                    if saturated {
                        // Under the lock: an outcome after this sees it and wakes us.
                        self.driver_wakes_at
                            .store(WAITING_FOR_ROOM, Ordering::SeqCst);
                    }
                    while due.len() < MAX_BATCH.min(room) {
                        match inner.scheduler.pop_due(now) {
                            Some(d) => {
                                inner.in_flight.handed(&d, now);
                                due.push(d);
                            }
                            None => break,
                        }
                    }
                }
                let slack = DUE_SLACK.as_millis() as u64;
                let wakeup = inner.scheduler.next_wakeup_with_slack(now, slack);
                (wakeup, !inner.dirty.is_empty(), saturated)
            };
            let full = due.len() == MAX_BATCH;
            match filter {
                Some(filter) if !due.is_empty() => live.registrations_due(filter, due),
                Some(_) => {}
                None if !warned => {
                    warned = true;
                    tracing::warn!(
                        tenant = &*self.tenant,
                        "[tenant.registrations] is set but no filter exports registration-handler; \
                         registrations stay idle"
                    );
                }
                None => {}
            }
            drop(live);
            if last_flush.elapsed() >= FLUSH_INTERVAL {
                self.flush().await;
                last_flush = tokio::time::Instant::now();
            }
            if full {
                tokio::task::yield_now().await;
                continue;
            }
            // Idle (nothing due, nothing to write): sleep until a call wakes us. With every
            // place in flight taken, the outcomes coming back wake it (or, for records the
            // filter lost, a look once a second).
            let due_in = match (filter, wakeup) {
                (Some(_), Some(_)) if saturated => Some(FLUSH_INTERVAL),
                (Some(_), Some(at)) => Some(Duration::from_millis(at.saturating_sub(now_ms()))),
                (None, Some(_)) => Some(FLUSH_INTERVAL),
                (_, None) => None,
            };
            let sleep = match (due_in, dirty) {
                (Some(d), true) => Some(d.min(FLUSH_INTERVAL)),
                (Some(d), false) => Some(d),
                (None, true) => Some(FLUSH_INTERVAL),
                (None, false) => None,
            };
            let wakes_at = match sleep {
                _ if saturated => WAITING_FOR_ROOM,
                Some(sleep) => now_ms() + sleep.as_millis() as u64,
                None => u64::MAX,
            };
            self.driver_wakes_at.store(wakes_at, Ordering::SeqCst);
            match sleep {
                Some(sleep) => {
                    tokio::select! {
                        _ = tokio::time::sleep(sleep) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
        self.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(id: RecordId, reason: DueReason) -> Due {
        Due { id, reason }
    }

    #[test]
    fn records_out_with_the_filter_are_capped_until_their_outcome_comes_back() {
        let gc_ms = 150_000;
        let mut in_flight = InFlight::new(3);
        assert_eq!(in_flight.room(0, gc_ms), 3);
        for id in 0..3 {
            in_flight.handed(&due(id, DueReason::Initial), 0);
        }
        assert_eq!(in_flight.room(10, gc_ms), 0, "full: nothing more goes out");
        in_flight.done(1);
        assert_eq!(in_flight.room(20, gc_ms), 1, "an outcome frees its place");
        // Handing out the same record again (a refresh after a 423) holds one place.
        in_flight.handed(&due(0, DueReason::Requested), 30);
        assert_eq!(in_flight.room(30, gc_ms), 1);
        // A stalled record is no longer awaited.
        in_flight.handed(&due(2, DueReason::Stalled), 40);
        assert_eq!(in_flight.room(40, gc_ms), 2);
    }

    #[test]
    fn a_driver_waiting_for_places_is_woken_once_a_batch_of_them_is_free() {
        let mut in_flight = InFlight::new(MAX_BATCH * 2);
        for id in 0..MAX_BATCH as RecordId * 2 {
            in_flight.handed(&due(id, DueReason::Initial), 0);
        }
        let mut woken = Vec::new();
        for id in 0..MAX_BATCH as RecordId {
            in_flight.done(id);
            // An outcome's own refresh is far off; only the freed places matter.
            woken.push(driver_needed(
                WAITING_FOR_ROOM,
                Some(60_000),
                0,
                in_flight.refilled(),
            ));
        }
        assert_eq!(woken.iter().filter(|w| **w).count(), 1);
        assert!(
            woken[MAX_BATCH - 1],
            "woken by the outcome that frees a batch"
        );
        // Below a batch in all, the last outcome wakes it.
        let mut small = InFlight::new(2);
        small.handed(&due(1, DueReason::Initial), 0);
        small.handed(&due(2, DueReason::Initial), 0);
        small.done(1);
        assert!(!small.refilled());
        small.done(2);
        assert!(small.refilled());
    }

    #[test]
    fn a_sleeping_driver_is_woken_only_when_needed_sooner() {
        let now = 1_000_000;
        // Asleep until now + 10 s: a record due in 2 s wakes it, one due in 30 s does not,
        // but its state must be written within a second.
        assert!(driver_needed(now + 10_000, Some(now + 2_000), now, false));
        assert!(driver_needed(now + 10_000, Some(now + 30_000), now, false));
        // Awake, or waking within the second anyway: no wake-up.
        assert!(!driver_needed(0, Some(now), now, true));
        assert!(!driver_needed(now + 500, Some(now + 30_000), now, false));
    }

    #[test]
    fn records_the_filter_lost_free_their_place_after_reg_gc_interval() {
        let gc_ms = 150_000;
        let mut in_flight = InFlight::new(2);
        in_flight.handed(&due(7, DueReason::Initial), 1_000);
        in_flight.handed(&due(8, DueReason::Refresh), 100_000);
        assert_eq!(in_flight.room(150_999, gc_ms), 0);
        assert_eq!(
            in_flight.room(151_000, gc_ms),
            1,
            "7 given up, 8 still awaited"
        );
    }
}
