//! The proxy-wasm (ABI v0.2.1) implementation of a filter: a core module's
//! HTTP-shaped callbacks run on SIP messages under the same limits as components.

pub mod host;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{Linker, Module, Store, TypedFunc};

use super::FilterError;
use super::component::FilterEngine;
use super::component::imports::MemoryLimiter;
use super::component::instance::classify;
use super::cpu::budget_start;
use super::epoch::{EpochTicker, FIRST_DEADLINE, budget_check};
use super::instance::{
    Action, FilterFactory, FilterInstance, FilterLoader, Hook, HookInput, InstanceSetup, Interest,
    LoadSource, Loaded,
};
use super::state::{ReplyOrigin, TenantCounters, lock};
use host::{Call, PwState, QUEUE_READY_TOKEN, TenantData};

/// The export that marks a core module as a proxy-wasm ABI 0.2.1 filter.
pub const ABI_EXPORT: &str = "proxy_abi_version_0_2_1";
/// CPU budget of instantiation, `_initialize`, VM start and configure.
const SETUP_CPU_LIMIT: Duration = Duration::from_secs(1);
/// The root context's id; stream contexts count up from the next one.
const ROOT_CONTEXT: i32 = 1;
/// Timer token of the `on_tick` period.
const TICK_TOKEN: u64 = 0;

/// Whether `wasm` is a core module (not a component): the binary's layer field.
pub fn is_core_module(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && wasm[..4] == *b"\0asm" && wasm[4..8] == [1, 0, 0, 0]
}

/// Loads core modules as proxy-wasm filters and hands components to the
/// component engine: "told apart by what the file is".
pub struct AbiLoader {
    pub components: Arc<FilterEngine>,
    /// Shared data, queues and metric ids, per tenant name.
    tenants: Arc<Mutex<HashMap<String, Arc<TenantData>>>>,
}

impl AbiLoader {
    pub fn new(components: Arc<FilterEngine>) -> Self {
        Self {
            components,
            tenants: Arc::default(),
        }
    }

    fn load_module(&self, path: &Path, wasm: &[u8]) -> Result<Loaded, FilterError> {
        let at = path.display();
        let engine = &self.components.engine;
        let module =
            Module::new(engine, wasm).map_err(|e| FilterError::Compile(format!("{at}: {e:#}")))?;
        if !module.exports().any(|e| e.name() == ABI_EXPORT) {
            return Err(FilterError::Compile(format!(
                "{at}: a core module but not a proxy-wasm filter (no {ABI_EXPORT} export)"
            )));
        }
        let mut linker = Linker::new(engine);
        host::link(&mut linker, &module)
            .map_err(|e| FilterError::Instantiate(format!("{at}: {e:#}")))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| FilterError::Instantiate(format!("{at}: {e:#}")))?;
        Ok(Loaded {
            factory: Arc::new(ProxyWasmFactory {
                pre,
                ticker: self.components.ticker.clone(),
                tenants: self.tenants.clone(),
            }),
            sha256: Sha256::digest(wasm)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            source: LoadSource::Compiled,
        })
    }
}

impl FilterLoader for AbiLoader {
    fn load(&self, path: &Path) -> Result<Loaded, FilterError> {
        let wasm = std::fs::read(path)
            .map_err(|e| FilterError::Load(format!("{}: {e}", path.display())))?;
        if is_core_module(&wasm) {
            self.load_module(path, &wasm)
        } else {
            self.components.load(path)
        }
    }
}

/// One loaded proxy-wasm module, linked and ready to instantiate.
pub struct ProxyWasmFactory {
    pre: wasmtime::InstancePre<PwState>,
    ticker: Arc<EpochTicker>,
    tenants: Arc<Mutex<HashMap<String, Arc<TenantData>>>>,
}

/// Runs `f` with `limit` of this thread's CPU time; the epoch ticker runs meanwhile.
fn metered<R>(
    store: &mut Store<PwState>,
    ticker: &EpochTicker,
    limit: Duration,
    f: impl FnOnce(&mut Store<PwState>) -> wasmtime::Result<R>,
) -> Result<R, FilterError> {
    let _ticking = ticker.enter();
    let data = store.data_mut();
    data.limiter.refused = false;
    data.cpu_started = budget_start();
    data.cpu_limit = limit;
    store.set_epoch_deadline(FIRST_DEADLINE);
    f(store).map_err(|e| classify(&e, store.data().limiter.refused))
}

/// The callbacks the host calls; optional ones may be missing.
struct Callbacks {
    context_create: TypedFunc<(i32, i32), ()>,
    request_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    request_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    response_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    response_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    done: Option<TypedFunc<i32, i32>>,
    log: Option<TypedFunc<i32, ()>>,
    delete: Option<TypedFunc<i32, ()>>,
    tick: Option<TypedFunc<i32, ()>>,
    queue_ready: Option<TypedFunc<(i32, i32), ()>>,
}

impl FilterFactory for ProxyWasmFactory {
    /// The proxy-wasm ABI has no registration export.
    fn handles_registrations(&self) -> bool {
        false
    }

