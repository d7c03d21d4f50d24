//! The store data of one component instance and the WIT imports it offers:
//! message access, log, config, metrics, transport, timers, dialog state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use siphost_sip::{Message, Method};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::MessageRef;
use super::bindings::v0_1::siphost::filter::{
    config, dialog_state, interest, log, metrics, registrations, timers, transport, types,
};
use crate::proxy::Origination;
use crate::runtime::config::parse_listen;
use crate::runtime::instance::{InstanceSetup, Interest};
use crate::runtime::state::{PreparedSend, TenantShared};
use crate::transport::TransportKind;

/// Parsed once per store: the message a slot holds between hook calls.
const PLACEHOLDER: &[u8] = b"OPTIONS sip:placeholder.invalid SIP/2.0\r\nVia: SIP/2.0/UDP placeholder.invalid;branch=z9hG4bKplaceholder\r\nFrom: <sip:placeholder.invalid>;tag=p\r\nTo: <sip:placeholder.invalid>\r\nCall-ID: placeholder\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

/// Slot of the message a hook is about (request, reply or local reply).
pub const PRIMARY: u32 = 0;
/// Slot of the failure reply in `on-failure`.
pub const SECONDARY: u32 = 1;

/// Store limits that remember whether a growth was refused, so that the trap
/// that follows (Rust's allocator aborts) is reported as out of memory.
pub struct MemoryLimiter {
    limits: StoreLimits,
    pub(crate) refused: bool,
}

impl MemoryLimiter {
    pub fn new(memory_bytes: usize) -> Self {
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_bytes)
            .table_elements(100_000)
            .instances(64)
            .tables(64)
            .memories(4)
            .build();
        Self {
            limits,
            refused: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.table_growing(current, desired, maximum)?;
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }
    fn tables(&self) -> usize {
        self.limits.tables()
    }
    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The messages and routing facts of the hook call in progress. Messages are
/// swapped into the slots for the call and back out after it, so the guest
/// edits the proxy's own message without copies.
pub struct CallState {
    slots: [Message; 2],
    active: [bool; 2],
    /// Copy taken before the first edit of a call, restored when the call fails.
    backup: [Option<Message>; 2],
    pub next_hop: Option<String>,
    pub record_route_params: Option<String>,
    pub transport: &'static str,
    pub source: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// The endpoint access control identified the call's request as.
    pub endpoint: Option<Arc<str>>,
}

impl CallState {
    fn new() -> anyhow::Result<Self> {
        let placeholder = Message::parse(Bytes::from_static(PLACEHOLDER))
            .map_err(|e| anyhow::anyhow!("placeholder message: {e}"))?;
        Ok(Self {
            slots: [placeholder.clone(), placeholder],
            active: [false; 2],
            backup: [None, None],
            next_hop: None,
            record_route_params: None,
            transport: "",
            source: None,
            local: None,
            endpoint: None,
        })
    }

    /// Lends `msg` to the guest in `slot` (swapped back by [`Self::give_back`]).
    pub fn lend(&mut self, slot: u32, msg: &mut Message) {
        let i = slot as usize;
        std::mem::swap(&mut self.slots[i], msg);
        self.active[i] = true;
        self.backup[i] = None;
    }

    /// Returns the lent message; with `restore`, undoes the guest's edits.
    pub fn give_back(&mut self, slot: u32, msg: &mut Message, restore: bool) {
        let i = slot as usize;
        std::mem::swap(&mut self.slots[i], msg);
        self.active[i] = false;
        if let Some(original) = self.backup[i].take()
            && restore
        {
            *msg = original;
        }
    }

    fn message(&self, handle: &Resource<MessageRef>) -> wasmtime::Result<&Message> {
        let i = handle.rep() as usize;
        match self.active.get(i) {
            Some(true) => Ok(&self.slots[i]),
            _ => Err(wasmtime::format_err!(
                "message handle used outside its hook call"
            )),
        }
    }

