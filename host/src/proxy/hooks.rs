//! The door between the proxy and per-tenant filter chains: the proxy submits a
//! [`HookCall`] at each routing point and applies the [`Decision`] that comes back.

use std::net::SocketAddr;
use std::sync::Arc;

use siphost_sip::{Bytes, Message};

/// Where a message came from and where the proxy means to send it.
#[derive(Debug, Clone)]
pub struct HookContext {
    /// Transport the message arrived on ("udp" / "tcp").
    pub transport: &'static str,
    /// Source address of the message (after received/rport handling).
    pub source: SocketAddr,
    /// Local listening socket it arrived on.
    pub local: SocketAddr,
    /// Next hop as a SIP URI string (e.g. `sip:127.0.0.1:5090;transport=tcp`);
    /// a filter may change it through [`Decision::Forward`].
    pub next_hop: Option<String>,
    /// Stable key of the dialog this message belongs to (its Call-ID), for host-side
    /// dialog variables that outlive a filter swap.
    pub dialog_key: Option<String>,
    /// Key of the proxy transaction: the same in `on_request`, `on_reply` and `on_failure`
    /// of one forwarded request, unique within this process run.
    pub transaction_key: String,
    /// Extra URI parameters (`;vsf=...;vst=...`) the proxy appends, after `;lr`, to the
    /// Record-Route it inserts for this request. `None`: the proxy does not record-route
    /// (in-dialog requests, or `[proxy].record_route = false`); a filter may set it to
    /// `Some(String::new())` to force record-routing, or back to `None` to prevent it.
    pub record_route_params: Option<String>,
    /// The Route value that named this proxy and was removed by loose routing (in-dialog
    /// requests), so filters can read parameters they put into their Record-Route earlier.
    pub own_route: Option<String>,
    /// The endpoint `[tenant.access]` identified the request as (its configured name);
    /// `None` without access control, and for dialog followers from unidentified sources.
    pub endpoint: Option<Arc<str>>,
}

/// What a filter decided for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on with the (possibly edited) message.
    Continue,
    /// Go on, sending the request to this next hop (a SIP URI).
    Forward { next_hop: String },
    /// Answer the request locally (requests only).
    Reply {
        code: u16,
        reason: String,
        headers: Vec<(String, String)>,
        /// The reply's body, its Content-Type among `headers`; empty for none.
        body: Bytes,
    },
    /// Drop the message silently.
    Drop,
    /// failure_route only: send the (edited) request again as a new branch.
    Resend { next_hop: Option<String> },
}

/// One hook call handed to the filters. The messages travel with the call and come back,
/// possibly edited, in its [`HookResult`], so the proxy core never waits on a filter: it
/// parks the transaction and resumes it when the result arrives as an event.
#[derive(Debug)]
// Boxing would cost an allocation per call; the messages move in and out once each.
pub enum HookCall {
    /// An incoming request (initial or in-dialog) before routing.
    Request { ctx: HookContext, msg: Message },
    /// A reply received from downstream, before it is relayed upstream.
    Reply { ctx: HookContext, msg: Message },
    /// The best final reply of a client transaction is a failure (≥ 300, or a local
    /// 408/503): Kamailio's failure_route. `request` is the request as it was sent on that
    /// branch; the filter may edit it and return [`Decision::Resend`].
    Failure {
        ctx: HookContext,
        request: Message,
        /// Boxed: failures are rare and the call travels by value.
        reply: Box<Message>,
    },
}

/// Seconds a refused caller is told to wait when its tenant is overloaded.
pub const OVERLOAD_RETRY_AFTER: &str = "5";

impl HookCall {
    /// What the proxy does with a call its tenant's full queue refused: a request is
    /// answered 503 with Retry-After; a reply or failure goes on without the filters, since
    /// its transaction already exists.
    pub fn overloaded(&self) -> Decision {
        match self {
            HookCall::Request { .. } => Decision::Reply {
                code: 503,
                reason: "Service Unavailable".to_owned(),
                headers: vec![("Retry-After".to_owned(), OVERLOAD_RETRY_AFTER.to_owned())],
                body: Bytes::new(),
            },
            HookCall::Reply { .. } | HookCall::Failure { .. } => Decision::Continue,
        }
    }

    /// The call's context.
    pub fn ctx(&self) -> &HookContext {
        match self {
            HookCall::Request { ctx, .. }
            | HookCall::Reply { ctx, .. }
            | HookCall::Failure { ctx, .. } => ctx,
        }
    }
}

/// A finished hook call: the call with its (edited) messages, and what the filters decided.
#[derive(Debug)]
pub struct HookResult {
    pub call: HookCall,
    pub decision: Decision,
}

/// Where a finished call's result goes; called once, on whatever thread ran the filter.
pub type HookDone = Box<dyn FnOnce(HookResult) + Send>;

