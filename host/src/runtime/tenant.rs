//! A tenant: its filter chain (each filter an atomically swappable version),
//! limits, failure policy, and the workers that run its calls off the proxy loop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use siphost_sip::Message;

use super::FilterError;
use super::config::{FailurePolicy, FilterConfig, TenantConfig};
use super::cpu::{end_lent_call, start_lent_call, thread_cpu_time};
use super::inline::InlineGate;
use super::instance::{
    FilterFactory, FilterInstance, FilterLoader, Hook, InstanceSetup, Interest, LoadSource,
};
use super::lane::{Job, Lane, Worker, spawn_lane};
use super::state::{FilterEvents, ReplyOrigin, Services, TenantCounters, TenantShared, lock};
use crate::proxy::hooks::{HookCall, HookDone, HookResult, Submitted};
use crate::proxy::routing;

/// Due registrations per call when they run on the driver's thread: a few tens of µs
/// each, so a call stays well under a slow hook's time.
const INLINE_DUE_RECORDS: usize = 4;

/// The largest batch of due registrations that may run on the driver's thread.
const INLINE_DUE_BATCH: usize = 32;

/// A call of due registrations on the driver's thread that took more CPU than this sends
/// the next [`DUE_BACKOFF_BATCHES`] to the worker. Four times a slow hook: the records of
/// a call take about 0.2 ms, and this machine's thread clocks jump by 0.3–1.3 ms now and
/// then (at 0.5 ms, four such jumps in a minute kept most batches on the worker).
const SLOW_DUE_CALL: Duration = Duration::from_millis(2);

/// Batches of due registrations that go to the worker after one ran slowly on the
/// driver's thread (a few seconds of steady refreshing).
const DUE_BACKOFF_BATCHES: u64 = 64;

/// One loaded version of a filter. A restart makes a new generation of the
/// same code; workers replace instances of an older generation before a call.
pub struct FilterVersion {
    pub path: PathBuf,
    pub sha256: String,
    pub generation: u64,
    pub(crate) factory: Arc<dyn FilterFactory>,
    /// What its instances declared (`Interest` bits): everything until one is made.
    pub(crate) interest: AtomicU8,
}

impl FilterVersion {
    fn new(
        path: PathBuf,
        sha256: String,
        generation: u64,
        factory: Arc<dyn FilterFactory>,
    ) -> Self {
        Self {
            path,
            sha256,
            generation,
            factory,
            interest: AtomicU8::new(Interest::ALL.bits()),
        }
    }

    /// Records what an instance of this version declared.
    pub(crate) fn learn_interest(&self, instance: &dyn FilterInstance) {
        self.interest
            .store(instance.interest().bits(), Ordering::Relaxed);
    }

    fn interest(&self) -> Interest {
        Interest::from_bits(self.interest.load(Ordering::Relaxed))
    }
}

/// An instance made ahead of need for one worker.
pub(crate) struct Spare {
    pub generation: u64,
    pub instance: Box<dyn FilterInstance>,
}

/// A lane's instances lent to a call on the caller's thread (see
/// `Tenant::borrow_idle_lane`). Dropped without `finish` (the call panicked),
/// it gives the worker no instances, so it makes fresh ones, and closes the gate.
struct BorrowedLane<'a> {
    tenant: &'a Arc<Tenant>,
    worker: Worker,
    cpu_started: Duration,
    started: Instant,
    finished: bool,
}

impl BorrowedLane<'_> {
    /// The call is over: the instances go back, and a slow call closes the gate.
    fn finish(mut self) {
        self.give_back();
        let cpu_started = self.cpu_started;
        self.tenant.inline.ran_inline(self.started.elapsed(), || {
            thread_cpu_time().saturating_sub(cpu_started)
        });
    }

    /// [`finish`](Self::finish) for a call that is not a hook (due registrations): the
    /// instances go back and the CPU time it took is returned, not counted by the gate.
    fn finish_uncounted(mut self) -> Duration {
        self.give_back();
        thread_cpu_time().saturating_sub(self.cpu_started)
    }

    fn give_back(&mut self) {
        self.finished = true;
        let instances = std::mem::take(&mut self.worker.instances);
        self.tenant.lanes[self.worker.lane].put_back(instances);
    }
}