    fn message_mut(&mut self, handle: &Resource<MessageRef>) -> wasmtime::Result<&mut Message> {
        let i = handle.rep() as usize;
        match self.active.get(i) {
            Some(true) => {
                if self.backup[i].is_none() {
                    self.backup[i] = Some(self.slots[i].clone());
                }
                Ok(&mut self.slots[i])
            }
            _ => Err(wasmtime::format_err!(
                "message handle used outside its hook call"
            )),
        }
    }
}

/// The CPU time a call may use, counted from the thread's CPU clock at its start.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBudget {
    pub started: Duration,
    pub limit: Duration,
}

/// Data of one filter instance's store. Everything a filter can reach is
/// here and scoped to its tenant.
pub struct HostState {
    pub(crate) shared: Arc<TenantShared>,
    /// Position of the filter in the tenant's chain (timers and local replies
    /// come back to it).
    pub(crate) filter_index: usize,
    /// The tenant worker owning this instance.
    pub(crate) lane: usize,
    pub(crate) budget: CpuBudget,
    pub(crate) filter_label: Arc<str>,
    pub(crate) config_json: Arc<str>,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) call: CallState,
    /// What the filter declared with `interest.need` (everything until it does).
    pub(crate) interest: Interest,
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// Requests sent during the current call, handed to the proxy core when it ends.
    outbox: Vec<PreparedSend>,
}

impl HostState {
    pub fn new(setup: &InstanceSetup) -> anyhow::Result<Self> {
        Ok(Self {
            shared: setup.shared.clone(),
            filter_index: setup.filter_index,
            lane: setup.lane,
            budget: CpuBudget::default(),
            filter_label: setup.label.clone(),
            config_json: setup.config_json.clone(),
            limiter: MemoryLimiter::new(setup.memory_bytes),
            call: CallState::new()?,
            interest: Interest::ALL,
            // No preopens, no env, no args, no network: the sandbox gives nothing.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            outbox: Vec::new(),
        })
    }

    /// Hands the requests sent during the call that just ended to the proxy core.
    pub(crate) fn send_outbox(&mut self) {
        for send in self.outbox.drain(..) {
            send.go();
        }
    }
}

