//! The filter host: per tenant a chain of sandboxed filters run by the tenant's
//! own workers, with limits, failure policy and hot swap; the proxy's `FilterHooks`.

pub mod component;
pub mod config;
pub mod cpu;
pub mod epoch;
pub mod inline;
pub mod instance;
pub mod lane;
pub mod proxy_wasm;
pub mod state;
pub mod tenant;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use siphost_sip::Message;

use crate::proxy::hooks::{FilterHooks, HookCall, HookContext, HookDone, Submitted};
use crate::proxy::{Answered, Origination, SendError};
use component::FilterEngine;
pub use component::{EngineOptions, default_cache_dir};
use config::{ListenTransport, TenantConfig, parse_listen, validate_tenants};
pub use instance::{Hook, LoadSource};
use state::Services;
use tenant::spawn_watcher;
pub use tenant::{SwapReport, Tenant};

/// Why a filter could not be loaded or a call into it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The call ran past the tenant's CPU limit.
    #[error("filter ran out of time (cpu limit)")]
    Timeout,
    /// The filter asked for more memory than the tenant's limit.
    #[error("filter ran out of memory (memory limit)")]
    OutOfMemory,
    /// The filter trapped (panic, unreachable, bad memory access...).
    #[error("filter trapped: {0}")]
    Trap(wasmtime::Trap),
    /// The call failed without a trap code (e.g. a misused host handle).
    #[error("filter call failed: {0}")]
    Guest(String),
    /// The wasm file could not be read.
    #[error("cannot load filter: {0}")]
    Load(String),
    /// The wasm is not a valid component for this engine.
    #[error("cannot compile filter: {0}")]
    Compile(String),
    /// Linking or instantiation failed (missing import, pool exhausted...).
    #[error("cannot instantiate filter: {0}")]
    Instantiate(String),
    /// The filter's `configure` rejected its configuration.
    #[error("filter rejected its configuration: {0}")]
    Configure(String),
    /// The engine could not be set up.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The filter's `rpc` export returned an error.
    #[error("filter rpc: {0}")]
    Rpc(String),
    /// An admin request named something that does not exist.
    #[error("{0}")]
    BadRequest(String),
}

impl FilterError {
    /// Prefixes load-time errors with where they happened.
    fn context(self, at: &str) -> Self {
        match self {
            Self::Load(m) => Self::Load(format!("{at}: {m}")),
            Self::Compile(m) => Self::Compile(format!("{at}: {m}")),
            Self::Instantiate(m) => Self::Instantiate(format!("{at}: {m}")),
            Self::Configure(m) => Self::Configure(format!("{at}: {m}")),
            other => other,
        }
    }
}

/// Why a request a filter originated got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// No final reply in time (the filter sees a local 408).
    Timeout,
    /// It could not be sent (the filter sees a local 503).
    Transport(String),
    /// The host refused to send it: no route, no such listener, a bad next hop (a local
    /// 503 too, and a warning: the filter or its configuration is wrong).
    Refused(String),
}

/// Where the outcome of a request a filter originated goes: the final reply and the peer
/// it came from, or why there is none. Called once, from any thread; it must not block.
pub type SendDone = Box<dyn FnOnce(Result<Answered, SendFailure>) + Send>;

/// Sends requests filters originate (`transport.send-request`); the proxy's
/// handle implements it.
pub trait RequestSender: Send + Sync {
    fn send_request(&self, request: Message, how: Origination, done: SendDone);
}

/// The proxy sends filters' requests in client transactions of its own. The core calls
/// `done` itself when the transaction ends: no task waits in between, so a REGISTER costs
/// no task and no extra thread wake-up.
impl RequestSender for crate::proxy::ProxyHandle {
    fn send_request(&self, request: Message, how: Origination, done: SendDone) {
        self.send_request_then(
            request,
            how,
            crate::proxy::ReplySink::new(move |outcome| {
                done(outcome.map_err(|e| match e {
                    SendError::Timeout => SendFailure::Timeout,
                    SendError::Transport(_) | SendError::Unresolved(_) | SendError::Stopped => {
                        SendFailure::Transport(e.to_string())
                    }
                    SendError::Invalid(_)
                    | SendError::NoRoute(_)
                    | SendError::NextHop(_)
                    | SendError::NoListener(_)
                    | SendError::NoSuchListener(..) => SendFailure::Refused(e.to_string()),
                }))
            }),
        );
    }
}

