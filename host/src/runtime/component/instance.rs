//! A component filter version (`FilterFactory`) and its live instances
//! (`FilterInstance`): hook calls under the CPU budget, messages lent in place.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::{InstancePre, Resource};

use super::bindings::v0_1::exports::siphost::filter::{handler, registration_handler};
use super::bindings::v0_1::siphost::filter::types;
use super::engine::FilterEngine;
use super::imports::{CpuBudget, HostState, PRIMARY, SECONDARY};
use crate::registrations::scheduler::{Due, DueReason};
use crate::runtime::FilterError;
use crate::runtime::cpu::budget_start;
use crate::runtime::epoch::{EpochTicker, FIRST_DEADLINE, budget_check};
use crate::runtime::instance::{
    Action, FilterFactory, FilterInstance, FilterLoader, Hook, HookInput, InstanceSetup, Interest,
    Loaded,
};
use crate::runtime::state::{ReplyOrigin, TenantCounters};
use siphost_sip::Message;

/// CPU budget of instantiation plus `configure` (never on the message path).
const SETUP_CPU_LIMIT: Duration = Duration::from_secs(1);
/// CPU budget of an admin call (`filter.rpc`): `uac.reg_dump` walks every record, about
/// 25 µs each in a release build (a million in 25 s); 1 s failed at 3,000 records in a
/// debug build. A looping filter is still stopped, and only the worker it runs on
/// waits.
const ADMIN_CPU_LIMIT: Duration = Duration::from_secs(60);

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

/// One loaded component, linked and ready to instantiate. The export
/// interfaces are looked up one by one: `handler` is required,
/// `registration-handler` only present in filters of the
/// `filter-with-registrations` world.
pub struct ComponentFactory {
    pre: InstancePre<HostState>,
    handler: handler::GuestIndices,
    registrations: Option<registration_handler::GuestIndices>,
    ticker: Arc<EpochTicker>,
}

impl FilterLoader for FilterEngine {
    fn load(&self, path: &Path) -> Result<Loaded, FilterError> {
        let (component, sha256, source) = self.load_component(path)?;
        let instance_pre = self
            .link(&component)
            .map_err(|e| FilterError::Instantiate(format!("{}: {e:#}", path.display())))?;
        let handler = handler::GuestIndices::new(&instance_pre)
            .map_err(|e| FilterError::Instantiate(format!("{}: {e:#}", path.display())))?;
        // Absent in filters built for the plain `filter` world: they load as before.
        let registrations = registration_handler::GuestIndices::new(&instance_pre).ok();
        Ok(Loaded {
            factory: Arc::new(ComponentFactory {
                pre: instance_pre,
                handler,
                registrations,
                ticker: self.ticker.clone(),
            }),
            sha256,
            source,
        })
    }
}

impl FilterFactory for ComponentFactory {
    fn handles_registrations(&self) -> bool {
        self.registrations.is_some()
    }

    fn instantiate(&self, setup: &InstanceSetup) -> Result<Box<dyn FilterInstance>, FilterError> {
        TenantCounters::bump(&setup.shared.counters.instantiations);
        let state = HostState::new(setup).map_err(|e| FilterError::Instantiate(e.to_string()))?;
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        // The call goes on while its thread has CPU budget left.
        store.epoch_deadline_callback(|ctx| {
            let budget = ctx.data().budget;
            Ok(budget_check(budget.started, budget.limit))
        });
        let setup_limit = SETUP_CPU_LIMIT.max(setup.cpu_limit);
        let (bindings, registrations) = metered(&mut store, &self.ticker, setup_limit, |store| {
            let instance = self.pre.instantiate(&mut *store)?;
            let handler = self.handler.load(&mut *store, &instance)?;
            let registrations = match &self.registrations {
                Some(indices) => Some(indices.load(&mut *store, &instance)?),
                None => None,
            };
            Ok((handler, registrations))
        })
        .map_err(|e| match e {
            FilterError::Guest(msg) => FilterError::Instantiate(msg),
            other => other,
        })?;
        metered(&mut store, &self.ticker, setup_limit, |store| {
            bindings.call_configure(store, &setup.config_json)
        })?
        .map_err(FilterError::Configure)?;
        Ok(Box::new(ComponentInstance {
            context: types::Context {
                tenant: setup.shared.name.to_string(),
                in_dialog: false,
                dialog_key: None,
                transaction_key: String::new(),
                own_route: None,
            },
            bindings: Some(bindings),
            registrations,
            store,
            ticker: self.ticker.clone(),
            cpu_limit: setup.cpu_limit,
        }))
    }
}

/// A live component instance.
pub struct ComponentInstance {
    store: Store<HostState>,
    /// The context record handed to hooks; the tenant name stays, the keys
    /// are lent per call.
    context: types::Context,
    /// Set once instantiation succeeded.
    bindings: Option<handler::Guest>,
    /// The `registration-handler` export, when the filter has one.
    registrations: Option<registration_handler::Guest>,
    ticker: Arc<EpochTicker>,
    cpu_limit: Duration,
}

/// Runs `f` on the store with `limit` of this thread's CPU time; the epoch
/// ticker runs meanwhile.
fn metered<R>(
    store: &mut Store<HostState>,
    ticker: &EpochTicker,
    limit: Duration,
    f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
) -> Result<R, FilterError> {
    let _ticking = ticker.enter();
    let data = store.data_mut();
    data.limiter.refused = false;
    data.budget = CpuBudget {
        started: budget_start(),
        limit,
    };
    store.set_epoch_deadline(FIRST_DEADLINE);
    let result = f(store).map_err(|e| classify(&e, store.data().limiter.refused));
    // Sent even when the call failed: their ids were given out.
    store.data_mut().send_outbox();
    result
}