impl Drop for HostState {
    /// A call that never returned (a host panic) still hands over its requests: their ids
    /// were given out, and each holds one of the tenant's places for requests in flight
    /// until its reply comes back.
    fn drop(&mut self) {
        self.send_outbox();
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn endpoint(transport: &str, address: Option<SocketAddr>) -> types::Endpoint {
    types::Endpoint {
        transport: transport.to_string(),
        address: address.map(|a| a.to_string()).unwrap_or_default(),
    }
}

impl types::Host for HostState {}

impl types::HostMessage for HostState {
    fn is_request(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<bool> {
        Ok(self.call.message(&m)?.is_request())
    }
    fn method(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<Option<String>> {
        Ok(self
            .call
            .message(&m)?
            .method()
            .map(|m| m.as_str().to_string()))
    }
    fn request_uri(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<Option<String>> {
        Ok(self.call.message(&m)?.request_uri().map(str::to_string))
    }
    fn set_request_uri(&mut self, m: Resource<MessageRef>, uri: String) -> wasmtime::Result<()> {
        if self.call.message(&m)?.is_request() {
            self.call.message_mut(&m)?.set_request_uri(&uri);
        }
        Ok(())
    }
    fn status(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<Option<u16>> {
        Ok(self.call.message(&m)?.status())
    }
    fn reason(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<Option<String>> {
        Ok(self.call.message(&m)?.reason().map(str::to_string))
    }
    fn header(
        &mut self,
        m: Resource<MessageRef>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.call.message(&m)?.header(&name).map(str::to_string))
    }
    fn headers(&mut self, m: Resource<MessageRef>, name: String) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .call
            .message(&m)?
            .headers(&name)
            .map(str::to_string)
            .collect())
    }
    fn all_headers(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .call
            .message(&m)?
            .all_headers()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect())
    }
    fn set_header(
        &mut self,
        m: Resource<MessageRef>,
        name: String,
        value: String,
    ) -> wasmtime::Result<()> {
        self.call.message_mut(&m)?.set_header(&name, &value);
        Ok(())
    }
    fn add_header(
        &mut self,
        m: Resource<MessageRef>,
        name: String,
        value: String,
    ) -> wasmtime::Result<()> {
        self.call.message_mut(&m)?.append_header(&name, &value);
        Ok(())
    }
    fn prepend_header(
        &mut self,
        m: Resource<MessageRef>,
        name: String,
        value: String,
    ) -> wasmtime::Result<()> {
        self.call.message_mut(&m)?.prepend_header(&name, &value);
        Ok(())
    }
    fn remove_header(&mut self, m: Resource<MessageRef>, name: String) -> wasmtime::Result<u32> {
        if self.call.message(&m)?.header(&name).is_none() {
            return Ok(0);
        }
        let removed = self.call.message_mut(&m)?.remove_header(&name);
        Ok(u32::try_from(removed).unwrap_or(u32::MAX))
    }
    fn body(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.call.message(&m)?.body().to_vec())
    }
    fn set_body(
        &mut self,
        m: Resource<MessageRef>,
        body: Vec<u8>,
        content_type: Option<String>,
    ) -> wasmtime::Result<()> {
        self.call
            .message_mut(&m)?
            .set_body(Bytes::from(body), content_type.as_deref());
        Ok(())
    }
    fn next_hop(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<Option<String>> {
        self.call.message(&m)?;
        Ok(self.call.next_hop.clone())
    }
    fn set_next_hop(
        &mut self,
        m: Resource<MessageRef>,
        uri: Option<String>,
    ) -> wasmtime::Result<()> {
        self.call.message(&m)?;
        self.call.next_hop = uri;
        Ok(())
    }
    fn record_route_params(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<Option<String>> {
        self.call.message(&m)?;
        Ok(self.call.record_route_params.clone())
    }
    fn set_record_route_params(
        &mut self,
        m: Resource<MessageRef>,
        params: Option<String>,
    ) -> wasmtime::Result<()> {
        self.call.message(&m)?;
        self.call.record_route_params = params;
        Ok(())
    }
    fn source(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<types::Endpoint> {
        self.call.message(&m)?;
        Ok(endpoint(self.call.transport, self.call.source))
    }
    fn local(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<types::Endpoint> {
        self.call.message(&m)?;
        Ok(endpoint(self.call.transport, self.call.local))
    }
    fn serialize(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.call.message(&m)?.to_bytes().to_vec())
    }
    fn endpoint(&mut self, m: Resource<MessageRef>) -> wasmtime::Result<Option<String>> {
        self.call.message(&m)?;
        Ok(self.call.endpoint.as_deref().map(str::to_owned))
    }
    fn drop(&mut self, _m: Resource<MessageRef>) -> wasmtime::Result<()> {
        // Handles are only ever lent as borrows; the host owns every message.
        Ok(())
    }
}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let tenant = &*self.shared.name;
        let filter = &*self.filter_label;
        match level {
            log::Level::Trace => tracing::trace!(tenant, filter, "{message}"),
            log::Level::Debug => tracing::debug!(tenant, filter, "{message}"),
            log::Level::Info => tracing::info!(tenant, filter, "{message}"),
            log::Level::Warn => tracing::warn!(tenant, filter, "{message}"),
            log::Level::Error => tracing::error!(tenant, filter, "{message}"),
        }
        Ok(())
    }
}

impl config::Host for HostState {
    fn tenant(&mut self) -> wasmtime::Result<String> {
        Ok(self.shared.name.to_string())
    }
    fn filter_config(&mut self) -> wasmtime::Result<String> {
        Ok(self.config_json.to_string())
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, value: u64) -> wasmtime::Result<()> {
        if let Err(e) = self.shared.metrics.counter_add(&name, value) {
            tracing::debug!(tenant = &*self.shared.name, "filter metric: {e}");
        }
        Ok(())
    }
    fn gauge_set(&mut self, name: String, value: i64) -> wasmtime::Result<()> {
        if let Err(e) = self.shared.metrics.gauge_set(&name, value) {
            tracing::debug!(tenant = &*self.shared.name, "filter metric: {e}");
        }
        Ok(())
    }
}

impl transport::Host for HostState {
    fn send_request(
        &mut self,
        request: transport::OutgoingRequest,
    ) -> wasmtime::Result<Result<u64, String>> {
        Ok(self.send(&request, Origination::default()))
    }

    fn send_request_with(
        &mut self,
        request: transport::OutgoingRequest,
        options: transport::SendOptions,
    ) -> wasmtime::Result<Result<u64, String>> {
        let timeout = options.timeout_ms.map(millis);
        let how = Origination {
            timeout,
            invite_timeout: timeout,
            ..Origination::default()
        };
        Ok(self.send(&request, how))
    }

    fn send_request_planned(
        &mut self,
        request: transport::OutgoingRequest,
        plan: transport::SendPlan,
    ) -> wasmtime::Result<Result<u64, String>> {
        let local = match plan.local_socket.as_deref().map(parse_listen).transpose() {
            Ok(Some(socket)) if self.shared.is_foreign(socket) => {
                let (transport, address) = socket;
                let kind = TransportKind::from(transport);
                return Ok(Err(format!(
                    "local socket {kind}:{address} belongs to another tenant"
                )));
            }
            Ok(local) => local.map(|(transport, address)| (transport.into(), address)),
            Err(why) => return Ok(Err(format!("local socket {why}"))),
        };
        let how = Origination {
            local,
            timeout: plan.timeout_ms.map(millis),
            invite_timeout: plan.invite_timeout_ms.map(millis),
            ..Origination::default()
        };
        Ok(self.send(&request, how))
    }
}

impl HostState {
    /// Builds `request` for the proxy core, which gets it when the call ends; the reply
    /// comes back as `on-local-reply`.
    fn send(
        &mut self,
        request: &transport::OutgoingRequest,
        how: Origination,
    ) -> Result<u64, String> {
        let how = Origination {
            next_hop: request.next_hop.clone(),
            ..how
        };
        let message = build_request(request)?;
        let (id, send) = self
            .shared
            .prepare_request(self.lane, self.filter_index, message, how)?;
        self.outbox.push(send);
        Ok(id)
    }
}

fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

impl timers::Host for HostState {
    fn set_timer(&mut self, after_ms: u64, token: u64) -> wasmtime::Result<Result<u64, String>> {
        Ok(self
            .shared
            .set_timer(self.lane, self.filter_index, after_ms, token))
    }
    fn cancel_timer(&mut self, id: u64) -> wasmtime::Result<bool> {
        Ok(self.shared.cancel_timer(id))
    }
}

impl dialog_state::Host for HostState {
    fn dialog_get(&mut self, dialog: String, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.shared.dialog_vars.get(&dialog, &name))
    }
    fn dialog_set(
        &mut self,
        dialog: String,
        name: String,
        value: Option<String>,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.shared.dialog_vars.set(&dialog, &name, value))
    }
    fn dialog_clear(&mut self, dialog: String) -> wasmtime::Result<()> {
        self.shared.dialog_vars.clear(&dialog);
        Ok(())
    }
    fn transaction_get(
        &mut self,
        transaction: String,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.shared.transaction_vars.get(&transaction, &name))
    }
    fn transaction_set(
        &mut self,
        transaction: String,
        name: String,
        value: Option<String>,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.shared.transaction_vars.set(&transaction, &name, value))
    }
}