impl Drop for BorrowedLane<'_> {
    fn drop(&mut self) {
        // Finished or not, a reading no hook took is not left for a later call.
        end_lent_call();
        if !self.finished {
            let none = self.tenant.filters.iter().map(|_| None).collect();
            self.tenant.lanes[self.worker.lane].put_back(none);
            self.tenant.inline.close();
        }
    }
}

/// One position in a tenant's filter chain.
pub struct FilterSlot {
    pub index: usize,
    pub label: Arc<str>,
    pub config_json: Arc<str>,
    pub watch_ms: Option<u64>,
    pub current: ArcSwap<FilterVersion>,
    /// Serialises swaps and restarts of this slot (RPC and file watch).
    reload_lock: Mutex<()>,
    /// Per worker: a configured instance of the current version, so that a
    /// trap, a swap or a restart costs the message path no instantiation.
    spares: Vec<Mutex<Option<Spare>>>,
    /// Per worker: a spare is being made in the background.
    preparing: Vec<AtomicBool>,
}

/// A tenant: policy, limits, chain, shared state, workers.
pub struct Tenant {
    pub shared: Arc<TenantShared>,
    pub policy: FailurePolicy,
    pub memory_bytes: usize,
    pub cpu_limit: Duration,
    pub filters: Vec<FilterSlot>,
    loader: Arc<dyn FilterLoader>,
    lanes: Vec<Lane>,
    /// Whether hook calls may run on the caller's thread.
    pub(crate) inline: InlineGate,
    /// Due registrations handed to the filter on the driver's thread (not its worker).
    due_inline: AtomicU64,
    /// Batches of due registrations handed out, and the first one that may run on the
    /// driver's thread again after a slow one.
    due_batches: AtomicU64,
    due_inline_from: AtomicU64,
    /// Requests submitted and not finished yet.
    queued: AtomicUsize,
    queue_limit: usize,
    next_generation: AtomicU64,
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

impl Tenant {
    /// Builds a tenant: every filter loaded, one configured instance per
    /// worker plus a spare each, and the workers started.
    pub fn new(
        config: &TenantConfig,
        services: Arc<Services>,
        loader: Arc<dyn FilterLoader>,
    ) -> Result<Arc<Self>, FilterError> {
        let shared = Arc::new(TenantShared::new(&config.name, services));
        let workers = config.workers.max(1) as usize;
        let mut filters = Vec::with_capacity(config.filter.len());
        for (index, filter) in config.filter.iter().enumerate() {
            filters.push(Self::prepare_slot(
                &*loader,
                &config.name,
                index,
                filter,
                workers,
            )?);
        }
        let memory_bytes = (config.memory_limit_mib as usize).saturating_mul(1 << 20);
        let cpu_limit = Duration::from_millis(u64::from(config.cpu_limit_ms));
        let mut first = Vec::with_capacity(workers);
        for lane in 0..workers {
            let mut instances = Vec::with_capacity(filters.len());
            for slot in &filters {
                let setup = setup(&shared, slot, lane, memory_bytes, cpu_limit);
                let version = slot.current.load();
                let at =
                    |e: FilterError| e.context(&format!("tenant {}: {}", config.name, slot.label));
                let instance = version.factory.instantiate(&setup).map_err(at)?;
                version.learn_interest(&*instance);
                instances.push(Some((version.generation, instance)));
                *lock(&slot.spares[lane]) = Some(Spare {
                    generation: version.generation,
                    instance: version.factory.instantiate(&setup).map_err(at)?,
                });
            }
            first.push(instances);
        }
        let mut spawn_error = None;
        let tenant = Arc::new_cyclic(|weak: &Weak<Tenant>| {
            let lanes = first
                .into_iter()
                .enumerate()
                .filter_map(|(lane, instances)| {
                    spawn_lane(weak.clone(), &config.name, lane, instances)
                        .map_err(|e| spawn_error = Some(e))
                        .ok()
                })
                .collect();
            Self {
                shared: shared.clone(),
                policy: config.failure_policy,
                memory_bytes,
                cpu_limit,
                filters,
                loader,
                lanes,
                inline: InlineGate::new(config.inline_hooks),
                due_inline: AtomicU64::new(0),
                due_batches: AtomicU64::new(0),
                due_inline_from: AtomicU64::new(0),
                queued: AtomicUsize::new(0),
                queue_limit: config.queue_limit as usize,
                next_generation: AtomicU64::new(1),
            }
        });
        if let Some(e) = spawn_error {
            return Err(FilterError::Engine(format!("tenant worker thread: {e}")));
        }
        let events: Weak<dyn FilterEvents> = Arc::downgrade(&tenant) as Weak<dyn FilterEvents>;
        tenant.shared.set_events(events);
        Ok(tenant)
    }

