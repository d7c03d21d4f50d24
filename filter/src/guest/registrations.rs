//! The WIT `registrations` import behind [`RegistrationStore`], and the
//! registration export and replies handed to [`Registrar`]. No protocol logic here.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use super::exports::siphost::filter::registration_handler::{self, DueReason as WitDueReason};
use super::siphost::filter::log::{self, Level};
use super::siphost::filter::registrations as wit;
use super::siphost::filter::types::Message;
use crate::digest::to_hex;
use crate::host::HostState;
use crate::reg::machine::{DueReason, Fresh, Outgoing, Registrar, Reply, ReplyOutcome};
use crate::reg::params::RegParams;
use crate::reg::rpc;
use crate::reg::store::{
    Account, Credentials, LiveState, LookupKey, RecordId, RegistrationStore, ReloadCounts,
    StoreError,
};

thread_local! {
    /// The registrations in flight from this instance (request id → record).
    static REGISTRAR: RefCell<Option<Registrar>> = const { RefCell::new(None) };
}

/// A new configuration: a fresh registrar. Requests in flight under the old
/// one come back unknown and the host hands their records in again as stalled.
pub fn configure(params: RegParams) {
    REGISTRAR.with(|r| *r.borrow_mut() = Some(Registrar::new(params)));
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn fresh() -> Fresh {
    // One call to the host for all three.
    let mut random = [0u8; 32];
    super::wit_host().random_bytes(&mut random);
    Fresh {
        call_id: to_hex(&random[..16]),
        from_tag: to_hex(&random[16..24]),
        cnonce: to_hex(&random[24..]),
    }
}

fn account(a: wit::Account) -> Account {
    Account {
        id: a.id,
        l_uuid: a.l_uuid,
        l_username: a.l_username,
        l_domain: a.l_domain,
        r_username: a.r_username,
        r_domain: a.r_domain,
        realm: a.realm,
        auth_username: a.auth_username,
        auth_proxy: a.auth_proxy,
        expires: a.expires,
        row_flags: a.row_flags,
        reg_delay: a.reg_delay,
        contact_addr: a.contact_addr,
        socket: a.socket,
        contact_user: a.contact_user,
    }
}

fn wit_account(a: &Account) -> wit::Account {
    wit::Account {
        id: a.id,
        l_uuid: a.l_uuid.clone(),
        l_username: a.l_username.clone(),
        l_domain: a.l_domain.clone(),
        r_username: a.r_username.clone(),
        r_domain: a.r_domain.clone(),
        realm: a.realm.clone(),
        auth_username: a.auth_username.clone(),
        auth_proxy: a.auth_proxy.clone(),
        expires: a.expires,
        row_flags: a.row_flags,
        reg_delay: a.reg_delay,
        contact_addr: a.contact_addr.clone(),
        socket: a.socket.clone(),
        contact_user: a.contact_user.clone(),
    }
}

fn state(s: wit::LiveState) -> LiveState {
    LiveState {
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

fn wit_state(s: &LiveState) -> wit::LiveState {
    wit::LiveState {
        flags: s.flags,
        expires: s.expires,
        registered_until: s.registered_until,
        call_id: s.call_id.clone(),
        cseq: s.cseq,
        last_status: s.last_status,
        last_reason: s.last_reason.clone(),
        failures: s.failures,
    }
}

fn key(k: LookupKey) -> wit::LookupKey {
    match k {
        LookupKey::LUuid => wit::LookupKey::LUuid,
        LookupKey::LUsername => wit::LookupKey::LUsername,
        LookupKey::RUsername => wit::LookupKey::RUsername,
        LookupKey::AuthUsername => wit::LookupKey::AuthUsername,
    }
}

fn pair(found: Option<(wit::Account, wit::LiveState)>) -> Option<(Account, LiveState)> {
    found.map(|(a, s)| (account(a), state(s)))
}

/// The host's store, one import call per method.
pub struct WitStore;

impl RegistrationStore for WitStore {
    fn get(&self, l_uuid: &str) -> Option<(Account, LiveState)> {
        pair(wit::get(l_uuid))
    }
    fn get_by_id(&self, id: RecordId) -> Option<(Account, LiveState)> {
        pair(wit::get_by_id(id))
    }
    fn state(&self, id: RecordId) -> Option<LiveState> {
        wit::get_state(id).map(state)
    }
    fn list(&self, after: Option<RecordId>, limit: u32) -> Vec<RecordId> {
        wit::list(after, limit)
    }
    fn find(&self, k: LookupKey, value: &str) -> Vec<RecordId> {
        wit::find(key(k), value)
    }
    fn credentials(&self, id: RecordId) -> Option<Credentials> {
        wit::credentials(id).map(|c| match c {
            wit::Secret::Password(p) => Credentials::Password(p),
            wit::Secret::Ha1(h) => Credentials::Ha1(h),
        })
    }
    fn update_state(&mut self, id: RecordId, s: &LiveState) -> Result<(), StoreError> {
        wit::update_state(id, &wit_state(s)).map_err(StoreError)
    }
    fn registered(
        &mut self,
        id: RecordId,
        s: &LiveState,
        granted_secs: u32,
    ) -> Result<(), StoreError> {
        wit::registered(id, &wit_state(s), granted_secs).map_err(StoreError)
    }
    fn failed(&mut self, id: RecordId, s: &LiveState) -> Result<(), StoreError> {
        wit::failed(id, &wit_state(s)).map_err(StoreError)
    }
    fn schedule(&mut self, id: RecordId, at_unix_ms: Option<u64>) -> Result<(), StoreError> {
        wit::schedule(id, at_unix_ms).map_err(StoreError)
    }
    fn next_due(&self, id: RecordId) -> Option<u64> {
        wit::next_due(id)
    }
    fn add(
        &mut self,
        row: &Account,
        credentials: &Credentials,
        persist: bool,
    ) -> Result<RecordId, StoreError> {
        let credentials = match credentials {
            Credentials::Password(p) => wit::Secret::Password(p.clone()),
            Credentials::Ha1(h) => wit::Secret::Ha1(h.clone()),
        };
        wit::add(&wit_account(row), &credentials, persist).map_err(StoreError)
    }
    fn remove(&mut self, id: RecordId, persist: bool) -> Result<(), StoreError> {
        wit::remove(id, persist).map_err(StoreError)
    }
    fn reload(&mut self) -> Result<ReloadCounts, StoreError> {
        wit::reload().map_err(StoreError)
    }
    fn set_active(&mut self, active: bool) -> bool {
        wit::set_active(active)
    }
    fn counters(&self) -> (u64, u64, u64) {
        wit::counters()
    }
}

fn warn(message: &str) {
    log::write(Level::Warn, message);
}

/// Sends a REGISTER; a refused send is reported to the machine like a 503.
/// A resend (401/407/423) goes out the same way, at once.
fn send(registrar: &mut Registrar, mut outgoing: Outgoing) {
    loop {
        let request = &mut outgoing.request;
        let sent = super::send_request(super::RequestParts {
            method: &mut request.method,
            request_uri: &mut request.request_uri,
            headers: &mut request.headers,
            body: &mut request.body,
            next_hop: &mut request.next_hop,
            local_socket: &mut request.socket,
            timeout_ms: None,
            invite_timeout_ms: None,
        });
        match sent {
            Ok(request_id) => {
                registrar.sent(request_id, outgoing);
                return;
            }
            Err(why) => {
                let record = outgoing.record();
                match registrar.send_failed(&mut WitStore, outgoing, now_ms() / 1000, &why) {
                    Ok(ReplyOutcome::Resend(next)) => outgoing = *next,
                    Ok(_) => {
                        warn(&format!("registration {record}: REGISTER not sent: {why}"));
                        return;
                    }
                    Err(e) => {
                        warn(&format!("registration {record}: {e}"));
                        return;
                    }
                }
            }
        }
    }
}

fn with_registrar<R>(f: impl FnOnce(&mut Registrar) -> R) -> Option<R> {
    REGISTRAR.with(|r| r.borrow_mut().as_mut().map(f))
}

fn reason(r: WitDueReason) -> DueReason {
    match r {
        WitDueReason::Initial => DueReason::Initial,
        WitDueReason::Refresh => DueReason::Refresh,
        WitDueReason::Retry => DueReason::Retry,
        WitDueReason::Requested => DueReason::Requested,
        WitDueReason::Stalled => DueReason::Stalled,
    }
}

impl registration_handler::Guest for super::UacFilter {
    fn on_registration_due(due: Vec<(RecordId, WitDueReason)>) {
        with_registrar(|registrar| {
            for (id, why) in due {
                let now = now_ms() / 1000;
                match registrar.on_due(&mut WitStore, id, reason(why), now, fresh()) {
                    Ok(Some(outgoing)) => send(registrar, outgoing),
                    Ok(None) => {}
                    Err(e) => warn(&format!("registration {id}: {e}")),
                }
            }
        });
    }
}

/// `handler.on-local-reply`: the final reply to a REGISTER this instance
/// sent; false when the request id is not one of ours.
pub fn on_local_reply(request_id: u64, reply: &Message) -> bool {
    let reply = Reply::read_from(
        reply.status().unwrap_or(0),
        reply.reason().unwrap_or_default(),
        |name| reply.headers(name),
    );
    let handled = with_registrar(|registrar| {
        let record = registrar.record_of(request_id);
        match registrar.on_reply(&mut WitStore, request_id, &reply, now_ms() / 1000, fresh) {
            Ok(ReplyOutcome::Unknown) => None,
            Ok(ReplyOutcome::Resend(outgoing)) => {
                send(registrar, *outgoing);
                Some(None)
            }
            Ok(ReplyOutcome::Registered { granted_secs }) => {
                Some(record.map(|id| (id, "uac:reg-ok", 200, String::from("OK"), granted_secs)))
            }
            Ok(ReplyOutcome::Unregistered) => Some(None),
            Ok(ReplyOutcome::Failed { status, reason }) => {
                Some(record.map(|id| (id, "uac:reg-failed", status, reason, 0)))
            }
            Err(e) => {
                warn(&format!("registration reply {request_id}: {e}"));
                Some(None)
            }
        }
    })
    .flatten();
    let Some(outcome) = handled else {
        return false;
    };
    if let Some((id, event, status, reason, expires)) = outcome {
        raise_registration_event(id, event, status, reason, expires);
    }
    true
}

/// `uac:reg-ok` / `uac:reg-failed` for the event rules, with the record's
/// names (never its credentials) in `$event(...)`.
fn raise_registration_event(id: RecordId, event: &str, status: u16, reason: String, expires: u32) {
    // Most configurations have no event rule: then the record is not fetched at all.
    if !super::handles_event(event) {
        return;
    }
    let Some((account, _)) = WitStore.get_by_id(id) else {
        return;
    };
    let vars = [
        ("l_uuid", account.l_uuid),
        ("l_username", account.l_username),
        ("r_username", account.r_username),
        ("r_domain", account.r_domain),
        ("status", status.to_string()),
        ("reason", reason),
        ("expires", expires.to_string()),
    ]
    .map(|(name, value)| (name.to_owned(), value));
    super::raise_event(event, &vars);
}

/// `handler.rpc` for `uac.reg_*`; `None` for other methods.
pub fn rpc(method: &str, params: &str) -> Option<Result<String, String>> {
    if !rpc::is_reg_method(method) {
        return None;
    }
    let answer = with_registrar(|registrar| {
        let answer = rpc::call(&mut WitStore, registrar, method, params, now_ms(), fresh())
            .map_err(|e| e.to_string())?;
        if let Some(outgoing) = answer.send {
            send(registrar, outgoing);
        }
        Ok(answer.result.to_string())
    })
    .unwrap_or_else(|| Err("uac filter: not configured".to_owned()));
    Some(answer)
}
