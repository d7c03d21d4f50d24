//! Host-side state of a tenant that outlives any filter version and ABI: dialog
//! and transaction variables, metrics, counters, timers and originated requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use siphost_sip::Message;

use super::config::ListenTransport;
use super::{RequestSender, SendFailure};
use crate::proxy::Origination;
use crate::transport::TransportKind;

/// Pending timers one tenant may hold.
pub const MAX_TIMERS: usize = 10_000;
/// Originated requests one tenant may have in flight.
pub const MAX_PENDING_REQUESTS: usize = 1_000;

/// Dialog variables expire this long after their last write.
pub const DIALOG_VAR_TTL: Duration = Duration::from_secs(12 * 3600);
/// Transaction variables expire this long after their last write.
pub const TRANSACTION_VAR_TTL: Duration = Duration::from_secs(300);
/// Variables one tenant may hold (dialog and transaction scope each).
pub const MAX_VARIABLES: usize = 100_000;
/// Longest variable value accepted.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Metric names one tenant may define.
pub const MAX_METRICS: usize = 256;

/// The peer a filter's request got its final reply from (`message.source` in
/// `on-local-reply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyOrigin {
    pub transport: TransportKind,
    pub peer: SocketAddr,
}

/// Host services shared by every tenant.
pub struct Services {
    pub(crate) tokio: Option<tokio::runtime::Handle>,
    pub(crate) sender: RwLock<Option<Arc<dyn RequestSender>>>,
    /// Work done off every message path (spare instances), one job at a time
    /// on one long-lived thread: no thread is made or unmapped per job.
    pub(crate) background: std::sync::mpsc::Sender<BackgroundJob>,
}

/// A job for the background thread.
pub type BackgroundJob = Box<dyn FnOnce() + Send>;

impl Services {
    /// Services with their background thread; it ends when they are dropped.
    pub fn start(tokio: Option<tokio::runtime::Handle>) -> std::io::Result<Self> {
        let (background, jobs) = std::sync::mpsc::channel::<BackgroundJob>();
        std::thread::Builder::new()
            .name("siphost-spares".into())
            .spawn(move || {
                // Making spares is filter work: a tenant that traps on every
                // message must not take CPU from the proxy's message path.
                super::lane::lower_priority();
                while let Ok(job) = jobs.recv() {
                    job();
                }
            })?;
        Ok(Self {
            tokio,
            sender: RwLock::new(None),
            background,
        })
    }
}

/// Where timers and replies to originated requests go back to: the tenant,
/// which hands them to the worker that owns the instance.
pub trait FilterEvents: Send + Sync {
    fn timer_fired(&self, lane: usize, filter: usize, token: u64);
    /// The final reply to a request filter `filter` sent; `origin` is the peer that sent
    /// it, `None` for the host's own 408/503.
    fn local_reply(
        self: Arc<Self>,
        lane: usize,
        filter: usize,
        request_id: u64,
        reply: Message,
        origin: Option<ReplyOrigin>,
    );
}

/// State of a tenant that every version and instance of its filters shares.
pub struct TenantShared {
    pub name: Arc<str>,
    pub dialog_vars: VariableStore,
    pub transaction_vars: VariableStore,
    pub metrics: Metrics,
    pub counters: TenantCounters,
    pub(crate) services: Arc<Services>,
    timers: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
    next_id: AtomicU64,
    pending_requests: AtomicUsize,
    events: OnceLock<Weak<dyn FilterEvents>>,
    /// The tenant's remote registrations (`[tenant.registrations]`), once loaded.
    pub registrations: OnceLock<Arc<crate::registrations::Registrations>>,
    /// This tenant's index and which tenant owns each listen entry (the runtime's map,
    /// shared): requests may not leave from another tenant's listener.
    pub(crate) socket_owners: OnceLock<(usize, SocketOwners)>,
}

/// The tenant index owning each listen entry.
pub(crate) type SocketOwners = Arc<HashMap<(ListenTransport, SocketAddr), usize>>;

impl TenantShared {
    pub fn new(name: &str, services: Arc<Services>) -> Self {
        Self {
            name: Arc::from(name),
            dialog_vars: VariableStore::new(DIALOG_VAR_TTL),
            transaction_vars: VariableStore::new(TRANSACTION_VAR_TTL),
            metrics: Metrics::default(),
            counters: TenantCounters::default(),
            services,
            timers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            pending_requests: AtomicUsize::new(0),
            events: OnceLock::new(),
            registrations: OnceLock::new(),
            socket_owners: OnceLock::new(),
        }
    }

    /// Whether `socket` is another tenant's listener.
    pub(crate) fn is_foreign(&self, socket: (ListenTransport, SocketAddr)) -> bool {
        self.socket_owners
            .get()
            .and_then(|(me, owners)| owners.get(&socket).map(|owner| owner != me))
            .unwrap_or(false)
    }