/// What became of a submitted call.
#[derive(Debug)]
pub enum Submitted {
    /// A tenant's filters took it; the result comes to the `done` callback.
    Queued,
    /// The filters ran at once, on the caller's thread (their worker was idle and they
    /// are known to be quick); `done` was not called and never will be.
    Decided(HookResult),
    /// No filter applies to this message: the call comes straight back and the proxy goes
    /// on with it at once (no hand-off, no cost).
    NoFilter(HookCall),
    /// The tenant's queue is full: the proxy answers a request 503 with Retry-After
    /// (replies and failures are never refused, since their transaction already exists).
    Overloaded(HookCall),
}

/// The hook points the proxy calls. Implemented by the filter runtime; the proxy uses
/// [`NoFilters`] when no tenant applies.
///
/// `submit` must not wait: a filter runs on its tenant's own workers, so a slow or looping
/// tenant delays only its own messages. A tenant whose filters have shown only quick calls
/// may run one on the caller's thread when its worker is idle ([`Submitted::Decided`]). Calls of one dialog (`ctx.dialog_key`) reach a
/// tenant's filters in the order they were submitted.
///
/// `applies` is the cheap question asked before each call: when it answers `false` the
/// proxy goes on at once and builds no `done` callback. `submit` keeps its own answer
/// ([`Submitted::NoFilter`]) for hooks whose `applies` is conservative.
pub trait FilterHooks: Send + Sync {
    /// Whether any filter may see a message that arrived on this listening socket.
    fn applies(&self, transport: &str, local: SocketAddr) -> bool;
    fn submit(&self, call: HookCall, done: HookDone) -> Submitted;

    /// The proxy transaction `ctx.transaction_key` is over: no hook names it again, so what
    /// the filters keep for it (transaction variables) can go now rather than when it
    /// expires; with `dialog_over` (a BYE answered, an initial INVITE that got no 2xx) so
    /// can what they keep for its dialog (`ctx.dialog_key`). Called for every transaction
    /// that had a response context; hooks without state keep the default, which does
    /// nothing.
    fn transaction_ended(&self, _ctx: &HookContext, _dialog_over: bool) {}
}

/// Hooks that let every message pass untouched.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFilters;

impl FilterHooks for NoFilters {
    fn applies(&self, _transport: &str, _local: SocketAddr) -> bool {
        false
    }

    fn submit(&self, call: HookCall, _done: HookDone) -> Submitted {
        Submitted::NoFilter(call)
    }
}

/// Submits one hook call and waits for its result, for callers that can block (tests,
/// benches; the proxy core until it parks transactions on filter calls). A full queue
/// answers a request 503 with Retry-After. `None`: the filters dropped the call unanswered.
pub fn call_and_wait<H: FilterHooks + ?Sized>(hooks: &H, call: HookCall) -> Option<HookResult> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let done = Box::new(move |result: HookResult| {
        // The receiver only goes away if this function already returned.
        let _ = tx.send(result);
    });
    match hooks.submit(call, done) {
        Submitted::Queued => rx.recv().ok(),
        Submitted::Decided(result) => Some(result),
        Submitted::NoFilter(call) => Some(HookResult {
            call,
            decision: Decision::Continue,
        }),
        Submitted::Overloaded(call) => {
            let decision = call.overloaded();
            Some(HookResult { call, decision })
        }
    }
}

/// Hook calls that block until the filters decide, with the message edited in place: for
/// tests, benches and tools that hold a message rather than hand one over.
pub trait CallBlocking {
    /// `on-request`; the message is edited in place.
    fn request_blocking(&self, ctx: &mut HookContext, msg: &mut Message) -> Decision;
    /// `on-reply`; the message is edited in place.
    fn reply_blocking(&self, ctx: &mut HookContext, msg: &mut Message) -> Decision;
}

impl<T: FilterHooks + ?Sized> CallBlocking for T {
    fn request_blocking(&self, ctx: &mut HookContext, msg: &mut Message) -> Decision {
        in_place(self, ctx, msg, |ctx, msg| HookCall::Request { ctx, msg })
    }

    fn reply_blocking(&self, ctx: &mut HookContext, msg: &mut Message) -> Decision {
        in_place(self, ctx, msg, |ctx, msg| HookCall::Reply { ctx, msg })
    }
}

/// Runs a one-message call on copies and writes the filters' edits back; a lost call
/// reads as a drop.
fn in_place<H: FilterHooks + ?Sized>(
    hooks: &H,
    ctx: &mut HookContext,
    msg: &mut Message,
    call: impl FnOnce(HookContext, Message) -> HookCall,
) -> Decision {
    match call_and_wait(hooks, call(ctx.clone(), msg.clone())) {
        Some(HookResult {
            call: HookCall::Request { ctx: c, msg: m } | HookCall::Reply { ctx: c, msg: m },
            decision,
        }) => {
            (*ctx, *msg) = (c, m);
            decision
        }
        _ => Decision::Drop,
    }
}