    fn prepare_slot(
        loader: &dyn FilterLoader,
        tenant: &str,
        index: usize,
        filter: &FilterConfig,
        workers: usize,
    ) -> Result<FilterSlot, FilterError> {
        let config_json = filter
            .config_json()
            .map_err(|e| FilterError::Configure(format!("tenant {tenant} filter {index}: {e}")))?;
        let loaded = loader.load(&filter.path)?;
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
            current: ArcSwap::from_pointee(FilterVersion::new(
                filter.path.clone(),
                loaded.sha256,
                0,
                loaded.factory,
            )),
            reload_lock: Mutex::new(()),
            spares: (0..workers).map(|_| Mutex::new(None)).collect(),
            preparing: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Hands a hook call to the worker of its dialog (else its transaction),
    /// so one dialog's calls run in order. A full queue refuses new requests;
    /// replies and failures are always taken. When that worker is idle and
    /// the tenant's gate is open (see `runtime::inline`), the call runs here,
    /// on the caller's thread, on the worker's instances.
    pub fn submit(self: &Arc<Self>, call: HookCall, done: HookDone) -> Submitted {
        if !self.wants(&call) {
            return Submitted::NoFilter(call);
        }
        let counted = matches!(call, HookCall::Request { .. });
        if counted && self.queued.fetch_add(1, Ordering::AcqRel) >= self.queue_limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            TenantCounters::bump(&self.shared.counters.overloaded);
            return Submitted::Overloaded(call);
        }
        let lane = self.lane_of(&call);
        let call = match self.run_inline(lane, call) {
            Ok(result) => {
                if counted {
                    self.finished_request();
                }
                return Submitted::Decided(result);
            }
            Err(call) => call,
        };
        match self.lanes[lane].send(Job::Hook {
            call,
            done,
            counted,
        }) {
            Ok(()) => Submitted::Queued,
            Err(std::sync::mpsc::SendError(job)) => {
                // The worker is gone (only while the tenant is torn down).
                if counted {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                }
                match job {
                    Job::Hook { call, .. } => Submitted::Overloaded(call),
                    _ => unreachable!("a hook job was sent"),
                }
            }
        }
    }

    /// Runs the call on this thread if `lane` can be borrowed; otherwise gives it back.
    // The call comes back by value: boxing it would cost an allocation per call.
    #[allow(clippy::result_large_err)]
    fn run_inline(self: &Arc<Self>, lane: usize, call: HookCall) -> Result<HookResult, HookCall> {
        let Some(mut borrowed) = self.borrow_idle_lane(lane) else {
            return Err(call);
        };
        let result = borrowed.worker.run_hook(self, call);
        borrowed.finish();
        Ok(result)
    }

    /// The instances of `lane` for a call on this thread: when the gate is
    /// open, `lane` exists, its worker has nothing queued, nobody else holds
    /// them, and every one is of its filter's current version (making one is
    /// the worker's job).
    fn borrow_idle_lane(self: &Arc<Self>, lane: usize) -> Option<BorrowedLane<'_>> {
        if !self.inline.is_open() || !self.may_wait_here() {
            return None;
        }
        let instances = self.lanes.get(lane)?.take_if_idle()?;
        let worker = Worker { lane, instances };
        if !worker.current(self) {
            self.lanes[lane].put_back(worker.instances);
            return None;
        }
        Some(BorrowedLane {
            tenant: self,
            worker,
            cpu_started: start_lent_call(),
            started: Instant::now(),
            finished: false,
        })
    }