    /// Set once, when the tenant that owns this state exists.
    pub fn set_events(&self, events: Weak<dyn FilterEvents>) {
        let _ = self.events.set(events);
    }

    fn events(&self) -> Option<Weak<dyn FilterEvents>> {
        self.events.get().cloned()
    }

    pub fn pending_timers(&self) -> usize {
        lock(&self.timers).len()
    }

    pub fn set_timer(
        self: &Arc<Self>,
        lane: usize,
        filter: usize,
        after_ms: u64,
        token: u64,
    ) -> Result<u64, String> {
        let Some(handle) = self.services.tokio.clone() else {
            return Err("timers need the host's async runtime".into());
        };
        let Some(events) = self.events() else {
            return Err("the tenant is not running".into());
        };
        let shared = Arc::downgrade(self);
        let mut timers = lock(&self.timers);
        if timers.len() >= MAX_TIMERS {
            return Err(format!("{MAX_TIMERS} timers pending already"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Spawned under the lock so the task cannot look the id up before it
        // is recorded.
        let task = handle.spawn(async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if lock(&shared.timers).remove(&id).is_none() {
                return;
            }
            if let Some(events) = events.upgrade() {
                events.timer_fired(lane, filter, token);
            }
        });
        timers.insert(id, task.abort_handle());
        Ok(id)
    }

    /// Hands `token` to the timer callback of filter `filter` on worker `lane`
    /// at once, without the async runtime (proxy-wasm's `on_queue_ready`).
    pub fn wake(&self, lane: usize, filter: usize, token: u64) {
        if let Some(events) = self.events().and_then(|e| e.upgrade()) {
            events.timer_fired(lane, filter, token);
        }
    }

    pub fn cancel_timer(&self, id: u64) -> bool {
        match lock(&self.timers).remove(&id) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    /// Takes an id for a request a filter built, routed and limited in time as `how` says,
    /// and makes the send: its final reply (or a local 408 on time-out, 503 when it could
    /// not be sent) goes back to the instance on `lane`. A filter call sends its requests
    /// together when it ends, which wakes the proxy core once for them all, not once each.
    pub fn prepare_request(
        self: &Arc<Self>,
        lane: usize,
        filter: usize,
        message: Message,
        how: Origination,
    ) -> Result<(u64, PreparedSend), String> {
        let sender = self
            .services
            .sender
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(sender) = sender else {
            return Err("this host has no request sender".into());
        };
        let Some(events) = self.events() else {
            return Err("the tenant is not running".into());
        };
        if message.method().is_some_and(|m| m.as_str() == "REGISTER") {
            TenantCounters::bump(&self.counters.registers_sent);
        }
        let reserved = self.pending_requests.fetch_add(1, Ordering::AcqRel);
        if reserved >= MAX_PENDING_REQUESTS {
            self.pending_requests.fetch_sub(1, Ordering::AcqRel);
            return Err(format!("{MAX_PENDING_REQUESTS} requests in flight already"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = self.clone();
        let original = message.clone();
        let done: super::SendDone = Box::new(move |outcome| {
            shared.pending_requests.fetch_sub(1, Ordering::AcqRel);
            let (reply, origin) = match outcome {
                Ok(answered) => (
                    answered.response,
                    Some(ReplyOrigin {
                        transport: answered.transport,
                        peer: answered.peer,
                    }),
                ),
                Err(SendFailure::Timeout) => {
                    (original.response(408, "Request Timeout", None), None)
                }
                Err(SendFailure::Transport(why)) => {
                    tracing::debug!(tenant = &*shared.name, "filter request failed: {why}");
                    (original.response(503, "Service Unavailable", None), None)
                }
                Err(SendFailure::Refused(why)) => {
                    tracing::warn!(tenant = &*shared.name, "filter request not sent: {why}");
                    (original.response(503, "Service Unavailable", None), None)
                }
            };
            if let Some(events) = events.upgrade() {
                events.local_reply(lane, filter, id, reply, origin);
            }
        });
        Ok((
            id,
            PreparedSend {
                sender,
                message,
                how,
                done,
            },
        ))
    }
}

/// A request a filter sent, ready for the proxy core; its id is taken and its reply awaited.
pub struct PreparedSend {
    sender: Arc<dyn RequestSender>,
    message: Message,
    how: Origination,
    done: super::SendDone,
}

impl PreparedSend {
    /// Hands the request to the proxy core.
    pub fn go(self) {
        self.sender.send_request(self.message, self.how, self.done);
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: the
/// guarded maps stay consistent under every operation used here.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Variables of one scope (dialog or transaction), keyed by (scope key, name).
pub struct VariableStore {
    ttl: Duration,
    entries: Mutex<VariableMap>,
}

#[derive(Default)]
struct VariableMap {
    values: HashMap<String, HashMap<String, (String, Instant)>>,
    count: usize,
    writes_since_sweep: usize,
    /// When a full store was last swept: a sweep walks every variable, so a store that
    /// stays full is swept at most once per [`FULL_SWEEP_INTERVAL`], and a write that
    /// finds no room fails at once instead of walking the store each time.
    full_sweep: Option<Instant>,
}

/// How often a full variable store looks for expired variables to make room.
const FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl VariableMap {
    fn sweep(&mut self, now: Instant, ttl: Duration) {
        let mut removed = 0;
        self.values.retain(|_, vars| {
            let before = vars.len();
            vars.retain(|_, (_, written)| now.duration_since(*written) < ttl);
            removed += before - vars.len();
            !vars.is_empty()
        });
        self.count -= removed;
        self.writes_since_sweep = 0;
    }
}

impl VariableStore {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(VariableMap::default()),
        }
    }

    pub fn get(&self, scope: &str, name: &str) -> Option<String> {
        let map = lock(&self.entries);
        let (value, written) = map.values.get(scope)?.get(name)?;
        (written.elapsed() < self.ttl).then(|| value.clone())
    }

    /// Whether `scope` holds any variable (expired ones count until swept:
    /// the answer may only err towards delivering a message).
    pub fn holds(&self, scope: &str) -> bool {
        lock(&self.entries).values.contains_key(scope)
    }

    /// Writes or (with `None`) deletes a variable.
    pub fn set(&self, scope: &str, name: &str, value: Option<String>) -> Result<(), String> {
        self.set_at(scope, name, value, Instant::now())
    }

    fn set_at(
        &self,
        scope: &str,
        name: &str,
        value: Option<String>,
        now: Instant,
    ) -> Result<(), String> {
        let mut map = lock(&self.entries);
        let Some(value) = value else {
            if let Some(vars) = map.values.get_mut(scope) {
                let removed = vars.remove(name).is_some();
                let empty = vars.is_empty();
                if empty {
                    map.values.remove(scope);
                }
                if removed {
                    map.count -= 1;
                }
            }
            return Ok(());
        };
        if value.len() > MAX_VALUE_LEN {
            return Err(format!("value longer than {MAX_VALUE_LEN} bytes"));
        }
        map.writes_since_sweep += 1;
        if map.count >= MAX_VARIABLES {
            let due = map
                .full_sweep
                .is_none_or(|at| now.duration_since(at) >= FULL_SWEEP_INTERVAL);
            if due {
                map.full_sweep = Some(now);
                map.sweep(now, self.ttl);
            }
        } else if map.writes_since_sweep >= 4096 {
            map.sweep(now, self.ttl);
        }
        let exists = map
            .values
            .get(scope)
            .is_some_and(|vars| vars.contains_key(name));
        if !exists && map.count >= MAX_VARIABLES {
            return Err(format!("tenant holds {MAX_VARIABLES} variables already"));
        }
        map.values
            .entry(scope.to_string())
            .or_default()
            .insert(name.to_string(), (value, now));
        if !exists {
            map.count += 1;
        }
        Ok(())
    }

    pub fn clear(&self, scope: &str) {
        let mut map = lock(&self.entries);
        if let Some(vars) = map.values.remove(scope) {
            map.count -= vars.len();
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A filter-defined metric.
#[derive(Debug, Clone, Copy)]
pub enum MetricValue {
    Counter(u64),
    Gauge(i64),
}

/// Counters of the runtime's own work for one tenant.
#[derive(Default)]
pub struct TenantCounters {
    pub calls: AtomicU64,
    pub timeouts: AtomicU64,
    pub out_of_memory: AtomicU64,
    pub traps: AtomicU64,
    pub instantiate_errors: AtomicU64,
    pub instantiations: AtomicU64,
    /// Instances a worker had to make itself because no spare was ready.
    pub inline_instantiations: AtomicU64,
    pub swaps: AtomicU64,
    pub failed_swaps: AtomicU64,
    /// Requests refused because the tenant's queue was full.
    pub overloaded: AtomicU64,
    /// REGISTERs the tenant's filters sent (remote registration; challenges
    /// answered count again).
    pub registers_sent: AtomicU64,
    /// Registration attempts that ended in failure (a final error, a refused
    /// answer to a challenge, a time-out), as the filter reported them.
    pub registration_failures: AtomicU64,
}

impl TenantCounters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn to_json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "calls": get(&self.calls),
            "timeouts": get(&self.timeouts),
            "out_of_memory": get(&self.out_of_memory),
            "traps": get(&self.traps),
            "instantiate_errors": get(&self.instantiate_errors),
            "instantiations": get(&self.instantiations),
            "inline_instantiations": get(&self.inline_instantiations),
            "swaps": get(&self.swaps),
            "failed_swaps": get(&self.failed_swaps),
            "overloaded": get(&self.overloaded),
            "registers_sent": get(&self.registers_sent),
            "registration_failures": get(&self.registration_failures),
        })
    }
}

/// Filter metrics of one tenant.
#[derive(Default)]
pub struct Metrics {
    values: Mutex<HashMap<String, MetricValue>>,
}

impl Metrics {
    pub fn counter_add(&self, name: &str, value: u64) -> Result<(), String> {
        self.update(name, MetricValue::Counter(0), |m| {
            if let MetricValue::Counter(c) = m {
                *c = c.saturating_add(value);
            } else {
                *m = MetricValue::Counter(value);
            }
        })
    }

    pub fn gauge_set(&self, name: &str, value: i64) -> Result<(), String> {
        self.update(name, MetricValue::Gauge(value), |m| {
            *m = MetricValue::Gauge(value)
        })
    }

    fn update(
        &self,
        name: &str,
        initial: MetricValue,
        apply: impl FnOnce(&mut MetricValue),
    ) -> Result<(), String> {
        let mut values = lock(&self.values);
        if let Some(metric) = values.get_mut(name) {
            apply(metric);
            return Ok(());
        }
        if values.len() >= MAX_METRICS || name.is_empty() || name.len() > 128 {
            return Err(format!(
                "metric {name:?} refused (empty, too long or more than {MAX_METRICS})"
            ));
        }
        let mut metric = initial;
        apply(&mut metric);
        values.insert(name.to_string(), metric);
        Ok(())
    }

    /// Every metric the tenant's filters defined, by name (for `/metrics`).
    pub fn snapshot(&self) -> Vec<(String, MetricValue)> {
        let mut all: Vec<(String, MetricValue)> = lock(&self.values)
            .iter()
            .map(|(name, value)| (name.clone(), *value))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn to_json(&self) -> Value {
        let values = lock(&self.values);
        let mut out = serde_json::Map::new();
        for (name, value) in values.iter() {
            let v = match value {
                MetricValue::Counter(c) => json!(c),
                MetricValue::Gauge(g) => json!(g),
            };
            out.insert(name.clone(), v);
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_store_fails_writes_and_looks_for_room_at_most_once_a_second() {
        let ttl = Duration::from_secs(10);
        let store = VariableStore::new(ttl);
        let t0 = Instant::now();
        for i in 0..MAX_VARIABLES {
            store
                .set_at(&format!("t{i}"), "v", Some(String::new()), t0)
                .expect("room");
        }
        let write = |at: Duration| store.set_at("new", "v", Some("x".into()), t0 + at);
        // Nothing has expired yet: no room, and the sweep that found none is remembered.
        assert!(write(Duration::from_millis(9_900)).is_err());
        // Everything expired at 10 s, but the last sweep was 0.3 s ago: the write fails
        // without walking the store again.
        assert!(write(Duration::from_millis(10_200)).is_err());
        assert_eq!(store.len(), MAX_VARIABLES);
        // A second after that sweep the store is swept and the write finds room.
        assert!(write(Duration::from_millis(10_900)).is_ok());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn variables_set_get_delete_clear_and_expire() {
        let store = VariableStore::new(Duration::from_secs(60));
        store.set("d1", "a", Some("1".into())).expect("set");
        store.set("d1", "b", Some("2".into())).expect("set");
        store.set("d2", "a", Some("3".into())).expect("set");
        assert_eq!(store.get("d1", "a").as_deref(), Some("1"));
        assert_eq!(store.get("d2", "a").as_deref(), Some("3"));
        assert_eq!(store.len(), 3);
        store.set("d1", "a", None).expect("delete");
        assert_eq!(store.get("d1", "a"), None);
        store.clear("d1");
        assert_eq!(store.len(), 1);
        let expired = VariableStore::new(Duration::ZERO);
        expired.set("d", "a", Some("x".into())).expect("set");
        assert_eq!(expired.get("d", "a"), None);
        assert!(
            store
                .set("d", "big", Some("x".repeat(MAX_VALUE_LEN + 1)))
                .is_err()
        );
    }

    #[test]
    fn metrics_are_bounded_and_typed() {
        let metrics = Metrics::default();
        metrics.counter_add("hits", 2).expect("counter");
        metrics.counter_add("hits", 3).expect("counter");
        metrics.gauge_set("depth", -4).expect("gauge");
        assert_eq!(metrics.to_json(), json!({"hits": 5, "depth": -4}));
        for i in 0..MAX_METRICS - 2 {
            metrics
                .counter_add(&format!("m{i}"), 1)
                .expect("within bound");
        }
        assert!(metrics.counter_add("one-too-many", 1).is_err());
    }
}
