//! A tenant's sandboxes: its filter chain (each filter an atomically
//! swappable version with one live instance), limits, failure policy, and the
//! host services (timers, originated requests) its filters use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde_json::{Value, json};
use siphost_sip::{Message, Method};
use wasmtime::Store;
use wasmtime::component::Resource;

use super::bindings::v0_1::siphost::filter::transport::OutgoingRequest;
use super::bindings::v0_1::siphost::filter::types;
use super::bindings::v0_1::{Filter, FilterPre};
use super::config::{FailurePolicy, FilterConfig, TenantConfig};
use super::engine::{EPOCH_TICK, FilterEngine, LoadSource};
use super::host::{HostState, PRIMARY, SECONDARY};
use super::state::{
    DIALOG_VAR_TTL, Metrics, TRANSACTION_VAR_TTL, TenantCounters, VariableStore, lock,
};
use super::{FilterError, RequestSender, SendFailure};

/// Pending timers one tenant may hold.
pub const MAX_TIMERS: usize = 10_000;
/// Originated requests one tenant may have in flight.
pub const MAX_PENDING_REQUESTS: usize = 1_000;
/// CPU budget of instantiation plus `configure` (not on the message path
/// except after a failure).
const SETUP_CPU_LIMIT: Duration = Duration::from_secs(1);

/// Host services shared by every tenant.
pub struct Services {
    pub(crate) engine: Arc<FilterEngine>,
    pub(crate) tokio: Option<tokio::runtime::Handle>,
    pub(crate) sender: std::sync::RwLock<Option<Arc<dyn RequestSender>>>,
}

/// State of a tenant that every version of its filters shares.
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
    tenant: OnceLock<Weak<Tenant>>,
}

/// One live instance of a filter version.
pub struct Live {
    store: Store<HostState>,
    bindings: Filter,
}

/// One loaded version of a filter: its pre-instance and its live instance.
/// Calls in flight keep the version they started with across a swap.
pub struct FilterVersion {
    pub path: PathBuf,
    pub sha256: String,
    pre: FilterPre<HostState>,
    instance: Mutex<Option<Live>>,
}

/// One position in a tenant's filter chain.
pub struct FilterSlot {
    pub index: usize,
    pub label: Arc<str>,
    pub config_json: Arc<str>,
    pub watch_ms: Option<u64>,
    pub current: ArcSwap<FilterVersion>,
    /// Serialises swaps of this slot (RPC and file watch).
    reload_lock: Mutex<()>,
}

/// A tenant: policy, limits, chain, shared state.
pub struct Tenant {
    pub shared: Arc<TenantShared>,
    pub policy: FailurePolicy,
    pub memory_bytes: usize,
    pub cpu_limit: Duration,
    pub filters: Vec<FilterSlot>,
}

/// Which handler export a chain run calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Request,
    Reply,
    Failure,
}

/// How a swap went, for the RPC answer and the logs.
#[derive(Debug, Clone)]
pub struct SwapReport {
    pub tenant: String,
    pub filter: usize,
    pub path: PathBuf,
    pub sha256: String,
    pub previous_sha256: String,
    pub from_cache: bool,
    pub elapsed: Duration,
}

impl SwapReport {
    pub fn to_json(&self) -> Value {
        json!({
            "tenant": self.tenant,
            "filter": self.filter,
            "path": self.path.display().to_string(),
            "sha256": self.sha256,
            "previous_sha256": self.previous_sha256,
            "from_cache": self.from_cache,
            "elapsed_ms": self.elapsed.as_secs_f64() * 1000.0,
        })
    }
}

fn ticks(limit: Duration) -> u64 {
    // One extra tick: the current tick is already partly over.
    (limit.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
}

/// Maps a wasmtime error of a guest call to the runtime's error.
pub fn classify(err: &wasmtime::Error, memory_refused: bool) -> FilterError {
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => FilterError::Timeout,
        Some(_) if memory_refused => FilterError::OutOfMemory,
        Some(trap) => FilterError::Trap(*trap),
        None if memory_refused => FilterError::OutOfMemory,
        None => FilterError::Guest(format!("{err:#}")),
    }
}