    /// Whether this thread may wait for the registration store's lock, which
    /// an import of a tenant with `[tenant.registrations]` takes: any thread
    /// but one of a single-threaded tokio runtime, where the holder could be a
    /// task suspended on this very thread.
    fn may_wait_here(&self) -> bool {
        self.shared.registrations.get().is_none()
            || tokio::runtime::Handle::try_current().map_or(true, |handle| {
                handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            })
    }

    /// Whether the chain must see this call: some filter declared its hook, or
    /// the message carries state the tenant's filters keep with the host (dialog
    /// or transaction variables, or parameters in this host's own Route), which
    /// only a filter can act on. Otherwise the message goes on without the
    /// hand-off to a worker.
    fn wants(&self, call: &HookCall) -> bool {
        let (hook, msg) = match call {
            HookCall::Request { msg, .. } => (Hook::Request, msg),
            HookCall::Reply { msg, .. } => (Hook::Reply, msg),
            HookCall::Failure { request, .. } => (Hook::Failure, request),
        };
        let needed = Interest::of(hook, msg);
        if self
            .filters
            .iter()
            .any(|slot| slot.current.load().interest().contains(needed))
        {
            return true;
        }
        let ctx = call.ctx();
        ctx.own_route
            .as_deref()
            .is_some_and(routing::carries_filter_params)
            || ctx
                .dialog_key
                .as_deref()
                .is_some_and(|dialog| self.shared.dialog_vars.holds(dialog))
            || self.shared.transaction_vars.holds(&ctx.transaction_key)
    }