fn not_set_up() -> FilterError {
    FilterError::Instantiate("instance was never set up".into())
}

fn action(action: types::Action) -> Action {
    match action {
        types::Action::Continue => Action::Continue,
        types::Action::Forward(uri) => Action::Forward(uri),
        types::Action::Reply(reply) => Action::Reply {
            code: reply.code,
            reason: reply.reason,
            headers: reply.headers,
            body: Default::default(),
        },
        types::Action::Drop => Action::Drop,
        types::Action::Resend(next_hop) => Action::Resend(next_hop),
    }
}

impl FilterInstance for ComponentInstance {
    fn hook(&mut self, input: &mut HookInput<'_>) -> Result<Action, FilterError> {
        let filter = self.bindings.as_ref().ok_or_else(not_set_up)?;
        let msg = &mut *input.msg;
        let ctx = &mut *input.ctx;
        // The keys move into the guest's context for the call and back after
        // it: no copies on the message path.
        let wit_ctx = &mut self.context;
        wit_ctx.in_dialog = msg.is_request() && msg.to_tag().is_some();
        wit_ctx.dialog_key = ctx.dialog_key.take();
        wit_ctx.transaction_key = std::mem::take(&mut ctx.transaction_key);
        wit_ctx.own_route = ctx.own_route.take();
        let call = &mut self.store.data_mut().call;
        call.lend(PRIMARY, msg);
        call.next_hop = ctx.next_hop.clone();
        call.record_route_params = ctx.record_route_params.clone();
        call.transport = ctx.transport;
        call.source = Some(ctx.source);
        call.local = Some(ctx.local);
        call.endpoint = ctx.endpoint.take();
        if let Some(reply) = input.failure_reply.as_deref_mut() {
            call.lend(SECONDARY, reply);
        }
        let hook = input.hook;
        let wit_ctx = &self.context;
        let result = metered(&mut self.store, &self.ticker, self.cpu_limit, |store| {
            let handler = filter;
            let primary = Resource::new_borrow(PRIMARY);
            match hook {
                Hook::Request => handler.call_on_request(store, wit_ctx, primary),
                Hook::Reply => handler.call_on_reply(store, wit_ctx, primary),
                Hook::Failure => handler.call_on_failure(
                    store,
                    wit_ctx,
                    primary,
                    Resource::new_borrow(SECONDARY),
                ),
            }
        });
        ctx.dialog_key = self.context.dialog_key.take();
        ctx.transaction_key = std::mem::take(&mut self.context.transaction_key);
        ctx.own_route = self.context.own_route.take();
        let call = &mut self.store.data_mut().call;
        ctx.endpoint = call.endpoint.take();
        call.give_back(PRIMARY, msg, result.is_err());
        if let Some(reply) = input.failure_reply.as_deref_mut() {
            call.give_back(SECONDARY, reply, true);
        }
        let next_hop = call.next_hop.take();
        let record_route_params = call.record_route_params.take();
        let action = action(result?);
        ctx.next_hop = next_hop;
        ctx.record_route_params = record_route_params;
        Ok(action)
    }

    fn timer(&mut self, token: u64) -> Result<(), FilterError> {
        let filter = self.bindings.as_ref().ok_or_else(not_set_up)?;
        metered(&mut self.store, &self.ticker, self.cpu_limit, |store| {
            filter.call_on_timer(store, token)
        })
    }

    fn local_reply(
        &mut self,
        request_id: u64,
        reply: &mut Message,
        origin: Option<ReplyOrigin>,
    ) -> Result<(), FilterError> {
        let filter = self.bindings.as_ref().ok_or_else(not_set_up)?;
        let call = &mut self.store.data_mut().call;
        call.lend(PRIMARY, reply);
        call.next_hop = None;
        call.record_route_params = None;
        call.transport = origin.map_or("", |o| o.transport.as_str());
        call.source = origin.map(|o| o.peer);
        call.local = None;
        call.endpoint = None;
        let result = metered(&mut self.store, &self.ticker, self.cpu_limit, |store| {
            filter.call_on_local_reply(store, request_id, Resource::new_borrow(PRIMARY))
        });
        self.store.data_mut().call.give_back(PRIMARY, reply, true);
        result
    }

    fn rpc(&mut self, method: &str, params: &str) -> Result<Result<String, String>, FilterError> {
        let filter = self.bindings.as_ref().ok_or_else(not_set_up)?;
        // Admin calls are off the message path and may walk every record.
        let limit = self.cpu_limit.max(ADMIN_CPU_LIMIT);
        metered(&mut self.store, &self.ticker, limit, |store| {
            filter.call_rpc(store, method, params)
        })
    }

    fn registrations_due(&mut self, due: &[Due]) -> Result<(), FilterError> {
        let Some(exports) = self.registrations.as_ref() else {
            return Err(FilterError::BadRequest(
                "the filter does not export registration-handler".into(),
            ));
        };
        let due: Vec<_> = due.iter().map(|d| (d.id, due_reason(d.reason))).collect();
        metered(&mut self.store, &self.ticker, self.cpu_limit, |store| {
            exports.call_on_registration_due(store, &due)
        })
    }

    fn interest(&self) -> Interest {
        self.store.data().interest
    }
}

fn due_reason(reason: DueReason) -> registration_handler::DueReason {
    match reason {
        DueReason::Initial => registration_handler::DueReason::Initial,
        DueReason::Refresh => registration_handler::DueReason::Refresh,
        DueReason::Retry => registration_handler::DueReason::Retry,
        DueReason::Requested => registration_handler::DueReason::Requested,
        DueReason::Stalled => registration_handler::DueReason::Stalled,
    }
}