impl FilterVersion {
    /// Loads (cache or compile) and links a filter file.
    fn load(engine: &FilterEngine, path: &Path) -> Result<(Self, LoadSource), FilterError> {
        let (component, sha256, source) = engine.load(path)?;
        let instance_pre = engine
            .link(&component)
            .map_err(|e| FilterError::Instantiate(format!("{}: {e:#}", path.display())))?;
        let pre = FilterPre::new(instance_pre)
            .map_err(|e| FilterError::Instantiate(format!("{}: {e:#}", path.display())))?;
        let version = Self {
            path: path.to_path_buf(),
            sha256,
            pre,
            instance: Mutex::new(None),
        };
        Ok((version, source))
    }

    /// A fresh store and instance, configured.
    fn instantiate(&self, tenant: &Tenant, slot: &FilterSlot) -> Result<Live, FilterError> {
        TenantCounters::bump(&tenant.shared.counters.instantiations);
        let state = HostState::new(
            tenant.shared.clone(),
            slot.index,
            slot.label.clone(),
            slot.config_json.clone(),
            tenant.memory_bytes,
        )
        .map_err(|e| FilterError::Instantiate(e.to_string()))?;
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(ticks(SETUP_CPU_LIMIT.max(tenant.cpu_limit)));
        let bindings = self.pre.instantiate(&mut store).map_err(|e| {
            match classify(&e, store.data().limiter.refused) {
                FilterError::Guest(msg) => FilterError::Instantiate(msg),
                other => other,
            }
        })?;
        match bindings
            .siphost_filter_handler()
            .call_configure(&mut store, &slot.config_json)
        {
            Ok(Ok(())) => Ok(Live { store, bindings }),
            Ok(Err(msg)) => Err(FilterError::Configure(msg)),
            Err(e) => Err(classify(&e, store.data().limiter.refused)),
        }
    }