/// Converts the host's packed account to the WIT record (no credentials).
fn wit_account(id: u32, a: &crate::registrations::Account) -> registrations::Account {
    registrations::Account {
        id,
        l_uuid: a.l_uuid().to_owned(),
        l_username: a.l_username().to_owned(),
        l_domain: a.l_domain().to_owned(),
        r_username: a.r_username().to_owned(),
        r_domain: a.r_domain().to_owned(),
        realm: a.realm().to_owned(),
        auth_username: a.auth_username().to_owned(),
        auth_proxy: a.auth_proxy().to_owned(),
        expires: a.expires(),
        row_flags: a.flags(),
        reg_delay: a.reg_delay(),
        contact_addr: a.contact_addr().to_owned(),
        socket: a.socket().to_owned(),
        contact_user: a.contact_user().to_owned(),
    }
}

fn wit_state(s: crate::registrations::LiveState) -> registrations::LiveState {
    registrations::LiveState {
        flags: s.flags,
        expires: s.expires,
        registered_until: s.registered_until,
        call_id: s.call_id,
        cseq: s.cseq,
        last_status: s.last_status,
        last_reason: s.last_reason,
        failures: s.failures,
    }
}

/// The host's state from the filter's; the next due time is the scheduler's.
fn host_state(s: registrations::LiveState) -> crate::registrations::LiveState {
    crate::registrations::LiveState {
        flags: s.flags & crate::registrations::flags::ALL,
        expires: s.expires,
        registered_until: s.registered_until,
        call_id: s.call_id,
        cseq: s.cseq,
        last_status: s.last_status,
        last_reason: s.last_reason,
        failures: s.failures,
        next_due_ms: 0,
    }
}