    /// A counted request finished.
    pub(crate) fn finished_request(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    fn lane_of(&self, call: &HookCall) -> usize {
        if self.lanes.len() == 1 {
            return 0;
        }
        let ctx = call.ctx();
        let key = ctx.dialog_key.as_deref().unwrap_or(&ctx.transaction_key);
        let mut hasher = rustc_hash::FxHasher::default();
        std::hash::Hash::hash(key, &mut hasher);
        let hash = std::hash::Hasher::finish(&hasher);
        (hash % self.lanes.len() as u64) as usize
    }

    /// The setup of an instance of `slot` for worker `lane`.
    pub(crate) fn setup(&self, slot: &FilterSlot, lane: usize) -> InstanceSetup {
        setup(&self.shared, slot, lane, self.memory_bytes, self.cpu_limit)
    }

    /// A spare of the current generation for `lane`, if one is ready.
    pub(crate) fn take_spare(
        &self,
        slot: &FilterSlot,
        lane: usize,
        generation: u64,
    ) -> Option<Box<dyn FilterInstance>> {
        let mut spare = lock(&slot.spares[lane]);
        match spare.take() {
            Some(s) if s.generation == generation => Some(s.instance),
            // An older generation's spare is of no use any more.
            _ => None,
        }
    }

    /// Makes a new spare for `lane` on the background thread, unless one is
    /// on its way.
    pub(crate) fn prepare_spare(self: &Arc<Self>, index: usize, lane: usize) {
        let Some(slot) = self.filters.get(index) else {
            return;
        };
        if slot.preparing[lane].swap(true, Ordering::AcqRel) {
            return;
        }
        let tenant = Arc::downgrade(self);
        let job = Box::new(move || {
            let Some(tenant) = tenant.upgrade() else {
                return;
            };
            let slot = &tenant.filters[index];
            let version = slot.current.load_full();
            match version.factory.instantiate(&tenant.setup(slot, lane)) {
                Ok(instance) => {
                    let mut spare = lock(&slot.spares[lane]);
                    if slot.current.load().generation == version.generation {
                        *spare = Some(Spare {
                            generation: version.generation,
                            instance,
                        });
                    }
                }
                Err(e) => {
                    TenantCounters::bump(&tenant.shared.counters.instantiate_errors);
                    tracing::warn!(
                        tenant = tenant.name(),
                        filter = &*slot.label,
                        "cannot prepare a spare instance: {e}"
                    );
                }
            }
            slot.preparing[lane].store(false, Ordering::Release);
        });
        if self.shared.services.background.send(job).is_err() {
            slot.preparing[lane].store(false, Ordering::Release);
        }
    }

    /// Installs `version` in `slot`: one configured instance per worker is made
    /// first (on the caller's thread, never a worker's), then the version is
    /// published; each worker takes its instance before its next call.
    fn publish(
        &self,
        slot: &FilterSlot,
        version: FilterVersion,
    ) -> Result<Arc<FilterVersion>, FilterError> {
        let mut spares = Vec::with_capacity(self.lanes.len());
        for lane in 0..self.lanes.len() {
            spares.push(version.factory.instantiate(&self.setup(slot, lane))?);
        }
        if let Some(first) = spares.first() {
            version.learn_interest(&**first);
        }
        self.inline.restart_probation();
        let generation = version.generation;
        for (lane, instance) in spares.into_iter().enumerate() {
            *lock(&slot.spares[lane]) = Some(Spare {
                generation,
                instance,
            });
        }
        Ok(slot.current.swap(Arc::new(version)))
    }

    fn generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
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
        let swapped = self.loader.load(&path).and_then(|loaded| {
            let sha256 = loaded.sha256.clone();
            let version = FilterVersion::new(
                path.clone(),
                loaded.sha256,
                self.generation(),
                loaded.factory,
            );
            let previous = self.publish(slot, version)?;
            Ok((sha256, previous, loaded.source))
        });
        let (sha256, previous, source) = swapped.inspect_err(|e| {
            TenantCounters::bump(&self.shared.counters.failed_swaps);
            tracing::warn!(
                tenant = self.name(),
                filter = &*slot.label,
                "filter swap refused, old version stays: {e}"
            );
        })?;
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

    /// Fresh instances for every filter (configured again): forgets the
    /// filters' in-memory state. Made on the caller's thread; workers switch
    /// before their next call, so no message waits for it.
    pub fn restart(&self) -> Result<Duration, FilterError> {
        let started = Instant::now();
        for slot in &self.filters {
            let _serial = lock(&slot.reload_lock);
            let current = slot.current.load_full();
            self.publish(
                slot,
                FilterVersion::new(
                    current.path.clone(),
                    current.sha256.clone(),
                    self.generation(),
                    current.factory.clone(),
                ),
            )?;
        }
        Ok(started.elapsed())
    }

    pub(crate) fn report_failure(&self, slot: &FilterSlot, hook: &str, error: &FilterError) {
        self.inline.close();
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

    /// The first filter of the chain whose current version exports
    /// `registration-handler` (looked up per batch, so a swap to or from such
    /// a version takes effect at once).
    pub fn registration_filter(&self) -> Option<usize> {
        self.filters
            .iter()
            .position(|slot| slot.current.load().factory.handles_registrations())
    }

    /// Hands due registrations to filter `index` on the first worker's instance, where
    /// its `rpc` runs too, so one instance owns every registration in flight. While that
    /// worker is idle and the gate open, they run here (the driver's thread), a few per
    /// call: the hand-off woke the worker, and its REGISTERs then woke a proxy thread, for
    /// every batch. Only the small batches of steady refreshing run here: a large one (a
    /// first wave) would hold the proxy's thread too long, and the worker is niced below
    /// it. A call over [`SLOW_DUE_CALL`] sends the next [`DUE_BACKOFF_BATCHES`] batches to
    /// the worker (the gate, which is about hooks, is not told; a failed call closes it).
    pub(crate) fn registrations_due(
        self: &Arc<Self>,
        index: usize,
        mut due: Vec<crate::registrations::scheduler::Due>,
    ) {
        let batch = self.due_batches.fetch_add(1, Ordering::Relaxed);
        let inline = due.len() <= INLINE_DUE_BATCH;
        while inline && !due.is_empty() && batch >= self.due_inline_from.load(Ordering::Relaxed) {
            let Some(mut borrowed) = self.borrow_idle_lane(0) else {
                break;
            };
            let take = due.len().min(INLINE_DUE_RECORDS);
            // A failure is counted and logged (and closes the gate); the records come
            // back as stalled.
            let _ = borrowed
                .worker
                .with_instance(self, index, "on-registration-due", |i| {
                    i.registrations_due(&due[..take])
                });
            let cpu = borrowed.finish_uncounted();
            due.drain(..take);
            self.due_inline.fetch_add(take as u64, Ordering::Relaxed);
            if cpu > SLOW_DUE_CALL {
                self.due_inline_from
                    .store(batch + 1 + DUE_BACKOFF_BATCHES, Ordering::Relaxed);
            }
        }
        if due.is_empty() {
            return;
        }
        // A send fails only while the tenant is torn down; the records then
        // come back as stalled if it ever runs again.
        let _ = self.lanes[0].send(Job::RegistrationsDue { filter: index, due });
    }

    /// Calls a filter's `rpc` export on the first worker's instance.
    pub fn filter_rpc(
        &self,
        index: usize,
        method: &str,
        params: &str,
    ) -> Result<String, FilterError> {
        if index >= self.filters.len() {
            return Err(FilterError::BadRequest(format!(
                "tenant {} has no filter {index}",
                self.name()
            )));
        }
        let (answer, answered) = sync_channel(1);
        self.lanes[0]
            .send(Job::Rpc {
                filter: index,
                method: method.to_string(),
                params: params.to_string(),
                answer,
            })
            .map_err(|_| FilterError::Engine("tenant worker stopped".into()))?;
        answered
            .recv()
            .map_err(|_| FilterError::Engine("tenant worker stopped".into()))?
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
                    "generation": version.generation,
                    "watch_ms": slot.watch_ms,
                })
            })
            .collect();
        let mut counters = self.shared.counters.to_json();
        // Filter calls (hooks, replies to its own requests) run on a proxy thread, and
        // how often the gate closed (each closing sends every call back to the worker for
        // a probation).
        counters["hooks_inline"] = json!(self.inline.inline_calls());
        counters["slow_hooks_inline"] = json!(self.inline.slow_inline_calls());
        counters["inline_closings"] = json!(self.inline.closings());
        counters["registrations_due_inline"] = json!(self.due_inline.load(Ordering::Relaxed));
        json!({
            "name": self.name(),
            "policy": match self.policy { FailurePolicy::FailOpen => "fail-open", FailurePolicy::FailClosed => "fail-closed" },
            "memory_limit_bytes": self.memory_bytes,
            "cpu_limit_ms": self.cpu_limit.as_millis() as u64,
            "workers": self.lanes.len(),
            "queue_limit": self.queue_limit,
            "queued": self.queued.load(Ordering::Relaxed),
            "filters": filters,
            "counters": counters,
            "metrics": self.shared.metrics.to_json(),
            "dialog_variables": self.shared.dialog_vars.len(),
            "transaction_variables": self.shared.transaction_vars.len(),
            "pending_timers": self.shared.pending_timers(),
        })
    }
}