/// The tenants of a host and their filters.
pub struct Runtime {
    services: Arc<Services>,
    engine: Arc<FilterEngine>,
    tenants: Vec<Arc<Tenant>>,
    by_socket: state::SocketOwners,
}

impl Runtime {
    /// Loads every tenant's filters (compiled or from the artifact cache),
    /// instantiates and configures them. Any failure is returned. Timers and
    /// originated requests need a tokio runtime: create it inside one.
    pub fn new(
        tenants: &[TenantConfig],
        mut options: EngineOptions,
    ) -> Result<Arc<Self>, FilterError> {
        validate_tenants(tenants).map_err(FilterError::BadRequest)?;
        let largest = tenants
            .iter()
            .map(|t| (t.memory_limit_mib as usize).saturating_mul(1 << 20))
            .max()
            .unwrap_or(0);
        options.max_memory_bytes = options.max_memory_bytes.max(largest);
        // A live instance and a spare per filter and worker, one more per
        // worker while a swap prepares the next version.
        let needed: u64 = tenants
            .iter()
            .map(|t| t.filter.len() as u64 * u64::from(t.workers) * 2)
            .sum::<u64>()
            + tenants
                .iter()
                .map(|t| u64::from(t.workers))
                .max()
                .unwrap_or(0);
        if needed > u64::from(options.max_instances) {
            return Err(FilterError::BadRequest(format!(
                "tenant: the tenants' filters and workers need {needed} instances, \
                 more than the engine's {} (fewer workers or tenants)",
                options.max_instances
            )));
        }
        let engine = Arc::new(FilterEngine::new(&options)?);
        let services = Arc::new(
            Services::start(tokio::runtime::Handle::try_current().ok())
                .map_err(|e| FilterError::Engine(format!("background thread: {e}")))?,
        );
        let mut built = Vec::with_capacity(tenants.len());
        let mut by_socket = HashMap::new();
        // Core modules exporting the proxy-wasm ABI go to its host, components to theirs.
        let loader = Arc::new(proxy_wasm::AbiLoader::new(engine.clone()));
        for (i, config) in tenants.iter().enumerate() {
            built.push(Tenant::new(config, services.clone(), loader.clone())?);
            for entry in &config.listen {
                let socket = parse_listen(entry).map_err(FilterError::BadRequest)?;
                by_socket.insert(socket, i);
            }
        }
        let by_socket = Arc::new(by_socket);
        for (i, tenant) in built.iter().enumerate() {
            let _ = tenant.shared.socket_owners.set((i, by_socket.clone()));
        }
        let runtime = Arc::new(Self {
            services,
            engine,
            tenants: built,
            by_socket,
        });
        for tenant in &runtime.tenants {
            for slot in &tenant.filters {
                if let Some(ms) = slot.watch_ms {
                    spawn_watcher(tenant, slot.index, Duration::from_millis(ms))
                        .map_err(|e| FilterError::Engine(format!("file watcher: {e}")))?;
                }
            }
        }
        Ok(runtime)
    }

    /// Lets filters originate requests through the proxy.
    pub fn set_request_sender(&self, sender: Arc<dyn RequestSender>) {
        *self
            .services
            .sender
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(sender);
    }

    /// Opens each tenant's `[tenant.registrations]` store, loads it with its
    /// persisted live state and starts the driver that hands due records to
    /// the tenant's registration filter. Scheduler settings (`reg_*`) come
    /// from that filter's config table. Call once, inside the tokio runtime.
    pub async fn start_registrations(&self, configs: &[TenantConfig]) -> Result<(), FilterError> {
        use crate::registrations::{RegistrationStore, Registrations, SchedulerConfig};
        for (i, config) in configs.iter().enumerate() {
            let Some(registrations) = &config.registrations else {
                continue;
            };
            let tenant = self.named(&config.name)?.clone();
            let modparams = tenant
                .registration_filter()
                .and_then(|index| config.filter.get(index).map(|f| (index, &f.config)));
            let scheduler = match modparams {
                Some((index, table)) => SchedulerConfig::from_modparams(table).map_err(|e| {
                    FilterError::BadRequest(format!("tenant[{i}].filter[{index}].config.{e}"))
                })?,
                None => SchedulerConfig::default(),
            };
            let store = RegistrationStore::open(registrations, &config.name)
                .await
                .map_err(|e| FilterError::BadRequest(format!("tenant[{i}].registrations: {e}")))?;
            let service = Registrations::load(&config.name, store, scheduler)
                .await
                .map_err(|e| FilterError::BadRequest(format!("tenant[{i}].registrations: {e}")))?;
            if tenant.shared.registrations.set(service.clone()).is_err() {
                return Err(FilterError::BadRequest(format!(
                    "tenant {}: registrations started twice",
                    config.name
                )));
            }
            tokio::spawn(service.drive(Arc::downgrade(&tenant)));
        }
        Ok(())
    }