fn lookup_key(key: registrations::LookupKey) -> crate::registrations::LookupKey {
    use crate::registrations::LookupKey as K;
    match key {
        registrations::LookupKey::LUuid => K::LUuid,
        registrations::LookupKey::LUsername => K::LUsername,
        registrations::LookupKey::RUsername => K::RUsername,
        registrations::LookupKey::AuthUsername => K::AuthUsername,
    }
}

const NO_REGISTRATIONS: &str = "this tenant has no [tenant.registrations]";

impl HostState {
    fn registrations(&self) -> Option<&Arc<crate::registrations::Registrations>> {
        self.shared.registrations.get()
    }

    /// Runs a store call that answers `result<_, string>`.
    fn reg_call<T>(
        &self,
        f: impl FnOnce(
            &crate::registrations::Registrations,
        ) -> Result<T, crate::registrations::service::ServiceError>,
    ) -> Result<T, String> {
        match self.registrations() {
            Some(r) => f(r).map_err(|e| e.to_string()),
            None => Err(NO_REGISTRATIONS.to_owned()),
        }
    }
}

/// Every call is scoped to the filter's tenant: its own table only. Without
/// `[tenant.registrations]` the table reads as empty and changes are refused.
impl registrations::Host for HostState {
    fn get(
        &mut self,
        l_uuid: String,
    ) -> wasmtime::Result<Option<(registrations::Account, registrations::LiveState)>> {
        Ok(self
            .registrations()
            .and_then(|r| r.get_by_uuid(&l_uuid))
            .map(|(id, a, s)| (wit_account(id, &a), wit_state(s))))
    }
    fn get_by_id(
        &mut self,
        id: u32,
    ) -> wasmtime::Result<Option<(registrations::Account, registrations::LiveState)>> {
        Ok(self
            .registrations()
            .and_then(|r| r.get(id))
            .map(|(id, a, s)| (wit_account(id, &a), wit_state(s))))
    }
    fn get_state(&mut self, id: u32) -> wasmtime::Result<Option<registrations::LiveState>> {
        Ok(self
            .registrations()
            .and_then(|r| r.state(id))
            .map(wit_state))
    }
    fn list(&mut self, after: Option<u32>, limit: u32) -> wasmtime::Result<Vec<u32>> {
        Ok(self
            .registrations()
            .map(|r| r.list(after, limit))
            .unwrap_or_default())
    }
    fn find(&mut self, key: registrations::LookupKey, value: String) -> wasmtime::Result<Vec<u32>> {
        Ok(self
            .registrations()
            .map(|r| r.find(lookup_key(key), &value))
            .unwrap_or_default())
    }
    fn credentials(&mut self, id: u32) -> wasmtime::Result<Option<registrations::Secret>> {
        Ok(self
            .registrations()
            .and_then(|r| r.credentials(id))
            .map(|(ha1, secret)| {
                if ha1 {
                    registrations::Secret::Ha1(secret)
                } else {
                    registrations::Secret::Password(secret)
                }
            }))
    }
    fn update_state(
        &mut self,
        id: u32,
        state: registrations::LiveState,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.reg_call(|r| r.update_state(id, host_state(state))))
    }
    fn registered(
        &mut self,
        id: u32,
        state: registrations::LiveState,
        granted_secs: u32,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.reg_call(|r| r.registered(id, host_state(state), granted_secs)))
    }
    fn failed(
        &mut self,
        id: u32,
        state: registrations::LiveState,
    ) -> wasmtime::Result<Result<(), String>> {
        crate::runtime::state::TenantCounters::bump(&self.shared.counters.registration_failures);
        Ok(self.reg_call(|r| r.failed(id, host_state(state))))
    }
    fn schedule(
        &mut self,
        id: u32,
        at_unix_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.reg_call(|r| r.schedule(id, at_unix_ms)))
    }
    fn next_due(&mut self, id: u32) -> wasmtime::Result<Option<u64>> {
        Ok(self.registrations().and_then(|r| r.next_due(id)))
    }
    fn add(
        &mut self,
        row: registrations::Account,
        credentials: registrations::Secret,
        persist: bool,
    ) -> wasmtime::Result<Result<u32, String>> {
        use crate::registrations::{Record, Secret};
        let (auth_password, auth_ha1) = match credentials {
            registrations::Secret::Password(p) => (Secret::new(p), Secret::default()),
            registrations::Secret::Ha1(h) => (Secret::default(), Secret::new(h)),
        };
        let record = Record {
            l_uuid: row.l_uuid,
            l_username: row.l_username,
            l_domain: row.l_domain,
            r_username: row.r_username,
            r_domain: row.r_domain,
            realm: row.realm,
            auth_username: row.auth_username,
            auth_password,
            auth_ha1,
            auth_proxy: row.auth_proxy,
            expires: row.expires,
            flags: row.row_flags,
            reg_delay: row.reg_delay,
            contact_addr: row.contact_addr,
            socket: row.socket,
            contact_user: row.contact_user,
        };
        Ok(self.reg_call(|r| r.add(record, persist)))
    }
    fn remove(&mut self, id: u32, persist: bool) -> wasmtime::Result<Result<(), String>> {
        Ok(self.reg_call(|r| r.remove(id, persist)))
    }
    fn reload(&mut self) -> wasmtime::Result<Result<(u32, u32, u32, u32), String>> {
        Ok(self.reg_call(|r| {
            r.reload()
                .map(|c| (c.added, c.changed, c.removed, c.unchanged))
        }))
    }
    fn set_active(&mut self, active: bool) -> wasmtime::Result<bool> {
        // Without a store nothing is scheduled; the mode reads as active.
        Ok(self
            .registrations()
            .map(|r| r.set_active(active))
            .unwrap_or(true))
    }
    fn counters(&mut self) -> wasmtime::Result<(u64, u64, u64)> {
        Ok(self.registrations().map_or((0, 0, 0), |r| {
            let c = r.counters();
            (c.regtotal, c.regactive, c.regdisabled)
        }))
    }
}

