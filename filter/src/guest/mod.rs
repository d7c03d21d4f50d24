//! The wit-bindgen glue: the WIT message and imports behind the crate's traits, and the
//! exported hooks handing over to [`Uac`] and the registrar. No uac logic lives here.

wit_bindgen::generate!({ world: "filter-with-registrations", path: "../wit" });

mod registrations;

use std::cell::RefCell;

use exports::siphost::filter::handler::Guest;
use siphost::filter::interest::{self, Hooks};
use siphost::filter::log::{self, Level as WitLevel};
use siphost::filter::transport::{self, OutgoingRequest as WitRequest, SendPlan};
use siphost::filter::types::{Action, Context as WitContext, Message, Reply};
use siphost::filter::{dialog_state, metrics};

use crate::cached::CachedMessage;
use crate::host::{Context, HostState, Level, OutgoingRequest, SipMessage, Verdict};
use crate::uac::Uac;

thread_local! {
    static UAC: RefCell<Option<Uac>> = const { RefCell::new(None) };
}

/// Whether the configured rules wait for event `name`.
fn handles_event(name: &str) -> bool {
    UAC.with(|u| {
        u.borrow()
            .as_ref()
            .is_some_and(|uac| uac.handles_event(name))
    })
}

/// Runs the event rules of `name` (a registration outcome) with `vars` as `$event(...)`.
fn raise_event(name: &str, vars: &[(String, String)]) {
    UAC.with(|u| {
        if let Some(uac) = u.borrow().as_ref() {
            uac.raise_event(name, vars, &mut wit_host());
        }
    });
}

struct WitMessage<'a>(&'a Message);

impl SipMessage for WitMessage<'_> {
    fn is_request(&self) -> bool {
        self.0.is_request()
    }
    fn method(&self) -> Option<String> {
        self.0.method()
    }
    fn request_uri(&self) -> Option<String> {
        self.0.request_uri()
    }
    fn status(&self) -> Option<u16> {
        self.0.status()
    }
    fn reason(&self) -> Option<String> {
        self.0.reason()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.0.header(name)
    }
    fn headers(&self, name: &str) -> Vec<String> {
        self.0.headers(name)
    }
    fn body(&self) -> Vec<u8> {
        self.0.body()
    }
    fn set_header(&mut self, name: &str, value: &str) {
        self.0.set_header(name, value)
    }
    fn add_header(&mut self, name: &str, value: &str) {
        self.0.add_header(name, value)
    }
    fn remove_header(&mut self, name: &str) -> u32 {
        self.0.remove_header(name)
    }
    fn record_route_params(&self) -> Option<String> {
        self.0.record_route_params()
    }
    fn set_record_route_params(&mut self, params: Option<&str>) {
        self.0.set_record_route_params(params)
    }
    fn source(&self) -> String {
        self.0.source().address
    }
    fn set_request_uri(&mut self, uri: &str) {
        self.0.set_request_uri(uri)
    }
    fn set_next_hop(&mut self, uri: &str) {
        self.0.set_next_hop(Some(uri))
    }
    fn endpoint(&self) -> Option<String> {
        self.0.endpoint()
    }
}

/// The WIT imports as the uac logic's host; `store` is the registrations import.
struct WitHost {
    store: registrations::WitStore,
}

fn wit_host() -> WitHost {
    WitHost {
        store: registrations::WitStore,
    }
}

impl HostState for WitHost {
    fn dialog_get(&self, dialog: &str, name: &str) -> Option<String> {
        dialog_state::dialog_get(dialog, name)
    }
    fn dialog_set(&mut self, dialog: &str, name: &str, value: Option<&str>) -> Result<(), String> {
        dialog_state::dialog_set(dialog, name, value)
    }
    fn transaction_get(&self, transaction: &str, name: &str) -> Option<String> {
        dialog_state::transaction_get(transaction, name)
    }
    fn transaction_set(
        &mut self,
        transaction: &str,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), String> {
        dialog_state::transaction_set(transaction, name, value)
    }
    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => WitLevel::Debug,
            Level::Info => WitLevel::Info,
            Level::Warn => WitLevel::Warn,
            Level::Error => WitLevel::Error,
        };
        log::write(level, message);
    }
    fn counter_add(&mut self, name: &str, value: u64) {
        metrics::counter_add(name, value);
    }
    fn registrations(&mut self) -> Option<&mut dyn crate::reg::store::RegistrationStore> {
        Some(&mut self.store)
    }
    fn random_bytes(&mut self, buf: &mut [u8]) {
        // std seeds its hasher keys from wasi:random once per thread and steps them on each
        // `RandomState::new()`; SipHash under such a key is a PRF, so its outputs over a
        // counter are unpredictable and unique enough for XChaCha20 nonces. (A crate such
        // as getrandom would import a second copy of wasi:io, which the host's sandbox
        // linker does not match.)
        use std::hash::{BuildHasher, Hasher};
        let state = std::collections::hash_map::RandomState::new();
        for (i, chunk) in buf.chunks_mut(8).enumerate() {
            let mut h = state.build_hasher();
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    fn send_request(&mut self, request: &OutgoingRequest) -> Result<u64, String> {
        send_request(RequestParts::from(&mut request.clone()))
    }
}

/// A request's parts, borrowed so that [`send_request`] can move them into the WIT
/// records and back: the call copies them into the host anyway, and a registration keeps
/// its REGISTER for the resend, so nothing is copied in the filter.
pub(crate) struct RequestParts<'a> {
    pub method: &'a mut String,
    pub request_uri: &'a mut String,
    pub headers: &'a mut Vec<(String, String)>,
    pub body: &'a mut Vec<u8>,
    pub next_hop: &'a mut Option<String>,
    pub local_socket: &'a mut Option<String>,
    pub timeout_ms: Option<u32>,
    pub invite_timeout_ms: Option<u32>,
}