    fn instantiate(&self, setup: &InstanceSetup) -> Result<Box<dyn FilterInstance>, FilterError> {
        TenantCounters::bump(&setup.shared.counters.instantiations);
        let tenant = lock(&self.tenants)
            .entry(setup.shared.name.to_string())
            .or_default()
            .clone();
        let state = PwState::new(setup, tenant, MemoryLimiter::new(setup.memory_bytes));
        let mut store = Store::new(self.pre.module().engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|ctx| {
            let data = ctx.data();
            Ok(budget_check(data.cpu_started, data.cpu_limit))
        });
        let limit = SETUP_CPU_LIMIT.max(setup.cpu_limit);
        let instance = metered(&mut store, &self.ticker, limit, |s| self.pre.instantiate(s))
            .map_err(|e| match e {
                FilterError::Guest(msg) => FilterError::Instantiate(msg),
                other => other,
            })?;
        let typed = |store: &mut Store<PwState>, name: &str| instance.get_func(&mut *store, name);
        let required = |e: wasmtime::Error| FilterError::Instantiate(format!("{e:#}"));
        let optional3 = |store: &mut Store<PwState>, name: &str| {
            typed(store, name).and_then(|f| f.typed::<(i32, i32, i32), i32>(&*store).ok())
        };
        let callbacks = Callbacks {
            context_create: typed(&mut store, "proxy_on_context_create")
                .ok_or_else(|| {
                    FilterError::Instantiate("no proxy_on_context_create export".into())
                })?
                .typed(&store)
                .map_err(required)?,
            request_headers: optional3(&mut store, "proxy_on_request_headers"),
            request_body: optional3(&mut store, "proxy_on_request_body"),
            response_headers: optional3(&mut store, "proxy_on_response_headers"),
            response_body: optional3(&mut store, "proxy_on_response_body"),
            done: typed(&mut store, "proxy_on_done").and_then(|f| f.typed(&store).ok()),
            log: typed(&mut store, "proxy_on_log").and_then(|f| f.typed(&store).ok()),
            delete: typed(&mut store, "proxy_on_delete").and_then(|f| f.typed(&store).ok()),
            tick: typed(&mut store, "proxy_on_tick").and_then(|f| f.typed(&store).ok()),
            queue_ready: typed(&mut store, "proxy_on_queue_ready")
                .and_then(|f| f.typed(&store).ok()),
        };
        let (vm_config, plugin_config) = host::configurations(&setup.config_json);
        let vm_size = vm_config.len() as i32;
        let plugin_size = plugin_config.len() as i32;
        store.data_mut().vm_config = vm_config;
        store.data_mut().plugin_config = plugin_config;
        let accepted = metered(&mut store, &self.ticker, limit, |s| {
            for init in ["_initialize", "_start"] {
                if let Ok(f) = instance.get_typed_func::<(), ()>(&mut *s, init) {
                    f.call(&mut *s, ())?;
                    break;
                }
            }
            callbacks.context_create.call(&mut *s, (ROOT_CONTEXT, 0))?;
            let mut accepted = true;
            if let Ok(f) = instance.get_typed_func::<(i32, i32), i32>(&mut *s, "proxy_on_vm_start")
            {
                accepted &= f.call(&mut *s, (ROOT_CONTEXT, vm_size))? != 0;
            }
            if let Ok(f) = instance.get_typed_func::<(i32, i32), i32>(&mut *s, "proxy_on_configure")
            {
                accepted &= f.call(&mut *s, (ROOT_CONTEXT, plugin_size))? != 0;
            }
            Ok(accepted)
        })?;
        if !accepted {
            return Err(FilterError::Configure(
                "proxy_on_vm_start or proxy_on_configure returned false".into(),
            ));
        }
        let tick_period = store.data_mut().tick_period.take();
        let mut filter = ProxyWasmInstance {
            store,
            callbacks,
            ticker: self.ticker.clone(),
            cpu_limit: setup.cpu_limit,
            next_context: ROOT_CONTEXT,
        };
        if let Some(period) = tick_period {
            filter.arm_tick(period);
        }
        Ok(Box::new(filter))
    }
}

/// A live proxy-wasm VM with its root context.
pub struct ProxyWasmInstance {
    store: Store<PwState>,
    callbacks: Callbacks,
    ticker: Arc<EpochTicker>,
    cpu_limit: Duration,
    next_context: i32,
}

impl ProxyWasmInstance {
    fn arm_tick(&mut self, period: Duration) {
        let data = self.store.data_mut();
        if let Some(id) = data.tick_timer.take() {
            data.setup.shared.cancel_timer(id);
        }
        if period.is_zero() {
            return;
        }
        let setup = &data.setup;
        match setup.shared.set_timer(
            setup.lane,
            setup.filter_index,
            period.as_millis() as u64,
            TICK_TOKEN,
        ) {
            Ok(id) => {
                data.tick_timer = Some(id);
                data.tick_every = period;
            }
            Err(e) => tracing::warn!(filter = %setup.label, "on_tick timer not set: {e}"),
        }
    }