impl interest::Host for HostState {
    fn need(&mut self, hooks: interest::Hooks) -> wasmtime::Result<()> {
        let bits = [
            (
                interest::Hooks::INITIAL_REQUESTS,
                Interest::INITIAL_REQUESTS,
            ),
            (
                interest::Hooks::IN_DIALOG_REQUESTS,
                Interest::IN_DIALOG_REQUESTS,
            ),
            (interest::Hooks::REPLIES, Interest::REPLIES),
            (interest::Hooks::FAILURES, Interest::FAILURES),
        ];
        self.interest = bits
            .into_iter()
            .filter(|(flag, _)| hooks.contains(*flag))
            .fold(Interest::NONE, |all, (_, bit)| all.union(bit));
        Ok(())
    }
}

/// Builds the request a filter asked for. The proxy fills in Via,
/// Max-Forwards and Content-Length; names and values must not break framing.
fn build_request(request: &transport::OutgoingRequest) -> Result<Message, String> {
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
    for (name, value) in &request.headers {
        token("header name", name)?;
        if value.contains(['\r', '\n']) {
            return Err(format!("header {name:?} has a line break in its value"));
        }
    }
    let mut message = Message::request_with_headers(
        Method::from(request.method.as_str()),
        &request.request_uri,
        request
            .headers
            .iter()
            .filter(|(name, _)| {
                !name.eq_ignore_ascii_case("content-length") && !name.eq_ignore_ascii_case("l")
            })
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    if !request.body.is_empty() {
        let content_type = message.header("Content-Type").map(str::to_string);
        message.set_body(Bytes::from(request.body.clone()), content_type.as_deref());
    }
    Ok(message)
}