impl<'a> From<&'a mut OutgoingRequest> for RequestParts<'a> {
    fn from(r: &'a mut OutgoingRequest) -> Self {
        RequestParts {
            method: &mut r.method,
            request_uri: &mut r.request_uri,
            headers: &mut r.headers,
            body: &mut r.body,
            next_hop: &mut r.next_hop,
            local_socket: &mut r.local_socket,
            timeout_ms: r.timeout_ms,
            invite_timeout_ms: r.invite_timeout_ms,
        }
    }
}

/// `transport.send-request-planned` with everything the request says (uac_req_send's and
/// the registrations' requests alike).
fn send_request(parts: RequestParts<'_>) -> Result<u64, String> {
    use std::mem::take;
    let wit = WitRequest {
        method: take(parts.method),
        request_uri: take(parts.request_uri),
        headers: take(parts.headers),
        body: take(parts.body),
        next_hop: parts.next_hop.take(),
    };
    let plan = SendPlan {
        timeout_ms: parts.timeout_ms,
        invite_timeout_ms: parts.invite_timeout_ms,
        local_socket: parts.local_socket.take(),
    };
    let sent = transport::send_request_planned(&wit, &plan);
    *parts.method = wit.method;
    *parts.request_uri = wit.request_uri;
    *parts.headers = wit.headers;
    *parts.body = wit.body;
    *parts.next_hop = wit.next_hop;
    *parts.local_socket = plan.local_socket;
    sent
}

fn context(ctx: WitContext) -> Context {
    Context {
        in_dialog: ctx.in_dialog,
        dialog_key: ctx.dialog_key,
        transaction_key: ctx.transaction_key,
        own_route: ctx.own_route,
    }
}

fn action(verdict: Verdict) -> Action {
    match verdict {
        Verdict::Continue => Action::Continue,
        Verdict::Reply { code, reason } => Action::Reply(Reply {
            code,
            reason,
            headers: Vec::new(),
        }),
        Verdict::Drop => Action::Drop,
        Verdict::Resend => Action::Resend(None),
    }
}

fn with_uac(f: impl FnOnce(&Uac) -> Verdict) -> Action {
    UAC.with(|u| match u.borrow().as_ref() {
        Some(uac) => action(f(uac)),
        None => Action::Continue,
    })
}

struct UacFilter;

impl Guest for UacFilter {
    fn configure(config: String) -> Result<(), String> {
        let uac = Uac::configure(&config).map_err(|e| e.to_string())?;
        registrations::configure(uac.options().registration.clone());
        let needs = uac.hook_needs();
        let hooks = [
            (needs.initial_requests, Hooks::INITIAL_REQUESTS),
            (needs.in_dialog_requests, Hooks::IN_DIALOG_REQUESTS),
            (needs.replies, Hooks::REPLIES),
            (needs.failures, Hooks::FAILURES),
        ];
        interest::need(
            hooks
                .into_iter()
                .filter(|(needed, _)| *needed)
                .fold(Hooks::empty(), |all, (_, flag)| all | flag),
        );
        UAC.with(|u| *u.borrow_mut() = Some(uac));
        Ok(())
    }

    fn on_request(ctx: WitContext, request: &Message) -> Action {
        with_uac(|uac| {
            if uac.options().log_messages {
                log::write(
                    WitLevel::Debug,
                    &format!(
                        "{} request {} {} (in-dialog: {})",
                        ctx.tenant,
                        request.method().unwrap_or_default(),
                        request.request_uri().unwrap_or_default(),
                        ctx.in_dialog
                    ),
                );
            }
            let mut request = WitMessage(request);
            let mut request = CachedMessage::new(&mut request);
            uac.on_request(&context(ctx), &mut request, &mut wit_host())
        })
    }

    fn on_reply(ctx: WitContext, reply: &Message) -> Action {
        with_uac(|uac| {
            if uac.options().log_messages {
                let status = reply.status().unwrap_or_default();
                log::write(WitLevel::Debug, &format!("{} reply {status}", ctx.tenant));
            }
            let mut reply = WitMessage(reply);
            let mut reply = CachedMessage::new(&mut reply);
            uac.on_reply(&context(ctx), &mut reply, &mut wit_host())
        })
    }

    fn on_failure(ctx: WitContext, request: &Message, reply: &Message) -> Action {
        with_uac(|uac| {
            let (mut request, mut reply) = (WitMessage(request), WitMessage(reply));
            let mut request = CachedMessage::new(&mut request);
            uac.on_failure(
                &context(ctx),
                &mut request,
                &CachedMessage::new(&mut reply),
                &mut wit_host(),
            )
        })
    }

    fn on_local_reply(request_id: u64, reply: &Message) {
        // Registrations and uac_req_send number their requests apart: whichever sent it
        // takes the reply.
        if registrations::on_local_reply(request_id, reply) {
            return;
        }
        UAC.with(|u| {
            if let Some(uac) = u.borrow().as_ref() {
                uac.on_local_reply(request_id, &mut WitMessage(reply), &mut wit_host());
            }
        });
    }

    fn on_timer(_token: u64) {}

    fn rpc(method: String, params: String) -> Result<String, String> {
        if let Some(answer) = registrations::rpc(&method, &params) {
            return answer;
        }
        UAC.with(|u| match (u.borrow().as_ref(), method.as_str()) {
            (Some(uac), crate::req_send::rpc::METHOD) => {
                crate::req_send::rpc::req_send(uac, &params, &mut wit_host())
            }
            _ => Err(format!("uac filter: unknown rpc method {method:?}")),
        })
    }
}

export!(UacFilter);