    /// A stream context's life: create, headers (and body), done, log, delete.
    fn stream(&mut self, input: &mut HookInput<'_>) -> Result<Action, FilterError> {
        let (headers, body) = match input.hook {
            Hook::Request => (
                self.callbacks.request_headers.clone(),
                self.callbacks.request_body.clone(),
            ),
            Hook::Reply => (
                self.callbacks.response_headers.clone(),
                self.callbacks.response_body.clone(),
            ),
            // A failure reply is the proxy's own; proxy-wasm has no callback for it.
            Hook::Failure => return Ok(Action::Continue),
        };
        let Some(headers) = headers else {
            return Ok(Action::Continue);
        };
        self.next_context = self.next_context.checked_add(1).unwrap_or(ROOT_CONTEXT + 1);
        let id = self.next_context;
        let data = self.store.data_mut();
        data.call = Some(Call::new(input));
        let count = data.call.as_ref().map_or(0, Call::header_count) as i32;
        let body_len = input.msg.body().len() as i32;
        let cb = &self.callbacks;
        let result = metered(&mut self.store, &self.ticker, self.cpu_limit, |s| {
            cb.context_create.call(&mut *s, (id, ROOT_CONTEXT))?;
            let paused = headers.call(&mut *s, (id, count, i32::from(body_len == 0)))? != 0;
            if !paused
                && body_len > 0
                && let Some(body) = body
            {
                body.call(&mut *s, (id, body_len, 1))?;
            }
            if let Some(done) = &cb.done {
                done.call(&mut *s, id)?;
            }
            if let Some(log) = &cb.log {
                log.call(&mut *s, id)?;
            }
            if let Some(delete) = &cb.delete {
                delete.call(&mut *s, id)?;
            }
            // A paused stream is never resumed on SIP: it goes on as edited.
            Ok(())
        });
        let call = self.store.data_mut().call.take();
        result?;
        let Some(call) = call else {
            return Ok(Action::Continue);
        };
        Ok(call.finish(input.msg))
    }
}

impl FilterInstance for ProxyWasmInstance {
    fn hook(&mut self, input: &mut HookInput<'_>) -> Result<Action, FilterError> {
        self.stream(input)
    }

    fn timer(&mut self, token: u64) -> Result<(), FilterError> {
        if token >= QUEUE_READY_TOKEN {
            // Ids are u32, so the difference fits; an item enqueued by any VM
            // of the tenant reaches the slot that registered the queue.
            let queue = (token - QUEUE_READY_TOKEN) as u32 as i32;
            if let Some(ready) = self.callbacks.queue_ready.clone() {
                metered(&mut self.store, &self.ticker, self.cpu_limit, |s| {
                    ready.call(&mut *s, (ROOT_CONTEXT, queue))
                })?;
            }
            return Ok(());
        }
        if token != TICK_TOKEN {
            return Ok(());
        }
        self.store.data_mut().tick_timer = None;
        if let Some(tick) = self.callbacks.tick.clone() {
            metered(&mut self.store, &self.ticker, self.cpu_limit, |s| {
                tick.call(&mut *s, ROOT_CONTEXT)
            })?;
        }
        let data = self.store.data_mut();
        let period = data.tick_period.take().unwrap_or(data.tick_every);
        self.arm_tick(period);
        Ok(())
    }

    fn local_reply(
        &mut self,
        _request_id: u64,
        _reply: &mut siphost_sip::Message,
        _origin: Option<ReplyOrigin>,
    ) -> Result<(), FilterError> {
        // proxy-wasm filters originate no SIP requests (proxy_http_call is refused).
        Ok(())
    }

    fn rpc(&mut self, method: &str, _params: &str) -> Result<Result<String, String>, FilterError> {
        Ok(Err(format!(
            "proxy-wasm filters have no rpc method {method:?}"
        )))
    }

    fn registrations_due(
        &mut self,
        _due: &[crate::registrations::scheduler::Due],
    ) -> Result<(), FilterError> {
        // Never called: the factory says it handles no registrations.
        Err(FilterError::BadRequest(
            "proxy-wasm filters take no remote registrations".into(),
        ))
    }

    /// The hooks the module has callbacks for: never `on-failure`, which
    /// proxy-wasm has no callback for, so failed branches skip the hand-off.
    fn interest(&self) -> Interest {
        let mut hooks = Interest::NONE;
        if self.callbacks.request_headers.is_some() {
            hooks = hooks
                .union(Interest::INITIAL_REQUESTS)
                .union(Interest::IN_DIALOG_REQUESTS);
        }
        if self.callbacks.response_headers.is_some() {
            hooks = hooks.union(Interest::REPLIES);
        }
        hooks
    }
}

#[cfg(test)]
mod tests {
    use super::is_core_module;

    #[test]
    fn core_modules_and_components_are_told_apart_by_their_layer() {
        assert!(is_core_module(b"\0asm\x01\0\0\0"));
        assert!(!is_core_module(b"\0asm\x0d\0\x01\0"));
        assert!(!is_core_module(b"\0asm"));
    }
}