fn setup(
    shared: &Arc<TenantShared>,
    slot: &FilterSlot,
    lane: usize,
    memory_bytes: usize,
    cpu_limit: Duration,
) -> InstanceSetup {
    InstanceSetup {
        shared: shared.clone(),
        filter_index: slot.index,
        lane,
        label: slot.label.clone(),
        config_json: slot.config_json.clone(),
        memory_bytes,
        cpu_limit,
    }
}

impl FilterEvents for Tenant {
    fn timer_fired(&self, lane: usize, filter: usize, token: u64) {
        if let Some(worker) = self.lanes.get(lane) {
            let _ = worker.send(Job::Timer { filter, token });
        }
    }

    /// Runs on this thread when the lane can be borrowed (as a hook call can),
    /// else on the worker.
    fn local_reply(
        self: Arc<Self>,
        lane: usize,
        filter: usize,
        request_id: u64,
        mut reply: Message,
        origin: Option<ReplyOrigin>,
    ) {
        if let Some(mut borrowed) = self.borrow_idle_lane(lane) {
            // A failure is counted and logged by `with_instance`; nobody waits for it.
            let _ = borrowed
                .worker
                .with_instance(&self, filter, "on-local-reply", |i| {
                    i.local_reply(request_id, &mut reply, origin)
                });
            borrowed.finish();
            return;
        }
        if let Some(worker) = self.lanes.get(lane) {
            let _ = worker.send(Job::LocalReply {
                filter,
                request_id,
                reply,
                origin,
            });
        }
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