    /// Writes every tenant's unsaved registration state (at shutdown).
    pub async fn flush_registrations(&self) {
        for tenant in &self.tenants {
            if let Some(registrations) = tenant.shared.registrations.get() {
                registrations.flush().await;
            }
        }
    }

    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|t| t.name() == name)
    }

    pub fn tenants(&self) -> &[Arc<Tenant>] {
        &self.tenants
    }

    fn tenant_for(&self, ctx: &HookContext) -> Option<&Arc<Tenant>> {
        self.tenant_on(ctx.transport, ctx.local)
    }

    fn tenant_on(&self, transport: &str, local: SocketAddr) -> Option<&Arc<Tenant>> {
        let transport = ListenTransport::from_name(transport)?;
        let index = *self.by_socket.get(&(transport, local))?;
        self.tenants.get(index)
    }

    fn named(&self, name: &str) -> Result<&Arc<Tenant>, FilterError> {
        self.tenant(name)
            .ok_or_else(|| FilterError::BadRequest(format!("no tenant {name:?}")))
    }

    /// `filter.reload [tenant, path?, index?]`: swaps one filter. Without a
    /// path it reloads from the current path. The index defaults to 0; with a
    /// path and no index, a filter already at that path is chosen.
    pub fn reload(
        &self,
        tenant: &str,
        path: Option<&Path>,
        index: Option<usize>,
    ) -> Result<SwapReport, FilterError> {
        let tenant = self.named(tenant)?;
        let index = index
            .or_else(|| {
                let path = path?;
                tenant
                    .filters
                    .iter()
                    .position(|s| s.current.load().path == path)
            })
            .unwrap_or(0);
        tenant.swap(index, path)
    }

    /// `filter.restart [tenant]`: fresh instances for a tenant's filters.
    pub fn restart(&self, tenant: &str) -> Result<Duration, FilterError> {
        self.named(tenant)?.restart()
    }

    /// `filter.rpc [tenant, method, params?, index?]`.
    pub fn filter_rpc(
        &self,
        tenant: &str,
        method: &str,
        params: &str,
        index: usize,
    ) -> Result<String, FilterError> {
        self.named(tenant)?.filter_rpc(index, method, params)
    }

    /// `filter.list`: tenants, filters, counters and metrics.
    pub fn status(&self) -> Value {
        json!({ "tenants": self.tenants.iter().map(|t| t.status_json()).collect::<Vec<_>>() })
    }
}

impl Runtime {
    /// Whether the epoch ticker is parked: no hook ran for a while, so the
    /// deadline machinery uses no CPU.
    pub fn ticker_parked(&self) -> bool {
        self.engine.ticker.is_parked()
    }

    /// Times the epoch ticker woke to tick.
    pub fn ticker_wakes(&self) -> u64 {
        self.engine.ticker.wakes()
    }
}

impl FilterHooks for Runtime {
    /// Answered from the socket → tenant map: a lookup, no allocation.
    fn applies(&self, transport: &str, local: SocketAddr) -> bool {
        self.tenant_on(transport, local)
            .is_some_and(|tenant| !tenant.filters.is_empty())
    }

    /// Hands the call to the tenant's worker for its dialog, or runs it here
    /// when that worker is idle and the tenant has earned it (`inline`); never waits.
    fn submit(&self, call: HookCall, done: HookDone) -> Submitted {
        match self.tenant_for(call.ctx()) {
            Some(tenant) if !tenant.filters.is_empty() => tenant.submit(call, done),
            _ => Submitted::NoFilter(call),
        }
    }

    /// One socket → tenant lookup, as in `applies`: a tenant without filters keeps nothing.
    fn transaction_ended(&self, ctx: &HookContext, dialog_over: bool) {
        let Some(tenant) = self.tenant_for(ctx).filter(|t| !t.filters.is_empty()) else {
            return;
        };
        tenant.shared.transaction_vars.clear(&ctx.transaction_key);
        if dialog_over && let Some(dialog) = &ctx.dialog_key {
            tenant.shared.dialog_vars.clear(dialog);
        }
    }
}