    /// Runs `f` on the live instance (instantiating it first if a failure
    /// dropped it) under the tenant's CPU and memory limits. A failed call
    /// drops the store; the next call re-instantiates from the pre-instance.
    pub fn with_instance<R>(
        &self,
        tenant: &Tenant,
        slot: &FilterSlot,
        f: impl FnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, FilterError> {
        let mut guard = lock(&self.instance);
        let live = match &mut *guard {
            Some(live) => live,
            empty => empty.insert(self.instantiate(tenant, slot).inspect_err(|_| {
                TenantCounters::bump(&tenant.shared.counters.instantiate_errors);
            })?),
        };
        live.store.set_epoch_deadline(ticks(tenant.cpu_limit));
        live.store.data_mut().limiter.refused = false;
        match f(live) {
            Ok(value) => Ok(value),
            Err(e) => {
                let error = classify(&e, live.store.data().limiter.refused);
                *guard = None;
                Err(error)
            }
        }
    }
}

impl TenantShared {
    pub fn set_timer(&self, filter: usize, after_ms: u64, token: u64) -> Result<u64, String> {
        let Some(handle) = self.services.tokio.clone() else {
            return Err("timers need the host's async runtime".into());
        };
        let weak = self.tenant.get().cloned().unwrap_or_default();
        let mut timers = lock(&self.timers);
        if timers.len() >= MAX_TIMERS {
            return Err(format!("{MAX_TIMERS} timers pending already"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Spawned under the lock so the task cannot look the id up before it
        // is recorded.
        let task = handle.spawn(async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            let Some(tenant) = weak.upgrade() else { return };
            if lock(&tenant.shared.timers).remove(&id).is_none() {
                return;
            }
            let _ = tokio::task::spawn_blocking(move || tenant.fire_timer(filter, token)).await;
        });
        timers.insert(id, task.abort_handle());
        Ok(id)
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

    pub fn send_request(&self, filter: usize, request: OutgoingRequest) -> Result<u64, String> {
        let Some(handle) = self.services.tokio.clone() else {
            return Err("sending requests needs the host's async runtime".into());
        };
        let Some(sender) = lock_read(&self.services.sender) else {
            return Err("this host has no request sender".into());
        };
        let next_hop = request.next_hop.clone();
        let message = build_request(&request)?;
        let reserved = self.pending_requests.fetch_add(1, Ordering::AcqRel);
        if reserved >= MAX_PENDING_REQUESTS {
            self.pending_requests.fetch_sub(1, Ordering::AcqRel);
            return Err(format!("{MAX_PENDING_REQUESTS} requests in flight already"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let weak = self.tenant.get().cloned().unwrap_or_default();
        let original = message.clone();
        handle.spawn(async move {
            let outcome = sender.send_request(message, next_hop).await;
            let Some(tenant) = weak.upgrade() else { return };
            tenant
                .shared
                .pending_requests
                .fetch_sub(1, Ordering::AcqRel);
            let mut reply = match outcome {
                Ok(reply) => reply,
                Err(SendFailure::Timeout) => original.response(408, "Request Timeout", None),
                Err(SendFailure::Transport(why)) => {
                    tracing::debug!(
                        tenant = &*tenant.shared.name,
                        "filter request failed: {why}"
                    );
                    original.response(503, "Service Unavailable", None)
                }
            };
            let _ = tokio::task::spawn_blocking(move || {
                tenant.deliver_local_reply(filter, id, &mut reply)
            })
            .await;
        });
        Ok(id)
    }
}

fn lock_read<T: Clone>(lock: &std::sync::RwLock<Option<T>>) -> Option<T> {
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Builds the request a filter asked for. The proxy fills in Via,
/// Max-Forwards and Content-Length; names and values must not break framing.
fn build_request(request: &OutgoingRequest) -> Result<Message, String> {
    let token = |what: &str, s: &str| {
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c.is_control() || c == ':') {
            Err(format!("{what} {s:?} is empty or malformed"))
        } else {
            Ok(())
        }
    };
    token("method", &request.method)?;
    if request.request_uri.is_empty()
        || request
            .request_uri
            .contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "request-uri {:?} is empty or malformed",
            request.request_uri
        ));
    }
    let mut message = Message::request(Method::from(request.method.as_str()), &request.request_uri);
    for (name, value) in &request.headers {
        token("header name", name)?;
        if value.contains(['\r', '\n']) {
            return Err(format!("header {name:?} has a line break in its value"));
        }
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            continue;
        }
        message.append_header(name, value);
    }
    if !request.body.is_empty() {
        let content_type = message.header("Content-Type").map(str::to_string);
        message.set_body(Bytes::from(request.body.clone()), content_type.as_deref());
    }
    Ok(message)
}

impl Tenant {
    /// Builds a tenant: every filter loaded, instantiated and configured.
    pub fn new(config: &TenantConfig, services: Arc<Services>) -> Result<Arc<Self>, FilterError> {
        let shared = Arc::new(TenantShared {
            name: Arc::from(config.name.as_str()),
            dialog_vars: VariableStore::new(DIALOG_VAR_TTL),
            transaction_vars: VariableStore::new(TRANSACTION_VAR_TTL),
            metrics: Metrics::default(),
            counters: TenantCounters::default(),
            services: services.clone(),
            timers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            pending_requests: AtomicUsize::new(0),
            tenant: OnceLock::new(),
        });
        let mut filters = Vec::with_capacity(config.filter.len());
        for (index, filter) in config.filter.iter().enumerate() {
            filters.push(Self::prepare_slot(
                &services.engine,
                &config.name,
                index,
                filter,
            )?);
        }
        let tenant = Arc::new(Self {
            shared,
            policy: config.failure_policy,
            memory_bytes: (config.memory_limit_mib as usize).saturating_mul(1 << 20),
            cpu_limit: Duration::from_millis(u64::from(config.cpu_limit_ms)),
            filters,
        });
        let _ = tenant.shared.tenant.set(Arc::downgrade(&tenant));
        for slot in &tenant.filters {
            let version = slot.current.load();
            let live = version
                .instantiate(&tenant, slot)
                .map_err(|e| e.context(&format!("tenant {}: {}", config.name, slot.label)))?;
            *lock(&version.instance) = Some(live);
        }
        Ok(tenant)
    }

    fn prepare_slot(
        engine: &FilterEngine,
        tenant: &str,
        index: usize,
        filter: &FilterConfig,
    ) -> Result<FilterSlot, FilterError> {
        let config_json = filter
            .config_json()
            .map_err(|e| FilterError::Configure(format!("tenant {tenant} filter {index}: {e}")))?;
        let (version, _) = FilterVersion::load(engine, &filter.path)?;
        let name = filter
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(FilterSlot {
            index,
            label: Arc::from(format!("{index}:{name}")),
            config_json: Arc::from(config_json),
            watch_ms: filter.watch_ms,
            current: ArcSwap::from_pointee(version),
            reload_lock: Mutex::new(()),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Replaces a filter with a new version (from `path`, or its current
    /// path). The new version is compiled, instantiated and configured first;
    /// on any error the old version stays and the error is returned.
    pub fn swap(&self, index: usize, path: Option<&Path>) -> Result<SwapReport, FilterError> {
        let slot = self.filters.get(index).ok_or_else(|| {
            FilterError::BadRequest(format!("tenant {} has no filter {index}", self.name()))
        })?;
        let _serial = lock(&slot.reload_lock);
        let started = Instant::now();
        let path = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| slot.current.load().path.clone());
        let prepared = FilterVersion::load(&self.shared.services.engine, &path).and_then(
            |(version, source)| {
                let live = version.instantiate(self, slot)?;
                *lock(&version.instance) = Some(live);
                Ok((version, source))
            },
        );
        let (version, source) = prepared.inspect_err(|e| {
            TenantCounters::bump(&self.shared.counters.failed_swaps);
            tracing::warn!(
                tenant = self.name(),
                filter = &*slot.label,
                "filter swap refused, old version stays: {e}"
            );
        })?;
        let sha256 = version.sha256.clone();
        let previous = slot.current.swap(Arc::new(version));
        TenantCounters::bump(&self.shared.counters.swaps);
        let report = SwapReport {
            tenant: self.name().to_string(),
            filter: index,
            path,
            sha256,
            previous_sha256: previous.sha256.clone(),
            from_cache: source == LoadSource::Cache,
            elapsed: started.elapsed(),
        };
        tracing::info!(
            tenant = self.name(),
            filter = &*slot.label,
            path = %report.path.display(),
            elapsed_ms = report.elapsed.as_secs_f64() * 1000.0,
            "filter swapped"
        );
        Ok(report)
    }

    /// Drops every filter's live instance and makes a fresh one from its
    /// pre-instance (configured again): forgets the filters' in-memory state.
    pub fn restart(&self) -> Result<Duration, FilterError> {
        let started = Instant::now();
        for slot in &self.filters {
            let version = slot.current.load();
            let mut instance = lock(&version.instance);
            *instance = None;
            *instance = Some(version.instantiate(self, slot)?);
        }
        Ok(started.elapsed())
    }

    fn report_failure(&self, slot: &FilterSlot, hook: &str, error: &FilterError) {
        let counters = &self.shared.counters;
        match error {
            FilterError::Timeout => TenantCounters::bump(&counters.timeouts),
            FilterError::OutOfMemory => TenantCounters::bump(&counters.out_of_memory),
            FilterError::Trap(_) | FilterError::Guest(_) => TenantCounters::bump(&counters.traps),
            _ => TenantCounters::bump(&counters.instantiate_errors),
        }
        tracing::warn!(
            tenant = self.name(),
            filter = &*slot.label,
            hook,
            policy = ?self.policy,
            "filter failed: {error}"
        );
    }

    /// Runs the chain on one message and returns what the proxy must do.
    pub fn run_chain(
        &self,
        hook: Hook,
        ctx: &mut crate::proxy::hooks::HookContext,
        msg: &mut Message,
        failure_reply: Option<&Message>,
    ) -> crate::proxy::hooks::Decision {
        use crate::proxy::hooks::Decision;
        let is_ack = msg.method().is_some_and(|m| m.as_str() == "ACK");
        let wit_ctx = types::Context {
            tenant: self.shared.name.to_string(),
            in_dialog: msg.is_request() && msg.to_tag().is_some(),
            dialog_key: ctx.dialog_key.clone(),
            transaction_key: ctx.transaction_key.clone(),
            own_route: ctx.own_route.clone(),
        };
        let original_next_hop = ctx.next_hop.clone();
        let mut reply_copy = failure_reply.cloned();
        let hook_name = match hook {
            Hook::Request => "on-request",
            Hook::Reply => "on-reply",
            Hook::Failure => "on-failure",
        };
        for slot in &self.filters {
            TenantCounters::bump(&self.shared.counters.calls);
            let version = slot.current.load();
            let outcome = version.with_instance(self, slot, |live| {
                let call = &mut live.store.data_mut().call;
                call.lend(PRIMARY, msg);
                call.next_hop = ctx.next_hop.clone();
                call.record_route_params = ctx.record_route_params.clone();
                call.transport = ctx.transport;
                call.source = Some(ctx.source);
                call.local = Some(ctx.local);
                if let Some(reply) = reply_copy.as_mut() {
                    call.lend(SECONDARY, reply);
                }
                let handler = live.bindings.siphost_filter_handler();
                let primary = Resource::new_borrow(PRIMARY);
                let result = match hook {
                    Hook::Request => handler.call_on_request(&mut live.store, &wit_ctx, primary),
                    Hook::Reply => handler.call_on_reply(&mut live.store, &wit_ctx, primary),
                    Hook::Failure => handler.call_on_failure(
                        &mut live.store,
                        &wit_ctx,
                        primary,
                        Resource::new_borrow(SECONDARY),
                    ),
                };
                let call = &mut live.store.data_mut().call;
                call.give_back(PRIMARY, msg, result.is_err());
                if let Some(reply) = reply_copy.as_mut() {
                    call.give_back(SECONDARY, reply, true);
                }
                let next_hop = call.next_hop.take();
                let record_route_params = call.record_route_params.take();
                result.map(|action| (action, next_hop, record_route_params))
            });
            let action = match outcome {
                Ok((action, next_hop, record_route_params)) => {
                    ctx.next_hop = next_hop;
                    ctx.record_route_params = record_route_params;
                    action
                }
                Err(error) => {
                    self.report_failure(slot, hook_name, &error);
                    match (self.policy, hook) {
                        (FailurePolicy::FailOpen, _)
                        | (FailurePolicy::FailClosed, Hook::Failure) => continue,
                        (FailurePolicy::FailClosed, Hook::Request) if !is_ack => {
                            return Decision::Reply {
                                code: 500,
                                reason: "Filter Failure".into(),
                                headers: Vec::new(),
                            };
                        }
                        (FailurePolicy::FailClosed, _) => return Decision::Drop,
                    }
                }
            };
            match (action, hook) {
                (types::Action::Continue, _) => {}
                (types::Action::Forward(uri), Hook::Request | Hook::Failure) => {
                    ctx.next_hop = Some(uri)
                }
                (types::Action::Reply(reply), Hook::Request) => {
                    if is_ack {
                        return Decision::Drop;
                    }
                    return Decision::Reply {
                        code: reply.code,
                        reason: reply.reason,
                        headers: reply.headers,
                    };
                }
                (types::Action::Drop, Hook::Request | Hook::Reply) => return Decision::Drop,
                (types::Action::Resend(next_hop), Hook::Failure) => {
                    return Decision::Resend { next_hop };
                }
                (other, _) => {
                    tracing::warn!(tenant = self.name(), filter = &*slot.label, hook = hook_name, action = ?other, "action not valid here, ignored");
                }
            }
        }
        match &ctx.next_hop {
            Some(hop) if ctx.next_hop != original_next_hop => Decision::Forward {
                next_hop: hop.clone(),
            },
            _ => Decision::Continue,
        }
    }

    fn fire_timer(&self, filter: usize, token: u64) {
        let Some(slot) = self.filters.get(filter) else {
            return;
        };
        let version = slot.current.load();
        let result = version.with_instance(self, slot, |live| {
            live.bindings
                .siphost_filter_handler()
                .call_on_timer(&mut live.store, token)
        });
        if let Err(e) = result {
            self.report_failure(slot, "on-timer", &e);
        }
    }

    fn deliver_local_reply(&self, filter: usize, request_id: u64, reply: &mut Message) {
        let Some(slot) = self.filters.get(filter) else {
            return;
        };
        let version = slot.current.load();
        let result = version.with_instance(self, slot, |live| {
            let call = &mut live.store.data_mut().call;
            call.lend(PRIMARY, reply);
            call.next_hop = None;
            call.record_route_params = None;
            call.transport = "";
            call.source = None;
            call.local = None;
            let result = live.bindings.siphost_filter_handler().call_on_local_reply(
                &mut live.store,
                request_id,
                Resource::new_borrow(PRIMARY),
            );
            live.store.data_mut().call.give_back(PRIMARY, reply, true);
            result
        });
        if let Err(e) = result {
            self.report_failure(slot, "on-local-reply", &e);
        }
    }

    /// Calls a filter's `rpc` export.
    pub fn filter_rpc(
        &self,
        index: usize,
        method: &str,
        params: &str,
    ) -> Result<String, FilterError> {
        let slot = self.filters.get(index).ok_or_else(|| {
            FilterError::BadRequest(format!("tenant {} has no filter {index}", self.name()))
        })?;
        let version = slot.current.load();
        version
            .with_instance(self, slot, |live| {
                live.bindings
                    .siphost_filter_handler()
                    .call_rpc(&mut live.store, method, params)
            })
            .inspect_err(|e| self.report_failure(slot, "rpc", e))?
            .map_err(FilterError::Rpc)
    }

    pub fn status_json(&self) -> Value {
        let filters: Vec<Value> = self
            .filters
            .iter()
            .map(|slot| {
                let version = slot.current.load();
                json!({
                    "index": slot.index,
                    "path": version.path.display().to_string(),
                    "sha256": version.sha256,
                    "instantiated": lock(&version.instance).is_some(),
                    "watch_ms": slot.watch_ms,
                })
            })
            .collect();
        json!({
            "name": self.name(),
            "policy": match self.policy { FailurePolicy::FailOpen => "fail-open", FailurePolicy::FailClosed => "fail-closed" },
            "memory_limit_bytes": self.memory_bytes,
            "cpu_limit_ms": self.cpu_limit.as_millis() as u64,
            "filters": filters,
            "counters": self.shared.counters.to_json(),
            "metrics": self.shared.metrics.to_json(),
            "dialog_variables": self.shared.dialog_vars.len(),
            "transaction_variables": self.shared.transaction_vars.len(),
            "pending_timers": lock(&self.shared.timers).len(),
        })
    }
}

/// Polls a filter file's modification time and swaps the filter when it
/// changed and then stayed the same for one more interval (written fully).
pub fn spawn_watcher(
    tenant: &Arc<Tenant>,
    index: usize,
    interval: Duration,
) -> std::io::Result<()> {
    let weak = Arc::downgrade(tenant);
    let label = format!("siphost-watch-{}-{index}", tenant.name());
    std::thread::Builder::new().name(label).spawn(move || {
        let modified = |tenant: &Tenant| {
            let path = tenant
                .filters
                .get(index)
                .map(|s| s.current.load().path.clone())?;
            std::fs::metadata(path).and_then(|m| m.modified()).ok()
        };
        let mut seen = weak.upgrade().and_then(|t| modified(&t));
        let mut pending = None;
        loop {
            std::thread::sleep(interval);
            let Some(tenant) = weak.upgrade() else { return };
            let now = modified(&tenant);
            if now == seen {
                pending = None;
                continue;
            }
            if pending.is_some() && pending == now {
                seen = now;
                pending = None;
                // Errors are logged and counted by `swap`; the old version stays.
                let _ = tenant.swap(index, None);
            } else {
                pending = now;
            }
        }
    })?;
    Ok(())
}
